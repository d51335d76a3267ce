//! Request plumbing: JSON bodies with precise errors, query pairs, and the caller.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use cairn_directory::Ctx;
use cairn_domain::fields::{has_nul, NUL_REFUSED};
use serde_json::Value;

use crate::error::ApiError;

/// A JSON body. Any content type is read as JSON (curl's default form type included); a body
/// that is not JSON gets a 400 that says where parsing stopped; an oversized one a 413.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let status = e.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(status, format!("request body is larger than the limit of {} bytes", crate::BODY_LIMIT))
            } else {
                ApiError::new(status, format!("could not read the request body: {e}"))
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request("a JSON request body is required"));
        }
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad_request(format!("malformed JSON at line {}, column {}: {e}", e.line(), e.column()))
        })?;
        refuse_nul(&v)?;
        Ok(JsonBody(v))
    }
}

/// Refuses a JSON document with a NUL byte in any string or key, naming where: no database
/// stores one as text, so it never gets further than this.
pub fn refuse_nul(v: &Value) -> Result<(), ApiError> {
    match cairn_domain::fields::nul_path(v) {
        None => Ok(()),
        Some(at) if at.is_empty() => Err(field_error("body", cairn_domain::fields::NUL_REFUSED)),
        Some(at) => Err(field_error(at.trim_start_matches('.'), cairn_domain::fields::NUL_REFUSED)),
    }
}

/// An optional JSON body: empty means `{}`.
pub struct OptJsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for OptJsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), format!("could not read the request body: {e}")))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptJsonBody(Value::Object(Default::default())));
        }
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad_request(format!("malformed JSON at line {}, column {}: {e}", e.line(), e.column()))
        })?;
        refuse_nul(&v)?;
        Ok(OptJsonBody(v))
    }
}

/// The raw query as ordered pairs, so repeated and bracketed keys (`filter[0]`) survive.
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(q).map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?;
        // A NUL byte (`%00`) in a parameter is refused here, naming it, before any parsing.
        if let Some((k, _)) = pairs.iter().find(|(k, v)| has_nul(k) || has_nul(v)) {
            return Err(field_error(&k.replace('\0', "\\u0000"), NUL_REFUSED));
        }
        Ok(QueryPairs(pairs))
    }
}

impl QueryPairs {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// `limit` and `skip` for the v2 lists (JumpCloud: default 10, at most 100).
    pub fn page(&self, default: i64, max: i64) -> Result<(i64, i64), ApiError> {
        let limit = match self.get("limit") {
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| field_error("limit", format!("must be a whole number from 1 to {max}")))?,
            None => default,
        };
        let skip = match self.get("skip") {
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| field_error("skip", "must be a whole number of at least 0"))?,
            None => 0,
        };
        Ok((limit, skip))
    }
}

pub fn field_error(field: &str, message: impl Into<String>) -> ApiError {
    let e = cairn_directory::Error::invalid(field, message);
    e.into()
}

/// The authenticated caller of an `/api` request, put in the request by the auth layer.
#[derive(Clone)]
pub struct Caller {
    pub ctx: Ctx,
    pub role: cairn_domain::Role,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "an API key is required"))
    }
}
