//! Cairn's rules, free of I/O, async and clocks: callers pass the current time in.

pub mod error;
pub mod fields;
pub mod id;
pub mod query;
pub mod settings;
pub mod user;

pub use error::{DomainError, FieldError};
pub use settings::{OrgSettings, PasswordAuthority};
pub use user::{CreationSource, State, User};
