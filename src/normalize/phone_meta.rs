//! libphonenumber's validity and type rules, applied to current libphonenumber metadata.
//!
//! The metadata is libphonenumber's own (`data/PhoneNumberMetadata.xml`, written from PyPI's
//! `phonenumbers` by `scripts/data/update-phone-metadata.py`), read with the `phonenumber` crate's
//! loader: the crate's built-in copy is of an older release (it lacked China's 161 range).
//!
//! The crate's `is_valid` and `number_type` match a descriptor's pattern as a *prefix*
//! (`find(..).start() == 0`) where libphonenumber requires the whole national number to match. So
//! `0351 3232 6852` (a 3-digit area code with an 8-digit subscriber number, which the plan does not
//! allow) passed as a valid landline, and valid British fixed lines failed. This module redoes
//! `getNumberTypeHelper` and `getRegionCodeForNumberFromRegionList` with anchored patterns.
//! A region's type patterns are compiled together into one small dense DFA (31 KiB for China, 1.7
//! MiB for all 245 regions, built on first use), so typing a number is one pass over its digits.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use phonenumber::metadata::{Database, Descriptor, Metadata};
use regex::{Regex, RegexBuilder};
use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::{Anchored, MatchKind, util::syntax};

/// libphonenumber's metadata, of the release `scripts/data/update-phone-metadata.py` names.
pub static DATABASE: LazyLock<Database> = LazyLock::new(|| {
    Database::parse(include_str!("data/PhoneNumberMetadata.xml"))
        .expect("the committed phone metadata loads")
});

/// What kind of line a number is, as libphonenumber classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhoneKind {
    Mobile,
    FixedLine,
    /// Where the plan cannot tell (e.g. the US).
    FixedLineOrMobile,
    /// 800 in China.
    TollFree,
    /// 400 in China.
    SharedCost,
    PremiumRate,
    Voip,
    PersonalNumber,
    Pager,
    /// "Universal access" company numbers.
    Uan,
    Voicemail,
}

impl PhoneKind {
    /// The name used in records and fixtures (libphonenumber's type, snake_case).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mobile => "mobile",
            Self::FixedLine => "fixed_line",
            Self::FixedLineOrMobile => "fixed_line_or_mobile",
            Self::TollFree => "toll_free",
            Self::SharedCost => "shared_cost",
            Self::Voip => "voip",
            Self::PremiumRate => "premium_rate",
            Self::PersonalNumber => "personal_number",
            Self::Pager => "pager",
            Self::Uan => "uan",
            Self::Voicemail => "voicemail",
        }
    }

    /// Toll-free and shared-cost numbers (400/800 in China) are company switchboards: they do not
    /// identify a person, so identity matching must not join leads on them.
    pub fn identifies_person(self) -> bool {
        !matches!(
            self,
            Self::TollFree | Self::SharedCost | Self::Uan | Self::PremiumRate | Self::Voicemail
        )
    }
}

/// The metadata keeps the XML's layout inside patterns (the crate compiles them with
/// `ignore_whitespace`); no pattern has a meaningful space, so drop them all.
fn compact(pattern: &str) -> String {
    pattern.split_whitespace().collect()
}

/// Compiles a metadata pattern. The metadata only ever means ASCII digits, so `\\d` is compiled
/// as `[0-9]`, not as Unicode's 680 digits: the automata are a fraction of the size and build in a
/// fraction of the time (the first lead of a region waits for them).
fn compile(pattern: &str) -> Option<Regex> {
    RegexBuilder::new(pattern).unicode(false).build().ok()
}

/// One descriptor: its pattern anchored at both ends, and its possible lengths.
struct Desc {
    pattern: Regex,
    source: String,
    lengths: Vec<u16>,
}

impl Desc {
    fn new(d: &Descriptor) -> Option<Self> {
        let source = compact(d.national_number().as_str());
        let pattern = compile(&format!("^(?:{source})$"))?;
        Some(Self {
            pattern,
            source,
            lengths: d.possible_length().to_vec(),
        })
    }

    fn has_length(&self, nsn: &str) -> bool {
        self.lengths.is_empty() || self.lengths.contains(&(nsn.len() as u16))
    }
}

/// The DFA may not grow past this; a region whose patterns would (none today) is matched
/// descriptor by descriptor with [`Desc::pattern`] instead.
const DFA_LIMIT: usize = 16 << 20;

/// A region's compiled rules.
struct Region {
    leading_digits: Option<Regex>,
    /// The general descriptor first, then the special types in libphonenumber's order (checked
    /// before fixed line and mobile), then fixed line and mobile when the region has them.
    descs: Vec<Desc>,
    /// The type of each of `descs[1..]`; fixed line and mobile are the last two when present.
    kinds: Vec<PhoneKind>,
    fixed_line: Option<usize>,
    mobile: Option<usize>,
    /// Fixed line and mobile share one pattern (the US): the plan cannot tell them apart.
    same: bool,
    /// What the parser may strip from the front of a national number (`nationalPrefixForParsing`,
    /// anchored), or failing that the national prefix itself.
    prefix_for_parsing: Option<Regex>,
    national_prefix: Option<String>,
    /// How the region dials abroad (`00` in China, `011` in the US), anchored.
    international_prefix: Option<Regex>,
    /// Every descriptor's pattern in one anchored DFA: which of them match a number is one pass
    /// over its digits, instead of up to ten regex searches.
    dfa: Option<dense::DFA<Vec<u32>>>,
}

impl Region {
    fn new(meta: &Metadata) -> Option<Self> {
        let d = meta.descriptors();
        let mut descs = vec![Desc::new(d.general())?];
        let mut kinds = Vec::new();
        for (kind, desc) in [
            (PhoneKind::PremiumRate, d.premium_rate()),
            (PhoneKind::TollFree, d.toll_free()),
            (PhoneKind::SharedCost, d.shared_cost()),
            (PhoneKind::Voip, d.voip()),
            (PhoneKind::PersonalNumber, d.personal_number()),
            (PhoneKind::Pager, d.pager()),
            (PhoneKind::Uan, d.uan()),
            (PhoneKind::Voicemail, d.voicemail()),
            (PhoneKind::FixedLine, d.fixed_line()),
            (PhoneKind::Mobile, d.mobile()),
        ] {
            if let Some(desc) = desc.and_then(Desc::new) {
                descs.push(desc);
                kinds.push(kind);
            }
        }
        let at = |k: PhoneKind| kinds.iter().position(|&x| x == k).map(|i| i + 1);
        let (fixed_line, mobile) = (at(PhoneKind::FixedLine), at(PhoneKind::Mobile));
        let same = match (fixed_line, mobile) {
            (Some(f), Some(m)) => descs[f].source == descs[m].source,
            _ => false,
        };
        let patterns: Vec<String> = descs.iter().map(|d| format!("(?:{})$", d.source)).collect();
        let dfa = dense::Builder::new()
            .syntax(syntax::Config::new().unicode(false).utf8(false))
            .configure(
                dense::DFA::config()
                    .match_kind(MatchKind::All)
                    .start_kind(StartKind::Anchored)
                    .dfa_size_limit(Some(DFA_LIMIT))
                    .determinize_size_limit(Some(DFA_LIMIT)),
            )
            .build_many(&patterns)
            .ok();
        Some(Self {
            leading_digits: meta
                .leading_digits()
                .and_then(|r| compile(&format!("^(?:{})", compact(r.as_str())))),
            prefix_for_parsing: meta
                .national_prefix_for_parsing()
                .and_then(|r| compile(&format!("^(?:{})", compact(r.as_str())))),
            national_prefix: meta.national_prefix().map(str::to_owned),
            international_prefix: meta
                .international_prefix()
                .and_then(|r| compile(&format!("^(?:{})", compact(r.as_str())))),
            descs,
            kinds,
            fixed_line,
            mobile,
            same,
            dfa,
        })
    }

    /// Which descriptors `nsn` matches in full (pattern and possible length), bit `i` for
    /// `descs[i]`: libphonenumber's `isNumberMatchingDesc` for all of them at once.
    fn matching(&self, nsn: &str) -> u32 {
        let mut found = 0u32;
        match &self.dfa {
            Some(dfa) => {
                if let Some(mut s) = dfa.universal_start_state(Anchored::Yes) {
                    for &b in nsn.as_bytes() {
                        s = dfa.next_state(s, b);
                        if dfa.is_dead_state(s) {
                            return 0;
                        }
                    }
                    s = dfa.next_eoi_state(s);
                    if dfa.is_match_state(s) {
                        for i in 0..dfa.match_len(s) {
                            found |= 1 << dfa.match_pattern(s, i).as_usize();
                        }
                    }
                }
            }
            None => {
                for (i, d) in self.descs.iter().enumerate() {
                    if d.pattern.is_match(nsn) {
                        found |= 1 << i;
                    }
                }
            }
        }
        for (i, d) in self.descs.iter().enumerate() {
            if found & (1 << i) != 0 && !d.has_length(nsn) {
                found &= !(1 << i);
            }
        }
        found
    }

    /// libphonenumber's `getNumberTypeHelper`; `None` is UNKNOWN.
    fn number_type(&self, nsn: &str) -> Option<PhoneKind> {
        let found = self.matching(nsn);
        if found & 1 == 0 {
            return None;
        }
        let is = |i: Option<usize>| i.is_some_and(|i| found & (1 << i) != 0);
        let special = self.descs.len()
            - 1
            - usize::from(self.fixed_line.is_some())
            - usize::from(self.mobile.is_some());
        if let Some(i) = (1..=special).find(|&i| found & (1 << i) != 0) {
            return Some(self.kinds[i - 1]);
        }
        if is(self.fixed_line) {
            return Some(if self.same || is(self.mobile) {
                PhoneKind::FixedLineOrMobile
            } else {
                PhoneKind::FixedLine
            });
        }
        (!self.same && is(self.mobile)).then_some(PhoneKind::Mobile)
    }
}

/// China's rules, the ones nearly every lead needs, kept apart from the shared cache.
static CHINA: LazyLock<Option<Region>> =
    LazyLock::new(|| DATABASE.by_id("CN").and_then(Region::new));

/// The type of a Chinese national number by libphonenumber's rules (`None`: invalid).
pub fn classify_cn(nsn: &str) -> Option<PhoneKind> {
    CHINA.as_ref()?.number_type(nsn)
}

static REGIONS: LazyLock<RwLock<HashMap<String, Option<Arc<Region>>>>> =
    LazyLock::new(Default::default);

fn region(meta: &Metadata) -> Option<Arc<Region>> {
    if let Some(found) = REGIONS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(meta.id())
    {
        return found.clone();
    }
    let built = Region::new(meta).map(Arc::new);
    REGIONS
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(meta.id().to_owned(), built.clone());
    built
}

/// The type of a number given its country calling code and national significant number, or `None`
/// when libphonenumber would call it invalid. Also returns the region it belongs to.
pub fn classify(country_code: u16, nsn: &str) -> Option<(PhoneKind, &'static str)> {
    let candidates = DATABASE.by_code(&country_code)?;
    if candidates.len() == 1 {
        let meta = candidates[0];
        return region(meta)?.number_type(nsn).map(|k| (k, meta.id()));
    }
    // Several regions share the code (+1, +44, +7...): the first whose leading digits match, or
    // failing that whose patterns know the number (getRegionCodeForNumberFromRegionList).
    for meta in candidates {
        let Some(r) = region(meta) else { continue };
        match &r.leading_digits {
            Some(lead) if lead.is_match(nsn) => {
                return r.number_type(nsn).map(|k| (k, meta.id()));
            }
            Some(_) => {}
            None => {
                if let Some(k) = r.number_type(nsn) {
                    return Some((k, meta.id()));
                }
            }
        }
    }
    None
}

/// The country calling code a number written after `+` starts with, and the rest: the shortest
/// 1-3 digit prefix that is a calling code (libphonenumber's `extractCountryCode`).
pub fn split_country_code(digits: &str) -> Option<(u16, &str)> {
    if digits.starts_with('0') {
        return None;
    }
    (1..=digits.len().min(3)).find_map(|n| {
        let code = digits[..n].parse().ok()?;
        DATABASE.by_code(&code).map(|_| (code, &digits[n..]))
    })
}

/// Whether the parser leaves the national number after `+code` as it is: neither the country's
/// national prefix for parsing nor its national prefix begins it. When one does, libphonenumber
/// strips it only if what is left is still a possible number; that is the general parser's call.
pub fn keeps_national_number(code: u16, nsn: &str) -> bool {
    let Some(meta) = main_meta(code) else {
        return false;
    };
    let Some(r) = region(meta) else {
        return false;
    };
    match (&r.prefix_for_parsing, &r.national_prefix) {
        (Some(parsing), _) => !parsing.is_match(nsn),
        (None, Some(prefix)) => !nsn.starts_with(prefix.as_str()),
        (None, None) => true,
    }
}

fn main_meta(country_code: u16) -> Option<&'static Metadata> {
    let candidates = DATABASE.by_code(&country_code)?;
    candidates
        .iter()
        .find(|m| m.is_main_country_for_code())
        .or(candidates.first())
        .copied()
}

/// The country calling code of a region (86 for CN).
pub fn country_code(region: phonenumber::country::Id) -> Option<u16> {
    DATABASE.by_id(region.as_ref()).map(Metadata::country_code)
}

/// What follows the region's international prefix when `digits`, dialled in `region`, begin
/// with it (`00`, or a carrier code and `00`, in China): the number abroad.
pub fn after_international_prefix(region: phonenumber::country::Id, digits: &str) -> Option<&str> {
    let r = self::region(DATABASE.by_id(region.as_ref())?)?;
    let found = r.international_prefix.as_ref()?.find(digits)?;
    Some(&digits[found.end()..])
}

/// The main region of a country calling code (US for +1, GB for +44).
pub fn main_region(country_code: u16) -> Option<phonenumber::country::Id> {
    main_meta(country_code)?.id().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_region_compiles_with_ascii_digits() {
        // A pattern that failed to compile would make every number of its region invalid.
        for meta in DATABASE.iter() {
            let d = meta.descriptors();
            let declared = [
                d.premium_rate(),
                d.toll_free(),
                d.shared_cost(),
                d.voip(),
                d.personal_number(),
                d.pager(),
                d.uan(),
                d.voicemail(),
                d.fixed_line(),
                d.mobile(),
            ];
            let region = Region::new(meta).unwrap_or_else(|| panic!("{}", meta.id()));
            assert_eq!(
                region.descs.len() - 1,
                declared.iter().flatten().count(),
                "{}",
                meta.id()
            );
            assert!(
                region.dfa.is_some(),
                "{}: the DFA is over its limit",
                meta.id()
            );
            assert_eq!(
                region.leading_digits.is_some(),
                meta.leading_digits().is_some(),
                "{}",
                meta.id()
            );
        }
    }

    #[test]
    fn whole_numbers_must_match_not_prefixes() {
        assert_eq!(
            classify(86, "13800138000").map(|c| c.0),
            Some(PhoneKind::Mobile)
        );
        assert_eq!(
            classify(86, "1065529988").map(|c| c.0),
            Some(PhoneKind::FixedLine)
        );
        // 3-digit area code 351 with an 8-digit subscriber number: not in the plan.
        assert_eq!(classify(86, "35132326852"), None);
        assert_eq!(classify(86, "35123262852").map(|c| c.0), None);
        assert_eq!(
            classify(86, "3512326285").map(|c| c.0),
            Some(PhoneKind::FixedLine)
        );
        assert_eq!(
            classify(44, "1212348756").map(|c| c.0),
            Some(PhoneKind::FixedLine)
        );
        assert_eq!(
            classify(1, "6502530000").map(|c| (c.0, c.1)),
            Some((PhoneKind::FixedLineOrMobile, "US"))
        );
    }
}
