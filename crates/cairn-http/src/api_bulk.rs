//! CSV import, JSON bulk jobs (§4.2 `bulk/users`) and streamed export (§4.3).

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn_directory::{
    Directory, ExportFormat, Exporter, ImportOptions, ImportSlot, Upload, UploadKind, UploadRefusal,
};
use cairn_domain::lifecycle::MailChoice;
use cairn_domain::query::ListQuery;
use cairn_domain::user::format_time;
use cairn_domain::CreationSource;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::{field_error, Caller, QueryPairs};
use crate::Shared;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v2/users/import", post(import))
        .route("/v2/users/import/{id}", get(import_status))
        .route("/v2/users/import/{id}/results", get(import_results))
        .route("/v2/bulk/users", post(bulk_create).patch(bulk_update))
        .route("/v2/bulk/users/{id}/results", get(bulk_results))
        .route("/v2/users/export", get(export))
}

fn flag(q: &QueryPairs, name: &str) -> ApiResult<bool> {
    match q.get(name) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(v) => Err(field_error(name, format!("must be true or false, not '{v}'"))),
    }
}

/// One of the places for imports and bulk jobs running at once, or a 429 saying so — asked
/// before the body is read, so a refused upload costs nothing.
pub(crate) fn import_slot(dir: &Directory) -> ApiResult<ImportSlot> {
    dir.try_import_slot().ok_or_else(|| {
        let n = dir.config().max_concurrent_imports;
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{n} import{} already running, the most that run at once (CAIRN_MAX_CONCURRENT_IMPORTS): \
                 send this one again when one has finished",
                if n == 1 { " is" } else { "s are" }
            ),
        );
        e.retry_after = Some(30);
        e
    })
}

/// Receives an upload body into a spool file, counted as it streams (see
/// `Directory::receive_upload`): 413 past the size limit, 400 for a bulk body that is not an
/// array of at most 100,000 entries, each as soon as it shows.
pub(crate) async fn receive(dir: &Directory, kind: UploadKind, headers: &HeaderMap, body: Body) -> ApiResult<Upload> {
    let too_large = |limit: u64| {
        let what = match kind {
            UploadKind::Csv => "the CSV file",
            UploadKind::BulkUsers => "the request body",
        };
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{what} is larger than the limit of {} MiB", limit / (1024 * 1024)),
        )
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > kind.max_bytes()) {
        return Err(too_large(kind.max_bytes()));
    }
    let mut sink = dir.receive_upload(kind);
    let mut stream = body.into_data_stream();
    let (mut taking, mut seen) = (true, 0u64);
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("could not read the upload: {e}")))?;
        seen += chunk.len() as u64;
        if taking && !sink.send(chunk).await {
            // Refused: the rest is read and dropped (up to the limit), so that the client,
            // still sending, reads the answer rather than a reset connection.
            taking = false;
            if expects_continue(headers) {
                break;
            }
        }
        if !taking && seen > kind.max_bytes() {
            break;
        }
    }
    sink.finish().await.map_err(|r| match r {
        UploadRefusal::TooLarge(limit) => too_large(limit),
        UploadRefusal::Invalid(e) | UploadRefusal::Failed(e) => e.into(),
    })
}

/// Whether the client waits for `100 Continue` before it sends the body (curl does for large
/// ones): then a refusal needs no body read.
fn expects_continue(headers: &HeaderMap) -> bool {
    headers.get(header::EXPECT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
}

/// Reads and drops a body that is refused before its first byte is used, up to `limit` bytes, so
/// that a client sending it all before reading the answer (most HTTP libraries) gets the
/// answer, not a reset connection. Nothing is kept.
pub(crate) async fn drain(headers: &HeaderMap, body: Body, limit: u64) {
    if expects_continue(headers) {
        return;
    }
    let mut stream = body.into_data_stream();
    let mut seen = 0u64;
    while let Some(Ok(chunk)) = futures_util::StreamExt::next(&mut stream).await {
        seen += chunk.len() as u64;
        if seen > limit {
            return;
        }
    }
}

/// The import slot, or the 429 once the refused body is drained.
async fn slot_or_busy(
    dir: &Directory,
    kind: UploadKind,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<(ImportSlot, Body)> {
    match import_slot(dir) {
        Ok(slot) => Ok((slot, body)),
        Err(e) => {
            drain(headers, body, kind.max_bytes()).await;
            Err(e)
        }
    }
}

/// `text/csv` body → 202 `{jobId}`; `?dry_run=true`, `?update=true`. The file waits on disk
/// and is read as the import goes; a 429 when as many imports as may run at once are running.
async fn import(State(st): State<Shared>, c: Caller, q: QueryPairs, h: HeaderMap, body: Body) -> ApiResult<Response> {
    let opts = ImportOptions { dry_run: flag(&q, "dry_run")?, update: flag(&q, "update")? };
    let (slot, body) = slot_or_busy(&st.dir, UploadKind::Csv, &h, body).await?;
    let upload = receive(&st.dir, UploadKind::Csv, &h, body).await?;
    if upload.bytes == 0 {
        return Err(field_error("body", "send the CSV file as the request body (Content-Type: text/csv)"));
    }
    let ctx = cairn_directory::Ctx { source: "csv".into(), ..c.ctx };
    let job = st.dir.start_csv_import(&ctx, upload, opts, slot).await?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/api/v2/users/import/{job}"))],
        Json(json!({ "jobId": job })),
    )
        .into_response())
}

/// Status, counts and progress of an import job; its results are paged at `…/results`
/// (a 100,000-record job's results are megabytes: they are never answered whole).
async fn import_status(State(st): State<Shared>, _: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let job = st.dir.job(&id).await?;
    let status = match job.status.as_str() {
        "interrupted" => "failed",
        s => s,
    };
    Ok(Json(json!({
        "jobId": job.id,
        "kind": job.kind,
        "status": status,
        "interrupted": job.status == "interrupted",
        "dryRun": job.params["dry_run"],
        "update": job.params["update"],
        "total": job.total,
        "processed": job.processed,
        "counts": job.counts,
        "message": job.message,
        "created": format_time(job.created),
        "updated": format_time(job.updated),
        "results": format!("/api/v2/users/import/{}/results", job.id),
    })))
}

/// One page of a job's results (`limit` default 10, at most 1000; `skip`; `?outcome=`
/// created|updated|exists|error), oldest record first, with `x-total-count`: JumpCloud's
/// `job-workresult` plus Cairn's `row` (records counted with the header as row 1),
/// `username`, `userId`, `outcome` and `message`.
async fn job_results_page(st: &Shared, id: &str, q: &QueryPairs) -> ApiResult<impl IntoResponse> {
    let job = st.dir.job(id).await?;
    let (limit, skip) = q.page(10, 1000)?;
    let outcome = match q.get("outcome") {
        None => None,
        Some(o @ ("created" | "updated" | "exists" | "error")) => Some(o),
        Some(o) => {
            let o: String = o.chars().take(64).collect();
            return Err(field_error("outcome", format!("'{o}' is not one of created, updated, exists, error")));
        }
    };
    let (matched, results) = st.dir.job_results(id, outcome, limit, skip).await?;
    let body: Vec<Value> = results
        .iter()
        .map(|r| {
            let message = r.message.clone().unwrap_or_default();
            json!({
                "id": format!("{}-{}", job.id, r.seq),
                "createdAt": format_time(job.created),
                "updatedAt": format_time(job.updated),
                "status": if r.outcome == "error" { "failed" } else { "finished" },
                "statusMsg": if message.is_empty() { r.outcome.clone() } else { message.clone() },
                "meta": { "row": r.seq, "username": r.username, "outcome": r.outcome, "jobStatus": job.status },
                "persistedFields": { "id": r.user_id, "username": r.username },
                "row": r.seq,
                "username": r.username,
                "userId": r.user_id,
                "outcome": r.outcome,
                "message": message,
            })
        })
        .collect();
    Ok((crate::api_groups::total_header(matched), Json(body)))
}

async fn import_results(
    State(st): State<Shared>,
    _: Caller,
    Path(id): Path<String>,
    q: QueryPairs,
) -> ApiResult<impl IntoResponse> {
    job_results_page(&st, &id, &q).await
}

/// JumpCloud `creation-source`: `jumpcloud:bulk` (default) picks the csvImport default state,
/// any other known source applicationImport; anything else is refused.
fn creation_source(h: &HeaderMap) -> ApiResult<(CreationSource, String)> {
    let v = match h.get("creation-source") {
        Some(v) => Some(v.to_str().map_err(|_| field_error("creation-source", "must be text"))?),
        None => None,
    };
    CreationSource::from_bulk_header(v).map_err(|m| field_error("creation-source", m))
}

async fn bulk_create(
    State(st): State<Shared>,
    c: Caller,
    h: HeaderMap,
    q: QueryPairs,
    body: Body,
) -> ApiResult<Response> {
    let (source, origin) = creation_source(&h)?;
    let mail = if flag(&q, "suppressEmail")? { MailChoice::None } else { MailChoice::Default };
    let (slot, body) = slot_or_busy(&st.dir, UploadKind::BulkUsers, &h, body).await?;
    let upload = receive(&st.dir, UploadKind::BulkUsers, &h, body).await?;
    let job = st.dir.start_bulk_users(&c.ctx, upload, false, source, origin, mail, slot).await?;
    Ok((StatusCode::CREATED, Json(json!({ "jobId": job }))).into_response())
}

async fn bulk_update(State(st): State<Shared>, c: Caller, h: HeaderMap, body: Body) -> ApiResult<Response> {
    let (slot, body) = slot_or_busy(&st.dir, UploadKind::BulkUsers, &h, body).await?;
    let upload = receive(&st.dir, UploadKind::BulkUsers, &h, body).await?;
    let job = st
        .dir
        .start_bulk_users(
            &c.ctx,
            upload,
            true,
            CreationSource::CsvImport,
            "jumpcloud:bulk".into(),
            MailChoice::None,
            slot,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "jobId": job }))).into_response())
}

/// JumpCloud `job-workresult` per record, paged as JumpCloud pages it.
async fn bulk_results(
    State(st): State<Shared>,
    _: Caller,
    Path(id): Path<String>,
    q: QueryPairs,
) -> ApiResult<impl IntoResponse> {
    job_results_page(&st, &id, &q).await
}

/// Every user matching the list parameters, streamed as CSV (default) or JSON.
async fn export(State(st): State<Shared>, _: Caller, q: QueryPairs) -> ApiResult<Response> {
    let format = match q.get("format") {
        None => ExportFormat::Csv,
        Some(f) => ExportFormat::parse(f).ok_or_else(|| field_error("format", "must be csv or json"))?,
    };
    let pairs: Vec<(String, String)> =
        q.0.iter().filter(|(k, _)| !matches!(k.as_str(), "format" | "limit" | "skip")).cloned().collect();
    let lq = ListQuery::from_pairs(&pairs)?;
    let org = st.dir.organization_id().await?;
    let mut exporter = Exporter::new(format, lq.fields.clone(), org);
    let mut rx = st.dir.export_users(lq);
    let stream = async_stream(move |tx| async move {
        let _ = tx.send(Ok(Bytes::from(exporter.header()))).await;
        let mut buf = String::new();
        while let Some(r) = rx.recv().await {
            match r {
                Ok(u) => {
                    buf.push_str(&exporter.row(&u));
                    if buf.len() > 64 * 1024 && tx.send(Ok(Bytes::from(std::mem::take(&mut buf)))).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "export failed midway");
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            }
        }
        buf.push_str(&exporter.footer());
        let _ = tx.send(Ok(Bytes::from(buf))).await;
    });
    let ext = if format == ExportFormat::Csv { "csv" } else { "json" };
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"users.{ext}\"")),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// A body stream fed by a task through a small channel (back-pressure keeps memory flat).
fn async_stream<F, Fut>(f: F) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(f(tx));
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}
