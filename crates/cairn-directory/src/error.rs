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
    Refused(crate::auth::Refusal),
    #[error("internal error: {0}")]
    Internal(String),
}

fn refusal_text(r: &crate::auth::Refusal) -> &'static str {
    match r {
        crate::auth::Refusal::Throttled => crate::auth::THROTTLED,
        _ => crate::credentials::LOGIN_REFUSED,
    }
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
