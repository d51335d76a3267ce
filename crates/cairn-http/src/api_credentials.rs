//! Credential endpoints (§4.1 `expire`, `unlock`, `resetmfa`) and the outbox (§4.3 `emails`).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use axum::Json;
use cairn_domain::user::format_time;
use cairn_domain::OutboxQuery;
use cairn_domain::{OutboxMessage, Role};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiResult;
use crate::extract::{field_error, Caller, JsonBody, OptJsonBody, QueryPairs};
use crate::shapes::user_json;
use crate::Shared;

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(expire))
        .routes(routes!(unlock))
        .routes(routes!(resetmfa))
        .routes(routes!(set_password))
        .routes(routes!(emails))
}

async fn answer(
    st: &Shared,
    u: &cairn_domain::User,
    changed: bool,
    done: &str,
    skipped: &str,
) -> ApiResult<Json<Value>> {
    let org = st.dir.organization_id().await?;
    let pending = st.dir.pending_schedules_of(std::slice::from_ref(&u.id)).await?;
    Ok(Json(json!({
        "outcome": if changed { "done" } else { "skipped" },
        "message": if changed { done } else { skipped },
        "user": user_json(u, &org, None, &pending),
    })))
}

#[utoipa::path(post, path = "/systemusers/{id}/expire", operation_id = "credentials_expire", tag = "credentials", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn expire(State(st): State<Shared>, c: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let (u, changed) = st.dir.expire_password(&c.ctx, &id).await?;
    answer(
        &st,
        &u,
        changed,
        "the password must be changed at the next login; sessions ended",
        "the password is pending or already expired",
    )
    .await
}

#[utoipa::path(post, path = "/systemusers/{id}/unlock", operation_id = "credentials_unlock", tag = "credentials", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn unlock(State(st): State<Shared>, c: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let (u, changed) = st.dir.unlock(&c.ctx, &id).await?;
    answer(&st, &u, changed, "unlocked", "the account was not locked").await
}

/// Clears TOTP; JumpCloud's body `{exclusion, exclusionUntil | exclusionDays}` gives the user
/// an enrolment period during which MFA is not asked (`mfa{exclusion, exclusionUntil}`).
#[utoipa::path(post, path = "/systemusers/{id}/resetmfa", operation_id = "credentials_resetmfa", tag = "credentials", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn resetmfa(
    State(st): State<Shared>,
    c: Caller,
    Path(id): Path<String>,
    OptJsonBody(body): OptJsonBody,
) -> ApiResult<Json<Value>> {
    let until = cairn_domain::user::parse_mfa_reset(&body, st.dir.now())?;
    let (u, changed) = st.dir.reset_mfa_with(&c.ctx, &id, until).await?;
    let done = match until {
        Some(t) => {
            format!("TOTP cleared, sessions ended, the user was e-mailed; MFA is not asked until {}", format_time(t))
        }
        None => "TOTP cleared, sessions ended, the user was e-mailed".into(),
    };
    answer(&st, &u, changed, &done, "no TOTP was enrolled").await
}

/// `{"password": …}`: an administrator sets the password (the path JumpCloud's v1 spec lists
/// without an operation). The same policy, authority and revocation as every password change;
/// answers the user.
#[utoipa::path(post, path = "/systemusers/{id}/password", operation_id = "credentials_set_password", tag = "credentials", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn set_password(
    State(st): State<Shared>,
    c: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let Some(obj) = body.as_object() else {
        return Err(field_error("body", "must be a JSON object: {\"password\": \"…\"}"));
    };
    if let Some(k) = obj.keys().find(|k| *k != "password") {
        let k: String = k.chars().take(64).collect();
        return Err(field_error(&k, "is not a parameter of a password change (only \"password\")"));
    }
    let password = match obj.get("password") {
        Some(Value::String(p)) => cairn_domain::Secret::new(p.clone()),
        Some(_) => return Err(field_error("password", "must be a string")),
        None => return Err(field_error("password", "is required")),
    };
    let u = st.dir.set_password_by_admin(&c.ctx, &id, &password).await?;
    let org = st.dir.organization_id().await?;
    let pending = st.dir.pending_schedules_of(std::slice::from_ref(&u.id)).await?;
    Ok(Json(user_json(&u, &org, None, &pending)))
}

fn message_json(m: &OutboxMessage, reveal: bool) -> Value {
    // Read-only keys see messages without their one-time links.
    let body = |s: &str| if reveal { s.to_string() } else { cairn_directory::scrub_tokens(s) };
    json!({
        "id": m.id,
        "created": format_time(m.created),
        "type": m.kind,
        "to": m.to,
        "user_id": m.user_id,
        "subject": m.subject,
        "text": body(&m.text),
        "html": body(&m.html),
        "status": m.status,
        "attempts": m.attempts,
        "sent": m.sent.map(format_time),
        "error": m.last_error,
    })
}

/// Newest first; `to`, `type`, `status`, `user_id`, `limit` (default 100), `skip`.
#[utoipa::path(get, path = "/v2/emails", operation_id = "credentials_emails", tag = "credentials",
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn emails(State(st): State<Shared>, c: Caller, q: QueryPairs) -> ApiResult<impl IntoResponse> {
    let (limit, skip) = q.page(100, 1000)?;
    let oq = OutboxQuery {
        to: q.get("to").map(|s| s.trim().to_lowercase()),
        kind: q.get("type").map(String::from),
        status: q.get("status").map(String::from),
        user_id: q.get("user_id").map(String::from),
        limit,
        skip,
    };
    let (total, list) = st.dir.list_messages(&oq).await?;
    let reveal = c.role == Role::Admin;
    let mut h = HeaderMap::new();
    h.insert("x-total-count", HeaderValue::from(total));
    Ok((h, Json(Value::Array(list.iter().map(|m| message_json(m, reveal)).collect()))))
}
