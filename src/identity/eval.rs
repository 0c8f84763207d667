//! The identity evaluation harness: synthetic leads with a known person behind each record, run
//! through the real mapping, normalization and identity store, scored pairwise.
//!
//! People are Chinese (about 70%) or international. Each has 1-5 records from different sources
//! with realistic corruption: phone formats and full-width digits, email case, Gmail dots and
//! `+tags`, typo'd provider domains, Traditional/Simplified names, spaces inside names, company
//! suffix variants, and records with only a phone, only an email, or both. Traps: colleagues who
//! share a company 400 number, a role mailbox or a receptionist's mobile; namesakes; identical
//! masked phones (as Tencent sends them); placeholder phones.
//!
//! Used by the test suite (a small sample with asserted floors) and by `benches/identity.rs`.

use std::collections::HashMap;

use fastrand::Rng;
use serde_json::{Value, json};

use super::{IdentityStore, Policy, RequestInput, Resolution};
use crate::mapping::Mapper;
use crate::normalize::{Phone, normalize};

/// One synthetic lead and the person really behind it.
#[derive(Debug, Clone)]
pub struct Sample {
    pub person: u32,
    pub connector: &'static str,
    pub payload: Value,
}

const SURNAMES: &[(&str, &str, &str)] = &[
    ("张", "張", "zhang"),
    ("王", "王", "wang"),
    ("李", "李", "li"),
    ("刘", "劉", "liu"),
    ("陈", "陳", "chen"),
    ("杨", "楊", "yang"),
    ("黄", "黃", "huang"),
    ("赵", "趙", "zhao"),
    ("吴", "吳", "wu"),
    ("周", "周", "zhou"),
    ("孙", "孫", "sun"),
    ("马", "馬", "ma"),
    ("郑", "鄭", "zheng"),
    ("谢", "謝", "xie"),
    ("罗", "羅", "luo"),
];
const GIVEN: &[(&str, &str, &str)] = &[
    ("伟", "偉", "wei"),
    ("芳", "芳", "fang"),
    ("静", "靜", "jing"),
    ("丽", "麗", "li"),
    ("强", "強", "qiang"),
    ("军", "軍", "jun"),
    ("杰", "傑", "jie"),
    ("涛", "濤", "tao"),
    ("明", "明", "ming"),
    ("敏", "敏", "min"),
    ("磊", "磊", "lei"),
    ("艳", "艷", "yan"),
    ("刚", "剛", "gang"),
    ("华", "華", "hua"),
    ("红", "紅", "hong"),
    ("国", "國", "guo"),
    ("婷", "婷", "ting"),
    ("鹏", "鵬", "peng"),
];
const FIRST: &[&str] = &[
    "James", "Mary", "John", "Linda", "David", "Susan", "Michael", "Karen", "Peter", "Emma",
    "Oliver", "Sophie", "Lukas", "Anna", "Hiroshi", "Yuki", "Wei Ming", "Mei Ling",
];
const LAST: &[&str] = &[
    "Smith", "Jones", "Brown", "Taylor", "Wilson", "Müller", "Schmidt", "Tanaka", "Sato", "Lee",
    "Wong", "Tan", "Ng", "O'Brien", "Walker", "Young",
];
const COMPANIES: &[&str] = &[
    "华夏实业",
    "恒通科技",
    "深蓝数据",
    "远航物流",
    "金桥贸易",
    "博雅教育",
    "新禾农业",
    "安泰医疗",
    "星河传媒",
    "中联建设",
    "天润食品",
    "凯旋汽车",
    "瑞丰电子",
    "绿源环保",
    "海纳软件",
];
const SUFFIXES: &[&str] = &[
    "有限公司",
    "股份有限公司",
    "有限责任公司",
    "（深圳）有限公司",
    "集团",
    "",
];
const CITIES: &[&str] = &[
    "北京", "上海", "深圳", "广州", "杭州", "成都", "武汉", "南京", "苏州", "西安",
];
const PROVIDERS: &[&str] = &[
    "qq.com",
    "163.com",
    "126.com",
    "gmail.com",
    "sina.com",
    "outlook.com",
];
const TYPOS: &[(&str, &str)] = &[
    ("qq.com", "qq.con"),
    ("163.com", "163.cm"),
    ("gmail.com", "gmial.com"),
    ("outlook.com", "outlok.com"),
    ("126.com", "126.cmo"),
];
const CONNECTORS: &[&str] = &["douyin", "webform", "trade-show", "tencent", "baidu"];

/// What a person is, before any record is written down.
struct Truth {
    name_simplified: String,
    name_traditional: String,
    name_latin: String,
    chinese: bool,
    phones: Vec<String>,
    emails: Vec<String>,
    company: usize,
    city: &'static str,
}

fn digits(rng: &mut Rng, n: usize) -> String {
    (0..n).map(|_| char::from(b'0' + rng.u8(0..10))).collect()
}

fn cn_mobile(rng: &mut Rng) -> String {
    const PREFIXES: &[&str] = &[
        "135", "136", "137", "138", "139", "150", "151", "158", "186", "187", "188", "133", "153",
        "177", "180", "189", "130", "131", "155", "156", "185", "199",
    ];
    loop {
        let n = format!(
            "{}{}",
            PREFIXES[rng.usize(..PREFIXES.len())],
            digits(rng, 8)
        );
        let tail = &n.as_bytes()[3..];
        if !tail.iter().all(|d| *d == tail[0]) {
            return n;
        }
    }
}

/// A valid international mobile or landline (US, SG, HK, GB), as libphonenumber sees it.
fn intl_phone(rng: &mut Rng) -> String {
    loop {
        let p = intl_candidate(rng);
        if Phone::parse(&p, phonenumber::country::Id::CN)
            .is_ok_and(|p| p.kind().identifies_person())
        {
            return p;
        }
    }
}

fn intl_candidate(rng: &mut Rng) -> String {
    match rng.u8(0..4) {
        0 => format!(
            "+1 {} {}{} {}",
            ["415", "212", "650", "617"][rng.usize(..4)],
            rng.u8(2..10),
            digits(rng, 2),
            digits(rng, 4)
        ),
        1 => format!(
            "+65 {}{} {}",
            [8, 9][rng.usize(..2)],
            digits(rng, 3),
            digits(rng, 4)
        ),
        2 => format!(
            "+852 {}{} {}",
            [5, 6, 9][rng.usize(..3)],
            digits(rng, 3),
            digits(rng, 4)
        ),
        _ => format!(
            "+44 7{}{} {}",
            rng.u8(4..10),
            digits(rng, 2),
            digits(rng, 6)
        ),
    }
}

fn person(rng: &mut Rng) -> Truth {
    let chinese = rng.f32() < 0.7;
    let (simplified, traditional, latin) = if chinese {
        let s = SURNAMES[rng.usize(..SURNAMES.len())];
        let g: Vec<_> = (0..rng.usize(1..3))
            .map(|_| GIVEN[rng.usize(..GIVEN.len())])
            .collect();
        let gs: String = g.iter().map(|x| x.0).collect();
        let gt: String = g.iter().map(|x| x.1).collect();
        let gl: String = g.iter().map(|x| x.2).collect();
        (
            format!("{}{gs}", s.0),
            format!("{}{gt}", s.1),
            format!("{} {}", s.2, gl),
        )
    } else {
        let n = format!(
            "{} {}",
            FIRST[rng.usize(..FIRST.len())],
            LAST[rng.usize(..LAST.len())]
        );
        (n.clone(), n.clone(), n)
    };
    let handle_digits = rng.usize(4..7);
    let handle: String = latin
        .to_lowercase()
        .chars()
        .filter(char::is_ascii_alphabetic)
        .collect::<String>()
        + &digits(rng, handle_digits);
    let phones = (0..if rng.f32() < 0.1 { 2 } else { 1 })
        .map(|_| {
            if chinese || rng.f32() < 0.3 {
                cn_mobile(rng)
            } else {
                intl_phone(rng)
            }
        })
        .collect();
    let company = rng.usize(..COMPANIES.len());
    let mut emails = vec![format!(
        "{handle}@{}",
        PROVIDERS[rng.usize(..PROVIDERS.len())]
    )];
    if rng.f32() < 0.15 {
        emails.push(format!("{handle}@corp{company}.cn"));
    }
    Truth {
        name_simplified: simplified,
        name_traditional: traditional,
        name_latin: latin,
        chinese,
        phones,
        emails,
        company,
        city: CITIES[rng.usize(..CITIES.len())],
    }
}

/// A phone written the way some source would.
fn write_phone(rng: &mut Rng, p: &str) -> String {
    if p.starts_with('+') {
        return p.to_owned();
    }
    let (a, b, c) = (&p[..3], &p[3..7], &p[7..]);
    match rng.u8(0..9) {
        0 => format!("{a} {b} {c}"),
        1 => format!("+86 {a}-{b}-{c}"),
        2 => format!("0086 {p}"),
        3 => format!("(+86){p}"),
        4 => format!("86{p}"),
        5 => p
            .chars()
            .map(|d| char::from_u32(d as u32 - '0' as u32 + '０' as u32).unwrap_or(d))
            .collect(),
        6 => format!("手机:{a}.{b}.{c}"),
        _ => p.to_owned(),
    }
}

fn write_email(rng: &mut Rng, e: &str) -> String {
    let (local, domain) = e.split_once('@').unwrap_or((e, ""));
    match rng.u8(0..8) {
        0 => e.to_uppercase(),
        1 if domain == "gmail.com" && local.len() > 3 => {
            format!("{}.{}+crm@gmail.com", &local[..2], &local[2..])
        }
        2 => match TYPOS.iter().find(|(d, _)| *d == domain) {
            Some((_, typo)) => format!("{local}@{typo}"),
            None => e.to_owned(),
        },
        3 => format!(" {local}＠{domain} "),
        _ => e.to_owned(),
    }
}

fn write_name(rng: &mut Rng, t: &Truth) -> String {
    if !t.chinese {
        return match rng.u8(0..3) {
            0 => t.name_latin.to_uppercase(),
            _ => t.name_latin.clone(),
        };
    }
    match rng.u8(0..7) {
        0 => t.name_traditional.clone(),
        // Romanized on an English form: `Zhang Wei`.
        2 => t
            .name_latin
            .split(' ')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect::<String>())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(" "),
        1 => t
            .name_simplified
            .chars()
            .map(String::from)
            .collect::<Vec<_>>()
            .join(" "),
        _ => t.name_simplified.clone(),
    }
}

/// `people` synthetic people and their records, shuffled the way sources interleave.
pub fn generate(people: usize, seed: u64) -> Vec<Sample> {
    let mut rng = Rng::with_seed(seed);
    let mut out = Vec::with_capacity(people * 2);
    let mut next = 0u32;
    while (next as usize) < people {
        let id = next;
        next += 1;
        let t = person(&mut rng);
        let company_name = format!(
            "{}{}",
            COMPANIES[t.company],
            SUFFIXES[rng.usize(..SUFFIXES.len())]
        );
        let records = match rng.f32() {
            x if x < 0.45 => 1,
            x if x < 0.75 => 2,
            x if x < 0.9 => 3,
            _ => rng.usize(4..6),
        };
        // Several records: at least one carries both phone and email (the trade-show list that
        // proves the Monday phone and the Tuesday email are one person).
        let bridge = rng.usize(..records);
        for r in 0..records {
            let shape = if r == bridge { 2 } else { rng.u8(0..3) };
            let mut lead = serde_json::Map::new();
            lead.insert("name".into(), json!(write_name(&mut rng, &t)));
            // A second phone or email is written next to the first of the other kind (a form's
            // "other phone"); otherwise nothing but the name would tie it to the person.
            let (phone, email) = if r == bridge {
                (&t.phones[0], &t.emails[0])
            } else {
                (
                    &t.phones[rng.usize(..t.phones.len())],
                    &t.emails[rng.usize(..t.emails.len())],
                )
            };
            let shape = match shape {
                0 if *phone != t.phones[0] => 2,
                1 if *email != t.emails[0] => 2,
                s => s,
            };
            let (phone, email) = if shape == 2 && *phone != t.phones[0] && *email != t.emails[0] {
                (phone, &t.emails[0])
            } else {
                (phone, email)
            };
            if shape != 1 {
                // One digit mistyped, in 2% of the other records: only a key could join it, and
                // there is none; the harness counts it against recall, as it should.
                let mut phone = phone.clone();
                if r != bridge && rng.f32() < 0.02 {
                    let positions: Vec<usize> = phone
                        .bytes()
                        .enumerate()
                        .filter(|(_, b)| b.is_ascii_digit())
                        .map(|(i, _)| i)
                        .collect();
                    let at = positions[positions.len() - 1 - rng.usize(..6)];
                    let d = phone.as_bytes()[at];
                    let other = char::from(b'0' + (d - b'0' + rng.u8(1..10)) % 10);
                    phone.replace_range(at..=at, &other.to_string());
                }
                lead.insert("phone".into(), json!(write_phone(&mut rng, &phone)));
            }
            if shape != 0 {
                lead.insert("email".into(), json!(write_email(&mut rng, email)));
            }
            if rng.f32() < 0.6 {
                lead.insert("company".into(), json!(company_name.clone()));
            }
            if rng.f32() < 0.5 {
                lead.insert("city".into(), json!(t.city));
            }
            out.push(Sample {
                person: id,
                connector: CONNECTORS[rng.usize(..CONNECTORS.len())],
                payload: Value::Object(lead),
            });
        }
        // Traps, each about once per 40 people.
        if rng.f32() < 0.1 {
            let trap = rng.u8(0..5);
            let colleagues = rng.usize(2..5);
            let shared_mobile = cn_mobile(&mut rng);
            let masked = format!("138****{}", digits(&mut rng, 4));
            for _ in 0..colleagues {
                let c = person(&mut rng);
                let cid = next;
                next += 1;
                let mut lead = serde_json::Map::new();
                lead.insert("name".into(), json!(c.name_simplified));
                lead.insert("email".into(), json!(c.emails[0]));
                match trap {
                    // The company's 400 switchboard instead of a mobile.
                    0 => lead.insert("phone".into(), json!(format!("400-820-{:04}", id % 10_000))),
                    // The shared sales mailbox instead of their own.
                    1 => {
                        lead.insert("phone".into(), json!(c.phones[0]));
                        lead.insert("email".into(), json!(format!("sales@corp{}.cn", t.company)))
                    }
                    // A namesake of this person, with their own phone.
                    2 => {
                        lead.insert("phone".into(), json!(c.phones[0]));
                        lead.insert("name".into(), json!(t.name_simplified))
                    }
                    // The same masked phone a platform sends for everyone.
                    3 => lead.insert("phone".into(), json!(masked)),
                    // A receptionist's mobile typed by everyone who visited the stand.
                    _ => lead.insert("phone".into(), json!(shared_mobile)),
                };
                lead.insert("company".into(), json!(company_name.clone()));
                out.push(Sample {
                    person: cid,
                    connector: "trade-show",
                    payload: Value::Object(lead),
                });
            }
        }
    }
    rng.shuffle(&mut out);
    out
}

/// Pairwise scores of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub records: usize,
    /// Records that resolved to a person (the rest were rejected as unreachable).
    pub resolved: usize,
    pub people: usize,
    pub predicted_people: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// The largest predicted cluster divided by the size of its main true person.
    pub worst_over_merge: f64,
}

fn pairs(n: usize) -> u64 {
    (n as u64) * (n.saturating_sub(1) as u64) / 2
}

/// Runs `samples` through mapping, normalization and `store`, in batches, and scores the result.
pub fn evaluate(
    samples: &[Sample],
    store: &dyn IdentityStore,
    policy: &Policy,
    batch: usize,
) -> Result<Report, super::IdentityError> {
    let mapper = Mapper::new(&Default::default());
    let no_fields = Default::default();
    let mut merged_into: HashMap<String, String> = HashMap::new();
    let mut assigned: Vec<(u32, String)> = Vec::with_capacity(samples.len());
    for (n, chunk) in samples.chunks(batch.max(1)).enumerate() {
        let cleaned: Vec<_> = chunk
            .iter()
            .map(|s| {
                let mapped = mapper.map(&s.payload);
                (
                    normalize(&mapped, phonenumber::country::Id::CN),
                    mapped.custom,
                )
            })
            .collect();
        let ids: Vec<String> = (0..chunk.len()).map(|i| format!("eval-{n}-{i}")).collect();
        let requests: Vec<_> = chunk
            .iter()
            .zip(&cleaned)
            .zip(&ids)
            .map(|((s, (lead, custom)), id)| {
                policy.request(RequestInput {
                    event_id: id,
                    connector: s.connector,
                    external_id: None,
                    revision: None,
                    received_at: "2026-11-24T00:00:00Z",
                    lead,
                    custom,
                    identity_fields: &no_fields,
                    profile: true,
                })
            })
            .collect();
        for (s, r) in chunk.iter().zip(store.resolve(&requests)?) {
            if let Resolution::Person(o) = r {
                for m in &o.merged_lead_ids {
                    merged_into.insert(m.clone(), o.lead_id.clone());
                }
                assigned.push((s.person, o.lead_id));
            }
        }
    }
    let root = |id: &str| {
        let mut id = id;
        while let Some(next) = merged_into.get(id) {
            id = next;
        }
        id.to_owned()
    };
    let mut cells: HashMap<(String, u32), usize> = HashMap::new();
    let mut predicted: HashMap<String, usize> = HashMap::new();
    let mut truth: HashMap<u32, usize> = HashMap::new();
    for (person, lead) in &assigned {
        let lead = root(lead);
        *cells.entry((lead.clone(), *person)).or_default() += 1;
        *predicted.entry(lead).or_default() += 1;
        *truth.entry(*person).or_default() += 1;
    }
    let tp: u64 = cells.values().map(|n| pairs(*n)).sum();
    let pp: u64 = predicted.values().map(|n| pairs(*n)).sum();
    let tt: u64 = truth.values().map(|n| pairs(*n)).sum();
    let precision = if pp == 0 { 1.0 } else { tp as f64 / pp as f64 };
    let recall = if tt == 0 { 1.0 } else { tp as f64 / tt as f64 };
    let mut main: HashMap<&str, (usize, u32)> = HashMap::new();
    for ((lead, person), n) in &cells {
        let e = main.entry(lead.as_str()).or_insert((0, *person));
        if *n > e.0 {
            *e = (*n, *person);
        }
    }
    let worst_over_merge = predicted
        .iter()
        .map(|(lead, size)| *size as f64 / truth[&main[lead.as_str()].1] as f64)
        .fold(1.0, f64::max);
    Ok(Report {
        records: samples.len(),
        resolved: assigned.len(),
        people: truth.len(),
        predicted_people: predicted.len(),
        precision,
        recall,
        f1: if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        },
        worst_over_merge,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::EmbeddedIdentityStore;

    #[test]
    fn the_identity_graph_meets_its_floors_on_a_sample() {
        let samples = generate(3_000, 7);
        let policy = Policy::default();
        let store = EmbeddedIdentityStore::in_memory(policy.clone()).unwrap();
        let r = evaluate(&samples, &store, &policy, 500).unwrap();
        println!("{r:?}");
        assert!(r.resolved > samples.len() * 9 / 10, "{r:?}");
        assert!(r.f1 >= 0.97, "F1 below the floor: {r:?}");
        assert!(r.precision >= 0.98, "{r:?}");
        assert!(r.worst_over_merge <= 2.0, "over-merge: {r:?}");
    }

    #[test]
    fn the_generator_is_deterministic() {
        let a = generate(50, 1);
        let b = generate(50, 1);
        assert_eq!(a.len(), b.len());
        assert!(a.iter().zip(&b).all(|(x, y)| x.payload == y.payload));
    }
}
