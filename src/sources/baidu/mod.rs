//! 百度营销 线索通 (Baidu lead notices): `type = "baidu"`.
//!
//! - **Pull.** `POST LeadsNoticeService/getNoticeList` is a preset of the generic HTTP pull
//!   ([`pull_config`]): the credentials in the body's `header` (`userName`, `accessToken`), the
//!   window's dates (`startDate`, `endDate`, GMT+8) in its `body`, one request per poll, success
//!   when `header.desc` is `success`. Baidu does not document the answer's lead fields fully:
//!   the pointers match the recorded answer in `connectors/fixtures/baidu/`.
//! - **OAuth.** 百度营销's developer apps: `POST u.baidu.com/oauth/refreshToken` with `{appId,
//!   refreshToken, secretKey, userId}` answers `{code, message, data: {accessToken,
//!   refreshToken, expiresIn, refreshExpiresIn, ...}}`; `leadgate auth` exchanges an `authCode`
//!   at `oauth/accessToken` (`grantType = "access_token"`). Field names from Baidu's own SDK
//!   (`baidu/baiduads-sdk`); lifetimes and rotation are not published, so both are read from each
//!   answer and a refresh token that comes back is kept in place of the old one.

pub mod config;

pub use config::BaiduConnector;

use std::collections::BTreeMap;

use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::mapping::ContactField;
use crate::sources::connector::{Start, Started};
use crate::sources::http_pull::{ErrorCodes, HttpPullConnector, Method, Paging, TimeWindow};
use crate::sources::oauth::{Fresh, RefreshError};

/// Where the access token sits in the request body.
const TOKEN_POINTER: &str = "/header/accessToken";

/// The generic pull that reads this connector's leads.
pub fn pull_config(c: &BaiduConnector) -> HttpPullConnector {
    let fields = [
        (ContactField::Name, "/name"),
        (ContactField::Phone, "/phone"),
        (ContactField::Email, "/email"),
        (ContactField::Address, "/area"),
    ];
    HttpPullConnector {
        name: c.name.clone(),
        url: c.api_url.clone(),
        method: Method::Post,
        body: Some(json!({
            "header": {
                "userName": c.user_name,
                // Set by each request from the token in use (`pull.auth`).
                "accessToken": "",
                "action": "API-leadgate",
            },
            "body": {"solutionType": c.solution_type},
        })),
        headers: BTreeMap::new(),
        auth: Some((
            TOKEN_POINTER.to_owned(),
            crate::sources::oauth::Token::Fixed(c.access_token.clone()),
        )),
        query: BTreeMap::new(),
        records: "/body/data".into(),
        id: "/clueId".into(),
        paging: Paging::None,
        window: Some(TimeWindow {
            start_param: "/body/startDate".into(),
            end_param: "/body/endDate".into(),
            format: "%Y-%m-%d".into(),
            timezone: "Asia/Shanghai".into(),
            overlap: c.overlap,
            initial: c.initial,
            delay: std::time::Duration::ZERO,
        }),
        error_code: Some(ErrorCodes {
            pointer: "/header/desc".into(),
            ok: vec![json!("success")],
            throttled: Vec::new(),
            expired: c.expired_codes.iter().map(|c| json!(c)).collect(),
            expired_pointer: Some("/header/failures/0/code".into()),
            message: "/header/failures".into(),
        }),
        fields: fields.into_iter().map(|(f, p)| (f, p.to_owned())).collect(),
        test_pointer: None,
        test_value: None,
        test_leads: c.test_leads,
        poll_interval: c.poll_interval,
        rate_limit: c.rate_limit,
        default_region: c.default_region.clone(),
        mapping: c.mapping.clone(),
        identity_fields: c.identity_fields.clone(),
        consent: c.consent.clone(),
    }
}

/// Starts the pull, with a live token when the app is configured.
pub(crate) fn start(cfg: &BaiduConnector, cx: &Start<'_>) -> anyhow::Result<Started> {
    let mut pull = pull_config(cfg);
    let app = app(cfg).map(|a| std::sync::Arc::new(a) as std::sync::Arc<dyn crate::sources::oauth::Refresh>);
    let (token, refresh) = crate::sources::oauth::token(
        cx,
        &cfg.name,
        &cfg.access_token,
        cfg.refresh_token.as_ref(),
        app,
    )?;
    pull.auth = Some((TOKEN_POINTER.to_owned(), token));
    let mut started = crate::sources::http_pull::start(pull, cx)?;
    started.tasks.extend(refresh);
    Ok(started)
}

/// 百度营销's OAuth app.
pub(crate) struct App {
    app_id: String,
    secret_key: secrecy::SecretString,
    user_id: Option<u64>,
    oauth_url: String,
    token_url: String,
    authorize_url: String,
    redirect_uri: Option<String>,
    scope: Option<String>,
}

/// The app of `cfg`, when it names its id and secret key.
pub(crate) fn app(cfg: &BaiduConnector) -> Option<App> {
    Some(App {
        app_id: cfg.app_id.clone()?,
        secret_key: cfg.secret_key.clone()?,
        user_id: cfg.user_id,
        oauth_url: cfg.oauth_url.clone(),
        token_url: cfg.token_url.clone(),
        authorize_url: cfg.authorize_url.clone(),
        redirect_uri: cfg.redirect_uri.clone(),
        scope: cfg.scope.clone(),
    })
}

/// What a token answer means: code 0 tokens; HTTP 429 or 5xx retried; any other code refused.
pub fn token_answer(status: u16, answer: &Value) -> Result<Fresh, RefreshError> {
    crate::sources::oauth::token_answer(
        status,
        answer,
        &crate::sources::oauth::TokenAnswer {
            keys: ("accessToken", "refreshToken"),
            expires: ("expiresIn", "refreshExpiresIn"),
            messages: &["message"],
            retry_codes: &[],
            retry_from: None,
        },
    )
}

impl App {
    async fn post(
        &self,
        client: &reqwest::Client,
        url: &str,
        body: Value,
    ) -> Result<Fresh, RefreshError> {
        let (status, answer) =
            crate::sources::oauth::send(client.post(url).json(&body)).await?;
        token_answer(status, &answer)
    }
}

impl crate::sources::oauth::Refresh for App {
    fn refresh<'a>(
        &'a self,
        client: &'a reqwest::Client,
        refresh_token: &'a str,
    ) -> crate::sources::oauth::TokenFuture<'a> {
        let body = json!({
            "appId": self.app_id,
            "refreshToken": refresh_token,
            "secretKey": self.secret_key.expose_secret(),
            "userId": self.user_id,
        });
        Box::pin(async move { self.post(client, &self.oauth_url, body).await })
    }
}

impl crate::sources::oauth::Authorize for App {
    fn authorize_url(&self, state: &str) -> String {
        crate::sources::oauth::page_url(
            &self.authorize_url,
            "https://u.baidu.com/oauth/page/index",
            &[
                ("appId", Some(&self.app_id)),
                ("scope", self.scope.as_deref()),
                ("state", Some(state)),
                ("callback", self.redirect_uri.as_deref()),
            ],
        )
    }

    fn code_param(&self) -> &'static str {
        "authCode"
    }

    fn exchange<'a>(
        &'a self,
        client: &'a reqwest::Client,
        code: &'a str,
    ) -> crate::sources::oauth::TokenFuture<'a> {
        let body = json!({
            "appId": self.app_id,
            "authCode": code,
            "secretKey": self.secret_key.expose_secret(),
            "userId": self.user_id,
            "grantType": "access_token",
        });
        Box::pin(async move { self.post(client, &self.token_url, body).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authorization_page_names_the_app_scope_and_callback() {
        use crate::sources::oauth::Authorize;
        let app = App {
            app_id: "bd-app".into(),
            secret_key: "s".to_owned().into(),
            user_id: Some(42),
            oauth_url: String::new(),
            token_url: String::new(),
            authorize_url: "https://u.baidu.com/oauth/page/index".into(),
            redirect_uri: Some("https://crm.example.cn/baidu".into()),
            scope: Some("10126".into()),
        };
        assert_eq!(
            app.authorize_url("st"),
            "https://u.baidu.com/oauth/page/index?appId=bd-app&scope=10126&state=st&callback=https%3A%2F%2Fcrm.example.cn%2Fbaidu"
        );
        assert_eq!(app.code_param(), "authCode");
    }

    #[test]
    fn token_answers_use_baidus_own_names() {
        let fresh = token_answer(
            200,
            &json!({"code": 0, "message": "success", "data": {
                "accessToken": "a1", "refreshToken": "r1", "expiresIn": 86400,
                "refreshExpiresIn": 2_592_000, "openId": "o", "userId": 123}}),
        )
        .unwrap();
        assert_eq!(fresh.access_token.expose_secret(), "a1");
        assert_eq!(fresh.refresh_token.unwrap().expose_secret(), "r1");
        assert_eq!(fresh.access_expires_in, Some(86400));
        assert_eq!(fresh.refresh_expires_in, Some(2_592_000));
        assert!(matches!(
            token_answer(200, &json!({"code": 110, "message": "refreshToken expired"})),
            Err(RefreshError::Refused(m)) if m.contains("refreshToken expired")
        ));
        assert!(matches!(
            token_answer(503, &Value::Null),
            Err(RefreshError::Failed(_))
        ));
    }
}
