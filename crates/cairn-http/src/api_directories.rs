//! Directory connections (§12, a Cairn addition): `GET|POST /api/v2/directories`,
//! `GET|PUT|DELETE /api/v2/directories/{id}`, and their sync jobs. The bind password is
//! written, never read back (`bindPasswordSet` says whether one is stored).

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::SecondsFormat;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiResult;
use crate::extract::{field_error, Caller, JsonBody, QueryPairs};
use crate::Shared;

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, put, delete))
        .routes(routes!(sync))
        .routes(routes!(sync_status))
        .routes(routes!(sync_results))
}

fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Every connection (`limit` default 10, at most 100; `skip`), oldest first.
#[utoipa::path(get, path = "/v2/directories", operation_id = "directories_list", tag = "directories",
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn list(State(st): State<Shared>, _: Caller, q: QueryPairs) -> ApiResult<Json<Value>> {
    for (k, _) in &q.0 {
        if !matches!(k.as_str(), "limit" | "skip") {
            return Err(field_error(k, "is not a parameter of this list (limit, skip)"));
        }
    }
    let (limit, skip) = q.page(10, 100)?;
    let (total, all) = st.dir.directory_connections(limit, skip).await?;
    Ok(Json(json!({ "totalCount": total, "results": all.iter().map(|c| c.json()).collect::<Vec<_>>() })))
}

/// A new connection: `name`, `url` (ldap:// or ldaps://) and `userBase` required; `startTls`,
/// `caCert` (PEM) or `fingerprint` (SHA-256), `bindDn`, `bindPassword`, `userFilter`,
/// `groupBase`, `groupFilter`, `preset` (`active_directory` | `openldap`),
/// `attributeMapping`, `syncIntervalSeconds` (0 or 60…604800), `passwordAuthority`
/// (`none` | `external` | `delegated`).
#[utoipa::path(post, path = "/v2/directories", operation_id = "directories_create", tag = "directories",
    responses((status = 201, description = "created"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn create(State(st): State<Shared>, c: Caller, JsonBody(body): JsonBody) -> ApiResult<Response> {
    let conn = st.dir.create_directory_connection(&c.ctx, &body).await?;
    Ok((StatusCode::CREATED, Json(conn.json())).into_response())
}

#[utoipa::path(get, path = "/v2/directories/{id}", operation_id = "directories_get", tag = "directories", params(("id" = String, Path, description = "the connection's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn get_one(State(st): State<Shared>, _: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(st.dir.directory_connection(&id).await?.json()))
}

/// The fields given change; the others keep their values.
#[utoipa::path(put, path = "/v2/directories/{id}", operation_id = "directories_put", tag = "directories", params(("id" = String, Path, description = "the connection's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn put(
    State(st): State<Shared>,
    c: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    Ok(Json(st.dir.update_directory_connection(&c.ctx, &id, &body).await?.json()))
}

/// Removes the connection; the users and groups it created stay.
#[utoipa::path(delete, path = "/v2/directories/{id}", operation_id = "directories_delete", tag = "directories", params(("id" = String, Path, description = "the connection's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn delete(State(st): State<Shared>, c: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(st.dir.delete_directory_connection(&c.ctx, &id).await?.json()))
}

/// Starts a sync (`?dry_run=true`: a preview that changes nothing) → 202 `{jobId}`.
#[utoipa::path(post, path = "/v2/directories/{id}/sync", operation_id = "directories_sync", tag = "directories", params(("id" = String, Path, description = "the connection's id"), ("dry_run" = Option<bool>, Query, description = "preview only")),
    responses((status = 202, description = "started"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn sync(State(st): State<Shared>, c: Caller, Path(id): Path<String>, q: QueryPairs) -> ApiResult<Response> {
    let mut dry_run = false;
    for (k, v) in &q.0 {
        match (k.as_str(), v.as_str()) {
            ("dry_run", "true" | "1") => dry_run = true,
            ("dry_run", "false" | "0" | "") => {}
            ("dry_run", _) => return Err(field_error("dry_run", "must be true or false")),
            (other, _) => return Err(field_error(other, "is not a parameter of a sync (dry_run)")),
        }
    }
    let job = st.dir.start_directory_sync(&c.ctx, &id, dry_run).await?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/api/v2/directories/{id}/sync/{job}"))],
        Json(json!({ "jobId": job })),
    )
        .into_response())
}

/// A sync's status, counts and progress.
#[utoipa::path(get, path = "/v2/directories/{id}/sync/{job_id}", operation_id = "directories_sync_status", tag = "directories", params(("id" = String, Path, description = "the connection's id"), ("job_id" = String, Path, description = "the job's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn sync_status(
    State(st): State<Shared>,
    _: Caller,
    Path((id, job)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let j = st.dir.directory_sync_job(&id, &job).await?;
    let status = if j.status == "interrupted" { "failed" } else { j.status.as_str() };
    Ok(Json(json!({
        "jobId": j.id,
        "kind": j.kind,
        "status": status,
        "interrupted": j.status == "interrupted",
        "dryRun": j.params["dry_run"],
        "total": j.total,
        "processed": j.processed,
        "counts": j.counts,
        "message": j.message,
        "created": time(j.created),
        "updated": time(j.updated),
        "results": format!("/api/v2/directories/{id}/sync/{}/results", j.id),
    })))
}

/// One page of a sync's per-user outcomes (`limit` default 10, at most 1000; `skip`;
/// `outcome` = created|updated|unchanged|suspended|reactivated|error).
#[utoipa::path(get, path = "/v2/directories/{id}/sync/{job_id}/results", operation_id = "directories_sync_results", tag = "directories", params(("id" = String, Path, description = "the connection's id"), ("job_id" = String, Path, description = "the job's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn sync_results(
    State(st): State<Shared>,
    _: Caller,
    Path((id, job)): Path<(String, String)>,
    q: QueryPairs,
) -> ApiResult<impl IntoResponse> {
    let j = st.dir.directory_sync_job(&id, &job).await?;
    let (limit, skip) = q.page(10, 1000)?;
    let outcome = match q.get("outcome") {
        None => None,
        Some(o @ ("created" | "updated" | "unchanged" | "suspended" | "reactivated" | "error")) => Some(o),
        Some(o) => {
            let o: String = o.chars().take(64).collect();
            return Err(field_error(
                "outcome",
                format!("'{o}' is not one of created, updated, unchanged, suspended, reactivated, error"),
            ));
        }
    };
    let (matched, results) = st.dir.job_results(&j.id, outcome, limit, skip).await?;
    let body: Vec<Value> = results
        .iter()
        .map(|r| {
            json!({
                "seq": r.seq,
                "username": r.username,
                "userId": r.user_id,
                "outcome": r.outcome,
                "message": r.message.clone().unwrap_or_default(),
            })
        })
        .collect();
    Ok((crate::api_groups::total_header(matched), Json(body)))
}
