//! Reading settings: TOML parsing, `${ENV_VAR}` interpolation, included connector files, and
//! validation that collects every error with its place (file, line, connector, field) before
//! anything opens a socket.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::{Table, Value};

mod check;
mod env;

pub(crate) use env::interpolate_env;

use super::{ConnectorConfig, KafkaSettings, OutputSettings, Settings};

/// One configuration problem and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub connector: Option<String>,
    /// Dotted path of the offending key, e.g. `signature.secret`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(":")?;
        if let Some(c) = &self.connector {
            write!(f, " connector `{c}`:")?;
        }
        if let Some(field) = &self.field {
            write!(f, " field `{field}`:")?;
        }
        write!(f, " {}", self.message)
    }
}

/// Every problem found in a configuration, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Loads settings from `path`, or the built-in default when `path` is `None`.
pub fn load(path: Option<&Path>) -> Result<Settings, ConfigErrors> {
    let Some(path) = path else {
        return Ok(Settings::default());
    };
    match std::fs::read_to_string(path) {
        Ok(text) => load_str(&text, path),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file: path.display().to_string(),
            line: None,
            connector: None,
            field: None,
            message: format!("cannot read: {e}"),
        }])),
    }
}

/// Parses and validates `text` as if read from `path` (which places errors and anchors `include`).
pub fn load_str(text: &str, path: &Path) -> Result<Settings, ConfigErrors> {
    let mut cx = Loader {
        file: path.display().to_string(),
        errors: Vec::new(),
        names: HashMap::new(),
    };
    let settings = cx.settings(text, path);
    if cx.errors.is_empty() {
        Ok(settings)
    } else {
        Err(ConfigErrors(cx.errors))
    }
}

/// Connector positions in the file, read in a second pass because `toml::Table` keeps no spans.
#[derive(Default, Deserialize)]
struct Spans {
    #[serde(default)]
    connectors: Vec<toml::Spanned<Value>>,
}

#[derive(Clone, Default)]
struct Place {
    file: String,
    line: Option<usize>,
    connector: Option<String>,
}

struct Loader {
    file: String,
    errors: Vec<ConfigError>,
    /// Connector names seen so far, with where, to report duplicates.
    names: HashMap<String, String>,
}

const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "intake",
    "http",
    "output",
    "topics",
    "identity",
    "assignment",
    "api",
    "metrics",
    "stats",
    "lifecycle",
    "coordination",
    "privacy",
    "connectors",
    "include",
];

impl Loader {
    fn settings(&mut self, text: &str, path: &Path) -> Settings {
        let mut settings = Settings {
            connectors: Vec::new(),
            ..Settings::default()
        };
        let mut table = match toml::from_str::<Table>(text) {
            Ok(t) => t,
            Err(e) => {
                let line = e.span().map(|s| line_of(text, s.start));
                self.push(
                    &Place {
                        file: self.file.clone(),
                        line,
                        connector: None,
                    },
                    None,
                    e.message().trim(),
                );
                return settings;
            }
        };
        let top = Place {
            file: self.file.clone(),
            ..Place::default()
        };
        for key in table.keys() {
            if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
                self.push(
                    &top,
                    Some(key),
                    &format!("unknown key; expected one of {}", TOP_LEVEL_KEYS.join(", ")),
                );
            }
        }
        let connectors = table.remove("connectors");
        let includes = table.remove("include");
        let mut rest = Value::Table(table);
        self.interpolate(&top, &mut rest, "");
        let Value::Table(mut table) = rest else {
            unreachable!("a table stays a table")
        };

        if let Some(v) = table.remove("listen") {
            match v.as_str().map(str::parse) {
                Some(Ok(addr)) => settings.listen = addr,
                _ => self.push(
                    &top,
                    Some("listen"),
                    "expected an address like \"127.0.0.1:8080\"",
                ),
            }
        }
        if let Some(v) = table.remove("data_dir") {
            match v.as_str() {
                Some(s) if !s.is_empty() => settings.data_dir = PathBuf::from(s),
                _ => self.push(&top, Some("data_dir"), "expected a non-empty path"),
            }
        }
        settings.intake = self.section(&top, "intake", table.remove("intake"));
        settings.http = self.section(&top, "http", table.remove("http"));
        settings.topics = self.section(&top, "topics", table.remove("topics"));
        settings.identity = self.section(&top, "identity", table.remove("identity"));
        settings.assignment = self.section(&top, "assignment", table.remove("assignment"));
        settings.api = self.section(&top, "api", table.remove("api"));
        settings.metrics = self.section(&top, "metrics", table.remove("metrics"));
        settings.stats = self.section(&top, "stats", table.remove("stats"));
        settings.lifecycle = self.section(&top, "lifecycle", table.remove("lifecycle"));
        settings.privacy = self.section(&top, "privacy", table.remove("privacy"));
        if let Some(v) = table.remove("coordination") {
            settings.coordination = self.parse_at(&top, v, "coordination.");
        }
        if let Some(v) = table.remove("output") {
            settings.output = self.output(&top, v);
        }
        self.check_settings(&top, &settings);

        let spans: Spans = toml::from_str(text).unwrap_or_default();
        match connectors {
            None => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.into_iter().enumerate() {
                    let line = spans
                        .connectors
                        .get(i)
                        .map(|s| line_of(text, s.span().start));
                    let place = Place {
                        file: self.file.clone(),
                        line,
                        connector: None,
                    };
                    if let Some(c) = self.connector(place, item, &format!("connectors[{i}]")) {
                        settings.connectors.push(c);
                    }
                }
            }
            Some(_) => self.push(
                &top,
                Some("connectors"),
                "expected an array of tables: [[connectors]]",
            ),
        }
        match includes {
            None => {}
            Some(Value::Array(files)) => {
                let base = path.parent().unwrap_or(Path::new("."));
                for (i, f) in files.iter().enumerate() {
                    match f.as_str() {
                        Some(f) => {
                            if let Some(c) = self.include(&base.join(f)) {
                                settings.connectors.push(c);
                            }
                        }
                        None => {
                            self.push(&top, Some(&format!("include[{i}]")), "expected a file path")
                        }
                    }
                }
            }
            Some(_) => self.push(
                &top,
                Some("include"),
                "expected an array of connector file paths",
            ),
        }
        settings
    }

    /// A connector file: one connector table at the top level.
    fn include(&mut self, path: &Path) -> Option<ConnectorConfig> {
        let file = path.display().to_string();
        let place = Place {
            file: file.clone(),
            line: None,
            connector: None,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                self.push(
                    &place,
                    None,
                    &format!("cannot read included connector file: {e}"),
                );
                return None;
            }
        };
        match toml::from_str::<Table>(&text) {
            Ok(t) => self.connector(
                Place {
                    line: Some(1),
                    ..place
                },
                Value::Table(t),
                "",
            ),
            Err(e) => {
                let line = e.span().map(|s| line_of(&text, s.start));
                self.push(&Place { line, ..place }, None, e.message().trim());
                None
            }
        }
    }

    fn connector(
        &mut self,
        mut place: Place,
        mut value: Value,
        label: &str,
    ) -> Option<ConnectorConfig> {
        let Some(table) = value.as_table_mut() else {
            self.push(&place, None, "a connector must be a table");
            return None;
        };
        let name = table.get("name").and_then(Value::as_str).map(str::to_owned);
        place.connector = Some(name.clone().unwrap_or_else(|| label.to_owned()));
        let kind = table.remove("type");
        self.interpolate(&place, &mut value, "");
        let config = match kind.as_ref().and_then(Value::as_str) {
            Some(kind) if ConnectorConfig::TYPES.contains(&kind) => {
                self.parse_with(&place, value, "", |d| {
                    ConnectorConfig::deserialize_as(kind, d).expect("a listed type")
                })
            }
            Some(other) => {
                self.push(
                    &place,
                    Some("type"),
                    &format!(
                        "unknown connector type `{other}`; expected {}",
                        connector_types()
                    ),
                );
                None
            }
            None => {
                self.push(
                    &place,
                    Some("type"),
                    &format!("missing; expected {}", connector_types()),
                );
                None
            }
        }?;
        self.check_connector(&place, &config, name.is_some());
        Some(config)
    }

    fn output(&mut self, place: &Place, mut value: Value) -> OutputSettings {
        let kind = value.as_table_mut().and_then(|t| t.remove("type"));
        match kind.as_ref().and_then(Value::as_str) {
            Some("embedded") => {
                if value.as_table().is_some_and(|t| !t.is_empty()) {
                    self.push(
                        place,
                        Some("output"),
                        "the embedded output takes no settings",
                    );
                }
                OutputSettings::Embedded
            }
            Some("kafka") => match self.parse_at::<KafkaSettings>(place, value, "output.") {
                Some(k) => OutputSettings::Kafka(k),
                None => OutputSettings::Embedded,
            },
            _ => {
                self.push(
                    place,
                    Some("output.type"),
                    "expected \"embedded\" or \"kafka\"",
                );
                OutputSettings::Embedded
            }
        }
    }

    fn section<T: DeserializeOwned + Default>(
        &mut self,
        place: &Place,
        key: &str,
        value: Option<Value>,
    ) -> T {
        value
            .and_then(|v| self.parse_at(place, v, &format!("{key}.")))
            .unwrap_or_default()
    }

    fn parse_at<T: DeserializeOwned>(
        &mut self,
        place: &Place,
        value: Value,
        prefix: &str,
    ) -> Option<T> {
        self.parse_with(place, value, prefix, |d| T::deserialize(d))
    }

    /// Reads `value` with `read`; a problem is reported at its field's dotted path.
    fn parse_with<T>(
        &mut self,
        place: &Place,
        value: Value,
        prefix: &str,
        read: impl FnOnce(
            serde_path_to_error::Deserializer<'_, '_, Value>,
        ) -> Result<T, toml::de::Error>,
    ) -> Option<T> {
        let mut track = serde_path_to_error::Track::new();
        let read = read(serde_path_to_error::Deserializer::new(value, &mut track))
            .map_err(|e| serde_path_to_error::Error::new(track.path(), e));
        match read {
            Ok(t) => Some(t),
            Err(e) => {
                let path = e.path().to_string();
                let mut field = if path == "." {
                    prefix.trim_end_matches('.').to_owned()
                } else {
                    format!("{prefix}{path}")
                };
                let mut message = e.into_inner().to_string().trim().to_owned();
                // serde reports a missing field at its parent: name the field itself.
                let missing = message
                    .strip_prefix("missing field `")
                    .and_then(|m| m.strip_suffix('`'));
                if let Some(name) = missing {
                    field = if field.is_empty() {
                        name.to_owned()
                    } else {
                        format!("{field}.{name}")
                    };
                    message = "missing field".into();
                }
                let field = (!field.is_empty()).then_some(field);
                self.push(place, field.as_deref(), &message);
                None
            }
        }
    }

    /// Replaces `${NAME}` (or `${NAME:-fallback}`) in every string with the environment variable;
    /// `$$` is a literal `$`.
    fn interpolate(&mut self, place: &Place, value: &mut Value, path: &str) {
        match value {
            Value::String(s) => match interpolate_env(s) {
                Ok(new) => *s = new,
                Err(msg) => self.push(place, (!path.is_empty()).then_some(path), &msg),
            },
            Value::Array(items) => {
                for (i, v) in items.iter_mut().enumerate() {
                    self.interpolate(place, v, &format!("{path}[{i}]"));
                }
            }
            Value::Table(t) => {
                for (k, v) in t.iter_mut() {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    self.interpolate(place, v, &p);
                }
            }
            _ => {}
        }
    }

    fn push(&mut self, place: &Place, field: Option<&str>, message: &str) {
        self.errors.push(ConfigError {
            file: place.file.clone(),
            line: place.line,
            connector: place.connector.clone(),
            field: field.map(str::to_owned),
            message: message.trim().to_owned(),
        });
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).unwrap_or(text).matches('\n').count() + 1
}

/// `webhook, file, ... or tencent`, for errors.
fn connector_types() -> String {
    match ConnectorConfig::TYPES.split_last() {
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match load_str(text, Path::new("t.toml")) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn every_error_is_listed_with_its_place() {
        let text = r#"
listen = "nope"
colour = 1

[[connectors]]
name = "a"
type = "webhook"
default_region = "XX"

[[connectors]]
name = "a"
type = "webhook"
signature = { secret = "${LEADGATE_TEST_SURELY_UNSET}" }
rate_limit = { per_second = 0 }

[[connectors]]
name = "c"
type = "ftp"
"#;
        let errs = errors(text);
        let expect = [
            "t.toml: field `colour`: unknown key",
            "t.toml: field `listen`: expected an address",
            "t.toml:5: connector `a`: field `default_region`:",
            "t.toml:10: connector `a`: field `signature.secret`: environment variable LEADGATE_TEST_SURELY_UNSET is not set",
            "t.toml:10: connector `a`: field `name`: duplicate connector name; first defined at t.toml:5",
            "t.toml:10: connector `a`: field `rate_limit.per_second`: must be at least 1",
            "t.toml:16: connector `c`: field `type`: unknown connector type `ftp`",
        ];
        for e in expect {
            assert!(
                errs.iter().any(|x| x.starts_with(e)),
                "missing {e:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), expect.len(), "{errs:#?}");
    }

    #[test]
    fn unknown_connector_keys_name_the_field() {
        let errs = errors(
            "[[connectors]]\nname = \"w\"\ntype = \"webhook\"\nsignature = { secret = \"s\", hedaer = \"X\" }\n",
        );
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("t.toml:1: connector `w`: field `signature.hedaer`: unknown field"),
            "{errs:?}"
        );
    }

    #[test]
    fn syntax_errors_carry_a_line() {
        let errs = errors("listen = \"127.0.0.1:1\"\n\n[intake\n");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("t.toml:3:"), "{errs:?}");
    }

    #[test]
    fn kafka_output_and_topics_are_checked() {
        let errs = errors(
            "[output]\ntype = \"kafka\"\nbrokers = \"\"\noptions = { acks = \"1\" }\n[topics]\nclean = \"a b\"\nrejected = \"x\"\nmerged = \"x\"\n",
        );
        assert_eq!(errs.len(), 4, "{errs:#?}");
    }

    #[test]
    fn identity_and_api_settings_are_checked() {
        let e = errors(
            "[identity]\nname_similarity = 2.0\nblocked_values = [\"nokind\"]\nmax_people_per_key = { phone = 0 }\n\n[api]\ntoken = \"short\"\n\n[[connectors]]\nname = \"w\"\ntype = \"webhook\"\nidentity_fields = { phone = \"tel\", wechat = \"\" }\n",
        );
        for field in [
            "identity.name_similarity",
            "identity.blocked_values",
            "identity.max_people_per_key.phone",
            "api.token",
            "identity_fields.phone",
            "identity_fields.wechat",
        ] {
            assert!(
                e.iter().any(|m| m.contains(&format!("`{field}`"))),
                "{field} in {e:#?}"
            );
        }
        let e = errors("[identity.store]\ntype = \"postgres\"\n");
        assert!(e.iter().any(|m| m.contains("identity")), "{e:#?}");
    }

    #[test]
    fn secrets_never_print() {
        let s = load_str(
            "[[connectors]]\nname = \"w\"\ntype = \"webhook\"\nsignature = { secret = \"hunter2\" }\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
