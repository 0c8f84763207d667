//! Webhook input, without the HTTP plumbing: body parsing (JSON or form) and HMAC-SHA256
//! signature checks. The axum handler in `api::webhooks` drives these.

pub mod config;

pub use config::{SignatureConfig, WebhookConnector};

use axum::http::HeaderMap;
use encoding_rs::Encoding;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::lead::{MAX_PAYLOAD_DEPTH, depth};

/// Why a body could not be read. Each names the field and a stable code for the 4xx answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error(
        "content type `{0}` is not supported; send application/json, application/x-www-form-urlencoded or multipart/form-data"
    )]
    UnsupportedType(String),
    #[error(
        "charset `{0}` is not a known text encoding; send UTF-8, or name the encoding (e.g. gb18030)"
    )]
    UnsupportedCharset(String),
    #[error("the body is not valid {0} text")]
    Malformed(&'static str),
    #[error("the body is empty")]
    Empty,
    #[error("the body is not valid JSON: {0}")]
    Json(String),
    #[error("the JSON body must be an object of fields, not {0}")]
    NotObject(&'static str),
    #[error("the body nests {0} levels deep; at most {max} are accepted", max = MAX_PAYLOAD_DEPTH)]
    TooDeep(usize),
    #[error("the form body is not valid: {0}")]
    Form(String),
    #[error("the multipart body is not valid: {0}")]
    Multipart(String),
}

impl BodyError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnsupportedType(_) => "body.unsupported_type",
            Self::UnsupportedCharset(_) => "body.unsupported_charset",
            Self::Malformed(_) => "body.malformed_text",
            Self::Empty => "body.empty",
            Self::Json(_) => "body.malformed_json",
            Self::NotObject(_) => "body.not_object",
            Self::TooDeep(_) => "body.too_deep",
            Self::Form(_) => "body.malformed_form",
            Self::Multipart(_) => "body.malformed_multipart",
        }
    }

    pub fn field(&self) -> &'static str {
        match self {
            Self::UnsupportedType(_) | Self::UnsupportedCharset(_) => "content-type",
            _ => "body",
        }
    }

    /// 415 for a type or charset leadgate cannot read, 400 for a body it cannot parse.
    pub fn unsupported(&self) -> bool {
        matches!(self, Self::UnsupportedType(_) | Self::UnsupportedCharset(_))
    }
}

/// The media type (lowercased) and the `charset` parameter of a `Content-Type` value.
fn media_type(content_type: Option<&str>) -> (String, Option<String>) {
    let mut parts = content_type.unwrap_or("application/json").split(';');
    let mime = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let charset = parts.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"').to_owned())
    });
    (mime, charset)
}

/// The encoding its `charset` names, if it names one.
fn encoding_of(charset: Option<&str>) -> Result<Option<&'static Encoding>, BodyError> {
    charset
        .map(|label| {
            Encoding::for_label(label.as_bytes())
                .ok_or_else(|| BodyError::UnsupportedCharset(label.to_owned()))
        })
        .transpose()
}

/// `bytes` as text in `enc`; without one, UTF-8, or GB18030 when the bytes are not UTF-8 (what
/// Chinese systems send without saying so). Malformed text is refused, never replaced: the
/// lead's original characters would be gone.
fn decode_text(bytes: &[u8], enc: Option<&'static Encoding>) -> Result<String, BodyError> {
    let enc = match enc {
        Some(enc) => enc,
        None => match std::str::from_utf8(bytes) {
            Ok(text) => return Ok(text.to_owned()),
            Err(_) => encoding_rs::GB18030,
        },
    };
    enc.decode_without_bom_handling_and_without_replacement(bytes)
        .map(|text| text.into_owned())
        .ok_or(BodyError::Malformed(enc.name()))
}

/// Parses a webhook body into an object of fields. JSON keeps its key order; a form's repeated
/// keys become an array. A body in another `charset` (GB18030, GBK, Big5, ...) is read in it.
pub fn parse_body(content_type: Option<&str>, body: &[u8]) -> Result<Value, BodyError> {
    let (mime, charset) = media_type(content_type);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError::Empty);
    }
    match mime.as_str() {
        "application/json" | "text/json" | "" => {
            // JSON is UTF-8 (RFC 8259) unless the sender names another charset.
            let value: Value = match encoding_of(charset.as_deref())? {
                Some(enc) if enc != encoding_rs::UTF_8 => {
                    serde_json::from_str(&decode_text(body, Some(enc))?)
                }
                _ => serde_json::from_slice(body),
            }
            .map_err(|e| BodyError::Json(e.to_string()))?;
            match value {
                Value::Object(_) => {}
                Value::Array(_) => return Err(BodyError::NotObject("an array")),
                Value::String(_) => return Err(BodyError::NotObject("a string")),
                _ => return Err(BodyError::NotObject("a scalar")),
            }
            match depth(&value) {
                d if d > MAX_PAYLOAD_DEPTH => Err(BodyError::TooDeep(d)),
                _ => Ok(value),
            }
        }
        "application/x-www-form-urlencoded" => parse_form(body, encoding_of(charset.as_deref())?),
        "multipart/form-data" => parse_multipart(content_type.unwrap_or_default(), body),
        other => Err(BodyError::UnsupportedType(other.to_owned())),
    }
}

/// A form body: `+` is a space and `%XX` a byte; the bytes of each name and value are text in
/// `enc` (see [`decode_text`]).
fn parse_form(body: &[u8], enc: Option<&'static Encoding>) -> Result<Value, BodyError> {
    let text = |raw: &[u8]| -> Result<String, BodyError> {
        let spaced: Vec<u8> = raw
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        let bytes: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
        decode_text(&bytes, enc)
    };
    let mut obj = Map::new();
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        insert_field(&mut obj, text(k)?, Value::String(text(v)?));
    }
    Ok(Value::Object(obj))
}

/// A bracketed form key's parts: `fields[email][value]` -> `fields`, `email`, `value`;
/// `tags[]` -> `tags`, `` (append). `None` for a plain key, or one that is not well formed.
fn bracketed(key: &str) -> Option<Vec<&str>> {
    let open = key.find('[')?;
    let (base, mut rest) = key.split_at(open);
    if base.is_empty() || base.contains(']') {
        return None;
    }
    let mut parts = vec![base];
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let close = inner.find(']')?;
        let part = &inner[..close];
        if part.contains('[') {
            return None;
        }
        parts.push(part);
        rest = &inner[close + 1..];
    }
    (parts.len() <= MAX_PAYLOAD_DEPTH / 2).then_some(parts)
}

/// Adds a form field: a bracketed key (`fields[email][value]`, what PHP and WordPress forms
/// send) nests into objects, `tags[]` appends; a plain key, or one whose nesting clashes with a
/// value already there, is kept as it is.
fn insert_field(obj: &mut Map<String, Value>, key: String, value: Value) {
    let Some(parts) = bracketed(&key) else {
        return insert_repeated(obj, key, value);
    };
    fn place(obj: &mut Map<String, Value>, parts: &[&str], value: Value) -> Result<(), Value> {
        let (first, rest) = parts.split_first().expect("a key has a base");
        match rest {
            [] => {
                insert_repeated(obj, (*first).to_owned(), value);
                Ok(())
            }
            [""] => match obj
                .entry((*first).to_owned())
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                Value::Array(items) => {
                    items.push(value);
                    Ok(())
                }
                _ => Err(value),
            },
            _ => match obj
                .entry((*first).to_owned())
                .or_insert_with(|| Value::Object(Map::new()))
            {
                Value::Object(inner) => place(inner, rest, value),
                _ => Err(value),
            },
        }
    }
    if parts[1..].iter().any(|p| p.is_empty()) && parts.last() != Some(&"") {
        return insert_repeated(obj, key, value);
    }
    if let Err(value) = place(obj, &parts, value) {
        insert_repeated(obj, key, value);
    }
}

/// A `multipart/form-data` body as an object of its parts: text parts by name (repeated names
/// become an array), file parts as their file names (their content is not a lead's). Text is
/// read in the part's own `charset`, else as [`decode_text`] reads it.
fn parse_multipart(content_type: &str, body: &[u8]) -> Result<Value, BodyError> {
    let boundary =
        multer::parse_boundary(content_type).map_err(|e| BodyError::Multipart(e.to_string()))?;
    let stream = futures::stream::once(futures::future::ready(Ok::<_, std::convert::Infallible>(
        bytes::Bytes::copy_from_slice(body),
    )));
    let mut parts = multer::Multipart::new(stream, boundary);
    // The whole body is in memory: nothing here waits on I/O, so the parser runs to its end at
    // once.
    futures::executor::block_on(async move {
        let mut obj = Map::new();
        while let Some(field) = parts
            .next_field()
            .await
            .map_err(|e| BodyError::Multipart(e.to_string()))?
        {
            let Some(name) = field.name().map(str::to_owned) else {
                continue;
            };
            let file = field.file_name().map(str::to_owned);
            let charset = field
                .content_type()
                .and_then(|m| m.get_param("charset"))
                .map(|c| c.as_str().to_owned());
            let data = field
                .bytes()
                .await
                .map_err(|e| BodyError::Multipart(e.to_string()))?;
            let value = match file {
                Some(file_name) => Value::String(file_name),
                None => Value::String(decode_text(&data, encoding_of(charset.as_deref())?)?),
            };
            insert_field(&mut obj, name, value);
        }
        Ok(Value::Object(obj))
    })
}

/// Adds `value` under `key`; a repeated key becomes an array of its values.
fn insert_repeated(obj: &mut Map<String, Value>, key: String, value: Value) {
    match obj.get_mut(&key) {
        None => {
            obj.insert(key, value);
        }
        Some(Value::Array(items)) => items.push(value),
        Some(first) => {
            let prev = first.take();
            *first = Value::Array(vec![prev, value]);
        }
    }
}

/// A URL's query string as fields (UTF-8; `None` when it is not).
pub fn parse_query(query: &str) -> Option<Map<String, Value>> {
    match parse_form(query.as_bytes(), Some(encoding_rs::UTF_8)) {
        Ok(Value::Object(obj)) => Some(obj),
        _ => None,
    }
}

/// Why a signature was refused (always 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the {0} header is missing")]
    Missing(String),
    #[error("the {0} header does not hold a well-formed HMAC-SHA256 digest")]
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
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(126), "]".repeat(126));
        let e = parse_body(None, deep.as_bytes()).unwrap_err();
        assert_eq!((e.code(), e.field()), ("body.too_deep", "body"));
        let edge = format!("{{\"x\":{}{}}}", "[".repeat(63), "]".repeat(63));
        assert!(
            parse_body(None, edge.as_bytes()).is_ok(),
            "64 levels are accepted"
        );
        let over = format!("{{\"x\":{}{}}}", "[".repeat(64), "]".repeat(64));
        assert_eq!(
            parse_body(None, over.as_bytes()).unwrap_err().code(),
            "body.too_deep"
        );
        assert_eq!(
            parse_body(Some("text/plain"), b"x").unwrap_err().field(),
            "content-type"
        );
    }

    #[test]
    fn bracketed_form_keys_nest() {
        let body = b"form%5Bid%5D=7d2e&form%5Bname%5D=Contact&fields%5Bemail%5D%5Bvalue%5D=a%40b.cn\
&fields%5Bemail%5D%5Btype%5D=email&tags%5B%5D=x&tags%5B%5D=y&plain=1&odd%5B=2&a%5Bb%5D%5B%5Bc%5D=3\
&plain%5Bx%5D=4&e%5B%5D%5Bx%5D=5";
        let v = parse_body(Some("application/x-www-form-urlencoded"), body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "form": {"id": "7d2e", "name": "Contact"},
                "fields": {"email": {"value": "a@b.cn", "type": "email"}},
                "tags": ["x", "y"],
                "plain": "1",
                "odd[": "2",
                "a[b][[c]": "3",
                "plain[x]": "4",
                "e[][x]": "5"
            })
        );
        let deep = format!("{}=1", "k".to_owned() + &"[k]".repeat(40));
        let v = parse_body(Some("application/x-www-form-urlencoded"), deep.as_bytes()).unwrap();
        assert!(v.as_object().unwrap().contains_key(&deep[..deep.len() - 2]), "too deep stays flat");
    }

    #[test]
    fn multipart_bodies_give_text_parts_and_file_names() {
        let gbk = encoding_rs::GBK.encode("广州").0;
        let mut body = b"--XyZ\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n\xe7\x8e\x8b\xe5\xb0\x8f\xe6\x98\x8e\r\n--XyZ\r\nContent-Disposition: form-data; name=\"tag\"\r\n\r\na\r\n--XyZ\r\nContent-Disposition: form-data; name=\"tag\"\r\n\r\nb\r\n--XyZ\r\nContent-Disposition: form-data; name=\"cv\"; filename=\"cv.pdf\"\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.4 \x00\x01\r\n--XyZ\r\nContent-Disposition: form-data; name=\"city\"\r\nContent-Type: text/plain; charset=gbk\r\n\r\n".to_vec();
        body.extend_from_slice(&gbk);
        body.extend_from_slice(b"\r\n--XyZ--\r\n");
        let v = parse_body(Some("multipart/form-data; boundary=XyZ"), &body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"name": "王小明", "tag": ["a", "b"], "cv": "cv.pdf", "city": "广州"})
        );
        for (ctype, body) in [
            ("multipart/form-data", &b"--XyZ\r\n"[..]),
            ("multipart/form-data; boundary=XyZ", &b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end"[..]),
            ("multipart/form-data; boundary=XyZ", &b"garbage"[..]),
        ] {
            let e = parse_body(Some(ctype), body).unwrap_err();
            assert_eq!(e.code(), "body.malformed_multipart", "{ctype}: {e}");
        }
    }

    #[test]
    fn form_bodies_are_read_in_their_charset() {
        let (gb, _, _) = encoding_rs::GB18030.encode("姓名=张三&手机=138 0013 8000&备注=a+b");
        let pct: String = gb
            .iter()
            .map(|&b| match b {
                b'=' | b'&' | b'+' => (b as char).to_string(),
                b if b.is_ascii_alphanumeric() => (b as char).to_string(),
                b => format!("%{b:02X}"),
            })
            .collect();
        let want = serde_json::json!({"姓名": "张三", "手机": "138 0013 8000", "备注": "a b"});
        for ct in [
            "application/x-www-form-urlencoded; charset=gb18030",
            "application/x-www-form-urlencoded; Charset=\"GBK\"",
            // No charset: not UTF-8, so GB18030, as Chinese systems send it.
            "application/x-www-form-urlencoded",
        ] {
            assert_eq!(parse_body(Some(ct), pct.as_bytes()).unwrap(), want, "{ct}");
        }
        let e = parse_body(
            Some("application/x-www-form-urlencoded; charset=klingon"),
            b"a=1",
        )
        .unwrap_err();
        assert_eq!(
            (e.code(), e.field()),
            ("body.unsupported_charset", "content-type")
        );
        // Bytes that are not text in the charset named are refused, not replaced.
        let e = parse_body(
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            b"a=%FF",
        )
        .unwrap_err();
        assert_eq!((e.code(), e.field()), ("body.malformed_text", "body"));
        let (json, _, _) = encoding_rs::GB18030.encode(r#"{"姓名":"李四"}"#);
        assert_eq!(
            parse_body(Some("application/json; charset=gb18030"), &json).unwrap()["姓名"],
            "李四"
        );
    }
}
