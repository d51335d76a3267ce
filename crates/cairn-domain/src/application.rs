//! Applications (§2.2, §4.1): OpenID Connect relying parties in the shape of JumpCloud's v1
//! `application` with `sso.type: "oidc"`, and the rules of their OIDC settings. A user signs
//! in to an application only through an association (the graph's `application` resource).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::{DomainError, FieldError};

/// How long an authorization code may wait for its redemption (RFC 6749 §4.1.2 says at most
/// ten minutes; a browser redirect takes seconds).
pub const CODE_VALIDITY: Duration = Duration::seconds(60);
/// How long a refresh token lives unused; each refresh issues a new one.
pub const REFRESH_VALIDITY: Duration = Duration::days(30);
/// Token families (one per sign-in) a user may hold per application: a new sign-in past it
/// ends the oldest, so a client cannot grow the table without bound.
pub const MAX_FAMILIES: i64 = 20;
/// At most this many redirect URIs (and post-logout URIs) per application.
pub const MAX_URIS: usize = 20;
const MAX_URI_CHARS: usize = 2048;

/// The scopes Cairn serves; `openid` is required of every application.
pub const SCOPES: &[&str] = &["openid", "profile", "email", "groups", "offline_access"];
pub const GRANT_TYPES: &[&str] = &["authorization_code", "refresh_token"];
pub const AUTH_METHODS: &[&str] = &["client_secret_basic", "client_secret_post", "none"];
pub const SIGNING_ALGS: &[&str] = &["RS256", "EdDSA"];

#[derive(Debug, Clone)]
pub struct Application {
    pub id: String,
    pub name: String,
    /// Public: the OAuth `client_id`.
    pub client_id: String,
    /// SHA-256 of the client secret; `None` for a public client.
    pub secret_hash: Option<String>,
    pub created: DateTime<Utc>,
    pub settings: AppSettings,
}

/// Everything else of an application, stored as one JSON document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppSettings {
    pub display_label: String,
    pub description: String,
    pub active: bool,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub public: bool,
    pub token_endpoint_auth_method: String,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
    pub id_token_signed_response_alg: String,
    /// A second factor is asked of everyone signing in to this application.
    pub require_mfa: bool,
}

impl Application {
    /// JumpCloud's v1 `application` JSON with Cairn's OIDC fields (never the secret).
    pub fn to_json(&self, organization: &str) -> Value {
        let s = &self.settings;
        json!({
            "_id": self.id,
            "organization": organization,
            "name": self.name,
            "displayName": s.display_label,
            "displayLabel": s.display_label,
            "description": s.description,
            "active": s.active,
            "sso": { "type": "oidc" },
            "clientId": self.client_id,
            "redirectUris": s.redirect_uris,
            "postLogoutRedirectUris": s.post_logout_redirect_uris,
            "public": s.public,
            "tokenEndpointAuthMethod": s.token_endpoint_auth_method,
            "grantTypes": s.grant_types,
            "scopes": s.scopes,
            "idTokenSignedResponseAlg": s.id_token_signed_response_alg,
            "requireMfa": s.require_mfa,
            "created": crate::user::format_time(self.created),
        })
    }

    /// What the user portal shows: the label, else the name.
    pub fn label(&self) -> &str {
        if self.settings.display_label.is_empty() {
            &self.name
        } else {
            &self.settings.display_label
        }
    }

    /// Where the user portal sends someone who opens the application: the origin of its first
    /// redirect URI (the application starts the sign-in from there).
    pub fn launch_url(&self) -> String {
        self.settings
            .redirect_uris
            .first()
            .and_then(|u| url::Url::parse(u).ok())
            .map(|u| format!("{}/", u.origin().ascii_serialization()))
            .unwrap_or_default()
    }

    pub fn allows_grant(&self, grant: &str) -> bool {
        self.settings.grant_types.iter().any(|g| g == grant)
    }
}

/// The fields a client may send; the read-only ones it may echo back unchanged.
const WRITABLE: &[&str] = &[
    "name",
    "displayLabel",
    "displayName",
    "description",
    "active",
    "sso",
    "redirectUris",
    "postLogoutRedirectUris",
    "public",
    "tokenEndpointAuthMethod",
    "grantTypes",
    "scopes",
    "idTokenSignedResponseAlg",
    "requireMfa",
];
const READ_ONLY: &[&str] = &["_id", "id", "organization", "clientId", "created"];

/// Reads a create (`old` is `None`) or update body into the name and settings, or names every
/// field that is wrong. An update changes only the fields it sends.
pub fn parse_input(body: &Value, old: Option<(&str, &AppSettings)>) -> Result<(String, AppSettings), DomainError> {
    let Some(obj) = body.as_object() else {
        return Err(DomainError::field("body", "must be a JSON object"));
    };
    let mut errs = Vec::new();
    // Unknown fields are named (the first ten, each clipped), never ignored.
    for k in obj.keys().filter(|k| !WRITABLE.contains(&k.as_str()) && !READ_ONLY.contains(&k.as_str())).take(10) {
        let k: String = k.chars().take(64).collect();
        errs.push(FieldError::new(k, "is not a field of an OIDC application"));
    }
    let name = match (obj.get("name"), old) {
        (Some(v), _) => text(&mut errs, "name", v, 1, 255).unwrap_or_default(),
        (None, Some((n, _))) => n.to_string(),
        (None, None) => {
            errs.push(FieldError::new("name", "is required"));
            String::new()
        }
    };
    let mut s = old.map(|(_, s)| s.clone()).unwrap_or_else(|| AppSettings {
        display_label: String::new(),
        description: String::new(),
        active: true,
        redirect_uris: vec![],
        post_logout_redirect_uris: vec![],
        public: false,
        token_endpoint_auth_method: String::new(),
        grant_types: GRANT_TYPES.iter().map(|g| g.to_string()).collect(),
        scopes: ["openid", "profile", "email", "groups"].iter().map(|g| g.to_string()).collect(),
        id_token_signed_response_alg: "RS256".into(),
        require_mfa: false,
    });
    if let Some(v) = obj.get("sso") {
        match v.as_object() {
            Some(sso) => {
                for (k, v) in sso {
                    match (k.as_str(), v.as_str()) {
                        ("type", Some("oidc")) => {}
                        ("type", _) => {
                            errs.push(FieldError::new("sso.type", "must be \"oidc\" (the one kind Cairn serves)"))
                        }
                        _ => errs.push(FieldError::new(format!("sso.{k}"), "is not supported")),
                    }
                }
            }
            None => errs.push(FieldError::new("sso", "must be an object such as {\"type\": \"oidc\"}")),
        }
    }
    let label = obj.get("displayLabel").or_else(|| obj.get("displayName"));
    if let Some(v) = label {
        let f = if obj.contains_key("displayLabel") { "displayLabel" } else { "displayName" };
        s.display_label = text(&mut errs, f, v, 0, 255).unwrap_or_default();
    }
    if let Some(v) = obj.get("description") {
        s.description = text(&mut errs, "description", v, 0, 256).unwrap_or_default();
    }
    if let Some(v) = obj.get("active") {
        s.active = flag(&mut errs, "active", v);
    }
    if let Some(v) = obj.get("requireMfa") {
        s.require_mfa = flag(&mut errs, "requireMfa", v);
    }
    if let Some(v) = obj.get("public") {
        s.public = flag(&mut errs, "public", v);
    }
    if let Some(v) = obj.get("redirectUris") {
        s.redirect_uris = uris(&mut errs, "redirectUris", v);
    }
    if let Some(v) = obj.get("postLogoutRedirectUris") {
        s.post_logout_redirect_uris = uris(&mut errs, "postLogoutRedirectUris", v);
    }
    if let Some(v) = obj.get("grantTypes") {
        s.grant_types = words(&mut errs, "grantTypes", v, GRANT_TYPES);
        if !s.grant_types.iter().any(|g| g == "authorization_code") {
            errs.push(FieldError::new("grantTypes", "must include authorization_code"));
        }
    }
    if let Some(v) = obj.get("scopes") {
        s.scopes = words(&mut errs, "scopes", v, SCOPES);
        if !s.scopes.iter().any(|g| g == "openid") {
            errs.push(FieldError::new("scopes", "must include openid"));
        }
    }
    if let Some(v) = obj.get("idTokenSignedResponseAlg") {
        s.id_token_signed_response_alg = one_of(&mut errs, "idTokenSignedResponseAlg", v, SIGNING_ALGS);
    }
    match obj.get("tokenEndpointAuthMethod") {
        Some(v) => s.token_endpoint_auth_method = one_of(&mut errs, "tokenEndpointAuthMethod", v, AUTH_METHODS),
        // The default follows the kind of client; a change of kind resets it.
        None if s.token_endpoint_auth_method.is_empty() || obj.contains_key("public") => {
            s.token_endpoint_auth_method = if s.public { "none" } else { "client_secret_basic" }.into();
        }
        None => {}
    }
    if s.redirect_uris.is_empty() && !errs.iter().any(|e| e.field.starts_with("redirectUris")) {
        errs.push(FieldError::new("redirectUris", "at least one redirect URI is required"));
    }
    let none = s.token_endpoint_auth_method == "none";
    if s.public && !none && !errs.iter().any(|e| e.field == "tokenEndpointAuthMethod") {
        errs.push(FieldError::new("tokenEndpointAuthMethod", "a public client has no secret: it must be \"none\""));
    }
    if !s.public && none {
        errs.push(FieldError::new("tokenEndpointAuthMethod", "\"none\" is for public clients (set public: true)"));
    }
    if errs.is_empty() {
        Ok((name, s))
    } else {
        Err(DomainError::Invalid(errs))
    }
}

fn text(errs: &mut Vec<FieldError>, f: &str, v: &Value, min: usize, max: usize) -> Option<String> {
    let Some(t) = v.as_str() else {
        errs.push(FieldError::new(f, "must be a string"));
        return None;
    };
    let t = t.trim();
    let n = t.chars().count();
    if n < min || n > max {
        errs.push(FieldError::new(f, format!("must be {min} to {max} characters")));
    } else if t.chars().any(char::is_control) {
        errs.push(FieldError::new(f, "must not contain control characters"));
    } else {
        return Some(t.to_string());
    }
    None
}

fn flag(errs: &mut Vec<FieldError>, f: &str, v: &Value) -> bool {
    v.as_bool().unwrap_or_else(|| {
        errs.push(FieldError::new(f, "must be true or false"));
        false
    })
}

fn one_of(errs: &mut Vec<FieldError>, f: &str, v: &Value, allowed: &[&str]) -> String {
    match v.as_str() {
        Some(s) if allowed.contains(&s) => s.to_string(),
        _ => {
            errs.push(FieldError::new(f, format!("must be one of {}", allowed.join(", "))));
            String::new()
        }
    }
}

fn words(errs: &mut Vec<FieldError>, f: &str, v: &Value, allowed: &[&str]) -> Vec<String> {
    let Some(a) = v.as_array() else {
        errs.push(FieldError::new(f, "must be an array of strings"));
        return vec![];
    };
    let mut out: Vec<String> = Vec::new();
    for (i, w) in a.iter().enumerate() {
        match w.as_str() {
            Some(s) if allowed.contains(&s) => {
                if !out.iter().any(|o| o == s) {
                    out.push(s.to_string());
                }
            }
            _ => errs.push(FieldError::new(format!("{f}[{i}]"), format!("must be one of {}", allowed.join(", ")))),
        }
    }
    out
}

fn uris(errs: &mut Vec<FieldError>, f: &str, v: &Value) -> Vec<String> {
    let Some(a) = v.as_array() else {
        errs.push(FieldError::new(f, "must be an array of absolute URIs"));
        return vec![];
    };
    if a.len() > MAX_URIS {
        errs.push(FieldError::new(f, format!("at most {MAX_URIS} URIs")));
        return vec![];
    }
    let mut out: Vec<String> = Vec::new();
    for (i, u) in a.iter().enumerate() {
        match u.as_str().map(check_uri) {
            Some(Ok(u)) => {
                if !out.contains(&u) {
                    out.push(u);
                }
            }
            Some(Err(m)) => errs.push(FieldError::new(format!("{f}[{i}]"), m)),
            None => errs.push(FieldError::new(format!("{f}[{i}]"), "must be a string")),
        }
    }
    out
}

/// A registered redirect URI: absolute, no fragment (RFC 6749 §3.1.2), https — or http to a
/// loopback address, for development and native apps (RFC 8252 §7.3). Kept exactly as given:
/// requests must match it character for character.
pub fn check_uri(u: &str) -> Result<String, String> {
    if u.len() > MAX_URI_CHARS {
        return Err(format!("must be at most {MAX_URI_CHARS} characters"));
    }
    if u.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain spaces or control characters".into());
    }
    let p = url::Url::parse(u).map_err(|e| format!("is not an absolute URI ({e})"))?;
    if p.fragment().is_some() {
        return Err("must not contain a fragment (#…)".into());
    }
    if !p.username().is_empty() || p.password().is_some() {
        return Err("must not contain credentials".into());
    }
    let loopback = matches!(p.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match p.scheme() {
        "https" => Ok(u.to_string()),
        "http" if loopback => Ok(u.to_string()),
        "http" => Err("must use https (http only for localhost, 127.0.0.1 or [::1])".into()),
        s => Err(format!("scheme '{s}' is not allowed: use https")),
    }
}

/// The object a stored settings document came from, for events.
pub fn settings_json(s: &AppSettings) -> Map<String, Value> {
    match serde_json::to_value(s).expect("settings serialize") {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let (n, s) = parse_input(&json!({"name": "wiki", "redirectUris": ["https://wiki.example/cb"]}), None).unwrap();
        assert_eq!(n, "wiki");
        assert_eq!(s.token_endpoint_auth_method, "client_secret_basic");
        assert!(s.active && !s.public);
        let (_, p) =
            parse_input(&json!({"name": "spa", "public": true, "redirectUris": ["http://127.0.0.1:9/cb"]}), None)
                .unwrap();
        assert_eq!(p.token_endpoint_auth_method, "none");
        let e = parse_input(
            &json!({"redirectUris": ["http://evil.example/cb", "https://a/#x"], "scopes": ["email"], "color": 1}),
            None,
        )
        .unwrap_err();
        let DomainError::Invalid(v) = e else { panic!() };
        let fields: Vec<&str> = v.iter().map(|e| e.field.as_str()).collect();
        for f in ["color", "name", "redirectUris[0]", "redirectUris[1]", "scopes"] {
            assert!(fields.contains(&f), "{f} in {fields:?}");
        }
        let e = parse_input(
            &json!({"name": "x", "public": true, "tokenEndpointAuthMethod": "client_secret_post", "redirectUris": ["https://a/"]}),
            None,
        );
        assert!(e.is_err());
    }

    #[test]
    fn update_keeps_what_it_does_not_send() {
        let (_, s) =
            parse_input(&json!({"name": "a", "redirectUris": ["https://a/cb"], "requireMfa": true}), None).unwrap();
        let (n, t) = parse_input(&json!({"description": "d"}), Some(("a", &s))).unwrap();
        assert_eq!((n.as_str(), t.require_mfa, t.description.as_str()), ("a", true, "d"));
    }
}
