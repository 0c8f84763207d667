//! Normalization and validation: pure functions from mapped text to a typed, cleaned contact.
//! No I/O here; every problem becomes an [`Issue`] with a stable code.

mod countries;
mod email;
mod keys;
mod phone;
mod phone_meta;
mod region;
mod text;

#[cfg(test)]
mod properties;

pub use countries::region_of;
pub use email::{Email, EmailError, EmailIdentity, Finding as EmailFinding};
pub use keys::{company_key, name_key, tidy_latin_case};
pub use phone::{Phone, PhoneError, PhoneKind};
pub use region::{Place, canonical_city, canonical_province, place_of_phone};
pub use text::{clean_name, clean_text, is_cjk};

use std::borrow::Cow;

use phonenumber::country;

use crate::lead::{Contact, Issue};
use crate::mapping::{ContactField, MappedFields};

/// A contact after cleaning, with what identity matching needs to know of its phone and email.
/// `contact.phone` and `contact.email` are set only when valid.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizedLead {
    pub contact: Contact,
    /// The type of `contact.phone`.
    pub phone_kind: Option<PhoneKind>,
    /// How identity matching sees `contact.email`.
    pub email_identity: Option<EmailIdentity>,
    pub issues: Vec<Issue>,
    /// What the lead's consent answer said, when its connector names one (set by the pipeline).
    pub consent: Option<crate::consent::Consent>,
}

impl NormalizedLead {
    /// A lead is usable when someone can reach the person: a valid phone or a valid email.
    pub fn is_reachable(&self) -> bool {
        self.contact.phone.is_some() || self.contact.email.is_some()
    }

    /// Reachable, and not refused for its consent: a lead that is published as clean.
    pub fn is_usable(&self) -> bool {
        self.is_reachable() && !crate::consent::refused(&self.issues)
    }

    /// The phone number that identifies the person: valid, and not a company line (400, 800...).
    pub fn person_phone(&self) -> Option<&str> {
        self.phone_kind.filter(|k| k.identifies_person())?;
        self.contact.phone.as_deref()
    }

    /// The identity key of the email, unless it is a role mailbox (info@, sales@...).
    pub fn person_email_key(&self) -> Option<&str> {
        let identity = self.email_identity.as_ref().filter(|i| !i.role)?;
        Some(identity.key(self.contact.email.as_deref()?))
    }
}

/// Loads what normalization reads on first use: libphonenumber's metadata, China's number types,
/// the geocoding prefixes, the disposable-domain list (about 0.15 s of work, once per process).
/// The gateway calls it at start so that its first lead does not wait.
pub fn warm_up() {
    let _ = Phone::parse("13800138000", country::Id::CN);
    let _ = place_of_phone("+8613800138000");
    let _ = Email::parse("warm-up@qq.com");
}

/// Cleans mapped fields. Numbers written without a country code are read in the lead's own
/// country, when a country field names one, else in `region` (the connector's default).
pub fn normalize(fields: &MappedFields, region: country::Id) -> NormalizedLead {
    let mut issues = fields.issues.clone();
    let get = |f: ContactField| fields.values.get(&f);
    let text = |f: ContactField| get(f).and_then(clean_text);
    let own_country = get(ContactField::Country).and_then(|raw| {
        let found = region_of(raw);
        if found.is_none() {
            issues.push(Issue::new(
                "country",
                "country.unknown",
                format!(
                    "`{}` names no country; numbers are read in the connector's region",
                    raw.trim()
                ),
            ));
        }
        found
    });
    let region = own_country.unwrap_or(region);

    let phone = get(ContactField::Phone).and_then(|raw| match Phone::parse(raw, region) {
        Ok(p) => Some(p),
        Err(e) => {
            issues.push(Issue::new("phone", e.code(), e.message()));
            None
        }
    });
    let email = get(ContactField::Email).and_then(|raw| match Email::parse(raw) {
        Ok(e) => {
            for f in e.findings() {
                issues.push(Issue::new("email", f.code(), f.message()));
            }
            Some(e)
        }
        Err(e) => {
            issues.push(Issue::new("email", e.code(), e.message()));
            None
        }
    });
    let typed_ext = get(ContactField::PhoneExt)
        .map(|s| s.chars().filter(char::is_ascii_digit).collect::<String>());
    let (province, city) = regions(
        text(ContactField::Province),
        text(ContactField::City),
        phone.as_ref(),
        &mut issues,
    );
    let (phone, phone_ext, phone_kind) = match phone.map(Phone::into_parts) {
        Some((e164, ext, kind)) => (Some(e164), ext, Some(kind)),
        None => (None, None, None),
    };
    let (email, email_identity) = email.map(Email::into_parts).unzip();
    let contact = Contact {
        name: get(ContactField::Name)
            .and_then(clean_name)
            .map(tidy_latin_case),
        phone,
        phone_type: phone_kind.map(|k| Cow::Borrowed(k.as_str())),
        phone_ext: phone_ext.or(typed_ext.filter(|e| !e.is_empty())),
        email,
        company: text(ContactField::Company),
        title: text(ContactField::Title),
        industry: text(ContactField::Industry),
        province,
        city,
        address: text(ContactField::Address),
        country: own_country.map(|c| c.as_ref().to_owned()),
        notes: text(ContactField::Notes),
    };
    NormalizedLead {
        contact,
        phone_kind,
        email_identity,
        issues,
        consent: None,
    }
}

/// Canonical province and city (`北京` → `北京市`); a typed city names its province when only one
/// has it; a lead that names no region gets the one its Chinese phone number belongs to.
fn regions(
    province: Option<String>,
    city: Option<String>,
    phone: Option<&Phone>,
    issues: &mut Vec<Issue>,
) -> (Option<Cow<'static, str>>, Option<Cow<'static, str>>) {
    let mut province = province.map(|p| canonical_province(&p).unwrap_or(p));
    let city = city.map(|c| match canonical_city(&c) {
        Some((name, of)) => {
            if province.is_none() {
                province = of;
            }
            name
        }
        None => c,
    });
    if province.is_some() || city.is_some() {
        return (province.map(Cow::Owned), city.map(Cow::Owned));
    }
    match phone.and_then(|p| place_of_phone(p.e164())) {
        Some(place) => {
            issues.push(Issue::new(
                "province",
                "region.from_phone",
                "province and city were not given; filled in from where the phone number is registered",
            ));
            (Some(place.province.into()), place.city.map(Cow::Borrowed))
        }
        None => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Mapper;
    use serde_json::json;

    #[test]
    fn a_leads_own_country_sets_the_region_its_phone_is_read_in() {
        let m = Mapper::new(&Default::default());
        let read = |v: serde_json::Value| normalize(&m.map(&v), country::Id::CN);
        let tw = read(json!({"phone": "0912 345 678", "国家/地区": "台湾"}));
        assert_eq!(
            tw.contact.phone.as_deref(),
            Some("+886912345678"),
            "{:?}",
            tw.issues
        );
        assert_eq!(tw.contact.country.as_deref(), Some("TW"));
        let za = read(json!({"phone": "082 123 4567", "COUNTRY": "South Africa"}));
        assert_eq!(
            za.contact.phone.as_deref(),
            Some("+27821234567"),
            "{:?}",
            za.issues
        );
        let za = read(json!({"phone": "082 123 4567", "country_code": "+27"}));
        assert_eq!(za.contact.phone.as_deref(), Some("+27821234567"));
        // A number written with its country code keeps it, whatever the field says.
        let cn = read(json!({"phone": "+86 138 0013 8000", "country": "TW"}));
        assert_eq!(cn.contact.phone.as_deref(), Some("+8613800138000"));
        // Without a country, the connector's region; an unknown one is said and falls back.
        let no = read(json!({"phone": "082 123 4567"}));
        assert_eq!(no.contact.phone, None);
        let unknown = read(json!({"phone": "13800138000", "country": "Atlantis"}));
        assert_eq!(unknown.contact.phone.as_deref(), Some("+8613800138000"));
        assert!(
            unknown.issues.iter().any(|i| i.code == "country.unknown"),
            "{:?}",
            unknown.issues
        );
        assert_eq!(unknown.contact.country, None);
    }

    #[test]
    fn the_readme_lead_is_cleaned() {
        let payload =
            json!({"name":"张三","phone":"138 0013 8000","email":"Zhang.San@Example.COM"});
        let fields = Mapper::new(&Default::default()).map(&payload);
        let lead = normalize(&fields, country::Id::CN);
        assert_eq!(lead.contact.phone.as_deref(), Some("+8613800138000"));
        assert_eq!(lead.contact.email.as_deref(), Some("Zhang.San@example.com"));
        assert_eq!(lead.contact.name.as_deref(), Some("张三"));
        assert_eq!(
            lead.contact.province.as_deref(),
            Some("北京市"),
            "from the phone's prefix"
        );
        let codes: Vec<_> = lead.issues.iter().map(|i| &*i.code).collect();
        assert_eq!(codes, ["region.from_phone"]);
        assert!(lead.is_reachable());
    }

    #[test]
    fn regions_are_canonical_or_come_from_the_phone() {
        let m = Mapper::new(&Default::default());
        let lead = normalize(
            &m.map(&json!({"phone": "0755-8600 1234", "省份": "广东", "城市": "深圳"})),
            country::Id::CN,
        );
        assert_eq!(
            (
                lead.contact.province.as_deref(),
                lead.contact.city.as_deref()
            ),
            (Some("广东省"), Some("深圳市"))
        );
        assert!(lead.issues.is_empty());
        let lead = normalize(&m.map(&json!({"phone": "0755-8600 1234"})), country::Id::CN);
        assert_eq!(
            (
                lead.contact.province.as_deref(),
                lead.contact.city.as_deref()
            ),
            (Some("广东省"), Some("深圳市"))
        );
        assert_eq!(lead.issues[0].code, "region.from_phone");
        // The lead says otherwise: it wins.
        let lead = normalize(
            &m.map(&json!({"phone": "0755-8600 1234", "城市": "上海"})),
            country::Id::CN,
        );
        assert_eq!(
            (
                lead.contact.province.as_deref(),
                lead.contact.city.as_deref()
            ),
            (Some("上海市"), Some("上海市"))
        );
        // Unknown places are kept as typed.
        let lead = normalize(
            &m.map(&json!({"phone": "13800138000", "city": "Springfield"})),
            country::Id::CN,
        );
        assert_eq!(lead.contact.city.as_deref(), Some("Springfield"));
    }

    #[test]
    fn unusable_contact_channels_are_issues() {
        let payload = json!({"phone":"138****0000","email":"nope"});
        let fields = Mapper::new(&Default::default()).map(&payload);
        let lead = normalize(&fields, country::Id::CN);
        assert!(!lead.is_reachable());
        let codes: Vec<_> = lead.issues.iter().map(|i| &*i.code).collect();
        assert_eq!(codes, ["phone.masked", "email.missing_at"]);
    }
}
