//! libphonenumber's validity and type rules, applied to the `phonenumber` crate's own metadata.
//!
//! The crate's `is_valid` and `number_type` match a descriptor's pattern as a *prefix*
//! (`find(..).start() == 0`) where libphonenumber requires the whole national number to match. So
//! `0351 3232 6852` (a 3-digit area code with an 8-digit subscriber number, which the plan does not
//! allow) passed as a valid landline, and valid British fixed lines failed. This module redoes
//! `getNumberTypeHelper` and `getRegionCodeForNumberFromRegionList` with anchored patterns.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use phonenumber::metadata::{DATABASE, Descriptor, Metadata};
use regex::{Regex, RegexBuilder};

use super::phone::PhoneKind;

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

    /// libphonenumber's `isNumberMatchingDesc`.
    fn matches(&self, nsn: &str) -> bool {
        (self.lengths.is_empty() || self.lengths.contains(&(nsn.len() as u16)))
            && self.pattern.is_match(nsn)
    }
}

/// A region's compiled rules.
struct Region {
    leading_digits: Option<Regex>,
    general: Desc,
    /// Checked in libphonenumber's order, before fixed line and mobile.
    special: Vec<(PhoneKind, Desc)>,
    fixed_line: Option<Desc>,
    mobile: Option<Desc>,
    /// Every non-mobile pattern in one alternation: if it does not match, none of them does.
    not_mobile: Option<Regex>,
}

impl Region {
    fn new(meta: &Metadata) -> Option<Self> {
        let d = meta.descriptors();
        let special: Vec<(PhoneKind, Desc)> = [
            (PhoneKind::PremiumRate, d.premium_rate()),
            (PhoneKind::TollFree, d.toll_free()),
            (PhoneKind::SharedCost, d.shared_cost()),
            (PhoneKind::Voip, d.voip()),
            (PhoneKind::PersonalNumber, d.personal_number()),
            (PhoneKind::Pager, d.pager()),
            (PhoneKind::Uan, d.uan()),
            (PhoneKind::Voicemail, d.voicemail()),
        ]
        .into_iter()
        .filter_map(|(k, desc)| Some((k, Desc::new(desc?)?)))
        .collect();
        let others: Vec<String> = special
            .iter()
            .map(|(_, d)| d.source.clone())
            .chain(
                d.fixed_line()
                    .map(|f| compact(f.national_number().as_str())),
            )
            .map(|s| format!("(?:{s})"))
            .collect();
        let not_mobile = compile(&format!("^(?:{})$", others.join("|")));
        Some(Self {
            not_mobile,
            leading_digits: meta
                .leading_digits()
                .and_then(|r| compile(&format!("^(?:{})", compact(r.as_str())))),
            general: Desc::new(d.general())?,
            special,
            fixed_line: d.fixed_line().and_then(Desc::new),
            mobile: d.mobile().and_then(Desc::new),
        })
    }

    /// libphonenumber's `getNumberTypeHelper`; `None` is UNKNOWN.
    fn number_type(&self, nsn: &str) -> Option<PhoneKind> {
        if !self.general.matches(nsn) {
            return None;
        }
        if let Some((kind, _)) = self.special.iter().find(|(_, d)| d.matches(nsn)) {
            return Some(*kind);
        }
        let same = match (&self.fixed_line, &self.mobile) {
            (Some(f), Some(m)) => f.source == m.source,
            _ => false,
        };
        let is_mobile = || self.mobile.as_ref().is_some_and(|m| m.matches(nsn));
        if self.fixed_line.as_ref().is_some_and(|f| f.matches(nsn)) {
            return Some(if same || is_mobile() {
                PhoneKind::FixedLineOrMobile
            } else {
                PhoneKind::FixedLine
            });
        }
        (!same && is_mobile()).then_some(PhoneKind::Mobile)
    }
}

impl Region {
    /// A quick exact answer to "is this a mobile?": the general and mobile patterns match and no
    /// other type's pattern does (one alternation instead of nine matches). `false` means "ask
    /// [`Region::number_type`]", not "not a mobile".
    fn is_plain_mobile(&self, nsn: &str) -> bool {
        let (Some(mobile), Some(others)) = (&self.mobile, &self.not_mobile) else {
            return false;
        };
        self.general.matches(nsn) && mobile.matches(nsn) && !others.is_match(nsn)
    }
}

/// China's rules, the ones nearly every lead needs, kept apart from the shared cache.
static CHINA: LazyLock<Option<Region>> =
    LazyLock::new(|| DATABASE.by_id("CN").and_then(Region::new));

/// The type of a Chinese national number by libphonenumber's rules (`None`: invalid), with a
/// quick answer for the common case, a mobile.
pub fn classify_cn(nsn: &str) -> Option<PhoneKind> {
    let cn = CHINA.as_ref()?;
    if cn.is_plain_mobile(nsn) {
        Some(PhoneKind::Mobile)
    } else {
        cn.number_type(nsn)
    }
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

/// The main region of a country calling code (US for +1, GB for +44).
pub fn main_region(country_code: u16) -> Option<phonenumber::country::Id> {
    let candidates = DATABASE.by_code(&country_code)?;
    let main = candidates
        .iter()
        .find(|m| m.is_main_country_for_code())
        .or(candidates.first())?;
    main.id().parse().ok()
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
            let built = region.special.len()
                + usize::from(region.fixed_line.is_some())
                + usize::from(region.mobile.is_some());
            assert_eq!(built, declared.iter().flatten().count(), "{}", meta.id());
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
