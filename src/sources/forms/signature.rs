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
}

const WEBFLOW_SIGNATURE: &str = "x-webflow-signature";
const WEBFLOW_TIMESTAMP: &str = "x-webflow-timestamp";

fn mac(secret: &str) -> HmacSha256 {
    HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length")
}

impl Signature {
    /// Checks `request` against `secret`; `now_ms` is unix milliseconds.
    pub fn verify(
        self,
        secret: &str,
        request: &Request<'_>,
        now_ms: i64,
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
                let ts = request
                    .header(WEBFLOW_TIMESTAMP)
                    .ok_or_else(|| SignatureError::Missing(WEBFLOW_TIMESTAMP.to_owned()))?;
                let ms: i64 = ts
                    .parse()
                    .map_err(|_| SignatureError::BadTimestamp(WEBFLOW_TIMESTAMP.to_owned()))?;
                if now_ms.abs_diff(ms) > TOLERANCE_MS.unsigned_abs() {
                    return Err(SignatureError::Stale(WEBFLOW_TIMESTAMP.to_owned()));
                }
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
        }
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
        scheme.verify(secret, &request, now)
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
