//! JumpCloud v1 system users (§4.1).

use axum::extract::{Path, State};
use axum::Json;
use cairn_domain::lifecycle::{MailChoice, Schedule};
use cairn_domain::query::ListQuery;
use cairn_domain::{CreationSource, User};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiResult;
use crate::extract::{field_error, Caller, JsonBody, QueryPairs};
use crate::shapes::user_json;
use crate::Shared;

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(show, update, remove)).routes(routes!(search))
}

async fn org_id(st: &Shared) -> ApiResult<String> {
    Ok(st.dir.organization_id().await?)
}

async fn pending_of(st: &Shared, users: &[User], fields: Option<&[String]>) -> ApiResult<Vec<Schedule>> {
    if fields.is_some_and(|f| !f.iter().any(|f| f == "scheduledStateChanges")) {
        return Ok(vec![]);
    }
    let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
    Ok(st.dir.pending_schedules_of(&ids).await?)
}

async fn one(st: &Shared, u: &User) -> ApiResult<Json<Value>> {
    let pending = pending_of(st, std::slice::from_ref(u), None).await?;
    Ok(Json(user_json(u, &org_id(st).await?, None, &pending)))
}

async fn list_response(st: &Shared, q: &ListQuery) -> ApiResult<Json<Value>> {
    let page = st.dir.list_users_page(q).await?;
    let org = org_id(st).await?;
    let pending = pending_of(st, &page.users, q.fields.as_deref()).await?;
    let results: Vec<Value> = page.users.iter().map(|u| user_json(u, &org, q.fields.as_deref(), &pending)).collect();
    let mut out = json!({ "totalCount": page.total, "results": results });
    // Keyset paging: `cursor=` with this value (and the same filter and sort) is the next page.
    if let Some(c) = &page.next {
        out["nextCursor"] = Value::String(c.encode());
    }
    Ok(Json(out))
}

#[utoipa::path(get, path = "/systemusers", operation_id = "users_list", tag = "users",
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn list(State(st): State<Shared>, _: Caller, q: QueryPairs) -> ApiResult<Json<Value>> {
    let q = ListQuery::from_pairs(&q.0)?;
    list_response(&st, &q).await
}

#[utoipa::path(post, path = "/search/systemusers", operation_id = "users_search", tag = "users",
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn search(
    State(st): State<Shared>,
    _: Caller,
    q: QueryPairs,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let mut q = ListQuery::from_pairs(&q.0)?;
    q.apply_search_body(&body)?;
    list_response(&st, &q).await
}

/// `?suppressEmail=true` creates an ACTIVATED user without the welcome or activation mail.
#[utoipa::path(post, path = "/systemusers", operation_id = "users_create", tag = "users",
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn create(
    State(st): State<Shared>,
    c: Caller,
    q: QueryPairs,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let mail = match q.get("suppressEmail") {
        None | Some("false") => MailChoice::Default,
        Some("true") => MailChoice::None,
        Some(v) => return Err(field_error("suppressEmail", format!("must be true or false, not '{v}'"))),
    };
    let u = st.dir.create_user_mail(&c.ctx, &body, CreationSource::ManualEntry, "api", mail).await?;
    one(&st, &u).await
}

#[utoipa::path(get, path = "/systemusers/{id}", operation_id = "users_show", tag = "users", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn show(State(st): State<Shared>, _: Caller, Path(id): Path<String>, q: QueryPairs) -> ApiResult<Json<Value>> {
    let fields = ListQuery::from_pairs(&q.0.into_iter().filter(|(k, _)| k == "fields").collect::<Vec<_>>())?.fields;
    let u = st.dir.get_user(&id).await?;
    let pending = pending_of(&st, std::slice::from_ref(&u), fields.as_deref()).await?;
    Ok(Json(user_json(&u, &org_id(&st).await?, fields.as_deref(), &pending)))
}

#[utoipa::path(put, path = "/systemusers/{id}", operation_id = "users_update", tag = "users", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn update(
    State(st): State<Shared>,
    c: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let u = st.dir.update_user(&c.ctx, &id, &body).await?;
    one(&st, &u).await
}

#[utoipa::path(delete, path = "/systemusers/{id}", operation_id = "users_remove", tag = "users", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn remove(State(st): State<Shared>, c: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let u = st.dir.delete_user(&c.ctx, &id).await?;
    Ok(Json(user_json(&u, &org_id(&st).await?, None, &[])))
}
