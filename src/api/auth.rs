//! The management API's bearer tokens (`[api] token`, `[[api.tokens]]`), each with a name and
//! scopes. Webhooks, health checks, metrics and the console's own files never need one.
//!
//! | needs | endpoints |
//! |---|---|
//! | `operator` (or `admin`) | every read: connectors, statistics, assignment, imports, leads (masked) |
//! | `admin` | every change: assignment writes, pause and resume, uploads |
//! | `pii:read` (or `admin`) as well | personal data unmasked: leads, quarantined records, rejected-rows reports |
//! | `privacy` (or `admin`) | erasures, the access audit |

use std::collections::BTreeSet;

use axum::http::{HeaderMap, StatusCode, header};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::config::{ApiSettings, Scope};

/// Who made a request, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name (`admin` for `[api] token`); `local` when no token is configured.
    pub name: String,
    pub scopes: BTreeSet<Scope>,
}

impl Caller {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }

    /// Whether answers may carry personal data unmasked.
    pub fn reads_pii(&self) -> bool {
        self.has(Scope::PiiRead)
    }
}

/// What an endpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any valid token, whatever its scopes (`/v1/whoami`).
    Any,
    /// Any read: `operator`.
    Read,
    /// A change: `admin`.
    Admin,
    /// A read of personal data that cannot be masked: `operator` and `pii:read`.
    Pii,
    /// Erasures and the access audit: `privacy`.
    Privacy,
}

impl Need {
    fn scopes(self) -> &'static [Scope] {
        match self {
            Self::Any => &[],
            Self::Read => &[Scope::Operator],
            Self::Admin => &[Scope::Admin],
            Self::Pii => &[Scope::Operator, Scope::PiiRead],
            Self::Privacy => &[Scope::Privacy],
        }
    }
}

/// The configured tokens.
#[derive(Debug, Default)]
pub struct Tokens(Vec<(SecretString, Caller)>);

impl Tokens {
    pub fn of(api: &ApiSettings) -> Self {
        let mut all = Vec::new();
        if let Some(t) = &api.token {
            all.push((
                t.clone(),
                Caller {
                    name: "admin".into(),
                    scopes: BTreeSet::from([Scope::Admin]),
                },
            ));
        }
        for t in &api.tokens {
            all.push((
                t.token.clone(),
                Caller {
                    name: t.name.clone(),
                    scopes: t.scopes.iter().copied().collect(),
                },
            ));
        }
        Self(all)
    }

    /// The caller `headers` name by their bearer token, if it may do what `need` says.
    pub fn check(&self, headers: &HeaderMap, need: Need) -> Result<Caller, ApiError> {
        if self.0.is_empty() {
            // No token configured (a loopback `listen` only): whoever can reach it is trusted.
            return Ok(Caller {
                name: "local".into(),
                scopes: BTreeSet::from([Scope::Admin]),
            });
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            // RFC 7235: the scheme is case-insensitive.
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let Some(given) = given else {
            return Err(unauthorized(
                "auth.missing_token",
                "this endpoint needs `Authorization: Bearer <token>` (an `[api]` token)",
            ));
        };
        // Every token is compared, in constant time each: which one matched does not show in
        // the time taken.
        let mut found = None;
        for (secret, caller) in &self.0 {
            if bool::from(given.as_bytes().ct_eq(secret.expose_secret().as_bytes())) {
                found = Some(caller);
            }
        }
        let Some(caller) = found else {
            return Err(unauthorized(
                "auth.invalid_token",
                "the bearer token is not valid",
            ));
        };
        let missing: Vec<&str> = need
            .scopes()
            .iter()
            .filter(|s| !caller.has(**s))
            .map(|s| s.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "auth.forbidden",
                Some("authorization"),
                format!(
                    "token `{}` may not do this: it needs the scope {} (or admin); it has {}",
                    caller.name,
                    missing.join(" and "),
                    caller
                        .scopes
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        Ok(caller.clone())
    }
}

/// The caller, when it may do what `need` says; 401 without a valid token, 403 without the
/// scope.
pub fn require(st: &AppState, headers: &HeaderMap, need: Need) -> Result<Caller, ApiError> {
    st.tokens.check(headers, need)
}

fn unauthorized(code: &str, message: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        code,
        Some("authorization"),
        message,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiToken;

    fn headers(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("bearer {token}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn scopes_decide_and_admin_has_them_all() {
        let api = ApiSettings {
            token: Some("admin-token-0123456789".to_owned().into()),
            tokens: vec![
                ApiToken {
                    name: "ops".into(),
                    token: "ops-token-0123456789".to_owned().into(),
                    scopes: vec![Scope::Operator],
                },
                ApiToken {
                    name: "crm".into(),
                    token: "crm-token-0123456789".to_owned().into(),
                    scopes: vec![Scope::Operator, Scope::PiiRead],
                },
                ApiToken {
                    name: "dpo".into(),
                    token: "dpo-token-0123456789".to_owned().into(),
                    scopes: vec![Scope::Privacy],
                },
            ],
            allow_unauthenticated: false,
        };
        let tokens = Tokens::of(&api);
        let status = |token: &str, need| match tokens.check(&headers(token), need) {
            Ok(c) => c.name,
            Err(e) => e.status.as_str().to_owned(),
        };
        for (need, admin, ops, crm, dpo) in [
            (Need::Read, "admin", "ops", "crm", "403"),
            (Need::Admin, "admin", "403", "403", "403"),
            (Need::Pii, "admin", "403", "crm", "403"),
            (Need::Privacy, "admin", "403", "403", "dpo"),
        ] {
            assert_eq!(status("admin-token-0123456789", need), admin, "{need:?}");
            assert_eq!(status("ops-token-0123456789", need), ops, "{need:?}");
            assert_eq!(status("crm-token-0123456789", need), crm, "{need:?}");
            assert_eq!(status("dpo-token-0123456789", need), dpo, "{need:?}");
            assert_eq!(status("not-a-token-0123456789", need), "401");
        }
        assert_eq!(
            tokens
                .check(&HeaderMap::new(), Need::Read)
                .unwrap_err()
                .code,
            "auth.missing_token"
        );
        let e = tokens
            .check(&headers("ops-token-0123456789"), Need::Pii)
            .unwrap_err();
        assert!(
            e.message.contains("pii:read") && e.message.contains("`ops`"),
            "{}",
            e.message
        );
        let open = Tokens::of(&ApiSettings::default());
        assert!(
            open.check(&HeaderMap::new(), Need::Privacy)
                .unwrap()
                .reads_pii()
        );
    }
}
