//! Properties of the normalizers on arbitrary input: they never panic, and normalizing what they
//! produced changes nothing (idempotence).

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::mapping::Mapper;

/// Text that looks like what people type into phone and email fields, plus anything at all.
fn messy() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9０-９+＋()（） .\\-*xX转分机ext#:手机Tel]{0,30}",
        "[a-zA-Z0-9._+ＡＢ＠@\\- ]{0,20}@[a-z0-9.\\-中国例子]{0,20}",
        "[\\u{4e00}-\\u{4e20} \\u{3000}a-zA-Z]{0,12}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn phones_never_panic_and_are_stable(input in messy()) {
        if let Ok(p) = Phone::parse(&input, phonenumber::country::Id::CN) {
            let again = Phone::parse(p.e164(), phonenumber::country::Id::CN).expect("an E.164 number it produced parses again");
            prop_assert_eq!(again.e164(), p.e164());
            prop_assert_eq!(again.kind(), p.kind());
        }
    }

    #[test]
    fn emails_never_panic_and_are_stable(input in messy()) {
        if let Ok(e) = Email::parse(&input) {
            let again = Email::parse(e.as_str()).expect("an address it produced parses again");
            prop_assert_eq!(again.as_str(), e.as_str());
            prop_assert_eq!(again.identity_key(), e.identity_key());
        }
    }

    #[test]
    fn text_cleaning_is_idempotent(input in messy()) {
        if let Some(t) = clean_text(&input) {
            prop_assert_eq!(clean_text(&t), Some(t.clone()));
        }
        if let Some(n) = clean_name(&input) {
            prop_assert_eq!(clean_name(&n), Some(n.clone()));
        }
    }

    #[test]
    fn whole_leads_never_panic_and_are_stable(name in messy(), phone in messy(), email in messy(), company in messy()) {
        let mapper = Mapper::new(&Default::default());
        let first = normalize(&mapper.map(&json!({"name": name, "phone": phone, "email": email, "company": company})), phonenumber::country::Id::CN);
        let c = &first.contact;
        let second = normalize(
            &mapper.map(&json!({"name": c.name, "phone": c.phone, "email": c.email, "company": c.company})),
            phonenumber::country::Id::CN,
        );
        prop_assert_eq!(&second.contact.name, &c.name);
        prop_assert_eq!(&second.contact.phone, &c.phone);
        prop_assert_eq!(&second.contact.email, &c.email);
        prop_assert_eq!(&second.contact.company, &c.company);
    }
}
