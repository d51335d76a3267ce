//! SCIM 2.0 service provider under `/scim/v2` (§9, RFC 7643/7644), and the admin endpoints
//! for SCIM tokens under `/api/v2/scim/tokens`. Handlers translate SCIM to `cairn_directory`
//! calls; the filter grammar lives in `cairn_domain::scim`, its SQL in `cairn_store`.

mod discovery;
mod resources;

use std::net::SocketAddr;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::header::{CONTENT_TYPE, ETAG, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn_directory::{Ctx, Directory, Error, ScimQuery};
use cairn_domain::scim::{parse_filter, parse_path, AttrPath, Filter, ScimParseError};
use cairn_domain::user::format_time;
use cairn_domain::Role;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, JsonBody};
use crate::Shared;

pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const SEARCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
const SCIM_JSON: &str = "application/scim+json";
/// Largest page a list returns.
pub const MAX_COUNT: i64 = 1000;

// ---- errors ---------------------------------------------------------------------------------

/// The SCIM error (RFC 7644 §3.12).
#[derive(Debug)]
pub struct ScimError {
    pub status: u16,
    pub scim_type: Option<&'static str>,
    pub detail: String,
}

impl ScimError {
    pub fn new(status: u16, scim_type: Option<&'static str>, detail: impl Into<String>) -> ScimError {
        ScimError { status, scim_type, detail: detail.into() }
    }
    pub fn invalid_value(detail: impl Into<String>) -> ScimError {
        ScimError::new(400, Some("invalidValue"), detail)
    }
    pub fn invalid_syntax(detail: impl Into<String>) -> ScimError {
        ScimError::new(400, Some("invalidSyntax"), detail)
    }
    pub fn invalid_path(detail: impl Into<String>) -> ScimError {
        ScimError::new(400, Some("invalidPath"), detail)
    }
    fn not_found(detail: impl Into<String>) -> ScimError {
        ScimError::new(404, None, detail)
    }
}

impl From<ScimParseError> for ScimError {
    fn from(e: ScimParseError) -> ScimError {
        ScimError::new(400, Some(e.scim_type), e.detail)
    }
}

impl From<Error> for ScimError {
    fn from(e: Error) -> ScimError {
        match &e {
            Error::NotFound(m) => ScimError::new(404, None, m.clone()),
            Error::Invalid(_) => ScimError::invalid_value(e.to_string()),
            Error::Conflict(m) if m.contains("already") => ScimError::new(409, Some("uniqueness"), m.clone()),
            Error::Conflict(m) => ScimError::new(409, None, m.clone()),
            Error::Forbidden(m) => ScimError::new(400, Some("mutability"), m.clone()),
            Error::Unauthorized(m) => ScimError::new(401, None, m.clone()),
            Error::Refused(cairn_directory::Refusal::Throttled) => ScimError::new(429, None, e.to_string()),
            Error::Refused(_) => ScimError::new(401, None, e.to_string()),
            Error::Filter(f) => ScimError::new(400, Some(f.scim_type), f.detail.clone()),
            Error::Internal(_) => ScimError::new(500, None, "internal error; see the server log"),
        }
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let mut body = json!({ "schemas": [ERROR_SCHEMA], "status": self.status.to_string(), "detail": self.detail });
        if let Some(t) = self.scim_type {
            body["scimType"] = json!(t);
        }
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = (status, [(CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON))], body.to_string()).into_response();
        if self.status == 401 {
            r.headers_mut().insert("www-authenticate", HeaderValue::from_static("Bearer realm=\"cairn-scim\""));
        }
        r
    }
}

type ScimResult<T> = Result<T, ScimError>;

fn scim_json(status: StatusCode, v: &Value) -> Response {
    let mut r = (status, [(CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON))], v.to_string()).into_response();
    if let Some(ver) = v.pointer("/meta/version").and_then(Value::as_str) {
        if let Ok(h) = HeaderValue::from_str(ver) {
            r.headers_mut().insert(ETAG, h);
        }
    }
    r
}

/// A JSON body of any content type (`application/scim+json` or `application/json`).
struct ScimBody(Value);

impl<S: Send + Sync> axum::extract::FromRequest<S> for ScimBody {
    type Rejection = ScimError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            ScimError::new(e.status().as_u16(), Some("invalidSyntax"), format!("could not read the request body: {e}"))
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ScimError::invalid_syntax("a JSON request body is required"));
        }
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ScimError::invalid_syntax(format!("malformed JSON at line {}, column {}: {e}", e.line(), e.column()))
        })?;
        // No database stores a NUL byte as text: refused here, naming the attribute.
        if let Some(at) = cairn_domain::fields::nul_path(&v) {
            let at = if at.is_empty() { "the body".to_string() } else { at };
            return Err(ScimError::invalid_value(format!("{at}: {}", cairn_domain::fields::NUL_REFUSED)));
        }
        Ok(ScimBody(v))
    }
}

// ---- auth -----------------------------------------------------------------------------------

#[derive(Clone)]
struct ScimCaller(Ctx);

/// Only SCIM tokens, only as `Authorization: Bearer`; API keys are refused here.
async fn authenticate(State(st): State<Shared>, mut req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let Some(presented) = presented else {
        metrics::counter!("cairn_auth_total", "protocol" => "scim", "outcome" => "failure").increment(1);
        return ScimError::new(401, None, "a SCIM bearer token is required (Authorization: Bearer …)").into_response();
    };
    let token = match st.dir.authenticate_scim_token(&presented).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            metrics::counter!("cairn_auth_total", "protocol" => "scim", "outcome" => "failure").increment(1);
            return ScimError::new(401, None, "the SCIM token is not valid").into_response();
        }
        Err(e) => return ScimError::from(e).into_response(),
    };
    metrics::counter!("cairn_auth_total", "protocol" => "scim", "outcome" => "success").increment(1);
    let client = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
    let ctx = Ctx::new(Directory::scim_actor(&token), "scim", client);
    req.extensions_mut().insert(ScimCaller(ctx));
    next.run(req).await
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ScimCaller {
    type Rejection = ScimError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<ScimCaller>().cloned().ok_or_else(|| ScimError::new(401, None, "not authenticated"))
    }
}

// ---- routes ---------------------------------------------------------------------------------

/// The `/scim/v2` router (nest it there).
pub fn routes(state: Shared) -> Router<Shared> {
    Router::new()
        .route("/ServiceProviderConfig", get(discovery::service_provider_config))
        .route("/ResourceTypes", get(discovery::resource_types))
        .route("/ResourceTypes/{name}", get(discovery::resource_type))
        .route("/Schemas", get(discovery::schemas))
        .route("/Schemas/{id}", get(discovery::schema))
        .route("/Users", get(list_users).post(create_user))
        .route("/Users/.search", post(search_users))
        .route("/Users/{id}", get(get_user).put(put_user).patch(patch_user).delete(delete_user))
        .route("/Groups", get(list_groups).post(create_group))
        .route("/Groups/.search", post(search_groups))
        .route("/Groups/{id}", get(get_group).put(put_group).patch(patch_group).delete(delete_group))
        .route("/.search", post(search_root))
        .fallback(|| async { ScimError::not_found("no such SCIM endpoint") })
        .layer(middleware::from_fn_with_state(state, authenticate))
}

/// The admin endpoints for SCIM tokens, merged into the `/api` router.
pub fn api_routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(list_tokens, create_token)).routes(routes!(delete_token))
}

/// The base URL of this service provider, for `meta.location`.
/// Where resources live (`meta.location`, `Location`): always from `CAIRN_BASE_URL`, never
/// from the request's `Host`, which a client chooses.
fn base(st: &Shared) -> String {
    format!("{}/scim/v2", st.dir.config().base_url.trim_end_matches('/'))
}

// ---- list parameters ------------------------------------------------------------------------

struct ListParams {
    filter: Option<Filter>,
    start: i64,
    count: i64,
    sort_by: Option<AttrPath>,
    descending: bool,
    attributes: Option<String>,
    excluded: Option<String>,
}

impl ListParams {
    fn query(&self) -> ScimQuery<'_> {
        ScimQuery {
            filter: self.filter.as_ref(),
            sort_by: self.sort_by.as_ref(),
            descending: self.descending,
            start: self.start,
            count: self.count,
        }
    }
}

fn int_param(v: Option<&Value>, name: &str) -> ScimResult<Option<i64>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            n.as_i64().map(Some).ok_or_else(|| ScimError::invalid_value(format!("{name} must be an integer")))
        }
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ScimError::invalid_value(format!("{name} must be an integer"))),
        Some(_) => Err(ScimError::invalid_value(format!("{name} must be an integer"))),
    }
}

fn str_param(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(a)) => Some(a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")),
        _ => None,
    }
}

/// Reads list parameters from a query string or a SearchRequest body (same names).
fn list_params(p: &serde_json::Map<String, Value>) -> ScimResult<ListParams> {
    let get = |k: &str| p.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v);
    let filter = match str_param(get("filter")) {
        Some(f) => Some(parse_filter(&f)?),
        None => None,
    };
    let start = int_param(get("startIndex"), "startIndex")?.unwrap_or(1).max(1) - 1;
    let count = int_param(get("count"), "count")?.unwrap_or(100).clamp(0, MAX_COUNT);
    let sort_by = match str_param(get("sortBy")) {
        Some(s) if !s.trim().is_empty() => {
            let p = parse_path(&s).map_err(|e| ScimError::invalid_value(e.detail))?;
            if p.filter.is_some() {
                return Err(ScimError::invalid_value("sortBy must be an attribute path"));
            }
            Some(p.attr)
        }
        _ => None,
    };
    let descending = match str_param(get("sortOrder")).map(|s| s.to_ascii_lowercase()) {
        None => false,
        Some(s) if s == "ascending" => false,
        Some(s) if s == "descending" => true,
        Some(s) => return Err(ScimError::invalid_value(format!("sortOrder '{s}' is not ascending or descending"))),
    };
    Ok(ListParams {
        filter,
        start,
        count,
        sort_by,
        descending,
        attributes: str_param(get("attributes")),
        excluded: str_param(get("excludedAttributes")),
    })
}

fn query_map(uri: &axum::http::Uri) -> ScimResult<serde_json::Map<String, Value>> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(uri.query().unwrap_or(""))
        .map_err(|e| ScimError::invalid_value(format!("malformed query string: {e}")))?;
    Ok(pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect())
}

fn list_response(total: i64, start: i64, resources: Vec<Value>) -> Response {
    scim_json(
        StatusCode::OK,
        &json!({
            "schemas": [LIST_SCHEMA],
            "totalResults": total,
            "startIndex": start + 1,
            "itemsPerPage": resources.len(),
            "Resources": resources,
        }),
    )
}

fn search_body(body: &Value) -> ScimResult<serde_json::Map<String, Value>> {
    let o = body.as_object().ok_or_else(|| ScimError::invalid_syntax("a SearchRequest must be a JSON object"))?;
    if let Some(s) = o.get("schemas").and_then(Value::as_array) {
        if !s.iter().any(|x| x.as_str() == Some(SEARCH_SCHEMA)) {
            return Err(ScimError::invalid_syntax(format!("a SearchRequest must name the schema {SEARCH_SCHEMA}")));
        }
    }
    Ok(o.clone())
}

// ---- preconditions --------------------------------------------------------------------------

fn check_if_match(headers: &HeaderMap, current: &Value) -> ScimResult<()> {
    let Some(want) = headers.get("if-match").and_then(|v| v.to_str().ok()) else { return Ok(()) };
    let version = current.pointer("/meta/version").and_then(Value::as_str).unwrap_or("");
    let strip = |s: &str| s.trim().trim_start_matches("W/").trim_matches('"').to_string();
    if want.split(',').any(|w| w.trim() == "*" || strip(w) == strip(version)) {
        Ok(())
    } else {
        Err(ScimError::new(412, None, "the resource has changed since the version given in If-Match"))
    }
}

fn not_modified(headers: &HeaderMap, v: &Value) -> bool {
    let Some(h) = headers.get("if-none-match").and_then(|v| v.to_str().ok()) else { return false };
    let version = v.pointer("/meta/version").and_then(Value::as_str).unwrap_or("");
    h.split(',').any(|x| x.trim() == version || x.trim() == "*")
}

// ---- users ----------------------------------------------------------------------------------

async fn user_doc(st: &Shared, base: &str, id: &str) -> ScimResult<Value> {
    let row = st.dir.scim_user(id).await?;
    let groups = st.dir.scim_user_groups(id).await?;
    Ok(resources::user_resource(base, &row, &groups))
}

async fn users_page(st: &Shared, base: &str, p: &ListParams) -> ScimResult<(i64, Vec<Value>)> {
    let (total, rows) = st.dir.scim_list_users(&p.query()).await?;
    let want_groups = !excludes(p, "groups");
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let groups = if want_groups { st.dir.scim_user_groups(&r.user.id).await? } else { vec![] };
        let doc = resources::user_resource(base, &r, &groups);
        out.push(resources::project(doc, p.attributes.as_deref(), p.excluded.as_deref()));
    }
    Ok((total, out))
}

fn excludes(p: &ListParams, attr: &str) -> bool {
    let listed =
        |s: &Option<String>| s.as_deref().is_some_and(|s| s.split(',').any(|a| a.trim().eq_ignore_ascii_case(attr)));
    listed(&p.excluded) || (p.attributes.is_some() && !listed(&p.attributes))
}

async fn list_users(State(st): State<Shared>, uri: axum::http::Uri) -> ScimResult<Response> {
    let p = list_params(&query_map(&uri)?)?;
    let (total, list) = users_page(&st, &base(&st), &p).await?;
    Ok(list_response(total, p.start, list))
}

async fn search_users(State(st): State<Shared>, ScimBody(b): ScimBody) -> ScimResult<Response> {
    let p = list_params(&search_body(&b)?)?;
    let (total, list) = users_page(&st, &base(&st), &p).await?;
    Ok(list_response(total, p.start, list))
}

fn single_params(uri: &axum::http::Uri) -> ScimResult<(Option<String>, Option<String>)> {
    let q = query_map(uri)?;
    let get =
        |k: &str| q.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).and_then(|(_, v)| v.as_str().map(String::from));
    Ok((get("attributes"), get("excludedAttributes")))
}

async fn get_user(
    State(st): State<Shared>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Path(id): Path<String>,
) -> ScimResult<Response> {
    let doc = user_doc(&st, &base(&st), &id).await?;
    if not_modified(&headers, &doc) {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let (a, x) = single_params(&uri)?;
    Ok(scim_json(StatusCode::OK, &resources::project(doc, a.as_deref(), x.as_deref())))
}

async fn create_user(State(st): State<Shared>, c: ScimCaller, ScimBody(b): ScimBody) -> ScimResult<Response> {
    let change = resources::user_change(&b, true)?;
    let row = st.dir.scim_create_user(&c.0, change).await?;
    let base = base(&st);
    let doc = user_doc(&st, &base, &row.user.id).await?;
    let mut r = scim_json(StatusCode::CREATED, &doc);
    if let Ok(h) = HeaderValue::from_str(&format!("{base}/Users/{}", row.user.id)) {
        r.headers_mut().insert(LOCATION, h);
    }
    Ok(r)
}

async fn put_user(
    State(st): State<Shared>,
    c: ScimCaller,
    headers: HeaderMap,
    Path(id): Path<String>,
    ScimBody(b): ScimBody,
) -> ScimResult<Response> {
    let base = base(&st);
    let current = user_doc(&st, &base, &id).await?;
    check_if_match(&headers, &current)?;
    let change = resources::user_change(&b, false)?;
    st.dir.scim_update_user(&c.0, &id, change).await?;
    Ok(scim_json(StatusCode::OK, &user_doc(&st, &base, &id).await?))
}

fn strip_read_only(doc: &mut Value) {
    if let Some(o) = doc.as_object_mut() {
        o.remove("meta");
        o.remove("groups");
    }
}

async fn patch_user(
    State(st): State<Shared>,
    c: ScimCaller,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Path(id): Path<String>,
    ScimBody(b): ScimBody,
) -> ScimResult<Response> {
    let base = base(&st);
    let current = user_doc(&st, &base, &id).await?;
    check_if_match(&headers, &current)?;
    let mut doc = current.clone();
    strip_read_only(&mut doc);
    resources::annotate_emails(&mut doc);
    let before = doc.clone();
    let password = resources::apply_patch(&mut doc, &b)?;
    if doc != before || password.is_some() {
        let mut change = resources::user_change(&doc, false)?;
        change.password = password;
        if doc.get("active") == before.get("active") {
            change.active = None;
        }
        st.dir.scim_update_user(&c.0, &id, change).await?;
    }
    let (a, x) = single_params(&uri)?;
    let out = user_doc(&st, &base, &id).await?;
    Ok(scim_json(StatusCode::OK, &resources::project(out, a.as_deref(), x.as_deref())))
}

async fn delete_user(
    State(st): State<Shared>,
    c: ScimCaller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ScimResult<Response> {
    let current = user_doc(&st, &base(&st), &id).await?;
    check_if_match(&headers, &current)?;
    st.dir.delete_user(&c.0, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- groups ---------------------------------------------------------------------------------

async fn group_doc(st: &Shared, base: &str, id: &str, members: bool) -> ScimResult<Value> {
    let row = st.dir.scim_group(id).await?;
    let m = if members { st.dir.scim_group_members(id).await? } else { vec![] };
    Ok(resources::group_resource(base, &row, &m))
}

async fn groups_page(st: &Shared, base: &str, p: &ListParams) -> ScimResult<(i64, Vec<Value>)> {
    let (total, rows) = st.dir.scim_list_groups(&p.query()).await?;
    let want_members = !excludes(p, "members");
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let m = if want_members { st.dir.scim_group_members(&r.group.id).await? } else { vec![] };
        let mut doc = resources::group_resource(base, &r, &m);
        if !want_members {
            if let Some(o) = doc.as_object_mut() {
                o.remove("members");
            }
        }
        out.push(resources::project(doc, p.attributes.as_deref(), p.excluded.as_deref()));
    }
    Ok((total, out))
}

async fn list_groups(State(st): State<Shared>, uri: axum::http::Uri) -> ScimResult<Response> {
    let p = list_params(&query_map(&uri)?)?;
    let (total, list) = groups_page(&st, &base(&st), &p).await?;
    Ok(list_response(total, p.start, list))
}

async fn search_groups(State(st): State<Shared>, ScimBody(b): ScimBody) -> ScimResult<Response> {
    let p = list_params(&search_body(&b)?)?;
    let (total, list) = groups_page(&st, &base(&st), &p).await?;
    Ok(list_response(total, p.start, list))
}

/// `POST /.search`: users then groups, paged as one list.
async fn search_root(State(st): State<Shared>, ScimBody(b): ScimBody) -> ScimResult<Response> {
    let p = list_params(&search_body(&b)?)?;
    let base = base(&st);
    let (users_total, users) = users_page(&st, &base, &p).await?;
    let taken = users.len() as i64;
    let group_start = (p.start - users_total).max(0);
    let gp = ListParams { start: group_start, count: (p.count - taken).max(0), ..p };
    let (groups_total, groups) = groups_page(&st, &base, &gp).await?;
    let mut all = users;
    all.extend(groups);
    Ok(list_response(users_total + groups_total, gp.start.max(0) + p.start.min(users_total), all))
}

async fn get_group(
    State(st): State<Shared>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Path(id): Path<String>,
) -> ScimResult<Response> {
    let (a, x) = single_params(&uri)?;
    let doc = group_doc(&st, &base(&st), &id, true).await?;
    if not_modified(&headers, &doc) {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    Ok(scim_json(StatusCode::OK, &resources::project(doc, a.as_deref(), x.as_deref())))
}

async fn create_group(State(st): State<Shared>, c: ScimCaller, ScimBody(b): ScimBody) -> ScimResult<Response> {
    let change = resources::group_change(&b)?;
    let row = st.dir.scim_create_group(&c.0, change).await?;
    let base = base(&st);
    let doc = group_doc(&st, &base, &row.group.id, true).await?;
    let mut r = scim_json(StatusCode::CREATED, &doc);
    if let Ok(h) = HeaderValue::from_str(&format!("{base}/Groups/{}", row.group.id)) {
        r.headers_mut().insert(LOCATION, h);
    }
    Ok(r)
}

async fn put_group(
    State(st): State<Shared>,
    c: ScimCaller,
    headers: HeaderMap,
    Path(id): Path<String>,
    ScimBody(b): ScimBody,
) -> ScimResult<Response> {
    let base = base(&st);
    let current = group_doc(&st, &base, &id, true).await?;
    check_if_match(&headers, &current)?;
    let change = resources::group_change(&b)?;
    st.dir.scim_update_group(&c.0, &id, change).await?;
    Ok(scim_json(StatusCode::OK, &group_doc(&st, &base, &id, true).await?))
}

async fn patch_group(
    State(st): State<Shared>,
    c: ScimCaller,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Path(id): Path<String>,
    ScimBody(b): ScimBody,
) -> ScimResult<Response> {
    let base = base(&st);
    let current = group_doc(&st, &base, &id, true).await?;
    check_if_match(&headers, &current)?;
    let mut doc = current.clone();
    strip_read_only(&mut doc);
    let before = doc.clone();
    resources::apply_patch(&mut doc, &b)?;
    if doc != before {
        let mut change = resources::group_change(&doc)?;
        if doc.get("members") == before.get("members") {
            change.members = None;
        }
        st.dir.scim_update_group(&c.0, &id, change).await?;
    }
    let (a, x) = single_params(&uri)?;
    let out = group_doc(&st, &base, &id, true).await?;
    Ok(scim_json(StatusCode::OK, &resources::project(out, a.as_deref(), x.as_deref())))
}

async fn delete_group(
    State(st): State<Shared>,
    c: ScimCaller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ScimResult<Response> {
    let current = group_doc(&st, &base(&st), &id, true).await?;
    check_if_match(&headers, &current)?;
    st.dir.delete_group(&c.0, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- admin: SCIM tokens under /api ----------------------------------------------------------

fn token_json(t: &cairn_domain::ScimToken) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "prefix": t.prefix,
        "created": format_time(t.created),
        "createdBy": t.created_by,
        "lastUsed": t.last_used.map(format_time),
    })
}

fn admin_only(c: &Caller) -> ApiResult<()> {
    if c.role != Role::Admin {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "SCIM tokens are managed by admin API keys only"));
    }
    Ok(())
}

#[utoipa::path(get, path = "/v2/scim/tokens", operation_id = "scim_list_tokens", tag = "scim",
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn list_tokens(State(st): State<Shared>, c: Caller) -> ApiResult<Json<Value>> {
    admin_only(&c)?;
    let list = st.dir.list_scim_tokens().await?;
    Ok(Json(Value::Array(list.iter().map(token_json).collect())))
}

/// `{name}` → the token, shown once in `token`.
#[utoipa::path(post, path = "/v2/scim/tokens", operation_id = "scim_create_token", tag = "scim",
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn create_token(State(st): State<Shared>, c: Caller, JsonBody(b): JsonBody) -> ApiResult<Response> {
    admin_only(&c)?;
    let name = b.get("name").and_then(Value::as_str).unwrap_or("");
    let t = st.dir.create_scim_token(&c.ctx, name).await?;
    let mut v = token_json(&t.token);
    v["token"] = json!(t.secret.expose());
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

#[utoipa::path(delete, path = "/v2/scim/tokens/{id}", operation_id = "scim_delete_token", tag = "scim", params(("id" = String, Path, description = "the object's id")),
    responses((status = 200, description = "success"), (status = "4XX", description = "JumpCloud-shaped error", body = crate::openapi_doc::ErrorBody)))]
async fn delete_token(State(st): State<Shared>, c: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    admin_only(&c)?;
    let t = st.dir.delete_scim_token(&c.ctx, &id).await?;
    Ok(Json(token_json(&t)))
}

/// The `/v2/scim/tokens` paths and schemas for the OpenAPI document.
pub fn openapi_paths() -> Value {
    let err = |d: &str| json!({ "description": d, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    let errors = json!({ "400": err("invalid name"), "401": err("missing or invalid API key"), "403": err("not an admin key"), "404": err("not found") });
    let with = |status: &str, schema: Value| {
        let mut r = errors.clone();
        r[status] = json!({ "description": "success", "content": { "application/json": { "schema": schema } } });
        r
    };
    let token = json!({ "$ref": "#/components/schemas/ScimToken" });
    json!({
        "paths": {
            "/v2/scim/tokens": {
                "get": { "operationId": "scim_tokens_list", "responses": with("200", json!({ "type": "array", "items": token })) },
                "post": {
                    "operationId": "scim_tokens_create",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["name"], "properties": { "name": { "type": "string", "maxLength": 255 } } } } } },
                    "responses": with("201", json!({ "allOf": [token, { "type": "object", "properties": { "token": { "type": "string", "description": "the bearer token for /scim/v2, shown only here" } } }] })),
                },
            },
            "/v2/scim/tokens/{id}": {
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                "delete": { "operationId": "scim_tokens_delete", "responses": with("200", token) },
            },
        },
        "schemas": {
            "ScimToken": { "type": "object", "properties": {
                "id": { "type": "string" }, "name": { "type": "string" }, "prefix": { "type": "string" },
                "created": { "type": "string", "format": "date-time" }, "createdBy": { "type": "string", "nullable": true },
                "lastUsed": { "type": "string", "format": "date-time", "nullable": true },
            } },
        },
    })
}
