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
