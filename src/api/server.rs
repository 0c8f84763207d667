//! The HTTP server around the router. axum's own `serve` sets no timeouts, so a client that
//! sends its headers or body slowly, or never, held its connection for good. Here:
//! - hyper's HTTP/1 with a header-read timeout, which also closes idle keep-alive connections;
//! - a deadline for each request's body, answered `408 body.timeout`;
//! - a cap on connections served at once (the rest are closed as they arrive), so file
//!   descriptors are not used up;
//! - every error answer is the API's JSON (axum's own rejections are plain text or empty), and a
//!   request whose body was not read to its end is answered with `Connection: close`, so the
//!   client does not send its next request on a connection the server then drops.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::ApiError;
use crate::config::HttpSettings;

/// How long shutdown waits for requests in flight before it lets go of them.
const DRAIN: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown` resolves, then finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &HttpSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut refused = 0u64;
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    refused,
                    max_connections = limits.max_connections,
                    "too many connections at once; closing new ones ([http] max_connections)"
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {DRAIN:?}; stopping anyway");
    }
    Ok(())
}

/// Out of file descriptors (or another failure of `accept`): wait a little rather than spin.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept a connection");
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// What the guard learns of a request body as the handler reads it.
#[derive(Default)]
struct Watch {
    ended: AtomicBool,
    timed_out: AtomicBool,
}

/// A request body that fails once its deadline passes, and reports whether it was read to its end.
struct Deadline {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    watch: Arc<Watch>,
    /// Uploads (`POST /v1/imports`): the deadline moves on by `body_timeout` each time another
    /// [`UPLOAD_PROGRESS`] bytes arrived, so a large file is not cut while it keeps coming; the
    /// bytes since the last move.
    upload: Option<(Duration, u64)>,
}

/// What an upload must send within each `[http] body_timeout` (64 KiB).
const UPLOAD_PROGRESS: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimeout;

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.watch.ended.store(true, Ordering::Relaxed);
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => {
                if this.inner.is_end_stream() {
                    this.watch.ended.store(true, Ordering::Relaxed);
                }
                if let (Some((period, since)), Ok(f)) = (this.upload.as_mut(), &frame)
                    && let Some(data) = f.data_ref()
                {
                    *since += data.len() as u64;
                    if *since >= UPLOAD_PROGRESS {
                        *since = 0;
                        this.sleep
                            .as_mut()
                            .reset(tokio::time::Instant::now() + *period);
                    }
                }
                Poll::Ready(Some(frame))
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.watch.timed_out.store(true, Ordering::Relaxed);
                    Poll::Ready(Some(Err(axum::Error::new(BodyTimeout))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The middleware every route runs in: the body deadline, `Connection: close` after a body left
/// unread, and JSON error answers.
pub(super) async fn guard(
    State(body_timeout): State<Duration>,
    req: Request,
    next: Next,
) -> Response {
    use http_body::Body as _;
    let has_body = !req.body().is_end_stream();
    let method = req.method().clone();
    let watch = Arc::new(Watch::default());
    let upload =
        (method == Method::POST && req.uri().path() == "/v1/imports").then_some((body_timeout, 0));
    let req = req.map(|inner| {
        Body::new(Deadline {
            inner,
            sleep: Box::pin(tokio::time::sleep(body_timeout)),
            watch: watch.clone(),
            upload,
        })
    });
    let resp = next.run(req).await;
    let mut resp = if watch.timed_out.load(Ordering::Relaxed) {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body.timeout",
            Some("body"),
            format!("the body did not arrive within {body_timeout:?} ([http] body_timeout)"),
        )
        .into_response()
    } else {
        as_json(resp, &method).await
    };
    if has_body && !watch.ended.load(Ordering::Relaxed) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// An error answer that is not JSON (axum's rejections: a path it cannot decode, a method the
/// route does not take, a body extractor's complaint) as the API's JSON error.
async fn as_json(resp: Response, method: &Method) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let (code, field) = match status {
        StatusCode::METHOD_NOT_ALLOWED => ("method.not_allowed", None),
        StatusCode::PAYLOAD_TOO_LARGE => ("body.too_large", Some("body")),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("body.unsupported_type", Some("content-type")),
        StatusCode::UNPROCESSABLE_ENTITY => ("body.invalid", Some("body")),
        StatusCode::BAD_REQUEST if text.contains("URL") => ("path.invalid", Some("path")),
        StatusCode::BAD_REQUEST if text.contains("query") => ("query.invalid", Some("query")),
        StatusCode::BAD_REQUEST => ("request.invalid", Some("body")),
        s if s.is_server_error() => ("internal", None),
        _ => ("request.invalid", None),
    };
    let message = match (status, text.is_empty()) {
        (StatusCode::METHOD_NOT_ALLOWED, _) => {
            let allowed = parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            format!("this endpoint does not take {method}; it takes {allowed}")
        }
        (_, false) => text,
        (_, true) => status
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_owned(),
    };
    let mut out = ApiError::new(status, code, field, message).into_response();
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}
