//! Users (§7.2), the Actions menu, Export, Edit Columns, User details (§7.3) and Add user.

use askama::Template;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use cairn_directory::{Action, Error, ExportFormat, Exporter, Outcome};
use cairn_domain::lifecycle::MailChoice;
use cairn_domain::query::ListQuery;
use cairn_domain::user::PasswordStatus;
use cairn_domain::{CreationSource, Group, State as UserState, User};
use serde_json::{json, Map, Value};

use super::{all, back_link, enc, get, notice, query_string, render, text, when, Chrome, Pairs, Signed};
use crate::Shared;

// ---- columns --------------------------------------------------------------------------------

/// A column of the Users table: its key, heading, the field it sorts by, and the export
/// fields it stands for.
pub(crate) struct Col {
    pub key: &'static str,
    pub label: &'static str,
    pub sort: Option<&'static str>,
    pub export: &'static [&'static str],
}

const fn col(
    key: &'static str,
    label: &'static str,
    sort: Option<&'static str>,
    export: &'static [&'static str],
) -> Col {
    Col { key, label, sort, export }
}

pub(crate) const COLUMNS: &[Col] = &[
    col("username", "Username", Some("username"), &["username"]),
    col("email", "Email", Some("email"), &["email"]),
    col("firstname", "First name", Some("firstname"), &["firstname"]),
    col("lastname", "Last name", Some("lastname"), &["lastname"]),
    col("displayname", "Display name", Some("displayname"), &["displayname"]),
    col("state", "State", Some("state"), &["state"]),
    col("password", "Password status", Some("activated"), &["activated", "password_expired"]),
    col("locked", "Locked", Some("account_locked"), &["account_locked"]),
    col("mfa", "MFA required", Some("enable_user_portal_multifactor"), &["enable_user_portal_multifactor"]),
    col("totp", "TOTP enrolled", Some("totp_enabled"), &["totp_enabled"]),
    col("department", "Department", Some("department"), &["department"]),
    col("jobTitle", "Job title", Some("jobTitle"), &["jobTitle"]),
    col("company", "Company", Some("company"), &["company"]),
    col("costCenter", "Cost center", Some("costCenter"), &["costCenter"]),
    col("employeeType", "Employee type", Some("employeeType"), &["employeeType"]),
    col("employeeIdentifier", "Employee ID", Some("employeeIdentifier"), &["employeeIdentifier"]),
    col("location", "Location", Some("location"), &["location"]),
    col("alternateEmail", "Alternate email", Some("alternateEmail"), &["alternateEmail"]),
    col("manager", "Manager", Some("manager"), &["manager"]),
    col("description", "Description", Some("description"), &["description"]),
    col("created", "Created", Some("created"), &["created"]),
    col("creationSource", "Creation source", Some("creationSource"), &["creationSource"]),
    col("password_date", "Password set", Some("password_date"), &["password_date"]),
    col("unix_uid", "UID", Some("unix_uid"), &["unix_uid"]),
    col("unix_guid", "GID", Some("unix_guid"), &["unix_guid"]),
];

const DEFAULT_COLUMNS: &[&str] = &["username", "email", "firstname", "lastname", "state", "password", "locked", "mfa"];

fn column(key: &str) -> Option<&'static Col> {
    COLUMNS.iter().find(|c| c.key == key)
}

async fn my_columns(st: &Shared, s: &Signed) -> Vec<&'static Col> {
    let chosen = st.dir.admin_columns(&s.admin.id).await.ok().flatten();
    let cols: Vec<&'static Col> = match chosen {
        Some(v) => v.iter().filter_map(|k| column(k)).collect(),
        None => vec![],
    };
    if cols.is_empty() {
        DEFAULT_COLUMNS.iter().filter_map(|k| column(k)).collect()
    } else {
        cols
    }
}

pub(crate) fn password_word(u: &User) -> &'static str {
    match u.password_status() {
        PasswordStatus::Pending => "Pending",
        PasswordStatus::Active => "Active",
        PasswordStatus::Expired => "Expired",
    }
}

fn cell(u: &User, key: &str) -> String {
    match key {
        "username" => u.username.clone(),
        "email" => u.email.clone(),
        "state" => u.state.as_str().to_string(),
        "password" => password_word(u).into(),
        "locked" => if u.account_locked { "Locked" } else { "" }.into(),
        "mfa" => if u.flag("enable_user_portal_multifactor") { "Required" } else { "" }.into(),
        "totp" => if u.totp_enabled { "Enrolled" } else { "" }.into(),
        "created" => when(u.created),
        "creationSource" => u.creation_source.clone(),
        "password_date" => u.password_date.map(when).unwrap_or_default(),
        k => match u.profile.get(k) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => if *b { "Yes" } else { "" }.into(),
            _ => String::new(),
        },
    }
}

// ---- the Users list ---------------------------------------------------------------------------

/// The view's parameters as the admin set them, kept to rebuild links.
const VIEW_KEYS: &[&str] = &["search", "state", "pw", "locked", "mfa", "group", "department", "filter", "sort", "per"];

fn view_pairs(q: &Pairs) -> Vec<(String, String)> {
    q.iter().filter(|(k, v)| VIEW_KEYS.contains(&k.as_str()) && !v.trim().is_empty()).cloned().collect()
}

/// The list query a view asks for (without the page bounds), and its group.
/// Query pairs for `ListQuery::from_pairs`, and the group to restrict to.
type View = (Vec<(String, String)>, Option<String>);

fn list_query(q: &Pairs) -> Result<View, Error> {
    let mut pairs: Vec<(String, String)> = vec![];
    let f = |s: String| ("filter".to_string(), s);
    let search = text(q, "search");
    if !search.is_empty() {
        pairs.push(("search".into(), search));
    }
    match get(q, "state").unwrap_or("") {
        "" => {}
        s @ ("STAGED" | "ACTIVATED" | "SUSPENDED") => pairs.push(f(format!("state:$eq:{s}"))),
        _ => return Err(Error::invalid("state", "must be STAGED, ACTIVATED or SUSPENDED")),
    }
    match get(q, "pw").unwrap_or("") {
        "" => {}
        "pending" => pairs.push(f("activated:$eq:false".into())),
        "active" => {
            pairs.push(f("activated:$eq:true".into()));
            pairs.push(f("password_expired:$eq:false".into()));
        }
        "expired" => pairs.push(f("password_expired:$eq:true".into())),
        _ => return Err(Error::invalid("pw", "must be pending, active or expired")),
    }
    match get(q, "locked").unwrap_or("") {
        "" => {}
        "yes" => pairs.push(f("account_locked:$eq:true".into())),
        "no" => pairs.push(f("account_locked:$eq:false".into())),
        _ => return Err(Error::invalid("locked", "must be yes or no")),
    }
    match get(q, "mfa").unwrap_or("") {
        "" => {}
        "required" => pairs.push(f("enable_user_portal_multifactor:$eq:true".into())),
        "not_required" => pairs.push(f("enable_user_portal_multifactor:$eq:false".into())),
        "enrolled" => pairs.push(f("totp_enabled:$eq:true".into())),
        "not_enrolled" => pairs.push(f("totp_enabled:$eq:false".into())),
        _ => return Err(Error::invalid("mfa", "must be required, not_required, enrolled or not_enrolled")),
    }
    let dept = text(q, "department");
    if !dept.is_empty() {
        pairs.push(f(format!("department:$eq:{dept}")));
    }
    for extra in all(q, "filter") {
        if !extra.trim().is_empty() {
            pairs.push(f(extra.trim().to_string()));
        }
    }
    let sort = text(q, "sort");
    if !sort.is_empty() {
        pairs.push(("sort".into(), sort));
    }
    let group = Some(text(q, "group")).filter(|g| !g.is_empty());
    Ok((pairs, group))
}

struct Header {
    label: &'static str,
    href: String,
    /// `ascending`, `descending` or `none` (aria-sort).
    aria: &'static str,
    arrow: &'static str,
}

struct Row {
    id: String,
    username: String,
    /// Each cell, and whether it links to the user's details.
    cells: Vec<(String, bool)>,
}

#[derive(Template)]
#[template(path = "admin/users.html")]
struct UsersPage<'a> {
    c: Chrome<'a>,
    headers: Vec<Header>,
    rows: Vec<Row>,
    total: i64,
    from: i64,
    to: i64,
    prev: String,
    next: String,
    search: String,
    state: String,
    pw: String,
    locked: String,
    mfa: String,
    group: String,
    department: String,
    filter: String,
    per: i64,
    groups: Vec<Group>,
    view: Vec<(String, String)>,
    back: String,
    actions: &'static [(&'static str, &'static str)],
}

/// The Actions menu: key and label (SPEC §7.2's words).
pub(crate) const MENU: &[(&str, &str)] = &[
    ("add_to_group", "Add To User Group"),
    ("remove_from_group", "Remove From User Group"),
    ("send_activation_email", "Send Activation Email"),
    ("send_password_reset_email", "Send Password Reset Email"),
    ("force_password_change", "Force Password Change"),
    ("unlock", "Unlock User Accounts"),
    ("send_totp_reset_email", "Send TOTP MFA Reset Email"),
    ("set_mfa_required", "Change User MFA Requirement"),
    ("activate", "Activate Users"),
    ("suspend", "Suspend Users"),
    ("schedule_activation", "Schedule Activation"),
    ("schedule_suspension", "Schedule Suspension"),
    ("cancel_schedule", "Cancel Scheduled Change"),
    ("set_password_authority", "Set External Password Authority"),
    ("set_delegated_authority", "Set Delegated Authority"),
    ("delete", "Delete Users"),
];

pub(super) async fn list(State(st): State<Shared>, s: Signed, Query(q): Query<Pairs>) -> Response {
    let cols = my_columns(&st, &s).await;
    let (mut pairs, group) = match list_query(&q) {
        Ok(x) => x,
        Err(e) => return s.fail(e),
    };
    let per: i64 = get(&q, "per").and_then(|v| v.parse().ok()).filter(|n| [25, 50, 100].contains(n)).unwrap_or(50);
    let page: i64 = get(&q, "page").and_then(|v| v.parse().ok()).filter(|n| *n >= 1).unwrap_or(1);
    pairs.push(("limit".into(), per.to_string()));
    pairs.push(("skip".into(), ((page - 1) * per).to_string()));
    let lq = match ListQuery::from_pairs(&pairs) {
        Ok(lq) => lq,
        Err(e) => return s.fail(e.into()),
    };
    let res = match &group {
        Some(g) => st.dir.list_users_in_group(&lq, g).await,
        None => st.dir.list_users(&lq).await,
    };
    let (total, users) = match res {
        Ok(x) => x,
        Err(e) => return s.fail(e),
    };
    let groups = st.dir.list_groups(None, 1000, 0).await.map(|x| x.1).unwrap_or_default();
    let view = view_pairs(&q);
    let link = |extra: &[(&str, String)]| -> String {
        let mut v: Vec<(String, String)> =
            view.iter().filter(|(k, _)| !extra.iter().any(|(e, _)| e == k)).cloned().collect();
        v.extend(extra.iter().filter(|(_, val)| !val.is_empty()).map(|(k, val)| (k.to_string(), val.clone())));
        format!("/admin/users?{}", query_string(&v))
    };
    let current_sort = text(&q, "sort");
    let headers = cols
        .iter()
        .map(|c| {
            let (aria, arrow, next) = match c.sort {
                Some(f) if current_sort == f => ("ascending", " ▲", format!("-{f}")),
                Some(f) if current_sort == format!("-{f}") => ("descending", " ▼", f.to_string()),
                Some(f) => ("none", "", f.to_string()),
                None => ("none", "", String::new()),
            };
            Header {
                label: c.label,
                href: if next.is_empty() { String::new() } else { link(&[("sort", next)]) },
                aria,
                arrow,
            }
        })
        .collect();
    let link_col = cols.iter().position(|c| c.key == "username").unwrap_or(0);
    let rows = users
        .iter()
        .map(|u| Row {
            id: u.id.clone(),
            username: u.username.clone(),
            cells: cols.iter().enumerate().map(|(i, c)| (cell(u, c.key), i == link_col)).collect(),
        })
        .collect::<Vec<_>>();
    let from = if total == 0 { 0 } else { (page - 1) * per + 1 };
    let to = (page - 1) * per + rows.len() as i64;
    let prev = if page > 1 { link(&[("page", (page - 1).to_string())]) } else { String::new() };
    let next = if to < total { link(&[("page", (page + 1).to_string())]) } else { String::new() };
    let back = link(&[("page", if page > 1 { page.to_string() } else { String::new() })]);
    let filter = all(&q, "filter").into_iter().find(|f| !f.trim().is_empty()).unwrap_or("").to_string();
    let n = notice(&q);
    let body = render(&UsersPage {
        c: s.chrome("users", n, ""),
        headers,
        rows,
        total,
        from,
        to,
        prev,
        next,
        search: text(&q, "search"),
        state: text(&q, "state"),
        pw: text(&q, "pw"),
        locked: text(&q, "locked"),
        mfa: text(&q, "mfa"),
        group: group.unwrap_or_default(),
        department: text(&q, "department"),
        filter,
        per,
        groups,
        view,
        back,
        actions: MENU,
    });
    s.html(body)
}

// ---- Export ---------------------------------------------------------------------------------

pub(super) async fn export(State(st): State<Shared>, s: Signed, Query(q): Query<Pairs>) -> Response {
    let format = match get(&q, "format").and_then(ExportFormat::parse) {
        Some(f) => f,
        None => ExportFormat::Csv,
    };
    let everyone = get(&q, "scope") == Some("all");
    let (pairs, group, fields) = if everyone {
        (vec![], None, None)
    } else {
        let (p, g) = match list_query(&q) {
            Ok(x) => x,
            Err(e) => return s.fail(e),
        };
        let mut fields = vec!["_id".to_string()];
        for c in my_columns(&st, &s).await {
            fields.extend(c.export.iter().map(|f| f.to_string()));
        }
        (p, g, Some(fields))
    };
    let lq = match ListQuery::from_pairs(&pairs) {
        Ok(lq) => lq,
        Err(e) => return s.fail(e.into()),
    };
    let org = match st.dir.organization().await {
        Ok(o) => o.id,
        Err(e) => return s.fail(e),
    };
    let mut exporter = Exporter::new(format, fields, org);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let dir = st.dir.clone();
    tokio::spawn(async move {
        let _ = tx.send(Ok(Bytes::from(exporter.header()))).await;
        let mut buf = String::new();
        let fail = |e: Error| {
            tracing::error!(error = %e, "admin export failed midway");
            std::io::Error::other(e.to_string())
        };
        match group {
            // Members of a group, page by page.
            Some(g) => {
                let mut page = lq.clone();
                page.limit = 1000;
                page.skip = 0;
                loop {
                    match dir.list_users_in_group(&page, &g).await {
                        Ok((_, users)) => {
                            for u in &users {
                                buf.push_str(&exporter.row(u));
                            }
                            if tx.send(Ok(Bytes::from(std::mem::take(&mut buf)))).await.is_err() {
                                return;
                            }
                            if (users.len() as i64) < page.limit {
                                break;
                            }
                            page.skip += page.limit;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(fail(e))).await;
                            return;
                        }
                    }
                }
            }
            None => {
                let mut users = dir.export_users(lq);
                while let Some(r) = users.recv().await {
                    match r {
                        Ok(u) => {
                            buf.push_str(&exporter.row(&u));
                            if buf.len() > 64 * 1024
                                && tx.send(Ok(Bytes::from(std::mem::take(&mut buf)))).await.is_err()
                            {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(fail(e))).await;
                            return;
                        }
                    }
                }
            }
        }
        buf.push_str(&exporter.footer());
        let _ = tx.send(Ok(Bytes::from(buf))).await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let ext = if format == ExportFormat::Csv { "csv" } else { "json" };
    let name = if everyone { "users-all" } else { "users" };
    (
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}.{ext}\"")),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

// ---- Edit Columns ---------------------------------------------------------------------------

struct ColumnChoice {
    key: &'static str,
    label: &'static str,
    shown: bool,
    position: usize,
}

#[derive(Template)]
#[template(path = "admin/columns.html")]
struct ColumnsPage<'a> {
    c: Chrome<'a>,
    choices: Vec<ColumnChoice>,
    back: String,
}

pub(super) async fn columns_page(State(st): State<Shared>, s: Signed, Query(q): Query<Pairs>) -> Response {
    let mine = my_columns(&st, &s).await;
    let mut choices: Vec<ColumnChoice> = mine
        .iter()
        .enumerate()
        .map(|(i, c)| ColumnChoice { key: c.key, label: c.label, shown: true, position: i + 1 })
        .collect();
    let n = choices.len();
    for (i, c) in COLUMNS.iter().filter(|c| !mine.iter().any(|m| m.key == c.key)).enumerate() {
        choices.push(ColumnChoice { key: c.key, label: c.label, shown: false, position: n + i + 1 });
    }
    let back = back_link(get(&q, "back"), "/admin/users");
    let body = render(&ColumnsPage { c: s.chrome("users", "", ""), choices, back });
    s.html(body)
}

/// Columns are a personal preference, so read-only administrators may save theirs too.
pub(super) async fn columns_save(State(st): State<Shared>, s: Signed, Form(form): Form<Pairs>) -> Response {
    if let Some(r) = s.p.check(&form) {
        return r;
    }
    let shown = all(&form, "show");
    let mut chosen: Vec<(f64, usize, &'static str)> = COLUMNS
        .iter()
        .enumerate()
        .filter(|(_, c)| shown.contains(&c.key))
        .map(|(i, c)| {
            let pos = get(&form, &format!("pos_{}", c.key)).and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(999.0);
            (pos, i, c.key)
        })
        .collect();
    chosen.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let keys: Vec<String> = chosen.iter().map(|c| c.2.to_string()).collect();
    if keys.is_empty() {
        return s.fail(Error::invalid("columns", "Choose at least one column."));
    }
    if let Err(e) = st.dir.set_admin_columns(&s.admin.id, &keys).await {
        return s.fail(e);
    }
    let back = back_link(get(&form, "back"), "/admin/users");
    let sep = if back.contains('?') { '&' } else { '?' };
    s.p.redirect(&format!("{back}{sep}m=columns"))
}

// ---- Actions ----------------------------------------------------------------------------------

fn menu_label(key: &str) -> Option<&'static str> {
    MENU.iter().find(|(k, _)| *k == key).map(|(_, l)| *l)
}

fn destructive(key: &str) -> bool {
    matches!(key, "delete" | "suspend" | "force_password_change" | "send_totp_reset_email" | "schedule_suspension")
}

struct Picked {
    id: String,
    username: String,
}

#[derive(Template)]
#[template(path = "admin/action.html")]
struct ActionPage<'a> {
    c: Chrome<'a>,
    key: &'a str,
    label: &'a str,
    danger: bool,
    users: Vec<Picked>,
    more: usize,
    ids: Vec<String>,
    groups: Vec<Group>,
    /// Directory connections (id, name), for the password authority items.
    directories: Vec<(String, String)>,
    zones: Vec<&'static str>,
    back: String,
    single: bool,
}

async fn usernames(st: &Shared, ids: &[String], max: usize) -> Vec<Picked> {
    let mut out = vec![];
    for id in ids.iter().take(max) {
        let username = st.dir.get_user(id).await.map(|u| u.username).unwrap_or_else(|_| id.clone());
        out.push(Picked { id: id.clone(), username });
    }
    out
}

pub(crate) fn zones() -> Vec<&'static str> {
    chrono_tz::TZ_VARIANTS.iter().map(|z| z.name()).filter(|z| *z != "UTC").collect()
}

/// Step one: the chosen action's parameters and the confirmation.
pub(super) async fn action_form(State(st): State<Shared>, s: Signed, Form(form): Form<Pairs>) -> Response {
    if let Some(r) = s.may_change(&form) {
        return r;
    }
    let key = text(&form, "action");
    let back = back_link(get(&form, "back"), "/admin/users");
    let Some(label) = menu_label(&key) else {
        return s.fail(Error::invalid("action", "Choose an item of the Actions menu."));
    };
    let ids: Vec<String> = all(&form, "user_id").into_iter().map(str::to_string).collect();
    if ids.is_empty() {
        return s.p.message(
            StatusCode::BAD_REQUEST,
            "No users selected",
            "Select one or more users with the checkboxes, then choose an action.",
        );
    }
    let groups = if matches!(key.as_str(), "add_to_group" | "remove_from_group") {
        st.dir.list_groups(None, 1000, 0).await.map(|x| x.1).unwrap_or_default()
    } else {
        vec![]
    };
    let directories = if matches!(key.as_str(), "set_password_authority" | "set_delegated_authority") {
        let all = st.dir.directory_connections(cairn_directory::MAX_CONNECTIONS, 0).await.map(|x| x.1);
        all.unwrap_or_default().into_iter().map(|c| (c.id, c.name)).collect()
    } else {
        vec![]
    };
    let shown = usernames(&st, &ids, 25).await;
    let body = render(&ActionPage {
        c: s.chrome("users", "", ""),
        key: &key,
        label,
        danger: destructive(&key),
        more: ids.len().saturating_sub(shown.len()),
        users: shown,
        single: ids.len() == 1,
        ids,
        groups,
        directories,
        zones: if key.starts_with("schedule_") { zones() } else { vec![] },
        back,
    });
    s.html(body)
}

/// The JSON body of `POST /api/v2/users/actions` that a confirmed form stands for.
fn action_body(key: &str, form: &Pairs, ids: &[String]) -> Result<Value, Error> {
    let mut b = Map::new();
    b.insert("user_ids".into(), json!(ids));
    let mut put = |k: &str, v: Value| {
        b.insert(k.into(), v);
    };
    let action = match key {
        "schedule_activation" | "schedule_suspension" => {
            let (date, time) = (text(form, "date"), text(form, "time"));
            if date.is_empty() || time.is_empty() {
                return Err(Error::invalid("start_date", "Choose the date and the time."));
            }
            put("start_date", json!(format!("{date}T{time}")));
            put("time_zone", json!(get(form, "time_zone").filter(|z| !z.is_empty()).unwrap_or("UTC")));
            if key == "schedule_activation" {
                put("state", json!("ACTIVATED"));
                match get(form, "mail") {
                    Some("yes") => put("send_activation_emails", json!(true)),
                    Some("no") => put("send_activation_emails", json!(false)),
                    Some("to") => put("activation_email_override", json!(text(form, "mail_to"))),
                    _ => {}
                }
            } else {
                put("state", json!("SUSPENDED"));
            }
            "schedule_state"
        }
        "activate" => {
            match get(form, "mail") {
                Some("yes") => put("email", json!(true)),
                Some("no") => put("email", json!(false)),
                Some("to") => put("email", json!(text(form, "mail_to"))),
                _ => {}
            }
            "activate"
        }
        "add_to_group" | "remove_from_group" => {
            put("group_id", json!(text(form, "group_id")));
            key
        }
        "set_mfa_required" => {
            put("required", json!(get(form, "required") == Some("yes")));
            key
        }
        "set_password_authority" if get(form, "connection").is_some_and(|c| !c.is_empty()) => {
            put("connection", json!(text(form, "connection")));
            key
        }
        "set_delegated_authority" if get(form, "connection").is_some_and(|c| !c.is_empty()) => {
            put("connection", json!(text(form, "connection")));
            key
        }
        "set_password_authority" => {
            match get(form, "authority").unwrap_or("none") {
                "none" | "" => put("authority", Value::Null),
                a => put("authority", json!(a)),
            }
            key
        }
        "set_delegated_authority" => {
            match get(form, "authority").unwrap_or("none") {
                "ActiveDirectory" => {
                    put("authority", json!({ "id": text(form, "authority_id"), "name": "ActiveDirectory" }))
                }
                _ => put("authority", Value::Null),
            }
            key
        }
        "cancel_schedule" => {
            if let Some(s @ ("ACTIVATED" | "SUSPENDED")) = get(form, "state") {
                put("state", json!(s));
            }
            key
        }
        k => k,
    };
    b.insert("action".into(), json!(action));
    Ok(Value::Object(b))
}

struct ResultRow {
    id: String,
    username: String,
    outcome: &'static str,
    message: String,
}

#[derive(Template)]
#[template(path = "admin/results.html")]
struct ResultsPage<'a> {
    c: Chrome<'a>,
    label: &'a str,
    rows: Vec<ResultRow>,
    done: usize,
    skipped: usize,
    errors: usize,
    back: String,
    deleted: bool,
}

/// Step two: runs the confirmed action through `run_action` and shows each user's outcome.
pub(super) async fn action_run(State(st): State<Shared>, s: Signed, Form(form): Form<Pairs>) -> Response {
    if let Some(r) = s.may_change(&form) {
        return r;
    }
    let key = text(&form, "action");
    let back = back_link(get(&form, "back"), "/admin/users");
    let Some(label) = menu_label(&key) else {
        return s.fail(Error::invalid("action", "Choose an item of the Actions menu."));
    };
    let ids: Vec<String> = all(&form, "user_id").into_iter().map(str::to_string).collect();
    let body = match action_body(&key, &form, &ids) {
        Ok(b) => b,
        Err(e) => return s.fail(e),
    };
    let (action, ids) = match Action::parse(&body, st.dir.now()) {
        Ok(x) => x,
        Err(e) => return s.fail(e),
    };
    let names = usernames(&st, &ids, usize::MAX).await;
    let results = match st.dir.run_action(&s.ctx, &action, &ids).await {
        Ok(r) => r,
        Err(e) => return s.fail(e),
    };
    let rows: Vec<ResultRow> = results
        .into_iter()
        .map(|r| ResultRow {
            username: names.iter().find(|n| n.id == r.user_id).map(|n| n.username.clone()).unwrap_or_default(),
            id: r.user_id,
            outcome: match r.outcome {
                Outcome::Done => "done",
                Outcome::Skipped => "skipped",
                Outcome::Error => "error",
            },
            message: r.message,
        })
        .collect();
    let count = |o: &str| rows.iter().filter(|r| r.outcome == o).count();
    let (done, skipped, errors) = (count("done"), count("skipped"), count("error"));
    let deleted = key == "delete";
    let back = if deleted && back.starts_with("/admin/users/") && !back.starts_with("/admin/users?") {
        "/admin/users".to_string()
    } else {
        back
    };
    let page = render(&ResultsPage { c: s.chrome("users", "", ""), label, rows, done, skipped, errors, back, deleted });
    s.html(page)
}

// ---- User details -----------------------------------------------------------------------------

/// Profile fields the details page and Add user edit: JSON name, label, input type.
pub(crate) const EDITABLE: &[(&str, &str, &str)] = &[
    ("firstname", "First name", "text"),
    ("middlename", "Middle name", "text"),
    ("lastname", "Last name", "text"),
    ("displayname", "Display name", "text"),
    ("alternateEmail", "Alternate email", "email"),
    ("jobTitle", "Job title", "text"),
    ("employeeIdentifier", "Employee ID", "text"),
    ("department", "Department", "text"),
    ("company", "Company", "text"),
    ("costCenter", "Cost center", "text"),
    ("employeeType", "Employee type", "text"),
    ("location", "Location", "text"),
    ("manager", "Manager (user id)", "text"),
    ("description", "Description", "text"),
    ("unix_uid", "UNIX UID", "number"),
    ("unix_guid", "UNIX GID", "number"),
];

const FLAGS: &[(&str, &str)] = &[
    ("enable_user_portal_multifactor", "Require MFA (TOTP) for this user"),
    ("password_never_expires", "Password never expires"),
    ("ldap_binding_user", "LDAP binding user"),
    ("sudo", "Administrator (sudo) on devices"),
];

struct Input {
    name: &'static str,
    label: &'static str,
    kind: &'static str,
    value: String,
}

struct Flag {
    name: &'static str,
    label: &'static str,
    on: bool,
}

struct Pending {
    target: String,
    due: String,
    mail: String,
}

pub(crate) struct EventRow {
    pub time: String,
    pub actor: String,
    pub action: String,
    pub source: String,
    pub outcome: String,
    pub changes: String,
}

#[derive(Template)]
#[template(path = "admin/user.html")]
struct UserPage<'a> {
    c: Chrome<'a>,
    u: &'a User,
    name: String,
    password: &'static str,
    mfa_required: bool,
    authority: String,
    delegated: String,
    pending: Vec<Pending>,
    inputs: Vec<Input>,
    flags: Vec<Flag>,
    readonly: Vec<(&'static str, String)>,
    groups: Vec<Group>,
    all_groups: Vec<Group>,
    events: Vec<EventRow>,
    self_link: String,
    changes: &'static [(&'static str, &'static str)],
}

const CHANGE_MENU: &[(&str, &str)] = &[
    ("activate", "Activate Now"),
    ("schedule_activation", "Schedule Activation"),
    ("suspend", "Suspend"),
    ("schedule_suspension", "Schedule Suspension"),
    ("cancel_schedule", "Cancel schedule"),
];

pub(crate) fn event_rows(events: &[cairn_domain::Event]) -> Vec<EventRow> {
    events
        .iter()
        .map(|e| EventRow {
            time: when(e.time),
            actor: format!("{} {}", e.actor.kind, e.actor.name.clone().unwrap_or_default()).trim().to_string(),
            action: e.action.clone(),
            source: e.source.clone(),
            outcome: e.outcome.clone(),
            changes: e
                .changes
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|c| {
                            let f = c["field"].as_str().unwrap_or("");
                            format!("{f}: {} → {}", short(&c["old"]), short(&c["new"]))
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_default(),
        })
        .collect()
}

fn short(v: &Value) -> String {
    let s = match v {
        Value::Null => "—".to_string(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

fn mail_words(m: &MailChoice) -> String {
    match m {
        MailChoice::Default => "default e-mail".into(),
        MailChoice::Yes => "send e-mail".into(),
        MailChoice::None => "no e-mail".into(),
        MailChoice::To(a) => format!("e-mail to {a}"),
    }
}

pub(super) async fn details(
    State(st): State<Shared>,
    s: Signed,
    Path(id): Path<String>,
    Query(q): Query<Pairs>,
) -> Response {
    let (u, groups) = match st.dir.groups_of_user(&id).await {
        Ok(x) => x,
        Err(e) => return s.fail(e),
    };
    let pending = st.dir.pending_schedules_of(std::slice::from_ref(&u.id)).await.unwrap_or_default();
    let all_groups = st.dir.list_groups(None, 1000, 0).await.map(|x| x.1).unwrap_or_default();
    let events = st
        .dir
        .list_events(&cairn_domain::EventQuery { target_id: Some(u.id.clone()), limit: 50, ..Default::default() })
        .await
        .map(|x| x.1)
        .unwrap_or_default();
    details_page(&s, &u, groups, all_groups, pending, &events, notice(&q), "", None)
}

#[allow(clippy::too_many_arguments)]
fn details_page(
    s: &Signed,
    u: &User,
    groups: Vec<Group>,
    all_groups: Vec<Group>,
    pending: Vec<cairn_domain::lifecycle::Schedule>,
    events: &[cairn_domain::Event],
    notice: &str,
    error: &str,
    form: Option<&Pairs>,
) -> Response {
    let value = |k: &str| -> String {
        match form {
            Some(f) => text(f, k),
            None => cell(u, k),
        }
    };
    let mut inputs = vec![
        Input { name: "username", label: "Username", kind: "text", value: value("username") },
        Input { name: "email", label: "Email", kind: "email", value: value("email") },
    ];
    inputs.extend(EDITABLE.iter().map(|(n, l, k)| Input { name: n, label: l, kind: k, value: value(n) }));
    let flags = FLAGS
        .iter()
        .map(|(n, l)| Flag { name: n, label: l, on: form.map(|f| get(f, n).is_some()).unwrap_or_else(|| u.flag(n)) })
        .collect();
    let authority = u.password_authority().map(|a| a.as_str().to_string()).unwrap_or_else(|| "none (Cairn)".into());
    let delegated = match u.profile.get("delegatedAuthority") {
        Some(Value::Object(o)) => o.get("name").and_then(Value::as_str).unwrap_or("yes").to_string(),
        _ => "none".into(),
    };
    let readonly = vec![
        ("ID", u.id.clone()),
        ("Created", when(u.created)),
        ("Creation source", u.creation_source.clone()),
        ("Password set", u.password_date.map(when).unwrap_or_else(|| "never".into())),
        ("Failed logins", u.bad_login_attempts.to_string()),
        ("Locked since", u.account_locked_date.map(when).unwrap_or_else(|| "—".into())),
    ];
    let body = render(&UserPage {
        c: s.chrome("users", notice, error),
        name: cairn_domain::mail::display_name(u),
        password: password_word(u),
        mfa_required: u.flag("enable_user_portal_multifactor"),
        authority,
        delegated,
        pending: pending
            .iter()
            .map(|p| Pending { target: p.target.as_str().to_string(), due: when(p.due), mail: mail_words(&p.email) })
            .collect(),
        inputs,
        flags,
        readonly,
        groups,
        all_groups,
        events: event_rows(events),
        self_link: format!("/admin/users/{}", enc(&u.id)),
        changes: CHANGE_MENU,
        u,
    });
    s.p.html(if error.is_empty() { StatusCode::OK } else { StatusCode::BAD_REQUEST }, body)
}

/// The fields of a user form as a JSON body, only those that differ from `old` (all of the
/// non-empty ones when creating).
fn user_body(form: &Pairs, old: Option<&User>) -> Result<Map<String, Value>, Error> {
    let mut b = Map::new();
    for k in ["username", "email"] {
        let v = text(form, k);
        if old.is_none_or(|u| cell(u, k) != v) {
            b.insert(k.into(), json!(v));
        }
    }
    for (k, label, kind) in EDITABLE {
        let v = text(form, k);
        let before = old.map(|u| cell(u, k)).unwrap_or_default();
        if v == before {
            continue;
        }
        if *kind == "number" {
            if v.is_empty() {
                b.insert(k.to_string(), Value::Null);
            } else {
                let n: i64 = v.parse().map_err(|_| Error::invalid(k, format!("{label} must be a whole number")))?;
                b.insert(k.to_string(), json!(n));
            }
        } else {
            b.insert(k.to_string(), json!(v));
        }
    }
    for (k, _) in FLAGS {
        let on = get(form, k).is_some();
        if old.map(|u| u.flag(k)).unwrap_or(false) != on {
            b.insert(k.to_string(), json!(on));
        }
    }
    Ok(b)
}

pub(super) async fn details_save(
    State(st): State<Shared>,
    s: Signed,
    Path(id): Path<String>,
    Form(form): Form<Pairs>,
) -> Response {
    if let Some(r) = s.may_change(&form) {
        return r;
    }
    let old = match st.dir.get_user(&id).await {
        Ok(u) => u,
        Err(e) => return s.fail(e),
    };
    let result = match user_body(&form, Some(&old)) {
        Ok(b) if b.is_empty() => Ok(old.clone()),
        Ok(b) => st.dir.update_user(&s.ctx, &id, &Value::Object(b)).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => s.p.redirect(&format!("/admin/users/{}?m=saved", enc(&id))),
        Err(e @ (Error::Invalid(_) | Error::Conflict(_))) => {
            let (_, groups) = st.dir.groups_of_user(&id).await.unwrap_or((old.clone(), vec![]));
            let pending = st.dir.pending_schedules_of(std::slice::from_ref(&id)).await.unwrap_or_default();
            let all_groups = st.dir.list_groups(None, 1000, 0).await.map(|x| x.1).unwrap_or_default();
            details_page(&s, &old, groups, all_groups, pending, &[], "", &e.to_string(), Some(&form))
        }
        Err(e) => s.fail(e),
    }
}

pub(super) async fn details_groups(
    State(st): State<Shared>,
    s: Signed,
    Path(id): Path<String>,
    Form(form): Form<Pairs>,
) -> Response {
    if let Some(r) = s.may_change(&form) {
        return r;
    }
    let add = get(&form, "op") != Some("remove");
    let group = text(&form, "group_id");
    match st.dir.change_membership(&s.ctx, &group, &id, add).await {
        Ok(_) => s.p.redirect(&format!("/admin/users/{}?m=members", enc(&id))),
        Err(e) => s.fail(e),
    }
}

// ---- Add user -----------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "admin/new_user.html")]
struct NewUserPage<'a> {
    c: Chrome<'a>,
    inputs: Vec<Input>,
    state: String,
    default_state: &'static str,
    mail: String,
    min_length: u32,
}

fn new_inputs(form: Option<&Pairs>) -> Vec<Input> {
    let v = |k: &str| form.map(|f| text(f, k)).unwrap_or_default();
    let mut inputs = vec![
        Input { name: "username", label: "Username", kind: "text", value: v("username") },
        Input { name: "email", label: "Email", kind: "email", value: v("email") },
    ];
    inputs.extend(EDITABLE.iter().map(|(n, l, k)| Input { name: n, label: l, kind: k, value: v(n) }));
    inputs
}

async fn new_form(st: &Shared, s: &Signed, form: Option<&Pairs>, error: &str) -> Response {
    let org = match st.dir.organization().await {
        Ok(o) => o,
        Err(e) => return s.fail(e),
    };
    let default_state = org.settings.default_state(CreationSource::ManualEntry).as_str();
    let body = render(&NewUserPage {
        c: s.chrome("users", "", error),
        inputs: new_inputs(form),
        state: form.map(|f| text(f, "state")).filter(|x| !x.is_empty()).unwrap_or_else(|| default_state.to_string()),
        default_state,
        mail: form.map(|f| text(f, "mail")).unwrap_or_else(|| "yes".into()),
        min_length: org.settings.password_policy.min_length,
    });
    s.p.html(if error.is_empty() { StatusCode::OK } else { StatusCode::BAD_REQUEST }, body)
}

pub(super) async fn new_page(State(st): State<Shared>, s: Signed) -> Response {
    new_form(&st, &s, None, "").await
}

pub(super) async fn new_submit(State(st): State<Shared>, s: Signed, Form(form): Form<Pairs>) -> Response {
    if let Some(r) = s.may_change(&form) {
        return r;
    }
    let mut body = match user_body(&form, None) {
        Ok(b) => b,
        Err(e) => return new_form(&st, &s, Some(&form), &e.to_string()).await,
    };
    body.retain(|_, v| !(v.is_null() || v == &json!("") || v == &json!(false)));
    let state = text(&form, "state");
    if UserState::parse(&state).is_some() {
        body.insert("state".into(), json!(state));
    }
    let password = get(&form, "password").unwrap_or("");
    if !password.is_empty() {
        body.insert("password".into(), json!(password));
    }
    // The question asked when the user will be ACTIVATED: send the activation (or welcome)
    // e-mail now, or not.
    let mail = if get(&form, "mail") == Some("no") { MailChoice::None } else { MailChoice::Default };
    match st.dir.create_user_mail(&s.ctx, &Value::Object(body), CreationSource::ManualEntry, "manual", mail).await {
        Ok(u) => s.p.redirect(&format!("/admin/users/{}?m=created", enc(&u.id))),
        Err(e @ (Error::Invalid(_) | Error::Conflict(_))) => new_form(&st, &s, Some(&form), &e.to_string()).await,
        Err(e) => s.fail(e),
    }
}
