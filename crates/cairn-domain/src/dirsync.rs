//! Directory connections (§12): an upstream LDAP / Active Directory whose users and groups
//! Cairn imports and follows, and which may check their passwords. This module holds the
//! connection record and its validation, the attribute mapping of each preset, and how an
//! upstream entry becomes the fields of a Cairn user. Pure: the LDAP client lives in
//! `cairn-directory`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::FieldError;

/// Longest name, DN, filter or URL an admin may give: anything longer is a mistake, and the
/// filter is sent upstream on every sync.
pub const MAX_TEXT: usize = 4096;
/// Longest CA certificate bundle (PEM).
pub const MAX_PEM: usize = 64 * 1024;
/// Shortest and longest periodic sync interval (0: no periodic sync).
pub const MIN_INTERVAL: i64 = 60;
pub const MAX_INTERVAL: i64 = 7 * 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    ActiveDirectory,
    Openldap,
}

impl Preset {
    pub fn parse(s: &str) -> Option<Preset> {
        match s {
            "active_directory" => Some(Preset::ActiveDirectory),
            "openldap" => Some(Preset::Openldap),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::ActiveDirectory => "active_directory",
            Preset::Openldap => "openldap",
        }
    }
}

/// Who checks the passwords of the connection's users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Authority {
    /// Cairn, as for any other user.
    #[default]
    None,
    /// Nobody in Cairn: `restrictedFields` password = `active_directory`.
    External,
    /// The upstream, by a bind as the user (`delegatedAuthority`).
    Delegated,
}

impl Authority {
    pub fn parse(s: &str) -> Option<Authority> {
        match s {
            "none" => Some(Authority::None),
            "external" => Some(Authority::External),
            "delegated" => Some(Authority::Delegated),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Authority::None => "none",
            Authority::External => "external",
            Authority::Delegated => "delegated",
        }
    }
}

/// The Cairn fields an upstream attribute may fill (the mapping's keys), with the name of
/// the user field each one sets (`None`: read for the sync itself).
pub const MAPPED: &[(&str, Option<&str>)] = &[
    ("id", None),
    ("username", Some("username")),
    ("email", Some("email")),
    ("firstname", Some("firstname")),
    ("lastname", Some("lastname")),
    ("displayname", Some("displayname")),
    ("department", Some("department")),
    ("jobTitle", Some("jobTitle")),
    ("employeeIdentifier", Some("employeeIdentifier")),
    // Both fill `phoneNumbers`, as entries of type `work` and `mobile` (see `PHONES`).
    ("workPhone", Some("phoneNumbers")),
    ("mobilePhone", Some("phoneNumbers")),
    // A DN, resolved by the sync to the user linked to it (see `UpstreamUser::manager_dn`).
    ("manager", Some("manager")),
    ("memberOf", None),
    ("disabled", None),
    ("groupName", None),
    ("groupMember", None),
];

/// The mapping keys that fill `phoneNumbers`, with the phone type each one gives.
pub const PHONES: &[(&str, &str)] = &[("workPhone", "work"), ("mobilePhone", "mobile")];

/// Attribute mapping: Cairn field → upstream attribute (an empty attribute: not mapped).
pub type Mapping = BTreeMap<String, String>;

/// The preset's mapping.
pub fn preset_mapping(p: Preset) -> Mapping {
    let pairs: &[(&str, &str)] = match p {
        Preset::ActiveDirectory => &[
            ("id", "objectGUID"),
            ("username", "sAMAccountName"),
            ("email", "mail"),
            ("firstname", "givenName"),
            ("lastname", "sn"),
            ("displayname", "displayName"),
            ("department", "department"),
            ("jobTitle", "title"),
            ("employeeIdentifier", ""),
            ("workPhone", "telephoneNumber"),
            ("mobilePhone", "mobile"),
            ("manager", "manager"),
            ("memberOf", "memberOf"),
            ("disabled", "userAccountControl"),
            ("groupName", "cn"),
            ("groupMember", "member"),
        ],
        Preset::Openldap => &[
            ("id", "entryUUID"),
            ("username", "uid"),
            ("email", "mail"),
            ("firstname", "givenName"),
            ("lastname", "sn"),
            ("displayname", "cn"),
            ("department", "departmentNumber"),
            ("jobTitle", "title"),
            ("employeeIdentifier", ""),
            ("workPhone", "telephoneNumber"),
            ("mobilePhone", "mobile"),
            ("manager", "manager"),
            ("memberOf", "memberOf"),
            ("disabled", ""),
            ("groupName", "cn"),
            ("groupMember", "member"),
        ],
    };
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// One connection, as stored (the bind password sealed).
#[derive(Debug, Clone, PartialEq)]
pub struct Connection {
    pub id: String,
    pub name: String,
    pub url: String,
    pub starttls: bool,
    /// PEM CA certificates the upstream's chain must lead to (instead of the system roots).
    pub ca_cert: Option<String>,
    /// SHA-256 of the upstream's certificate (hex), pinned instead of a chain check.
    pub fingerprint: Option<String>,
    pub bind_dn: String,
    pub sealed_bind_password: Option<String>,
    pub user_base: String,
    pub user_filter: String,
    pub group_base: Option<String>,
    pub group_filter: String,
    pub preset: Preset,
    /// The admin's overrides of the preset's mapping (only those given).
    pub mapping_overrides: Mapping,
    pub sync_interval_seconds: i64,
    pub password_authority: Authority,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    /// The last sync job started, and when the next periodic one is due.
    pub last_job: Option<String>,
    pub next_sync: Option<DateTime<Utc>>,
}

impl Connection {
    /// The preset's mapping with the admin's overrides.
    pub fn mapping(&self) -> Mapping {
        let mut m = preset_mapping(self.preset);
        for (k, v) in &self.mapping_overrides {
            m.insert(k.clone(), v.clone());
        }
        m
    }

    /// The attribute mapped to `field`, when one is.
    pub fn attr(&self, field: &str) -> Option<String> {
        self.mapping().get(field).filter(|a| !a.is_empty()).cloned()
    }

    /// The API form: never the bind password, only whether one is set.
    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "url": self.url,
            "startTls": self.starttls,
            "caCert": self.ca_cert,
            "fingerprint": self.fingerprint,
            "bindDn": self.bind_dn,
            "bindPasswordSet": self.sealed_bind_password.is_some(),
            "userBase": self.user_base,
            "userFilter": self.user_filter,
            "groupBase": self.group_base,
            "groupFilter": self.group_filter,
            "preset": self.preset.as_str(),
            "attributeMapping": self.mapping(),
            "syncIntervalSeconds": self.sync_interval_seconds,
            "passwordAuthority": self.password_authority.as_str(),
            "lastJobId": self.last_job,
            "nextSync": self.next_sync.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            "created": self.created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })
    }

    /// The settings a body did not name keep their value; the rest are replaced.
    pub fn apply(&mut self, input: ConnectionInput) {
        macro_rules! take {
            ($($f:ident),*) => { $( if let Some(v) = input.$f { self.$f = v; } )* };
        }
        take!(
            name,
            url,
            starttls,
            ca_cert,
            fingerprint,
            bind_dn,
            user_base,
            user_filter,
            group_base,
            group_filter,
            preset,
            sync_interval_seconds,
            password_authority
        );
        if let Some(m) = input.mapping {
            self.mapping_overrides = m;
        }
    }
}

/// What a POST or PUT body asks; `None`: not given. The bind password stays clear until the
/// directory seals it.
#[derive(Debug, Default)]
pub struct ConnectionInput {
    pub name: Option<String>,
    pub url: Option<String>,
    pub starttls: Option<bool>,
    pub ca_cert: Option<Option<String>>,
    pub fingerprint: Option<Option<String>>,
    pub bind_dn: Option<String>,
    pub bind_password: Option<crate::Secret>,
    pub user_base: Option<String>,
    pub user_filter: Option<String>,
    pub group_base: Option<Option<String>>,
    pub group_filter: Option<String>,
    pub preset: Option<Preset>,
    pub mapping: Option<Mapping>,
    pub sync_interval_seconds: Option<i64>,
    pub password_authority: Option<Authority>,
}

fn text(v: &Value, max: usize) -> Result<String, String> {
    match v.as_str() {
        Some(s) if s.chars().count() > max => Err(format!("is longer than {max} characters")),
        Some(s) if s.contains('\0') => Err("must not contain NUL".into()),
        Some(s) => Ok(s.trim().to_string()),
        None => Err("must be a string".into()),
    }
}

fn nonempty(v: &Value, max: usize) -> Result<String, String> {
    let s = text(v, max)?;
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(s)
}

fn optional(v: &Value, max: usize) -> Result<Option<String>, String> {
    if v.is_null() {
        return Ok(None);
    }
    Ok(Some(text(v, max)?).filter(|s| !s.is_empty()))
}

/// `ldap://host[:port]` or `ldaps://host[:port]`, nothing after the authority.
pub fn check_url(s: &str) -> Result<(), String> {
    let rest = s
        .strip_prefix("ldap://")
        .or_else(|| s.strip_prefix("ldaps://"))
        .ok_or("must start with ldap:// or ldaps://")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err("must name a host, e.g. ldaps://dc1.example.com:636".into());
    }
    if rest.contains(['/', '?', '#', '@', ' ']) {
        return Err("must be only ldap[s]://host[:port] (no path, query or credentials)".into());
    }
    let host = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') && h.contains(':') => {
            // An IPv6 address without brackets.
            return Err(format!("an IPv6 address goes in brackets: [{h}:{p}]"));
        }
        Some((h, p)) => {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => {}
                _ => return Err(format!("port '{p}' is not a number from 1 to 65535")),
            }
            h
        }
        None => rest,
    };
    if host.is_empty() {
        return Err("must name a host".into());
    }
    Ok(())
}

/// A search filter the upstream can parse: parenthesized and balanced (the upstream reads it;
/// this catches typos before a sync does).
pub fn check_filter(s: &str) -> Result<(), String> {
    if !s.starts_with('(') || !s.ends_with(')') {
        return Err("must be an LDAP filter in parentheses, e.g. (objectClass=person)".into());
    }
    let mut depth: i64 = 0;
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("has unbalanced parentheses".into());
                }
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("has unbalanced parentheses".into());
    }
    Ok(())
}

/// A DN: `attr=value` parts separated by commas.
pub fn check_dn(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    for rdn in s.split(',') {
        match rdn.split_once('=') {
            Some((a, _)) if !a.trim().is_empty() => {}
            _ => return Err(format!("is not a DN: '{rdn}' is not attribute=value")),
        }
    }
    Ok(())
}

/// A SHA-256 fingerprint: 64 hex digits, colons allowed; returned in lower case without them.
pub fn parse_fingerprint(s: &str) -> Result<String, String> {
    let h: String = s.chars().filter(|c| *c != ':').collect::<String>().to_lowercase();
    if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err("must be a SHA-256 fingerprint: 64 hex digits (colons allowed)".into());
    }
    Ok(h)
}

/// Reads a POST (`creating`) or PUT body; every problem names its field.
pub fn parse_input(body: &Value, creating: bool) -> Result<ConnectionInput, Vec<FieldError>> {
    let Some(obj) = body.as_object() else {
        return Err(vec![FieldError::new("body", "must be a JSON object")]);
    };
    let mut input = ConnectionInput::default();
    let mut errors = Vec::new();
    for (k, v) in obj {
        let r: Result<(), String> = (|| {
            match k.as_str() {
                "id" | "_id" | "created" | "lastJobId" | "nextSync" | "bindPasswordSet" => {
                    return Err("is set by Cairn".into())
                }
                "name" => input.name = Some(nonempty(v, 200)?),
                "url" => {
                    let u = nonempty(v, MAX_TEXT)?;
                    check_url(&u)?;
                    input.url = Some(u);
                }
                "startTls" => input.starttls = Some(v.as_bool().ok_or("must be true or false")?),
                "caCert" => {
                    let pem = optional(v, MAX_PEM)?;
                    if let Some(p) = &pem {
                        if !p.contains("-----BEGIN CERTIFICATE-----") {
                            return Err("must be PEM: -----BEGIN CERTIFICATE----- …".into());
                        }
                    }
                    input.ca_cert = Some(pem);
                }
                "fingerprint" => {
                    input.fingerprint = Some(match optional(v, 200)? {
                        Some(f) => Some(parse_fingerprint(&f)?),
                        None => None,
                    })
                }
                "bindDn" => {
                    let d = text(v, MAX_TEXT)?;
                    if !d.is_empty() {
                        check_dn(&d)?;
                    }
                    input.bind_dn = Some(d);
                }
                "bindPassword" => {
                    let p = v.as_str().ok_or("must be a string")?;
                    if p.len() > 1024 || p.contains('\0') {
                        return Err("must be at most 1024 bytes, without NUL".into());
                    }
                    input.bind_password = Some(crate::Secret::new(p));
                }
                "userBase" => {
                    let d = nonempty(v, MAX_TEXT)?;
                    check_dn(&d)?;
                    input.user_base = Some(d);
                }
                "groupBase" => {
                    let d = optional(v, MAX_TEXT)?;
                    if let Some(d) = &d {
                        check_dn(d)?;
                    }
                    input.group_base = Some(d);
                }
                "userFilter" | "groupFilter" => {
                    let f = nonempty(v, MAX_TEXT)?;
                    check_filter(&f)?;
                    if k == "userFilter" {
                        input.user_filter = Some(f)
                    } else {
                        input.group_filter = Some(f)
                    }
                }
                "preset" => {
                    input.preset =
                        Some(v.as_str().and_then(Preset::parse).ok_or("must be active_directory or openldap")?)
                }
                "attributeMapping" => input.mapping = Some(parse_mapping(v)?),
                "syncIntervalSeconds" => {
                    let n = v.as_i64().ok_or("must be a whole number of seconds")?;
                    if n != 0 && !(MIN_INTERVAL..=MAX_INTERVAL).contains(&n) {
                        return Err(format!(
                            "must be 0 (no periodic sync) or from {MIN_INTERVAL} to {MAX_INTERVAL} seconds"
                        ));
                    }
                    input.sync_interval_seconds = Some(n);
                }
                "passwordAuthority" => {
                    input.password_authority =
                        Some(v.as_str().and_then(Authority::parse).ok_or("must be none, external or delegated")?)
                }
                _ => return Err("is not a field of a directory connection".into()),
            }
            Ok(())
        })();
        if let Err(m) = r {
            errors.push(FieldError::new(k.clone(), m));
        }
    }
    if creating {
        for (field, missing) in
            [("name", input.name.is_none()), ("url", input.url.is_none()), ("userBase", input.user_base.is_none())]
        {
            if missing && !errors.iter().any(|e| e.field == field) {
                errors.push(FieldError::new(field, "is required"));
            }
        }
    }
    if matches!((&input.ca_cert, &input.fingerprint), (Some(Some(_)), Some(Some(_)))) {
        errors.push(FieldError::new("fingerprint", "give either caCert or fingerprint, not both"));
    }
    if errors.is_empty() {
        Ok(input)
    } else {
        Err(errors)
    }
}

fn parse_mapping(v: &Value) -> Result<Mapping, String> {
    let obj = v.as_object().ok_or("must be an object of Cairn field → upstream attribute")?;
    let mut m = Mapping::new();
    for (k, a) in obj {
        if !MAPPED.iter().any(|(f, _)| f == k) {
            let known: Vec<&str> = MAPPED.iter().map(|(f, _)| *f).collect();
            return Err(format!("'{k}' is not a mapped field ({})", known.join(", ")));
        }
        let a = a.as_str().ok_or_else(|| format!("'{k}' must map to an attribute name"))?;
        if a.len() > 100 || !a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ';' || c == '.') {
            return Err(format!("'{a}' is not an attribute name"));
        }
        if a.is_empty() && matches!(k.as_str(), "id" | "username") {
            return Err(format!("'{k}' must be mapped"));
        }
        m.insert(k.clone(), a.to_string());
    }
    Ok(m)
}

/// A fresh connection from a validated POST body (defaults by preset).
pub fn new_connection(id: String, input: ConnectionInput, now: DateTime<Utc>) -> Connection {
    let preset = input.preset.unwrap_or(Preset::Openldap);
    let (uf, gf) = match preset {
        Preset::ActiveDirectory => ("(&(objectCategory=person)(objectClass=user))", "(objectClass=group)"),
        Preset::Openldap => {
            ("(objectClass=inetOrgPerson)", "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))")
        }
    };
    let mut c = Connection {
        id,
        name: String::new(),
        url: String::new(),
        starttls: false,
        ca_cert: None,
        fingerprint: None,
        bind_dn: String::new(),
        sealed_bind_password: None,
        user_base: String::new(),
        user_filter: uf.into(),
        group_base: None,
        group_filter: gf.into(),
        preset,
        mapping_overrides: Mapping::new(),
        sync_interval_seconds: 0,
        password_authority: Authority::None,
        created: now,
        updated: now,
        last_job: None,
        next_sync: None,
    };
    c.apply(input);
    c
}

/// An upstream entry: its DN and attributes, values as bytes (AD's objectGUID is binary).
/// Attributes are a list in the order they came: an entry has about ten, each looked up by a
/// case-insensitive scan anyway, and a sync reads 100,000s of entries (building and freeing a
/// map per entry took about 4 % of a re-sync's CPU samples).
#[derive(Debug, Clone, Default)]
pub struct Entry {
    pub dn: String,
    pub attrs: Vec<(String, Vec<Vec<u8>>)>,
}

impl Entry {
    /// Sets an attribute's values, replacing any it had (its name compared case-insensitively).
    #[cfg(test)]
    fn set(&mut self, name: &str, values: Vec<Vec<u8>>) {
        match self.attrs.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
            Some((_, v)) => *v = values,
            None => self.attrs.push((name.to_string(), values)),
        }
    }
    /// Removes an attribute.
    #[cfg(test)]
    fn remove(&mut self, name: &str) {
        self.attrs.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }
    /// The values of an attribute, its name compared case-insensitively.
    pub fn values(&self, name: &str) -> &[Vec<u8>] {
        self.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice()).unwrap_or(&[])
    }
    pub fn first(&self, name: &str) -> Option<String> {
        self.values(name).first().map(|v| String::from_utf8_lossy(v).trim().to_string()).filter(|s| !s.is_empty())
    }
    pub fn texts(&self, name: &str) -> Vec<String> {
        self.values(name).iter().map(|v| String::from_utf8_lossy(v).trim().to_string()).collect()
    }
}

/// An AD objectGUID (16 bytes, the first three groups little-endian) as its usual string.
pub fn guid_string(b: &[u8]) -> Option<String> {
    if b.len() != 16 {
        return None;
    }
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    ))
}

/// A user as the upstream describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamUser {
    /// The stable id (objectGUID as a GUID string, entryUUID), which matches the user.
    pub upstream_id: String,
    pub dn: String,
    pub username: String,
    /// The Cairn fields the upstream sets (`MAPPED` names), `null` when the upstream has none.
    pub fields: Map<String, Value>,
    /// Groups by DN (memberOf).
    pub member_of: Vec<String>,
    /// Disabled upstream (AD userAccountControl bit 2 — ACCOUNTDISABLE).
    pub disabled: bool,
    /// The manager's DN: `None` when the manager is not mapped, `Some("")` when mapped and
    /// the entry has none. The sync resolves it to the linked user.
    pub manager_dn: Option<String>,
}

/// The longest DN a sync takes (bytes): Active Directory's are at most 255 characters a
/// component and rarely past a few hundred in all; a larger one is refused rather than stored
/// in every link, membership and manager that names it.
pub const MAX_DN_BYTES: usize = 4096;

/// The longest stable id a sync takes (bytes): a GUID or UUID is 36.
pub const MAX_UPSTREAM_ID_BYTES: usize = 256;

fn check_dn_len(what: &str, dn: &str) -> Result<(), String> {
    match dn.len() > MAX_DN_BYTES {
        true => Err(format!("{what} is longer than {MAX_DN_BYTES} bytes")),
        false => Ok(()),
    }
}

/// Reads a user entry by `mapping`; `Err` says what is missing or out of bounds.
pub fn map_user(e: &Entry, mapping: &Mapping) -> Result<UpstreamUser, String> {
    let attr = |f: &str| mapping.get(f).filter(|a| !a.is_empty()).map(String::as_str);
    check_dn_len("the entry's DN", &e.dn)?;
    let id_attr = attr("id").ok_or("no attribute is mapped to id")?;
    let raw = e.values(id_attr).first().ok_or_else(|| format!("the entry has no {id_attr}"))?;
    let upstream_id = if id_attr.eq_ignore_ascii_case("objectGUID") {
        guid_string(raw).ok_or("objectGUID is not 16 bytes")?
    } else {
        String::from_utf8(raw.clone()).map_err(|_| format!("{id_attr} is not text"))?.trim().to_lowercase()
    };
    if upstream_id.is_empty() {
        return Err(format!("{id_attr} is empty"));
    }
    if upstream_id.len() > MAX_UPSTREAM_ID_BYTES {
        return Err(format!("{id_attr} is longer than {MAX_UPSTREAM_ID_BYTES} bytes"));
    }
    let user_attr = attr("username").ok_or("no attribute is mapped to username")?;
    let mut username = e.first(user_attr).ok_or_else(|| format!("the entry has no {user_attr}"))?;
    // An AD UPN as username keeps only its name part when mapped so by the admin.
    if username.len() > 256 {
        return Err(format!("{user_attr} is longer than 256 characters"));
    }
    username = username.trim().to_string();
    let mut fields = Map::new();
    for (f, target) in MAPPED {
        let Some(target) = target else { continue };
        if *target == "username" || *target == "phoneNumbers" || *target == "manager" {
            continue;
        }
        if let Some(a) = attr(f) {
            fields.insert(target.to_string(), e.first(a).map(Value::String).unwrap_or(Value::Null));
        }
    }
    // Phones: the upstream owns the whole list once any phone attribute is mapped, in the
    // shape Cairn stores (`{"type", "number"}`), work before mobile, an empty list when none.
    if PHONES.iter().any(|(f, _)| attr(f).is_some()) {
        let mut phones = Vec::new();
        for (f, kind) in PHONES {
            for n in attr(f).map(|a| e.texts(a)).unwrap_or_default() {
                let n = n.trim();
                if !n.is_empty() {
                    phones.push(json!({ "type": kind, "number": n }));
                }
            }
        }
        fields.insert("phoneNumbers".into(), Value::Array(phones));
    }
    let disabled = match attr("disabled") {
        Some(a) if a.eq_ignore_ascii_case("userAccountControl") => {
            e.first(a).and_then(|v| v.parse::<i64>().ok()).is_some_and(|uac| uac & 2 != 0)
        }
        Some(a) => e.first(a).is_some_and(|v| matches!(v.to_lowercase().as_str(), "true" | "1" | "yes" | "disabled")),
        None => false,
    };
    let member_of = attr("memberOf").map(|a| e.texts(a)).unwrap_or_default();
    let manager_dn = attr("manager").map(|a| e.first(a).map(|d| d.trim().to_string()).unwrap_or_default());
    if let Some(m) = &manager_dn {
        check_dn_len("the manager's DN", m)?;
    }
    for g in &member_of {
        check_dn_len("a memberOf DN", g)?;
    }
    Ok(UpstreamUser { upstream_id, dn: e.dn.clone(), username, fields, member_of, disabled, manager_dn })
}

/// A group as the upstream describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamGroup {
    pub upstream_id: String,
    pub dn: String,
    pub name: String,
    /// Members by DN.
    pub members: Vec<String>,
}

pub fn map_group(e: &Entry, mapping: &Mapping) -> Result<UpstreamGroup, String> {
    let attr = |f: &str| mapping.get(f).filter(|a| !a.is_empty()).map(String::as_str);
    check_dn_len("the group's DN", &e.dn)?;
    let id_attr = attr("id").ok_or("no attribute is mapped to id")?;
    let upstream_id = match e.values(id_attr).first() {
        Some(raw) if id_attr.eq_ignore_ascii_case("objectGUID") => {
            guid_string(raw).ok_or("objectGUID is not 16 bytes")?
        }
        Some(raw) if raw.len() > MAX_UPSTREAM_ID_BYTES => {
            return Err(format!("{id_attr} is longer than {MAX_UPSTREAM_ID_BYTES} bytes"))
        }
        Some(raw) => String::from_utf8_lossy(raw).trim().to_lowercase(),
        // A group without a stable id is known by its DN.
        None => format!("dn:{}", e.dn.to_lowercase()),
    };
    let name_attr = attr("groupName").unwrap_or("cn");
    let name = e.first(name_attr).ok_or_else(|| format!("the group has no {name_attr}"))?;
    let mut members = attr("groupMember").map(|a| e.texts(a)).unwrap_or_default();
    members.extend(e.texts("uniqueMember"));
    for m in &members {
        check_dn_len("a member DN", m)?;
    }
    Ok(UpstreamGroup { upstream_id, dn: e.dn.clone(), name, members })
}

/// A DN compared as upstreams do: case and spaces after commas do not matter.
pub fn dn_key(dn: &str) -> String {
    // One pass into one string: a sync keys every entry's DN and manager.
    let mut out = String::with_capacity(dn.len());
    for (i, p) in dn.split(',').enumerate() {
        if i > 0 {
            out.push(',');
        }
        let p = p.trim();
        if p.is_ascii() {
            out.extend(p.bytes().map(|b| char::from(b.to_ascii_lowercase())));
        } else {
            out.push_str(&p.to_lowercase());
        }
    }
    out
}

/// The `restrictedFields` of a user the connection owns: every mapped field, typed
/// `active_directory`, plus the password when the authority is external. Entries of other
/// types the user already had stay.
pub fn restricted_fields(c: &Connection, existing: Option<&Value>) -> Value {
    let mut out: Vec<Value> = existing
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|f| f.get("type").and_then(Value::as_str) != Some("active_directory"))
                .filter(|f| {
                    // Another authority of the password gives way to the connection's.
                    !(c.password_authority == Authority::External
                        && f.get("field").and_then(Value::as_str) == Some("password"))
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let mapping = c.mapping();
    for (f, target) in MAPPED {
        if let (Some(t), Some(a)) = (target, mapping.get(*f)) {
            let seen = out.iter().any(|r| {
                r.get("field").and_then(Value::as_str) == Some(*t)
                    && r.get("type").and_then(Value::as_str) == Some("active_directory")
            });
            if !a.is_empty() && !seen {
                out.push(json!({ "field": t, "type": "active_directory", "id": c.id }));
            }
        }
    }
    if c.password_authority == Authority::External {
        out.push(json!({ "field": "password", "type": "active_directory", "id": c.id }));
    }
    Value::Array(out)
}

/// The fields of a user held by an upstream (`restrictedFields` of type
/// `active_directory`), password aside.
pub fn upstream_owned(restricted: Option<&Value>) -> Vec<String> {
    restricted
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|f| f.get("type").and_then(Value::as_str) == Some("active_directory"))
        .filter_map(|f| f.get("field").and_then(Value::as_str))
        .filter(|f| *f != "password")
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dn: &str, attrs: &[(&str, &[&[u8]])]) -> Entry {
        Entry {
            dn: dn.into(),
            attrs: attrs.iter().map(|(k, v)| (k.to_string(), v.iter().map(|b| b.to_vec()).collect())).collect(),
        }
    }

    // Recorded from a Windows Server 2022 domain (ldapsearch -o ldif-wrap=no, base64 decoded).
    const GUID: [u8; 16] =
        [0x4d, 0x3c, 0x2b, 0x1a, 0x6f, 0x5e, 0x8a, 0x7b, 0x90, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67];

    #[test]
    fn oversized_dns_and_ids_are_refused_by_name() {
        let m = preset_mapping(Preset::Openldap);
        let long = format!("uid=x,{}", "ou=a,".repeat(MAX_DN_BYTES / 5));
        let ok = |dn: &str| entry(dn, &[("entryUUID", &[b"1b9c"]), ("uid", &[b"x"])]);
        assert!(map_user(&ok("uid=x,dc=example"), &m).is_ok());
        assert_eq!(map_user(&ok(&long), &m).unwrap_err(), "the entry's DN is longer than 4096 bytes");
        let id = "a".repeat(MAX_UPSTREAM_ID_BYTES + 1);
        let e = entry("uid=x,dc=example", &[("entryUUID", &[id.as_bytes()]), ("uid", &[b"x"])]);
        assert_eq!(map_user(&e, &m).unwrap_err(), "entryUUID is longer than 256 bytes");
        let mut e = ok("uid=x,dc=example");
        e.set("manager", vec![long.clone().into_bytes()]);
        assert_eq!(map_user(&e, &m).unwrap_err(), "the manager's DN is longer than 4096 bytes");
        let mut e = ok("uid=x,dc=example");
        e.set("memberOf", vec![b"cn=eng,dc=example".to_vec(), long.clone().into_bytes()]);
        assert_eq!(map_user(&e, &m).unwrap_err(), "a memberOf DN is longer than 4096 bytes");
        let g = |dn: &str, member: &str| entry(dn, &[("cn", &[b"eng"]), ("member", &[member.as_bytes()])]);
        assert!(map_group(&g("cn=eng,dc=example", "uid=x,dc=example"), &m).is_ok());
        assert_eq!(map_group(&g(&long, "uid=x"), &m).unwrap_err(), "the group's DN is longer than 4096 bytes");
        assert_eq!(map_group(&g("cn=eng", &long), &m).unwrap_err(), "a member DN is longer than 4096 bytes");
    }

    #[test]
    fn ad_object_guid_reads_as_the_guid_string() {
        assert_eq!(guid_string(&GUID).unwrap(), "1a2b3c4d-5e6f-7b8a-90ab-cdef01234567");
        assert_eq!(guid_string(&GUID[..15]), None);
    }

    #[test]
    fn ad_user_maps_with_disabled_bit_and_member_of() {
        let m = preset_mapping(Preset::ActiveDirectory);
        let e = entry(
            "CN=Ada Lovelace,OU=Staff,DC=corp,DC=example",
            &[
                ("objectGUID", &[&GUID]),
                ("sAMAccountName", &[b"ada"]),
                ("mail", &[b"ada@corp.example"]),
                ("givenName", &[b"Ada"]),
                ("sn", &[b"Lovelace"]),
                ("department", &[b"Engines"]),
                ("userAccountControl", &[b"514"]),
                ("memberOf", &[b"CN=Eng,OU=Groups,DC=corp,DC=example", b"CN=All,OU=Groups,DC=corp,DC=example"]),
            ],
        );
        let u = map_user(&e, &m).unwrap();
        assert_eq!(u.upstream_id, "1a2b3c4d-5e6f-7b8a-90ab-cdef01234567");
        assert_eq!(u.username, "ada");
        assert!(u.disabled, "514 = NORMAL_ACCOUNT | ACCOUNTDISABLE");
        assert_eq!(u.fields["email"], json!("ada@corp.example"));
        assert_eq!(u.fields["department"], json!("Engines"));
        assert_eq!(u.fields["jobTitle"], Value::Null);
        assert_eq!(u.member_of.len(), 2);
        assert_eq!(dn_key(&u.member_of[0]), "cn=eng,ou=groups,dc=corp,dc=example");
        assert_eq!(dn_key(" CN=Ünal Öz , OU=Staff,DC=corp "), "cn=ünal öz,ou=staff,dc=corp");
        assert_eq!(dn_key("CN=ΣΟΦΟΣ,DC=x"), format!("cn={},dc=x", "ΣΟΦΟΣ".to_lowercase()));

        let mut on = e.clone();
        on.set("userAccountControl", vec![b"512".to_vec()]);
        assert!(!map_user(&on, &m).unwrap().disabled);
        let mut no_guid = e.clone();
        no_guid.remove("objectGUID");
        assert!(map_user(&no_guid, &m).unwrap_err().contains("objectGUID"));
    }

    #[test]
    fn openldap_user_maps_by_entry_uuid() {
        let m = preset_mapping(Preset::Openldap);
        let e = entry(
            "uid=bob,ou=people,dc=example,dc=org",
            &[("entryUUID", &[b"3F2504E0-4F89-11D3-9A0C-0305E82C3301"]), ("uid", &[b"bob"]), ("cn", &[b"Bob B"])],
        );
        let u = map_user(&e, &m).unwrap();
        assert_eq!(u.upstream_id, "3f2504e0-4f89-11d3-9a0c-0305e82c3301");
        assert_eq!(u.fields["displayname"], json!("Bob B"));
        assert!(!u.disabled);
    }

    #[test]
    fn ad_user_maps_phones_as_work_and_mobile() {
        let m = preset_mapping(Preset::ActiveDirectory);
        let e = entry(
            "CN=Ada Lovelace,OU=Staff,DC=corp,DC=example",
            &[
                ("objectGUID", &[&GUID]),
                ("sAMAccountName", &[b"ada"]),
                ("telephoneNumber", &[b"+1 555 0100"]),
                ("mobile", &[b" +1 555 0199 "]),
            ],
        );
        let u = map_user(&e, &m).unwrap();
        assert_eq!(
            u.fields["phoneNumbers"],
            json!([{"type": "work", "number": "+1 555 0100"}, {"type": "mobile", "number": "+1 555 0199"}])
        );
        // Cairn keeps the list as given, so a no-change re-sync compares equal.
        let input = crate::user::parse_user_input(&json!({"phoneNumbers": u.fields["phoneNumbers"]}), false).unwrap();
        assert_eq!(input.profile["phoneNumbers"], u.fields["phoneNumbers"]);
        let mut none = e.clone();
        none.remove("telephoneNumber");
        none.remove("mobile");
        assert_eq!(map_user(&none, &m).unwrap().fields["phoneNumbers"], json!([]));
        assert_eq!(map_user(&none, &m).unwrap().manager_dn.as_deref(), Some(""));
        let mut managed = e.clone();
        managed.set("manager", vec![b"CN=Babbage,OU=Staff,DC=corp,DC=example".to_vec()]);
        let u = map_user(&managed, &m).unwrap();
        assert_eq!(u.manager_dn.as_deref(), Some("CN=Babbage,OU=Staff,DC=corp,DC=example"));
        assert!(!u.fields.contains_key("manager"), "the sync resolves the DN, never stores it");
        // Unmapped phones leave the field to Cairn.
        let mut m2 = m.clone();
        m2.insert("workPhone".into(), String::new());
        m2.insert("mobilePhone".into(), String::new());
        m2.insert("manager".into(), String::new());
        assert!(!map_user(&e, &m2).unwrap().fields.contains_key("phoneNumbers"));
        assert_eq!(map_user(&e, &m2).unwrap().manager_dn, None);
    }

    #[test]
    fn openldap_user_maps_phones_and_overridden_keys() {
        let m = preset_mapping(Preset::Openldap);
        let e = entry(
            "uid=bob,ou=people,dc=example,dc=org",
            &[
                ("entryUUID", &[b"3F2504E0-4F89-11D3-9A0C-0305E82C3301"]),
                ("uid", &[b"bob"]),
                ("mobile", &[b"+44 7700 900123"]),
                ("homePhone", &[b"+44 20 7946 0000"]),
            ],
        );
        let u = map_user(&e, &m).unwrap();
        assert_eq!(u.fields["phoneNumbers"], json!([{"type": "mobile", "number": "+44 7700 900123"}]));
        let mut m2 = m.clone();
        m2.insert("workPhone".into(), "homePhone".into());
        assert_eq!(
            map_user(&e, &m2).unwrap().fields["phoneNumbers"],
            json!([{"type": "work", "number": "+44 20 7946 0000"}, {"type": "mobile", "number": "+44 7700 900123"}])
        );
    }

    #[test]
    fn input_names_each_bad_field() {
        let bad = json!({
            "name": "", "url": "http://x", "userFilter": "(uid=*", "syncIntervalSeconds": 5,
            "bindDn": "nonsense", "preset": "x", "fingerprint": "abc", "extra": 1,
            "attributeMapping": {"nope": "x"}
        });
        let errs = parse_input(&bad, true).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "name",
            "url",
            "userFilter",
            "syncIntervalSeconds",
            "bindDn",
            "preset",
            "fingerprint",
            "extra",
            "attributeMapping",
            "userBase",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        assert!(check_url("ldaps://dc1.corp.example:636").is_ok());
        assert!(check_url("ldap://[::1]:389").is_ok());
        assert!(check_url("ldap://host:99999").is_err());
        assert!(check_url("ldap://user@host").is_err());
    }

    #[test]
    fn restricted_fields_follow_mapping_and_authority() {
        let input = parse_input(
            &json!({"name": "c", "url": "ldap://h", "userBase": "dc=x", "passwordAuthority": "external"}),
            true,
        )
        .unwrap();
        let c = new_connection("c1".into(), input, Utc::now());
        let r = restricted_fields(&c, Some(&json!([{"field": "password", "type": "scim"}])));
        assert_eq!(
            crate::PasswordAuthority::from_restricted_fields(&r),
            Some(crate::PasswordAuthority::ActiveDirectory)
        );
        let owned = upstream_owned(Some(&r));
        assert!(owned.contains(&"email".to_string()) && owned.contains(&"username".to_string()));
        assert!(!owned.contains(&"password".to_string()));
        assert_eq!(owned.iter().filter(|f| *f == "phoneNumbers").count(), 1, "{owned:?}");
        assert!(owned.contains(&"manager".to_string()), "{owned:?}");
    }
}
