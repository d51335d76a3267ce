//! Service accounts (§4.3): OAuth 2.0 client credentials for API automation, created and
//! revoked by admins; the client secret is shown once, at creation.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use cairn_domain::oauth::ServiceAccount;
use cairn_domain::user::format_time;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiResult;
use crate::extract::{Caller, JsonBody};
use crate::Shared;

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(remove))
}

pub(crate) fn account_json(a: &ServiceAccount) -> Value {
    json!({
        "id": a.id,
        "name": a.name,
        "role": a.role.as_str(),
        "client_id": a.client_id,
        "created": format_time(a.created),
        "createdBy": a.created_by,
        "lastUsed": a.last_used.map(format_time),
    })
}

#[utoipa::path(get, path = "/v2/serviceaccounts", operation_id = "service_list", tag = "service accounts",
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn list(State(st): State<Shared>, _: Caller) -> ApiResult<Json<Value>> {
    let all = st.dir.list_service_accounts().await?;
    Ok(Json(Value::Array(all.iter().map(account_json).collect())))
}

/// `{name, role: admin|read-only}` → 201 with `client_id` and `client_secret`, shown once.
#[utoipa::path(post, path = "/v2/serviceaccounts", operation_id = "service_create", tag = "service accounts",
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn create(State(st): State<Shared>, c: Caller, JsonBody(body): JsonBody) -> ApiResult<impl IntoResponse> {
    let (name, role) = crate::api_misc::name_and_role(&body, "a service account")?;
    let new = st.dir.create_service_account(&c.ctx, &name, role).await?;
    let mut v = account_json(&new.account);
    v["client_secret"] = new.secret.expose().into();
    v["token_endpoint"] = "/oauth2/token".into();
    Ok((StatusCode::CREATED, Json(v)))
}

/// Revokes the account: every token it holds stops working at once.
#[utoipa::path(delete, path = "/v2/serviceaccounts/{id}", operation_id = "service_remove", tag = "service accounts", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn remove(State(st): State<Shared>, c: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    st.dir.delete_service_account(&c.ctx, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
