//! Free text: Unicode NFKC (full-width letters and digits fold to ASCII), control characters out,
//! runs of white space to one space, and for names no spaces between CJK characters.

use std::borrow::Cow;

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfkc_quick};

/// NFKC without the cost when there is nothing to fold: ASCII and text that is already NFKC (most
/// Chinese text) come back borrowed, and text whose only foldable characters are full-width forms
/// (`１３８`, `（集团）`) is folded without the normalization tables.
pub fn nfkc(input: &str) -> Cow<'_, str> {
    if input.is_ascii() {
        return Cow::Borrowed(input);
    }
    let mut widths = false;
    for c in input.chars() {
        if is_stable(c) {
            continue;
        }
        if fold_width(c).is_none() {
            return if is_nfkc_quick(input.chars()) == IsNormalized::Yes {
                Cow::Borrowed(input)
            } else {
                Cow::Owned(input.nfkc().collect())
            };
        }
        widths = true;
    }
    if widths {
        Cow::Owned(input.chars().map(|c| fold_width(c).unwrap_or(c)).collect())
    } else {
        Cow::Borrowed(input)
    }
}

/// ASCII and the unified CJK ideographs: no compatibility decompositions, and nothing composes
/// with them, so NFKC leaves them as they are whatever surrounds them.
fn is_stable(c: char) -> bool {
    c.is_ascii() || is_unified_ideograph(c)
}

/// The CJK Unified Ideographs block (U+4E00-U+9FFF), where nearly all Chinese text lives.
pub(super) fn is_unified_ideograph(c: char) -> bool {
    ('\u{4E00}'..='\u{9FFF}').contains(&c)
}

/// The full-width forms of ASCII (U+FF01-U+FF5E) and the ideographic space, which NFKC folds to
/// one ASCII character each. Next to [`is_stable`] characters that is all NFKC does to them.
fn fold_width(c: char) -> Option<char> {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0),
        '\u{3000}' => Some(' '),
        _ => None,
    }
}

/// NFKC, trimmed, inner white space collapsed, control characters dropped. `None` when nothing is left.
pub fn clean_text(input: &str) -> Option<String> {
    let folded = nfkc(input);
    if is_tidy(&folded) {
        return Some(folded.into_owned());
    }
    let mut out = String::with_capacity(input.len());
    let mut pending_space = false;
    for c in folded.chars() {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
        } else if !c.is_control() {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Text [`clean_text`] would leave as it is: not empty, no control characters, and no white
/// space but single spaces between words.
fn is_tidy(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.is_empty() || bytes[0] == b' ' || bytes[bytes.len() - 1] == b' ' {
        return false;
    }
    let mut space = false;
    if text.is_ascii() {
        bytes.iter().all(|&b| {
            let ok = b > b' ' && b != 0x7f || b == b' ' && !space;
            space = b == b' ';
            ok
        })
    } else {
        text.chars().all(|c| {
            let ok = !(c.is_whitespace() || c.is_control()) || c == ' ' && !space;
            space = c == ' ';
            ok
        })
    }
}

/// A person's name: [`clean_text`], then the spaces people type between CJK characters
/// (`张 三` → `张三`) are removed. Latin names keep their single spaces.
pub fn clean_name(input: &str) -> Option<String> {
    let text = clean_text(input)?;
    if !text.contains(' ') {
        return Some(text);
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' && i > 0 && i + 1 < chars.len() && is_cjk(chars[i - 1]) && is_cjk(chars[i + 1])
        {
            continue;
        }
        out.push(c);
    }
    Some(out)
}

/// CJK ideographs (the unified blocks and extension A), where spacing carries no meaning.
pub fn is_cjk(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{F900}'..='\u{FAFF}' | '\u{20000}'..='\u{2FA1F}' | '·')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_folded_and_tidied() {
        assert_eq!(
            clean_text("  Ａｃｍｅ\u{3000} Ltd\t\n").as_deref(),
            Some("Acme Ltd")
        );
        assert_eq!(clean_text(" \u{3000} "), None);
        assert_eq!(clean_text("a\u{0007}b").as_deref(), Some("ab"));
    }

    #[test]
    fn the_full_width_shortcut_agrees_with_the_normalization_tables() {
        let library = |s: &str| s.nfkc().collect::<String>();
        let widths = ('\u{FF01}'..='\u{FF5E}').chain(['\u{3000}']);
        for c in widths {
            assert_eq!(
                fold_width(c).map(String::from),
                Some(library(&c.to_string()))
            );
        }
        for c in ('\0'..='\u{7F}').chain('\u{4E00}'..='\u{9FFF}') {
            assert_eq!(library(&c.to_string()), c.to_string(), "{c:?}");
        }
        for s in [
            "华夏实业（集团）股份有限公司",
            "１３８ ００１３ ８０００",
            "ｌｉ＠ｑｑ．ｃｏｍ",
            "欧阳　娜娜",
            "Ａ\u{301}",
            "ｶﾀｶﾅ（株）",
        ] {
            assert_eq!(nfkc(s), library(s), "{s}");
        }
    }

    #[test]
    fn tidy_text_is_kept_and_untidy_text_cleaned() {
        for s in ["Acme Ltd", "某某科技有限公司", "a b c", "张三", "x"] {
            assert!(is_tidy(s), "{s:?}");
            assert_eq!(clean_text(s).as_deref(), Some(s));
        }
        for s in [
            " a",
            "a ",
            "a  b",
            "a\tb",
            "a\u{7}b",
            "",
            "a\u{2028}b",
            "a\u{85}b",
        ] {
            assert!(!is_tidy(s), "{s:?}");
        }
    }

    #[test]
    fn names_lose_spaces_between_cjk_only() {
        assert_eq!(clean_name(" 张 三 ").as_deref(), Some("张三"));
        assert_eq!(clean_name("欧阳　娜娜").as_deref(), Some("欧阳娜娜"));
        assert_eq!(clean_name("Mary  Ann Lee").as_deref(), Some("Mary Ann Lee"));
        assert_eq!(clean_name("李 Lily").as_deref(), Some("李 Lily"));
    }
}
