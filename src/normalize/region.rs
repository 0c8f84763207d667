//! Chinese regions (省/市): canonical names, and the place a phone number belongs to.
//!
//! Both come from libphonenumber's Chinese geocoding data (`data/cn-geocoding.txt`, Apache-2.0,
//! refreshed by `scripts/data/update-cn-geocoding.sh`): 130k number prefixes, each mapped to a
//! place such as `广东省深圳市`. The distinct places double as the list of canonical province and
//! city names, so `北京` becomes `北京市` and `深圳` becomes `深圳市`.

use std::collections::{HashMap, HashSet};

use rustc_hash::FxHashMap;
use std::sync::LazyLock;

static DATA: &str = include_str!("data/cn-geocoding.txt");

/// Municipalities: province and city at once.
const MUNICIPALITIES: &[&str] = &["北京市", "天津市", "上海市", "重庆市"];

/// Autonomous regions as the data writes them, and their official names.
const AUTONOMOUS: &[(&str, &str)] = &[
    ("内蒙古", "内蒙古自治区"),
    ("广西", "广西壮族自治区"),
    ("西藏", "西藏自治区"),
    ("宁夏", "宁夏回族自治区"),
    ("新疆", "新疆维吾尔自治区"),
];

/// A province and, where known, a city.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub province: &'static str,
    pub city: Option<&'static str>,
}

/// The longest number prefix the data has; longer ones need not be looked up.
const LONGEST: usize = 7;

/// A number prefix as a table key: its digits' value and its length (`010` is not `10`).
fn prefix_key(digits: u64, len: usize) -> u64 {
    digits << 4 | len as u64
}

struct Geo {
    /// National-number prefix (without 86) -> its place.
    prefixes: FxHashMap<u64, Place>,
    provinces: HashSet<String>,
    /// City -> its province; `None` when two provinces have a city of that name.
    cities: HashMap<String, Option<String>>,
}

static GEO: LazyLock<Geo> = LazyLock::new(|| {
    let mut prefixes = FxHashMap::with_capacity_and_hasher(131_072, Default::default());
    let mut places = HashSet::new();
    for line in DATA.lines().filter(|l| !l.starts_with('#')) {
        if let Some((prefix, place)) = line.split_once('|')
            && let Ok(digits) = prefix.parse::<u64>()
        {
            assert!(
                prefix.len() <= LONGEST,
                "{prefix}: a longer prefix than expected"
            );
            prefixes.insert(prefix_key(digits, prefix.len()), split_place(place));
            places.insert(place);
        }
    }
    let mut provinces = HashSet::new();
    let mut cities: HashMap<String, Option<String>> = HashMap::new();
    for place in places {
        let p = split_place(place);
        if let Some(city) = p.city {
            cities
                .entry(city.to_owned())
                .and_modify(|prov| {
                    if prov.as_deref() != Some(p.province) {
                        *prov = None;
                    }
                })
                .or_insert_with(|| Some(p.province.to_owned()));
        }
        provinces.insert(p.province.to_owned());
    }
    Geo {
        prefixes,
        provinces,
        cities,
    }
});

/// `广东省深圳市` → 广东省 + 深圳市; `北京市` → 北京市 + 北京市; `内蒙古乌海市` → 内蒙古自治区 + 乌海市.
fn split_place(place: &'static str) -> Place {
    if let Some(m) = MUNICIPALITIES.iter().find(|m| place.starts_with(*m)) {
        return Place {
            province: m,
            city: Some(m),
        };
    }
    let (province, rest) =
        if let Some((short, full)) = AUTONOMOUS.iter().find(|(s, _)| place.starts_with(*s)) {
            (*full, &place[short.len()..])
        } else if let Some(i) = place.find('省') {
            place.split_at(i + '省'.len_utf8())
        } else {
            (place, "")
        };
    Place {
        province,
        city: (!rest.is_empty()).then_some(rest),
    }
}

/// Where a Chinese number (E.164) is registered, if the data knows: the longest matching prefix.
pub fn place_of_phone(e164: &str) -> Option<Place> {
    let nsn = e164.strip_prefix("+86")?.as_bytes();
    let mut keys = [0u64; LONGEST + 1];
    let mut digits = 0u64;
    for (i, b) in nsn.iter().take(LONGEST).enumerate() {
        if !b.is_ascii_digit() {
            return None;
        }
        digits = digits * 10 + u64::from(b - b'0');
        keys[i + 1] = prefix_key(digits, i + 1);
    }
    let geo = &*GEO;
    (2..=nsn.len().min(LONGEST))
        .rev()
        .find_map(|len| geo.prefixes.get(&keys[len]).copied())
}

/// The canonical name of a typed province (`广东` → `广东省`, `北京` → `北京市`, `广西` →
/// `广西壮族自治区`), or `None` when it is not a province the data knows.
pub fn canonical_province(typed: &str) -> Option<String> {
    let geo = &*GEO;
    if geo.provinces.contains(typed) {
        return Some(typed.to_owned());
    }
    if let Some((_, full)) = AUTONOMOUS.iter().find(|(short, _)| typed == *short) {
        return Some((*full).to_owned());
    }
    ["省", "市"]
        .iter()
        .map(|s| format!("{typed}{s}"))
        .find(|c| geo.provinces.contains(c))
}

/// The canonical name of a typed city (`深圳` → `深圳市`, `大理` → `大理白族自治州`) and its
/// province when only one province has a city of that name.
pub fn canonical_city(typed: &str) -> Option<(String, Option<String>)> {
    let geo = &*GEO;
    let found = |c: &str| geo.cities.get(c).map(|p| (c.to_owned(), p.clone()));
    if let Some(hit) = found(typed).or_else(|| found(&format!("{typed}市"))) {
        return Some(hit);
    }
    // A unique city whose name starts with what was typed (autonomous prefectures, 地区, 盟).
    if typed.chars().count() < 2 {
        return None;
    }
    let mut matches = geo.cities.iter().filter(|(c, _)| c.starts_with(typed));
    match (matches.next(), matches.next()) {
        (Some((c, p)), None) => Some((c.clone(), p.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(province: &'static str, city: &'static str) -> Option<Place> {
        Some(Place {
            province,
            city: Some(city),
        })
    }

    #[test]
    fn phones_are_placed_by_their_longest_prefix() {
        assert_eq!(place_of_phone("+8613800138000"), place("北京市", "北京市"));
        assert_eq!(place_of_phone("+8675586001234"), place("广东省", "深圳市"));
        assert_eq!(place_of_phone("+8610655299881"), place("北京市", "北京市"));
        assert_eq!(place_of_phone("+16502530000"), None);
    }

    #[test]
    fn typed_regions_become_canonical() {
        assert_eq!(canonical_province("北京").as_deref(), Some("北京市"));
        assert_eq!(canonical_province("广东").as_deref(), Some("广东省"));
        assert_eq!(canonical_province("广东省").as_deref(), Some("广东省"));
        assert_eq!(
            canonical_province("广西").as_deref(),
            Some("广西壮族自治区")
        );
        assert_eq!(canonical_province("火星"), None);
        assert_eq!(
            canonical_city("深圳"),
            Some(("深圳市".into(), Some("广东省".into())))
        );
        assert_eq!(
            canonical_city("大理").map(|c| c.0).as_deref(),
            Some("大理白族自治州")
        );
        assert_eq!(
            canonical_city("乌海"),
            Some(("乌海市".into(), Some("内蒙古自治区".into())))
        );
    }
}
