//! Bulk actions (§4.3 `POST /api/v2/users/actions`, the Actions menu of §7.2): one action,
//! many users, one outcome per user. Each user is handled in a transaction of its own, so one
//! bad id or refused change never fails the others.

use cairn_domain::lifecycle::MailChoice;
use cairn_domain::user::UserInput;
use cairn_domain::{FieldError, PasswordAuthority, State};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::lifecycle::StateOutcome;
use crate::scheduler::{parse_user_ids, ScheduleRequest};
use crate::{Ctx, Directory};

#[derive(Debug, Clone)]
pub enum Action {
    Activate {
        mail: MailChoice,
    },
    Suspend,
    ScheduleState(ScheduleRequest),
    CancelSchedule {
        state: Option<State>,
    },
    AddToGroup {
        group_id: String,
    },
    RemoveFromGroup {
        group_id: String,
    },
    SetMfaRequired {
        required: bool,
    },
    /// `connection`: the directory connection that holds the password (§12).
    SetPasswordAuthority {
        authority: Option<PasswordAuthority>,
        connection: Option<String>,
    },
    SetDelegatedAuthority {
        authority: Option<Value>,
        connection: Option<String>,
    },
    Delete,
    SendActivationEmail,
    SendPasswordResetEmail,
    ForcePasswordChange,
    Unlock,
    SendTotpResetEmail,
}

pub const ACTIONS: &[&str] = &[
    "activate",
    "suspend",
    "schedule_state",
    "cancel_schedule",
    "add_to_group",
    "remove_from_group",
    "set_mfa_required",
    "set_password_authority",
    "set_delegated_authority",
    "delete",
    "send_activation_email",
    "send_password_reset_email",
    "force_password_change",
    "unlock",
    "send_totp_reset_email",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Done,
    Skipped,
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActionResult {
    pub user_id: String,
    pub outcome: Outcome,
    pub message: String,
}

fn str_param<'a>(o: &'a Map<String, Value>, k: &str, errors: &mut Vec<FieldError>) -> Option<&'a str> {
    match o.get(k).and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Some(s),
        _ => {
            errors.push(FieldError::new(k, "is required"));
            None
        }
    }
}

impl Action {
    /// Parses `{action, user_ids, …params}`; a bad action or parameter is a 400 for the whole
    /// request (nothing is done), naming the field.
    pub fn parse(body: &Value, now: chrono::DateTime<chrono::Utc>) -> Result<(Action, Vec<String>)> {
        let Some(o) = body.as_object() else {
            return Err(Error::invalid("body", "must be a JSON object"));
        };
        let mut errors = Vec::new();
        let user_ids = parse_user_ids(o.get("user_ids")).unwrap_or_else(|e| {
            errors.push(e);
            vec![]
        });
        let name = o.get("action").and_then(Value::as_str).unwrap_or("");
        let allowed: &[&str] = match name {
            "activate" => &["email"],
            "schedule_state" => {
                &["state", "start_date", "time_zone", "send_activation_emails", "activation_email_override"]
            }
            "cancel_schedule" => &["state"],
            "add_to_group" | "remove_from_group" => &["group_id"],
            "set_mfa_required" => &["required"],
            "set_password_authority" => &["authority", "connection"],
            "set_delegated_authority" => &["authority", "connection"],
            _ => &[],
        };
        for k in o.keys() {
            if !matches!(k.as_str(), "action" | "user_ids") && !allowed.contains(&k.as_str()) {
                errors.push(FieldError::new(k.clone(), format!("is not a parameter of the '{name}' action")));
            }
        }
        let action = match name {
            "activate" => MailChoice::from_flag(o.get("email"), "email")
                .map(|mail| Action::Activate { mail })
                .map_err(|e| errors.push(e))
                .ok(),
            "suspend" => Some(Action::Suspend),
            "delete" => Some(Action::Delete),
            "send_activation_email" => Some(Action::SendActivationEmail),
            "send_password_reset_email" => Some(Action::SendPasswordResetEmail),
            "force_password_change" => Some(Action::ForcePasswordChange),
            "unlock" => Some(Action::Unlock),
            "send_totp_reset_email" => Some(Action::SendTotpResetEmail),
            "schedule_state" => {
                let mut b = o.clone();
                b.remove("action");
                b.insert("user_ids".into(), json!(user_ids));
                match ScheduleRequest::parse(&Value::Object(b), now) {
                    Ok(r) => Some(Action::ScheduleState(r)),
                    Err(Error::Invalid(e)) => {
                        errors.extend(e.into_iter().filter(|e| e.field != "user_ids"));
                        None
                    }
                    Err(e) => return Err(e),
                }
            }
            "cancel_schedule" => match o.get("state") {
                None | Some(Value::Null) => Some(Action::CancelSchedule { state: None }),
                Some(v) => match v.as_str() {
                    Some("ACTIVATED") => Some(Action::CancelSchedule { state: Some(State::Activated) }),
                    Some("SUSPENDED") => Some(Action::CancelSchedule { state: Some(State::Suspended) }),
                    _ => {
                        errors.push(FieldError::new("state", "must be ACTIVATED or SUSPENDED (or absent for both)"));
                        None
                    }
                },
            },
            "add_to_group" | "remove_from_group" => str_param(o, "group_id", &mut errors).map(|g| {
                if name == "add_to_group" {
                    Action::AddToGroup { group_id: g.to_string() }
                } else {
                    Action::RemoveFromGroup { group_id: g.to_string() }
                }
            }),
            "set_mfa_required" => match o.get("required") {
                Some(Value::Bool(b)) => Some(Action::SetMfaRequired { required: *b }),
                _ => {
                    errors.push(FieldError::new("required", "must be true or false"));
                    None
                }
            },
            "set_password_authority" if o.contains_key("connection") => {
                match (o.get("connection").and_then(Value::as_str), o.get("authority")) {
                    (Some(c), None) => Some(c),
                    (Some(c), Some(Value::String(a))) if a == "active_directory" => Some(c),
                    (Some(_), _) => {
                        errors
                            .push(FieldError::new("authority", "with a connection, the authority is active_directory"));
                        None
                    }
                    (None, _) => {
                        errors.push(FieldError::new("connection", "must be a directory connection's id"));
                        None
                    }
                }
                .map(|c| Action::SetPasswordAuthority {
                    authority: Some(PasswordAuthority::ActiveDirectory),
                    connection: Some(c.to_string()),
                })
            }
            "set_password_authority" => match o.get("authority") {
                None | Some(Value::Null) => Some(Action::SetPasswordAuthority { authority: None, connection: None }),
                Some(Value::String(s)) if s == "none" => {
                    Some(Action::SetPasswordAuthority { authority: None, connection: None })
                }
                Some(Value::String(s)) if PasswordAuthority::parse(s).is_some() => {
                    Some(Action::SetPasswordAuthority { authority: PasswordAuthority::parse(s), connection: None })
                }
                _ => {
                    errors
                        .push(FieldError::new("authority", "must be null, \"none\", \"active_directory\" or \"scim\""));
                    None
                }
            },
            "set_delegated_authority" if o.contains_key("connection") => {
                match (o.get("connection").and_then(Value::as_str), o.get("authority")) {
                    (Some(c), None) => Some(Action::SetDelegatedAuthority {
                        authority: Some(json!({ "id": c, "name": "ActiveDirectory" })),
                        connection: Some(c.to_string()),
                    }),
                    (Some(_), Some(_)) => {
                        errors.push(FieldError::new("authority", "give either a connection or an authority"));
                        None
                    }
                    (None, _) => {
                        errors.push(FieldError::new("connection", "must be a directory connection's id"));
                        None
                    }
                }
            }
            "set_delegated_authority" => match o.get("authority") {
                None | Some(Value::Null) => Some(Action::SetDelegatedAuthority { authority: None, connection: None }),
                Some(v @ Value::Object(m)) if m.get("name").and_then(Value::as_str) == Some("ActiveDirectory") => {
                    Some(Action::SetDelegatedAuthority { authority: Some(v.clone()), connection: None })
                }
                _ => {
                    errors.push(FieldError::new(
                        "authority",
                        "must be null or {\"id\": …, \"name\": \"ActiveDirectory\"}",
                    ));
                    None
                }
            },
            "" => {
                errors.push(FieldError::new("action", format!("is required: one of {}", ACTIONS.join(", "))));
                None
            }
            other => {
                errors.push(FieldError::new(
                    "action",
                    format!("'{other}' is not an action: one of {}", ACTIONS.join(", ")),
                ));
                None
            }
        };
        match action {
            Some(a) if errors.is_empty() => Ok((a, user_ids)),
            _ => Err(Error::Invalid(errors)),
        }
    }
}

fn done(user_id: &str, message: impl Into<String>) -> ActionResult {
    ActionResult { user_id: user_id.into(), outcome: Outcome::Done, message: message.into() }
}
fn skipped(user_id: &str, message: impl Into<String>) -> ActionResult {
    ActionResult { user_id: user_id.into(), outcome: Outcome::Skipped, message: message.into() }
}
fn failed(user_id: &str, e: &Error) -> ActionResult {
    ActionResult { user_id: user_id.into(), outcome: Outcome::Error, message: e.to_string() }
}

impl Directory {
    pub async fn run_action(&self, ctx: &Ctx, action: &Action, user_ids: &[String]) -> Result<Vec<ActionResult>> {
        if let Action::ScheduleState(req) = action {
            let req = ScheduleRequest { user_ids: user_ids.to_vec(), ..req.clone() };
            let (job, results) = self.schedule_states(ctx, &req).await?;
            return Ok(results
                .into_iter()
                .map(|(uid, r)| match r {
                    Ok(s) => done(
                        &uid,
                        format!("{} scheduled for {} (job {job})", s.target, cairn_domain::user::format_time(s.due)),
                    ),
                    Err(e) => failed(&uid, &e),
                })
                .collect());
        }
        if let Action::AddToGroup { group_id } | Action::RemoveFromGroup { group_id } = action {
            // A missing group fails every user the same way: say so once, as a 404.
            self.get_group(group_id).await?;
        }
        let mut out = Vec::with_capacity(user_ids.len());
        for uid in user_ids {
            let r = match self.action_one(ctx, action, uid).await {
                Ok(r) => r,
                Err(e) => failed(uid, &e),
            };
            out.push(r);
        }
        Ok(out)
    }

    async fn action_one(&self, ctx: &Ctx, action: &Action, uid: &str) -> Result<ActionResult> {
        let state_result = |o: StateOutcome, verb: &str| match o {
            StateOutcome::Changed(u) => done(uid, format!("{} {verb}", u.username)),
            StateOutcome::Unchanged(u) => skipped(uid, format!("{} is already {}", u.username, u.state)),
        };
        let profile = |k: &str, v: Value| {
            let mut p = Map::new();
            p.insert(k.into(), v);
            UserInput { profile: p, ..Default::default() }
        };
        Ok(match action {
            Action::Activate { mail } => state_result(self.activate(ctx, uid, mail.clone()).await?, "activated"),
            Action::Suspend => state_result(self.suspend(ctx, uid).await?, "suspended"),
            Action::Delete => {
                let u = self.delete_user(ctx, uid).await?;
                done(uid, format!("{} deleted", u.username))
            }
            Action::CancelSchedule { state } => match self.cancel_user_schedules(ctx, uid, *state).await? {
                0 => skipped(uid, "no pending schedule"),
                n => done(uid, format!("{n} pending schedule(s) canceled")),
            },
            Action::AddToGroup { group_id } => match self.change_membership(ctx, group_id, uid, true).await? {
                true => done(uid, "added to the group"),
                false => skipped(uid, "already a member"),
            },
            Action::RemoveFromGroup { group_id } => match self.change_membership(ctx, group_id, uid, false).await? {
                true => done(uid, "removed from the group"),
                false => skipped(uid, "not a member"),
            },
            Action::SetMfaRequired { required } => {
                let (u, changed) =
                    self.update_user_from(ctx, uid, profile("enable_user_portal_multifactor", json!(required))).await?;
                let what = if *required { "required" } else { "not required" };
                if changed {
                    done(uid, format!("MFA {what} for {}", u.username))
                } else {
                    skipped(uid, format!("MFA already {what} for {}", u.username))
                }
            }
            Action::SetPasswordAuthority { authority, connection } => {
                let v = match connection {
                    // The connection holds the password: the user's other restrictions stay.
                    Some(c) => {
                        let c = self.directory_connection(c).await?;
                        let u = self.get_user(uid).await?;
                        let mut list: Vec<Value> =
                            u.profile.get("restrictedFields").and_then(Value::as_array).cloned().unwrap_or_default();
                        list.retain(|f| f.get("field").and_then(Value::as_str) != Some("password"));
                        list.push(json!({ "field": "password", "type": "active_directory", "id": c.id }));
                        Value::Array(list)
                    }
                    None => PasswordAuthority::restricted_fields(*authority),
                };
                let (u, changed) = self.update_user_from(ctx, uid, profile("restrictedFields", v)).await?;
                let what = authority.map(|a| a.as_str()).unwrap_or("none");
                if changed {
                    done(uid, format!("password authority of {} set to {what}", u.username))
                } else {
                    skipped(uid, format!("password authority of {} is already {what}", u.username))
                }
            }
            Action::SetDelegatedAuthority { authority, connection } => {
                if let Some(c) = connection {
                    self.directory_connection(c).await?;
                }
                let v = authority.clone().unwrap_or(Value::Null);
                let (u, changed) = self.update_user_from(ctx, uid, profile("delegatedAuthority", v)).await?;
                if changed {
                    done(uid, format!("delegated authority of {} updated", u.username))
                } else {
                    skipped(uid, format!("delegated authority of {} unchanged", u.username))
                }
            }
            Action::SendActivationEmail => match self.send_activation_email(ctx, uid).await? {
                Ok(kind) => done(uid, format!("{} e-mail queued", kind.as_str().replace('_', " "))),
                Err(why) => skipped(uid, why),
            },
            Action::SendPasswordResetEmail => match self.send_password_reset_email(ctx, uid).await? {
                Ok(_) => done(uid, "password reset e-mail queued"),
                Err(why) => skipped(uid, why),
            },
            Action::ForcePasswordChange => match self.expire_password(ctx, uid).await? {
                (u, true) => done(uid, format!("{} must change the password at next login", u.username)),
                (u, false) if u.password_hash.is_none() => skipped(uid, format!("{} has no password yet", u.username)),
                (u, false) => skipped(uid, format!("the password of {} is already expired", u.username)),
            },
            Action::Unlock => match self.unlock(ctx, uid).await? {
                (u, true) => done(uid, format!("{} unlocked", u.username)),
                (u, false) => skipped(uid, format!("{} was not locked", u.username)),
            },
            Action::SendTotpResetEmail => {
                let (u, changed) = self.reset_mfa(ctx, uid).await?;
                match (changed, u.state == State::Activated) {
                    (_, false) => {
                        skipped(uid, format!("{} is {}: TOTP cleared but no mail is sent", u.username, u.state))
                    }
                    (true, true) => done(uid, format!("TOTP of {} reset; e-mail queued", u.username)),
                    (false, true) => done(uid, format!("{} had no TOTP enrolled; e-mail queued", u.username)),
                }
            }
            Action::ScheduleState(_) => {
                return Err(Error::Internal("schedule_state is run for all users at once".into()))
            }
        })
    }
}
