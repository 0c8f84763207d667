//! The management API's bearer token (`[api] token`). Webhooks and health checks never need it.

use axum::http::{HeaderMap, StatusCode, header};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};

/// `Ok` when no token is configured or the request carries it as `Authorization: Bearer ...`.
pub fn require(st: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &st.token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        // RFC 7235: the scheme is case-insensitive.
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match given {
        Some(g) if bool::from(g.as_bytes().ct_eq(token.expose_secret().as_bytes())) => Ok(()),
        Some(_) => Err(unauthorized(
            "auth.invalid_token",
            "the bearer token is not valid",
        )),
        None => Err(unauthorized(
            "auth.missing_token",
            "this endpoint needs `Authorization: Bearer <token>` (the `[api] token` setting)",
        )),
    }
}

fn unauthorized(code: &str, message: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        code,
        Some("authorization"),
        message,
    )
}
