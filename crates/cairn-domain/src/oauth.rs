//! OAuth 2.0 client credentials for API automation (§2.2 Service account, §4.3): an admin
//! creates a service account of a role, shown its client secret once; the account trades
//! its client id and secret for a short-lived bearer token at `/oauth2/token`, which `/api`
//! accepts as an API key of that role. Deleting the account ends its tokens.

use chrono::{DateTime, Duration, Utc};

use crate::Role;

/// How long an access token lives (JumpCloud's service-account tokens live an hour too).
pub const TOKEN_VALIDITY: Duration = Duration::hours(1);
/// Live tokens one account may hold: issuing more drops its oldest, so a client that asks
/// for a token per call cannot grow the table without bound.
pub const MAX_LIVE_TOKENS: i64 = 100;
/// The one scope: the REST API.
pub const SCOPE: &str = "api";

#[derive(Debug, Clone)]
pub struct ServiceAccount {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Public: the OAuth `client_id`.
    pub client_id: String,
    /// SHA-256 of the client secret (a long random string, like an API key).
    pub secret_hash: String,
    pub created: DateTime<Utc>,
    pub created_by: Option<String>,
    pub last_used: Option<DateTime<Utc>>,
}

impl ServiceAccount {
    /// Who acts, in events, when a token of this account calls the API.
    pub fn actor(&self) -> crate::Actor {
        crate::Actor { kind: "service_account".into(), id: Some(self.id.clone()), name: Some(self.name.clone()) }
    }
}

/// How a client authenticates at a token endpoint (RFC 6749 §2.3.1): HTTP Basic
/// (`client_secret_basic`, each part form-encoded) or form fields (`client_secret_post`),
/// never both; or only its `client_id` (a public client, `none`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    pub client_id: String,
    pub secret: Option<String>,
    /// `client_secret_basic`, `client_secret_post` or `none`.
    pub method: &'static str,
}

/// Why client authentication could not even be read: the RFC 6749 error, a description, and
/// whether the answer is 401 (`invalid_client`) rather than 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuthError {
    pub error: &'static str,
    pub description: &'static str,
    pub unauthorized: bool,
}

fn form_decode(s: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&format!("v={}", s.replace('&', "%26"))).ok()?;
    pairs.into_iter().next().map(|(_, v)| v)
}

/// Reads the client's credentials from the `Authorization` header and the form's
/// `client_id` and `client_secret`; `Ok(None)` when there are none at all.
pub fn client_auth(
    authorization: Option<&str>,
    form_id: Option<&str>,
    form_secret: Option<&str>,
) -> Result<Option<ClientAuth>, ClientAuthError> {
    use base64::Engine;
    let bad = |error, description, unauthorized| Err(ClientAuthError { error, description, unauthorized });
    let basic = authorization.and_then(|v| {
        let (scheme, rest) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("basic").then(|| {
            let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok();
            let text = decoded.and_then(|d| String::from_utf8(d).ok());
            match text.as_deref().and_then(|t| t.split_once(':')) {
                Some((id, secret)) => match (form_decode(id), form_decode(secret)) {
                    (Some(id), Some(secret)) => Ok((id, secret)),
                    _ => Err("the Basic credentials are not form-encoded"),
                },
                None => Err("the Authorization header is not Basic base64(client_id:client_secret)"),
            }
        })
    });
    match (basic, form_secret) {
        (Some(_), Some(_)) => bad(
            "invalid_request",
            "send the client secret once: in the Authorization header or in the body, not both",
            false,
        ),
        (Some(Err(m)), None) => bad("invalid_client", m, true),
        (Some(Ok((id, secret))), None) => {
            if form_id.is_some_and(|f| f != id) {
                return bad("invalid_request", "two different client ids were sent", false);
            }
            Ok(Some(ClientAuth { client_id: id, secret: Some(secret), method: "client_secret_basic" }))
        }
        (None, Some(secret)) => match form_id {
            Some(id) => Ok(Some(ClientAuth {
                client_id: id.to_string(),
                secret: Some(secret.to_string()),
                method: "client_secret_post",
            })),
            None => bad("invalid_request", "client_id is required", false),
        },
        (None, None) => Ok(form_id.map(|id| ClientAuth { client_id: id.to_string(), secret: None, method: "none" })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        use base64::Engine;
        // RFC 6749 §2.3.1: id and secret are form-encoded before Base64.
        let h = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("my%3Aapp:p%40ss+w%2Bd"));
        let a = client_auth(Some(&h), None, None).unwrap().unwrap();
        assert_eq!(
            (a.client_id.as_str(), a.secret.as_deref(), a.method),
            ("my:app", Some("p@ss w+d"), "client_secret_basic")
        );
        assert!(client_auth(Some(&h), None, Some("x")).is_err());
        assert!(client_auth(Some("Basic !!!"), None, None).unwrap_err().unauthorized);
        assert_eq!(client_auth(None, Some("spa"), None).unwrap().unwrap().method, "none");
        assert_eq!(client_auth(None, None, None).unwrap(), None);
    }
}
