//! Webhook input, without the HTTP plumbing: body parsing (JSON or form) and HMAC-SHA256
//! signature checks. The axum handler in `api::webhooks` drives these.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::config::SignatureConfig;

/// Why a body could not be read. Each names the field and a stable code for the 4xx answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error(
        "content type `{0}` is not supported; send application/json or application/x-www-form-urlencoded"
    )]
    UnsupportedType(String),
    #[error("the body is empty")]
    Empty,
    #[error("the body is not valid JSON: {0}")]
    Json(String),
    #[error("the JSON body must be an object of fields, not {0}")]
    NotObject(&'static str),
    #[error("the form body is not valid: {0}")]
    Form(String),
}

impl BodyError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnsupportedType(_) => "body.unsupported_type",
            Self::Empty => "body.empty",
            Self::Json(_) => "body.malformed_json",
            Self::NotObject(_) => "body.not_object",
            Self::Form(_) => "body.malformed_form",
        }
    }

    pub fn field(&self) -> &'static str {
        match self {
            Self::UnsupportedType(_) => "content-type",
            _ => "body",
        }
    }
}

/// Parses a webhook body into an object of fields. JSON keeps its key order; a form's repeated
/// keys become an array.
pub fn parse_body(content_type: Option<&str>, body: &[u8]) -> Result<Value, BodyError> {
    let mime = content_type
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError::Empty);
    }
    match mime.as_str() {
        "application/json" | "text/json" | "" => {
            let value: Value =
                serde_json::from_slice(body).map_err(|e| BodyError::Json(e.to_string()))?;
            match value {
                Value::Object(_) => Ok(value),
                Value::Array(_) => Err(BodyError::NotObject("an array")),
                Value::String(_) => Err(BodyError::NotObject("a string")),
                _ => Err(BodyError::NotObject("a scalar")),
            }
        }
        "application/x-www-form-urlencoded" => {
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_bytes(body).map_err(|e| BodyError::Form(e.to_string()))?;
            let mut obj = Map::new();
            for (k, v) in pairs {
                match obj.get_mut(&k) {
                    None => {
                        obj.insert(k, Value::String(v));
                    }
                    Some(Value::Array(items)) => items.push(Value::String(v)),
                    Some(first) => {
                        let prev = first.take();
                        *first = Value::Array(vec![prev, Value::String(v)]);
                    }
                }
            }
            Ok(Value::Object(obj))
        }
        other => Err(BodyError::UnsupportedType(other.to_owned())),
    }
}

/// Why a signature was refused (always 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the {0} header is missing")]
    Missing(String),
    #[error("the {0} header is not a hex HMAC-SHA256 digest")]
    Malformed(String),
    #[error("the signature in {0} does not match the body")]
    Mismatch(String),
    #[error("the {0} header is not a unix timestamp")]
    BadTimestamp(String),
    #[error("the timestamp in {0} is outside the allowed window")]
    Stale(String),
}

impl SignatureError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing(_) => "signature.missing",
            Self::Malformed(_) => "signature.malformed",
            Self::Mismatch(_) => "signature.mismatch",
            Self::BadTimestamp(_) => "signature.bad_timestamp",
            Self::Stale(_) => "signature.stale",
        }
    }

    pub fn field(&self) -> &str {
        match self {
            Self::Missing(h)
            | Self::Malformed(h)
            | Self::Mismatch(h)
            | Self::BadTimestamp(h)
            | Self::Stale(h) => h,
        }
    }
}

/// Checks the HMAC-SHA256 of the raw body (and the timestamp, when configured) in constant time.
/// `now` is unix seconds.
pub fn verify_signature(
    cfg: &SignatureConfig,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let sig_name = cfg.header.clone();
    let given = header(&cfg.header).ok_or_else(|| SignatureError::Missing(sig_name.clone()))?;
    let hex_digest = given.strip_prefix("sha256=").unwrap_or(given);
    let digest =
        hex::decode(hex_digest).map_err(|_| SignatureError::Malformed(sig_name.clone()))?;

    let mut mac = Hmac::<Sha256>::new_from_slice(cfg.secret.expose_secret().as_bytes())
        .expect("HMAC takes keys of any length");
    if let Some(ts_name) = &cfg.timestamp_header {
        let ts = header(ts_name).ok_or_else(|| SignatureError::Missing(ts_name.clone()))?;
        let secs: i64 = ts
            .parse()
            .map_err(|_| SignatureError::BadTimestamp(ts_name.clone()))?;
        let window = i64::try_from(cfg.tolerance.as_secs()).unwrap_or(i64::MAX);
        if (now - secs).abs() > window {
            return Err(SignatureError::Stale(ts_name.clone()));
        }
        mac.update(ts.as_bytes());
        mac.update(b".");
    }
    mac.update(body);
    mac.verify_slice(&digest)
        .map_err(|_| SignatureError::Mismatch(sig_name))
}

/// The hex HMAC-SHA256 a sender would put in the signature header (for tests and client docs).
pub fn sign(secret: &str, timestamp: Option<&str>, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    if let Some(ts) = timestamp {
        mac.update(ts.as_bytes());
        mac.update(b".");
    }
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// A top-level field of the body as text (for idempotency keys and external ids).
pub fn field_text(payload: &Value, field: &str) -> Option<String> {
    match payload.get(field)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg(ts: Option<&str>) -> SignatureConfig {
        SignatureConfig {
            secret: "s3cret".to_string().into(),
            header: "X-Signature".into(),
            timestamp_header: ts.map(str::to_owned),
            tolerance: Duration::from_secs(300),
        }
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn signatures_with_and_without_prefix_verify() {
        let body = br#"{"phone":"13800138000"}"#;
        let sig = sign("s3cret", None, body);
        assert_eq!(
            verify_signature(
                &cfg(None),
                &headers(&[("x-signature", sig.clone())]),
                body,
                0
            ),
            Ok(())
        );
        let prefixed = format!("sha256={sig}");
        assert_eq!(
            verify_signature(&cfg(None), &headers(&[("x-signature", prefixed)]), body, 0),
            Ok(())
        );
    }

    #[test]
    fn tampering_and_absence_are_refused() {
        let body = b"{}";
        let sig = sign("s3cret", None, body);
        let h = headers(&[("x-signature", sig)]);
        assert_eq!(
            verify_signature(&cfg(None), &h, b"{ }", 0)
                .unwrap_err()
                .code(),
            "signature.mismatch"
        );
        assert_eq!(
            verify_signature(&cfg(None), &HeaderMap::new(), body, 0)
                .unwrap_err()
                .code(),
            "signature.missing"
        );
        let bad = headers(&[("x-signature", "zz".into())]);
        assert_eq!(
            verify_signature(&cfg(None), &bad, body, 0)
                .unwrap_err()
                .code(),
            "signature.malformed"
        );
    }

    #[test]
    fn timestamps_bound_the_replay_window() {
        let body = b"{}";
        let c = cfg(Some("X-Timestamp"));
        let ok = headers(&[
            ("x-signature", sign("s3cret", Some("1000"), body)),
            ("x-timestamp", "1000".into()),
        ]);
        assert_eq!(verify_signature(&c, &ok, body, 1200), Ok(()));
        assert_eq!(
            verify_signature(&c, &ok, body, 1400).unwrap_err().code(),
            "signature.stale"
        );
        // The timestamp is signed: changing it breaks the signature.
        let moved = headers(&[
            ("x-signature", sign("s3cret", Some("1000"), body)),
            ("x-timestamp", "1100".into()),
        ]);
        assert_eq!(
            verify_signature(&c, &moved, body, 1100).unwrap_err().code(),
            "signature.mismatch"
        );
    }

    #[test]
    fn bodies_parse_or_say_why() {
        assert_eq!(
            parse_body(Some("application/json; charset=utf-8"), br#"{"a":1}"#).unwrap()["a"],
            1
        );
        let form = parse_body(
            Some("application/x-www-form-urlencoded"),
            "name=%E5%BC%A0%E4%B8%89&i=a&i=b".as_bytes(),
        )
        .unwrap();
        assert_eq!(form, serde_json::json!({"name": "张三", "i": ["a", "b"]}));
        assert_eq!(
            parse_body(None, b"[1]").unwrap_err().code(),
            "body.not_object"
        );
        assert_eq!(
            parse_body(None, b"{\"a\":").unwrap_err().code(),
            "body.malformed_json"
        );
        assert_eq!(parse_body(None, b"  ").unwrap_err().code(), "body.empty");
        assert_eq!(
            parse_body(Some("text/plain"), b"x").unwrap_err().field(),
            "content-type"
        );
    }
}
