//! A lead's own country, from whatever a country field holds: an ISO 3166 code (`TW`, `twn`), a
//! name in English or Chinese (`South Africa`, `台湾`, `臺灣`, `中国香港`), or a dialing code
//! (`+886`, `27`, `China (+86)`). The names come from iso-codes (`data/countries.tsv`, written by
//! `scripts/data/update-countries.py`), plus the short forms people type (`USA`, `UK`,
//! `中国大陆`). It sets the region a phone number without a country code is read in.

use std::collections::HashMap;
use std::sync::LazyLock;

use phonenumber::country;
use unicode_normalization::UnicodeNormalization;

static DATA: &str = include_str!("data/countries.tsv");

/// Names people type that iso-codes does not list, by alpha-2.
const ALIASES: &[(&str, &[&str])] = &[
    (
        "CN",
        &[
            "中国大陆",
            "大陆",
            "内地",
            "中国内地",
            "mainland china",
            "prc",
            "中國大陸",
        ],
    ),
    (
        "TW",
        &[
            "中国台湾",
            "台湾省",
            "中國台灣",
            "taiwan roc",
            "republic of china",
        ],
    ),
    (
        "HK",
        &["中国香港", "hongkong sar", "hksar", "hong kong sar"],
    ),
    ("MO", &["中国澳门", "macau", "中國澳門"]),
    (
        "US",
        &["usa", "america", "united states of america", "美利坚"],
    ),
    (
        "GB",
        &[
            "uk",
            "england",
            "great britain",
            "britain",
            "scotland",
            "wales",
        ],
    ),
    ("KR", &["korea", "republic of korea", "s korea"]),
    ("KP", &["north korea", "朝鲜"]),
    ("RU", &["russia"]),
    ("VN", &["vietnam"]),
    ("AE", &["uae"]),
];

/// A name folded for lookup: NFKC, lowercase, no spaces or punctuation.
fn fold(s: &str) -> String {
    s.nfkc()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Folded names and codes -> alpha-2.
static INDEX: LazyLock<HashMap<String, &'static str>> = LazyLock::new(|| {
    let mut index = HashMap::new();
    for line in DATA
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let mut cols = line.split('\t');
        let (Some(alpha2), Some(alpha3), Some(_numeric), Some(names)) =
            (cols.next(), cols.next(), cols.next(), cols.next())
        else {
            continue;
        };
        for key in [alpha2, alpha3].into_iter().chain(names.split('|')) {
            index.entry(fold(key)).or_insert(alpha2);
        }
    }
    for (alpha2, names) in ALIASES {
        for n in *names {
            index.entry(fold(n)).or_insert(*alpha2);
        }
    }
    index
});

/// The region `text` names, if it names one libphonenumber knows.
pub fn region_of(text: &str) -> Option<country::Id> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    // A dialing code: `+886`, `00886`, `886`, or one inside (`China (+86)`).
    let folded: String = text.nfkc().collect();
    let digits_after = |at: usize| -> String {
        folded[at..]
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(char::is_ascii_digit)
            .collect()
    };
    let dialing = if let Some(plus) = folded.find('+') {
        Some(digits_after(plus))
    } else if folded.chars().all(|c| c.is_ascii_digit()) {
        Some(folded.trim_start_matches("00").to_owned())
    } else {
        None
    };
    if let Some(code) = dialing {
        return code
            .parse::<u16>()
            .ok()
            .filter(|_| (1..=3).contains(&code.len()))
            .and_then(super::phone_meta::main_region);
    }
    let by_name = |s: &str| INDEX.get(&fold(s)).and_then(|a2| a2.parse().ok());
    by_name(text).or_else(|| {
        // `Taiwan (ROC)`, `中国（台湾）`: the part before the brackets.
        let head = text.split(['(', '（', '[', '/', ',']).next()?;
        by_name(head)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use country::Id;

    #[test]
    fn codes_names_and_dialing_codes_name_regions() {
        for (text, want) in [
            ("TW", Id::TW),
            ("twn", Id::TW),
            ("台湾", Id::TW),
            ("臺灣", Id::TW),
            ("中国台湾", Id::TW),
            ("Taiwan", Id::TW),
            ("+886", Id::TW),
            ("香港", Id::HK),
            ("中国香港", Id::HK),
            ("Hong Kong", Id::HK),
            ("中国", Id::CN),
            ("中国大陆", Id::CN),
            ("China (+86)", Id::CN),
            ("86", Id::CN),
            ("South Africa", Id::ZA),
            ("南非", Id::ZA),
            ("+27", Id::ZA),
            ("0027", Id::ZA),
            ("USA", Id::US),
            ("United States", Id::US),
            ("+1", Id::US),
            ("ＵＳ", Id::US),
            ("United Kingdom", Id::GB),
            ("uk", Id::GB),
            ("+44", Id::GB),
            ("South Korea", Id::KR),
            ("韩国", Id::KR),
            ("日本", Id::JP),
            ("Germany", Id::DE),
            ("德国", Id::DE),
        ] {
            assert_eq!(region_of(text), Some(want), "{text}");
        }
        for text in ["", "  ", "Atlantis", "+9999", "12345", "地球"] {
            assert_eq!(region_of(text), None, "{text}");
        }
    }
}
