//! The benchmark file of synthetic leads, shared by the normalization benches.

/// The leads of `$LEADS_FILE` (one JSON object a line), parsed; reading them is never timed.
pub fn read() -> Vec<serde_json::Value> {
    let path = std::env::var("LEADS_FILE").unwrap_or_else(|_| "/tmp/leads-1m.jsonl".into());
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}; generate it with scripts/bench/gen_leads.py"));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
