//! CSV import, JSON bulk jobs (§4.2 `bulk/users`) and streamed export (§4.3).

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn_directory::{ExportFormat, Exporter, ImportOptions, MAX_IMPORT_BYTES};
use cairn_domain::lifecycle::MailChoice;
use cairn_domain::query::ListQuery;
use cairn_domain::user::format_time;
use cairn_domain::CreationSource;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::{field_error, Caller, JsonBody, QueryPairs};
use crate::Shared;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v2/users/import", post(import).layer(DefaultBodyLimit::max(MAX_IMPORT_BYTES)))
        .route("/v2/users/import/{id}", get(import_status))
        .route("/v2/users/import/{id}/results", get(import_results))
        .route("/v2/bulk/users", post(bulk_create).patch(bulk_update).layer(DefaultBodyLimit::max(64 * 1024 * 1024)))
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

/// `text/csv` body → 202 `{jobId}`; `?dry_run=true`, `?update=true`.
async fn import(
    State(st): State<Shared>,
    c: Caller,
    q: QueryPairs,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<Response> {
    let body = body.map_err(|e| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                format!("the CSV file is larger than the limit of {} MiB", MAX_IMPORT_BYTES / (1024 * 1024)),
            )
        } else {
            ApiError::new(status, format!("could not read the upload: {e}"))
        }
    })?;
    let opts = ImportOptions { dry_run: flag(&q, "dry_run")?, update: flag(&q, "update")? };
    if body.is_empty() {
        return Err(field_error("body", "send the CSV file as the request body (Content-Type: text/csv)"));
    }
    let ctx = cairn_directory::Ctx { source: "csv".into(), ..c.ctx };
    let job = st.dir.start_csv_import(&ctx, body.to_vec(), opts).await?;
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

fn users_array(body: Value) -> ApiResult<Vec<Value>> {
    match body {
        Value::Array(a) if a.is_empty() => Err(field_error("body", "the list of users is empty")),
        Value::Array(a) if a.len() > 100_000 => Err(field_error("body", "at most 100,000 users per job")),
        Value::Array(a) => Ok(a),
        _ => Err(field_error("body", "must be a JSON array of users")),
    }
}

async fn bulk_create(
    State(st): State<Shared>,
    c: Caller,
    h: HeaderMap,
    q: QueryPairs,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let (source, origin) = creation_source(&h)?;
    let mail = if flag(&q, "suppressEmail")? { MailChoice::None } else { MailChoice::Default };
    let users = users_array(body)?;
    let job = st.dir.start_bulk_users(&c.ctx, users, false, source, origin, mail).await?;
    Ok((StatusCode::CREATED, Json(json!({ "jobId": job }))).into_response())
}

async fn bulk_update(State(st): State<Shared>, c: Caller, JsonBody(body): JsonBody) -> ApiResult<Response> {
    let users = users_array(body)?;
    let job = st
        .dir
        .start_bulk_users(&c.ctx, users, true, CreationSource::CsvImport, "jumpcloud:bulk".into(), MailChoice::None)
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
