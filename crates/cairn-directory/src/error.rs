use cairn_domain::access::Denial;
use cairn_domain::{DomainError, FieldError};
use cairn_store::StoreError;

/// The directory's error; front ends map it to their protocol.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{}", describe(.0))]
    Invalid(Vec<FieldError>),
    /// A duplicate or a refused transition.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unauthorized(String),
    /// A sign-in refused by `authenticate`; front ends say as little as their protocol allows.
    #[error("{}", refusal_text(.0))]
    Refused(Refusal),
    /// A SCIM filter or sort naming what no column holds (`invalidFilter`, RFC 7644).
    #[error("{0}")]
    Filter(cairn_domain::scim::ScimParseError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The one message a person sees for any failed login, whatever the reason (§8).
pub const LOGIN_REFUSED: &str = "The username or password is incorrect, or the account cannot sign in.";
/// What a throttled client is told.
pub const THROTTLED: &str = "Too many attempts from your network. Wait a minute, then try again.";

fn refusal_text(r: &Refusal) -> &'static str {
    match r {
        Refusal::Throttled => THROTTLED,
        _ => LOGIN_REFUSED,
    }
}

/// Why an attempt was refused. A person is told as little as the protocol allows; the event
/// tells the admin everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown login, wrong password or code, or a locked account given a wrong password.
    Credentials,
    /// The secret was right, but the access decision says no.
    Denied(Denial),
    /// Too many failures from this address: try later (HTTP 429).
    Throttled,
}

fn describe(errors: &[FieldError]) -> String {
    DomainError::Invalid(errors.to_vec()).to_string()
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn invalid(field: &str, message: impl Into<String>) -> Error {
        Error::Invalid(vec![FieldError::new(field, message)])
    }
}

impl From<DomainError> for Error {
    fn from(e: DomainError) -> Error {
        match e {
            DomainError::Invalid(v) => Error::Invalid(v),
            DomainError::Refused(m) => Error::Conflict(m),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        match e {
            StoreError::Conflict(field) => Error::Conflict(format!("another record already has this {field}")),
            other => {
                tracing::error!(error = %other, "store error");
                Error::Internal(other.to_string())
            }
        }
    }
}
