//! Blob transfer over HTTP: the download a device makes (Range requests, an optional rate
//! cap), the resumable upload protocol (`HEAD`/`PUT /api/v1/admin/blobs/{digest}` with
//! `Upload-Offset`/`Upload-Length`) and garbage collection. Storage itself is
//! [`crate::blobs`].

use super::hv;
use crate::AppState;
use crate::auth::{Admin, Auth, Deployer, Viewer};
use crate::blobs::{Put, PutError, UploadSlot};
use crate::error::ApiError;
use crate::validate::check_digest;
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use edgecd_api::protocol::BlobRef;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/admin/blobs/gc", post(gc_blobs))
}

/// The upload route, which takes bodies up to the blob size limit (not the JSON limit).
pub fn upload_routes() -> Router<AppState> {
    Router::new().route(
        "/api/v1/admin/blobs/{digest}",
        put(put_blob).head(head_blob),
    )
}

/// Parses a single `bytes=` range against `len`: `Ok(None)` = whole body, `Err` = unsatisfiable.
fn parse_range(v: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let spec = v.trim().strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        return Err(());
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (len.saturating_sub(n), len.checked_sub(1).ok_or(())?)
    } else {
        let s: u64 = a.parse().map_err(|_| ())?;
        let e = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            b.parse::<u64>().map_err(|_| ())?.min(len.saturating_sub(1))
        };
        (s, e)
    };
    if start >= len || end < start {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// Answers the file at `path` (a blob), whole or the one `range` asks for, at most
/// `rate_kbps` KiB/s when set.
pub(crate) async fn serve_file(
    path: &std::path::Path,
    range: Option<&str>,
    rate_kbps: Option<u64>,
) -> Result<Response, ApiError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|_| ApiError::not_found("blob not found"))?;
    let len = f.metadata().await.map_err(ApiError::internal)?.len();
    let (status, start, n) = match range.map(|r| parse_range(r, len)) {
        None | Some(Ok(None)) => (StatusCode::OK, 0, len),
        Some(Ok(Some((s, e)))) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        Some(Err(())) => {
            let all = hv(&format!("bytes */{len}"));
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, all)],
            )
                .into_response());
        }
    };
    f.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(ApiError::internal)?;
    let stream = tokio_util::io::ReaderStream::with_capacity(f.take(n), 16 * 1024);
    let mut resp = Response::new(paced(stream, rate_kbps));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        let r = hv(&format!("bytes {start}-{}/{len}", start + n - 1));
        h.insert(header::CONTENT_RANGE, r);
    }
    Ok(resp)
}

/// A body from `stream`, each chunk leaving no earlier than `rate_kbps` allows (when set).
fn paced<S>(stream: S, rate_kbps: Option<u64>) -> Body
where
    S: futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
{
    use futures_util::StreamExt;
    let Some(kbps) = rate_kbps else {
        return Body::from_stream(stream);
    };
    let start = tokio::time::Instant::now();
    let mut sent = 0u64;
    Body::from_stream(stream.then(move |chunk| {
        if let Ok(c) = &chunk {
            sent += c.len() as u64;
        }
        let due = start + std::time::Duration::from_secs_f64(sent as f64 / (kbps as f64 * 1024.0));
        async move {
            tokio::time::sleep_until(due).await;
            chunk
        }
    }))
}

/// Upload protocol headers: the byte a PUT body starts at, and the blob's whole size.
const UPLOAD_OFFSET: &str = "upload-offset";

const UPLOAD_LENGTH: &str = "upload-length";

fn header_u64(headers: &HeaderMap, name: &str) -> Result<Option<u64>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| ApiError::bad_request(format!("{name} must be a byte count")))
        })
        .transpose()
}

/// Answers `r` once the request body is read (and discarded, up to `max` bytes), so the
/// answer reaches a client still sending it instead of a reset connection; a longer or
/// broken body is answered with `Connection: close`.
async fn answer_after_body(body: Body, max: u64, r: Response) -> Response {
    if drain(body, max).await {
        r
    } else {
        closing(r)
    }
}

/// 409 with the offset the upload of a blob continues at.
fn offset_conflict(e: &PutError, have: u64) -> Response {
    (
        StatusCode::CONFLICT,
        offset_header(have),
        ApiError::new(StatusCode::CONFLICT, e.to_string()),
    )
        .into_response()
}

async fn drain(body: Body, max: u64) -> bool {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                n += c.len() as u64;
                if n > max {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    true
}

/// A response sent before the whole body was read must close the connection, or the
/// client could reuse it mid-body.
fn closing(r: Response) -> Response {
    ([(header::CONNECTION, HeaderValue::from_static("close"))], r).into_response()
}

/// `HEAD /api/v1/admin/blobs/{digest}`: 200 when stored, else 404; `Upload-Offset` says how
/// many bytes the server has (the size, or what an interrupted upload left).
async fn head_blob(
    State(st): State<AppState>,
    _: Auth<Viewer>,
    Path(digest): Path<String>,
) -> Result<Response, ApiError> {
    check_digest(&digest)?;
    let (status, have) = match st.blobs.size(&digest) {
        Some(size) => {
            st.blobs.touch(&digest);
            (StatusCode::OK, size)
        }
        None => match st.blob_backend.size(&digest).await? {
            Some(size) => (StatusCode::OK, size),
            None => (StatusCode::NOT_FOUND, st.blobs.partial_len(&digest)),
        },
    };
    Ok((status, offset_header(have)).into_response())
}

fn offset_header(n: u64) -> [(axum::http::HeaderName, HeaderValue); 1] {
    [(
        axum::http::HeaderName::from_static(UPLOAD_OFFSET),
        HeaderValue::from(n),
    )]
}

/// `PUT /api/v1/admin/blobs/{digest}`: the blob's bytes, or with `Upload-Offset: N` and
/// `Upload-Length: SIZE` the rest of an upload from byte N. 201 when stored, 202 (with
/// `Upload-Offset`) while incomplete, 200 if it was already there. The body is always read
/// before a success or offset answer.
async fn put_blob(
    State(st): State<AppState>,
    _: Auth<Deployer>,
    Path(digest): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_digest(&digest)?;
    let max = st.config.max_blob_bytes;
    let offset = header_u64(&headers, UPLOAD_OFFSET)?.unwrap_or(0);
    let total = header_u64(&headers, UPLOAD_LENGTH)?;
    if let Some(size) = st.blobs.size(&digest) {
        let r = (StatusCode::OK, Json(BlobRef { digest, size })).into_response();
        return Ok(answer_after_body(body, max, r).await);
    }
    let Some(slot) = st.blobs.begin(&digest) else {
        let busy = format!("an upload of {digest} is already in progress: retry when it ends");
        let r = ApiError::new(StatusCode::CONFLICT, busy).into_response();
        return Ok(answer_after_body(body, max, r).await);
    };
    let have = st.blobs.partial_len(&digest);
    if offset != 0 && offset != have {
        let r = offset_conflict(&PutError::Offset { have, got: offset }, have);
        return Ok(answer_after_body(body, max, r).await);
    }
    write_upload(&st, slot, digest, offset, total, body).await
}

/// Writes an upload's body from `offset` into its slot and answers what it left behind.
async fn write_upload(
    st: &AppState,
    slot: UploadSlot,
    digest: String,
    offset: u64,
    total: Option<u64>,
    body: Body,
) -> Result<Response, ApiError> {
    let max = st.config.max_blob_bytes;
    let stream = body.into_data_stream();
    match st.blobs.write(&slot, offset, total, stream, max).await {
        Ok(Put::Stored(size)) => {
            st.blob_backend.stored(&st.blobs, &digest).await?;
            Ok((StatusCode::CREATED, Json(BlobRef { digest, size })).into_response())
        }
        Ok(Put::Partial(n)) => {
            let at = Json(serde_json::json!({"digest": digest, "offset": n}));
            Ok((StatusCode::ACCEPTED, offset_header(n), at).into_response())
        }
        Err(PutError::Store(e)) => Err(ApiError::internal(e)),
        Err(e @ PutError::Offset { have, .. }) => Ok(closing(offset_conflict(&e, have))),
        Err(e @ (PutError::TooLarge(_) | PutError::TooLong(_))) => Ok(closing(
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()).into_response(),
        )),
        Err(e) => Ok(closing(
            ApiError::bad_request(e.to_string()).into_response(),
        )),
    }
}

/// `POST /api/v1/admin/blobs/gc`: removes blobs no release refers to and stale partial
/// uploads, untouched for `graceSecs` (default: the server's sweep grace).
async fn gc_blobs(
    State(st): State<AppState>,
    _: Auth<Admin>,
    Query(q): Query<GcQuery>,
) -> Result<Json<crate::blobs::Swept>, ApiError> {
    let grace = q.grace_secs.unwrap_or(st.config.blob_gc_grace_secs);
    let grace = std::time::Duration::from_secs(grace);
    Ok(Json(crate::blobs::sweep_unreferenced(&st, grace).await?))
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct GcQuery {
    grace_secs: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-", 10), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=5-100", 10), Ok(Some((5, 9))));
        assert_eq!(parse_range("bytes=-3", 10), Ok(Some((7, 9))));
        assert_eq!(parse_range("bytes=10-", 10), Err(()));
        assert_eq!(parse_range("bytes=0-1,3-4", 10), Err(()));
        assert_eq!(parse_range("items=0-1", 10), Err(()));
    }
}
