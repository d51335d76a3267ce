//! JumpCloud's RADIUS servers (§11): v1 `/radiusservers` (CRUD, `{totalCount, results}`) and
//! v2 `/radiusservers/{id}/associations` on the graph. The shared secret is written, never
//! read back: only the POST answer (JumpCloud's `radiusserver`) repeats the one just sent.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use cairn_domain::graph::{ResourceKind, ResourceRef};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api_grants::{change_resource, resource_associations};
use crate::error::ApiResult;
use crate::extract::{field_error, Caller, JsonBody, QueryPairs};
use crate::Shared;

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, put, delete))
        .routes(routes!(associations, change_associations))
}

fn resource(id: String) -> ResourceRef {
    ResourceRef::new(ResourceKind::RadiusServer, id)
}

/// `limit` (default 10, at most 100) and `skip`; JumpCloud's `fields`, `filter` and `sort`
/// only when empty (Cairn lists oldest first), so nothing asked for is silently ignored.
fn page(q: &QueryPairs) -> ApiResult<(i64, i64)> {
    for (k, v) in &q.0 {
        match k.as_str() {
            "limit" | "skip" => {}
            "fields" | "filter" | "sort" if v.is_empty() => {}
            "fields" | "filter" | "sort" => {
                return Err(field_error(k, "is not supported for RADIUS servers (lists are oldest first)"))
            }
            other => return Err(field_error(other, "is not a parameter of this list (limit, skip)")),
        }
    }
    q.page(10, 100)
}

/// JumpCloud's `radiusserverslist`.
#[utoipa::path(get, path = "/radiusservers", operation_id = "radius_list", tag = "radius",
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn list(State(st): State<Shared>, _: Caller, q: QueryPairs) -> ApiResult<Json<Value>> {
    let (limit, skip) = page(&q)?;
    let (total, servers) = st.dir.radius_servers(limit, skip).await?;
    let mut results = Vec::with_capacity(servers.len());
    for s in &servers {
        results.push(st.dir.radius_server_json(s).await?);
    }
    Ok(Json(json!({ "totalCount": total, "results": results })))
}

/// `radiusserverpost` → `radiusserver`: `name`, `networkSourceIp` (an address or a CIDR
/// range, overlapping no other server's: 409) and `sharedSecret` (at least 16 characters)
/// required; `mfa`, `userLockoutAction`, `userPasswordExpirationAction`,
/// `userPasswordEnabled` optional.
#[utoipa::path(post, path = "/radiusservers", operation_id = "radius_create", tag = "radius",
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn create(State(st): State<Shared>, c: Caller, JsonBody(body): JsonBody) -> ApiResult<Json<Value>> {
    let s = st.dir.create_radius_server(&c.ctx, &body).await?;
    let mut v = st.dir.radius_server_json(&s).await?;
    // The caller's own secret, validated: the one answer that carries it.
    v["sharedSecret"] = body["sharedSecret"].clone();
    Ok(Json(v))
}

#[utoipa::path(get, path = "/radiusservers/{id}", operation_id = "radius_get", tag = "radius", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn get_one(State(st): State<Shared>, _: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let s = st.dir.radius_server(&id).await?;
    Ok(Json(st.dir.radius_server_json(&s).await?))
}

/// → `radiusserverput` (no secret). Fields left out keep their values; a new `sharedSecret`
/// takes effect at the next request.
#[utoipa::path(put, path = "/radiusservers/{id}", operation_id = "radius_put", tag = "radius", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn put(
    State(st): State<Shared>,
    c: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let s = st.dir.update_radius_server(&c.ctx, &id, &body).await?;
    Ok(Json(st.dir.radius_server_json(&s).await?))
}

/// → the deleted server's `radiusserverput`; its associations go with it.
#[utoipa::path(delete, path = "/radiusservers/{id}", operation_id = "radius_delete", tag = "radius", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn delete(State(st): State<Shared>, c: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let s = st.dir.delete_radius_server(&c.ctx, &id).await?;
    Ok(Json(st.dir.radius_server_json(&s).await?))
}

#[utoipa::path(get, path = "/v2/radiusservers/{id}/associations", operation_id = "radius_associations", tag = "graph", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn associations(
    State(st): State<Shared>,
    _: Caller,
    Path(id): Path<String>,
    q: QueryPairs,
) -> ApiResult<impl IntoResponse> {
    resource_associations(&st, resource(id), &q).await
}

#[utoipa::path(post, path = "/v2/radiusservers/{id}/associations", operation_id = "radius_change_associations", tag = "graph", params(("id" = String, Path, description = "the object's id")),
    responses((status = 204, description = "changed"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn change_associations(
    State(st): State<Shared>,
    c: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<impl IntoResponse> {
    change_resource(&st, &c, resource(id), &body).await
}
