//! `leadgate validate`, the shipped example configs, and the published record schema.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::BIN;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Validates a record against the committed JSON Schema of `leads.clean` / `leads.rejected`.
pub fn assert_valid_lead_record(record: &Value) {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(repo("docs/schema/lead-record-1.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(record)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "record does not match the schema: {errors:#?}\n{record:#}"
    );
}

#[test]
fn committed_schemas_match_the_code() {
    for (file, generated) in leadgate::lead::json_schemas() {
        let path = repo(&format!("docs/schema/{file}"));
        let text = serde_json::to_string_pretty(&generated).unwrap() + "\n";
        if std::env::var_os("UPDATE_SCHEMA").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == text,
            "{} is stale: run `UPDATE_SCHEMA=1 cargo test committed_schemas` and commit it",
            path.display()
        );
    }
}

/// `leadgate validate --config <config>` with `env`: its exit code, stdout and stderr.
pub fn validate(config: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("validate")
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn every_shipped_config_and_connector_validates() {
    let env = [
        ("WEBFORM_SECRET", "x"),
        ("KAFKA_BROKERS", "127.0.0.1:9092"),
        (
            "SHARED_MYSQL_URL",
            "mysql://leadgate:secret@127.0.0.1:3306/leadgate",
        ),
        ("LEADGATE_API_TOKEN", "0123456789abcdef0123"),
        (
            "CRM_MYSQL_URL",
            "mysql://leadgate:secret@127.0.0.1:3306/crm",
        ),
        ("GOOGLE_ADS_KEY", "form-key-0123456789"),
        ("LEAD_API_TOKEN", "token"),
        ("META_APP_SECRET", "app-secret"),
        ("META_VERIFY_TOKEN", "verify-me"),
        ("META_PAGE_TOKEN", "EAAB-page-token"),
        ("META_APP_ID", "1234567890"),
        ("OCEANENGINE_TOKEN", "oe-token"),
        ("OCEANENGINE_SPI_SECRET", "oe-spi-secret"),
        ("LINKEDIN_CLIENT_SECRET", "li-secret"),
        ("LINKEDIN_TOKEN", "li-token"),
        ("TIKTOK_APP_SECRET", "tt-secret"),
        ("TIKTOK_ACCESS_TOKEN", "tt-token"),
        ("BAIDU_USER", "baidu-user"),
        ("BAIDU_TOKEN", "baidu-token"),
        ("TENCENT_ADS_TOKEN", "tencent-token"),
    ];
    let mut checked = 0;
    for entry in std::fs::read_dir(repo("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (code, out, err) = validate(&path, &env);
            assert_eq!(code, 0, "{}: {out}{err}", path.display());
            checked += 1;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo("connectors")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let wrapper = dir.path().join("settings.toml");
            std::fs::write(
                &wrapper,
                format!("include = [{:?}]\n", path.display().to_string()),
            )
            .unwrap();
            // A secret the list above does not name (a new platform's) gets a placeholder.
            let text = std::fs::read_to_string(&path).unwrap();
            let named: Vec<String> = text
                .split("${")
                .skip(1)
                .filter_map(|rest| rest.split_once('}'))
                .map(|(name, _)| name.split(":-").next().unwrap_or(name).to_owned())
                .filter(|name| env.iter().all(|(known, _)| known != name))
                .collect();
            let mut with: Vec<(&str, &str)> = env.to_vec();
            with.extend(named.iter().map(|n| (n.as_str(), "placeholder-secret")));
            let (code, out, err) = validate(&wrapper, &with);
            assert_eq!(code, 0, "{}: {out}{err}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 3, "the examples were found ({checked})");
}

#[test]
fn a_mysql_connector_is_checked_before_anything_connects() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[connectors]]\nname = \"crm\"\ntype = \"mysql\"\nurl = \"postgres://x\"\ntable = \"leads; DROP TABLE x\"\nbatch_size = 0\n\n\
         [[connectors]]\nname = \"crm2\"\ntype = \"mysql\"\nurl = \"mysql://u@h/db\"\nmode = \"binlog\"\nquery = \"SELECT * FROM leads\"\n",
    )
    .unwrap();
    let (code, _, err) = validate(&bad, &[]);
    assert_eq!(code, 2);
    let file = bad.display().to_string();
    for want in [
        format!("{file}:1: connector `crm`: field `url`: not a MySQL URL"),
        format!("{file}:1: connector `crm`: field `table`: a table name is"),
        format!("{file}:1: connector `crm`: field `timestamp_column`: incremental mode needs"),
        format!("{file}:1: connector `crm`: field `batch_size`: must be at least 1"),
        format!("{file}:8: connector `crm2`: field `query`: binlog mode follows one table"),
    ] {
        assert!(
            err.lines().any(|l| l.starts_with(&want)),
            "missing {want:?} in:\n{err}"
        );
    }
}

#[test]
fn platform_connectors_are_checked_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("platforms.toml");
    std::fs::write(
        &bad,
        "[[connectors]]\nname = \"fb\"\ntype = \"meta\"\napp_secret = \"\"\nverify_token = \"v\"\n\
         access_token = \"t\"\nforms = [\"form-1\"]\ngraph_url = \"ftp://graph\"\n\n\
         [[connectors]]\nname = \"tt\"\ntype = \"tiktok\"\naccess_token = \"t\"\n\n\
         [[connectors]]\nname = \"li\"\ntype = \"linkedin\"\nclient_secret = \"s\"\naccess_token = \"t\"\n\
         api_version = \"2024\"\nowner = \"507404993\"\n\n\
         [[connectors]]\nname = \"qq\"\ntype = \"tencent\"\naccess_token = \"t\"\naccount_id = 1\npage_size = 500\n\n\
         [[connectors]]\nname = \"oe\"\ntype = \"oceanengine\"\naccess_token = \"t\"\n\n\
         [[connectors]]\nname = \"api\"\ntype = \"http_pull\"\nurl = \"https://x\"\nrecords = \"/data\"\nid = \"/id\"\n\
         paging = { type = \"page\", param = \"/body/page\" }\n",
    )
    .unwrap();
    let (code, _, err) = validate(&bad, &[]);
    assert_eq!(code, 2, "{err}");
    let file = bad.display().to_string();
    for want in [
        format!("{file}:1: connector `fb`: field `app_secret`: must not be empty"),
        format!("{file}:1: connector `fb`: field `graph_url`: must be an http:// or https:// URL"),
        format!("{file}:1: connector `fb`: field `forms`: `form-1` is not a form id"),
        format!(
            "{file}:10: connector `tt`: field `advertiser_id`: downloads need the advertiser id"
        ),
        format!("{file}:10: connector `tt`: field `page_ids`: list the lead forms"),
        format!("{file}:15: connector `li`: field `api_version`: a LinkedIn API version is YYYYMM"),
        format!("{file}:15: connector `li`: field `owner`: an ad account URN"),
        format!("{file}:23: connector `qq`: field `page_size`: must be 1 to 200"),
        format!("{file}:30: connector `oe`: field `advertiser_ids`: list the advertisers to pull"),
        format!(
            "{file}:35: connector `api`: field `paging.param`: a parameter named by a JSON pointer is set in the body"
        ),
    ] {
        assert!(
            err.lines().any(|l| l.starts_with(&want)),
            "missing {want:?} in:\n{err}"
        );
    }
}

#[test]
fn validate_lists_every_error_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "listen = \"localhost\"\n\n[output]\ntype = \"kafka\"\n\n[[connectors]]\nname = \"web form\"\ntype = \"webhook\"\ndefault_region = \"ZZ\"\nsignature = { secret = \"${UNSET_FOR_LEADGATE_TEST}\" }\n",
    )
    .unwrap();
    let (code, _, err) = validate(&bad, &[]);
    assert_eq!(code, 2);
    let file = bad.display().to_string();
    for want in [
        format!("{file}: field `listen`:"),
        format!("{file}: field `output.brokers`: missing field"),
        format!("{file}:6: connector `web form`: field `name`:"),
        format!("{file}:6: connector `web form`: field `default_region`:"),
        format!(
            "{file}:6: connector `web form`: field `signature.secret`: environment variable UNSET_FOR_LEADGATE_TEST is not set"
        ),
    ] {
        assert!(
            err.lines().any(|l| l.starts_with(&want)),
            "missing {want:?} in:\n{err}"
        );
    }
    assert!(err.contains("5 error(s)"), "{err}");

    let (code, out, _) = validate(Path::new("/nonexistent/leadgate.toml"), &[]);
    assert_eq!(code, 2, "{out}");
}

#[test]
fn coordination_and_lifecycle_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[coordination]\ntype = \"mysql\"\nurl = \"mysql://root@127.0.0.1/x\"\nlease = \"1s\"\n\n\
         [lifecycle]\ncheck_every = \"10ms\"\n\n[topics]\nassignments = \"leads.clean\"\n",
    )
    .unwrap();
    let (code, _, err) = validate(&bad, &[]);
    assert_eq!(code, 2, "{err}");
    let file = bad.display().to_string();
    for want in [
        format!("{file}: field `coordination.lease`: must be at least 2s"),
        format!(
            "{file}: field `coordination`: gateways that share pull connectors need a shared identity store"
        ),
        format!("{file}: field `lifecycle.check_every`: must be at least 100ms"),
        format!(
            "{file}: field `topics`: the clean, rejected, merged, test, assignments, status and erasures topics must be seven different topics"
        ),
    ] {
        assert!(
            err.lines().any(|l| l.starts_with(&want)),
            "missing {want:?} in:\n{err}"
        );
    }
    std::fs::write(&bad, "[coordination]\ntype = \"zookeeper\"\n").unwrap();
    let (code, _, err) = validate(&bad, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("field `coordination"), "{err}");
}

#[test]
fn validate_without_a_config_checks_the_built_in_default() {
    let out = Command::new(BIN).arg("validate").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("built-in default: ok (1 connector(s))"));
}

#[test]
fn form_tool_connectors_and_mapping_paths_are_checked_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("forms.toml");
    std::fs::write(
        &bad,
        "[[connectors]]\nname = \"jf\"\ntype = \"jotform\"\nsigning_secret = \"s\"\n\n\
         [[connectors]]\nname = \"tf\"\ntype = \"typeform\"\nsigning_secret = \"\"\n\
         mapping = { email = [\"$.form_response.answers[field.ref=email\"], phone = [\"tel\", \"$x\"] }\n",
    )
    .unwrap();
    let (code, _, err) = validate(&bad, &[]);
    assert_eq!(code, 2, "{err}");
    let file = bad.display().to_string();
    for want in [
        format!(
            "{file}:1: connector `jf`: field `signing_secret`: Jotform does not sign its deliveries; set `token`"
        ),
        format!("{file}:6: connector `tf`: field `signing_secret`: must not be empty"),
        format!(
            "{file}:6: connector `tf`: field `mapping.email[0]`: `$.form_response.answers[field.ref=email` is not a path (at character 40: expected `]`)"
        ),
        format!(
            "{file}:6: connector `tf`: field `mapping.phone[1]`: `$x` is not a path (at character 2: expected `.` or `[`)"
        ),
    ] {
        assert!(
            err.lines().any(|l| l.starts_with(&want)),
            "missing {want:?} in:\n{err}"
        );
    }
}

/// kubernetes-validate, installed by scripts/test (or named by KUBERNETES_VALIDATE_BIN).
fn kubernetes_validate() -> PathBuf {
    if let Ok(p) = std::env::var("KUBERNETES_VALIDATE_BIN") {
        return p.into();
    }
    let data = std::env::var("XDG_DATA_HOME")
        .unwrap_or_else(|_| format!("{}/.local/share", std::env::var("HOME").unwrap()));
    let p = PathBuf::from(data).join("leadgate/kubernetes-validate-1.37.0/bin/kubernetes-validate");
    assert!(
        p.is_file(),
        "kubernetes-validate is not installed: run scripts/test, or set KUBERNETES_VALIDATE_BIN"
    );
    p
}

#[test]
fn the_kubernetes_manifests_are_valid_and_their_settings_load() {
    let dir = repo("deploy/k8s");
    let manifests = [
        "configmap.yaml",
        "secret.yaml",
        "service.yaml",
        "pdb.yaml",
        "statefulset.yaml",
    ];
    let kv = kubernetes_validate();
    for version in ["1.30.0", "1.37.0"] {
        let out = Command::new(&kv)
            .args(["--strict", "-k", version])
            .args(manifests.iter().map(|m| dir.join(m)))
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{version}: {said}");
        assert_eq!(
            said.matches(" passed for resource ").count(),
            6,
            "{version}: {said}"
        );
    }
    // The manifests as JSON, read by the validator's own Python (it has PyYAML).
    let python = kv.parent().unwrap().join("python3");
    let out = Command::new(&python)
        .arg("-c")
        .arg("import json, sys, yaml; print(json.dumps([d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f))]))")
        .args(manifests.iter().map(|m| dir.join(m)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("a {k}"))
    };
    let set = kind("StatefulSet");
    let pod = &set["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["requests"]["memory"].is_string());
    // Long enough for the sources' 10 s and delivery's 10 s of a graceful stop.
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() >= 30);
    assert_eq!(
        set["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "data"
    );
    assert_eq!(kind("PodDisruptionBudget")["spec"]["maxUnavailable"], 1);

    // The ConfigMap's settings load with the Secret's variables, as the pod would run them.
    let cfg = tempfile::tempdir().unwrap();
    let data = &kind("ConfigMap")["data"];
    for (name, text) in data.as_object().unwrap() {
        let text = text
            .as_str()
            .unwrap()
            .replace("/etc/leadgate/", &format!("{}/", cfg.path().display()));
        std::fs::write(cfg.path().join(name), text).unwrap();
    }
    let secret = kind("Secret")["stringData"].as_object().unwrap();
    let env: Vec<(&str, &str)> = secret
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
        .collect();
    let (code, out, err) = validate(&cfg.path().join("leadgate.toml"), &env);
    assert_eq!(code, 0, "{out}{err}");
}
