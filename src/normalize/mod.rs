//! Normalization and validation: pure functions from mapped text to a typed, cleaned contact.
//! No I/O here; every problem becomes an [`Issue`] with a stable code.

mod email;
mod keys;
mod phone;
mod phone_meta;
mod text;

#[cfg(test)]
mod properties;

pub use email::{Email, EmailError, Finding as EmailFinding};
pub use keys::{company_key, name_key, tidy_latin_case};
pub use phone::{Phone, PhoneError, PhoneKind};
pub use text::{clean_name, clean_text, is_cjk};

use phonenumber::country;

use crate::lead::{Contact, Issue};
use crate::mapping::{ContactField, MappedFields};

/// A contact after cleaning, with the typed phone and email that identity matching uses.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizedLead {
    pub contact: Contact,
    pub phone: Option<Phone>,
    pub email: Option<Email>,
    pub issues: Vec<Issue>,
}

impl NormalizedLead {
    /// A lead is usable when someone can reach the person: a valid phone or a valid email.
    pub fn is_reachable(&self) -> bool {
        self.phone.is_some() || self.email.is_some()
    }
}

/// Cleans mapped fields. `region` reads numbers written without a country code.
pub fn normalize(fields: &MappedFields, region: country::Id) -> NormalizedLead {
    let mut issues = fields.issues.clone();
    let get = |f: ContactField| fields.values.get(&f).map(String::as_str);
    let text = |f: ContactField| get(f).and_then(clean_text);

    let phone = get(ContactField::Phone).and_then(|raw| match Phone::parse(raw, region) {
        Ok(p) => Some(p),
        Err(e) => {
            issues.push(Issue::new("phone", e.code(), e.to_string()));
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
            issues.push(Issue::new("email", e.code(), e.to_string()));
            None
        }
    });
    let typed_ext = get(ContactField::PhoneExt)
        .map(|s| s.chars().filter(char::is_ascii_digit).collect::<String>());
    let contact = Contact {
        name: get(ContactField::Name)
            .and_then(clean_name)
            .map(|n| tidy_latin_case(&n)),
        phone: phone.as_ref().map(|p| p.e164().to_owned()),
        phone_type: phone.as_ref().map(|p| p.kind().as_str().to_owned()),
        phone_ext: phone
            .as_ref()
            .and_then(|p| p.extension().map(str::to_owned))
            .or(typed_ext.filter(|e| !e.is_empty())),
        email: email.as_ref().map(|e| e.as_str().to_owned()),
        company: text(ContactField::Company),
        title: text(ContactField::Title),
        industry: text(ContactField::Industry),
        province: text(ContactField::Province),
        city: text(ContactField::City),
        address: text(ContactField::Address),
        notes: text(ContactField::Notes),
    };
    NormalizedLead {
        contact,
        phone,
        email,
        issues,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Mapper;
    use serde_json::json;

    #[test]
    fn the_readme_lead_is_cleaned() {
        let fields = Mapper::new(&Default::default())
            .map(&json!({"name":"张三","phone":"138 0013 8000","email":"Zhang.San@Example.COM"}));
        let lead = normalize(&fields, country::Id::CN);
        assert_eq!(lead.contact.phone.as_deref(), Some("+8613800138000"));
        assert_eq!(lead.contact.email.as_deref(), Some("Zhang.San@example.com"));
        assert_eq!(lead.contact.name.as_deref(), Some("张三"));
        assert!(lead.issues.is_empty());
        assert!(lead.is_reachable());
    }

    #[test]
    fn unusable_contact_channels_are_issues() {
        let fields =
            Mapper::new(&Default::default()).map(&json!({"phone":"138****0000","email":"nope"}));
        let lead = normalize(&fields, country::Id::CN);
        assert!(!lead.is_reachable());
        let codes: Vec<_> = lead.issues.iter().map(|i| i.code.as_str()).collect();
        assert_eq!(codes, ["phone.masked", "email.missing_at"]);
    }
}
