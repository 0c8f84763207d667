//! Matching keys for names and companies: forms that compare equal when people mean the same
//! name or company, for identity matching to *support* (never make) a match. Traditional
//! characters fold to Simplified (`fast2s`, MIT), case and spacing are dropped, and companies lose
//! their legal form (有限公司, Ltd., ...) but keep 分公司: a branch may be another customer.

use super::text::{clean_name, clean_text};

/// Legal-form suffixes, longest first so that 股份有限公司 goes before 有限公司.
const LEGAL_FORMS: &[&str] = &[
    "股份有限公司",
    "有限责任公司",
    "有限公司",
    "集团公司",
    "集团",
    "公司",
    "incorporated",
    "corporation",
    "limited",
    "company",
    "co.,ltd.",
    "co.,ltd",
    "co., ltd.",
    "co., ltd",
    "co.ltd",
    "co. ltd",
    "inc.",
    "inc",
    "ltd.",
    "ltd",
    "llc",
    "corp.",
    "corp",
    "co.",
    "co",
    "gmbh",
    "plc",
    "pte",
    "pty",
];

/// Letters and digits only, lowercased, Traditional folded to Simplified.
fn fold(s: &str) -> String {
    let simplified = fast2s::convert(s);
    let mut key = String::with_capacity(simplified.len());
    for c in simplified.chars() {
        // ASCII and the common CJK ideographs (all letters, none with a case) without the
        // Unicode tables: most names are one or the other.
        if c.is_ascii() {
            if c.is_ascii_alphanumeric() {
                key.push(c.to_ascii_lowercase());
            }
        } else if ('\u{4e00}'..='\u{9fff}').contains(&c) {
            key.push(c);
        } else if c.is_alphanumeric() {
            key.extend(c.to_lowercase());
        }
    }
    key
}

/// `張 三` and `张三` give the same key; so do `Mary Ann LEE` and `mary ann lee`.
pub fn name_key(name: &str) -> Option<String> {
    let key = fold(&clean_name(name)?);
    (!key.is_empty()).then_some(key)
}

/// `深圳市腾讯计算机系统有限公司` → `深圳市腾讯计算机系统`; `ACME Co., Ltd.` → `acme`;
/// `华夏实业（集团）股份有限公司` → `华夏实业`; `某某科技有限公司（深圳）` → `某某科技`.
pub fn company_key(company: &str) -> Option<String> {
    let mut s = fast2s::convert(&clean_text(company)?).to_lowercase();
    loop {
        let before = s.len();
        let trimmed = s.trim_end_matches([' ', ',', '.', '，', '。']).to_owned();
        s = strip_trailing_parenthesis(&trimmed);
        if s.ends_with("分公司") || s.ends_with("branch") {
            break;
        }
        if let Some(form) = LEGAL_FORMS
            .iter()
            .find(|f| s.ends_with(*f) && s.len() > f.len())
        {
            s.truncate(s.len() - form.len());
        }
        if s.len() == before {
            break;
        }
    }
    let key = fold(&s);
    (!key.is_empty()).then_some(key)
}

/// Drops a trailing `(深圳)` / `（集团）` / `(Shenzhen)`, unless it is all there is.
fn strip_trailing_parenthesis(s: &str) -> String {
    let s = s.trim_end();
    if let Some(body) = s.strip_suffix(')').or_else(|| s.strip_suffix('）'))
        && let Some(open) = body.rfind(['(', '（'])
        && open > 0
    {
        return body[..open].trim_end().to_owned();
    }
    s.to_owned()
}

/// Tidies the case of a Latin name typed all in capitals or all in lower case (`JOHN SMITH`,
/// `john smith` → `John Smith`); mixed case (`McDonald`) and CJK names are left alone.
pub fn tidy_latin_case(name: String) -> String {
    // An ideograph is a letter outside ASCII: the name is not Latin (the common case, settled
    // without the Unicode tables).
    if name.chars().any(super::text::is_unified_ideograph) {
        return name;
    }
    let letters = name.chars().filter(|c| c.is_alphabetic());
    let latin = letters.clone().all(|c| c.is_ascii_alphabetic());
    let uniform = latin
        && (letters.clone().all(char::is_uppercase) || letters.clone().all(char::is_lowercase));
    if !uniform || name.chars().all(|c| !c.is_alphabetic()) {
        return name;
    }
    name.split(' ')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first
                    .to_uppercase()
                    .chain(chars.flat_map(char::to_lowercase))
                    .collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// The fast paths of `fold` change nothing: the letters and digits, lower case, of the
        /// Simplified text, for any text (CJK, Latin with case, full-width, marks, emoji).
        #[test]
        fn folding_keeps_the_letters_and_digits_lower_case(
            s in "[a-zA-Z0-9 张張三歐陽ÀÉßİΣ１２Ａａ\\PC]{0,24}"
        ) {
            let expected: String = fast2s::convert(&s)
                .chars()
                .filter(|c| c.is_alphanumeric())
                .flat_map(char::to_lowercase)
                .collect();
            proptest::prop_assert_eq!(fold(&s), expected);
        }
    }

    #[test]
    fn traditional_and_simplified_names_share_a_key() {
        assert_eq!(name_key("張 三"), name_key("张三"));
        assert_eq!(name_key("歐陽娜娜"), name_key("欧阳娜娜"));
        assert_eq!(name_key("Mary Ann LEE").as_deref(), Some("maryannlee"));
        assert_eq!(name_key("  "), None);
    }

    #[test]
    fn companies_lose_legal_forms_and_city_but_keep_branches() {
        let k = |s: &str| company_key(s).unwrap();
        assert_eq!(k("某某科技有限公司"), "某某科技");
        assert_eq!(k("某某科技有限責任公司"), "某某科技");
        assert_eq!(k("华夏实业（集团）股份有限公司"), "华夏实业");
        assert_eq!(k("某某科技有限公司（深圳）"), "某某科技");
        assert_eq!(k("ACME Co., Ltd."), "acme");
        assert_eq!(k("Acme Inc."), "acme");
        assert_eq!(k("Acme Limited"), "acme");
        assert_eq!(
            k("某某科技有限公司上海分公司"),
            "某某科技有限公司上海分公司"
        );
        assert_ne!(k("某某科技有限公司上海分公司"), k("某某科技有限公司"));
        assert_eq!(k("集团"), "集团", "a name that is only a legal form stays");
    }

    #[test]
    fn latin_case_is_tidied_only_when_uniform() {
        assert_eq!(tidy_latin_case("JOHN SMITH".into()), "John Smith");
        assert_eq!(tidy_latin_case("mary ann lee".into()), "Mary Ann Lee");
        assert_eq!(tidy_latin_case("Ronald McDonald".into()), "Ronald McDonald");
        assert_eq!(tidy_latin_case("张三".into()), "张三");
    }
}
