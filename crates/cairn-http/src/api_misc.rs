//! Organization settings, API keys and the event log.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use cairn_directory::Organization;
use cairn_domain::user::format_time;
use cairn_domain::EventQuery;
use cairn_domain::{ApiKey, Event, FieldError, Role};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, JsonBody, QueryPairs};
use crate::Shared;

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list_orgs, put_org_any))
        .routes(routes!(get_org, put_org))
        .routes(routes!(list_keys, create_key))
        .routes(routes!(delete_key))
        .routes(routes!(events))
}

fn org_json(o: &Organization) -> Value {
    json!({
        "_id": o.id,
        "id": o.id,
        "displayName": o.name,
        "logoUrl": "",
        "created": format_time(o.created),
        "settings": o.settings,
    })
}

#[utoipa::path(get, path = "/organizations", operation_id = "misc_list_orgs", tag = "organization",
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn list_orgs(State(st): State<Shared>, _: Caller) -> ApiResult<Json<Value>> {
    let o = st.dir.organization().await?;
    Ok(Json(json!({ "totalCount": 1, "results": [org_json(&o)] })))
}

#[utoipa::path(get, path = "/organizations/{id}", operation_id = "misc_get_org", tag = "organization", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn get_org(State(st): State<Shared>, _: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let o = st.dir.organization().await?;
    if o.id != id {
        return Err(ApiError::not_found(format!("no organization with id '{id}'")));
    }
    Ok(Json(org_json(&o)))
}

#[utoipa::path(put, path = "/organizations/{id}", operation_id = "misc_put_org", tag = "organization", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn put_org(
    State(st): State<Shared>,
    c: Caller,
    Path(id): Path<String>,
    body: JsonBody,
) -> ApiResult<Json<Value>> {
    let o = st.dir.organization().await?;
    if o.id != id {
        return Err(ApiError::not_found(format!("no organization with id '{id}'")));
    }
    put_org_any(State(st), c, body).await
}

/// Body: `{"settings": {…}}` with any subset of the settings (JumpCloud organizationsettingsput).
#[utoipa::path(put, path = "/organizations", operation_id = "misc_put_org_any", tag = "organization",
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn put_org_any(State(st): State<Shared>, c: Caller, JsonBody(body): JsonBody) -> ApiResult<Json<Value>> {
    let Some(obj) = body.as_object() else {
        return Err(cairn_directory::Error::invalid("body", "must be a JSON object").into());
    };
    let mut errors = vec![];
    for k in obj.keys().filter(|k| !matches!(k.as_str(), "settings" | "_id" | "id")) {
        errors.push(FieldError::new(k.clone(), "cannot be changed here: send {\"settings\": {…}}"));
    }
    let Some(settings) = obj.get("settings") else {
        errors.push(FieldError::new("settings", "is required"));
        return Err(cairn_directory::Error::Invalid(errors).into());
    };
    if !errors.is_empty() {
        return Err(cairn_directory::Error::Invalid(errors).into());
    }
    let o = st.dir.update_settings(&c.ctx, settings).await?;
    Ok(Json(org_json(&o)))
}

fn key_json(k: &ApiKey) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "role": k.role.as_str(),
        "prefix": k.prefix,
        "created": format_time(k.created),
        "createdBy": k.created_by,
        "lastUsed": k.last_used.map(format_time),
    })
}

#[utoipa::path(get, path = "/v2/apikeys", operation_id = "misc_list_keys", tag = "organization",
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn list_keys(State(st): State<Shared>, _: Caller) -> ApiResult<Json<Value>> {
    let keys = st.dir.list_apikeys().await?;
    Ok(Json(Value::Array(keys.iter().map(key_json).collect())))
}

/// `{name, role: admin|read-only}` → 201 with the key, shown this once.
#[utoipa::path(post, path = "/v2/apikeys", operation_id = "misc_create_key", tag = "organization",
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn create_key(State(st): State<Shared>, c: Caller, JsonBody(body): JsonBody) -> ApiResult<impl IntoResponse> {
    let (name, role) = name_and_role(&body, "an API key")?;
    let new = st.dir.create_apikey(&c.ctx, &name, role).await?;
    let mut v = key_json(&new.key);
    v["key"] = new.secret.expose().into();
    Ok((StatusCode::CREATED, Json(v)))
}

#[utoipa::path(delete, path = "/v2/apikeys/{id}", operation_id = "misc_delete_key", tag = "organization", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn delete_key(State(st): State<Shared>, c: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    st.dir.delete_apikey(&c.ctx, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn event_json(e: &Event) -> Value {
    json!({
        "id": e.id,
        "time": format_time(e.time),
        "actor": e.actor,
        "action": e.action,
        "target": { "type": e.target_kind, "id": e.target_id, "name": e.target_name },
        "source": e.source,
        "client_addr": e.client_addr,
        "outcome": e.outcome,
        "changes": e.changes,
        "detail": e.detail,
    })
}

fn parse_instant(field: &str, v: Option<&str>) -> Result<Option<DateTime<Utc>>, FieldError> {
    v.map(|s| {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| FieldError::new(field, format!("'{s}' is not an RFC 3339 time such as 2026-01-31T09:00:00Z")))
    })
    .transpose()
}

/// Newest first; `user_id`, `action`, `since`, `until`, `limit` (default 100, at most 1000), `skip`.
#[utoipa::path(get, path = "/v2/events", operation_id = "misc_events", tag = "organization",
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn events(State(st): State<Shared>, _: Caller, q: QueryPairs) -> ApiResult<impl IntoResponse> {
    let (limit, skip) = q.page(100, 1000)?;
    let mut errors = vec![];
    let since = parse_instant("since", q.get("since")).unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    let until = parse_instant("until", q.get("until")).unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    if !errors.is_empty() {
        return Err(ApiError::from(cairn_directory::Error::Invalid(errors)));
    }
    let eq = EventQuery {
        target_id: q.get("user_id").or(q.get("target_id")).map(String::from),
        action: q.get("action").map(String::from),
        since,
        until,
        limit,
        skip,
    };
    let (total, events) = st.dir.list_events(&eq).await?;
    let mut h = HeaderMap::new();
    h.insert("x-total-count", HeaderValue::from(total));
    Ok((h, Json(Value::Array(events.iter().map(event_json).collect()))))
}

/// The `{name, role}` body that creates an API key or a service account: a name, and `admin`
/// (the default) or `read-only`; any other field is refused by name (the first ten).
pub(crate) fn name_and_role(body: &Value, what: &str) -> ApiResult<(String, Role)> {
    let mut errors = vec![];
    let name = body.get("name").and_then(Value::as_str).unwrap_or("");
    if name.trim().is_empty() {
        errors.push(FieldError::new("name", "is required"));
    }
    let role = match body.get("role") {
        None | Some(Value::Null) => Some(Role::Admin),
        Some(v) => v.as_str().and_then(Role::parse),
    };
    if role.is_none() {
        errors.push(FieldError::new("role", "must be \"admin\" or \"read-only\""));
    }
    match body.as_object() {
        Some(o) => {
            for k in o.keys().filter(|k| !matches!(k.as_str(), "name" | "role")).take(10) {
                let k: String = k.chars().take(64).collect();
                errors.push(FieldError::new(k, format!("is not a field of {what} (name, role)")));
            }
        }
        None => errors.push(FieldError::new("body", "must be a JSON object: {\"name\": …, \"role\": …}")),
    }
    if !errors.is_empty() {
        return Err(ApiError::from(cairn_directory::Error::Invalid(errors)));
    }
    Ok((name.to_string(), role.unwrap_or(Role::Admin)))
}
