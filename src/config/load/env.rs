//! `${ENV_VAR}` interpolation of the settings' strings.

/// Expands `${VAR}` and `${VAR:-default}`; `$$` stands for `$`. A `$` not followed by `{` or `$`
/// is kept, so secrets that contain `$` need no escaping unless followed by `{`.
pub(crate) fn interpolate_env(input: &str) -> Result<String, String> {
    interpolate_with(input, |name| std::env::var(name).ok())
}

fn interpolate_with(
    input: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    if !input.contains('$') {
        return Ok(input.to_owned());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err("unterminated `${` in value".into());
            };
            let expr = &body[..end];
            let (name, fallback) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`${{{expr}}}` is not a valid environment variable reference"
                ));
            }
            match (lookup(name), fallback) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(format!("environment variable {name} is not set")),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_expands_defaults_and_escapes() {
        let env = |n: &str| (n == "A").then(|| "x".to_string());
        assert_eq!(interpolate_with("p-${A}-q", env).unwrap(), "p-x-q");
        assert_eq!(interpolate_with("${B:-dflt}", env).unwrap(), "dflt");
        assert_eq!(interpolate_with("$$5 and $x", env).unwrap(), "$5 and $x");
        assert_eq!(
            interpolate_with("${B}", env).unwrap_err(),
            "environment variable B is not set"
        );
        assert!(interpolate_with("${A", env).is_err());
    }
}
