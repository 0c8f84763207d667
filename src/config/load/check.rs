//! The checks of the settings and of the fields every connector has; each platform's own checks
//! are its [`Connector::check`](crate::sources::Connector::check).

use secrecy::ExposeSecret;

use super::{Loader, Place};
use crate::config::{
    ConnectorConfig, HttpSettings, IntakeSettings, OutputSettings, Settings, Topics,
};

impl Loader {
    pub(super) fn check_settings(&mut self, top: &Place, s: &Settings) {
        let IntakeSettings {
            max_backlog,
            max_body_bytes,
            batch_size,
            idempotency_retention,
        } = &s.intake;
        for (table, items, kind) in [
            (
                "assignment.segments",
                &s.assignment.segments,
                crate::assign::model::Kind::Segments,
            ),
            (
                "assignment.scores",
                &s.assignment.scores,
                crate::assign::model::Kind::Scores,
            ),
        ] {
            for (i, item) in items.iter().enumerate() {
                for e in crate::assign::segments::check_definition(kind, item) {
                    let field = if e.field.is_empty() {
                        format!("{table}[{i}]")
                    } else {
                        format!("{table}[{i}].{}", e.field)
                    };
                    self.push(top, Some(&field), &e.message);
                }
            }
        }
        if s.assignment.max_score < 1 {
            self.push(top, Some("assignment.max_score"), "must be at least 1");
        }
        if *max_backlog == 0 {
            self.push(top, Some("intake.max_backlog"), "must be at least 1");
        }
        if *max_body_bytes == 0 {
            self.push(top, Some("intake.max_body_bytes"), "must be at least 1");
        }
        if !(1..=10_000).contains(batch_size) {
            self.push(
                top,
                Some("intake.batch_size"),
                "must be between 1 and 10000",
            );
        }
        if idempotency_retention.is_zero() {
            self.push(
                top,
                Some("intake.idempotency_retention"),
                "must be longer than 0s",
            );
        }
        let Topics {
            clean,
            rejected,
            merged,
            test,
            assignments,
            status,
            erasures,
        } = &s.topics;
        let topics = [
            ("topics.clean", clean),
            ("topics.rejected", rejected),
            ("topics.merged", merged),
            ("topics.test", test),
            ("topics.assignments", assignments),
            ("topics.status", status),
            ("topics.erasures", erasures),
        ];
        for (key, name) in topics {
            if let Err(why) = check_topic_name(name) {
                self.push(top, Some(key), &why);
            }
        }
        let distinct: std::collections::HashSet<&String> = topics.iter().map(|(_, n)| *n).collect();
        if distinct.len() < topics.len() {
            self.push(
                top,
                Some("topics"),
                "the clean, rejected, merged, test, assignments, status and erasures topics must be seven different topics",
            );
        }
        {
            use secrecy::ExposeSecret;
            if let Some(k) = &s.privacy.encryption_key
                && let Err(why) = crate::seal::parse_key(k.expose_secret())
            {
                self.push(top, Some("privacy.encryption_key"), &why);
            }
            for (i, k) in s.privacy.previous_keys.iter().enumerate() {
                if let Err(why) = crate::seal::parse_key(k.expose_secret()) {
                    self.push(top, Some(&format!("privacy.previous_keys[{i}]")), &why);
                }
            }
            let p = &s.privacy;
            for (key, d, least) in [
                ("privacy.retention", p.retention, 1),
                ("privacy.output_retention", p.output_retention, 1),
                ("privacy.retention_check", p.retention_check, 1),
            ] {
                if d.is_some_and(|d| d.as_secs() < least) {
                    self.push(top, Some(key), "must be at least 1s");
                }
            }
        }
        if let Some(c) = &s.coordination {
            if c.lease() < std::time::Duration::from_secs(2) {
                self.push(top, Some("coordination.lease"), "must be at least 2s");
            }
            // After a failover the new holder reads again from the shared checkpoint; only a
            // shared identity store recognizes the leads the old one already took in.
            if !matches!(
                s.identity.store,
                crate::identity::StoreSettings::Mysql { .. }
            ) {
                self.push(
                    top,
                    Some("coordination"),
                    "gateways that share pull connectors need a shared identity store: set [identity.store] type = \"mysql\"",
                );
            }
        }
        if s.lifecycle.check_every < std::time::Duration::from_millis(100) {
            self.push(top, Some("lifecycle.check_every"), "must be at least 100ms");
        }
        if s.lifecycle.status_group.trim().is_empty() {
            self.push(top, Some("lifecycle.status_group"), "must not be empty");
        }
        let id = &s.identity;
        if !(0.5..=1.0).contains(&id.name_similarity) {
            self.push(
                top,
                Some("identity.name_similarity"),
                "must be between 0.5 and 1.0",
            );
        }
        for v in &id.blocked_values {
            if !v
                .split_once(':')
                .is_some_and(|(k, v)| !k.is_empty() && !v.is_empty())
            {
                self.push(
                    top,
                    Some("identity.blocked_values"),
                    &format!("`{v}` is not `kind:value`, e.g. \"phone:+8613800000000\""),
                );
            }
        }
        for (table, limits) in [
            ("identity.max_values_per_person", &id.max_values_per_person),
            ("identity.max_people_per_key", &id.max_people_per_key),
        ] {
            for (kind, n) in limits {
                if *n == 0 {
                    self.push(top, Some(&format!("{table}.{kind}")), "must be at least 1");
                }
            }
        }
        let short = "must be at least 16 characters; generate one with `openssl rand -hex 32`";
        if s.api
            .token
            .as_ref()
            .is_some_and(|t| t.expose_secret().trim().len() < 16)
        {
            self.push(top, Some("api.token"), short);
        }
        if s.api.allow_unauthenticated {
            self.push(
                top,
                Some("api.allow_unauthenticated"),
                "is no longer supported: leads are personal information, so a management API \
                 reachable from the network always asks for a token; set [api] token or \
                 [[api.tokens]] (the proxy in front can send one)",
            );
        }
        let mut names = std::collections::BTreeSet::from(["admin".to_owned()]);
        let mut secrets: Vec<&str> = s.api.token.iter().map(|t| t.expose_secret()).collect();
        for (i, t) in s.api.tokens.iter().enumerate() {
            let at = |f: &str| format!("api.tokens[{i}].{f}");
            let valid = !t.name.is_empty()
                && t.name.len() <= 64
                && t.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                self.push(
                    top,
                    Some(&at("name")),
                    "letters, digits, `-` and `_`, at most 64",
                );
            } else if !names.insert(t.name.clone()) {
                self.push(
                    top,
                    Some(&at("name")),
                    &format!(
                        "`{}` names another token too (`admin` is [api] token's)",
                        t.name
                    ),
                );
            }
            if t.token.expose_secret().trim().len() < 16 {
                self.push(top, Some(&at("token")), short);
            } else if secrets.contains(&t.token.expose_secret()) {
                self.push(
                    top,
                    Some(&at("token")),
                    "is another token's too: each needs its own",
                );
            }
            secrets.push(t.token.expose_secret());
            if t.scopes.is_empty() {
                self.push(
                    top,
                    Some(&at("scopes")),
                    "give at least one of admin, operator, pii:read, privacy",
                );
            }
        }
        if let Some(why) = s.open_management_api() {
            self.push(top, Some("api.token"), &why);
        }
        let HttpSettings {
            header_timeout,
            body_timeout,
            max_connections,
        } = &s.http;
        for (key, d) in [
            ("http.header_timeout", header_timeout),
            ("http.body_timeout", body_timeout),
        ] {
            if d.is_zero() {
                self.push(top, Some(key), "must be longer than 0s");
            }
        }
        if *max_connections == 0 {
            self.push(top, Some("http.max_connections"), "must be at least 1");
        }
        if let OutputSettings::Kafka(k) = &s.output {
            if k.brokers.trim().is_empty() {
                self.push(
                    top,
                    Some("output.brokers"),
                    "must name at least one broker, e.g. \"127.0.0.1:9092\"",
                );
            }
            for fixed in ["acks", "enable.idempotence", "bootstrap.servers"] {
                if k.options.contains_key(fixed) {
                    self.push(
                        top,
                        Some(&format!("output.options.{fixed}")),
                        "is set by leadgate and cannot be overridden",
                    );
                }
            }
        }
    }

    pub(super) fn check_connector(&mut self, place: &Place, c: &ConnectorConfig, named: bool) {
        let name = c.name();
        if !named || name.is_empty() {
            self.push(
                place,
                Some("name"),
                "missing; every connector needs a unique name",
            );
        } else if !name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            self.push(
                place,
                Some("name"),
                "use only ASCII letters, digits, `-` and `_` (it is part of a URL)",
            );
        } else if let Some(first) = self.names.get(name) {
            let msg = format!("duplicate connector name; first defined at {first}");
            self.push(place, Some("name"), &msg);
        } else {
            let at = format!(
                "{}{}",
                place.file,
                place.line.map(|l| format!(":{l}")).unwrap_or_default()
            );
            self.names.insert(name.to_owned(), at);
        }
        if c.default_region()
            .parse::<phonenumber::country::Id>()
            .is_err()
        {
            self.push(
                place,
                Some("default_region"),
                "not an ISO 3166 region code known to libphonenumber, e.g. \"CN\"",
            );
        }
        for (field, names) in c.mapping() {
            if names.iter().any(|n| n.trim().is_empty()) {
                self.push(
                    place,
                    Some(&format!("mapping.{}", field.as_str())),
                    "input field names must not be empty",
                );
            }
            for (i, n) in names.iter().enumerate() {
                if crate::mapping::path::is_path(n)
                    && let Err(e) = n.parse::<crate::mapping::path::Path>()
                {
                    self.push(
                        place,
                        Some(&format!("mapping.{}[{i}]", field.as_str())),
                        &format!("`{n}` is not a path ({e}); see docs/form-tools.md, \"Paths\""),
                    );
                }
            }
        }
        for (kind, field) in c.identity_fields() {
            let key = format!("identity_fields.{kind}");
            if !is_key_kind(kind) {
                self.push(
                    place,
                    Some(&key),
                    "a key kind is lowercase ASCII letters, digits and `_`, and not `phone` or `email` (those come from the contact)",
                );
            } else if field.trim().is_empty() {
                self.push(place, Some(&key), "the input field name must not be empty");
            }
        }
        if let Some(consent) = c.consent() {
            if consent.field.trim().is_empty() {
                self.push(
                    place,
                    Some("consent.field"),
                    "name the input field whose answer says the person agreed (or a JSON pointer, `/...`)",
                );
            }
            if consent.purposes.iter().any(|p| p.trim().is_empty()) {
                self.push(
                    place,
                    Some("consent.purposes"),
                    "a purpose must not be empty",
                );
            }
        }
        let mut checks = crate::sources::Checks::default();
        c.get().check(&mut checks);
        for (field, message) in checks.0 {
            self.push(place, Some(&field), &message);
        }
    }
}

/// A key kind of `identity_fields`: lowercase ASCII letters, digits and `_`, not a contact kind.
fn is_key_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && kind != crate::lead::PHONE
        && kind != crate::lead::EMAIL
}

/// A Kafka topic name.
fn check_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 249 {
        return Err("a topic name has 1 to 249 characters".into());
    }
    if name == "."
        || name == ".."
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "`{name}` is not a valid topic name (ASCII letters, digits, `.`, `_`, `-`)"
        ));
    }
    Ok(())
}
