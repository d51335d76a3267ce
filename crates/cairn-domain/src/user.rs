//! The user record (SPEC §2.1), its validation and its JSON form.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{DomainError, FieldError};
use crate::fields::{self, Kind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    Staged,
    Activated,
    Suspended,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Staged => "STAGED",
            State::Activated => "ACTIVATED",
            State::Suspended => "SUSPENDED",
        }
    }
    pub fn parse(s: &str) -> Option<State> {
        match s {
            "STAGED" => Some(State::Staged),
            "ACTIVATED" => Some(State::Activated),
            "SUSPENDED" => Some(State::Suspended),
            _ => None,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of interface a user was created through; it picks the default state (§3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CreationSource {
    /// Admin portal, `POST /api/systemusers`, SCIM, directory integration.
    ManualEntry,
    /// CSV import and bulk creates with `creation-source: jumpcloud:bulk`.
    CsvImport,
    /// Bulk creates with any other creation source.
    ApplicationImport,
}

/// JumpCloud's `creation-source` values for bulk creates.
pub const BULK_CREATION_SOURCES: &[&str] = &[
    "jumpcloud:gapps",
    "jumpcloud:o365",
    "jumpcloud:workday",
    "jumpcloud:scim",
    "jumpcloud:bulk",
    "jumpcloud:custom_integration",
];

impl CreationSource {
    /// The class of a bulk create's `creation-source` header (§3.2): `jumpcloud:bulk` (also
    /// the default) is a CSV-style import, any other known source an application import.
    pub fn from_bulk_header(v: Option<&str>) -> Result<(CreationSource, String), String> {
        let v = v.map(|v| v.trim().to_lowercase()).unwrap_or_else(|| "jumpcloud:bulk".into());
        match v.as_str() {
            "jumpcloud:bulk" => Ok((CreationSource::CsvImport, v)),
            s if BULK_CREATION_SOURCES.contains(&s) => Ok((CreationSource::ApplicationImport, v)),
            _ => Err(format!("'{v}' is not one of {}", BULK_CREATION_SOURCES.join(", "))),
        }
    }
}

/// A value that must never be printed, logged or serialized: a password, a token.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub username: String,
    pub email: String,
    pub state: State,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    /// Where the user came from (`api`, `manual`, `csv`, `bulk`, `scim`, …), for the record.
    pub creation_source: String,
    /// The PHC string of the password hash; `None` while the password is pending.
    pub password_hash: Option<Secret>,
    pub password_expired: bool,
    pub password_date: Option<DateTime<Utc>>,
    pub account_locked: bool,
    pub account_locked_date: Option<DateTime<Utc>>,
    pub bad_login_attempts: i64,
    pub totp_enabled: bool,
    /// The TOTP secret, encrypted at rest (never leaves the server).
    pub totp_secret: Option<Secret>,
    /// Profile fields (`fields::PROFILE`), only those with a value.
    pub profile: Map<String, Value>,
}

/// How a password stands, as the admin portal shows it (§2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PasswordStatus {
    Pending,
    Active,
    Expired,
}

impl User {
    /// A user with these and nothing else: no password, no profile, not locked.
    pub fn new(
        id: impl Into<String>,
        username: impl Into<String>,
        email: impl Into<String>,
        state: State,
        at: DateTime<Utc>,
    ) -> User {
        User {
            id: id.into(),
            username: username.into(),
            email: email.into(),
            state,
            created: at,
            updated: at,
            creation_source: "api".into(),
            password_hash: None,
            password_expired: false,
            password_date: None,
            account_locked: false,
            account_locked_date: None,
            bad_login_attempts: 0,
            totp_enabled: false,
            totp_secret: None,
            profile: Map::new(),
        }
    }

    /// `activated` in JumpCloud's sense: a password has been set.
    pub fn activated(&self) -> bool {
        self.password_hash.is_some()
    }

    pub fn password_status(&self) -> PasswordStatus {
        match (self.password_hash.is_some(), self.password_expired) {
            (false, _) => PasswordStatus::Pending,
            (true, true) => PasswordStatus::Expired,
            (true, false) => PasswordStatus::Active,
        }
    }

    /// The lockout columns, for the state machine of `lockout`.
    pub fn lockout(&self) -> crate::lockout::Lockout {
        crate::lockout::Lockout {
            failures: self.bad_login_attempts,
            locked: self.account_locked,
            locked_at: self.account_locked_date,
        }
    }

    pub fn text(&self, field: &str) -> Option<&str> {
        self.profile.get(field).and_then(Value::as_str)
    }

    pub fn flag(&self, field: &str) -> bool {
        self.profile.get(field).and_then(Value::as_bool).unwrap_or(false)
    }

    /// Until when the user may sign in without a second factor although MFA is required
    /// (`mfa.exclusion` / `mfa.exclusionUntil`, set by `resetmfa`): `None` when no exclusion
    /// holds at `now`.
    pub fn mfa_excluded_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mfa = self.profile.get("mfa")?;
        if mfa.get("exclusion").and_then(Value::as_bool) != Some(true) {
            return None;
        }
        let until = mfa.get("exclusionUntil").and_then(Value::as_str)?;
        let until = DateTime::parse_from_rfc3339(until).ok()?.with_timezone(&Utc);
        (until > now).then_some(until)
    }

    /// MFA is required of the user now: required by the admin and no exclusion running.
    pub fn mfa_required_now(&self, now: DateTime<Utc>) -> bool {
        self.flag("enable_user_portal_multifactor") && self.mfa_excluded_until(now).is_none()
    }

    pub fn password_authority(&self) -> Option<crate::PasswordAuthority> {
        self.profile.get("restrictedFields").and_then(crate::PasswordAuthority::from_restricted_fields)
    }

    /// The JumpCloud `systemuserreturn` form. Secrets never appear here.
    pub fn to_json(&self, organization: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("_id".into(), self.id.clone().into());
        m.insert("username".into(), self.username.clone().into());
        m.insert("email".into(), self.email.clone().into());
        for f in fields::PROFILE {
            let v = match self.profile.get(f.name) {
                Some(v) => v.clone(),
                None => default_value(f.name, f.kind),
            };
            if !v.is_null() || matches!(f.name, "delegatedAuthority") {
                m.insert(f.name.into(), v);
            }
        }
        m.insert("state".into(), self.state.as_str().into());
        m.insert("activated".into(), self.activated().into());
        m.insert("suspended".into(), (self.state == State::Suspended).into());
        m.insert("password_expired".into(), self.password_expired.into());
        m.insert("password_date".into(), opt_time(self.password_date));
        m.insert("account_locked".into(), self.account_locked.into());
        m.insert("account_locked_date".into(), opt_time(self.account_locked_date));
        m.insert("badLoginAttempts".into(), self.bad_login_attempts.into());
        m.insert("totp_enabled".into(), self.totp_enabled.into());
        let status = if self.totp_enabled { "ENROLLED" } else { "NOT_ENROLLED" };
        m.insert("mfaEnrollment".into(), serde_json::json!({ "totpStatus": status, "overallStatus": status }));
        if let Some(Value::Object(mfa)) = m.get_mut("mfa") {
            mfa.insert("configured".into(), self.totp_enabled.into());
        }
        m.insert("created".into(), format_time(self.created).into());
        m.insert("creationSource".into(), self.creation_source.clone().into());
        m.insert("organization".into(), organization.into());
        m
    }
}

fn default_value(name: &str, kind: Kind) -> Value {
    match kind {
        Kind::Text => Value::String(String::new()),
        Kind::Bool => Value::Bool(false),
        Kind::Int | Kind::Time => Value::Null,
        Kind::Json => match name {
            "mfa" => serde_json::json!({ "configured": false, "exclusion": false }),
            "delegatedAuthority" | "recoveryEmail" | "externally_managed" => Value::Null,
            _ => Value::Array(vec![]),
        },
    }
}

pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn opt_time(t: Option<DateTime<Utc>>) -> Value {
    t.map(|t| Value::String(format_time(t))).unwrap_or(Value::Null)
}

/// Keeps only the named fields (`fields=` projection); `_id` always stays.
pub fn project(mut m: Map<String, Value>, fields: Option<&[String]>) -> Map<String, Value> {
    if let Some(fields) = fields {
        m.retain(|k, _| k == "_id" || fields.iter().any(|f| f == k));
    }
    m
}

/// A validated create or update request.
#[derive(Debug, Default, Clone)]
pub struct UserInput {
    pub username: Option<String>,
    pub email: Option<String>,
    /// Normalized profile values; `Null` clears a field on update.
    pub profile: Map<String, Value>,
    pub password: Option<Secret>,
    pub state: Option<State>,
    pub suspended: Option<bool>,
    pub account_locked: Option<bool>,
}

/// Validates a JumpCloud `systemuserputpost` body. Every problem is reported, each naming
/// its field; fields outside the schema are refused by name.
pub fn parse_user_input(body: &Value, creating: bool) -> Result<UserInput, DomainError> {
    let Some(obj) = body.as_object() else {
        return Err(DomainError::field("body", "must be a JSON object"));
    };
    parse_user_object(obj.clone(), creating)
}

/// [`parse_user_input`] of a body's object, taken over: its values become the input's
/// without a copy (imports parse 100,000s).
pub fn parse_user_object(obj: Map<String, Value>, creating: bool) -> Result<UserInput, DomainError> {
    let mut errors = Vec::new();
    let mut input = UserInput { profile: Map::with_capacity(obj.len()), ..Default::default() };
    for (key, value) in obj {
        match key.as_str() {
            "username" => match value.as_str() {
                Some(s) => match normalize_username(s) {
                    Ok(u) => match (creating, check_new_username(&u)) {
                        (true, Err(m)) => errors.push(FieldError::new("username", m)),
                        _ => input.username = Some(u),
                    },
                    Err(m) => errors.push(FieldError::new("username", m)),
                },
                None => errors.push(FieldError::new("username", "must be a string")),
            },
            "email" => match value.as_str() {
                Some(s) => match normalize_email(s) {
                    Ok(e) => input.email = Some(e),
                    Err(m) => errors.push(FieldError::new("email", m)),
                },
                None => errors.push(FieldError::new("email", "must be a string")),
            },
            "password" => match value {
                Value::String(s) => input.password = Some(Secret::new(s)),
                Value::Null => {}
                _ => errors.push(FieldError::new("password", "must be a string")),
            },
            "state" => match value.as_str().and_then(State::parse) {
                Some(s) => input.state = Some(s),
                None => errors.push(FieldError::new("state", "must be one of STAGED, ACTIVATED, SUSPENDED")),
            },
            "suspended" | "account_locked" | "activated" => match value {
                Value::Bool(b) => match key.as_str() {
                    "suspended" => input.suspended = Some(b),
                    "account_locked" => input.account_locked = Some(b),
                    // `activated` is derived from the password; accepted for compatibility.
                    _ => {}
                },
                Value::Null => {}
                _ => errors.push(FieldError::new(key.clone(), "must be true or false")),
            },
            name => match fields::profile(name) {
                Some(f) => match check_profile_value(f, value) {
                    Ok(v) => {
                        input.profile.insert(key, v);
                    }
                    Err(m) => errors.push(FieldError::new(name, m)),
                },
                None => {
                    errors.push(FieldError::new(name, "is not a field of a system user (JumpCloud systemuserputpost)"))
                }
            },
        }
    }
    if creating {
        if input.username.is_none() && !errors.iter().any(|e| e.field == "username") {
            errors.push(FieldError::new("username", "is required"));
        }
        if input.email.is_none() && !errors.iter().any(|e| e.field == "email") {
            errors.push(FieldError::new("email", "is required"));
        }
    }
    if errors.is_empty() {
        Ok(input)
    } else {
        Err(DomainError::Invalid(errors))
    }
}

/// Checks a username and keeps it as given (§2.1: JumpCloud keeps case, and hosts match it
/// case-sensitively; Cairn compares it case-insensitively). ASCII letters, digits, `.`, `_`
/// and `-`, at most 64. A name that existing users may already have is accepted here (it may
/// start with a digit, as names could before); a name given to a user anew must also pass
/// [`check_new_username`].
pub fn normalize_username(s: &str) -> Result<String, String> {
    let u = s.trim();
    let mut chars = u.chars();
    let ok = match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {
            chars.clone().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        }
        _ => false,
    };
    if u.is_empty() {
        Err("must not be empty".into())
    } else if u.chars().count() > 64 {
        Err("must be at most 64 characters".into())
    } else if !ok {
        Err("must start with a letter and contain only letters, digits, '.', '_' and '-'".into())
    } else {
        Ok(u.to_string())
    }
}

/// JumpCloud's rule for a name a user is given (at creation or when renamed): it starts with
/// a letter.
pub fn check_new_username(u: &str) -> Result<(), String> {
    match u.chars().next() {
        Some(c) if c.is_ascii_alphabetic() => Ok(()),
        _ => Err("must start with a letter and contain only letters, digits, '.', '_' and '-'".into()),
    }
}

pub fn normalize_email(s: &str) -> Result<String, String> {
    let e = s.trim().to_lowercase();
    if e.is_empty() {
        return Err("must not be empty".into());
    }
    if e.chars().count() > 254 {
        return Err("must be at most 254 characters".into());
    }
    let valid = match e.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && local.len() <= 64
                && !domain.is_empty()
                && !domain.contains('@')
                && !local.chars().any(|c| c.is_whitespace() || c.is_control() || "<>()[],;:\\\"".contains(c))
                && domain.split('.').all(|label| {
                    !label.is_empty()
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && label.chars().all(|c| c.is_alphanumeric() || c == '-')
                })
        }
        None => false,
    };
    if valid {
        Ok(e)
    } else {
        Err(format!("'{}' is not a valid e-mail address", s.trim()))
    }
}

fn check_profile_value(f: &fields::Field, value: Value) -> Result<Value, String> {
    if value.is_null() {
        return Ok(Value::Null);
    }
    if let Some(at) = fields::nul_path(&value) {
        return Err(match at.is_empty() {
            true => fields::NUL_REFUSED.to_string(),
            false => format!("{at}: {}", fields::NUL_REFUSED),
        });
    }
    match f.kind {
        Kind::Text | Kind::Time => {
            let Value::String(s) = value else {
                return Err("must be a string".into());
            };
            // No more bytes than the limit: no more characters either (the common case).
            if s.len() > f.max_len && s.chars().count() > f.max_len {
                return Err(format!("must be at most {} characters", f.max_len));
            }
            if s.is_empty() && f.name == "employeeIdentifier" {
                return Ok(Value::Null);
            }
            if f.name == "alternateEmail" && !s.trim().is_empty() {
                return normalize_email(&s).map(Value::String);
            }
            if f.name == "manager" && !s.is_empty() && !crate::id::is_object_id(&s) {
                return Err("must be the _id of a user (24 hex characters)".into());
            }
            Ok(Value::String(s))
        }
        Kind::Bool => match value {
            Value::Bool(_) => Ok(value),
            _ => Err("must be true or false".into()),
        },
        Kind::Int => match value.as_i64() {
            Some(n) if (1..=i64::from(u32::MAX)).contains(&n) => Ok(value),
            _ => Err("must be a whole number of at least 1".into()),
        },
        Kind::Json => check_json(f.name, &value).map(|_| value),
    }
}

/// Structural checks for the array and object fields: the right shape, strings of bounded
/// length, and the enumerations JumpCloud defines.
fn check_json(name: &str, value: &Value) -> Result<(), String> {
    let check_obj = |v: &Value, allowed: &[&str]| -> Result<(), String> {
        let Some(o) = v.as_object() else {
            return Err("entries must be objects".into());
        };
        for (k, v) in o {
            if !allowed.is_empty() && !allowed.contains(&k.as_str()) {
                return Err(format!("unknown property '{k}' (allowed: {})", allowed.join(", ")));
            }
            if let Some(s) = v.as_str() {
                if s.chars().count() > 1024 {
                    return Err(format!("'{k}' must be at most 1024 characters"));
                }
            }
        }
        Ok(())
    };
    let array = |allowed: &[&str]| -> Result<(), String> {
        let Some(a) = value.as_array() else {
            return Err("must be an array".into());
        };
        if a.len() > 100 {
            return Err("must have at most 100 entries".into());
        }
        a.iter().try_for_each(|v| check_obj(v, allowed))
    };
    match name {
        "addresses" => array(&[
            "type",
            "poBox",
            "extendedAddress",
            "streetAddress",
            "locality",
            "region",
            "postalCode",
            "country",
            "id",
        ]),
        "phoneNumbers" => array(&["type", "number", "id"]),
        "attributes" => {
            array(&["name", "value"])?;
            for a in value.as_array().into_iter().flatten() {
                if !a.get("name").is_some_and(Value::is_string) {
                    return Err("each attribute needs a string 'name'".into());
                }
            }
            Ok(())
        }
        "relationships" => array(&["type", "value"]),
        "ssh_keys" => array(&["name", "public_key", "_id", "create_date"]),
        "restrictedFields" => {
            array(&["field", "type", "id"])?;
            for r in value.as_array().into_iter().flatten() {
                let t = r.get("type").and_then(Value::as_str).unwrap_or("");
                if !matches!(t, "active_directory" | "scim" | "federated_identity_provider") {
                    return Err("'type' must be active_directory, scim or federated_identity_provider".into());
                }
            }
            Ok(())
        }
        "delegatedAuthority" => {
            check_obj(value, &["id", "name"])?;
            match value.get("name").and_then(Value::as_str) {
                Some("ActiveDirectory") => Ok(()),
                _ => Err("'name' must be \"ActiveDirectory\"".into()),
            }
        }
        "mfa" => check_obj(value, &["configured", "exclusion", "exclusionDays", "exclusionUntil"]),
        "recoveryEmail" => check_obj(value, &["address"]),
        _ => check_obj(value, &[]),
    }
}

/// The body of `POST /systemusers/{id}/resetmfa` (JumpCloud `UserMfa_Reset`): `exclusion`
/// with `exclusionUntil` (RFC 3339) or `exclusionDays` (whole days from `now`; when both are
/// sent, as JumpCloud's own samples do, `exclusionUntil` wins). Returns the end of the
/// exclusion, `None` for a plain reset. Every problem is named by its field.
pub fn parse_mfa_reset(body: &Value, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, DomainError> {
    let Some(obj) = body.as_object() else {
        return Err(DomainError::field("body", "must be a JSON object: {\"exclusion\": true, \"exclusionUntil\": …}"));
    };
    let mut errors = Vec::new();
    let exclusion = match obj.get("exclusion") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            errors.push(FieldError::new("exclusion", "must be true or false"));
            false
        }
    };
    let until = match obj.get("exclusionUntil") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) if t.with_timezone(&Utc) > now => Some(t.with_timezone(&Utc)),
            Ok(_) => {
                errors.push(FieldError::new("exclusionUntil", "must be in the future"));
                None
            }
            Err(_) => {
                errors.push(FieldError::new("exclusionUntil", "must be an RFC 3339 time such as 2030-01-31T09:00:00Z"));
                None
            }
        },
        Some(_) => {
            errors.push(FieldError::new("exclusionUntil", "must be an RFC 3339 time string"));
            None
        }
    };
    let days = match obj.get("exclusionDays") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(d) if (1.0..=3650.0).contains(&d) && d.fract() == 0.0 => Some(chrono::Duration::days(d as i64)),
            _ => {
                errors.push(FieldError::new("exclusionDays", "must be a whole number of days from 1 to 3650"));
                None
            }
        },
    };
    for k in obj.keys().filter(|k| !matches!(k.as_str(), "exclusion" | "exclusionUntil" | "exclusionDays")).take(10) {
        let name: String = k.chars().take(64).collect();
        errors.push(FieldError::new(
            name,
            "is not a parameter of an MFA reset (exclusion, exclusionUntil, exclusionDays)",
        ));
    }
    let end = until.or_else(|| days.map(|d| now + d));
    if exclusion && end.is_none() && errors.is_empty() {
        errors.push(FieldError::new("exclusionUntil", "is required with \"exclusion\": true (or give exclusionDays)"));
    }
    if !exclusion && end.is_some() && errors.is_empty() {
        errors.push(FieldError::new("exclusion", "must be true when an exclusion period is given"));
    }
    if !errors.is_empty() {
        return Err(DomainError::Invalid(errors));
    }
    Ok(if exclusion { end } else { None })
}

/// One changed field in an audit event; secrets are elided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub field: String,
    pub old: Value,
    pub new: Value,
}

/// The type of the `restrictedFields` entries a directory connection writes.
const UPSTREAM: &str = "active_directory";

/// `restrictedFields` as a directory sync writes them repeat the connection's id in every
/// entry: 640 bytes per user for nine fields, in every synced user's row and creation event.
/// Such a list (every entry exactly `{field, type: "active_directory", id}` of one connection)
/// is stored as `{"active_directory": id, "fields": [field, …]}`; [`unpack_restricted`] (and
/// [`changes_list`] for a creation event) gives back the same list. Anything else is stored as
/// it is: a stored list is never an object.
pub fn pack_restricted(v: &Value) -> Option<Value> {
    let entries = v.as_array().filter(|a| !a.is_empty())?;
    let mut id = None;
    let mut names = Vec::with_capacity(entries.len());
    for e in entries {
        let o = e.as_object().filter(|o| o.len() == 3)?;
        let keys: Vec<&str> = o.keys().map(String::as_str).collect();
        if keys != ["field", "type", "id"] || o["type"] != UPSTREAM {
            return None;
        }
        let this = o["id"].as_str()?;
        if *id.get_or_insert(this) != this {
            return None;
        }
        names.push(o["field"].as_str()?);
    }
    Some(serde_json::json!({ UPSTREAM: id?, "fields": names }))
}

/// The text a `restrictedFields` value is stored as (in a user's row and a creation event):
/// packed when [`pack_restricted`] can, as it is otherwise.
pub fn restricted_text(v: &Value) -> String {
    pack_restricted(v).map_or_else(|| v.to_string(), |p| p.to_string())
}

/// The list [`pack_restricted`] stored (any other value is returned as it is).
pub fn unpack_restricted(v: Value) -> Value {
    let packed = v
        .as_object()
        .filter(|o| o.len() == 2)
        .and_then(|o| Some((o.get(UPSTREAM)?.as_str()?, o.get("fields")?.as_array()?)));
    let Some((id, names)) = packed else { return v };
    let entries: Option<Vec<Value>> =
        names.iter().map(|n| Some(serde_json::json!({ "field": n.as_str()?, "type": UPSTREAM, "id": id }))).collect();
    entries.map_or(v.clone(), Value::Array)
}

/// `a == b` for JSON values, quick when both are copies of one value: objects are compared
/// entry by entry in order before falling back to `==`, which looks every key up (a synced
/// user's `restrictedFields` is compared with the user's before it, twice per user written).
pub fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && (x.iter().zip(y).all(|((k, v), (l, w))| k == l && same_json(v, w)) || x == y)
        }
        _ => a == b,
    }
}

/// An event's changes as stored, in the list form: a creation's are stored as one object of
/// the values set, `{"username": …, …}` (half the bytes; every old value is null), and read
/// back as `[{"field", "old": null, "new"}, …]` in the same order.
pub fn changes_list(stored: Value) -> Value {
    match stored {
        Value::Object(set) => Value::Array(
            set.into_iter()
                .map(|(field, new)| {
                    let new = if field == "restrictedFields" { unpack_restricted(new) } else { new };
                    serde_json::json!({"field": field, "old": null, "new": new})
                })
                .collect(),
        ),
        other => other,
    }
}

/// The fields that differ between two versions of a user, as their JSON shows them, plus
/// an elided entry when the password changed.
pub fn diff(old: &User, new: &User) -> Vec<Change> {
    let a = old.to_json("");
    let b = new.to_json("");
    let mut changes: Vec<Change> = b
        .iter()
        .filter(|(k, v)| a.get(*k) != Some(*v))
        .map(|(k, v)| Change { field: k.clone(), old: a.get(k).cloned().unwrap_or(Value::Null), new: v.clone() })
        .collect();
    if old.password_hash != new.password_hash {
        changes.push(Change {
            field: "password".into(),
            old: Value::String("***".into()),
            new: Value::String("***".into()),
        });
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errs(v: Value, creating: bool) -> Vec<FieldError> {
        match parse_user_input(&v, creating) {
            Err(DomainError::Invalid(e)) => e,
            other => panic!("expected errors, got {other:?}"),
        }
    }

    #[test]
    fn same_json_is_json_equality() {
        let a = json!([{"field": "email", "type": "active_directory", "id": "c1"}, {"n": [1, {"x": null}]}]);
        assert!(same_json(&a, &a.clone()));
        // Keys in another order: still equal, as `==` says.
        let b = json!([{"id": "c1", "type": "active_directory", "field": "email"}, {"n": [1, {"x": null}]}]);
        assert!(same_json(&a, &b) && a == b);
        for other in [
            json!([{"field": "email", "type": "active_directory", "id": "c2"}, {"n": [1, {"x": null}]}]),
            json!([{"field": "email", "type": "active_directory"}, {"n": [1, {"x": null}]}]),
            json!([{"field": "email", "type": "active_directory", "id": "c1"}, {"n": [1, {"x": 0}]}]),
            json!([{"field": "email", "type": "active_directory", "id": "c1"}]),
            json!({"field": "email"}),
            Value::Null,
        ] {
            assert!(!same_json(&a, &other) && !same_json(&other, &a), "{other}");
        }
    }

    #[test]
    fn usernames_keep_their_case_and_emails_are_lowercased() {
        let i = parse_user_input(&json!({"username": " Ada.L ", "email": "Ada@Example.COM"}), true).unwrap();
        assert_eq!(i.username.as_deref(), Some("Ada.L"));
        // A new name starts with a letter; one users may already have is still accepted on update.
        assert!(parse_user_input(&json!({"username": "1ada", "email": "a@x.io"}), true).is_err());
        assert_eq!(parse_user_input(&json!({"username": "1ada"}), false).unwrap().username.as_deref(), Some("1ada"));
        assert!(normalize_username("Ädа").is_err(), "letters are ASCII letters");
        assert_eq!(i.email.as_deref(), Some("ada@example.com"));
        assert!(normalize_username("-bad").is_err());
        assert!(normalize_username("has space").is_err());
        assert!(normalize_username(&"a".repeat(65)).is_err());
        assert!(normalize_email("no-at-sign").is_err());
        assert!(normalize_email("a@b@c").is_err());
        assert!(normalize_email("a b@c.com").is_err());
        assert!(normalize_email("x@example..com").is_err());
        assert!(normalize_email("first.last+tag@sub.example.org").is_ok());
    }

    #[test]
    fn every_problem_is_named() {
        let e = errs(json!({"username": "ok", "bogus": 1, "sudo": "yes", "unix_uid": 0}), true);
        let names: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
        assert!(names.contains(&"bogus"));
        assert!(names.contains(&"sudo"));
        assert!(names.contains(&"unix_uid"));
        assert!(names.contains(&"email"), "missing required email: {names:?}");
    }

    #[test]
    fn jumpcloud_fields_cairn_does_not_act_on_are_accepted() {
        let i = parse_user_input(
            &json!({"username": "u", "email": "u@x.io", "sudo": true, "passwordless_sudo": false,
                    "samba_service_user": true, "managedAppleId": "u@apple", "relationships": [{"type":"manager","value":"x"}]}),
            true,
        )
        .unwrap();
        assert_eq!(i.profile["sudo"], json!(true));
        assert!(i.profile.contains_key("relationships"));
    }

    #[test]
    fn field_lengths_are_enforced() {
        let e = errs(json!({"employeeIdentifier": "x".repeat(257), "firstname": "y".repeat(1025)}), false);
        assert_eq!(e.len(), 2);
        let ok = parse_user_input(&json!({"employeeIdentifier": ""}), false).unwrap();
        assert_eq!(ok.profile["employeeIdentifier"], Value::Null, "empty id means none");
    }

    #[test]
    fn bulk_creation_sources_pick_the_default_state_class() {
        assert_eq!(CreationSource::from_bulk_header(None).unwrap().0, CreationSource::CsvImport);
        assert_eq!(CreationSource::from_bulk_header(Some(" JumpCloud:Bulk ")).unwrap().0, CreationSource::CsvImport);
        assert_eq!(
            CreationSource::from_bulk_header(Some("jumpcloud:workday")).unwrap().0,
            CreationSource::ApplicationImport
        );
        assert!(CreationSource::from_bulk_header(Some("okta")).is_err());
    }

    #[test]
    fn state_must_be_known() {
        let e = errs(json!({"state": "ACTIVE"}), false);
        assert_eq!(e[0].field, "state");
    }

    #[test]
    fn mfa_reset_bodies() {
        let now = DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_mfa_reset(&json!({}), now).unwrap(), None);
        assert_eq!(parse_mfa_reset(&json!({"exclusion": false}), now).unwrap(), None);
        let until =
            parse_mfa_reset(&json!({"exclusion": true, "exclusionUntil": "2030-01-08T00:00:00Z"}), now).unwrap();
        assert_eq!(until, Some(now + chrono::Duration::days(7)));
        let until = parse_mfa_reset(&json!({"exclusion": true, "exclusionDays": 2}), now).unwrap();
        assert_eq!(until, Some(now + chrono::Duration::days(2)));
        // JumpCloud's sample sends both: the date wins.
        let both = json!({"exclusion": true, "exclusionDays": 1, "exclusionUntil": "2030-01-08T00:00:00Z"});
        assert_eq!(parse_mfa_reset(&both, now).unwrap(), Some(now + chrono::Duration::days(7)));
        for (body, field) in [
            (json!({"exclusion": true}), "exclusionUntil"),
            (json!({"exclusion": true, "exclusionUntil": "2029-01-01T00:00:00Z"}), "exclusionUntil"),
            (json!({"exclusion": true, "exclusionUntil": "soon"}), "exclusionUntil"),
            (json!({"exclusion": true, "exclusionDays": 0}), "exclusionDays"),
            (json!({"exclusion": "yes"}), "exclusion"),
            (json!({"exclusionDays": 3}), "exclusion"),
            (json!({"exclusion": true, "exclusionDays": 1, "sudo": true}), "sudo"),
            (json!([]), "body"),
        ] {
            match parse_mfa_reset(&body, now) {
                Err(DomainError::Invalid(e)) => assert_eq!(e[0].field, field, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_mfa_exclusion_holds_until_its_end() {
        let now = DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
        let mut u = User::new("0123456789abcdef01234567", "u", "u@x.io", State::Activated, now);
        u.profile.insert("enable_user_portal_multifactor".into(), json!(true));
        assert!(u.mfa_required_now(now));
        u.profile.insert("mfa".into(), json!({"exclusion": true, "exclusionUntil": "2030-01-02T00:00:00.000Z"}));
        assert!(!u.mfa_required_now(now), "excluded until tomorrow");
        assert!(u.mfa_required_now(now + chrono::Duration::days(1)), "required again once it ends");
    }

    #[test]
    fn secrets_do_not_print() {
        let i = parse_user_input(&json!({"password": "hunter2hunter2"}), false).unwrap();
        assert!(!format!("{i:?}").contains("hunter2"));
    }
}
