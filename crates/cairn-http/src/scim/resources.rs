//! SCIM resources ↔ Cairn records: the User (core + enterprise extension) and Group JSON,
//! the reverse mapping into `cairn_directory` changes, PATCH applied to a resource document,
//! and `attributes` / `excludedAttributes` projection.

use std::hash::{Hash, Hasher};

use cairn_directory::{ScimGroupChange, ScimUserChange};
use cairn_domain::scim::{
    parse_path, AttrPath, CompValue, CompareOp, Filter, PatchPath, ENTERPRISE_SCHEMA, GROUP_SCHEMA, USER_SCHEMA,
};
use cairn_domain::user::{format_time, normalize_email, parse_user_input};
use cairn_domain::Secret;
use cairn_domain::{ScimGroupRow, ScimUserRow};
use serde_json::{json, Map, Value};

use super::ScimError;

/// A weak ETag over the resource's content (without `meta`): any change changes it.
pub fn version_of(resource: &Value) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    resource.to_string().hash(&mut h);
    format!("W/\"{:016x}\"", h.finish())
}

fn put_text(m: &mut Map<String, Value>, k: &str, v: Option<&str>) {
    if let Some(v) = v.filter(|s| !s.is_empty()) {
        m.insert(k.into(), Value::String(v.to_string()));
    }
}

/// The SCIM User of a Cairn user; `groups` are `(id, name)`.
pub fn user_resource(base: &str, row: &ScimUserRow, groups: &[(String, String)]) -> Value {
    let u = &row.user;
    let mut m = Map::new();
    let mut schemas = vec![json!(USER_SCHEMA)];
    m.insert("id".into(), json!(u.id));
    put_text(&mut m, "externalId", row.external_id.as_deref());
    m.insert("userName".into(), json!(row.user_name.clone().unwrap_or_else(|| u.username.clone())));
    let mut name = Map::new();
    put_text(&mut name, "givenName", u.text("firstname"));
    put_text(&mut name, "middleName", u.text("middlename"));
    put_text(&mut name, "familyName", u.text("lastname"));
    if !name.is_empty() {
        m.insert("name".into(), Value::Object(name));
    }
    put_text(&mut m, "displayName", u.text("displayname"));
    put_text(&mut m, "title", u.text("jobTitle"));
    put_text(&mut m, "userType", u.text("employeeType"));
    m.insert("active".into(), json!(u.state == cairn_domain::State::Activated));
    // Only `value`: the first address is the e-mail (the primary), a second the alternate.
    let mut emails = vec![json!({ "value": u.email })];
    if let Some(a) = u.text("alternateEmail").filter(|s| !s.is_empty()) {
        emails.push(json!({ "value": a }));
    }
    m.insert("emails".into(), Value::Array(emails));
    if let Some(Value::Array(phones)) = u.profile.get("phoneNumbers") {
        let v: Vec<Value> = phones
            .iter()
            .map(|p| {
                let mut o = Map::new();
                put_text(&mut o, "value", p.get("number").and_then(Value::as_str));
                put_text(&mut o, "type", p.get("type").and_then(Value::as_str));
                Value::Object(o)
            })
            .collect();
        if !v.is_empty() {
            m.insert("phoneNumbers".into(), Value::Array(v));
        }
    }
    if let Some(Value::Array(addrs)) = u.profile.get("addresses") {
        let v: Vec<Value> = addrs
            .iter()
            .map(|a| {
                let mut o = Map::new();
                for k in ADDRESS_KEYS {
                    put_text(&mut o, k, a.get(*k).and_then(Value::as_str));
                }
                Value::Object(o)
            })
            .collect();
        if !v.is_empty() {
            m.insert("addresses".into(), Value::Array(v));
        }
    }
    if !groups.is_empty() {
        let g: Vec<Value> = groups
            .iter()
            .map(|(id, name)| json!({ "value": id, "display": name, "$ref": format!("{base}/Groups/{id}"), "type": "direct" }))
            .collect();
        m.insert("groups".into(), Value::Array(g));
    }
    let mut ext = Map::new();
    put_text(&mut ext, "employeeNumber", u.text("employeeIdentifier"));
    put_text(&mut ext, "costCenter", u.text("costCenter"));
    put_text(&mut ext, "organization", u.text("company"));
    put_text(&mut ext, "department", u.text("department"));
    if let Some(mgr) = u.text("manager").filter(|s| !s.is_empty()) {
        ext.insert("manager".into(), json!({ "value": mgr, "$ref": format!("{base}/Users/{mgr}") }));
    }
    if !ext.is_empty() {
        schemas.push(json!(ENTERPRISE_SCHEMA));
        m.insert(ENTERPRISE_SCHEMA.into(), Value::Object(ext));
    }
    let mut out = Map::new();
    out.insert("schemas".into(), Value::Array(schemas));
    out.extend(m);
    let mut v = Value::Object(out);
    let version = version_of(&v);
    v["meta"] = json!({
        "resourceType": "User",
        "created": format_time(u.created),
        "lastModified": format_time(u.updated),
        "location": format!("{base}/Users/{}", u.id),
        "version": version,
    });
    v
}

const ADDRESS_KEYS: &[&str] = &["type", "streetAddress", "locality", "region", "postalCode", "country"];

/// The SCIM Group; `members` are `(user id, display)`.
pub fn group_resource(base: &str, row: &ScimGroupRow, members: &[(String, String)]) -> Value {
    let g = &row.group;
    let mut m = Map::new();
    m.insert("schemas".into(), json!([GROUP_SCHEMA]));
    m.insert("id".into(), json!(g.id));
    put_text(&mut m, "externalId", row.external_id.as_deref());
    m.insert("displayName".into(), json!(g.name));
    let list: Vec<Value> =
        members.iter().map(|(id, _)| json!({ "value": id, "$ref": format!("{base}/Users/{id}") })).collect();
    m.insert("members".into(), Value::Array(list));
    let mut v = Value::Object(m);
    let version = version_of(&v);
    v["meta"] = json!({
        "resourceType": "Group",
        "created": format_time(g.created),
        "lastModified": format_time(g.updated),
        "location": format!("{base}/Groups/{}", g.id),
        "version": version,
    });
    v
}

// ---- requests → changes ---------------------------------------------------------------------

fn get_ci<'a>(o: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    o.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v)
}

fn opt_str(o: &Map<String, Value>, k: &str, what: &str) -> Result<Option<String>, ScimError> {
    match get_ci(o, k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ScimError::invalid_value(format!("{what} must be a string"))),
    }
}

fn as_bool(v: &Value, what: &str) -> Result<bool, ScimError> {
    match v {
        Value::Bool(b) => Ok(*b),
        // Entra ID sends "True" / "False".
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(ScimError::invalid_value(format!("{what} must be true or false"))),
    }
}

fn text_or_null(v: Option<String>) -> Value {
    v.map(Value::String).unwrap_or(Value::Null)
}

/// A full User document (POST, PUT, or the result of a PATCH) as a directory change. Every
/// SCIM-mapped field is set, `null` clearing what the document leaves out.
pub fn user_change(body: &Value, creating: bool) -> Result<ScimUserChange, ScimError> {
    let Some(o) = body.as_object() else {
        return Err(ScimError::invalid_syntax("the request body must be a JSON object"));
    };
    let user_name = match get_ci(o, "userName") {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        None | Some(Value::Null) => return Err(ScimError::invalid_value("userName is required")),
        Some(_) => return Err(ScimError::invalid_value("userName must be a non-empty string")),
    };
    let mut jc = Map::new();
    let name = match get_ci(o, "name") {
        Some(Value::Object(n)) => n.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err(ScimError::invalid_value("name must be an object")),
    };
    jc.insert("firstname".into(), text_or_null(opt_str(&name, "givenName", "name.givenName")?));
    jc.insert("middlename".into(), text_or_null(opt_str(&name, "middleName", "name.middleName")?));
    jc.insert("lastname".into(), text_or_null(opt_str(&name, "familyName", "name.familyName")?));
    jc.insert("displayname".into(), text_or_null(opt_str(o, "displayName", "displayName")?));
    jc.insert("jobTitle".into(), text_or_null(opt_str(o, "title", "title")?));
    jc.insert("employeeType".into(), text_or_null(opt_str(o, "userType", "userType")?));

    // emails: the primary (else the first) is the user's e-mail; another becomes alternateEmail.
    let emails: Vec<Map<String, Value>> = match get_ci(o, "emails") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a
            .iter()
            .map(|e| e.as_object().cloned().ok_or_else(|| ScimError::invalid_value("emails must be objects")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ScimError::invalid_value("emails must be an array")),
    };
    let values: Vec<(String, bool)> = emails
        .iter()
        .filter_map(|e| {
            let v = get_ci(e, "value")?.as_str()?.to_string();
            let primary = get_ci(e, "primary").map(|p| as_bool(p, "primary").unwrap_or(false)).unwrap_or(false);
            Some((v, primary))
        })
        .collect();
    let primary = values.iter().position(|(_, p)| *p).or(if values.is_empty() { None } else { Some(0) });
    let mut email = primary.map(|i| values[i].0.clone());
    if email.is_none() && user_name.as_deref().is_some_and(|n| n.contains('@')) {
        // Okta-style: the userName is the address.
        email = user_name.clone();
    }
    if let Some(e) = &email {
        normalize_email(e).map_err(|m| ScimError::invalid_value(format!("emails: '{e}' {m}")))?;
        jc.insert("email".into(), json!(e));
    } else if creating {
        return Err(ScimError::invalid_value("emails: Cairn needs an e-mail address for every user"));
    }
    let alternate = values.iter().enumerate().find(|(i, _)| Some(*i) != primary).map(|(_, v)| v.0.clone());
    jc.insert("alternateEmail".into(), text_or_null(alternate));

    let phones: Vec<Value> = match get_ci(o, "phoneNumbers") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|p| {
                let p = p.as_object()?;
                let mut out = Map::new();
                out.insert("number".into(), get_ci(p, "value")?.clone());
                if let Some(t) = get_ci(p, "type").filter(|t| !t.is_null()) {
                    out.insert("type".into(), t.clone());
                }
                Some(Value::Object(out))
            })
            .collect(),
        None | Some(Value::Null) => vec![],
        Some(_) => return Err(ScimError::invalid_value("phoneNumbers must be an array")),
    };
    jc.insert("phoneNumbers".into(), if phones.is_empty() { Value::Null } else { Value::Array(phones) });
    let addrs: Vec<Value> = match get_ci(o, "addresses") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| {
                let x = x.as_object()?;
                let mut out = Map::new();
                for k in ADDRESS_KEYS {
                    if let Some(v) = get_ci(x, k).filter(|v| !v.is_null()) {
                        out.insert((*k).into(), v.clone());
                    }
                }
                Some(Value::Object(out))
            })
            .collect(),
        None | Some(Value::Null) => vec![],
        Some(_) => return Err(ScimError::invalid_value("addresses must be an array")),
    };
    jc.insert("addresses".into(), if addrs.is_empty() { Value::Null } else { Value::Array(addrs) });

    let ext = match get_ci(o, ENTERPRISE_SCHEMA) {
        Some(Value::Object(e)) => e.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err(ScimError::invalid_value("the enterprise extension must be an object")),
    };
    jc.insert("employeeIdentifier".into(), text_or_null(opt_str(&ext, "employeeNumber", "employeeNumber")?));
    jc.insert("costCenter".into(), text_or_null(opt_str(&ext, "costCenter", "costCenter")?));
    jc.insert("company".into(), text_or_null(opt_str(&ext, "organization", "organization")?));
    jc.insert("department".into(), text_or_null(opt_str(&ext, "department", "department")?));
    let manager = match get_ci(&ext, "manager") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Object(m)) => opt_str(m, "value", "manager.value")?,
        Some(_) => return Err(ScimError::invalid_value("manager must be an object with a value")),
    };
    jc.insert("manager".into(), text_or_null(manager.filter(|s| !s.is_empty())));

    if creating {
        jc.retain(|_, v| !v.is_null());
    }
    let input = parse_user_input(&Value::Object(jc), false).map_err(|e| ScimError::invalid_value(e.to_string()))?;
    let active = match get_ci(o, "active") {
        None | Some(Value::Null) => None,
        Some(v) => Some(as_bool(v, "active")?),
    };
    let password = match get_ci(o, "password") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(Secret::new(s.clone())),
        Some(_) => return Err(ScimError::invalid_value("password must be a string")),
    };
    let external_id = Some(opt_str(o, "externalId", "externalId")?);
    Ok(ScimUserChange { input, user_name, external_id, active, password })
}

/// A full Group document as a change.
pub fn group_change(body: &Value) -> Result<ScimGroupChange, ScimError> {
    let Some(o) = body.as_object() else {
        return Err(ScimError::invalid_syntax("the request body must be a JSON object"));
    };
    let display_name = match get_ci(o, "displayName") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        _ => return Err(ScimError::invalid_value("displayName is required and must be a non-empty string")),
    };
    let members = match get_ci(o, "members") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => {
            let mut out: Vec<String> = Vec::new();
            for m in a {
                let v = m
                    .as_object()
                    .and_then(|m| get_ci(m, "value"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| ScimError::invalid_value("each member must be an object with a string value"))?;
                if !out.iter().any(|x| x == v) {
                    out.push(v.to_string());
                }
            }
            out
        }
        Some(_) => return Err(ScimError::invalid_value("members must be an array")),
    };
    Ok(ScimGroupChange {
        display_name: Some(display_name),
        external_id: Some(opt_str(o, "externalId", "externalId")?),
        members: Some(members),
    })
}

/// Gives the e-mails of a stored User document the `type` and `primary` they stand for, so
/// that value filters such as `emails[type eq "work"]` find them.
pub fn annotate_emails(doc: &mut Value) {
    if let Some(Value::Array(list)) = doc.get_mut("emails") {
        for (i, e) in list.iter_mut().enumerate() {
            if let Value::Object(o) = e {
                o.insert("type".into(), json!(if i == 0 { "work" } else { "other" }));
                o.insert("primary".into(), json!(i == 0));
            }
        }
    }
}

// ---- PATCH ----------------------------------------------------------------------------------

/// Applies a PatchOp request to a resource document (`meta` and read-only attributes removed
/// first). Returns the password when one was written, since it never appears in the document.
pub fn apply_patch(doc: &mut Value, body: &Value) -> Result<Option<Secret>, ScimError> {
    let ops = body
        .as_object()
        .and_then(|o| get_ci(o, "Operations"))
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid_syntax("a PatchOp body needs an Operations array"))?;
    if ops.is_empty() {
        return Err(ScimError::invalid_syntax("Operations must not be empty"));
    }
    let mut password = None;
    for op in ops {
        let o = op.as_object().ok_or_else(|| ScimError::invalid_syntax("each operation must be an object"))?;
        let kind = get_ci(o, "op").and_then(Value::as_str).map(str::to_ascii_lowercase).unwrap_or_default();
        let value = get_ci(o, "value").cloned();
        let path = match get_ci(o, "path") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) => Some(parse_path(p).map_err(ScimError::from)?),
            Some(_) => return Err(ScimError::invalid_path("path must be a string")),
        };
        match kind.as_str() {
            "add" | "replace" => {
                let value = value.ok_or_else(|| ScimError::invalid_value(format!("'{kind}' needs a value")))?;
                match path {
                    None => {
                        let Value::Object(m) = value else {
                            return Err(ScimError::invalid_value(format!("'{kind}' without a path needs an object")));
                        };
                        for (k, v) in m {
                            if k.eq_ignore_ascii_case("password") {
                                password = Some(pw(&v)?);
                                continue;
                            }
                            if k.to_ascii_lowercase().starts_with("urn:")
                                && parse_path(&k).is_ok_and(|p| p.attr.attr.is_empty())
                            {
                                // The whole extension: merge its attributes.
                                if let Value::Object(sub) = v {
                                    for (sk, sv) in sub {
                                        let p = parse_path(&format!("{k}:{sk}")).map_err(ScimError::from)?;
                                        set_path(doc, &p, sv, kind == "add")?;
                                    }
                                }
                                continue;
                            }
                            let p = parse_path(&k).map_err(ScimError::from)?;
                            set_path(doc, &p, v, kind == "add")?;
                        }
                    }
                    Some(p) if p.attr.is("password", None) && p.attr.uri.is_none() => password = Some(pw(&value)?),
                    Some(p) => set_path(doc, &p, value, kind == "add")?,
                }
            }
            "remove" => {
                let p = path.ok_or_else(|| ScimError::new(400, Some("noTarget"), "'remove' needs a path"))?;
                remove_path(doc, &p, value.as_ref())?;
            }
            other => {
                return Err(ScimError::invalid_value(format!(
                    "'{other}' is not a PATCH operation (add, replace, remove)"
                )))
            }
        }
    }
    Ok(password)
}

fn pw(v: &Value) -> Result<Secret, ScimError> {
    v.as_str().map(|s| Secret::new(s.to_string())).ok_or_else(|| ScimError::invalid_value("password must be a string"))
}

/// The object a path's attribute lives in: the resource, or its extension object.
fn container<'a>(doc: &'a mut Value, p: &AttrPath, create: bool) -> Option<&'a mut Map<String, Value>> {
    let root = doc.as_object_mut()?;
    match &p.uri {
        Some(u) if u.eq_ignore_ascii_case(ENTERPRISE_SCHEMA) => {
            let key = root.keys().find(|k| k.eq_ignore_ascii_case(u)).cloned();
            let key = match key {
                Some(k) => k,
                None if create => {
                    root.insert(ENTERPRISE_SCHEMA.into(), json!({}));
                    ENTERPRISE_SCHEMA.to_string()
                }
                None => return None,
            };
            if !root[&key].is_object() {
                root.insert(key.clone(), json!({}));
            }
            root.get_mut(&key)?.as_object_mut()
        }
        _ => Some(root),
    }
}

fn key_ci(m: &Map<String, Value>, k: &str) -> String {
    m.keys().find(|n| n.eq_ignore_ascii_case(k)).cloned().unwrap_or_else(|| k.to_string())
}

/// A new element for a value filter that matched nothing: its `eq` conditions become fields.
fn element_from_filter(f: &Filter, out: &mut Map<String, Value>) {
    match f {
        Filter::Compare(p, CompareOp::Eq, v) if p.sub.is_none() => {
            let v = match v {
                CompValue::Str(s) => json!(s),
                CompValue::Bool(b) => json!(b),
                CompValue::Num(n) => json!(n),
                CompValue::Null => Value::Null,
            };
            out.insert(p.attr.clone(), v);
        }
        Filter::And(a, b) => {
            element_from_filter(a, out);
            element_from_filter(b, out);
        }
        _ => {}
    }
}

fn set_path(doc: &mut Value, p: &PatchPath, value: Value, add: bool) -> Result<(), ScimError> {
    if p.attr.attr.is_empty() {
        // The whole extension named by its URN.
        let Value::Object(m) = value else {
            return Err(ScimError::invalid_value("an extension's value must be an object"));
        };
        let uri = p.attr.uri.clone().unwrap_or_default();
        for (k, v) in m {
            let sub = parse_path(&format!("{uri}:{k}")).map_err(ScimError::from)?;
            set_path(doc, &sub, v, add)?;
        }
        return Ok(());
    }
    let c = container(doc, &p.attr, true).ok_or_else(|| ScimError::invalid_path("the resource is not an object"))?;
    let key = key_ci(c, &p.attr.attr);
    if let Some(filter) = &p.filter {
        let list = c.entry(key).or_insert_with(|| json!([]));
        if !list.is_array() {
            *list = json!([]);
        }
        let arr = list.as_array_mut().expect("made an array");
        let mut matched = false;
        for el in arr.iter_mut() {
            if filter.matches(el) {
                matched = true;
                match &p.sub {
                    Some(s) => {
                        if let Value::Object(o) = el {
                            let k = key_ci(o, s);
                            o.insert(k, value.clone());
                        }
                    }
                    None => match (&mut *el, &value) {
                        (Value::Object(o), Value::Object(v)) => {
                            for (k, x) in v {
                                let k2 = key_ci(o, k);
                                o.insert(k2, x.clone());
                            }
                        }
                        (e, v) => *e = v.clone(),
                    },
                }
            }
        }
        if !matched {
            let mut el = Map::new();
            element_from_filter(filter, &mut el);
            match (&p.sub, value) {
                (Some(s), v) => {
                    el.insert(s.clone(), v);
                }
                (None, Value::Object(v)) => el.extend(v),
                (None, _) => return Err(ScimError::new(400, Some("noTarget"), "the value filter matched nothing")),
            }
            arr.push(Value::Object(el));
        }
        return Ok(());
    }
    match &p.attr.sub {
        Some(s) => {
            let parent = c.entry(key).or_insert_with(|| json!({}));
            match parent {
                Value::Object(o) => {
                    let k = key_ci(o, s);
                    o.insert(k, value);
                }
                Value::Array(a) => {
                    for el in a.iter_mut() {
                        if let Value::Object(o) = el {
                            let k = key_ci(o, s);
                            o.insert(k, value.clone());
                        }
                    }
                }
                other => *other = json!({ s.clone(): value }),
            }
        }
        None => {
            let existing = c.get_mut(&key);
            match (existing, value) {
                (Some(Value::Array(cur)), Value::Array(new)) if add => {
                    for v in new {
                        let dup = cur
                            .iter()
                            .any(|x| x == &v || (x.get("value").is_some() && x.get("value") == v.get("value")));
                        if !dup {
                            cur.push(v);
                        }
                    }
                }
                (Some(Value::Object(cur)), Value::Object(new)) if add => {
                    for (k, v) in new {
                        let k2 = key_ci(cur, &k);
                        cur.insert(k2, v);
                    }
                }
                (_, v) => {
                    c.insert(key, v);
                }
            }
        }
    }
    Ok(())
}

fn remove_path(doc: &mut Value, p: &PatchPath, value: Option<&Value>) -> Result<(), ScimError> {
    if p.attr.attr.is_empty() {
        if let (Some(root), Some(u)) = (doc.as_object_mut(), &p.attr.uri) {
            let k = key_ci(root, u);
            root.remove(&k);
        }
        return Ok(());
    }
    let Some(c) = container(doc, &p.attr, false) else { return Ok(()) };
    let key = key_ci(c, &p.attr.attr);
    if let Some(filter) = &p.filter {
        if let Some(Value::Array(arr)) = c.get_mut(&key) {
            match &p.sub {
                Some(s) => {
                    for el in arr.iter_mut().filter(|e| filter.matches(e)) {
                        if let Value::Object(o) = el {
                            let k = key_ci(o, s);
                            o.remove(&k);
                        }
                    }
                }
                None => arr.retain(|e| !filter.matches(e)),
            }
        }
        return Ok(());
    }
    match &p.attr.sub {
        Some(s) => match c.get_mut(&key) {
            Some(Value::Object(o)) => {
                let k = key_ci(o, s);
                o.remove(&k);
            }
            Some(Value::Array(a)) => {
                for el in a.iter_mut() {
                    if let Value::Object(o) = el {
                        let k = key_ci(o, s);
                        o.remove(&k);
                    }
                }
            }
            _ => {}
        },
        None => match (c.get_mut(&key), value) {
            // Entra ID: remove with a value list removes just those members.
            (Some(Value::Array(arr)), Some(Value::Array(which))) => {
                let ids: Vec<&Value> = which.iter().filter_map(|w| w.get("value")).collect();
                arr.retain(|e| !e.get("value").is_some_and(|v| ids.contains(&v)));
            }
            _ => {
                c.remove(&key);
            }
        },
    }
    Ok(())
}

// ---- projection -----------------------------------------------------------------------------

fn parse_list(s: &str) -> Vec<AttrPath> {
    s.split(',').filter_map(|a| parse_path(a.trim()).ok()).filter(|p| p.filter.is_none()).map(|p| p.attr).collect()
}

fn in_ext(p: &AttrPath) -> bool {
    p.uri.as_deref().is_some_and(|u| u.eq_ignore_ascii_case(ENTERPRISE_SCHEMA))
}

/// Applies `attributes` (only these, plus `id`, `schemas` and `meta`) or `excludedAttributes`.
pub fn project(mut v: Value, attributes: Option<&str>, excluded: Option<&str>) -> Value {
    let Some(obj) = v.as_object_mut() else { return v };
    if let Some(a) = attributes.filter(|s| !s.trim().is_empty()) {
        let want = parse_list(a);
        let mut out = Map::new();
        for (k, val) in obj.iter() {
            if ["id", "schemas", "meta"].iter().any(|x| k.eq_ignore_ascii_case(x)) {
                out.insert(k.clone(), val.clone());
                continue;
            }
            if k.eq_ignore_ascii_case(ENTERPRISE_SCHEMA) {
                let subs: Vec<&AttrPath> = want.iter().filter(|p| in_ext(p)).collect();
                if subs.iter().any(|p| p.attr.is_empty()) {
                    out.insert(k.clone(), val.clone());
                } else if !subs.is_empty() {
                    if let Value::Object(e) = val {
                        let kept: Map<String, Value> = e
                            .iter()
                            .filter(|(ek, _)| subs.iter().any(|p| p.attr.eq_ignore_ascii_case(ek)))
                            .map(|(a, b)| (a.clone(), b.clone()))
                            .collect();
                        out.insert(k.clone(), Value::Object(kept));
                    }
                }
                continue;
            }
            let matching: Vec<&AttrPath> =
                want.iter().filter(|p| !in_ext(p) && p.attr.eq_ignore_ascii_case(k)).collect();
            if matching.is_empty() {
                continue;
            }
            if matching.iter().any(|p| p.sub.is_none()) {
                out.insert(k.clone(), val.clone());
                continue;
            }
            let keep_sub = |o: &Map<String, Value>| -> Value {
                Value::Object(
                    o.iter()
                        .filter(|(sk, _)| {
                            matching.iter().any(|p| p.sub.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(sk)))
                        })
                        .map(|(a, b)| (a.clone(), b.clone()))
                        .collect(),
                )
            };
            let projected = match val {
                Value::Object(o) => keep_sub(o),
                Value::Array(a) => {
                    Value::Array(a.iter().map(|e| e.as_object().map(keep_sub).unwrap_or(e.clone())).collect())
                }
                other => other.clone(),
            };
            out.insert(k.clone(), projected);
        }
        *obj = out;
    } else if let Some(x) = excluded.filter(|s| !s.trim().is_empty()) {
        for p in parse_list(x) {
            if ["id", "schemas"].iter().any(|a| p.attr.eq_ignore_ascii_case(a)) && p.uri.is_none() {
                continue;
            }
            let target: Option<&mut Map<String, Value>> = if in_ext(&p) {
                let k = key_ci(obj, ENTERPRISE_SCHEMA);
                if p.attr.is_empty() {
                    obj.remove(&k);
                    continue;
                }
                obj.get_mut(&k).and_then(Value::as_object_mut)
            } else {
                Some(&mut *obj)
            };
            let Some(t) = target else { continue };
            let k = key_ci(t, &p.attr);
            match &p.sub {
                None => {
                    t.remove(&k);
                }
                Some(s) => match t.get_mut(&k) {
                    Some(Value::Object(o)) => {
                        let sk = key_ci(o, s);
                        o.remove(&sk);
                    }
                    Some(Value::Array(a)) => {
                        for e in a.iter_mut() {
                            if let Value::Object(o) = e {
                                let sk = key_ci(o, s);
                                o.remove(&sk);
                            }
                        }
                    }
                    _ => {}
                },
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_value_path_and_members() {
        let mut doc =
            json!({"userName": "a", "emails": [{"value": "a@x.org", "type": "work", "primary": true}], "active": true});
        let pw = apply_patch(
            &mut doc,
            &json!({"Operations": [
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "b@x.org"},
                {"op": "replace", "value": {"active": "False", "name.givenName": "B"}},
                {"op": "add", "path": "password", "value": "a long secret"},
            ]}),
        )
        .unwrap();
        assert_eq!(doc["emails"][0]["value"], "b@x.org");
        assert_eq!(doc["active"], "False");
        assert_eq!(doc["name"]["givenName"], "B");
        assert!(pw.is_some());
        let mut g = json!({"displayName": "g", "members": [{"value": "1"}, {"value": "2"}]});
        apply_patch(
            &mut g,
            &json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": "3"}, {"value": "1"}]}]}),
        )
        .unwrap();
        assert_eq!(g["members"].as_array().unwrap().len(), 3);
        apply_patch(&mut g, &json!({"Operations": [{"op": "remove", "path": "members[value eq \"2\"]"}]})).unwrap();
        assert_eq!(g["members"].as_array().unwrap().len(), 2);
        apply_patch(&mut g, &json!({"Operations": [{"op": "remove", "path": "members", "value": [{"value": "3"}]}]}))
            .unwrap();
        assert_eq!(g["members"], json!([{"value": "1"}]));
    }

    #[test]
    fn malformed_patches_are_errors() {
        let mut d = json!({});
        for b in [
            json!({}),
            json!({"Operations": []}),
            json!({"Operations": [{"op": "move", "path": "a", "value": 1}]}),
            json!({"Operations": [{"op": "remove"}]}),
            json!({"Operations": [{"op": "add", "path": "emails[", "value": 1}]}),
            json!({"Operations": [{"op": "replace", "value": 3}]}),
        ] {
            assert!(apply_patch(&mut d, &b).is_err(), "{b}");
        }
    }

    #[test]
    fn projection() {
        let v = json!({"schemas": [], "id": "1", "userName": "a", "name": {"givenName": "x", "familyName": "y"}, "members": [1]});
        let p = project(v.clone(), Some("userName,name.givenName"), None);
        assert_eq!(p, json!({"schemas": [], "id": "1", "userName": "a", "name": {"givenName": "x"}}));
        let p = project(v, None, Some("members"));
        assert!(p.get("members").is_none());
    }
}
