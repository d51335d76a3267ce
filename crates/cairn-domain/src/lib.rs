//! Cairn's rules, free of I/O, async and clocks: callers pass the current time in.

pub mod access;
pub mod application;
pub mod csv_import;
pub mod dirsync;
pub mod error;
pub mod fields;
pub mod graph;
pub mod group_query;
pub mod id;
pub mod lifecycle;
pub mod lockout;
pub mod mail;
pub mod oauth;
pub mod password;
pub mod query;
pub mod radius;
pub mod records;
pub mod scim;
pub mod settings;
pub mod throttle;
pub mod user;

pub use error::{DomainError, FieldError};
pub use records::{
    Actor, Admin, AdminSession, ApiKey, Event, EventQuery, Group, Job, JobResult, LdapServer, LdapServerAction,
    OutboxMessage, OutboxQuery, Role, ScimGroupRow, ScimToken, ScimUserRow, Session,
};
pub use settings::{OrgSettings, PasswordAuthority};
pub use user::{CreationSource, Secret, State, User};
