//! Row ↔ record mapping, driven by the field registry of `cairn_domain::fields`.

use cairn_domain::fields::{self, Kind};
use cairn_domain::{Actor, Admin, ApiKey, Event, Group, Role, Secret, State, User};
use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Map;
use sqlx::any::AnyRow;
use sqlx::{ColumnIndex, Row};

use crate::{Result, StoreError};

/// A column value, borrowed from the record where it can be (bulk inserts visit every user
/// twice: once to see which columns are set, once to bind).
#[derive(Clone, PartialEq)]
pub(crate) enum Value<'a> {
    Text(Option<Cow<'a, str>>),
    /// Formatted only when bound: a bulk INSERT binds a time shared by all its rows once.
    Time(Option<DateTime<Utc>>),
    Bool(bool),
    Int(Option<i64>),
}

impl Value<'_> {
    /// What a column holds when an INSERT leaves it out.
    pub(crate) fn is_default(&self) -> bool {
        matches!(self, Value::Text(None) | Value::Time(None) | Value::Bool(false) | Value::Int(None))
    }
    pub(crate) fn into_arg(self) -> crate::Arg {
        match self {
            Value::Text(t) => crate::Arg::Text(t.map(Cow::into_owned)),
            Value::Time(t) => crate::Arg::Text(t.map(time_text)),
            Value::Bool(b) => crate::Arg::Bool(b),
            Value::Int(n) => crate::Arg::Int(n),
        }
    }
}

/// The stored form of an instant: fixed-width UTC text, so text order is time order.
pub fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn parse_time(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("time '{s}': {e}")))
}

fn corrupt(col: &str, e: sqlx::Error) -> StoreError {
    StoreError::Corrupt(format!("column {col}: {e}"))
}

pub(crate) fn get_opt_text<I: ColumnIndex<AnyRow> + std::fmt::Debug + Copy>(
    r: &AnyRow,
    i: I,
) -> Result<Option<String>> {
    r.try_get::<Option<String>, _>(i).map_err(|e| corrupt(&format!("{i:?}"), e))
}

pub(crate) fn get_text<I: ColumnIndex<AnyRow> + std::fmt::Debug + Copy>(r: &AnyRow, i: I) -> Result<String> {
    get_opt_text(r, i)?.ok_or_else(|| StoreError::Corrupt(format!("column {i:?} is NULL")))
}

pub(crate) fn get_opt_i64<I: ColumnIndex<AnyRow> + std::fmt::Debug + Copy>(r: &AnyRow, i: I) -> Result<Option<i64>> {
    match r.try_get::<Option<i64>, _>(i) {
        Ok(v) => Ok(v),
        // PostgreSQL answers COUNT(*) and INTEGER columns in narrower types.
        Err(_) => r.try_get::<Option<i32>, _>(i).map(|v| v.map(i64::from)).map_err(|e| corrupt(&format!("{i:?}"), e)),
    }
}

pub(crate) fn get_i64<I: ColumnIndex<AnyRow> + std::fmt::Debug + Copy>(r: &AnyRow, i: I) -> Result<i64> {
    Ok(get_opt_i64(r, i)?.unwrap_or(0))
}

/// Booleans come back as BOOLEAN from PostgreSQL and as integers from SQLite.
pub(crate) fn get_bool(r: &AnyRow, col: &str) -> Result<bool> {
    match r.try_get::<Option<bool>, _>(col) {
        Ok(v) => Ok(v.unwrap_or(false)),
        Err(_) => Ok(get_opt_i64(r, col)?.unwrap_or(0) != 0),
    }
}

fn opt_time(r: &AnyRow, col: &str) -> Result<Option<DateTime<Utc>>> {
    get_opt_text(r, col)?.map(|s| parse_time(&s)).transpose()
}

/// Calls `f(column, value)` for every column of the users table.
pub(crate) fn bind_user<'a>(u: &'a User, f: &mut dyn FnMut(&'static str, Value<'a>)) {
    bind_core(u, f);
    for field in fields::PROFILE {
        f(field.column, profile_value(u, field));
    }
}

/// The columns every user has, in a fixed order (`CORE_COLUMNS` of them).
pub(crate) fn bind_core<'a>(u: &'a User, f: &mut dyn FnMut(&'static str, Value<'a>)) {
    let text = |s: &'a str| Value::Text(Some(Cow::Borrowed(s)));
    let time = Value::Time;
    f("id", text(&u.id));
    f("username", text(&u.username));
    f("email", text(&u.email));
    f("state", text(u.state.as_str()));
    f("created", time(Some(u.created)));
    f("updated", time(Some(u.updated)));
    f("creationsource", text(&u.creation_source));
    f("password_hash", Value::Text(u.password_hash.as_ref().map(|s| Cow::Borrowed(s.expose()))));
    f("password_expired", Value::Bool(u.password_expired));
    f("password_date", time(u.password_date));
    f("account_locked", Value::Bool(u.account_locked));
    f("account_locked_date", time(u.account_locked_date));
    f("badloginattempts", Value::Int(Some(u.bad_login_attempts)));
    f("totp_enabled", Value::Bool(u.totp_enabled));
    f("totp_secret", Value::Text(u.totp_secret.as_ref().map(|s| Cow::Borrowed(s.expose()))));
}

pub(crate) const CORE_COLUMNS: usize = 15;

/// A profile field's column value.
pub(crate) fn profile_value<'a>(u: &'a User, field: &fields::Field) -> Value<'a> {
    profile_value_of(field, u.profile.get(field.name))
}

/// Whether `u` has a value (or true) in column `column` (a core or profile column).
pub(crate) fn has_value(u: &User, column: &str) -> bool {
    match column {
        "account_locked" => u.account_locked,
        "password_expired" => u.password_expired,
        "password_date" => u.password_date.is_some(),
        _ => fields::PROFILE.iter().find(|f| f.column == column).is_some_and(|f| !profile_value(u, f).is_default()),
    }
}

/// The column value of a profile field whose JSON value (if any) is `v`.
pub(crate) fn profile_value_of<'a>(field: &fields::Field, v: Option<&'a serde_json::Value>) -> Value<'a> {
    let v = v.filter(|v| !v.is_null());
    match field.kind {
        Kind::Text | Kind::Time => Value::Text(v.and_then(|v| v.as_str()).map(Cow::Borrowed)),
        Kind::Bool => Value::Bool(v.and_then(|v| v.as_bool()).unwrap_or(false)),
        Kind::Int => Value::Int(v.and_then(|v| v.as_i64())),
        Kind::Json if field.column == "restrictedfields" => {
            Value::Text(v.map(|v| Cow::Owned(cairn_domain::user::restricted_text(v))))
        }
        Kind::Json => Value::Text(v.map(|v| Cow::Owned(v.to_string()))),
    }
}

/// The core columns but the secrets (the password hash and the TOTP secret): what a read model
/// reads with the profile fields it shows.
pub(crate) const PUBLIC_CORE: &[&str] = &[
    "id",
    "username",
    "email",
    "state",
    "created",
    "updated",
    "creationsource",
    "password_expired",
    "password_date",
    "account_locked",
    "account_locked_date",
    "badloginattempts",
    "totp_enabled",
];

pub(crate) fn user_from_row(r: &AnyRow) -> Result<User> {
    user_from_row_with(r, fields::PROFILE, true)
}

/// A user from a row of the core columns (without the secrets unless `secrets`) and these
/// profile columns; the profile holds only those.
pub(crate) fn user_from_row_with<'f>(
    r: &AnyRow,
    profile_fields: impl IntoIterator<Item = &'f fields::Field>,
    secrets: bool,
) -> Result<User> {
    let mut profile = Map::new();
    for field in profile_fields {
        let v = match field.kind {
            Kind::Text | Kind::Time => get_opt_text(r, field.column)?.map(serde_json::Value::String),
            Kind::Bool => get_bool(r, field.column)?.then_some(serde_json::Value::Bool(true)),
            Kind::Int => get_opt_i64(r, field.column)?.map(serde_json::Value::from),
            Kind::Json => match get_opt_text(r, field.column)? {
                Some(s) => {
                    let v =
                        serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("{}: {e}", field.column)))?;
                    Some(if field.column == "restrictedfields" { cairn_domain::user::unpack_restricted(v) } else { v })
                }
                None => None,
            },
        };
        if let Some(v) = v {
            profile.insert(field.name.to_string(), v);
        }
    }
    let state = get_text(r, "state")?;
    Ok(User {
        id: get_text(r, "id")?,
        username: get_text(r, "username")?,
        email: get_text(r, "email")?,
        state: State::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("state '{state}'")))?,
        created: parse_time(&get_text(r, "created")?)?,
        updated: parse_time(&get_text(r, "updated")?)?,
        creation_source: get_text(r, "creationsource")?,
        password_hash: if secrets { get_opt_text(r, "password_hash")?.map(Secret::new) } else { None },
        password_expired: get_bool(r, "password_expired")?,
        password_date: opt_time(r, "password_date")?,
        account_locked: get_bool(r, "account_locked")?,
        account_locked_date: opt_time(r, "account_locked_date")?,
        bad_login_attempts: get_i64(r, "badloginattempts")?,
        totp_enabled: get_bool(r, "totp_enabled")?,
        totp_secret: if secrets { get_opt_text(r, "totp_secret")?.map(Secret::new) } else { None },
        profile,
    })
}

pub(crate) fn group_from_row(r: &AnyRow) -> Result<Group> {
    Ok(Group {
        id: get_text(r, "id")?,
        name: get_text(r, "name")?,
        description: get_opt_text(r, "description")?,
        email: get_opt_text(r, "email")?,
        attributes: get_opt_text(r, "attributes")?.and_then(|s| serde_json::from_str(&s).ok()),
        membership_method: get_opt_text(r, "membership_method")?,
        unix_gid: get_opt_i64(r, "unix_gid")?,
        created: parse_time(&get_text(r, "created")?)?,
        updated: parse_time(&get_text(r, "updated")?)?,
    })
}

pub(crate) fn event_from_row(r: &AnyRow) -> Result<Event> {
    let json = |col: &str| -> Result<serde_json::Value> {
        Ok(get_opt_text(r, col)?.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or(serde_json::Value::Null))
    };
    Ok(Event {
        id: get_text(r, "id")?,
        time: parse_time(&get_text(r, "time")?)?,
        actor: Actor {
            kind: get_text(r, "actor_kind")?,
            id: get_opt_text(r, "actor_id")?,
            name: get_opt_text(r, "actor_name")?,
        },
        action: get_text(r, "action")?,
        target_kind: get_opt_text(r, "target_kind")?,
        target_id: get_opt_text(r, "target_id")?,
        target_name: get_opt_text(r, "target_name")?,
        source: get_text(r, "source")?,
        client_addr: get_opt_text(r, "client_addr")?,
        outcome: get_text(r, "outcome")?,
        changes: cairn_domain::user::changes_list(json("changes")?),
        detail: json("detail")?,
    })
}

pub(crate) fn role(r: &AnyRow) -> Result<Role> {
    let s = get_text(r, "role")?;
    Role::parse(&s).ok_or_else(|| StoreError::Corrupt(format!("role '{s}'")))
}

pub(crate) fn apikey_from_row(r: &AnyRow) -> Result<ApiKey> {
    Ok(ApiKey {
        id: get_text(r, "id")?,
        name: get_text(r, "name")?,
        role: role(r)?,
        key_hash: get_text(r, "key_hash")?,
        prefix: get_text(r, "prefix")?,
        created: parse_time(&get_text(r, "created")?)?,
        created_by: get_opt_text(r, "created_by")?,
        last_used: opt_time(r, "last_used")?,
    })
}

pub(crate) fn admin_from_row(r: &AnyRow) -> Result<Admin> {
    Ok(Admin {
        id: get_text(r, "id")?,
        email: get_text(r, "email")?,
        password_hash: Secret::new(get_text(r, "password_hash")?),
        role: role(r)?,
        created: parse_time(&get_text(r, "created")?)?,
        updated: parse_time(&get_text(r, "updated")?)?,
    })
}

pub(crate) fn schedule_from_row(r: &AnyRow) -> Result<cairn_domain::lifecycle::Schedule> {
    use cairn_domain::lifecycle::{MailChoice, Schedule, ScheduleStatus};
    let target = get_text(r, "target_state")?;
    let status = get_text(r, "status")?;
    let created_by: Actor = serde_json::from_str(&get_text(r, "created_by")?)
        .map_err(|e| StoreError::Corrupt(format!("schedules.created_by: {e}")))?;
    Ok(Schedule {
        id: get_text(r, "id")?,
        job_id: get_text(r, "job_id")?,
        user_id: get_text(r, "user_id")?,
        target: State::parse(&target).ok_or_else(|| StoreError::Corrupt(format!("target_state '{target}'")))?,
        due: parse_time(&get_text(r, "due")?)?,
        email: MailChoice::decode(&get_text(r, "email")?),
        created: parse_time(&get_text(r, "created")?)?,
        created_by,
        status: ScheduleStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("status '{status}'")))?,
        finished: opt_time(r, "finished")?,
        message: get_opt_text(r, "message")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_domain::user::unpack_restricted;
    use serde_json::json;

    fn stored(v: &serde_json::Value) -> String {
        let f = fields::PROFILE.iter().find(|f| f.column == "restrictedfields").expect("field");
        match profile_value_of(f, Some(v)) {
            Value::Text(Some(s)) => s.into_owned(),
            _ => panic!("restrictedFields is text"),
        }
    }

    fn read_back(s: &str) -> serde_json::Value {
        unpack_restricted(serde_json::from_str(s).expect("stored JSON"))
    }

    #[test]
    fn a_connections_restricted_fields_are_stored_packed_and_read_back_the_same() {
        let c = "6b15c941cc7d3f60eb61bdc7";
        let v = json!([
            { "field": "username", "type": "active_directory", "id": c },
            { "field": "email", "type": "active_directory", "id": c },
            { "field": "password", "type": "active_directory", "id": c },
        ]);
        let s = stored(&v);
        assert_eq!(s, format!(r#"{{"active_directory":"{c}","fields":["username","email","password"]}}"#));
        assert_eq!(read_back(&s), v);
        // Key order and all: the text an API returns is the same as before packing.
        assert_eq!(read_back(&s).to_string(), v.to_string());
    }

    #[test]
    fn other_restricted_fields_are_stored_as_they_are() {
        for v in [
            json!([]),
            json!([{ "field": "email", "type": "scim", "id": "a" }]),
            json!([{ "field": "email", "type": "active_directory", "id": "a" },
                   { "field": "username", "type": "active_directory", "id": "b" }]),
            json!([{ "type": "active_directory", "field": "email", "id": "a" }]),
            json!([{ "field": "email", "type": "active_directory", "id": "a", "note": "x" }]),
            json!([{ "field": "email", "type": "active_directory" }]),
            json!([{ "field": 3, "type": "active_directory", "id": "a" }]),
            json!(["email"]),
        ] {
            let s = stored(&v);
            assert_eq!(s, v.to_string());
            assert_eq!(read_back(&s), v);
        }
        // An object that only looks packed is not expanded into something else.
        let odd = json!({ "active_directory": "a", "fields": [1] });
        assert_eq!(unpack_restricted(odd.clone()), odd);
    }
}
