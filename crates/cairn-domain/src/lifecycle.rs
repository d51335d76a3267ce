//! State transitions (§3.3).

use crate::error::DomainError;
use crate::user::State;

/// Whether moving from `from` to `to` changes anything; moving to STAGED is refused
/// (a user is staged only at creation).
pub fn transition(from: State, to: State) -> Result<bool, DomainError> {
    if from == to {
        return Ok(false);
    }
    if to == State::Staged {
        return Err(DomainError::Refused(format!(
            "a {from} user cannot be moved back to STAGED: users are staged only at creation"
        )));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;

    #[test]
    fn transition_table() {
        for (from, to, expect) in [
            (Staged, Activated, Ok(true)),
            (Staged, Suspended, Ok(true)),
            (Activated, Suspended, Ok(true)),
            (Suspended, Activated, Ok(true)),
            (Activated, Activated, Ok(false)),
            (Suspended, Suspended, Ok(false)),
            (Staged, Staged, Ok(false)),
            (Activated, Staged, Err(())),
            (Suspended, Staged, Err(())),
        ] {
            assert_eq!(transition(from, to).map_err(|_| ()), expect, "{from} -> {to}");
        }
    }
}

/// Which activation or welcome mail an activation sends (JumpCloud's `email` flag): absent or
/// `true` → the default address, `false` → none, a string → that address.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "mail", content = "to", rename_all = "snake_case")]
pub enum MailChoice {
    Default,
    /// Explicitly asked for (`true`): also mails a user reactivated from SUSPENDED.
    Yes,
    None,
    To(String),
}

impl MailChoice {
    pub fn from_flag(v: Option<&serde_json::Value>, field: &str) -> Result<MailChoice, crate::FieldError> {
        use serde_json::Value;
        match v {
            None | Some(Value::Null) => Ok(MailChoice::Default),
            Some(Value::Bool(true)) => Ok(MailChoice::Yes),
            Some(Value::Bool(false)) => Ok(MailChoice::None),
            // JumpCloud's own samples send `{"email": {}}` for "default".
            Some(Value::Object(o)) if o.is_empty() => Ok(MailChoice::Default),
            Some(Value::String(s)) => {
                crate::user::normalize_email(s).map(MailChoice::To).map_err(|m| crate::FieldError::new(field, m))
            }
            _ => Err(crate::FieldError::new(field, "must be true, false or an e-mail address")),
        }
    }

    /// The stored form.
    pub fn encode(&self) -> String {
        match self {
            MailChoice::Default => "default".into(),
            MailChoice::Yes => "yes".into(),
            MailChoice::None => "none".into(),
            MailChoice::To(a) => format!("to:{a}"),
        }
    }

    pub fn decode(s: &str) -> MailChoice {
        match s {
            "none" => MailChoice::None,
            "yes" => MailChoice::Yes,
            s => match s.strip_prefix("to:") {
                Some(a) => MailChoice::To(a.to_string()),
                None => MailChoice::Default,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleStatus {
    Pending,
    Fired,
    Skipped,
    Canceled,
    Replaced,
}

impl ScheduleStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleStatus::Pending => "pending",
            ScheduleStatus::Fired => "fired",
            ScheduleStatus::Skipped => "skipped",
            ScheduleStatus::Canceled => "canceled",
            ScheduleStatus::Replaced => "replaced",
        }
    }
    pub fn parse(s: &str) -> Option<ScheduleStatus> {
        Some(match s {
            "pending" | "firing" => ScheduleStatus::Pending,
            "fired" => ScheduleStatus::Fired,
            "skipped" => ScheduleStatus::Skipped,
            "canceled" => ScheduleStatus::Canceled,
            "replaced" => ScheduleStatus::Replaced,
            _ => return None,
        })
    }
}

/// A scheduled state change (§3.4).
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub id: String,
    /// The request that scheduled it (JumpCloud `scheduledJobId`).
    pub job_id: String,
    pub user_id: String,
    pub target: State,
    pub due: chrono::DateTime<chrono::Utc>,
    pub email: MailChoice,
    pub created: chrono::DateTime<chrono::Utc>,
    pub created_by: crate::Actor,
    pub status: ScheduleStatus,
    pub finished: Option<chrono::DateTime<chrono::Utc>>,
    pub message: Option<String>,
}

#[cfg(test)]
mod mail_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_email_flag() {
        assert_eq!(MailChoice::from_flag(None, "email"), Ok(MailChoice::Default));
        assert_eq!(MailChoice::from_flag(Some(&json!(true)), "email"), Ok(MailChoice::Yes));
        assert_eq!(MailChoice::from_flag(Some(&json!({})), "email"), Ok(MailChoice::Default));
        assert_eq!(MailChoice::from_flag(Some(&json!(false)), "email"), Ok(MailChoice::None));
        assert_eq!(MailChoice::from_flag(Some(&json!("Alt@X.io")), "email"), Ok(MailChoice::To("alt@x.io".into())));
        assert!(MailChoice::from_flag(Some(&json!("nope")), "email").is_err());
        assert!(MailChoice::from_flag(Some(&json!(3)), "email").is_err());
        for m in [MailChoice::Default, MailChoice::Yes, MailChoice::None, MailChoice::To("a@b.c".into())] {
            assert_eq!(MailChoice::decode(&m.encode()), m);
        }
    }
}
