//! How form tools sign their deliveries (each checked in constant time).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::sources::push::Request;
use crate::sources::webhook::SignatureError;

type HmacSha256 = Hmac<Sha256>;

/// How long a timestamped signature stays good, either way (Webflow asks for 5 minutes).
const TOLERANCE_MS: i64 = 5 * 60 * 1000;

/// A tool's signing scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature {
    /// `header: <prefix><base64 HMAC-SHA256 of the raw body>` (Tally: no prefix; Typeform:
    /// `Typeform-Signature: sha256=...`).
    Base64Body {
        header: &'static str,
        prefix: &'static str,
    },
    /// Webflow: `x-webflow-signature` is the hex HMAC-SHA256 of `{timestamp}:{raw body}`, with
    /// the timestamp (milliseconds) in `x-webflow-timestamp`, within 5 minutes of now.
    Webflow,
    /// HubSpot v3: `X-HubSpot-Signature-v3` is the base64 HMAC-SHA256 of `{method}{url}{raw
    /// body}{timestamp}`, the URL as HubSpot called it (`https://host/path?query`) and the
    /// timestamp (milliseconds) in `X-HubSpot-Request-Timestamp`, within 5 minutes of now.
    HubspotV3,
}

const HUBSPOT_SIGNATURE: &str = "x-hubspot-signature-v3";
const HUBSPOT_TIMESTAMP: &str = "x-hubspot-request-timestamp";

/// The URL a request was sent to, as the sender saw it: `base` (the public URL, when
/// configured) or the `X-Forwarded-Proto`/`X-Forwarded-Host` a proxy set, else `https` and
/// `Host`; then the path and query as received.
pub fn called_url(request: &Request<'_>, base: Option<&str>) -> String {
    let path = request
        .uri
        .path_and_query()
        .map_or("/", axum::http::uri::PathAndQuery::as_str);
    if let Some(base) = base {
        let origin = reqwest::Url::parse(base)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| base.trim_end_matches('/').to_owned());
        return format!("{origin}{path}");
    }
    let proto = request.header("x-forwarded-proto").unwrap_or("https");
    let host = request
        .header("x-forwarded-host")
        .or_else(|| request.header("host"))
        .unwrap_or("localhost");
    format!("{proto}://{host}{path}")
}

/// A millisecond timestamp header within 5 minutes of `now_ms`.
fn fresh_ms<'r>(
    request: &'r Request<'_>,
    name: &str,
    now_ms: i64,
) -> Result<&'r str, SignatureError> {
    let ts = request
        .header(name)
        .ok_or_else(|| SignatureError::Missing(name.to_owned()))?;
    let ms: i64 = ts
        .parse()
        .map_err(|_| SignatureError::BadTimestamp(name.to_owned()))?;
    if now_ms.abs_diff(ms) > TOLERANCE_MS.unsigned_abs() {
        return Err(SignatureError::Stale(name.to_owned()));
    }
    Ok(ts)
}

const WEBFLOW_SIGNATURE: &str = "x-webflow-signature";
const WEBFLOW_TIMESTAMP: &str = "x-webflow-timestamp";

fn mac(secret: &str) -> HmacSha256 {
    HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length")
}

impl Signature {
    /// Checks `request` against `secret`; `now_ms` is unix milliseconds, `base` the public URL
    /// the tool posts to (for schemes that sign the URL).
    pub fn verify(
        self,
        secret: &str,
        request: &Request<'_>,
        now_ms: i64,
        base: Option<&str>,
    ) -> Result<(), SignatureError> {
        match self {
            Self::Base64Body { header, prefix } => {
                let given = request
                    .header(header)
                    .ok_or_else(|| SignatureError::Missing(header.to_owned()))?;
                let given = given.strip_prefix(prefix).unwrap_or(given);
                let given = base64::engine::general_purpose::STANDARD
                    .decode(given.trim())
                    .map_err(|_| SignatureError::Malformed(header.to_owned()))?;
                let mut mac = mac(secret);
                mac.update(request.body);
                mac.verify_slice(&given)
                    .map_err(|_| SignatureError::Mismatch(header.to_owned()))
            }
            Self::Webflow => {
                let ts = fresh_ms(request, WEBFLOW_TIMESTAMP, now_ms)?;
                let given = request
                    .header(WEBFLOW_SIGNATURE)
                    .ok_or_else(|| SignatureError::Missing(WEBFLOW_SIGNATURE.to_owned()))?;
                let given = hex::decode(given)
                    .map_err(|_| SignatureError::Malformed(WEBFLOW_SIGNATURE.to_owned()))?;
                let mut mac = mac(secret);
                mac.update(ts.as_bytes());
                mac.update(b":");
                mac.update(request.body);
                mac.verify_slice(&given)
                    .map_err(|_| SignatureError::Mismatch(WEBFLOW_SIGNATURE.to_owned()))
            }
            Self::HubspotV3 => {
                let ts = fresh_ms(request, HUBSPOT_TIMESTAMP, now_ms)?;
                let given = request
                    .header(HUBSPOT_SIGNATURE)
                    .ok_or_else(|| SignatureError::Missing(HUBSPOT_SIGNATURE.to_owned()))?;
                let given = base64::engine::general_purpose::STANDARD
                    .decode(given)
                    .map_err(|_| SignatureError::Malformed(HUBSPOT_SIGNATURE.to_owned()))?;
                let mut mac = mac(secret);
                mac.update(request.method.as_str().as_bytes());
                mac.update(called_url(request, base).as_bytes());
                mac.update(request.body);
                mac.update(ts.as_bytes());
                mac.verify_slice(&given)
                    .map_err(|_| SignatureError::Mismatch(HUBSPOT_SIGNATURE.to_owned()))
            }
        }
    }

    /// HubSpot's v3 headers for a `POST` of `body` to `url` at `now_ms` (for tests and
    /// stand-ins).
    pub fn sign_hubspot(
        secret: &str,
        url: &str,
        body: &[u8],
        now_ms: i64,
    ) -> Vec<(&'static str, String)> {
        let ts = now_ms.to_string();
        let mut mac = mac(secret);
        mac.update(b"POST");
        mac.update(url.as_bytes());
        mac.update(body);
        mac.update(ts.as_bytes());
        vec![
            (HUBSPOT_TIMESTAMP, ts),
            (
                HUBSPOT_SIGNATURE,
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()),
            ),
        ]
    }

    /// The headers a tool would send for `body` (for tests and stand-ins); `now_ms` for the
    /// schemes with a timestamp.
    pub fn sign(self, secret: &str, body: &[u8], now_ms: i64) -> Vec<(&'static str, String)> {
        match self {
            Self::Base64Body { header, prefix } => {
                let mut mac = mac(secret);
                mac.update(body);
                let digest =
                    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
                vec![(header, format!("{prefix}{digest}"))]
            }
            Self::Webflow => {
                let ts = now_ms.to_string();
                let mut mac = mac(secret);
                mac.update(ts.as_bytes());
                mac.update(b":");
                mac.update(body);
                vec![
                    (WEBFLOW_TIMESTAMP, ts),
                    (WEBFLOW_SIGNATURE, hex::encode(mac.finalize().into_bytes())),
                ]
            }
            Self::HubspotV3 => Self::sign_hubspot(secret, "https://localhost/", body, now_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderName, Method, Uri};

    fn check(
        scheme: Signature,
        secret: &str,
        headers: &[(&str, String)],
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let (method, uri) = (Method::POST, Uri::from_static("/v1/webhooks/x"));
        let request = Request {
            method: &method,
            uri: &uri,
            headers: &map,
            body,
        };
        scheme.verify(secret, &request, now, None)
    }

    #[test]
    fn base64_signatures_hold_only_for_the_secret_and_the_body() {
        let scheme = Signature::Base64Body {
            header: "Typeform-Signature",
            prefix: "sha256=",
        };
        let body = br#"{"event_id":"e"}"#;
        let signed = scheme.sign("s3cret", body, 0);
        assert!(signed[0].1.starts_with("sha256="));
        check(scheme, "s3cret", &signed, body, 0).unwrap();
        assert!(matches!(
            check(scheme, "other", &signed, body, 0),
            Err(SignatureError::Mismatch(_))
        ));
        assert!(check(scheme, "s3cret", &signed, b"{}", 0).is_err());
        assert!(matches!(
            check(scheme, "s3cret", &[], body, 0),
            Err(SignatureError::Missing(_))
        ));
        let bad = [("Typeform-Signature", "sha256=not base64!".to_owned())];
        assert!(matches!(
            check(scheme, "s3cret", &bad, body, 0),
            Err(SignatureError::Malformed(_))
        ));
    }

    #[test]
    fn hubspot_signatures_cover_method_url_body_and_timestamp() {
        let body = br#"{"vid":1}"#;
        let now = 1_700_000_000_000;
        let url = "https://leads.example.cn/v1/webhooks/hubspot?token=x";
        let signed = Signature::sign_hubspot("hs", url, body, now);
        let verify = |headers: &[(&str, String)], host: &str, base: Option<&str>, body: &[u8]| {
            let mut map = HeaderMap::new();
            for (k, v) in headers {
                map.insert(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            map.insert("host", host.parse().unwrap());
            let (method, uri) = (
                Method::POST,
                Uri::from_static("/v1/webhooks/hubspot?token=x"),
            );
            let request = Request {
                method: &method,
                uri: &uri,
                headers: &map,
                body,
            };
            Signature::HubspotV3.verify("hs", &request, now + 1000, base)
        };
        verify(&signed, "leads.example.cn", None, body).unwrap();
        verify(
            &signed,
            "10.0.0.7:8080",
            Some("https://leads.example.cn/"),
            body,
        )
        .unwrap();
        assert!(
            verify(&signed, "10.0.0.7:8080", None, body).is_err(),
            "another URL"
        );
        assert!(verify(&signed, "leads.example.cn", None, b"{}").is_err());
        let stale = Signature::sign_hubspot("hs", url, body, now - 6 * 60_000);
        assert!(matches!(
            verify(&stale, "leads.example.cn", None, body),
            Err(SignatureError::Stale(_))
        ));
        // The same computation apart, in Python: base64(HMAC-SHA256("hs", "POST" + url + body + ts)).
        assert_eq!(signed[1].1, "tVllMLGSA4Kzv32ztGhEEMPuMZPt4Wiox3BDdQ7Bxdo=");
    }

    #[test]
    fn webflow_signatures_carry_a_fresh_millisecond_timestamp() {
        let body = br#"{"triggerType":"form_submission"}"#;
        let now = 1_700_000_000_000;
        let signed = Signature::Webflow.sign("wf", body, now);
        check(Signature::Webflow, "wf", &signed, body, now + 60_000).unwrap();
        assert!(matches!(
            check(Signature::Webflow, "wf", &signed, body, now + 6 * 60_000),
            Err(SignatureError::Stale(_))
        ));
        assert!(check(Signature::Webflow, "wf", &signed, b"{}", now).is_err());
        let mut forged = signed.clone();
        forged[0].1 = (now + 1).to_string();
        assert!(matches!(
            check(Signature::Webflow, "wf", &forged, body, now),
            Err(SignatureError::Mismatch(_))
        ));
    }
}
