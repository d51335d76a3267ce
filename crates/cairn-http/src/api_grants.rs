//! JumpCloud's v2 graph (§4.2): the associations of users and user groups with resources,
//! read and changed from either end, and the built-in LDAP server.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use cairn_directory::ldap_server_json;
use cairn_domain::graph::{self, GraphKind, Node, Operation, ResourceKind, ResourceRef, SubjectKind, SubjectRef};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api_groups::total_header;
use crate::error::{ApiError, ApiResult};
use crate::extract::{field_error, Caller, JsonBody, QueryPairs};
use crate::Shared;

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(user_associations, change_user_associations))
        .routes(routes!(group_associations, change_group_associations))
        .routes(routes!(ldap_servers))
        .routes(routes!(ldap_server, patch_ldap_server, put_ldap_server))
        .routes(routes!(ldap_associations, change_ldap_associations))
}

/// JumpCloud's `GraphConnection`, with `from` left out as the path says it:
/// `{"to": {"id", "type", "attributes"}, "attributes"}` (Cairn's associations have none).
fn connection<K: GraphKind>(to: &Node<K>) -> Value {
    json!({ "to": { "id": to.id, "type": to.kind.as_str(), "attributes": null }, "attributes": null })
}

/// An operation on an object of a JumpCloud type Cairn has none of: that object is not here.
fn foreign_not_found(type_name: &str, id: &str) -> ApiError {
    ApiError::not_found(format!(
        "no {type_name} with id '{id}': Cairn has no objects of the JumpCloud type {type_name}"
    ))
}

/// `targets` (required), `limit` and `skip` of an association list.
fn list_query<K: GraphKind>(q: &QueryPairs) -> ApiResult<(Vec<K>, i64, i64)> {
    let targets: Vec<&str> = q.0.iter().filter(|(k, _)| k == "targets").map(|(_, v)| v.as_str()).collect();
    let kinds = graph::parse_targets::<K>(&targets)?;
    let (limit, skip) = q.page(10, 100)?;
    Ok((kinds, limit, skip))
}

async fn subject_associations(st: &Shared, subject: SubjectRef, q: &QueryPairs) -> ApiResult<impl IntoResponse> {
    let (kinds, limit, skip) = list_query::<ResourceKind>(q)?;
    let (total, to) = st.dir.associations_of_subject(&subject, &kinds, limit, skip).await?;
    Ok((total_header(total), Json(to.iter().map(connection).collect::<Vec<_>>())))
}

/// A `GraphOperation` posted to a user or group names a resource.
async fn change_subject(st: &Shared, c: &Caller, subject: SubjectRef, body: &Value) -> ApiResult<StatusCode> {
    match graph::parse_operation::<ResourceKind>(body)? {
        Operation::Cairn(op) => st.dir.associate(&c.ctx, &subject, &op.target, op.op).await?,
        Operation::Foreign { type_name, id, .. } => {
            // The subject is checked first, as for any other operation.
            st.dir.associations_of_subject(&subject, &[], 1, 0).await?;
            return Err(foreign_not_found(type_name, &id));
        }
    };
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v2/users/{id}/associations", operation_id = "grants_user_associations", tag = "graph", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn user_associations(
    State(st): State<Shared>,
    _: Caller,
    Path(id): Path<String>,
    q: QueryPairs,
) -> ApiResult<impl IntoResponse> {
    subject_associations(&st, SubjectRef::new(SubjectKind::User, id), &q).await
}

#[utoipa::path(post, path = "/v2/users/{id}/associations", operation_id = "grants_change_user_associations", tag = "graph", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn change_user_associations(
    State(st): State<Shared>,
    c: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<StatusCode> {
    change_subject(&st, &c, SubjectRef::new(SubjectKind::User, id), &body).await
}

#[utoipa::path(get, path = "/v2/usergroups/{id}/associations", operation_id = "grants_group_associations", tag = "graph", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn group_associations(
    State(st): State<Shared>,
    _: Caller,
    Path(id): Path<String>,
    q: QueryPairs,
) -> ApiResult<impl IntoResponse> {
    subject_associations(&st, SubjectRef::new(SubjectKind::UserGroup, id), &q).await
}

#[utoipa::path(post, path = "/v2/usergroups/{id}/associations", operation_id = "grants_change_group_associations", tag = "graph", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn change_group_associations(
    State(st): State<Shared>,
    c: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<StatusCode> {
    change_subject(&st, &c, SubjectRef::new(SubjectKind::UserGroup, id), &body).await
}

/// The resource's end: its users and groups (the LDAP server's here, RADIUS servers' in
/// `api_radius`, applications' in `api_applications`).
pub(crate) async fn resource_associations(
    st: &Shared,
    resource: ResourceRef,
    q: &QueryPairs,
) -> ApiResult<impl IntoResponse> {
    let (kinds, limit, skip) = list_query::<SubjectKind>(q)?;
    let (total, from) = st.dir.associations_of_resource(&resource, &kinds, limit, skip).await?;
    Ok((total_header(total), Json(from.iter().map(connection).collect::<Vec<_>>())))
}

/// A `GraphOperation` posted to a resource names a user or group.
pub(crate) async fn change_resource(
    st: &Shared,
    c: &Caller,
    resource: ResourceRef,
    body: &Value,
) -> ApiResult<StatusCode> {
    match graph::parse_operation::<SubjectKind>(body)? {
        Operation::Cairn(op) => st.dir.associate(&c.ctx, &op.target, &resource, op.op).await?,
        // Users and groups are Cairn's own: a resource's far end is never foreign.
        Operation::Foreign { type_name, id, .. } => return Err(foreign_not_found(type_name, &id)),
    };
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v2/ldapservers/{id}/associations", operation_id = "grants_ldap_associations", tag = "graph", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn ldap_associations(
    State(st): State<Shared>,
    _: Caller,
    Path(id): Path<String>,
    q: QueryPairs,
) -> ApiResult<impl IntoResponse> {
    resource_associations(&st, ResourceRef::new(ResourceKind::LdapServer, id), &q).await
}

#[utoipa::path(post, path = "/v2/ldapservers/{id}/associations", operation_id = "grants_change_ldap_associations", tag = "graph", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn change_ldap_associations(
    State(st): State<Shared>,
    c: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<StatusCode> {
    change_resource(&st, &c, ResourceRef::new(ResourceKind::LdapServer, id), &body).await
}

/// A bare array, as JumpCloud's `GET /ldapservers` answers.
#[utoipa::path(get, path = "/v2/ldapservers", operation_id = "grants_ldap_servers", tag = "graph",
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn ldap_servers(State(st): State<Shared>, _: Caller, q: QueryPairs) -> ApiResult<impl IntoResponse> {
    if q.0.iter().any(|(k, _)| k.starts_with("filter")) {
        return Err(field_error("filter", "is not supported here: Cairn has one LDAP server, built in"));
    }
    let (limit, skip) = q.page(10, 100)?;
    let (total, servers) = st.dir.ldap_servers(limit, skip).await?;
    Ok((total_header(total), Json(servers.iter().map(ldap_server_json).collect::<Vec<_>>())))
}

#[utoipa::path(get, path = "/v2/ldapservers/{id}", operation_id = "grants_ldap_server", tag = "graph", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn ldap_server(State(st): State<Shared>, _: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(ldap_server_json(&st.dir.ldap_server(&id).await?)))
}

/// `name`, `userLockoutAction`, `userPasswordExpirationAction` (`disable` | `remove`); what
/// the LDAP tree does with locked users and expired passwords follows at once.
#[utoipa::path(patch, path = "/v2/ldapservers/{id}", operation_id = "grants_patch_ldap_server", tag = "graph", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn patch_ldap_server(
    State(st): State<Shared>,
    c: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    Ok(Json(ldap_server_json(&st.dir.update_ldap_server(&c.ctx, &id, &body).await?)))
}

/// As `PATCH` (SPEC §4.2 names `PUT`; fields left out keep their values).
#[utoipa::path(put, path = "/v2/ldapservers/{id}", operation_id = "grants_put_ldap_server", tag = "graph", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn put_ldap_server(st: State<Shared>, c: Caller, id: Path<String>, body: JsonBody) -> ApiResult<Json<Value>> {
    patch_ldap_server(st, c, id, body).await
}
