//! Applications (§4.1): JumpCloud's v1 `/applications` with `sso.type: "oidc"` and Cairn's
//! OIDC fields; the client secret is shown once, at creation and at each rotation. Their
//! associations (§4.2) are read and changed at `/v2/applications/{id}/associations`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use cairn_directory::NewApplication;
use cairn_domain::graph::{ResourceKind, ResourceRef};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiResult;
use crate::extract::{Caller, JsonBody, QueryPairs};
use crate::Shared;

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, put_one, delete_one))
        .routes(routes!(rotate_secret))
        .routes(routes!(associations, change_associations))
        .routes(routes!(rotate_keys))
}

/// Rotates the OIDC provider's signing keys: the new ones are published at once and sign
/// from `signingFrom`; the old ones stay published until the tokens they signed expire.
#[utoipa::path(post, path = "/v2/oidc/keys/rotate", operation_id = "oidc_rotate_keys", tag = "applications",
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn rotate_keys(State(st): State<Shared>, c: Caller) -> ApiResult<Json<Value>> {
    let kids = st.dir.rotate_oidc_keys(&c.ctx).await?;
    let from = st.dir.now() + cairn_directory::PUBLISH_AHEAD;
    Ok(Json(json!({ "newKeys": kids, "signingFrom": cairn_domain::user::format_time(from) })))
}

async fn app_json(st: &Shared, a: &cairn_domain::application::Application) -> ApiResult<Value> {
    Ok(a.to_json(&st.dir.organization_id().await?))
}

/// The application with its new secret (once) and where its provider is.
async fn with_secret(st: &Shared, new: &NewApplication) -> ApiResult<Value> {
    let mut v = app_json(st, &new.application).await?;
    if let Some(s) = &new.secret {
        v["clientSecret"] = s.expose().into();
    }
    v["discoveryUrl"] = format!("{}/.well-known/openid-configuration", st.dir.config().issuer()).into();
    Ok(v)
}

#[utoipa::path(get, path = "/applications", operation_id = "applications_list", tag = "applications",
    params(("limit" = Option<i64>, Query, description = "at most 1000"), ("skip" = Option<i64>, Query, description = "how many to skip")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn list(State(st): State<Shared>, _: Caller, q: QueryPairs) -> ApiResult<Json<Value>> {
    let (limit, skip) = q.page(10, 1000)?;
    let (total, apps) = st.dir.list_applications(limit, skip).await?;
    let org = st.dir.organization_id().await?;
    let results: Vec<Value> = apps.iter().map(|a| a.to_json(&org)).collect();
    Ok(Json(json!({ "name": "applications", "totalCount": total, "results": results })))
}

/// `{name, sso: {type: "oidc"}, redirectUris, …}` → 201 with `clientId` and, for a
/// confidential client, `clientSecret` (shown once).
#[utoipa::path(post, path = "/applications", operation_id = "applications_create", tag = "applications",
    responses((status = 201, description = "created"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn create(State(st): State<Shared>, c: Caller, JsonBody(body): JsonBody) -> ApiResult<impl IntoResponse> {
    let new = st.dir.create_application(&c.ctx, &body).await?;
    Ok((StatusCode::CREATED, Json(with_secret(&st, &new).await?)))
}

#[utoipa::path(get, path = "/applications/{id}", operation_id = "applications_get", tag = "applications", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn get_one(State(st): State<Shared>, _: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let a = st.dir.application(&id).await?;
    Ok(Json(app_json(&st, &a).await?))
}

/// Changes the fields sent; the others stay.
#[utoipa::path(put, path = "/applications/{id}", operation_id = "applications_put", tag = "applications", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn put_one(
    State(st): State<Shared>,
    c: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let a = st.dir.update_application(&c.ctx, &id, &body).await?;
    Ok(Json(app_json(&st, &a).await?))
}

/// Deletes the application: its associations, codes and tokens end with it.
#[utoipa::path(delete, path = "/applications/{id}", operation_id = "applications_delete", tag = "applications", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn delete_one(State(st): State<Shared>, c: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let a = st.dir.delete_application(&c.ctx, &id).await?;
    Ok(Json(app_json(&st, &a).await?))
}

/// A new client secret, shown once; the old one stops working at once.
#[utoipa::path(post, path = "/applications/{id}/secret", operation_id = "applications_rotate_secret", tag = "applications", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn rotate_secret(State(st): State<Shared>, c: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let new = st.dir.rotate_application_secret(&c.ctx, &id).await?;
    Ok(Json(with_secret(&st, &new).await?))
}

#[utoipa::path(get, path = "/v2/applications/{id}/associations", operation_id = "grants_application_associations", tag = "graph", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn associations(
    State(st): State<Shared>,
    _: Caller,
    Path(id): Path<String>,
    q: QueryPairs,
) -> ApiResult<impl IntoResponse> {
    crate::api_grants::resource_associations(&st, ResourceRef::new(ResourceKind::Application, id), &q).await
}

/// Removing a user or a group ends the application tokens of whoever lost access.
#[utoipa::path(post, path = "/v2/applications/{id}/associations", operation_id = "grants_change_application_associations", tag = "graph", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn change_associations(
    State(st): State<Shared>,
    c: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<StatusCode> {
    crate::api_grants::change_resource(&st, &c, ResourceRef::new(ResourceKind::Application, id), &body).await
}
