//! `/ServiceProviderConfig`, `/ResourceTypes` and `/Schemas` (RFC 7643 §5–§7). The schemas
//! list exactly the attributes Cairn stores, so a client that reads them sends nothing that
//! would be dropped.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use cairn_domain::scim::{ENTERPRISE_SCHEMA, GROUP_SCHEMA, USER_SCHEMA};
use serde_json::{json, Value};

use super::{base, list_response, scim_json, ScimError, ScimResult, MAX_COUNT};
use crate::Shared;

const SPC_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
const RT_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

struct A {
    v: Value,
}

fn a(name: &str, ty: &str) -> A {
    A {
        v: json!({
            "name": name, "type": ty, "multiValued": false, "description": name, "required": false,
            "caseExact": false, "mutability": "readWrite", "returned": "default", "uniqueness": "none",
        }),
    }
}

impl A {
    fn multi(mut self) -> A {
        self.v["multiValued"] = json!(true);
        self
    }
    fn required(mut self) -> A {
        self.v["required"] = json!(true);
        self
    }
    fn exact(mut self) -> A {
        self.v["caseExact"] = json!(true);
        self
    }
    fn mutability(mut self, m: &str) -> A {
        self.v["mutability"] = json!(m);
        self
    }
    fn returned(mut self, r: &str) -> A {
        self.v["returned"] = json!(r);
        self
    }
    fn unique(mut self, u: &str) -> A {
        self.v["uniqueness"] = json!(u);
        self
    }
    fn refs(mut self, r: &[&str]) -> A {
        self.v["referenceTypes"] = json!(r);
        self
    }
    fn subs(mut self, s: Vec<A>) -> A {
        self.v["subAttributes"] = Value::Array(s.into_iter().map(|x| x.v).collect());
        self
    }
    fn desc(mut self, d: &str) -> A {
        self.v["description"] = json!(d);
        self
    }
}

fn user_schema() -> Value {
    let attrs = vec![
        a("userName", "string")
            .required()
            .unique("server")
            .desc("Unique identifier for the user; compared case-insensitively"),
        a("name", "complex").subs(vec![a("givenName", "string"), a("middleName", "string"), a("familyName", "string")]),
        a("displayName", "string"),
        a("title", "string"),
        a("userType", "string"),
        // Required: every Cairn user has a lifecycle state, so `active` is always there and
        // cannot be removed (on create, leaving it out means the manualEntry default).
        a("active", "boolean")
            .required()
            .desc("True exactly when the user is ACTIVATED; false on create stages the user; always present"),
        a("password", "string").mutability("writeOnly").returned("never").exact(),
        a("emails", "complex")
            .multi()
            .required()
            .desc("The primary address is the user's e-mail; one more is kept as an alternate")
            .subs(vec![
                // `type` ("work", "other") and `primary` are returned but follow from the order:
                // the first (or primary) address is the e-mail, a second the alternate.
                a("value", "string").required(),
            ]),
        a("phoneNumbers", "complex").multi().subs(vec![a("value", "string"), a("type", "string")]),
        a("addresses", "complex").multi().subs(vec![
            a("type", "string"),
            a("streetAddress", "string"),
            a("locality", "string"),
            a("region", "string"),
            a("postalCode", "string"),
            a("country", "string"),
        ]),
        a("groups", "complex").multi().mutability("readOnly").subs(vec![
            a("value", "string").mutability("readOnly"),
            a("$ref", "reference").refs(&["Group"]).mutability("readOnly"),
            a("display", "string").mutability("readOnly"),
            a("type", "string").mutability("readOnly"),
        ]),
    ];
    make_schema(USER_SCHEMA, "User", "User Account", attrs)
}

fn enterprise_schema() -> Value {
    let attrs = vec![
        a("employeeNumber", "string").unique("server"),
        a("costCenter", "string"),
        a("organization", "string"),
        a("department", "string"),
        a("manager", "complex").subs(vec![
            a("value", "string"),
            a("$ref", "reference").refs(&["User"]),
            a("displayName", "string").mutability("readOnly"),
        ]),
    ];
    make_schema(ENTERPRISE_SCHEMA, "EnterpriseUser", "Enterprise User", attrs)
}

fn group_schema() -> Value {
    let attrs = vec![
        a("displayName", "string").required().unique("server"),
        a("members", "complex").multi().subs(vec![
            // `display` and `type` ("User") are returned too; Cairn groups hold users only.
            a("value", "string").mutability("immutable"),
            a("$ref", "reference").refs(&["User"]).mutability("immutable"),
        ]),
    ];
    make_schema(GROUP_SCHEMA, "Group", "Group", attrs)
}

fn make_schema(id: &str, name: &str, description: &str, attrs: Vec<A>) -> Value {
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": id,
        "name": name,
        "description": description,
        "attributes": attrs.into_iter().map(|x| x.v).collect::<Vec<_>>(),
    })
}

fn with_meta(mut v: Value, base: &str, kind: &str, id: &str) -> Value {
    v["meta"] = json!({ "resourceType": kind, "location": format!("{base}/{kind}s/{id}") });
    v
}

fn all_schemas(base: &str) -> Vec<Value> {
    vec![
        with_meta(user_schema(), base, "Schema", USER_SCHEMA),
        with_meta(enterprise_schema(), base, "Schema", ENTERPRISE_SCHEMA),
        with_meta(group_schema(), base, "Schema", GROUP_SCHEMA),
    ]
}

fn all_resource_types(base: &str) -> Vec<Value> {
    vec![
        with_meta(
            json!({
                "schemas": [RT_SCHEMA], "id": "User", "name": "User", "endpoint": "/Users",
                "description": "User Account", "schema": USER_SCHEMA,
                "schemaExtensions": [{ "schema": ENTERPRISE_SCHEMA, "required": false }],
            }),
            base,
            "ResourceType",
            "User",
        ),
        with_meta(
            json!({
                "schemas": [RT_SCHEMA], "id": "Group", "name": "Group", "endpoint": "/Groups",
                "description": "Group", "schema": GROUP_SCHEMA, "schemaExtensions": [],
            }),
            base,
            "ResourceType",
            "Group",
        ),
    ]
}

pub(super) async fn service_provider_config(State(st): State<Shared>) -> Response {
    let base = base(&st);
    scim_json(
        StatusCode::OK,
        &json!({
            "schemas": [SPC_SCHEMA],
            "documentationUri": "https://github.com/cairn-directory/cairn",
            "patch": { "supported": true },
            "bulk": { "supported": false, "maxOperations": 0, "maxPayloadSize": 0 },
            "filter": { "supported": true, "maxResults": MAX_COUNT },
            "changePassword": { "supported": true },
            "sort": { "supported": true },
            "etag": { "supported": true },
            "authenticationSchemes": [{
                "type": "oauthbearertoken", "name": "Bearer token",
                "description": "A SCIM token created by an administrator (POST /api/v2/scim/tokens)",
                "primary": true,
            }],
            "meta": { "resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfig") },
        }),
    )
}

pub(super) async fn resource_types(State(st): State<Shared>) -> Response {
    let list = all_resource_types(&base(&st));
    list_response(list.len() as i64, 0, list)
}

pub(super) async fn resource_type(State(st): State<Shared>, Path(name): Path<String>) -> ScimResult<Response> {
    all_resource_types(&base(&st))
        .into_iter()
        .find(|r| r["id"].as_str().is_some_and(|i| i.eq_ignore_ascii_case(&name)))
        .map(|r| scim_json(StatusCode::OK, &r))
        .ok_or_else(|| ScimError::not_found(format!("no resource type '{name}'")))
}

pub(super) async fn schemas(State(st): State<Shared>) -> Response {
    let list = all_schemas(&base(&st));
    list_response(list.len() as i64, 0, list)
}

pub(super) async fn schema_one(st: &Shared, id: &str) -> ScimResult<Response> {
    all_schemas(&base(st))
        .into_iter()
        .find(|s| s["id"].as_str().is_some_and(|i| i.eq_ignore_ascii_case(id)))
        .map(|s| scim_json(StatusCode::OK, &s))
        .ok_or_else(|| ScimError::not_found(format!("no schema '{id}'")))
}

pub(super) async fn schema(State(st): State<Shared>, Path(id): Path<String>) -> ScimResult<Response> {
    schema_one(&st, &id).await
}
