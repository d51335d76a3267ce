//! `GET /api/openapi.json`: the document derived from the mounted routes (see
//! `openapi_doc::build`), made once when the router is built.

use std::sync::OnceLock;

use axum::Json;
use serde_json::Value;

pub(crate) static DOCUMENT: OnceLock<Value> = OnceLock::new();

/// The OpenAPI 3 document of this API.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi_document", tag = "meta", security(()),
    responses((status = 200, description = "this document")))]
pub async fn document() -> Json<Value> {
    Json(DOCUMENT.get().cloned().unwrap_or(Value::Null))
}
