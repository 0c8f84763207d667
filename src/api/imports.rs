//! `POST /v1/imports`, `GET /v1/imports/{id}`, `GET /v1/imports/{id}/rejected.csv`: a file
//! imported through the running gateway (see [`crate::imports`]). Token-protected.

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::auth::Need;
use super::{ApiError, AppState, auth};
use crate::sources::file::Format;

/// The largest upload taken (413 past it).
const MAX_UPLOAD: u64 = 4 << 30;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// The connector the leads are attributed to (default `import`).
    #[serde(default)]
    source: Option<String>,
    /// The file's name (for its format); a multipart upload gives its own.
    #[serde(default)]
    file_name: Option<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    sheet: Option<String>,
}

fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "import.invalid",
        Some(field),
        message.into(),
    )
}

fn unavailable(why: impl std::fmt::Display) -> ApiError {
    tracing::error!(%why, "an upload could not be stored");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "import.unavailable",
        None,
        "the upload could not be stored; retry later",
    )
    .retry_after(5)
}

pub async fn upload(
    State(st): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<UploadQuery>, QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    auth::require(&st, &headers, Need::Admin)?;
    let Query(q) = query.map_err(|e| bad("query", e.body_text()))?;
    let source = q.source.unwrap_or_else(|| "import".to_owned());
    if source.trim().is_empty() || source.len() > 200 {
        return Err(bad("source", "a connector name of 1 to 200 characters"));
    }
    if let Some(f) = &q.format
        && Format::named(f).is_none()
    {
        return Err(bad(
            "format",
            format!("`{f}` is not a format: use csv, jsonl or sheet"),
        ));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let multipart = content_type.starts_with("multipart/form-data");
    let mut name = q.file_name.clone();
    // Refused before the bytes are stored: without `format`, the name must say it.
    let formatted = |name: Option<&str>| {
        let format = Format::of_upload(q.format.as_deref(), name).map_err(|e| bad("format", e))?;
        match q.sheet {
            Some(_) if format != Format::Sheet => Err(bad(
                "sheet",
                format!(
                    "`sheet` names a sheet of a spreadsheet, and this upload is read as {}",
                    format.label()
                ),
            )),
            _ => Ok(()),
        }
    };
    if !multipart {
        formatted(name.as_deref())?;
    }
    let id = crate::imports::Imports::new_id();
    let path = imports(&st)?.upload_path(&id, "upload.part");
    let mut file = tokio::fs::File::create(&path).await.map_err(unavailable)?;
    // Any way the upload fails (cut, malformed, refused, the client gone and this request
    // dropped) leaves no partial file behind.
    let mut partial = Partial(Some(path.clone()));
    let received = async {
        if multipart {
            let boundary = multer::parse_boundary(&content_type).map_err(|e| {
                bad(
                    "Content-Type",
                    format!("a multipart upload needs its boundary: {e}"),
                )
            })?;
            let mut parts = multer::Multipart::new(body.into_data_stream(), boundary);
            let mut written = None;
            while let Some(mut part) = parts
                .next_field()
                .await
                .map_err(|e| bad("body", format!("the multipart body does not read: {e}")))?
            {
                if part.name() != Some("file") {
                    continue;
                }
                if name.is_none() {
                    name = part.file_name().map(str::to_owned);
                }
                formatted(name.as_deref())?;
                written = Some(copy(&mut part, &mut file, "file").await?);
                break;
            }
            written.ok_or_else(|| bad("file", "the multipart body has no `file` part"))
        } else {
            copy(&mut body.into_data_stream(), &mut file, "body").await
        }
    }
    .await
    .and_then(|written| match written {
        0 => Err(bad("file", "the upload is empty")),
        n if n > MAX_UPLOAD => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "import.too_large",
            Some("file"),
            format!("an upload is at most {MAX_UPLOAD} bytes"),
        )),
        n => Ok(n),
    });
    let written = received?;
    file.sync_all().await.map_err(unavailable)?;
    drop(file);
    let file_name = name.unwrap_or_else(|| "upload".to_owned());
    // Stored whole under its own extension (a spreadsheet is opened by it).
    let stored = imports(&st)?.upload_path(&id, &file_name);
    tokio::fs::rename(&path, &stored)
        .await
        .map_err(unavailable)?;
    partial.0 = None;
    let path = stored;
    let status = imports(&st)?.start(
        id,
        path,
        written,
        crate::imports::Request {
            source,
            file_name,
            sheet: q.sheet,
            format: q.format,
        },
    );
    let location = format!("/v1/imports/{}", status.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        axum::Json(status),
    )
        .into_response())
}

/// The gateway's imports, or 503 when this server has none.
fn imports(st: &AppState) -> Result<&crate::imports::Imports, ApiError> {
    st.imports.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "import.unavailable",
            None,
            "this server takes no imports",
        )
    })
}

/// An upload being received: removed when dropped unless it was kept (`None`).
struct Partial(Option<std::path::PathBuf>);

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Writes `stream` to `file`: the bytes written, or past [`MAX_UPLOAD`] one more than it (the
/// caller refuses the upload). `field` names the part in a cut upload's error.
async fn copy<S, B, E>(
    stream: &mut S,
    file: &mut tokio::fs::File,
    field: &str,
) -> Result<u64, ApiError>
where
    S: futures::Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| bad(field, format!("the upload was cut: {e}")))?;
        let chunk = chunk.as_ref();
        n += chunk.len() as u64;
        if n > MAX_UPLOAD {
            return Ok(n);
        }
        file.write_all(chunk).await.map_err(unavailable)?;
    }
    Ok(n)
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "import.not_found",
        Some("id"),
        format!("no import `{id}`"),
    )
}

pub async fn read(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    auth::require(&st, &headers, Need::Read)?;
    let status = imports(&st)?.get(&id).ok_or_else(|| not_found(&id))?;
    Ok(axum::Json(status).into_response())
}

pub async fn report(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = auth::require(&st, &headers, Need::Pii)?;
    imports(&st)?.get(&id).ok_or_else(|| not_found(&id))?;
    let Some(path) = imports(&st)?.report(&id) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "import.no_rejected_rows",
            Some("id"),
            format!("import `{id}` has no rejected rows (yet)"),
        ));
    };
    let bytes = tokio::fs::read(&path).await.map_err(unavailable)?;
    let bytes = crate::imports::report_text(bytes).map_err(unavailable)?;
    let mut read = crate::access::Access::new(
        &caller.name,
        "import.report",
        "/v1/imports/{id}/rejected.csv",
    );
    read.import_id = Some(id.clone());
    super::access::record(&st, read).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"rejected-{id}.csv\""),
            ),
        ],
        bytes,
    )
        .into_response())
}
