//! The user record's fields, their JSON names (JumpCloud's `systemuserreturn`), storage
//! columns and kinds. The store, the validation and the list query all read this one table,
//! so a field is added in one place.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Bool,
    Int,
    /// RFC 3339 instant, stored as text in a sortable UTC form.
    Time,
    /// Arrays and objects, stored as JSON text; not filterable.
    Json,
}

#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub column: &'static str,
    pub kind: Kind,
    /// Longest accepted text (characters); 0 when not text.
    pub max_len: usize,
}

const fn text(name: &'static str, column: &'static str) -> Field {
    Field { name, column, kind: Kind::Text, max_len: 1024 }
}
const fn of(name: &'static str, column: &'static str, kind: Kind) -> Field {
    Field { name, column, kind, max_len: 0 }
}

/// Profile fields: accepted from clients as they are (JumpCloud `systemuserputpost`), stored
/// one column each, returned unchanged.
pub const PROFILE: &[Field] = &[
    text("alternateEmail", "alternateemail"),
    text("firstname", "firstname"),
    text("middlename", "middlename"),
    text("lastname", "lastname"),
    text("displayname", "displayname"),
    Field { name: "employeeIdentifier", column: "employeeidentifier", kind: Kind::Text, max_len: 256 },
    text("jobTitle", "jobtitle"),
    text("department", "department"),
    text("company", "company"),
    text("costCenter", "costcenter"),
    text("employeeType", "employeetype"),
    text("location", "location"),
    text("description", "description"),
    Field { name: "manager", column: "manager", kind: Kind::Text, max_len: 24 },
    text("external_dn", "external_dn"),
    text("external_source_type", "external_source_type"),
    text("managedAppleId", "managedappleid"),
    Field { name: "public_key", column: "public_key", kind: Kind::Text, max_len: 16384 },
    text("external_password_expiration_date", "external_password_expiration_date"),
    of("sudo", "sudo", Kind::Bool),
    of("passwordless_sudo", "passwordless_sudo", Kind::Bool),
    of("allow_public_key", "allow_public_key", Kind::Bool),
    of("enable_managed_uid", "enable_managed_uid", Kind::Bool),
    of("enable_user_portal_multifactor", "enable_user_portal_multifactor", Kind::Bool),
    of("ldap_binding_user", "ldap_binding_user", Kind::Bool),
    of("samba_service_user", "samba_service_user", Kind::Bool),
    of("disableDeviceMaxLoginAttempts", "disabledevicemaxloginattempts", Kind::Bool),
    of("password_never_expires", "password_never_expires", Kind::Bool),
    of("unix_uid", "unix_uid", Kind::Int),
    of("unix_guid", "unix_guid", Kind::Int),
    of("addresses", "addresses", Kind::Json),
    of("phoneNumbers", "phonenumbers", Kind::Json),
    of("attributes", "attributes", Kind::Json),
    of("relationships", "relationships", Kind::Json),
    of("recoveryEmail", "recoveryemail", Kind::Json),
    of("restrictedFields", "restrictedfields", Kind::Json),
    of("delegatedAuthority", "delegatedauthority", Kind::Json),
    of("externally_managed", "externally_managed", Kind::Json),
    of("mfa", "mfa", Kind::Json),
    of("ssh_keys", "ssh_keys", Kind::Json),
];

/// Server-maintained fields with columns of their own (typed on `User`).
pub const CORE: &[Field] = &[
    of("_id", "id", Kind::Text),
    text("username", "username"),
    text("email", "email"),
    of("state", "state", Kind::Text),
    of("created", "created", Kind::Time),
    of("creationSource", "creationsource", Kind::Text),
    of("activated", "activated", Kind::Bool),
    of("password_expired", "password_expired", Kind::Bool),
    of("password_date", "password_date", Kind::Time),
    of("account_locked", "account_locked", Kind::Bool),
    of("account_locked_date", "account_locked_date", Kind::Time),
    of("badLoginAttempts", "badloginattempts", Kind::Int),
    of("totp_enabled", "totp_enabled", Kind::Bool),
];

/// Fields a client may send that are not profile fields: they drive lifecycle and
/// credentials and are handled by name.
pub const SPECIAL_INPUT: &[&str] =
    &["username", "email", "password", "state", "suspended", "activated", "account_locked"];

/// Fields only computed for output (accepted in `fields=` projections).
pub const DERIVED: &[&str] =
    &["suspended", "organization", "password_expiration_date", "mfaEnrollment", "scheduledStateChanges"];

pub fn profile(name: &str) -> Option<&'static Field> {
    profile_index(name).map(|i| &PROFILE[i])
}

/// Where a profile field is in [`PROFILE`]: a hash lookup, as imports ask for every cell.
pub fn profile_index(name: &str) -> Option<usize> {
    type ByName = std::collections::HashMap<&'static str, usize, foldhash::fast::RandomState>;
    static BY_NAME: std::sync::LazyLock<ByName> =
        std::sync::LazyLock::new(|| PROFILE.iter().enumerate().map(|(i, f)| (f.name, i)).collect());
    BY_NAME.get(name).copied()
}

/// A field that can be filtered or sorted on: a scalar with a column.
pub fn queryable(name: &str) -> Option<&'static Field> {
    CORE.iter().chain(PROFILE.iter()).find(|f| f.name == name && f.kind != Kind::Json)
}

/// Every name a `fields=` projection may ask for.
pub fn is_output_field(name: &str) -> bool {
    CORE.iter().chain(PROFILE.iter()).any(|f| f.name == name) || DERIVED.contains(&name)
}

/// Fields whose values never leave the server, even in an audit event.
pub fn is_secret(name: &str) -> bool {
    matches!(name, "password" | "password_hash" | "totp_secret")
}

/// What a value holding a NUL byte is told. No database stores NUL in text (PostgreSQL refuses
/// it outright), so every way in refuses it first, naming the field.
pub const NUL_REFUSED: &str = "must not contain a NUL byte (\\u0000)";

/// Whether a text holds a NUL byte.
pub fn has_nul(s: &str) -> bool {
    s.as_bytes().contains(&0)
}

/// The path (`name`, `addresses[0].street`) of the first string or key of a JSON document that
/// holds a NUL byte, if any.
pub fn nul_path(v: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match v {
        Value::String(s) => has_nul(s).then(String::new),
        Value::Array(a) => a.iter().enumerate().find_map(|(i, x)| nul_path(x).map(|p| join(&format!("[{i}]"), &p))),
        Value::Object(o) => o.iter().find_map(|(k, x)| {
            if has_nul(k) {
                return Some(k.replace('\0', "\\u0000"));
            }
            nul_path(x).map(|p| join(k, &p))
        }),
        _ => None,
    }
}

fn join(head: &str, rest: &str) -> String {
    if rest.is_empty() {
        head.to_string()
    } else if rest.starts_with('[') {
        format!("{head}{rest}")
    } else {
        format!("{head}.{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_field_is_found_by_its_name() {
        for (i, f) in PROFILE.iter().enumerate() {
            assert_eq!(profile_index(f.name), Some(i), "{} is named twice", f.name);
        }
        assert!(profile("username").is_none(), "a core field, not a profile one");
    }

    #[test]
    fn nul_bytes_are_found_by_path() {
        use serde_json::json;
        assert_eq!(nul_path(&json!({"a": "x", "b": [1, {"c": "y"}]})), None);
        assert_eq!(nul_path(&json!({"firstname": "a\0b"})).as_deref(), Some("firstname"));
        assert_eq!(nul_path(&json!({"addresses": [{}, {"street": "\0"}]})).as_deref(), Some("addresses[1].street"));
        assert_eq!(nul_path(&json!([{"k\0": 1}])).as_deref(), Some("[0].k\\u0000"));
        assert_eq!(nul_path(&json!("\0")).as_deref(), Some(""));
    }
}
