//! `/console`: the operator console, a page in the binary over the public HTTP API. Its assets
//! (`assets/console/`) are embedded at build time (debug builds too), so the gateway serves it
//! offline: no CDN, no other web server, no Node. The page signs in with the API token and asks
//! only what a script could ask (`/v1/...`, `/readyz`); serving the assets needs no token.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

#[derive(rust_embed::RustEmbed)]
#[folder = "assets/console/"]
struct Assets;

/// What a browser may do with the console's pages: only this gateway's scripts, styles and API.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// `GET /console`: to `/console/`, so that the page's relative links resolve under it.
pub async fn root() -> Redirect {
    Redirect::permanent("/console/")
}

/// `GET /console/`: the page.
pub async fn index(headers: HeaderMap) -> Response {
    asset("index.html", &headers)
}

/// `GET /console/{*path}`: one of its assets.
pub async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    asset(&path, &headers)
}

fn asset(path: &str, headers: &HeaderMap) -> Response {
    let Some(found) = Assets::get(path) else {
        return (StatusCode::NOT_FOUND, "no such console file").into_response();
    };
    // The content's hash as its entity tag: a browser revalidates each time (no-cache), and a
    // new build's assets are never mixed with an old page's.
    let etag = format!("\"{}\"", hex(&found.metadata.sha256_hash()[..16]));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, content_type(path))],
            found.data.into_owned(),
        )
            .into_response()
    };
    let h = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-cache"),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    response
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_content_type_and_the_page_names_only_embedded_files() {
        let page = String::from_utf8(Assets::get("index.html").unwrap().data.into_owned()).unwrap();
        for name in Assets::iter() {
            assert_ne!(content_type(&name), "application/octet-stream", "{name}");
        }
        for linked in ["app.css", "i18n.js", "app.js"] {
            assert!(page.contains(linked), "{linked}");
            assert!(Assets::get(linked).is_some(), "{linked} is embedded");
        }
    }

    fn text(name: &str) -> String {
        String::from_utf8(Assets::get(name).unwrap().data.into_owned()).unwrap()
    }

    /// Every word the page and the script name exists in both languages, and each language has
    /// the same words: a missing one would show its key.
    #[test]
    fn both_languages_have_every_word_the_console_uses() {
        let words = text("i18n.js");
        let (zh, en) = words
            .split_once("\n  en: {")
            .expect("an en block after the zh block");
        let key = regex::Regex::new(r#"(?m)^\s*"([^"]+)":"#).unwrap();
        let keys = |block: &str| -> std::collections::BTreeSet<String> {
            let all: Vec<String> = key.captures_iter(block).map(|c| c[1].to_owned()).collect();
            let set: std::collections::BTreeSet<String> = all.iter().cloned().collect();
            assert_eq!(
                all.len(),
                set.len(),
                "a word is defined twice (the last one wins)"
            );
            set
        };
        let (zh, en) = (keys(zh), keys(en));
        assert!(zh.len() > 100, "{}", zh.len());
        assert_eq!(
            zh.symmetric_difference(&en).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "words in one language only"
        );
        let attr = regex::Regex::new(r#"data-t(?:-label)?="([^"]+)""#).unwrap();
        let call = regex::Regex::new(r#"\bt\("([^"]+)""#).unwrap();
        let page = text("index.html");
        let script = text("app.js");
        let used: Vec<String> = attr
            .captures_iter(&page)
            .chain(call.captures_iter(&script))
            .map(|c| c[1].to_owned())
            .collect();
        assert!(used.len() > 100, "{}", used.len());
        for k in used {
            assert!(zh.contains(&k), "`{k}` has no words");
        }
    }
}
