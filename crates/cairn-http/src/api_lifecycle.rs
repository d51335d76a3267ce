//! Lifecycle endpoints: activate and suspend now (§4.1), bulk actions (§4.3) and scheduled
//! state changes (§4.2 `bulk/userstates`).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use cairn_directory::{Action, Outcome, ScheduleRequest, StateOutcome};
use cairn_domain::lifecycle::{MailChoice, Schedule};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::extract::{field_error, Caller, JsonBody, OptJsonBody, QueryPairs};
use crate::shapes::{schedule_json, user_json};
use crate::Shared;

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(activate))
        .routes(routes!(suspend))
        .routes(routes!(actions))
        .routes(routes!(list_schedules, create_schedules))
        .routes(routes!(next_events))
        .routes(routes!(cancel_job))
}

async fn state_answer(st: &Shared, out: StateOutcome, verb: &str) -> ApiResult<Json<Value>> {
    let org = st.dir.organization_id().await?;
    let (outcome, message) = match &out {
        StateOutcome::Changed(u) => ("done", format!("{} {verb}", u.username)),
        StateOutcome::Unchanged(u) => ("skipped", format!("{} is already {}", u.username, u.state)),
    };
    let pending = st.dir.pending_schedules_of(std::slice::from_ref(&out.user().id)).await?;
    Ok(Json(json!({ "outcome": outcome, "message": message, "user": user_json(out.user(), &org, None, &pending) })))
}

/// Body `{}` / `{"email": true|false|"address"}` (JumpCloud's email flag).
#[utoipa::path(post, path = "/systemusers/{id}/state/activate", operation_id = "lifecycle_activate", tag = "lifecycle", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn activate(
    State(st): State<Shared>,
    c: Caller,
    Path(id): Path<String>,
    OptJsonBody(body): OptJsonBody,
) -> ApiResult<Json<Value>> {
    let Some(o) = body.as_object() else {
        return Err(field_error("body", "must be a JSON object"));
    };
    if let Some(k) = o.keys().find(|k| *k != "email") {
        return Err(field_error(k, "is not a parameter of activation (only \"email\")"));
    }
    let mail = MailChoice::from_flag(o.get("email"), "email")
        .map_err(|e| ApiError::from(cairn_directory::Error::Invalid(vec![e])))?;
    let out = st.dir.activate(&c.ctx, &id, mail).await?;
    state_answer(&st, out, "activated").await
}

#[utoipa::path(post, path = "/systemusers/{id}/state/suspend", operation_id = "lifecycle_suspend", tag = "lifecycle", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn suspend(
    State(st): State<Shared>,
    c: Caller,
    Path(id): Path<String>,
    OptJsonBody(body): OptJsonBody,
) -> ApiResult<Json<Value>> {
    if let Some(k) = body.as_object().and_then(|o| o.keys().next()) {
        return Err(field_error(k, "suspension takes no parameters"));
    }
    let out = st.dir.suspend(&c.ctx, &id).await?;
    state_answer(&st, out, "suspended").await
}

/// `{action, user_ids[], …}` → one `{user_id, outcome, message}` per user.
#[utoipa::path(post, path = "/v2/users/actions", operation_id = "lifecycle_actions", tag = "lifecycle",
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn actions(State(st): State<Shared>, c: Caller, JsonBody(body): JsonBody) -> ApiResult<Json<Value>> {
    let (action, ids) = Action::parse(&body, st.dir.now())?;
    let results = st.dir.run_action(&c.ctx, &action, &ids).await?;
    let count = |o: Outcome| results.iter().filter(|r| r.outcome == o).count();
    Ok(Json(json!({
        "action": body["action"],
        "counts": { "done": count(Outcome::Done), "skipped": count(Outcome::Skipped), "error": count(Outcome::Error) },
        "results": results,
    })))
}

#[utoipa::path(post, path = "/v2/bulk/userstates", operation_id = "lifecycle_create_schedules", tag = "lifecycle",
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn create_schedules(
    State(st): State<Shared>,
    c: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<impl IntoResponse> {
    let req = ScheduleRequest::parse(&body, st.dir.now())?;
    let (_job, results) = st.dir.schedule_states(&c.ctx, &req).await?;
    let body: Vec<Value> = results
        .iter()
        .map(|(uid, r)| match r {
            Ok(s) => schedule_json(s),
            Err(e) => json!({ "systemUserId": uid, "error": e.to_string() }),
        })
        .collect();
    Ok((StatusCode::CREATED, Json(body)))
}

#[utoipa::path(get, path = "/v2/bulk/userstates", operation_id = "lifecycle_list_schedules", tag = "lifecycle",
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn list_schedules(State(st): State<Shared>, _: Caller, q: QueryPairs) -> ApiResult<impl IntoResponse> {
    let (limit, skip) = q.page(10, 100)?;
    let (total, list) = st.dir.pending_schedules(q.get("userid"), limit, skip).await?;
    let mut h = HeaderMap::new();
    h.insert("x-total-count", HeaderValue::from(total));
    Ok((h, Json(Value::Array(list.iter().map(schedule_json).collect()))))
}

#[utoipa::path(delete, path = "/v2/bulk/userstates/{id}", operation_id = "lifecycle_cancel_job", tag = "lifecycle", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn cancel_job(State(st): State<Shared>, c: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    st.dir.cancel_job(&c.ctx, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The next pending change per user and target state, for up to 100 users
/// (`users=a&users=b` or `users=a,b`).
#[utoipa::path(get, path = "/v2/bulk/userstates/eventlist/next", operation_id = "lifecycle_next_events", tag = "lifecycle",
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn next_events(State(st): State<Shared>, _: Caller, q: QueryPairs) -> ApiResult<Json<Value>> {
    let (limit, skip) = q.page(10, 100)?;
    let users: Vec<String> = q
        .0
        .iter()
        .filter(|(k, _)| k == "users" || k == "users[]")
        .flat_map(|(_, v)| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect::<Vec<_>>())
        .collect();
    if users.len() > 100 {
        return Err(field_error("users", "at most 100 users per request"));
    }
    // At most one per user and state: the soonest (the store returns them soonest first).
    let mut seen = std::collections::HashSet::new();
    let next: Vec<Schedule> = st
        .dir
        .pending_schedules_of(&users)
        .await?
        .into_iter()
        .filter(|s| seen.insert((s.user_id.clone(), s.target)))
        .collect();
    let page: Vec<Value> = next.iter().skip(skip as usize).take(limit as usize).map(schedule_json).collect();
    Ok(Json(json!({ "events_count": next.len(), "results": page })))
}
