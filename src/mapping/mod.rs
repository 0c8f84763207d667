//! Field mapping: which input field feeds which contact field. Input names are matched after
//! folding (NFKC, case, spaces, `_`, `-`, `.`), first against the connector's own `mapping`, then
//! against built-in English and Chinese names. Whatever is not mapped is kept, untouched, as `custom`.

use std::borrow::Cow;

use rustc_hash::FxHashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use unicode_normalization::UnicodeNormalization;

use crate::lead::Issue;

pub mod path;

/// A contact field that input can be mapped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactField {
    Name,
    Phone,
    PhoneExt,
    Email,
    Company,
    Title,
    Industry,
    Province,
    City,
    Address,
    /// The lead's own country: it sets the region its phone number is read in.
    Country,
    Notes,
}

impl ContactField {
    /// How many fields there are; `Notes` is the last.
    pub const COUNT: usize = Self::Notes as usize + 1;

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Phone => "phone",
            Self::PhoneExt => "phone_ext",
            Self::Email => "email",
            Self::Company => "company",
            Self::Title => "title",
            Self::Industry => "industry",
            Self::Province => "province",
            Self::City => "city",
            Self::Address => "address",
            Self::Country => "country",
            Self::Notes => "notes",
        }
    }
}

/// Built-in names, in priority order within a field (a mobile beats a desk phone).
const BUILT_IN: &[(ContactField, &[&str])] = &[
    (
        ContactField::Name,
        &[
            "name",
            "full_name",
            "contact_name",
            "customer_name",
            "姓名",
            "名字",
            "联系人",
            "客户姓名",
        ],
    ),
    (
        ContactField::Phone,
        &[
            "phone",
            "mobile",
            "mobile_phone",
            "cellphone",
            "cell",
            "phone_number",
            "手机",
            "手机号",
            "手机号码",
            "tel",
            "telephone",
            "电话",
            "联系电话",
            "电话号码",
            "联系方式",
        ],
    ),
    (
        ContactField::PhoneExt,
        &["phone_ext", "ext", "extension", "分机", "分机号"],
    ),
    (
        ContactField::Email,
        &[
            "email",
            "e-mail",
            "email_address",
            "mail",
            "邮箱",
            "电子邮箱",
            "电子邮件",
            "邮件",
        ],
    ),
    (
        ContactField::Company,
        &[
            "company",
            "company_name",
            "organization",
            "organisation",
            "公司",
            "公司名称",
            "企业名称",
            "单位",
        ],
    ),
    (
        ContactField::Title,
        &["title", "job_title", "position", "职位", "职务"],
    ),
    (ContactField::Industry, &["industry", "行业", "所属行业"]),
    (
        ContactField::Province,
        &["province", "state", "省份", "省", "所在省份"],
    ),
    (ContactField::City, &["city", "城市", "市", "所在城市"]),
    (
        ContactField::Address,
        &["address", "street_address", "地址", "详细地址"],
    ),
    (
        ContactField::Country,
        &[
            "country",
            "country_code",
            "country_region",
            "country_or_region",
            "国家",
            "国家地区",
            "国家/地区",
            "国家或地区",
            "國家",
            "國家/地區",
        ],
    ),
    (
        ContactField::Notes,
        &[
            "notes", "note", "remark", "remarks", "comment", "comments", "message", "备注", "留言",
        ],
    ),
];

/// Names of a given name and a family name, folded: a form that asks for the two parts only
/// (Google Ads `FIRST_NAME` and `LAST_NAME`, Webflow's `First Name`, 姓 and 名) gives a name.
const GIVEN_NAMES: &[&str] = &["firstname", "givenname", "forename", "名"];
const FAMILY_NAMES: &[&str] = &["lastname", "surname", "familyname", "姓", "姓氏"];

/// The name of a payload that has a given and/or a family name but no full name.
fn joined_name(obj: &Map<String, Value>) -> Option<String> {
    let part = |names: &[&str]| {
        obj.iter()
            .find(|(k, _)| names.contains(&fold_name(k).as_str()))
            .and_then(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    crate::sources::person_name(part(GIVEN_NAMES), part(FAMILY_NAMES))
}

/// Folds an input field name for matching: `Phone Number`, `phone_number`, `ＰＨＯＮＥ-NUMBER` agree.
pub fn fold_name(name: &str) -> String {
    if name.is_ascii() {
        return name
            .bytes()
            .filter(|b| !b.is_ascii_whitespace() && !matches!(b, b'_' | b'-' | b'.'))
            .map(|b| char::from(b.to_ascii_lowercase()))
            .collect();
    }
    name.nfkc()
        .filter(|c| !c.is_whitespace() && !matches!(c, '_' | '-' | '.'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The text of each mapped contact field: one slot per field, no map to build per lead. Text is
/// borrowed from the payload (a number or a boolean is written out).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FieldValues<'a>([Option<Cow<'a, str>>; ContactField::COUNT]);

impl<'a> FieldValues<'a> {
    pub fn get(&self, field: &ContactField) -> Option<&str> {
        self.0[*field as usize].as_deref()
    }

    pub fn contains_key(&self, field: &ContactField) -> bool {
        self.get(field).is_some()
    }

    pub fn insert(&mut self, field: ContactField, text: Cow<'a, str>) -> Option<Cow<'a, str>> {
        self.0[field as usize].replace(text)
    }

    pub fn len(&self) -> usize {
        self.0.iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::ops::Index<&ContactField> for FieldValues<'_> {
    type Output = str;

    fn index(&self, field: &ContactField) -> &str {
        self.get(field).expect("no value for the field")
    }
}

/// Text values of mapped fields, plus everything else as custom fields.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MappedFields<'a> {
    pub values: FieldValues<'a>,
    pub custom: Map<String, Value>,
    pub issues: Vec<Issue>,
}

/// A connector's compiled mapping.
#[derive(Debug, Clone)]
pub struct Mapper {
    /// Folded input name -> (field, priority; lower wins).
    index: FxHashMap<String, (ContactField, usize)>,
    /// `mapping` entries that are paths into the payload as received, with their priority.
    paths: Vec<(ContactField, usize, path::Path)>,
}

impl Mapper {
    pub fn new(extra: &FieldMapping) -> Self {
        let mut index = FxHashMap::default();
        let mut paths = Vec::new();
        let mut rank = 0;
        for (field, names) in extra {
            for n in names {
                if path::is_path(n) {
                    // A path that does not parse is refused when the settings are loaded.
                    if let Ok(p) = n.parse() {
                        paths.push((*field, rank, p));
                    }
                } else {
                    index.entry(fold_name(n)).or_insert((*field, rank));
                }
                rank += 1;
            }
        }
        for (field, names) in BUILT_IN {
            for n in *names {
                index.entry(fold_name(n)).or_insert((*field, rank));
                rank += 1;
            }
        }
        Self { index, paths }
    }

    /// Maps a payload object. A non-object payload maps nothing and is reported.
    pub fn map<'a>(&self, payload: &'a Value) -> MappedFields<'a> {
        self.map_read(payload, payload)
    }

    /// Maps the fields a platform read from its payload (`fields`), with the `mapping` paths
    /// reaching into the payload as received (`raw`).
    pub fn map_read<'a>(&self, payload: &'a Value, raw: &Value) -> MappedFields<'a> {
        let mut out = MappedFields::default();
        let Some(obj) = payload.as_object() else {
            out.issues.push(Issue::new(
                "body",
                "body.not_object",
                "the payload is not an object of fields",
            ));
            return out;
        };
        // The best candidate so far for each field: (priority, input name, text).
        let mut best: [Option<(usize, &str)>; ContactField::COUNT] = Default::default();
        for (key, value) in obj {
            // Most keys are already in folded form ("phone", "手机"): try them as they are first.
            let found = self
                .index
                .get(key.as_str())
                .or_else(|| self.index.get(&fold_name(key)));
            let Some(&(field, rank)) = found else {
                out.custom.insert(key.clone(), value.clone());
                continue;
            };
            let text: Cow<'a, str> = match value {
                Value::String(s) => Cow::Borrowed(s),
                Value::Number(n) => Cow::Owned(n.to_string()),
                Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
                Value::Null => continue,
                // A list, or an object that holds its text (`{"value": "186…", "verified":
                // true}`, a choice with its options), as a path would read it.
                Value::Array(_) | Value::Object(_) => match path::text_of(value) {
                    Some(text) => Cow::Owned(text),
                    None => {
                        out.issues.push(Issue::new(
                            field.as_str(),
                            "field.not_text",
                            format!("input field `{key}` holds a list or an object with no text; kept under custom"),
                        ));
                        out.custom.insert(key.clone(), value.clone());
                        continue;
                    }
                },
            };
            if text.trim().is_empty() {
                continue;
            }
            match &mut best[field as usize] {
                Some((r, _)) if *r <= rank => {
                    out.custom.insert(key.clone(), value.clone());
                }
                slot => {
                    if let Some((_, loser)) = slot.replace((rank, key)) {
                        out.custom.insert(loser.to_owned(), obj[loser].clone());
                    }
                    out.values.insert(field, text);
                }
            }
        }
        for (field, rank, path) in &self.paths {
            let slot = &mut best[*field as usize];
            if slot.is_some_and(|(r, _)| r <= *rank) {
                continue;
            }
            let Some(text) = path.find(raw).and_then(path::text_of) else {
                continue;
            };
            if let Some((_, loser)) = slot.replace((*rank, "")) {
                out.custom.insert(loser.to_owned(), obj[loser].clone());
            }
            out.values.insert(*field, Cow::Owned(text));
        }
        if !out.values.contains_key(&ContactField::Name)
            && let Some(name) = joined_name(obj)
        {
            out.values.insert(ContactField::Name, Cow::Owned(name));
        }
        out
    }
}

/// `[connectors.mapping]`: contact field -> input field names, e.g. `phone = ["mobile_no", "tel2"]`.
pub type FieldMapping = std::collections::BTreeMap<ContactField, Vec<String>>;

/// A platform's payload -> the flat fields the mapping reads (the payload itself otherwise).
pub type FieldsFn = std::sync::Arc<dyn Fn(&serde_json::Value) -> serde_json::Value + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_reach_into_the_payload_as_received_and_beat_built_in_names() {
        let mapping: FieldMapping = [
            (
                ContactField::Email,
                vec!["$.form_response.answers[field.ref=email]".to_owned()],
            ),
            (
                ContactField::Phone,
                vec!["$.entry.field_4".to_owned(), "tel".to_owned()],
            ),
            (ContactField::Company, vec!["$.nowhere".to_owned()]),
        ]
        .into_iter()
        .collect();
        let m = Mapper::new(&mapping);
        let raw = json!({"form_response": {"answers": [
                {"type": "email", "email": "laura@example.com", "field": {"ref": "email"}}]},
            "entry": {"field_4": {"value": "18629058968", "verified": true}},
            "phone": "13800138000", "tel": "021 5555 0000", "company": "Acme"});
        let got = m.map(&raw);
        assert_eq!(
            got.values.get(&ContactField::Email),
            Some("laura@example.com")
        );
        assert_eq!(
            got.values.get(&ContactField::Phone),
            Some("18629058968"),
            "the path comes first"
        );
        assert_eq!(
            got.custom["phone"], "13800138000",
            "the name it beat is kept: {:?}",
            got.custom
        );
        assert_eq!(
            got.values.get(&ContactField::Company),
            Some("Acme"),
            "a path that reaches nothing yields"
        );
        // Flattened fields are read by name, the paths reach the payload as received.
        let flat = json!({"tel": "021 5555 0000"});
        let got = m.map_read(&flat, &raw);
        assert_eq!(got.values.get(&ContactField::Phone), Some("18629058968"));
        assert_eq!(
            got.values.get(&ContactField::Email),
            Some("laura@example.com")
        );
    }

    #[test]
    fn a_given_and_a_family_name_make_a_name() {
        let m = Mapper::new(&FieldMapping::new());
        let name = |v: Value| m.map(&v).values.get(&ContactField::Name).map(str::to_owned);
        assert_eq!(
            name(json!({"FIRST_NAME": "Jane", "LAST_NAME": "Doe"})).as_deref(),
            Some("Jane Doe")
        );
        assert_eq!(
            name(json!({"First Name": "Zaphod"})).as_deref(),
            Some("Zaphod")
        );
        assert_eq!(
            name(json!({"姓": "王", "名": "小明"})).as_deref(),
            Some("王小明")
        );
        assert_eq!(
            name(json!({"name": "Full", "first_name": "Jane"})).as_deref(),
            Some("Full")
        );
        assert_eq!(name(json!({"first_name": " ", "last_name": 3})), None);
    }

    #[test]
    fn chinese_and_english_headers_map() {
        let m = Mapper::new(&FieldMapping::new());
        let payload = json!({"姓名": "张三", "手机": "138", "邮箱": "a@b.cn", "公司": "某某", "职位": "经理",
            "省份": "广东", "城市": "深圳", "地址": "南山", "行业": "制造", "备注": "hi", "来源页": "x"});
        let got = m.map(&payload);
        assert_eq!(got.values.len(), 10);
        assert_eq!(&got.values[&ContactField::Notes], "hi");
        assert_eq!(
            got.custom,
            json!({"来源页": "x"}).as_object().unwrap().clone()
        );
    }

    #[test]
    fn configured_names_win_and_losers_stay_custom() {
        let extra = FieldMapping::from([(ContactField::Phone, vec!["Mobile No".to_string()])]);
        let m = Mapper::new(&extra);
        let payload = json!({"phone": "1", "mobile_no": "2", "电话": "3"});
        let got = m.map(&payload);
        assert_eq!(&got.values[&ContactField::Phone], "2");
        assert_eq!(got.custom.len(), 2);
        assert_eq!(got.custom["phone"], json!("1"));
    }

    #[test]
    fn mobile_beats_desk_phone_whatever_the_order() {
        let m = Mapper::new(&FieldMapping::new());
        let payload = json!({"电话": "010-1", "手机": "138"});
        let got = m.map(&payload);
        assert_eq!(&got.values[&ContactField::Phone], "138");
        assert_eq!(got.custom["电话"], json!("010-1"));
    }

    #[test]
    fn numbers_are_text_and_objects_are_reported() {
        let m = Mapper::new(&FieldMapping::new());
        let payload = json!({"phone": 13800138000u64, "email": {"a": 1}, "name": null});
        let got = m.map(&payload);
        assert_eq!(&got.values[&ContactField::Phone], "13800138000");
        assert_eq!(got.issues[0].code, "field.not_text");
        assert!(got.custom.contains_key("email"));
        assert!(!got.values.contains_key(&ContactField::Name));
    }

    #[test]
    fn objects_and_lists_that_hold_text_are_read() {
        let m = Mapper::new(&FieldMapping::new());
        let payload = json!({"phone": {"value": "18629058968", "verified": true},
            "industry": {"value": ["a", "c"], "options": [{"id": "a", "text": "教育"}, {"id": "c", "text": "金融"}]},
            "notes": ["早上", "下午"]});
        let got = m.map(&payload);
        assert_eq!(got.values.get(&ContactField::Phone), Some("18629058968"));
        assert_eq!(got.values.get(&ContactField::Industry), Some("教育, 金融"));
        assert_eq!(got.values.get(&ContactField::Notes), Some("早上, 下午"));
        assert!(got.issues.is_empty(), "{:?}", got.issues);
    }
}
