//! Phone numbers: folded, stripped of labels and extensions, parsed to E.164 by the `phonenumber`
//! crate (libphonenumber's metadata), and typed.
//!
//! The crate is wrapped rather than called directly because it rejects full-width digits and knows
//! nothing of the prefixes and masks Chinese sources use (`0086`, a bare `86`, `138****1234`).

use std::fmt;

use phonenumber::country;

pub use super::phone_meta::PhoneKind;

/// A valid phone number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phone {
    e164: String,
    extension: Option<String>,
    kind: PhoneKind,
}

/// Why an input is not a usable phone number. Each maps to a stable issue code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub enum PhoneError {
    Masked,
    NoNumber,
    Invalid,
}

impl PhoneError {
    /// The error's text, without formatting it into a new string.
    pub fn message(&self) -> &'static str {
        match self {
            Self::Masked => "the number is masked (digits hidden by the platform)",
            Self::NoNumber => "no phone number in the text",
            Self::Invalid => "not a valid number for its region",
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Masked => "phone.masked",
            Self::NoNumber => "phone.no_number",
            Self::Invalid => "phone.invalid",
        }
    }
}

impl Phone {
    /// Parses `input`, reading numbers without a country code as numbers of `region`.
    pub fn parse(input: &str, region: country::Id) -> Result<Self, PhoneError> {
        if let Some(fast) = fast(input, region) {
            return fast;
        }
        let folded = super::text::nfkc(input);
        if is_masked(&folded) {
            return Err(PhoneError::Masked);
        }
        let start = folded
            .find(|c: char| c.is_ascii_digit() || c == '+' || c == '(')
            .ok_or(PhoneError::NoNumber)?;
        let (main, extension) = split_extension(&folded[start..]);
        // Folded, without its label and extension, it is often the common shape after all.
        if let Some(fast) = fast(&main, region) {
            return fast.map(|p| Phone { extension, ..p });
        }
        let candidate = canonical_prefix(&main);
        if candidate.bytes().filter(u8::is_ascii_digit).count() < 3 {
            return Err(PhoneError::NoNumber);
        }
        let mut number =
            phonenumber::parse_with(&super::phone_meta::DATABASE, Some(region), &candidate)
                .map_err(|_| PhoneError::Invalid)?;
        // The crate strips national and carrier prefixes by the *default* region's rules even when
        // the number names another country (+44 1212... lost "1212" as if it were a Chinese
        // carrier code). libphonenumber uses the number's own country: parse again under it, from
        // after the region's international prefix (in China also a carrier code and 00:
        // `17972 00 55…`). Parsed whole, the digits would be read as that country's national
        // number (`179 7200 5555` came back as +55 17972005555, a Brazilian mobile).
        let mut candidate = candidate;
        if super::phone_meta::country_code(region) != Some(number.code().value())
            && !candidate.starts_with('+')
        {
            let abroad = super::phone_meta::after_international_prefix(region, &candidate)
                .ok_or(PhoneError::Invalid)?;
            candidate = format!("+{abroad}");
        }
        if let Some(home) = super::phone_meta::main_region(number.code().value())
            && home != region
        {
            number = phonenumber::parse_with(&super::phone_meta::DATABASE, Some(home), &candidate)
                .map_err(|_| PhoneError::Invalid)?;
        }
        // Validity and type by libphonenumber's rules (see phone_meta), not the crate's.
        let code = number.code().value();
        let nsn = number.national().to_string();
        let (kind, _) = super::phone_meta::classify(code, &nsn).ok_or(PhoneError::Invalid)?;
        let extension = extension.or_else(|| number.extension().map(|e| e.to_string()));
        Ok(Self {
            e164: format!("+{code}{nsn}"),
            extension,
            kind,
        })
    }

    pub fn e164(&self) -> &str {
        &self.e164
    }

    pub fn extension(&self) -> Option<&str> {
        self.extension.as_deref()
    }

    pub fn kind(&self) -> PhoneKind {
        self.kind
    }

    /// The E.164 number, the extension and the type, without copies.
    pub fn into_parts(self) -> (String, Option<String>, PhoneKind) {
        (self.e164, self.extension, self.kind)
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.e164)
    }
}

/// The common cases without the general parser: ASCII digits and separators (spaces, dashes,
/// dots, brackets), either after a `+` (or the `00` [`canonical_prefix`] reads as one) or, in
/// region CN, a national number, optionally after `+86`, `(+86)`, `0086` or a bare `86` before 11
/// digits. The national number is then known (a trunk `0` dropped) and its validity and type come
/// straight from libphonenumber's patterns. `None` means "not this shape" and the general path
/// decides: extensions, letters, numbers from which libphonenumber may strip a national or carrier
/// prefix and the rest is valid (`17951 13800138000` in China, a trunk `0` after `+44`).
fn fast(input: &str, region: country::Id) -> Option<Result<Phone, PhoneError>> {
    let input = input.trim();
    if input.len() > 32 || !input.is_ascii() {
        return None;
    }
    let mut digits = [0u8; 24];
    let mut n = 0;
    let mut plus = false;
    for (i, b) in input.bytes().enumerate() {
        match b {
            b'0'..=b'9' => {
                *digits.get_mut(n)? = b;
                n += 1;
            }
            b'+' if n == 0 && (i == 0 || (i == 1 && input.starts_with('('))) => plus = true,
            b' ' | b'-' | b'.' | b'(' | b')' => {}
            _ => return None,
        }
    }
    let digits = &digits[..n];
    let cn = region == country::Id::CN;
    let national = match digits {
        [b'8', b'6', rest @ ..] if plus => rest.strip_prefix(b"0").unwrap_or(rest),
        _ if plus => return international(digits),
        [b'0', b'0', b'8', b'6', rest @ ..] if cn => rest.strip_prefix(b"0").unwrap_or(rest),
        [b'0', b'0', rest @ ..] if rest.len() >= 8 && rest[0] != b'0' => {
            return international(rest);
        }
        _ if !cn => return None,
        [b'0', b'0', ..] => return None,
        [b'0', rest @ ..] => rest,
        [b'8', b'6', rest @ ..] if rest.len() == 11 && rest[0] == b'1' => rest,
        // Otherwise a leading 86 may or may not be the country code: libphonenumber strips it only
        // when that makes the number valid. The general path does that.
        [b'8', b'6', ..] => return None,
        rest => rest,
    };
    if national.len() < 3 {
        return None;
    }
    let nsn = std::str::from_utf8(national).ok()?;
    // China's national prefix for parsing, `(1(?:[12]\d|79)\d\d)|0`, reads `11xxx`, `12xxx` and
    // `179xx` as five-digit carrier codes: libphonenumber drops them when what is left is a possible number.
    // The number is then one of two; when neither is valid (a 179 "mobile"), nor is the number.
    // Otherwise (`17951 13800138000`) the general path decides.
    if let [b'1', b'1' | b'2', ..] | [b'1', b'7', b'9', ..] = national {
        let stripped = nsn.get(5..).unwrap_or_default();
        let cn = super::phone_meta::classify_cn;
        return (cn(nsn).is_none() && cn(stripped).is_none()).then_some(Err(PhoneError::Invalid));
    }
    Some(match super::phone_meta::classify_cn(nsn) {
        Some(kind) => Ok(Phone {
            e164: joined("+86", nsn),
            extension: None,
            kind,
        }),
        None => Err(PhoneError::Invalid),
    })
}

/// The digits after a `+` (other than +86): the calling code, then the national number as it is
/// when the country's national prefix cannot begin it.
fn international(digits: &[u8]) -> Option<Result<Phone, PhoneError>> {
    let digits = std::str::from_utf8(digits).ok()?;
    let (code, nsn) = super::phone_meta::split_country_code(digits)?;
    // libphonenumber's bounds on a national number (2-17 digits) are the general path's errors.
    if !(2..=17).contains(&nsn.len()) || !super::phone_meta::keeps_national_number(code, nsn) {
        return None;
    }
    Some(match super::phone_meta::classify(code, nsn) {
        Some((kind, _)) => Ok(Phone {
            e164: joined("+", digits),
            extension: None,
            kind,
        }),
        None => Err(PhoneError::Invalid),
    })
}

/// `a` then `b`, in one allocation.
fn joined(a: &str, b: &str) -> String {
    let mut s = String::with_capacity(a.len() + b.len());
    s.push_str(a);
    s.push_str(b);
    s
}

/// `138****1234`, `134xxxx1234`, `138●●●●1234`: digits hidden by the platform.
fn is_masked(s: &str) -> bool {
    if s.contains(['*', '●', '•']) {
        return true;
    }
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let run = b[i + 1..]
                .iter()
                .take_while(|c| matches!(c, b'x' | b'X'))
                .count();
            if run >= 2 && b.get(i + 1 + run).is_some_and(u8::is_ascii_digit) {
                return true;
            }
        }
        i += 1;
    }
    false
}

/// Splits `010-1234-5678 转 801` into the number and the extension digits.
fn split_extension(s: &str) -> (String, Option<String>) {
    const MARKERS: &[&str] = &[
        "分机号",
        "分机",
        "转",
        "extension",
        "ext.",
        "ext",
        "x",
        "#",
        ",",
        ";",
    ];
    // Every marker has one of these: most numbers have none, and need no search.
    if !s.contains(['x', 'X', '#', ',', ';', '转', '分']) {
        return (s.to_owned(), None);
    }
    let lower = s.to_lowercase();
    for marker in MARKERS {
        let Some(pos) = lower.find(marker) else {
            continue;
        };
        let digits_before = lower[..pos].bytes().filter(u8::is_ascii_digit).count();
        let tail = lower[pos + marker.len()..].trim_start_matches([' ', ':', '.', '-']);
        let ext: String = tail.chars().take_while(char::is_ascii_digit).collect();
        if digits_before >= 5 && !ext.is_empty() && tail[ext.len()..].trim().is_empty() {
            return (s[..pos].to_owned(), Some(ext));
        }
    }
    (s.to_owned(), None)
}

/// Rewrites the prefixes people type into what libphonenumber expects: `0086`/`00` → `+`,
/// a bare `86` before an 11-digit Chinese mobile → `+86`, and drops a `(0)` trunk marker.
fn canonical_prefix(s: &str) -> String {
    let s = s.replace("(0)", "");
    let plus = s.trim_start().starts_with('+');
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    if plus {
        format!("+{digits}")
    } else if let Some(rest) = digits
        .strip_prefix("00")
        .filter(|r| r.len() >= 8 && !r.starts_with('0'))
    {
        format!("+{rest}")
    } else if digits.len() == 13 && digits.starts_with("861") {
        format!("+{digits}")
    } else {
        digits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cn(s: &str) -> Result<String, PhoneError> {
        Phone::parse(s, country::Id::CN).map(|p| p.e164().to_owned())
    }

    #[test]
    fn the_161_range_is_a_mobile_range() {
        // Added in libphonenumber 9.0.34; the crate's own metadata (9.0.33) refused it.
        for s in [
            "161 0338 4808",
            "+86 161 0338 4808",
            "16103384808",
            "8616103384808",
        ] {
            let p = Phone::parse(s, country::Id::CN).unwrap_or_else(|e| panic!("{s}: {e:?}"));
            assert_eq!(p.e164(), "+8616103384808");
            assert_eq!(p.kind(), PhoneKind::Mobile);
        }
    }

    #[test]
    fn chinese_mobiles_in_common_shapes() {
        for s in [
            "138 0013 8000",
            "13800138000",
            "+86 138-0013-8000",
            "(+86)13800138000",
            "0086 13800138000",
            "8613800138000",
            "１３８００１３８０００",
            "＋８６ １３８ ００１３ ８０００",
            "手机:138.0013.8000",
            "Tel: 138 0013 8000",
        ] {
            assert_eq!(cn(s).as_deref(), Ok("+8613800138000"), "{s}");
        }
    }

    #[test]
    fn landlines_with_trunk_and_extension() {
        let p = Phone::parse("010-6552 9988 转 801", country::Id::CN).unwrap();
        assert_eq!((p.e164(), p.extension()), ("+861065529988", Some("801")));
        assert_eq!(cn("+86 (0)10 6552 9988").as_deref(), Ok("+861065529988"));
        let p = Phone::parse("(021) 6888 1234 ext. 12", country::Id::CN).unwrap();
        assert_eq!(p.extension(), Some("12"));
    }

    #[test]
    fn international_numbers() {
        assert_eq!(cn("+1 650-253-0000").as_deref(), Ok("+16502530000"));
        assert_eq!(cn("0044 20 7946 0958").as_deref(), Ok("+442079460958"));
        // A national prefix after the country code is libphonenumber's to strip (reference:
        // Python phonenumbers 9.0.43), an Italian leading zero is not.
        for (typed, e164) in [
            ("+44 (0)20 7946 0958", "+442079460958"),
            ("+44 020 7946 0958", "+442079460958"),
            ("0044 020 7946 0958", "+442079460958"),
            ("+7 8 495 123 4567", "+74951234567"),
            ("+1 1 650 253 0000", "+16502530000"),
            ("+39 06 6982 1234", "+390669821234"),
            ("+852 5123 4567", "+85251234567"),
        ] {
            assert_eq!(cn(typed).as_deref(), Ok(e164), "{typed}");
        }
        assert_eq!(
            Phone::parse("(650) 253-0000", country::Id::US)
                .unwrap()
                .e164(),
            "+16502530000"
        );
    }

    #[test]
    fn masked_and_junk_are_reported() {
        assert_eq!(cn("138****1234"), Err(PhoneError::Masked));
        assert_eq!(cn("134xxxx1234"), Err(PhoneError::Masked));
        assert_eq!(cn("n/a"), Err(PhoneError::NoNumber));
        assert_eq!(cn("12345"), Err(PhoneError::Invalid));
    }

    #[test]
    fn carrier_codes_before_chinese_numbers() {
        // Reference: Python phonenumbers 9.0.43. A carrier code before a valid number is dropped;
        // a 179 "mobile" is invalid, not a short number after a carrier code.
        for (typed, want) in [
            ("17951 13800138000", Ok("+8613800138000")),
            ("11808 1065529988", Ok("+861065529988")),
            ("1180813800138000", Ok("+8613800138000")),
            ("17966163735", Err(PhoneError::Invalid)),
            ("+86 17904278274", Err(PhoneError::Invalid)),
            ("11011", Err(PhoneError::Invalid)),
        ] {
            assert_eq!(cn(typed), want.map(str::to_owned), "{typed}");
        }
    }

    #[test]
    fn a_number_without_a_country_code_stays_in_its_region() {
        // Reference: Python phonenumbers 9.0.43 calls both invalid Chinese numbers.
        for typed in [
            "179 7200 5555",
            "17928004376",
            "179/7200/5555",
            "179 7200 5555 转 12",
        ] {
            assert_eq!(cn(typed), Err(PhoneError::Invalid), "{typed}");
        }
    }

    #[test]
    fn switchboards_do_not_identify_people() {
        let p = Phone::parse("400-810-8888", country::Id::CN).unwrap();
        assert!(!p.kind().identifies_person(), "{:?}", p.kind());
        assert!(
            Phone::parse("13800138000", country::Id::CN)
                .unwrap()
                .kind()
                .identifies_person()
        );
    }
}
