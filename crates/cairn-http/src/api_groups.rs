//! JumpCloud v2 user groups and memberships (§4.2).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use cairn_directory::group_json;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, JsonBody, QueryPairs};
use crate::Shared;

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
        .routes(routes!(members, change_members))
        .routes(routes!(membership))
        .routes(routes!(memberof))
}

pub(crate) fn total_header(total: i64) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-total-count", HeaderValue::from(total));
    h
}

/// JumpCloud v2: `filter=field:op:value` (repeated: AND'ed; `eq ne gt ge lt le in search` on
/// id, name, description, email, membershipMethod) and `sort` (`-` for descending).
#[utoipa::path(get, path = "/v2/usergroups", operation_id = "groups_list", tag = "groups",
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn list(State(st): State<Shared>, _: Caller, q: QueryPairs) -> ApiResult<impl IntoResponse> {
    let (limit, skip) = q.page(10, 100)?;
    let gq = cairn_domain::group_query::GroupQuery::from_pairs(&q.0)?;
    let (total, groups) = st.dir.query_groups(&gq, limit, skip).await?;
    let body: Vec<Value> = groups.iter().map(group_json).collect();
    Ok((total_header(total), Json(body)))
}

#[utoipa::path(post, path = "/v2/usergroups", operation_id = "groups_create", tag = "groups",
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn create(State(st): State<Shared>, c: Caller, JsonBody(body): JsonBody) -> ApiResult<impl IntoResponse> {
    let g = st.dir.create_group(&c.ctx, &body).await?;
    Ok((StatusCode::CREATED, Json(group_json(&g))))
}

#[utoipa::path(get, path = "/v2/usergroups/{id}", operation_id = "groups_show", tag = "groups", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn show(State(st): State<Shared>, _: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(group_json(&st.dir.get_group(&id).await?)))
}

#[utoipa::path(put, path = "/v2/usergroups/{id}", operation_id = "groups_update", tag = "groups", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn update(
    State(st): State<Shared>,
    c: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    Ok(Json(group_json(&st.dir.update_group(&c.ctx, &id, &body).await?)))
}

#[utoipa::path(delete, path = "/v2/usergroups/{id}", operation_id = "groups_remove", tag = "groups", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn remove(State(st): State<Shared>, c: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(group_json(&st.dir.delete_group(&c.ctx, &id).await?)))
}

#[utoipa::path(get, path = "/v2/usergroups/{id}/members", operation_id = "groups_members", tag = "groups", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn members(
    State(st): State<Shared>,
    _: Caller,
    Path(id): Path<String>,
    q: QueryPairs,
) -> ApiResult<impl IntoResponse> {
    let (limit, skip) = q.page(10, 100)?;
    let (total, ids) = st.dir.group_members(&id, limit, skip).await?;
    let body: Vec<Value> = ids
        .iter()
        .map(|u| json!({ "to": { "id": u, "type": "user", "attributes": null }, "attributes": null }))
        .collect();
    Ok((total_header(total), Json(body)))
}

/// `{op: add|remove, type: "user", id}` (JumpCloud GraphOperation UserGroup-Member).
#[utoipa::path(post, path = "/v2/usergroups/{id}/members", operation_id = "groups_change_members", tag = "groups", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn change_members(
    State(st): State<Shared>,
    c: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<StatusCode> {
    let mut errors = vec![];
    let op = body.get("op").and_then(Value::as_str);
    if !matches!(op, Some("add" | "remove")) {
        errors.push(cairn_domain::FieldError::new("op", "must be \"add\" or \"remove\""));
    }
    if body.get("type").and_then(Value::as_str) != Some("user") {
        errors.push(cairn_domain::FieldError::new("type", "must be \"user\": user groups hold users"));
    }
    let user = body.get("id").and_then(Value::as_str);
    if user.is_none() {
        errors.push(cairn_domain::FieldError::new("id", "the user's id is required"));
    }
    if let Some(o) = body.as_object() {
        for k in o.keys().filter(|k| !matches!(k.as_str(), "op" | "type" | "id" | "attributes")) {
            errors.push(cairn_domain::FieldError::new(k.clone(), "is not a field of a membership operation"));
        }
    }
    if !errors.is_empty() {
        return Err(cairn_directory::Error::Invalid(errors).into());
    }
    st.dir.change_membership(&c.ctx, &id, user.unwrap_or_default(), op == Some("add")).await.map_err(|e| match e {
        cairn_directory::Error::NotFound(m) => ApiError::not_found(m),
        other => other.into(),
    })?;
    Ok(StatusCode::NO_CONTENT)
}

/// Users in the group, direct or not (Cairn groups hold users directly): GraphObjectWithPaths.
#[utoipa::path(get, path = "/v2/usergroups/{id}/membership", operation_id = "groups_membership", tag = "groups", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn membership(
    State(st): State<Shared>,
    _: Caller,
    Path(id): Path<String>,
    q: QueryPairs,
) -> ApiResult<impl IntoResponse> {
    let (limit, skip) = q.page(10, 100)?;
    let (total, ids) = st.dir.group_members(&id, limit, skip).await?;
    let body: Vec<Value> = ids
        .iter()
        .map(|u| json!({ "id": u, "type": "user", "paths": [[{ "to": { "id": u, "type": "user" } }]] }))
        .collect();
    Ok((total_header(total), Json(body)))
}

#[utoipa::path(get, path = "/v2/users/{id}/memberof", operation_id = "groups_memberof", tag = "groups", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn memberof(State(st): State<Shared>, _: Caller, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    let (user, groups) = st.dir.groups_of_user(&id).await?;
    let body: Vec<Value> = groups
        .iter()
        .map(|g| {
            json!({
                "id": g.id, "type": "user_group",
                "paths": [[{ "from": { "id": user.id, "type": "user" }, "to": { "id": g.id, "type": "user_group" } }]],
                "compiledAttributes": g.attributes.clone().unwrap_or(json!({})),
            })
        })
        .collect();
    Ok((total_header(groups.len() as i64), Json(body)))
}
