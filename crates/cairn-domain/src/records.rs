//! The other records of §2.2: groups, events, API keys, portal administrators, the LDAP server.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::user::{Secret, User};

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub email: Option<String>,
    /// JumpCloud's group `attributes` object (sudo, posixGroups, radius …), kept as given.
    pub attributes: Option<Value>,
    pub membership_method: Option<String>,
    pub unix_gid: Option<i64>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

/// Who did something (§2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// `admin`, `apikey`, `scim_token`, `scheduler`, `user`, `system`.
    pub kind: String,
    pub id: Option<String>,
    pub name: Option<String>,
}

impl Actor {
    pub fn system() -> Actor {
        Actor { kind: "system".into(), id: None, name: Some("cairn".into()) }
    }
    pub fn apikey(id: &str, name: &str) -> Actor {
        Actor { kind: "apikey".into(), id: Some(id.into()), name: Some(name.into()) }
    }
    pub fn admin(id: &str, email: &str) -> Actor {
        Actor { kind: "admin".into(), id: Some(id.into()), name: Some(email.into()) }
    }
}

/// One audit-log entry. Append-only.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: String,
    pub time: DateTime<Utc>,
    pub actor: Actor,
    pub action: String,
    pub target_kind: Option<String>,
    pub target_id: Option<String>,
    pub target_name: Option<String>,
    pub source: String,
    pub client_addr: Option<String>,
    pub outcome: String,
    /// `[{field, old, new}]`, secrets elided.
    pub changes: Value,
    pub detail: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Admin,
    ReadOnly,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "read-only" | "readonly" | "read_only" => Some(Role::ReadOnly),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ReadOnly => "read-only",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// SHA-256 of the key: keys are long random strings, so a fast hash is enough to keep a
    /// stolen database from yielding usable keys.
    pub key_hash: String,
    /// The first characters of the key, shown so an admin can tell keys apart.
    pub prefix: String,
    pub created: DateTime<Utc>,
    pub created_by: Option<String>,
    pub last_used: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub id: String,
    pub email: String,
    pub password_hash: Secret,
    pub role: Role,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

/// A message in the outbox (§5.1).
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    pub id: String,
    pub created: DateTime<Utc>,
    /// `welcome`, `activation`, `password_reset`, `totp_reset`.
    pub kind: String,
    pub to: String,
    pub user_id: Option<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// `queued`, `sending`, `sent`, `failed`, `logged`.
    pub status: String,
    pub attempts: i64,
    pub next_attempt: DateTime<Utc>,
    pub sent: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// What the template needs, for messages rendered when read or sent (subject and bodies
    /// are then empty); `None` for messages stored composed by earlier versions.
    pub params: Option<crate::mail::MailParams>,
}

impl OutboxMessage {
    /// The message as it is sent and shown.
    pub fn rendered(&self) -> crate::mail::Composed {
        match (&self.params, crate::mail::MailKind::parse(&self.kind)) {
            (Some(p), Some(kind)) => crate::mail::render(kind, p),
            _ => crate::mail::Composed {
                subject: self.subject.clone(),
                text: self.text.clone(),
                html: self.html.clone(),
            },
        }
    }

    /// With its subject and bodies filled in, for lists and pages.
    pub fn with_bodies(mut self) -> OutboxMessage {
        if self.params.is_some() {
            let c = self.rendered();
            (self.subject, self.text, self.html) = (c.subject, c.text, c.html);
        }
        self
    }
}

/// A portal session, stored by the hash of its cookie.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub kind: String,
    pub created: DateTime<Utc>,
    pub expires: DateTime<Utc>,
    pub data: Value,
}

/// The one built-in LDAP server (§2.2, §10): a resource of the graph (`ldap_server`), created
/// with the organization. JumpCloud's `ldap-server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapServer {
    pub id: String,
    pub name: String,
    /// What LDAP does with a locked user …
    pub user_lockout_action: LdapServerAction,
    /// … and with one whose password has expired.
    pub user_password_expiration_action: LdapServerAction,
    pub created: DateTime<Utc>,
}

/// JumpCloud's `LdapServerAction`: keep the entry and refuse its binds, or hide it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LdapServerAction {
    #[default]
    Disable,
    Remove,
}

impl LdapServerAction {
    pub fn parse(s: &str) -> Option<LdapServerAction> {
        match s {
            "disable" => Some(LdapServerAction::Disable),
            "remove" => Some(LdapServerAction::Remove),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            LdapServerAction::Disable => "disable",
            LdapServerAction::Remove => "remove",
        }
    }
}

// ---- what use cases read and list: jobs, queries, sessions, SCIM rows ----------------------

/// An administrator's portal session, stored by the hash of its cookie.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminSession {
    pub id: String,
    pub admin_id: String,
    /// `admin` (signed in) or `admin_totp` (password checked, TOTP code pending).
    pub kind: String,
    pub created: DateTime<Utc>,
    pub expires: DateTime<Utc>,
    pub data: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    pub created_by: Value,
    pub params: Value,
    pub total: i64,
    pub processed: i64,
    pub counts: Value,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobResult {
    pub seq: i64,
    pub username: Option<String>,
    pub user_id: Option<String>,
    pub outcome: String,
    pub message: Option<String>,
}

/// Filters for the outbox listing.
#[derive(Debug, Clone, Default)]
pub struct OutboxQuery {
    pub to: Option<String>,
    pub kind: Option<String>,
    pub status: Option<String>,
    pub user_id: Option<String>,
    pub limit: i64,
    pub skip: i64,
}

/// Filters for the event log.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub target_id: Option<String>,
    pub action: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: i64,
    pub skip: i64,
}

/// A SCIM bearer token as stored (the token itself only as its hash).
#[derive(Debug, Clone)]
pub struct ScimToken {
    pub id: String,
    pub name: String,
    pub token_hash: String,
    /// The first characters of the token, to recognise it in a list.
    pub prefix: String,
    pub created: DateTime<Utc>,
    pub created_by: Option<String>,
    pub last_used: Option<DateTime<Utc>>,
}

/// A user with its SCIM-only columns.
#[derive(Debug, Clone)]
pub struct ScimUserRow {
    pub user: User,
    pub external_id: Option<String>,
    /// The `userName` as the provider sent it, when it differs from the Cairn username.
    pub user_name: Option<String>,
}

/// A group with its SCIM-only column.
#[derive(Debug, Clone)]
pub struct ScimGroupRow {
    pub group: Group,
    pub external_id: Option<String>,
}
