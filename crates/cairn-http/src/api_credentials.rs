//! Credential endpoints (§4.1 `expire`, `unlock`, `resetmfa`) and the outbox (§4.3 `emails`).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn_domain::user::format_time;
use cairn_domain::OutboxQuery;
use cairn_domain::{OutboxMessage, Role};
use serde_json::{json, Value};

use crate::error::ApiResult;
use crate::extract::{Caller, OptJsonBody, QueryPairs};
use crate::shapes::user_json;
use crate::Shared;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/systemusers/{id}/expire", post(expire))
        .route("/systemusers/{id}/unlock", post(unlock))
        .route("/systemusers/{id}/resetmfa", post(resetmfa))
        .route("/v2/emails", get(emails))
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

async fn unlock(State(st): State<Shared>, c: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let (u, changed) = st.dir.unlock(&c.ctx, &id).await?;
    answer(&st, &u, changed, "unlocked", "the account was not locked").await
}

/// JumpCloud's body (`{exclusion, exclusionUntil}`) is accepted and ignored: Cairn resets.
async fn resetmfa(
    State(st): State<Shared>,
    c: Caller,
    Path(id): Path<String>,
    OptJsonBody(_): OptJsonBody,
) -> ApiResult<Json<Value>> {
    let (u, changed) = st.dir.reset_mfa(&c.ctx, &id).await?;
    answer(&st, &u, changed, "TOTP cleared, sessions ended, the user was e-mailed", "no TOTP was enrolled").await
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
