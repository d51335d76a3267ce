//! Organization settings (one organization per deployment), with JumpCloud's JSON names.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::DomainError;
use crate::user::{CreationSource, State};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrgSettings {
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default)]
    pub new_system_user_state_defaults: StateDefaults,
    #[serde(default)]
    pub system_user_defaults: SystemUserDefaults,
    #[serde(default)]
    pub password_policy: PasswordPolicy,
}

fn default_name() -> String {
    "Cairn".into()
}

impl Default for OrgSettings {
    fn default() -> Self {
        Self {
            name: default_name(),
            new_system_user_state_defaults: StateDefaults::default(),
            system_user_defaults: SystemUserDefaults::default(),
            password_policy: PasswordPolicy::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DefaultState {
    Staged,
    Activated,
}

impl From<DefaultState> for State {
    fn from(d: DefaultState) -> State {
        match d {
            DefaultState::Staged => State::Staged,
            DefaultState::Activated => State::Activated,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateDefaults {
    pub manual_entry: DefaultState,
    pub csv_import: DefaultState,
    pub application_import: DefaultState,
}

impl Default for StateDefaults {
    fn default() -> Self {
        Self {
            manual_entry: DefaultState::Activated,
            csv_import: DefaultState::Activated,
            application_import: DefaultState::Activated,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SystemUserDefaults {
    /// `[{field:"password", type:"active_directory"|"scim"}]`: the default external password
    /// authority given to new users.
    pub restricted_fields: Vec<RestrictedField>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestrictedField {
    pub field: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordPolicy {
    pub min_length: u32,
    pub max_login_attempts: u32,
    /// Auto-unlock after this many seconds; `None` keeps an account locked until an admin
    /// unlocks it.
    pub lockout_time_in_seconds: Option<u64>,
    pub password_expiration_in_days: Option<u32>,
    pub disallow_commonly_used_passwords: bool,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_length: 12,
            max_login_attempts: 10,
            lockout_time_in_seconds: None,
            password_expiration_in_days: None,
            disallow_commonly_used_passwords: true,
        }
    }
}

/// Who holds a user's password when it is not Cairn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordAuthority {
    ActiveDirectory,
    Scim,
}

impl PasswordAuthority {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active_directory" => Some(Self::ActiveDirectory),
            "scim" => Some(Self::Scim),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ActiveDirectory => "active_directory",
            Self::Scim => "scim",
        }
    }
    /// The `restrictedFields` value that records this authority on a user.
    pub fn restricted_fields(authority: Option<Self>) -> Value {
        match authority {
            Some(a) => serde_json::json!([{ "field": "password", "type": a.as_str() }]),
            None => serde_json::json!([]),
        }
    }
    /// Reads the password authority out of a `restrictedFields` value.
    pub fn from_restricted_fields(v: &Value) -> Option<Self> {
        v.as_array()?
            .iter()
            .find(|f| f.get("field").and_then(Value::as_str) == Some("password"))
            .and_then(|f| f.get("type").and_then(Value::as_str))
            .and_then(Self::parse)
    }
}

impl OrgSettings {
    /// The state a new user gets when the request names none (SPEC §3.2).
    pub fn default_state(&self, source: CreationSource) -> State {
        let d = &self.new_system_user_state_defaults;
        match source {
            CreationSource::ManualEntry => d.manual_entry,
            CreationSource::CsvImport => d.csv_import,
            CreationSource::ApplicationImport => d.application_import,
        }
        .into()
    }

    pub fn default_password_authority(&self) -> Option<PasswordAuthority> {
        self.system_user_defaults
            .restricted_fields
            .iter()
            .find(|f| f.field == "password")
            .and_then(|f| PasswordAuthority::parse(&f.kind))
    }

    /// Applies a partial JSON document (JumpCloud's `PUT /organizations` body `settings`) and
    /// validates the result; unknown or ill-typed fields are named in the error.
    pub fn apply_patch(&self, patch: &Value) -> Result<OrgSettings, DomainError> {
        if !patch.is_object() {
            return Err(DomainError::field("settings", "must be a JSON object"));
        }
        let mut merged = serde_json::to_value(self).expect("settings serialize");
        merge(&mut merged, patch);
        let settings: OrgSettings = serde_path_to_error::deserialize(merged).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "settings".to_string() } else { format!("settings.{path}") };
            DomainError::field(field, e.inner().to_string())
        })?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), DomainError> {
        let mut errors = Vec::new();
        let p = &self.password_policy;
        if !(8..=256).contains(&p.min_length) {
            errors.push(crate::FieldError::new("settings.passwordPolicy.minLength", "must be between 8 and 256"));
        }
        if p.max_login_attempts == 0 {
            errors.push(crate::FieldError::new("settings.passwordPolicy.maxLoginAttempts", "must be at least 1"));
        }
        for f in &self.system_user_defaults.restricted_fields {
            if f.field != "password" || PasswordAuthority::parse(&f.kind).is_none() {
                errors.push(crate::FieldError::new(
                    "settings.systemUserDefaults.restrictedFields",
                    "entries must be {\"field\":\"password\",\"type\":\"active_directory\"|\"scim\"}",
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(DomainError::Invalid(errors))
        }
    }
}

/// Deep merge: objects merge key by key, anything else replaces.
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_match_the_spec() {
        let s = OrgSettings::default();
        assert_eq!(s.password_policy.min_length, 12);
        assert_eq!(s.password_policy.max_login_attempts, 10);
        assert_eq!(s.password_policy.lockout_time_in_seconds, None);
        assert!(s.password_policy.disallow_commonly_used_passwords);
        assert_eq!(s.default_state(CreationSource::ManualEntry), State::Activated);
        assert_eq!(s.default_password_authority(), None);
    }

    #[test]
    fn default_state_follows_the_source_class() {
        let s = OrgSettings::default()
            .apply_patch(&json!({"newSystemUserStateDefaults": {"csvImport": "STAGED"}}))
            .unwrap();
        assert_eq!(s.default_state(CreationSource::CsvImport), State::Staged);
        assert_eq!(s.default_state(CreationSource::ManualEntry), State::Activated);
        assert_eq!(s.default_state(CreationSource::ApplicationImport), State::Activated);
    }

    #[test]
    fn patch_errors_name_the_field() {
        let err = OrgSettings::default()
            .apply_patch(&json!({"newSystemUserStateDefaults": {"manualEntry": "SUSPENDED"}}))
            .unwrap_err();
        let DomainError::Invalid(errs) = err else { panic!() };
        assert_eq!(errs[0].field, "settings.newSystemUserStateDefaults.manualEntry");
        let err = OrgSettings::default().apply_patch(&json!({"bogus": 1})).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn default_password_authority_is_read_from_restricted_fields() {
        let s = OrgSettings::default()
            .apply_patch(&json!({"systemUserDefaults": {"restrictedFields": [{"field": "password", "type": "scim"}]}}))
            .unwrap();
        assert_eq!(s.default_password_authority(), Some(PasswordAuthority::Scim));
        assert!(OrgSettings::default()
            .apply_patch(&json!({"systemUserDefaults": {"restrictedFields": [{"field": "password", "type": "ldap"}]}}))
            .is_err());
    }
}
