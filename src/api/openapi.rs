//! `GET /openapi.json`: the API described as OpenAPI 3.1. The request and response bodies of the
//! assignment API are JSON Schemas generated from the same types the server parses, so the
//! document cannot drift from the code.

use axum::Json;
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use crate::assign::model::{Owner, Rule, Team};
use crate::assign::{AuditEntry, RuleTrace};
use crate::sources::status::ConnectorStatus;

/// The document, built once per request (it is small).
pub async fn document() -> Json<Value> {
    Json(openapi())
}

fn error(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

pub fn openapi() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let rule = generator.subschema_for::<Rule>().to_value();
    let owner = generator.subschema_for::<Owner>().to_value();
    let team = generator.subschema_for::<Team>().to_value();
    let segment = generator
        .subschema_for::<crate::assign::segments::Segment>()
        .to_value();
    let score_group = generator
        .subschema_for::<crate::assign::segments::ScoreGroup>()
        .to_value();
    let audit = generator.subschema_for::<AuditEntry>().to_value();
    let trace = generator.subschema_for::<RuleTrace>().to_value();
    let status = generator.subschema_for::<ConnectorStatus>().to_value();
    let import_status = generator
        .subschema_for::<crate::imports::Status>()
        .to_value();
    let counts = generator.subschema_for::<crate::stats::Counts>().to_value();
    let mut schemas = generator.take_definitions(true);
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "description": "stable, machine-readable"},
                    "field": {"type": ["string", "null"], "description": "the path of the bad field or header"},
                    "message": {"type": "string"},
                    "errors": {"type": "array", "items": {"type": "object", "properties": {
                        "field": {"type": "string"}, "message": {"type": "string"}}}}
                }
            }}
        }),
    );
    let quarantined = json!({"type": "object", "properties": {
        "seq": {"type": "integer"}, "stage": {"enum": ["intake", "decode", "process"]},
        "reason": {"type": "string"}, "quarantined_at": {"type": "string"},
        "event_id": {"type": ["string", "null"]}, "connector": {"type": ["string", "null"]},
        "received_at": {"type": ["string", "null"]}, "record": {"type": "string"}}});
    // `?after=&limit=` of a paged listing (`api::Page`).
    let paged = json!([
        {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}
    ]);
    let security = json!([{"bearer": []}]);
    let rejection = json!({"type": "object", "properties": {
        "seq": {"type": "integer"}, "event_id": {"type": "string"},
        "connector": {"type": "string"}, "received_at": {"type": "string"},
        "reasons": {"type": "array", "items": {"type": "object", "properties": {
            "field": {"type": "string"}, "code": {"type": "string"}, "message": {"type": "string"}}}},
        "fields": {"type": "object", "additionalProperties": {"type": "string"},
                   "description": "the input's fields by dotted path, each value masked (138****8000, z***@example.com, 王*)"}}});
    let auth_errors = |mut responses: Value| {
        responses["401"] = error("no or wrong bearer token (when an `[api]` token is set)");
        responses["403"] =
            error("the token lacks the scope this needs (docs/privacy.md#scoped-access)");
        responses
    };
    let stats_body = json!({"type": "object", "properties": {
                            "interval": {"enum": ["hour", "day"]},
                            "timezone": {"type": "string"},
                            "from": {"type": "string"}, "to": {"type": "string"},
                            "group_by": {"type": "array", "items": {"enum": ["connector", "campaign", "form"]}},
                            "totals": counts,
                            "rows": {"type": "array", "items": {"type": "object", "properties": {
                                "start": {"type": "string", "description": "the hour's or day's start, RFC 3339 in the stats zone"},
                                "connector": {"type": "string"}, "campaign": {"type": "string"}, "form": {"type": "string"},
                                "counts": counts}}}}});
    let stats_responses = json!({
        "200": {"description": "the rows, oldest first", "content": {
            "application/json": {"schema": stats_body},
            "text/csv": {"schema": {"type": "string"}}}},
        "400": error("a malformed query: the field names the parameter"),
        "503": error("the journal could not be read")
    });
    let stats = json!({"get": {
        "summary": "效果分析: leads received, clean, rejected (by reason), duplicate, merged, test and assigned (by owner), per hour or day, grouped by connector, campaign and form",
        "description": "Counted once each lead is delivered. Campaign: `utm_campaign`, else a platform's `campaign_id` (Meta, Google, TikTok, LinkedIn), `promotion_id` (巨量引擎), `adgroup_id` (腾讯广告). Form: `form_id` and the like. Days are calendar days in `[stats] timezone` (Asia/Shanghai by default). `format=csv` (or `Accept: text/csv`) answers a CSV for Excel (UTF-8 with a byte order mark).",
        "security": security,
        "parameters": [
            {"name": "group_by", "in": "query", "description": "any of connector, campaign, form, comma-separated (default connector; empty: totals)", "schema": {"type": "string"}},
            {"name": "interval", "in": "query", "schema": {"enum": ["hour", "day"], "default": "day"}},
            {"name": "from", "in": "query", "description": "RFC 3339 or a date (its start in the stats zone); default: 30 days (hour: 48 hours) before `to`", "schema": {"type": "string"}},
            {"name": "to", "in": "query", "description": "RFC 3339 or a date, exclusive; default now", "schema": {"type": "string"}},
            {"name": "connector", "in": "query", "description": "only this connector", "schema": {"type": "string"}},
            {"name": "format", "in": "query", "schema": {"enum": ["json", "csv"], "default": "json"}}
        ],
        "responses": auth_errors(stats_responses)
    }});
    let funnel_row = generator
        .subschema_for::<crate::assign::lifecycle::FunnelRow>()
        .to_value();
    let funnel = json!({"get": {
        "summary": "The conversion funnel (received → assigned → contacted → qualified → converted, and lost), with rates, by connector, campaign, segment or owner",
        "description": "Counts people (lead_id), from the assignment store (shared by every gateway on MySQL): a person counts once under each connector, campaign and segment they came through, in each stage they reached (a `converted` report also counts contacted and qualified). An owner counts the people given to them and the stages reached while they owned them. Stages after `assigned` come from CRM status reports (`POST /v1/leads/{lead_id}/status` or the `[topics] status` topic). Leads are counted once assignment rules exist.",
        "security": security,
        "parameters": [
            {"name": "by", "in": "query", "schema": {"enum": crate::assign::lifecycle::DIMENSIONS, "default": "campaign"}}
        ],
        "responses": auth_errors(json!({
            "200": ok("one row per value", json!({"type": "object", "properties": {
                "by": {"type": "string"},
                "stages": {"type": "array", "items": {"type": "string"}},
                "rows": {"type": "array", "items": funnel_row}}})),
            "400": error("an unknown grouping: the field is `by`"),
            "503": error("the assignment store could not be read")
        }))
    }});
    let collection = |name: &str, schema: &Value| {
        json!({
            "get": {
                "summary": format!("List {name}"),
                "security": security,
                "responses": auth_errors(json!({"200": ok("all of them", json!({"type": "array", "items": schema}))})),
            },
            "post": {
                "summary": format!("Create one of the {name}"),
                "security": security,
                "requestBody": body(schema.clone()),
                "responses": auth_errors(json!({
                    "201": ok("created; the ETag header carries its version", schema.clone()),
                    "400": error("not JSON"),
                    "409": error("the id exists"),
                    "422": error("a field is invalid; `field` names its path"),
                })),
            }
        })
    };
    let item = |name: &str, schema: &Value| {
        let id = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
            {"name": "If-Match", "in": "header", "required": false, "schema": {"type": "string"},
             "description": "the ETag read; the write fails with 412 if it changed since"}]);
        json!({
            "parameters": id,
            "get": {
                "summary": format!("Read one of the {name}"),
                "security": security,
                "responses": auth_errors(json!({"200": ok("it, with its ETag", schema.clone()), "404": error("no such id")})),
            },
            "put": {
                "summary": format!("Create or replace one of the {name}"),
                "security": security,
                "requestBody": body(schema.clone()),
                "responses": auth_errors(json!({
                    "200": ok("replaced", schema.clone()),
                    "201": ok("created", schema.clone()),
                    "400": error("not JSON, or a malformed If-Match"),
                    "404": error("If-Match given for an id that does not exist"),
                    "412": error("If-Match does not match the current version"),
                    "422": error("a field is invalid; `field` names its path"),
                })),
            },
            "delete": {
                "summary": format!("Delete one of the {name}"),
                "security": security,
                "responses": auth_errors(json!({
                    "204": {"description": "deleted"},
                    "400": error("a malformed If-Match"),
                    "404": error("no such id"),
                    "409": error("still used by a team or rule"),
                    "412": error("If-Match does not match the current version"),
                })),
            }
        })
    };
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "leadgate",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Lead intake (webhooks), lead explanations and assignment rules. Records published to Kafka are described in docs/record-schema.md."
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "An `[api]` token. Scopes: `operator` reads (leads masked), `admin` changes (and every scope), `pii:read` personal data in clear (audited), `privacy` erasures and the access audit. See docs/privacy.md#scoped-access."}}
        },
        "paths": {
            "/v1/webhooks/{connector}": {"post": {
                "summary": "Ingest a lead (a JSON object, a urlencoded form or multipart/form-data); Meta connectors answer 200 once the notified lead ids are stored",
                "parameters": [{"name": "connector", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "token", "in": "query", "schema": {"type": "string"}, "description": "a form tool connector's `token`, for tools that cannot sign"}],
                "requestBody": {"required": true, "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
                    "multipart/form-data": {"schema": {"type": "object"}}}},
                "responses": {
                    "202": ok("journaled; it will be delivered", json!({"type": "object", "properties": {
                        "event_id": {"type": "string"}, "received_at": {"type": "string"}, "status": {"type": "string"}}})),
                    "400": error("malformed body"), "401": error("bad signature"), "404": error("no such connector"),
                    "413": error("too large"), "415": error("unsupported content type"),
                    "429": error("rate limited"), "503": error("backlog full")
                }
            }, "get": {
                "summary": "A platform's subscription handshake (Meta: hub.mode, hub.verify_token, hub.challenge; LinkedIn: challengeCode)",
                "parameters": [{"name": "connector", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "hub.challenge", "in": "query", "schema": {"type": "string"}},
                    {"name": "hub.verify_token", "in": "query", "schema": {"type": "string"}},
                    {"name": "hub.mode", "in": "query", "schema": {"type": "string"}},
                    {"name": "challengeCode", "in": "query", "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "Meta: the challenge, as text/plain; LinkedIn: {challengeCode, challengeResponse}", "content": {"text/plain": {"schema": {"type": "string"}}, "application/json": {"schema": {"type": "object"}}}},
                    "400": error("no challengeCode"), "403": error("the verify token does not match"), "404": error("no such connector"),
                    "405": error("the connector has no handshake")
                }
            }},
            "/v1/leads": {"get": {
                "summary": "Find the people a phone number or an email address belongs to (normalized as a lead's: any format, full-width digits), each explained as by /v1/leads/{lead_id}",
                "security": security,
                "parameters": [
                    {"name": "phone", "in": "query", "schema": {"type": "string"}},
                    {"name": "email", "in": "query", "schema": {"type": "string"}}
                ],
                "responses": auth_errors(json!({
                    "200": ok("at most 20 people", json!({"type": "object", "properties": {
                        "leads": {"type": "array", "items": {"type": "object"}},
                        "truncated": {"type": "boolean", "description": "more than 20 people share the key"}}})),
                    "400": error("neither phone nor email, or another parameter"),
                    "422": error("not a phone number or an address a lead could be identified by")
                }))
            }},
            "/v1/leads/{lead_id}": {"get": {
                "summary": "Explain the person behind a lead id",
                "security": security,
                "parameters": [{"name": "lead_id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": auth_errors(json!({"200": ok("the cluster", json!({"type": "object"})), "404": error("unknown lead id")}))
            }},
            "/v1/connectors": {"get": {
                "summary": "Every connector's health: state, last success and error, lag, snapshot progress, checkpoint",
                "security": security,
                "responses": auth_errors(json!({"200": ok("all connectors", json!({"type": "object", "properties": {
                    "connectors": {"type": "array", "items": status}}}))}))
            }},
            "/v1/connectors/{name}": {"get": {
                "summary": "One connector's health",
                "security": security,
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": auth_errors(json!({"200": ok("the connector", status.clone()), "404": error("no such connector")}))
            }},
            "/v1/assignment/rules": collection("rules", &rule),
            "/v1/assignment/rules/{id}": item("rules", &rule),
            "/v1/assignment/owners": collection("owners", &owner),
            "/v1/assignment/owners/{id}": item("owners", &owner),
            "/v1/assignment/teams": collection("teams", &team),
            "/v1/assignment/teams/{id}": item("teams", &team),
            "/v1/assignment/preview": {"post": {
                "summary": "What a lead would get, which rule decided, and why earlier rules did not",
                "security": security,
                "requestBody": body(json!({
                    "type": "object", "required": ["lead"], "additionalProperties": false,
                    "properties": {
                        "lead": {"type": "object", "description": "the lead's fields as a webhook would send them"},
                        "connector": {"type": "string", "description": "whose field mapping to use"},
                        "lead_id": {"type": "string", "description": "the person, for the sticky strategy"},
                        "received_at": {"type": "string", "format": "date-time", "description": "for working-hours conditions; default now"}
                    }
                })),
                "responses": auth_errors(json!({
                    "200": ok("the decision and the trace", json!({"type": "object", "properties": {
                        "assignment": {"type": ["object", "null"]},
                        "rules": {"type": "array", "items": trace},
                        "segments": {"type": ["array", "null"]}, "score": {"type": ["object", "null"]}, "not_applied": {"type": "array"},
                        "contact": {"type": "object"}}})),
                    "400": error("not JSON"),
                    "422": error("a field is invalid")
                }))
            }},
            "/v1/assignment/audit": {"get": {
                "summary": "Changes to rules, owners and teams, oldest first (`after`), or newest first (`order=newest`, `before`)",
                "security": security,
                "parameters": [
                    {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "order", "in": "query", "schema": {"enum": ["oldest", "newest"]}},
                    {"name": "before", "in": "query", "description": "newest first: the entries before this seq", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}
                ],
                "responses": auth_errors(json!({
                    "200": ok("a page of entries", json!({"type": "object", "properties": {
                        "entries": {"type": "array", "items": audit},
                        "next_after": {"type": ["integer", "null"], "description": "oldest first: the `after` of the next page"},
                        "next_before": {"type": ["integer", "null"], "description": "newest first: the `before` of the next page; null after the oldest"}}})),
                    "400": error("a malformed query")
                }))
            }},
            "/v1/rejections": {"get": {
                "summary": "The latest rejected leads this gateway delivered (the last 500 since it started), newest first, with their reasons and their input fields masked",
                "security": security,
                "parameters": [
                    {"name": "connector", "in": "query", "schema": {"type": "string"}},
                    {"name": "before", "in": "query", "description": "the entries before this seq", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}}
                ],
                "responses": auth_errors(json!({
                    "200": ok("a page of rejected leads", json!({"type": "object", "properties": {
                        "entries": {"type": "array", "items": rejection},
                        "next_before": {"type": ["integer", "null"]}}})),
                    "400": error("a malformed query")
                }))
            }},
            "/v1/quarantine": {"get": {
                "summary": "Events set aside for good (undecodable, nested too deep, failing alone), oldest first, with stage, reason and the journal record",
                "security": security,
                "parameters": paged,
                "responses": auth_errors(json!({
                    "200": ok("a page of entries", json!({"type": "object", "properties": {
                        "total": {"type": "integer"},
                        "entries": {"type": "array", "items": quarantined},
                        "next_after": {"type": ["integer", "null"]}}})),
                    "400": error("a malformed query")
                }))
            }},
            "/v1/stats": stats,
            "/v1/imports": {"post": {
                "summary": "Import a CSV, JSON-lines or spreadsheet file through the running gateway",
                "description": "The body is the file (or a multipart/form-data body with a `file` part). It is streamed to disk, then its rows are journaled in batches with the import's position and delivered like any lead. The same file uploaded again goes on where an earlier upload stopped, or, imported to its end, journals nothing. Answers 202 with the import's status; follow it at `Location`.",
                "security": security,
                "parameters": [
                    {"name": "source", "in": "query", "description": "the connector the leads are attributed to (default `import`)", "schema": {"type": "string"}},
                    {"name": "file_name", "in": "query", "description": "the file's name, for its format (a multipart part gives its own)", "schema": {"type": "string"}},
                    {"name": "format", "in": "query", "schema": {"enum": ["csv", "jsonl", "sheet"]}},
                    {"name": "sheet", "in": "query", "description": "a spreadsheet's sheet (default the first)", "schema": {"type": "string"}}
                ],
                "requestBody": {"required": true, "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    "text/csv": {"schema": {"type": "string"}},
                    "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}}}},
                "responses": auth_errors(json!({
                    "202": ok("the import, queued", import_status.clone()),
                    "400": error("a bad parameter or an empty upload: the field names it"),
                    "413": error("the upload is larger than 4 GiB"),
                    "503": error("the upload could not be stored")
                }))
            }},
            "/v1/imports/{id}": {"get": {
                "summary": "An import's progress, then its summary",
                "security": security,
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": auth_errors(json!({
                    "200": ok("the import", import_status),
                    "404": error("no such import")
                }))
            }},
            "/v1/imports/{id}/rejected.csv": {"get": {
                "summary": "The rows of an import that would be rejected: line, reasons and the row's own columns (CSV for Excel)",
                "security": security,
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": auth_errors(json!({
                    "200": {"description": "the report", "content": {"text/csv": {"schema": {"type": "string"}}}},
                    "404": error("no such import, or no rejected rows")
                }))
            }},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "running"}}}},
            "/readyz": {"get": {"summary": "Readiness", "responses": {
                "200": {"description": "ready"}, "503": {"description": "backlog full or delivery failing"}}}},
            "/metrics": {"get": {
                "summary": "Prometheus metrics",
                "description": "The Prometheus text exposition format (docs/operations.md lists every metric). No token: it carries no personal data, only counts by connector, topic, code and route.",
                "responses": {
                    "200": {"description": "the metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "404": error("metrics are off ([metrics] enabled = false)")
                }
            }}
        }
    });
    doc["paths"]["/v1/leads/{lead_id}/status"] = json!({"post": {
        "summary": "What a CRM says became of a lead: contacted, qualified, converted, lost or closed. Idempotent by status_id; the newest `at` wins; a closing status frees a slot of the lead's owner (capacity), reopening takes it again",
        "security": security,
        "parameters": [{"name": "lead_id", "in": "path", "required": true, "schema": {"type": "string"}}],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object",
            "required": ["status_id", "status"], "additionalProperties": false, "properties": {
                "lead_id": {"type": "string", "description": "optional; must be the lead in the URL"},
                "status_id": {"type": "string", "minLength": 1, "maxLength": 128},
                "status": {"enum": ["contacted", "qualified", "converted", "lost", "closed"]},
                "at": {"type": "string", "description": "RFC 3339; default now"}}}}}},
        "responses": auth_errors(json!({
            "200": ok("the lead's status now", json!({"type": "object", "properties": {
                "lead_id": {"type": "string"}, "status": {"type": "string"}, "at": {"type": "string"},
                "applied": {"type": "boolean"}, "duplicate": {"type": "boolean"},
                "owner": {"type": ["string", "null"]}, "open_leads": {"type": ["integer", "null"]}}})),
            "400": error("not JSON"), "422": error("a field is invalid")}))
    }});
    doc["paths"]["/v1/stats/funnel"] = funnel;
    doc["paths"]["/v1/assignment/segments"] = collection("segments", &segment);
    doc["paths"]["/v1/assignment/segments/{id}"] = item("segments", &segment);
    doc["paths"]["/v1/assignment/scores"] = collection("scores", &score_group);
    doc["paths"]["/v1/assignment/scores/{id}"] = item("scores", &score_group);
    // Operator actions on connectors (kept out of the literal above: one macro call that big
    // exceeds the macro recursion limit).
    let named =
        json!([{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}]);
    doc["paths"]["/v1/whoami"] = json!({"get": {
        "summary": "The caller's token: its name and scopes, and whether it reads personal data in clear",
        "security": security,
        "responses": auth_errors(json!({"200": ok("the token", json!({"type": "object", "properties": {
            "name": {"type": "string"}, "scopes": {"type": "array", "items": {"type": "string"}},
            "reads_pii": {"type": "boolean"}}}))}))
    }});
    doc["paths"]["/v1/access-audit"] = json!({"get": {
        "summary": "Every answer that carried personal data in clear (token, time, action, route, lead or event ids; no personal data), newest first. Scope `privacy`",
        "security": security,
        "parameters": [
            {"name": "before", "in": "query", "schema": {"type": "integer", "minimum": 0}},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}
        ],
        "responses": auth_errors(json!({"200": ok("a page of reads", json!({"type": "object", "properties": {
            "entries": {"type": "array", "items": {"type": "object", "properties": {
                "seq": {"type": "integer"}, "at": {"type": "string"}, "token": {"type": "string"},
                "action": {"enum": ["lead.read", "lead.search", "quarantine.read", "import.report"]},
                "route": {"type": "string"}, "lead_ids": {"type": "array", "items": {"type": "string"}},
                "event_ids": {"type": "array", "items": {"type": "string"}}, "more": {"type": "integer"},
                "import_id": {"type": "string"}}}},
            "next_before": {"type": ["integer", "null"]}}})), "400": error("a malformed query")}))
    }});
    let erasure = json!({"type": "object", "properties": {
        "subject_request_id": {"type": "string"}, "subject_request_type": {"const": "erasure"},
        "request_status": {"enum": ["pending", "in_progress", "completed"]},
        "submitted_time": {"type": ["string", "null"]}, "received_time": {"type": "string"},
        "completed_time": {"type": ["string", "null"]}, "requested_by": {"type": "string"},
        "identities": {"type": "array", "items": {"type": "object", "properties": {
            "identity_type": {"enum": ["phone", "email", "lead_id"]},
            "identity_format": {"enum": ["raw", "sha256"]}}}},
        "lead_ids": {"type": "array", "items": {"type": "string"}},
        "removed": {"type": ["object", "null"], "properties": {
            "people": {"type": "integer"}, "events": {"type": "integer"},
            "journal_events": {"type": "integer"}, "output_records": {"type": "integer"},
            "tombstones": {"type": "integer"}}}}});
    doc["paths"]["/v1/erasures"] = json!({
        "post": {
            "summary": "Ask for a person's erasure (OpenDSR-style). Their identities are suppressed before the answer; the erasure is carried out in the background (GET it to follow). Scope `privacy`",
            "security": security,
            "requestBody": {"required": true, "content": {"application/json": {"schema": {
                "type": "object", "required": ["subject_identities"], "additionalProperties": false,
                "properties": {
                    "subject_request_id": {"type": "string", "maxLength": 128, "pattern": "^[A-Za-z0-9._:-]+$", "description": "made up when absent"},
                    "subject_request_type": {"const": "erasure"},
                    "submitted_time": {"type": "string", "format": "date-time"},
                    "api_version": {"type": "string"}, "property_id": {"type": "string"},
                    "subject_identities": {"type": "array", "minItems": 1, "maxItems": 100, "items": {
                        "type": "object", "required": ["identity_type", "identity_value"], "additionalProperties": false,
                        "properties": {
                            "identity_type": {"enum": ["phone_number", "phone", "email", "lead_id"]},
                            "identity_value": {"type": "string", "minLength": 1},
                            "identity_format": {"enum": ["raw", "sha256"], "description": "sha256: the hex SHA-256 of the E.164 phone number (with +) or of the lower-case address"}}}}}}}}},
            "responses": auth_errors(json!({
                "202": ok("received: pending", erasure.clone()),
                "200": ok("the same request again: its status", erasure.clone()),
                "400": error("not JSON, or not an erasure request"),
                "409": error("the request id was used with other identities"),
                "422": error("an identity that cannot be used, named by its field")}))
        },
        "get": {
            "summary": "Erasure requests, newest first, with the size of the suppression list. Scope `privacy`",
            "security": security,
            "parameters": [
                {"name": "before", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}
            ],
            "responses": auth_errors(json!({"200": ok("a page of requests", json!({"type": "object", "properties": {
                "erasures": {"type": "array", "items": erasure.clone()},
                "next_before": {"type": ["integer", "null"]},
                "suppressed": {"type": "integer"}}})), "400": error("a malformed query")}))
        }
    });
    doc["paths"]["/v1/erasures/{id}"] = json!({"get": {
        "summary": "One erasure request and what it removed. Scope `privacy`",
        "security": security,
        "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
        "responses": auth_errors(json!({"200": ok("its status", erasure), "404": error("no such request")}))
    }});
    let pii = json!({"name": "pii", "in": "query", "description": "`masked` (always masked) or `clear` (403 without pii:read); default: clear with pii:read, masked otherwise", "schema": {"enum": ["masked", "clear"]}});
    for path in ["/v1/leads", "/v1/leads/{lead_id}"] {
        if let Some(params) = doc["paths"][path]["get"]["parameters"].as_array_mut() {
            params.push(pii.clone());
        }
    }
    doc["paths"]["/v1/connectors/{name}/pause"] = json!({"post": {
        "summary": "Pause a connector that reads from an API or a database: it stops at the end of the poll (or page) under way and reads nothing until resumed; kept over a restart. Its webhook, if any, still takes leads",
        "security": security,
        "parameters": named,
        "responses": auth_errors(json!({"200": ok("its health, state `paused`", status.clone()),
            "404": error("unknown connector"), "409": error("a webhook or file connector: nothing to pause")}))
    }});
    doc["paths"]["/v1/connectors/{name}/resume"] = json!({"post": {
        "summary": "Resume a paused connector: it reads again from its checkpoint",
        "security": security,
        "parameters": named,
        "responses": auth_errors(json!({"200": ok("its health", status),
            "404": error("unknown connector"), "409": error("a webhook or file connector: nothing to resume")}))
    }});
    doc
}
