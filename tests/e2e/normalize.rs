//! Parity of the normalizers with their references, on fixtures generated offline by
//! `scripts/fixtures/` from libphonenumber (Python `phonenumbers` 9.0.43).

use std::collections::BTreeMap;
use std::path::Path;

use leadgate::normalize::{Phone, PhoneError};
use serde_json::Value;

fn fixtures(name: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn phones_match_libphonenumber() {
    let cases = fixtures("phones.jsonl");
    assert!(cases.len() > 5000);
    let mut failures: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for case in &cases {
        let input = case["input"].as_str().unwrap();
        // leadgate reads the reference release's metadata: no case keeps an older verdict.
        assert!(case.get("crate_metadata").is_none(), "{case}");
        let region = case["region"].as_str().unwrap().parse().unwrap();
        let got = Phone::parse(input, region);
        let kind = case["kind"].as_str().unwrap().to_owned();
        let ok = match (&got, case["valid"].as_bool().unwrap()) {
            (Ok(p), true) => {
                p.e164() == case["e164"].as_str().unwrap()
                    && p.kind().as_str() == case["type"].as_str().unwrap()
                    && p.extension() == case["ext"].as_str()
            }
            (Err(PhoneError::Masked), false) => case["masked"].as_bool() == Some(true),
            (Err(_), false) => case["masked"].as_bool() != Some(true),
            _ => false,
        };
        if !ok {
            let expected = if case["valid"].as_bool().unwrap() {
                format!("{} {} ext={}", case["e164"], case["type"], case["ext"])
            } else {
                "invalid".into()
            };
            let got = match &got {
                Ok(p) => format!("{} {} ext={:?}", p.e164(), p.kind().as_str(), p.extension()),
                Err(e) => format!("{e:?}"),
            };
            failures.entry(kind).or_default().push(format!(
                "{input:?} ({}): want {expected}, got {got}",
                case["region"]
            ));
        }
    }
    let total: usize = failures.values().map(Vec::len).sum();
    let report: Vec<String> = failures
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}: {} failures, e.g.\n    {}",
                v.len(),
                v.iter().take(4).cloned().collect::<Vec<_>>().join("\n    ")
            )
        })
        .collect();
    assert_eq!(
        total,
        0,
        "{total} of {} cases differ from libphonenumber:\n{}",
        cases.len(),
        report.join("\n")
    );
}

#[test]
fn emails_match_email_validator() {
    let cases = fixtures("emails.jsonl");
    assert!(cases.len() > 500);
    // Deliberate divergence: email-validator 2.x dropped the 64-octet limit on the part before the
    // @; RFC 5321 (4.5.3.1.1) keeps it, and mail servers enforce it. leadgate follows the RFC.
    let rfc_local_limit = |input: &str| input.split_once('@').is_some_and(|(l, _)| l.len() > 64);
    let mut failures = Vec::new();
    let mut diverged = 0;
    for case in &cases {
        let input = case["input"].as_str().unwrap();
        let got = leadgate::normalize::Email::parse(input);
        if rfc_local_limit(input) {
            diverged += 1;
            assert!(
                got.is_err(),
                "{input}: over 64 octets before the @ must be refused"
            );
            continue;
        }
        let ok = match (&got, case["valid"].as_bool().unwrap()) {
            (Ok(e), true) => {
                let domain = e.as_str().rsplit_once('@').unwrap().1;
                domain == case["ascii_domain"].as_str().unwrap().to_lowercase()
            }
            (Err(_), false) => true,
            _ => false,
        };
        if !ok {
            let want = case["reason"]
                .as_str()
                .map_or_else(|| format!("valid @{}", case["ascii_domain"]), str::to_owned);
            failures.push(format!("{input:?}: want {want}, got {got:?}"));
        }
    }
    assert_eq!(diverged, 1, "the one documented divergence");
    assert!(
        failures.is_empty(),
        "{} of {} differ from email-validator:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
