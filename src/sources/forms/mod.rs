//! What every form tool's connector shares (Typeform, Tally, Jotform, 金数据, ...): one
//! definition ([`FormConnector`]: an optional signing secret or URL token, a rate limit, the
//! mapping), one webhook (checked, then each submission journaled as one lead keyed by its
//! response id), and the helpers that turn a tool's answers into the flat fields the mapping
//! reads ([`Answers`]). A tool's folder states only what differs: its envelope, its ids, how its
//! answers are laid out and how it signs ([`FormTool`]).

pub mod signature;

use std::collections::BTreeMap;
use std::marker::PhantomData;

use axum::http::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use crate::http_error::ApiError;
use crate::lead::{IntakeEvent, SourceKind};
use crate::mapping::{ContactField, FieldMapping};
use crate::sources::connector::{
    Checks, Common, Connector, RateLimit, Shape, Start, Started, TestLeads, default_region,
    flattened,
};
use crate::sources::push::{self, Push, Reply, Request, Verdict, Webhook};

pub use signature::Signature;

/// One form tool: what its deliveries look like.
pub trait FormTool: Send + Sync + 'static {
    /// Its name in banners and errors (`Typeform`).
    const TITLE: &'static str;
    /// How it signs a delivery with the secret set in the tool, if it does.
    const SIGNATURE: Option<Signature> = None;
    /// Contact field names it adds to the built-in ones, after the connector's `mapping`.
    const PRESET: &'static [(ContactField, &'static [&'static str])] = &[];

    /// The delivery as one JSON event (the body parsed as JSON or a form, by default).
    fn event(push: &Push<'_>) -> Result<Value, ApiError> {
        push.payload()
    }

    /// Why an event is answered without a lead (a tool's test ping, a deletion), if it is.
    fn skip(_event: &Value) -> Option<&'static str> {
        None
    }

    /// Says why an event is not a submission of this tool as documented: the field and why. Such
    /// an event is still taken (and rejected downstream with its raw body).
    fn check(event: &Value) -> Result<(), (&'static str, &'static str)>;

    /// The submission's id: a retried or re-sent delivery carries the same one.
    fn response_id(event: &Value) -> Option<String>;

    /// The fields the mapping reads: ids and times, then each answer under its question's names.
    fn fields(event: &Value) -> Value;

    /// Whether the tool marked this a test submission.
    fn is_test(_event: &Value) -> bool {
        false
    }
}

/// `type = "<tool>"`: a form tool's webhook on `/v1/webhooks/{name}` (see `docs/form-tools.md`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, bound = "")]
pub struct FormConnector<T> {
    pub name: String,
    /// The secret the tool signs deliveries with (for tools that sign); every request must then
    /// carry a valid signature. Write `"${ENV_VAR}"`.
    #[serde(default)]
    pub signing_secret: Option<SecretString>,
    /// A shared token every request must carry, as `?token=` in the URL pasted into the tool or
    /// as `Authorization: Bearer <token>` (for tools that cannot sign).
    #[serde(default)]
    pub token: Option<SecretString>,
    /// The URL the tool posts to, as pasted into it (`https://leads.example.cn`), for tools
    /// that sign the URL (HubSpot) when a proxy in front of the gateway changes the host.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Requests per second taken; more get 429 with `Retry-After`.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default = "default_region")]
    pub default_region: String,
    /// Extra names for contact fields (question titles, keys or refs), matched before the
    /// built-in ones.
    #[serde(default)]
    pub mapping: FieldMapping,
    #[serde(default)]
    pub identity_fields: BTreeMap<String, String>,
    /// The answer that says the person agreed, and whether it is required: see
    /// `docs/privacy.md#consent`.
    #[serde(default)]
    pub consent: Option<crate::consent::ConsentMapping>,
    /// Where the tool's test submissions go.
    #[serde(default)]
    pub test_leads: TestLeads,
    /// The options of choice questions whose answers arrive as option numbers or codes, by the
    /// answer's field name: a list (option 1 first: `q3 = ["CRM", "ERP"]` makes `"1,2"` `CRM,
    /// ERP`) or a table (`field_3 = { zI63 = "教育" }`).
    #[serde(default)]
    pub choices: BTreeMap<String, Choices>,
    #[serde(skip)]
    tool: PhantomData<fn() -> T>,
}

/// A choice question's options (see [`FormConnector::choices`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Choices {
    /// In order: option 1 first.
    List(Vec<String>),
    /// Option code -> text.
    Table(BTreeMap<String, String>),
}

impl Choices {
    fn text<'a>(&'a self, id: &'a str) -> &'a str {
        let found = match self {
            Self::List(options) => id
                .parse::<usize>()
                .ok()
                .and_then(|n| options.get(n.checked_sub(1)?)),
            Self::Table(options) => options.get(id),
        };
        found.map_or(id, String::as_str)
    }
}

/// Replaces option numbers or codes with their text in the fields `choices` names: a value of
/// several (`1,2`, `1┋3`, `zI63, uN9L`) becomes their texts joined with `, `.
fn resolve_choices(fields: &mut Value, choices: &BTreeMap<String, Choices>) {
    let Some(obj) = fields.as_object_mut() else {
        return;
    };
    for (name, options) in choices {
        let Some(value) = obj.get_mut(name) else {
            continue;
        };
        let Some(ids) = crate::sources::id_text(value) else {
            continue;
        };
        let texts: Vec<&str> = ids
            .split([',', '，', '|', '┋'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|id| options.text(id))
            .collect();
        *value = Value::String(texts.join(", "));
    }
}

impl<T> Clone for FormConnector<T> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            signing_secret: self.signing_secret.clone(),
            token: self.token.clone(),
            public_url: self.public_url.clone(),
            rate_limit: self.rate_limit,
            default_region: self.default_region.clone(),
            mapping: self.mapping.clone(),
            identity_fields: self.identity_fields.clone(),
            consent: self.consent.clone(),
            test_leads: self.test_leads,
            choices: self.choices.clone(),
            tool: PhantomData,
        }
    }
}

impl<T> Common for FormConnector<T> {
    fn name(&self) -> &str {
        &self.name
    }
    fn default_region(&self) -> &str {
        &self.default_region
    }
    fn mapping(&self) -> &FieldMapping {
        &self.mapping
    }
    fn identity_fields(&self) -> &BTreeMap<String, String> {
        &self.identity_fields
    }
    fn consent(&self) -> Option<&crate::consent::ConsentMapping> {
        self.consent.as_ref()
    }
}

impl<T: FormTool> Connector for FormConnector<T> {
    fn test_leads(&self) -> TestLeads {
        self.test_leads
    }

    fn check(&self, checks: &mut Checks) {
        if self.signing_secret.is_some() && T::SIGNATURE.is_none() {
            checks.push(
                "signing_secret",
                &format!(
                    "{} does not sign its deliveries; set `token` and add ?token=... to the URL",
                    T::TITLE
                ),
            );
        }
        checks.secret_if_set("signing_secret", self.signing_secret.as_ref());
        checks.secret_if_set("token", self.token.as_ref());
        if let Some(url) = &self.public_url {
            checks.http_url("public_url", url);
        }
        checks.rate_limit(self.rate_limit);
    }

    fn shape(&self) -> Shape {
        let mapping = crate::sources::with_preset(&self.mapping, T::PRESET);
        if self.choices.is_empty() {
            return flattened(mapping, T::fields);
        }
        let choices = self.choices.clone();
        let fields = move |event: &Value| {
            let mut f = T::fields(event);
            resolve_choices(&mut f, &choices);
            f
        };
        (mapping, Some(std::sync::Arc::new(fields)))
    }

    fn banner(&self, base: &str) -> Option<String> {
        let guard = match (&self.signing_secret, &self.token) {
            (Some(_), _) => " (signed)",
            (None, Some(_)) => " (?token=...)",
            (None, None) => " (open: set signing_secret or token)",
        };
        Some(format!(
            "{} form webhook: POST {base}/v1/webhooks/{}{guard}",
            T::TITLE,
            self.name
        ))
    }

    fn start(&self, _: &Start<'_>) -> anyhow::Result<Started> {
        Ok(Started::webhook(Submissions(self.clone())))
    }
}

/// The webhook: each checked delivery is one lead, keyed by its submission's id.
struct Submissions<T>(FormConnector<T>);

impl<T: FormTool> Webhook for Submissions<T> {
    fn rate_limit(&self) -> Option<RateLimit> {
        self.0.rate_limit
    }

    fn authenticate(&self, request: &Request<'_>) -> Verdict {
        if let Some(token) = &self.0.token {
            check_token(token, request)?;
        }
        if let (Some(secret), Some(scheme)) = (&self.0.signing_secret, T::SIGNATURE) {
            let now = jiff::Timestamp::now().as_millisecond();
            scheme
                .verify(
                    secret.expose_secret(),
                    request,
                    now,
                    self.0.public_url.as_deref(),
                )
                .map_err(push::unauthorized)?;
        }
        Ok(None)
    }

    fn receive<'a>(&'a self, push: Push<'a>) -> Reply<'a> {
        Box::pin(async move {
            let event = T::event(&push)?;
            if let Some(reason) = T::skip(&event) {
                return Ok(push::ignored(reason));
            }
            let header_key = push.idempotency_key()?;
            // A body in a shape the tool is not known to send is still a delivery someone
            // made: it is taken and published to the rejected stream with its raw body and
            // the reason, never refused and lost.
            let unexpected = T::check(&event).err();
            let id = T::response_id(&event);
            let test = T::is_test(&event);
            let mut lead = IntakeEvent::new(push.connector, SourceKind::Webhook, id.clone(), event);
            lead.test = test;
            if let Some((field, why)) = unexpected {
                lead.issues.push(crate::lead::Issue::new(
                    "body",
                    "body.unexpected_shape",
                    format!(
                        "not a {} submission as documented ({field}: {why}); kept whole in raw",
                        T::TITLE
                    ),
                ));
            }
            let receipt = push.journal(lead, header_key.or(id)).await?;
            Ok(push::accepted(&receipt))
        })
    }
}

/// `?token=` or `Authorization: Bearer`, compared in constant time.
fn check_token(token: &SecretString, request: &Request<'_>) -> Result<(), ApiError> {
    let given = request.query("token").or_else(|| {
        request
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_owned()))
    });
    let Some(given) = given else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "token.missing",
            Some("token"),
            "send the connector's token as ?token= in the URL or as Authorization: Bearer",
        ));
    };
    if bool::from(given.as_bytes().ct_eq(token.expose_secret().as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "token.mismatch",
            Some("token"),
            "the token is not this connector's",
        ))
    }
}

/// The flat fields of one submission, built answer by answer: the first value under a name
/// wins, and values found by an answer's type (`email`, `phone`) come last, so a question
/// named so keeps its own answer.
#[derive(Debug, Default)]
pub struct Answers {
    out: Map<String, Value>,
    typed: Vec<(&'static str, Value)>,
}

impl Answers {
    /// Starts with the scalars of the envelope objects given (ids, times, form names).
    pub fn new<'a>(envelopes: impl IntoIterator<Item = Option<&'a Value>>) -> Self {
        let mut out = Map::new();
        for obj in envelopes.into_iter().flatten().filter_map(Value::as_object) {
            for (k, v) in crate::sources::scalars(obj) {
                out.entry(k).or_insert(v);
            }
        }
        Self {
            out,
            typed: Vec::new(),
        }
    }

    /// An answer under each of its names (a title, a key, a ref), skipping blank names.
    pub fn answer<'n>(&mut self, names: impl IntoIterator<Item = Option<&'n str>>, value: &Value) {
        for name in names.into_iter().flatten().map(str::trim) {
            if !name.is_empty() {
                self.out
                    .entry(name.to_owned())
                    .or_insert_with(|| value.clone());
            }
        }
    }

    /// An answer that is a contact field by its type (`email`, `phone`), whatever its title.
    pub fn typed(&mut self, field: &'static str, value: &Value) {
        self.typed.push((field, value.clone()));
    }

    /// A field by name (set it only if no answer has that name).
    pub fn put(&mut self, name: &str, value: Value) {
        self.out.entry(name.to_owned()).or_insert(value);
    }

    pub fn into_value(self) -> Value {
        let mut out = self.out;
        for (field, value) in self.typed {
            out.entry(field.to_owned()).or_insert(value);
        }
        Value::Object(out)
    }
}

/// Whether `s` is an email address by its shape (`local@domain.tld`, no spaces): for tools
/// whose answers carry no type or label. The address itself is checked later, as any email.
pub fn looks_like_email(s: &str) -> bool {
    let s = s.trim();
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(char::is_whitespace)
        && s.len() <= 254
}

/// A flat answer as the mapping reads it: text (not blank), a number or a boolean as it is, a
/// list joined with `, `; `None` for objects, nulls and blanks.
pub fn flat_value(value: &Value) -> Option<Value> {
    match value {
        Value::String(s) if s.trim().is_empty() => None,
        Value::Array(items) => joined(items),
        Value::Object(_) | Value::Null => None,
        v => Some(v.clone()),
    }
}

/// Several texts joined with `, ` (`None` when there are none).
pub fn joined<'a>(texts: impl IntoIterator<Item = &'a Value>) -> Option<Value> {
    let texts: Vec<String> = texts
        .into_iter()
        .filter_map(|v| match v {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .collect();
    (!texts.is_empty()).then(|| Value::String(texts.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::path::option_texts;
    use serde_json::json;

    #[test]
    fn answers_keep_the_first_value_per_name_and_typed_values_last() {
        let envelope = json!({"id": "e1", "nested": {"x": 1}, "form": "f"});
        let mut a = Answers::new([Some(&envelope), None]);
        a.typed("email", &json!("typed@example.com"));
        a.answer(
            [Some("Email"), Some(" "), None],
            &json!("first@example.com"),
        );
        a.answer([Some("email")], &json!("named@example.com"));
        a.answer([Some("Email")], &json!("second@example.com"));
        let v = a.into_value();
        assert_eq!(v["id"], "e1");
        assert!(v.get("nested").is_none());
        assert_eq!(v["Email"], "first@example.com");
        assert_eq!(v["email"], "named@example.com");
        assert!(v.get(" ").is_none());
    }

    #[test]
    fn names_put_the_family_name_first_only_in_cjk() {
        use crate::sources::person_name;
        assert_eq!(person_name("Jane", "Doe").as_deref(), Some("Jane Doe"));
        assert_eq!(person_name("小明", "王").as_deref(), Some("王小明"));
        assert_eq!(person_name("ひろし", "山田").as_deref(), Some("山田ひろし"));
        assert_eq!(person_name("Ming", "王").as_deref(), Some("Ming 王"));
        assert_eq!(person_name(" ", "Doe").as_deref(), Some("Doe"));
        assert_eq!(person_name("", " "), None);
    }

    #[test]
    fn configured_choices_turn_numbers_and_codes_into_text() {
        let choices: BTreeMap<String, Choices> = serde_json::from_value(json!({
            "q3": ["CRM", "ERP", "OA"],
            "field_3": {"zI63": "教育", "uN9L": "IT/互联网/计算机"}}))
        .unwrap();
        let mut f = json!({"q3": "1,3", "q4": "1", "field_3": "zI63, uN9L", "q5": 2});
        resolve_choices(&mut f, &choices);
        assert_eq!(
            f,
            json!({"q3": "CRM, OA", "q4": "1", "field_3": "教育, IT/互联网/计算机", "q5": 2})
        );
        let mut f = json!({"q3": "2┋9┋0"});
        resolve_choices(&mut f, &choices);
        assert_eq!(f["q3"], "ERP, 9, 0", "numbers no option has stay");
        let mut f = json!({"q3": 2});
        resolve_choices(&mut f, &choices);
        assert_eq!(f["q3"], "ERP");
    }

    #[test]
    fn choices_become_their_options_text() {
        let options = [
            json!({"id": "a", "text": "CRM"}),
            json!({"id": 2, "text": "ERP"}),
        ];
        let choice_text = |v: &Value| option_texts(v, &options).map(Value::String);
        assert_eq!(
            choice_text(&json!(["a", 2, "x"])),
            Some(json!("CRM, ERP, x"))
        );
        assert_eq!(choice_text(&json!("a")), Some(json!("CRM")));
        assert_eq!(choice_text(&json!([])), None);
        assert_eq!(choice_text(&Value::Null), None);
        assert_eq!(
            joined(&[json!(" a "), json!(3), json!(null)]),
            Some(json!("a, 3"))
        );
    }
}
