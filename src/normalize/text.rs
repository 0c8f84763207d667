//! Free text: Unicode NFKC (full-width letters and digits fold to ASCII), control characters out,
//! runs of white space to one space, and for names no spaces between CJK characters.

use std::borrow::Cow;

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfkc_quick};

/// NFKC without the cost when there is nothing to fold: ASCII and text that is already NFKC (most
/// Chinese text) come back borrowed.
pub fn nfkc(input: &str) -> Cow<'_, str> {
    // ASCII and the unified CJK ideographs have no compatibility decompositions: the common
    // Chinese name or company is settled without the normalization tables.
    let stable = |c: char| c.is_ascii() || ('\u{4E00}'..='\u{9FFF}').contains(&c);
    if input.is_ascii() || input.chars().all(stable) || is_nfkc_quick(input.chars()) == IsNormalized::Yes {
        Cow::Borrowed(input)
    } else {
        Cow::Owned(input.nfkc().collect())
    }
}

/// NFKC, trimmed, inner white space collapsed, control characters dropped. `None` when nothing is left.
pub fn clean_text(input: &str) -> Option<String> {
    let mut out = String::with_capacity(input.len());
    let mut pending_space = false;
    for c in nfkc(input).chars() {
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
    fn names_lose_spaces_between_cjk_only() {
        assert_eq!(clean_name(" 张 三 ").as_deref(), Some("张三"));
        assert_eq!(clean_name("欧阳　娜娜").as_deref(), Some("欧阳娜娜"));
        assert_eq!(clean_name("Mary  Ann Lee").as_deref(), Some("Mary Ann Lee"));
        assert_eq!(clean_name("李 Lily").as_deref(), Some("李 Lily"));
    }
}
