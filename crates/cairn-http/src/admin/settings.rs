//! Settings › Users (§7.4): Default User State for the three source classes, the Default
//! External Password Authority and the password policy. Save shows what will change and asks
//! "Yes, Continue" / "No, Cancel" before `update_settings` applies it.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::Form;
use cairn_directory::Error;
use cairn_domain::{CreationSource, OrgSettings};
use serde_json::{json, Value};

use super::{get, notice, render, text, Chrome, Pairs, Signed};
use crate::Shared;

#[derive(Template)]
#[template(path = "admin/settings.html")]
struct SettingsPage<'a> {
    c: Chrome<'a>,
    manual: &'a str,
    csv: &'a str,
    app: &'a str,
    authority: &'a str,
    min_length: String,
    max_attempts: String,
    lockout: String,
    expiration: String,
    common: bool,
}

struct ChangeRow {
    label: &'static str,
    old: String,
    new: String,
}

#[derive(Template)]
#[template(path = "admin/settings_confirm.html")]
struct ConfirmPage<'a> {
    c: Chrome<'a>,
    changes: Vec<ChangeRow>,
    fields: Vec<(String, String)>,
}

const FIELDS: &[&str] = &["manual", "csv", "app", "authority", "min_length", "max_attempts", "lockout", "expiration"];

fn page_of<'a>(c: Chrome<'a>, s: &'a OrgSettings) -> SettingsPage<'a> {
    let p = &s.password_policy;
    SettingsPage {
        c,
        manual: state_word(s.default_state(CreationSource::ManualEntry)),
        csv: state_word(s.default_state(CreationSource::CsvImport)),
        app: state_word(s.default_state(CreationSource::ApplicationImport)),
        authority: s.default_password_authority().map(|a| a.as_str()).unwrap_or("none"),
        min_length: p.min_length.to_string(),
        max_attempts: p.max_login_attempts.to_string(),
        lockout: p.lockout_time_in_seconds.map(|n| n.to_string()).unwrap_or_default(),
        expiration: p.password_expiration_in_days.map(|n| n.to_string()).unwrap_or_default(),
        common: p.disallow_commonly_used_passwords,
    }
}

fn state_word(s: cairn_domain::State) -> &'static str {
    s.as_str()
}

pub(super) async fn page(State(st): State<Shared>, s: Signed, Query(q): Query<Pairs>) -> Response {
    let org = match st.dir.organization().await {
        Ok(o) => o,
        Err(e) => return s.fail(e),
    };
    let body = render(&page_of(s.chrome("settings", notice(&q), ""), &org.settings));
    s.html(body)
}

fn number(form: &Pairs, k: &str, label: &str) -> Result<Value, Error> {
    let v = text(form, k);
    if v.is_empty() {
        return Ok(Value::Null);
    }
    v.parse::<u64>().map(|n| json!(n)).map_err(|_| Error::invalid(k, format!("{label} must be a whole number")))
}

/// The settings document the form asks for (JumpCloud names, as `PUT /api/organizations`).
fn patch_of(form: &Pairs) -> Result<Value, Error> {
    let st = |k: &str| -> Result<Value, Error> {
        match get(form, k) {
            Some(v @ ("STAGED" | "ACTIVATED")) => Ok(json!(v)),
            _ => Err(Error::invalid(k, "Default User State must be Staged or Activated")),
        }
    };
    let restricted = match get(form, "authority").unwrap_or("none") {
        "none" | "" => json!([]),
        a @ ("active_directory" | "scim") => json!([{ "field": "password", "type": a }]),
        _ => return Err(Error::invalid("authority", "must be none, active_directory or scim")),
    };
    let required = |k: &str, label: &str| -> Result<Value, Error> {
        match number(form, k, label)? {
            Value::Null => Err(Error::invalid(k, format!("{label} is required"))),
            v => Ok(v),
        }
    };
    Ok(json!({
        "newSystemUserStateDefaults": { "manualEntry": st("manual")?, "csvImport": st("csv")?, "applicationImport": st("app")? },
        "systemUserDefaults": { "restrictedFields": restricted },
        "passwordPolicy": {
            "minLength": required("min_length", "Minimum length")?,
            "maxLoginAttempts": required("max_attempts", "Maximum login attempts")?,
            "lockoutTimeInSeconds": number(form, "lockout", "Lockout time")?,
            "passwordExpirationInDays": number(form, "expiration", "Password expiration")?,
            "disallowCommonlyUsedPasswords": get(form, "common").is_some(),
        },
    }))
}

fn describe(s: &OrgSettings) -> Vec<(&'static str, String)> {
    let p = &s.password_policy;
    let off = |v: Option<String>| v.unwrap_or_else(|| "off".into());
    vec![
        (
            "Default User State: manual entry (portal, API, SCIM)",
            s.default_state(CreationSource::ManualEntry).as_str().into(),
        ),
        ("Default User State: CSV import", s.default_state(CreationSource::CsvImport).as_str().into()),
        ("Default User State: application import", s.default_state(CreationSource::ApplicationImport).as_str().into()),
        (
            "Default External Password Authority",
            s.default_password_authority().map(|a| a.as_str()).unwrap_or("none").into(),
        ),
        ("Minimum password length", p.min_length.to_string()),
        ("Maximum login attempts", p.max_login_attempts.to_string()),
        ("Lockout time (seconds)", off(p.lockout_time_in_seconds.map(|n| n.to_string()))),
        ("Password expiration (days)", off(p.password_expiration_in_days.map(|n| n.to_string()))),
        ("Disallow commonly used passwords", if p.disallow_commonly_used_passwords { "yes" } else { "no" }.into()),
    ]
}

/// Save: validates and shows what will change, with "Yes, Continue" / "No, Cancel".
pub(super) async fn confirm(State(st): State<Shared>, s: Signed, Form(form): Form<Pairs>) -> Response {
    if let Some(r) = s.may_change(&form) {
        return r;
    }
    let org = match st.dir.organization().await {
        Ok(o) => o,
        Err(e) => return s.fail(e),
    };
    let new = patch_of(&form).and_then(|p| org.settings.apply_patch(&p).map_err(Error::from));
    let new = match new {
        Ok(n) => n,
        Err(e) => {
            let msg = e.to_string();
            let body = render(&page_of(s.chrome("settings", "", &msg), &org.settings));
            return s.p.html(axum::http::StatusCode::BAD_REQUEST, body);
        }
    };
    let changes = describe(&org.settings)
        .into_iter()
        .zip(describe(&new))
        .filter(|(a, b)| a.1 != b.1)
        .map(|(a, b)| ChangeRow { label: a.0, old: a.1, new: b.1 })
        .collect();
    let mut fields: Vec<(String, String)> =
        FIELDS.iter().map(|k| (k.to_string(), get(&form, k).unwrap_or("").to_string())).collect();
    if get(&form, "common").is_some() {
        fields.push(("common".into(), "on".into()));
    }
    let body = render(&ConfirmPage { c: s.chrome("settings", "", ""), changes, fields });
    s.html(body)
}

/// "Yes, Continue": applies the settings.
pub(super) async fn apply(State(st): State<Shared>, s: Signed, Form(form): Form<Pairs>) -> Response {
    if let Some(r) = s.may_change(&form) {
        return r;
    }
    let patch = match patch_of(&form) {
        Ok(p) => p,
        Err(e) => return s.fail(e),
    };
    match st.dir.update_settings(&s.ctx, &patch).await {
        Ok(_) => s.p.redirect("/admin/settings?m=settings"),
        Err(e) => s.fail(e),
    }
}
