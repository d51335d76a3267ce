//! Import CSV (upload, dry-run preview, import with progress and per-row results), Groups,
//! Outbox and Events.

use std::time::Duration;

use askama::Template;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use cairn_directory::{Error, ImportOptions, ImportSlot, Upload, UploadKind, UploadRefusal};
use cairn_domain::EventQuery;
use cairn_domain::{Group, OutboxMessage};
use cairn_domain::{Job, JobResult, OutboxQuery};
use chrono::{NaiveDate, TimeZone, Utc};
use serde_json::{json, Value};

use super::users::{event_rows, password_word, EventRow};
use super::{enc, get, notice, query_string, render, text, when, Chrome, Pairs, Signed};
use crate::Shared;

// ---- Import CSV -------------------------------------------------------------------------------

const TEMPLATE_CSV: &str = "Username,Email,FirstName,LastName,MiddleName,Password,alternateEmail,jobTitle,\
employeeIdentifier,department,costCenter,company,employeeType,description,location,manager,State\r\n\
ada,ada@example.com,Ada,Lovelace,,,,Engineer,E-1001,Engineering,CC-1,Example Ltd,Employee,,London,,STAGED\r\n";

/// Largest file whose preview keeps it in the page for "Import now".
const PREVIEW_KEEP_BYTES: usize = 8 * 1024 * 1024;

#[derive(Template)]
#[template(path = "admin/import.html")]
struct ImportPage<'a> {
    c: Chrome<'a>,
}

struct ResultLine {
    row: i64,
    username: String,
    outcome: String,
    message: String,
    user_id: String,
}

#[derive(Template)]
#[template(path = "admin/import_job.html")]
struct JobPage<'a> {
    c: Chrome<'a>,
    job: &'a Job,
    dry_run: bool,
    update: bool,
    running: bool,
    counts: Vec<(&'static str, i64)>,
    results: Vec<ResultLine>,
    shown: i64,
    total_results: i64,
    errors_only: bool,
    csv_b64: String,
    too_big: bool,
}

pub(super) async fn import_page(s: Signed) -> Response {
    let body = render(&ImportPage { c: s.chrome("import", "", "") });
    s.html(body)
}

pub(super) async fn import_template() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"cairn-users-template.csv\""),
        ],
        TEMPLATE_CSV,
    )
        .into_response()
}

async fn wait_for(st: &Shared, id: &str) -> Result<Job, Error> {
    for _ in 0..600 {
        let job = st.dir.job(id).await?;
        if !matches!(job.status.as_str(), "queued" | "running") {
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    st.dir.job(id).await
}

/// The page an admin sees when as many imports as may run at once are running.
fn busy(st: &Shared, s: &Signed) -> Response {
    let n = st.dir.config().max_concurrent_imports;
    let body = format!(
        "{n} import{} already running, the most that run at once. Send the file again when one has \
         finished (Import CSV shows their progress).",
        if n == 1 { " is" } else { "s are" }
    );
    s.p.message(StatusCode::TOO_MANY_REQUESTS, "Imports are busy", &body)
}

fn upload_refused(s: &Signed, r: UploadRefusal) -> Response {
    match r {
        UploadRefusal::TooLarge(limit) => s.fail(Error::invalid(
            "file",
            format!("The file is larger than the limit of {} MiB.", limit / (1024 * 1024)),
        )),
        UploadRefusal::Invalid(e) | UploadRefusal::Failed(e) => s.fail(e),
    }
}

pub(super) async fn import_upload(State(st): State<Shared>, s: Signed, mut mp: Multipart) -> Response {
    // A place first: a refused upload is read and dropped, never kept.
    let Some(slot) = st.dir.try_import_slot() else {
        while let Ok(Some(mut f)) = mp.next_field().await {
            while let Ok(Some(_)) = f.chunk().await {}
        }
        return busy(&st, &s);
    };
    let mut form: Pairs = vec![];
    let mut upload: Option<Upload> = None;
    loop {
        match mp.next_field().await {
            Ok(Some(mut f)) if f.name() == Some("file") => {
                // The file goes to a spool file as it arrives, never whole into memory.
                let mut sink = st.dir.receive_upload(UploadKind::Csv);
                loop {
                    match f.chunk().await {
                        Ok(Some(c)) => {
                            if !sink.send(c).await {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => return s.fail(Error::invalid("file", format!("The upload could not be read: {e}"))),
                    }
                }
                match sink.finish().await {
                    Ok(u) => upload = Some(u),
                    Err(r) => return upload_refused(&s, r),
                }
            }
            Ok(Some(f)) => {
                let name = f.name().unwrap_or("").to_string();
                match f.bytes().await {
                    Ok(b) => form.push((name, String::from_utf8_lossy(&b).into_owned())),
                    Err(e) => return s.fail(Error::invalid("file", format!("The upload could not be read: {e}"))),
                }
            }
            Ok(None) => break,
            Err(e) => return s.fail(Error::invalid("file", format!("The upload could not be read: {e}"))),
        }
    }
    if let Some(r) = s.may_change(&form) {
        return r;
    }
    let Some(upload) = upload.filter(|u| u.bytes > 0) else {
        return s.fail(Error::invalid("file", "Choose a CSV file to upload."));
    };
    let opts = ImportOptions { dry_run: get(&form, "dry_run").is_some(), update: get(&form, "update").is_some() };
    start(&st, &s, upload, opts, slot).await
}

async fn start(st: &Shared, s: &Signed, mut upload: Upload, opts: ImportOptions, slot: ImportSlot) -> Response {
    let kept = match opts.dry_run {
        true => upload.contents_if_at_most(PREVIEW_KEEP_BYTES as u64),
        false => None,
    };
    let too_big = opts.dry_run && kept.is_none();
    let b64 = kept.map(|b| B64.encode(b)).unwrap_or_default();
    let id = match st.dir.start_csv_import(&s.ctx, upload, opts, slot).await {
        Ok(id) => id,
        Err(e) => return s.fail(e),
    };
    if !opts.dry_run {
        return s.p.redirect(&format!("/admin/import/{}", enc(&id)));
    }
    // The preview: wait for the dry run, then show its results with the file kept for
    // "Import now".
    let job = match wait_for(st, &id).await {
        Ok(j) => j,
        Err(e) => return s.fail(e),
    };
    job_page(st, s, &job, false, b64, too_big).await
}

pub(super) async fn import_run(State(st): State<Shared>, s: Signed, Form(form): Form<Pairs>) -> Response {
    if let Some(r) = s.may_change(&form) {
        return r;
    }
    let Ok(bytes) = B64.decode(text(&form, "csv_b64")) else {
        return s.fail(Error::invalid("file", "The previewed file was lost; upload it again."));
    };
    if bytes.is_empty() {
        return s.fail(Error::invalid("file", "The previewed file was lost; upload it again."));
    }
    let Some(slot) = st.dir.try_import_slot() else {
        return busy(&st, &s);
    };
    let mut sink = st.dir.receive_upload(UploadKind::Csv);
    sink.send(bytes).await;
    let upload = match sink.finish().await {
        Ok(u) => u,
        Err(r) => return upload_refused(&s, r),
    };
    let opts = ImportOptions { dry_run: false, update: get(&form, "update") == Some("true") };
    start(&st, &s, upload, opts, slot).await
}

pub(super) async fn import_job(
    State(st): State<Shared>,
    s: Signed,
    Path(id): Path<String>,
    Query(q): Query<Pairs>,
) -> Response {
    let job = match st.dir.job(&id).await {
        Ok(j) if j.kind == "csv_import" => j,
        Ok(_) => return s.fail(Error::NotFound(format!("no CSV import with id '{id}'"))),
        Err(e) => return s.fail(e),
    };
    job_page(&st, &s, &job, get(&q, "show") == Some("errors"), String::new(), false).await
}

async fn job_page(st: &Shared, s: &Signed, job: &Job, errors_only: bool, csv_b64: String, too_big: bool) -> Response {
    let outcome = errors_only.then_some("error");
    let (total_results, results) = match st.dir.job_results(&job.id, outcome, 1000, 0).await {
        Ok(x) => x,
        Err(e) => return s.fail(e),
    };
    let n = |k: &str| job.counts.get(k).and_then(Value::as_i64).unwrap_or(0);
    let counts =
        vec![("Created", n("created")), ("Updated", n("updated")), ("Exists", n("exists")), ("Errors", n("error"))];
    let results: Vec<ResultLine> = results
        .into_iter()
        .map(|r: JobResult| ResultLine {
            // Row numbers count CSV records with the header as row 1 (§4.3).
            row: r.seq,
            username: r.username.unwrap_or_default(),
            outcome: r.outcome,
            message: r.message.unwrap_or_default(),
            user_id: r.user_id.unwrap_or_default(),
        })
        .collect();
    let body = render(&JobPage {
        c: s.chrome("import", "", ""),
        job,
        dry_run: job.params.get("dry_run").and_then(Value::as_bool).unwrap_or(false),
        update: job.params.get("update").and_then(Value::as_bool).unwrap_or(false),
        running: matches!(job.status.as_str(), "queued" | "running"),
        counts,
        shown: results.len() as i64,
        results,
        total_results,
        errors_only,
        csv_b64,
        too_big,
    });
    s.html(body)
}

// ---- Groups -----------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "admin/groups.html")]
struct GroupsPage<'a> {
    c: Chrome<'a>,
    groups: Vec<Group>,
    total: i64,
    name: String,
}

struct Member {
    id: String,
    username: String,
    email: String,
    state: String,
    password: &'static str,
}

#[derive(Template)]
#[template(path = "admin/group.html")]
struct GroupPage<'a> {
    c: Chrome<'a>,
    g: &'a Group,
    members: Vec<Member>,
    total: i64,
}

pub(super) async fn groups(State(st): State<Shared>, s: Signed, Query(q): Query<Pairs>) -> Response {
    let name = text(&q, "name");
    let filter = Some(name.as_str()).filter(|n| !n.is_empty());
    match st.dir.list_groups(filter, 500, 0).await {
        Ok((total, groups)) => {
            let body = render(&GroupsPage { c: s.chrome("groups", notice(&q), ""), groups, total, name });
            s.html(body)
        }
        Err(e) => s.fail(e),
    }
}

pub(super) async fn group_create(State(st): State<Shared>, s: Signed, Form(form): Form<Pairs>) -> Response {
    if let Some(r) = s.may_change(&form) {
        return r;
    }
    let mut body = json!({ "name": text(&form, "name") });
    let d = text(&form, "description");
    if !d.is_empty() {
        body["description"] = json!(d);
    }
    match st.dir.create_group(&s.ctx, &body).await {
        Ok(g) => s.p.redirect(&format!("/admin/groups/{}?m=group", enc(&g.id))),
        Err(e) => s.fail(e),
    }
}

pub(super) async fn group(
    State(st): State<Shared>,
    s: Signed,
    Path(id): Path<String>,
    Query(q): Query<Pairs>,
) -> Response {
    let g = match st.dir.get_group(&id).await {
        Ok(g) => g,
        Err(e) => return s.fail(e),
    };
    let (total, ids) = match st.dir.group_members(&id, 200, 0).await {
        Ok(x) => x,
        Err(e) => return s.fail(e),
    };
    let mut members = vec![];
    for uid in ids {
        if let Ok(u) = st.dir.get_user(&uid).await {
            members.push(Member {
                id: u.id.clone(),
                username: u.username.clone(),
                email: u.email.clone(),
                state: u.state.as_str().into(),
                password: password_word(&u),
            });
        }
    }
    let body = render(&GroupPage { c: s.chrome("groups", notice(&q), ""), g: &g, members, total });
    s.html(body)
}

pub(super) async fn group_members(
    State(st): State<Shared>,
    s: Signed,
    Path(id): Path<String>,
    Form(form): Form<Pairs>,
) -> Response {
    if let Some(r) = s.may_change(&form) {
        return r;
    }
    let add = get(&form, "op") != Some("remove");
    let user_id = if add {
        // Added by username or e-mail.
        let who = text(&form, "user").to_lowercase();
        let field = if who.contains('@') { "email" } else { "username" };
        let q = cairn_domain::query::ListQuery::from_pairs(&[
            ("filter".into(), format!("{field}:$eq:{who}")),
            ("limit".into(), "1".into()),
        ]);
        let found = match q {
            Ok(q) => st.dir.list_users(&q).await.ok().and_then(|(_, u)| u.into_iter().next()),
            Err(_) => None,
        };
        match found {
            Some(u) => u.id,
            None => return s.fail(Error::NotFound(format!("no user with {field} '{who}'"))),
        }
    } else {
        text(&form, "user_id")
    };
    match st.dir.change_membership(&s.ctx, &id, &user_id, add).await {
        Ok(_) => s.p.redirect(&format!("/admin/groups/{}?m=members", enc(&id))),
        Err(e) => s.fail(e),
    }
}

// ---- Outbox -----------------------------------------------------------------------------------

struct MessageRow {
    created: String,
    kind: String,
    to: String,
    subject: String,
    status: String,
    attempts: i64,
    error: String,
    user_id: String,
    /// The plain-text body: without SMTP this is how an admin hands out an activation link.
    /// Read-only admins see it with its one-time links removed.
    text: String,
}

#[derive(Template)]
#[template(path = "admin/outbox.html")]
struct OutboxPage<'a> {
    c: Chrome<'a>,
    rows: Vec<MessageRow>,
    total: i64,
    to: String,
    kind: String,
    status: String,
    prev: String,
    next: String,
}

fn pager(base: &str, q: &Pairs, keys: &[&str], skip: i64, limit: i64, shown: usize, total: i64) -> (String, String) {
    let kept: Vec<(String, String)> =
        q.iter().filter(|(k, v)| keys.contains(&k.as_str()) && !v.is_empty()).cloned().collect();
    let at = |n: i64| {
        let mut v = kept.clone();
        v.push(("skip".into(), n.to_string()));
        format!("{base}?{}", query_string(&v))
    };
    let prev = if skip > 0 { at((skip - limit).max(0)) } else { String::new() };
    let next = if skip + (shown as i64) < total { at(skip + limit) } else { String::new() };
    (prev, next)
}

pub(super) async fn outbox(State(st): State<Shared>, s: Signed, Query(q): Query<Pairs>) -> Response {
    let opt = |k: &str| Some(text(&q, k)).filter(|v| !v.is_empty());
    let skip: i64 = get(&q, "skip").and_then(|v| v.parse().ok()).filter(|n| *n >= 0).unwrap_or(0);
    let oq = OutboxQuery {
        to: opt("to").map(|t| t.to_lowercase()),
        kind: opt("type"),
        status: opt("status"),
        user_id: opt("user_id"),
        limit: 100,
        skip,
    };
    let (total, msgs) = match st.dir.list_messages(&oq).await {
        Ok(x) => x,
        Err(e) => return s.fail(e),
    };
    let (prev, next) = pager("/admin/outbox", &q, &["to", "type", "status", "user_id"], skip, 100, msgs.len(), total);
    let rows = msgs
        .iter()
        .map(|m: &OutboxMessage| MessageRow {
            created: when(m.created),
            kind: m.kind.clone(),
            to: m.to.clone(),
            subject: m.subject.clone(),
            status: m.status.clone(),
            attempts: m.attempts,
            error: m.last_error.clone().unwrap_or_default(),
            user_id: m.user_id.clone().unwrap_or_default(),
            text: if s.admin.role == cairn_domain::Role::Admin {
                m.text.clone()
            } else {
                cairn_directory::scrub_tokens(&m.text)
            },
        })
        .collect();
    let body = render(&OutboxPage {
        c: s.chrome("outbox", "", ""),
        rows,
        total,
        to: text(&q, "to"),
        kind: text(&q, "type"),
        status: text(&q, "status"),
        prev,
        next,
    });
    s.html(body)
}

// ---- Events -----------------------------------------------------------------------------------

struct EventLine {
    e: EventRow,
    target: String,
    target_link: String,
    client: String,
}

#[derive(Template)]
#[template(path = "admin/events.html")]
struct EventsPage<'a> {
    c: Chrome<'a>,
    rows: Vec<EventLine>,
    total: i64,
    action: String,
    target: String,
    since: String,
    until: String,
    prev: String,
    next: String,
}

fn day(s: &str, end: bool) -> Result<Option<chrono::DateTime<Utc>>, Error> {
    if s.is_empty() {
        return Ok(None);
    }
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| Error::invalid("date", "use a date such as 2026-01-31"))?;
    let t = if end { d.and_hms_opt(23, 59, 59) } else { d.and_hms_opt(0, 0, 0) }.expect("valid time");
    Ok(Some(Utc.from_utc_datetime(&t)))
}

pub(super) async fn events(State(st): State<Shared>, s: Signed, Query(q): Query<Pairs>) -> Response {
    let skip: i64 = get(&q, "skip").and_then(|v| v.parse().ok()).filter(|n| *n >= 0).unwrap_or(0);
    let (since, until) = match (day(&text(&q, "since"), false), day(&text(&q, "until"), true)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return s.fail(e),
    };
    let eq = EventQuery {
        target_id: Some(text(&q, "target")).filter(|v| !v.is_empty()),
        action: Some(text(&q, "action")).filter(|v| !v.is_empty()),
        since,
        until,
        limit: 100,
        skip,
    };
    let (total, events) = match st.dir.list_events(&eq).await {
        Ok(x) => x,
        Err(e) => return s.fail(e),
    };
    let (prev, next) =
        pager("/admin/events", &q, &["target", "action", "since", "until"], skip, 100, events.len(), total);
    let rows = event_rows(&events)
        .into_iter()
        .zip(events.iter())
        .map(|(r, e)| EventLine {
            target: e.target_name.clone().or_else(|| e.target_id.clone()).unwrap_or_default(),
            target_link: match (&e.target_kind, &e.target_id) {
                (Some(k), Some(id)) if k == "user" => format!("/admin/users/{}", enc(id)),
                (Some(k), Some(id)) if k == "group" => format!("/admin/groups/{}", enc(id)),
                _ => String::new(),
            },
            client: e.client_addr.clone().unwrap_or_default(),
            e: r,
        })
        .collect();
    let body = render(&EventsPage {
        c: s.chrome("events", "", ""),
        rows,
        total,
        action: text(&q, "action"),
        target: text(&q, "target"),
        since: text(&q, "since"),
        until: text(&q, "until"),
        prev,
        next,
    });
    s.html(body)
}
