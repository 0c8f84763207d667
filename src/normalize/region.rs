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

/// A number prefix as a table key: its digits' value and its length (`010` is not `10`).
fn prefix_key(digits: u64, len: usize) -> u64 {
    digits << 4 | len as u64
}

/// The prefixes of numbers that start with 1 (mobiles, and Beijing's `10`) are up to 7 digits
/// long; those of the other area codes, up to 4 (the data has 3).
const MOBILE_WIDTH: usize = 7;
const AREA_WIDTH: usize = 4;

struct Geo {
    /// Place id - 1 -> place.
    places: Vec<Place>,
    /// The first 7 digits of a number that starts with 1, less 1,000,000 -> the place id of the
    /// longest prefix of them in the data (0: none). One read instead of a probe per length.
    by_mobile: Box<[u16]>,
    /// The same for the first 4 digits of any other number.
    by_area: Box<[u16]>,
    /// Prefixes shorter than their table's width, for the rare number shorter than it.
    short: FxHashMap<u64, u16>,
    provinces: HashSet<String>,
    /// City -> its province; `None` when two provinces have a city of that name.
    cities: HashMap<String, Option<String>>,
}

/// The table width and first key of numbers that begin with `first`: the first 7 digits, less
/// 1,000,000, of those that start with 1; the first 4 of the others.
fn width_and_base(first: Option<&u8>) -> (usize, u64) {
    if first == Some(&b'1') {
        (MOBILE_WIDTH, 1_000_000)
    } else {
        (AREA_WIDTH, 0)
    }
}

/// The value of ASCII digits.
fn value(digits: &[u8]) -> u64 {
    digits
        .iter()
        .fold(0, |v, b| v * 10 + u64::from(b.wrapping_sub(b'0')))
}

impl Geo {
    /// The place of a national number's longest prefix in the data.
    fn place(&self, nsn: &[u8]) -> Option<Place> {
        let (width, base) = width_and_base(nsn.first());
        let head = &nsn[..nsn.len().min(width)];
        if !head.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let id = if head.len() == width {
            let table = if width == MOBILE_WIDTH {
                &self.by_mobile
            } else {
                &self.by_area
            };
            usize::try_from(value(head) - base)
                .ok()
                .and_then(|i| table.get(i))
                .copied()
                .unwrap_or(0)
        } else {
            (2..=head.len())
                .rev()
                .find_map(|len| self.short.get(&prefix_key(value(&head[..len]), len)))
                .copied()
                .unwrap_or(0)
        };
        self.places.get(usize::from(id).checked_sub(1)?).copied()
    }
}

static GEO: LazyLock<Geo> = LazyLock::new(|| {
    let mut entries: Vec<(&str, u64, &'static str)> = DATA
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (prefix, place) = line.split_once('|')?;
            Some((prefix, prefix.parse::<u64>().ok()?, place))
        })
        .collect();
    // Shorter prefixes first, so a longer one overwrites the range it refines.
    entries.sort_by_key(|(prefix, ..)| prefix.len());
    let mut ids: HashMap<&'static str, u16> = HashMap::new();
    let mut places = Vec::new();
    let mut by_mobile = vec![0u16; 1_000_000].into_boxed_slice();
    let mut by_area = vec![0u16; 10_000].into_boxed_slice();
    let mut short = FxHashMap::default();
    for (prefix, digits, place) in entries {
        let id = *ids.entry(place).or_insert_with(|| {
            places.push(split_place(place));
            u16::try_from(places.len()).expect("fewer than 65,535 places")
        });
        let (width, base) = width_and_base(prefix.as_bytes().first());
        let table = if width == MOBILE_WIDTH {
            &mut by_mobile
        } else {
            &mut by_area
        };
        assert!(
            prefix.len() <= width && !prefix.starts_with('0'),
            "{prefix}: a prefix longer than {width} digits, or with a trunk 0"
        );
        let span = 10u64.pow((width - prefix.len()) as u32);
        let start = (digits * span - base) as usize;
        table[start..start + span as usize].fill(id);
        if prefix.len() < width {
            short.insert(prefix_key(digits, prefix.len()), id);
        }
    }
    let mut provinces = HashSet::new();
    let mut cities: HashMap<String, Option<String>> = HashMap::new();
    for p in &places {
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
        places,
        by_mobile,
        by_area,
        short,
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
    GEO.place(e164.strip_prefix("+86")?.as_bytes())
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

    /// The tables give what a plain longest-prefix search of the data gives: for each prefix, the
    /// numbers it begins (of every length, and cut short) and its neighbours.
    #[test]
    fn the_tables_agree_with_a_longest_prefix_search() {
        let data: HashMap<&str, Place> = DATA
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('|'))
            .map(|(prefix, place)| (prefix, split_place(place)))
            .collect();
        let search = |nsn: &str| {
            (2..=nsn.len().min(7))
                .rev()
                .find_map(|len| data.get(&nsn[..len]).copied())
        };
        let mut checked = 0;
        for prefix in data.keys() {
            for tail in ["", "0", "9", "00000000", "99999999", "12345678"] {
                for cut in [0, 1, 2] {
                    let number = format!("{prefix}{tail}");
                    let number = &number[..number.len().saturating_sub(cut).max(1)];
                    assert_eq!(GEO.place(number.as_bytes()), search(number), "+86{number}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 2_000_000, "{checked}");
        for n in ["1", "", "2", "1x3800138000", "0755"] {
            assert_eq!(
                GEO.place(n.as_bytes()),
                search(n).filter(|_| !n.contains('x')),
                "{n}"
            );
        }
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
