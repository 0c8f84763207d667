//! What the fuzz targets check, one function per kind of outside input. The libFuzzer targets in
//! `fuzz/` (cargo-fuzz, nightly) call these with coverage-guided inputs; the test suite calls them
//! with random ones, a bounded run (see `docs/operations.md`, "Fuzzing"). Each panics on a finding.

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;

use crate::assign::{Assigner, EmbeddedAssignmentStore};
use crate::config::Topics;
use crate::identity::{EmbeddedIdentityStore, Policy};
use crate::lead::{IntakeEvent, MAX_PAYLOAD_DEPTH, SourceKind, depth};
use crate::pipeline::Processor;

/// The content types a webhook body is tried with; the input's first byte picks one.
const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=gb18030",
    "application/json; charset=gbk",
    "text/json",
    "multipart/form-data; boundary=XyZ",
];

/// Every connector type that a definition of only a name makes (the form tools, the webhook):
/// their readers of payloads.
fn shapes() -> &'static [crate::sources::Shape] {
    static SHAPES: std::sync::LazyLock<Vec<crate::sources::Shape>> =
        std::sync::LazyLock::new(|| {
            crate::sources::ConnectorConfig::TYPES
                .iter()
                .filter_map(|kind| {
                    let mut table = toml::Table::new();
                    table.insert("name".into(), toml::Value::String("x".into()));
                    crate::sources::ConnectorConfig::deserialize_as(kind, table)?.ok()
                })
                .map(|c| c.get().shape())
                .collect()
        });
    &SHAPES
}

/// How many inputs one processor takes before a fresh one (its in-memory stores grow).
const PROCESSOR_INPUTS: u32 = 20_000;

thread_local! {
    static PROCESSOR: RefCell<(u32, Option<Processor>)> = const { RefCell::new((0, None)) };
}

fn processor() -> Processor {
    let identity = EmbeddedIdentityStore::in_memory(Policy::default()).expect("in-memory store");
    let assignment = EmbeddedAssignmentStore::in_memory().expect("in-memory store");
    Processor::new(
        &crate::config::Settings::default().connectors,
        Topics::default(),
        Arc::new(identity),
        Policy::default(),
        Assigner::new(Arc::new(assignment)),
    )
}

/// A webhook body, as received: whatever the body parser accepts is journaled, read back
/// unchanged, and processed (mapping, normalization, identity, assignment) into records that
/// serialize, without a panic.
pub fn webhook_body(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(pick) % CONTENT_TYPES.len()];
    let Ok(payload) = crate::sources::webhook::parse_body(Some(content_type), body) else {
        return;
    };
    assert!(depth(&payload) <= MAX_PAYLOAD_DEPTH, "accepted too deep");
    // Every form tool's reader, and the mapping over what it read, take any payload.
    for (mapping, fields) in shapes() {
        let read = fields.as_ref().map(|f| f(&payload));
        let _ = crate::mapping::Mapper::new(mapping)
            .map_read(read.as_ref().unwrap_or(&payload), &payload);
    }
    // A path made of the body's text parses or says why, and reads the payload either way.
    if let Ok(text) = std::str::from_utf8(body)
        && let Ok(path) = format!("${text}").parse::<crate::mapping::path::Path>()
        && let Some(v) = path.find(&payload)
    {
        let _ = crate::mapping::path::text_of(v);
    }
    let event = IntakeEvent::new("webform", SourceKind::Webhook, None, payload);
    // The journal's encoding: what was accepted must decode, and be what was accepted.
    let record = serde_json::to_vec(&event).expect("an event serializes");
    let read: IntakeEvent = serde_json::from_slice(&record).expect("a journal record decodes");
    assert_eq!(read, event, "the journal changed the event");
    PROCESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.0 % PROCESSOR_INPUTS == 0 {
            cell.1 = Some(processor());
        }
        cell.0 += 1;
        let p = cell.1.as_ref().expect("built above");
        let (records, dispositions) = p.process(&[read]).expect("an event processes");
        assert_eq!(dispositions.len(), 1);
        for r in records {
            serde_json::from_str::<serde_json::Value>(r.value.get()).expect("a record parses");
        }
    });
}

/// A file for `leadgate import`: decoded and read as CSV and as JSON lines without a panic;
/// every row has a line and an object of fields, or its error.
pub fn file_rows(data: &[u8]) {
    use crate::sources::file::{Format, decode, rows};
    let text = decode(data.to_vec());
    for format in [Format::Csv, Format::Jsonl] {
        let Ok(read) = rows(&text, format, Path::new("fuzz.csv")) else {
            continue;
        };
        let mut last = 0;
        for row in read.rows {
            assert!(row.line >= 1 && row.line >= last, "lines go forward");
            last = row.line;
            match (&row.payload, &row.error) {
                (serde_json::Value::Object(_), None) => {}
                (serde_json::Value::String(_), Some(e)) => assert!(!e.is_empty()),
                other => panic!("a row is fields or an error: {other:?}"),
            }
        }
    }
}

/// A platform's answer to a token request (its first two bytes the HTTP status): every
/// platform's reader says tokens, retry or refused without a panic, and tokens are never empty.
pub fn token_answer(data: &[u8]) {
    use crate::sources::oauth::{self, TokenAnswer};
    use secrecy::ExposeSecret;
    let Some((status, body)) = data.split_at_checked(2) else {
        return;
    };
    let status = 100 + u16::from_le_bytes([status[0], status[1]]) % 500;
    let answer: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let shape = TokenAnswer {
        keys: ("access_token", "refresh_token"),
        expires: ("expires_in", "refresh_token_expires_in"),
        messages: &["message", "message_cn"],
        retry_codes: &[40100],
        retry_from: Some(50000),
    };
    for read in [
        oauth::token_answer(status, &answer, &shape),
        oauth::oauth2_answer(status, &answer),
        crate::sources::baidu::token_answer(status, &answer),
        crate::sources::meta::auth::graph_answer(status, &answer),
    ] {
        match read {
            Ok(fresh) => assert!(!fresh.access_token.expose_secret().is_empty()),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}

/// A settings file: loaded without a panic; every error has a message.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    // Includes are read relative to this (missing) directory.
    let path = Path::new("/nonexistent/leadgate-fuzz/settings.toml");
    if let Err(errors) = crate::config::load_str(&text, path) {
        assert!(!errors.0.is_empty(), "a failed load says why");
        for e in errors.0 {
            assert!(!e.message.is_empty(), "an error without a message");
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    /// Inputs per target in the test suite; `LEADGATE_FUZZ_CASES` raises it.
    fn cases() -> u32 {
        std::env::var("LEADGATE_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3_000)
    }

    /// Bytes that look like the inputs: JSON and form punctuation, digits, CJK in UTF-8 and
    /// GB18030, deep brackets, and noise.
    fn input() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"{".to_vec()),
            Just(b"}".to_vec()),
            Just(b"[".repeat(70)),
            Just(b"]".to_vec()),
            Just(b"\"phone\":\"138 0013 8000\"".to_vec()),
            Just(b"\"email\":\"A@B.cn\",".to_vec()),
            Just("\"姓名\":\"张三\",".as_bytes().to_vec()),
            Just(b"name=%E5%BC%A0&".to_vec()),
            Just(b"%D5%C5=%C8%FD&".to_vec()),
            Just(b"\",\n".to_vec()),
            Just(b"[[connectors]]\nname=\"w\"\ntype=\"webhook\"\n".to_vec()),
            Just(b"--XyZ\r\nContent-Disposition: form-data; name=\"rawRequest\"\r\n\r\n".to_vec()),
            Just(b"\r\n--XyZ--\r\n".to_vec()),
            Just(b"{\"form_response\":{\"answers\":[{\"type\":\"email\",\"email\":".to_vec()),
            Just(
                b"{\"data\":{\"fields\":[{\"label\":\"x\",\"value\":[\"a\"],\"options\":[".to_vec()
            ),
            Just(
                b"{\"payload\":{\"answer\":[{\"questions\":[{\"options\":[{\"checked\":1,".to_vec()
            ),
            Just(b"fields%5Bemail%5D%5Bvalue%5D=".to_vec()),
            Just(b".answers[field.ref=email]".to_vec()),
            Just(b"listen=\"0.0.0.0:1\"\n[api]\ntoken=\"${X}\"\n".to_vec()),
            Just(b"{\"code\":0,\"data\":{\"access_token\":".to_vec()),
            Just(b"\"accessToken\":\"a\",\"expiresIn\":-1,".to_vec()),
            Just(b"{\"error\":{\"code\":190,\"message\":".to_vec()),
            Just(b"\"error\":\"invalid_grant\",".to_vec()),
            prop::collection::vec(any::<u8>(), 0..16),
        ];
        prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn webhook_bodies(data in input()) { super::webhook_body(&data) }

        #[test]
        fn files(data in input()) { super::file_rows(&data) }

        #[test]
        fn configs(data in input()) { super::config(&data) }

        #[test]
        fn token_answers(data in input()) { super::token_answer(&data) }
    }
}
