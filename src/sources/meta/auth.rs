//! `leadgate auth` for Meta: a person grants access in the login dialog; the code is exchanged
//! for a short-lived user token, that for a long-lived one (`fb_exchange_token`, about 60 days),
//! and, with `page_id`, that for the page's token (`GET /{page}?fields=access_token`), which has
//! no expiry. A short-lived token from the Graph API Explorer can be given instead of a code
//! (`leadgate auth <name> --token`). Meta has no refresh token: the token watch warns 14 days
//! before a token's end.

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::MetaConnector;
use crate::sources::oauth::{Fresh, RefreshError};

pub(crate) struct App {
    app_id: String,
    app_secret: SecretString,
    graph_url: String,
    dialog_url: String,
    redirect_uri: Option<String>,
    scope: String,
    page_id: Option<String>,
}

/// The app of `cfg`, when it names its id.
pub(crate) fn app(cfg: &MetaConnector) -> Option<App> {
    Some(App {
        app_id: cfg.app_id.clone()?,
        app_secret: cfg.app_secret.clone(),
        graph_url: cfg.graph_url.clone(),
        dialog_url: cfg.dialog_url.clone(),
        redirect_uri: cfg.redirect_uri.clone(),
        scope: cfg.scope.clone(),
        page_id: cfg.page_id.clone(),
    })
}

/// What a Graph answer to a token request means: the token and its lifetime, a retry (HTTP 429
/// or 5xx, codes 1, 2, 4, 17, 341: Meta's transient and throttling codes), or a refusal (190:
/// expired or revoked; 100: a bad or used code; anything else a person must look at).
pub fn graph_answer(status: u16, answer: &Value) -> Result<Fresh, RefreshError> {
    if let Some(err) = answer.get("error") {
        let code = err.get("code").and_then(Value::as_i64);
        let why = format!(
            "HTTP {status}, code {}: {}",
            code.map_or_else(|| "?".to_owned(), |c| c.to_string()),
            err.get("message").and_then(Value::as_str).unwrap_or("")
        );
        return Err(match code {
            Some(1 | 2 | 4 | 17 | 341) => RefreshError::Failed(why),
            _ if status == 429 || status >= 500 => RefreshError::Failed(why),
            _ => RefreshError::Refused(why),
        });
    }
    if status == 429 || status >= 500 {
        return Err(RefreshError::Failed(format!("HTTP {status}")));
    }
    let token = answer
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| RefreshError::Failed(format!("HTTP {status}: no access_token")))?;
    Ok(Fresh {
        access_token: token.to_owned().into(),
        refresh_token: None,
        access_expires_in: answer.get("expires_in").and_then(Value::as_u64),
        refresh_expires_in: None,
    })
}

impl App {
    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.graph_url.trim_end_matches('/'))
    }

    async fn get(
        &self,
        client: &reqwest::Client,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Fresh, RefreshError> {
        let url = self.url(path);
        let (status, answer) =
            crate::sources::oauth::send(client.get(&url).query(query)).await?;
        graph_answer(status, &answer)
    }

    /// A long-lived user token for `short`, then (with `page_id`) the page's token.
    async fn long_lived(
        &self,
        client: &reqwest::Client,
        short: &str,
    ) -> Result<Fresh, RefreshError> {
        let secret = self.app_secret.expose_secret();
        let long = self
            .get(
                client,
                "oauth/access_token",
                &[
                    ("grant_type", "fb_exchange_token"),
                    ("client_id", &self.app_id),
                    ("client_secret", secret),
                    ("fb_exchange_token", short),
                ],
            )
            .await?;
        let Some(page) = &self.page_id else {
            return Ok(long);
        };
        let user = long.access_token.expose_secret();
        let page_token = self
            .get(client, page, &[("fields", "access_token"), ("access_token", user)])
            .await
            .map_err(|e| match e {
                RefreshError::Refused(why) => RefreshError::Refused(format!(
                    "cannot read page {page}'s token ({why}): the user must manage the page and grant pages_show_list"
                )),
                e => e,
            })?;
        // A page token from a long-lived user token does not expire.
        Ok(Fresh {
            access_expires_in: None,
            ..page_token
        })
    }
}

impl crate::sources::oauth::Refresh for App {
    fn refresh<'a>(
        &'a self,
        _: &'a reqwest::Client,
        _: &'a str,
    ) -> crate::sources::oauth::TokenFuture<'a> {
        Box::pin(async {
            Err(RefreshError::Refused(
                "Meta tokens are not refreshed".into(),
            ))
        })
    }
}

impl crate::sources::oauth::Authorize for App {
    fn authorize_url(&self, state: &str) -> String {
        crate::sources::oauth::page_url(
            &self.dialog_url,
            "https://www.facebook.com/v21.0/dialog/oauth",
            &[
                ("client_id", Some(&self.app_id)),
                ("redirect_uri", self.redirect_uri.as_deref()),
                ("state", Some(state)),
                ("scope", Some(&self.scope)),
            ],
        )
    }

    fn code_param(&self) -> &'static str {
        "code"
    }

    fn exchange<'a>(
        &'a self,
        client: &'a reqwest::Client,
        code: &'a str,
    ) -> crate::sources::oauth::TokenFuture<'a> {
        Box::pin(async move {
            let secret = self.app_secret.expose_secret();
            let mut query = vec![
                ("client_id", self.app_id.as_str()),
                ("client_secret", secret),
                ("code", code),
            ];
            if let Some(r) = &self.redirect_uri {
                query.push(("redirect_uri", r.as_str()));
            }
            let short = self.get(client, "oauth/access_token", &query).await?;
            self.long_lived(client, short.access_token.expose_secret())
                .await
        })
    }

    fn exchange_token<'a>(
        &'a self,
        client: &'a reqwest::Client,
        token: &'a str,
    ) -> Option<crate::sources::oauth::TokenFuture<'a>> {
        Some(Box::pin(self.long_lived(client, token)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn graph_token_answers_are_classified() {
        let ok = graph_answer(
            200,
            &json!({"access_token": "EAAB", "token_type": "bearer", "expires_in": 5_183_944}),
        )
        .unwrap();
        assert_eq!(ok.access_token.expose_secret(), "EAAB");
        assert_eq!(ok.access_expires_in, Some(5_183_944));
        let expired = json!({"error": {"message": "Error validating access token: Session has expired", "type": "OAuthException", "code": 190, "error_subcode": 463}});
        assert!(matches!(
            graph_answer(400, &expired),
            Err(RefreshError::Refused(m)) if m.contains("190")
        ));
        let busy = json!({"error": {"message": "An unknown error has occurred.", "type": "OAuthException", "code": 1}});
        assert!(matches!(
            graph_answer(500, &busy),
            Err(RefreshError::Failed(_))
        ));
    }
}
