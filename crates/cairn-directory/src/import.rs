//! CSV import and bulk jobs (§6, §4.2): each record validated and applied on its own, in
//! batches for speed; results written with the users they describe; jobs that a crash
//! interrupted are marked so, and re-running the same input converges.

use std::collections::HashMap;

use cairn_domain::csv_import::{self, Header, Parsed};
use cairn_domain::lifecycle::MailChoice;
use cairn_domain::user::UserInput;
use cairn_domain::{CreationSource, User};
use cairn_store::{Job, JobResult, JobUpdate};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::users::creation_changes;
use crate::{Ctx, Directory};

/// Records per transaction.
const BATCH: usize = 1000;
/// Largest CSV upload, in bytes.
pub const MAX_IMPORT_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, Clone, Copy, Default)]
pub struct ImportOptions {
    pub dry_run: bool,
    pub update: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub created: i64,
    pub updated: i64,
    pub exists: i64,
    pub error: i64,
}

impl Counts {
    fn add(&mut self, outcome: &str) {
        match outcome {
            "created" => self.created += 1,
            "updated" => self.updated += 1,
            "exists" => self.exists += 1,
            _ => self.error += 1,
        }
    }
    pub fn json(&self) -> Value {
        serde_json::to_value(self).expect("counts serialize")
    }
}

/// Called with (records done, records in all) as the import goes.
pub type Progress<'a> = &'a (dyn Fn(usize, usize) + Send + Sync);

/// How CSV cells become records (for imports; JSON bulk jobs arrive parsed).
struct Mapping<'a> {
    header: &'a Header,
    groups: &'a HashMap<String, String>,
}

/// One record on its way: where it is from, what it asks, what became of it.
struct Item {
    seq: usize,
    username: Option<String>,
    parsed: Option<Parsed>,
    result: Option<(String, Option<String>, String)>, // outcome, user id, message
    /// Its result row is already stored (with the user it created).
    written: bool,
    /// CSV cells not yet mapped: records are mapped batch by batch, so memory holds the raw
    /// cells of the file, not every parsed record at once.
    cells: Option<csv::StringRecord>,
    /// (what, normalized value) of the unique keys, for duplicates inside the file.
    keys: Vec<(&'static str, String)>,
}

impl Item {
    fn done(&mut self, outcome: &str, user_id: Option<String>, message: impl Into<String>) {
        self.result = Some((outcome.into(), user_id, message.into()));
    }
}

impl Directory {
    /// Creates a job row (queued) and returns its id.
    pub async fn create_job(&self, ctx: &Ctx, kind: &str, params: Value) -> Result<String> {
        let id = self.new_id();
        let now = self.now();
        let mut tx = self.store().begin().await?;
        tx.db()
            .insert_job(&Job {
                id: id.clone(),
                kind: kind.into(),
                status: "queued".into(),
                created: now,
                updated: now,
                created_by: json!({ "actor": ctx.actor, "source": ctx.source, "client_addr": ctx.client_addr }),
                params,
                total: 0,
                processed: 0,
                counts: Counts::default().json(),
                message: None,
            })
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn job(&self, id: &str) -> Result<Job> {
        let mut c = self.store().read().await?;
        c.db().get_job(id).await?.ok_or_else(|| Error::NotFound(format!("no job with id '{id}'")))
    }

    pub async fn job_results(
        &self,
        id: &str,
        outcome: Option<&str>,
        limit: i64,
        skip: i64,
    ) -> Result<(i64, Vec<JobResult>)> {
        let mut c = self.store().read().await?;
        Ok(c.db().job_results(id, outcome, limit, skip).await?)
    }

    /// Marks jobs left queued or running by a stopped process as interrupted (at start).
    /// With SQLite only this process runs jobs, so every unfinished one is stale; with
    /// PostgreSQL other processes may be working, so only jobs silent for 5 minutes are.
    pub async fn interrupt_stale_jobs(&self) -> Result<u64> {
        let now = self.now();
        let cutoff = match self.store().backend() {
            cairn_store::Backend::Sqlite => now,
            cairn_store::Backend::Postgres => now - chrono::Duration::minutes(5),
        };
        let mut tx = self.store().begin().await?;
        let n = tx.db().interrupt_jobs(now, cutoff).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn finish_job(
        &self,
        id: &str,
        status: &str,
        done: usize,
        total: usize,
        counts: &Counts,
        message: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.store().begin().await?;
        tx.db()
            .update_job(
                id,
                &JobUpdate { status, processed: done as i64, total: total as i64, counts: &counts.json(), message },
                self.now(),
            )
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Starts a CSV import in the background; returns the job id at once.
    pub async fn start_csv_import(&self, ctx: &Ctx, bytes: Vec<u8>, opts: ImportOptions) -> Result<String> {
        if bytes.is_empty() {
            return Err(Error::invalid("body", "the CSV file is empty"));
        }
        csv_import::check_line_lengths(&bytes).map_err(|m| Error::invalid("body", m))?;
        let job = self.create_job(ctx, "csv_import", json!({ "dry_run": opts.dry_run, "update": opts.update })).await?;
        let (dir, ctx, id) = (self.clone(), ctx.clone(), job.clone());
        tokio::spawn(async move {
            if let Err(e) = dir.run_csv_import(&ctx, &id, &bytes, opts, &|_, _| {}).await {
                tracing::error!(job = %id, error = %e, "import failed");
            }
        });
        Ok(job)
    }

    /// Runs a CSV import for an existing job, reporting progress; returns the counts.
    pub async fn run_csv_import(
        &self,
        ctx: &Ctx,
        job: &str,
        bytes: &[u8],
        opts: ImportOptions,
        progress: Progress<'_>,
    ) -> Result<Counts> {
        let checked = csv_import::check_line_lengths(bytes).and_then(|_| csv_import::read(bytes));
        let (header, records) = match checked {
            Ok(x) => x,
            Err(m) => {
                self.finish_job(job, "failed", 0, 0, &Counts::default(), Some(&m)).await?;
                return Err(Error::invalid("file", m));
            }
        };
        let groups = self.group_names().await?;
        let unknown = header.unknown(&groups);
        let note = (!unknown.is_empty()).then(|| format!("ignored unknown columns: {}", unknown.join(", ")));
        let col = |name: &'static str| header.columns.iter().position(|c| *c == csv_import::Column::Field(name));
        let (ucol, ecol, icol) = (col("username"), col("email"), col("employeeIdentifier"));
        let cell = |cells: &csv::StringRecord, i: Option<usize>| {
            i.and_then(|i| cells.get(i)).map(|c| c.trim().to_lowercase()).filter(|c| !c.is_empty())
        };
        let items: Vec<Item> = records
            .into_iter()
            .map(|(row, cells)| {
                let mut item = Item {
                    seq: row,
                    username: None,
                    parsed: None,
                    result: None,
                    written: false,
                    cells: None,
                    keys: vec![],
                };
                match cells {
                    Ok(cells) => {
                        item.username = cell(&cells, ucol);
                        item.keys = [
                            ("username", cell(&cells, ucol)),
                            ("email", cell(&cells, ecol)),
                            (
                                "employeeIdentifier",
                                cells
                                    .get(icol.unwrap_or(usize::MAX))
                                    .map(|c| c.trim().to_string())
                                    .filter(|c| !c.is_empty()),
                            ),
                        ]
                        .into_iter()
                        .filter_map(|(w, v)| v.map(|v| (w, v)))
                        .collect();
                        item.cells = Some(cells);
                    }
                    Err(m) => item.done("error", None, m),
                }
                item
            })
            .collect();
        let source = CreationSource::CsvImport;
        let mapping = Mapping { header: &header, groups: &groups };
        self.run_items(ctx, job, items, opts, source, "csv", MailChoice::Default, note, Some(mapping), progress).await
    }

    /// Starts a JSON bulk job (`POST|PATCH /api/v2/bulk/users`).
    pub async fn start_bulk_users(
        &self,
        ctx: &Ctx,
        body: Vec<Value>,
        update: bool,
        source: CreationSource,
        origin: String,
        mail: MailChoice,
    ) -> Result<String> {
        let kind = if update { "bulk_update" } else { "bulk_create" };
        let job = self.create_job(ctx, kind, json!({ "update": update, "creation_source": origin })).await?;
        let (dir, ctx, id) = (self.clone(), ctx.clone(), job.clone());
        tokio::spawn(async move {
            let r = if update {
                dir.run_bulk_update(&ctx, &id, body).await
            } else {
                dir.run_bulk_create(&ctx, &id, body, source, &origin, mail).await
            };
            if let Err(e) = r {
                tracing::error!(job = %id, error = %e, "bulk job failed");
            }
        });
        Ok(job)
    }

    async fn run_bulk_create(
        &self,
        ctx: &Ctx,
        job: &str,
        body: Vec<Value>,
        source: CreationSource,
        origin: &str,
        mail: MailChoice,
    ) -> Result<Counts> {
        let items = body
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let mut item = Item {
                    seq: i + 1,
                    username: v.get("username").and_then(Value::as_str).map(str::to_lowercase),
                    parsed: None,
                    result: None,
                    written: false,
                    cells: None,
                    keys: vec![],
                };
                match cairn_domain::user::parse_user_input(&v, true) {
                    Ok(input) => {
                        item.keys = [
                            ("username", input.username.clone()),
                            ("email", input.email.clone()),
                            (
                                "employeeIdentifier",
                                input.profile.get("employeeIdentifier").and_then(Value::as_str).map(String::from),
                            ),
                        ]
                        .into_iter()
                        .filter_map(|(w, v)| v.map(|v| (w, v)))
                        .collect();
                        item.parsed = Some(Parsed { input, groups: vec![], manager: None });
                    }
                    Err(e) => item.done("error", None, e.to_string()),
                }
                item
            })
            .collect();
        let ctx = Ctx { source: "bulk_api".into(), ..ctx.clone() };
        self.run_items(&ctx, job, items, ImportOptions::default(), source, origin, mail, None, None, &|_, _| {}).await
    }

    /// Updates by `id` (JumpCloud `bulk-user-update`), each user in its own transaction.
    async fn run_bulk_update(&self, ctx: &Ctx, job: &str, body: Vec<Value>) -> Result<Counts> {
        let ctx = Ctx { source: "bulk_api".into(), ..ctx.clone() };
        let total = body.len();
        let mut counts = Counts::default();
        self.finish_job(job, "running", 0, total, &counts, None).await?;
        let mut results = Vec::with_capacity(total);
        for (i, mut v) in body.into_iter().enumerate() {
            let id = v.as_object_mut().and_then(|o| o.remove("id")).and_then(|x| x.as_str().map(String::from));
            let (outcome, uid, username, msg) = match id {
                None => ("error", None, None, "each entry needs the \"id\" of the user to update".to_string()),
                Some(id) => match cairn_domain::user::parse_user_input(&v, false).map_err(Error::from) {
                    Ok(input) => match self.update_user_from(&ctx, &id, input).await {
                        Ok((u, true)) => ("updated", Some(u.id), Some(u.username), String::new()),
                        Ok((u, false)) => ("exists", Some(u.id), Some(u.username), "nothing to change".to_string()),
                        Err(e) => ("error", Some(id), None, e.to_string()),
                    },
                    Err(e) => ("error", Some(id), None, e.to_string()),
                },
            };
            counts.add(outcome);
            results.push(JobResult {
                seq: i as i64 + 1,
                username,
                user_id: uid,
                outcome: outcome.into(),
                message: Some(msg).filter(|m| !m.is_empty()),
            });
        }
        let mut tx = self.store().begin().await?;
        tx.db().insert_job_results(job, &results).await?;
        tx.db()
            .update_job(
                job,
                &JobUpdate {
                    status: "done",
                    processed: total as i64,
                    total: total as i64,
                    counts: &counts.json(),
                    message: None,
                },
                self.now(),
            )
            .await?;
        tx.commit().await?;
        Ok(counts)
    }

    /// Group names, lowercase → as named.
    async fn group_names(&self) -> Result<HashMap<String, String>> {
        let (_, groups) = self.list_groups(None, i64::MAX, 0).await?;
        Ok(groups.into_iter().map(|g| (g.name.to_lowercase(), g.name)).collect())
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_items(
        &self,
        ctx: &Ctx,
        job: &str,
        mut items: Vec<Item>,
        opts: ImportOptions,
        source: CreationSource,
        origin: &str,
        mail: MailChoice,
        note: Option<String>,
        mapping: Option<Mapping<'_>>,
        progress: Progress<'_>,
    ) -> Result<Counts> {
        let total = items.len();
        let mut counts = Counts::default();
        self.finish_job(job, "running", 0, total, &counts, note.as_deref()).await?;
        let org = self.organization().await?;
        let group_ids: HashMap<String, String> = {
            let (_, groups) = self.list_groups(None, i64::MAX, 0).await?;
            groups.into_iter().map(|g| (g.name, g.id)).collect()
        };
        // Duplicates inside the file: the later record is the error.
        let mut seen: HashMap<(&'static str, String), usize> = HashMap::new();
        for it in items.iter_mut().filter(|it| it.result.is_none()) {
            // Update mode matches by username only: the other keys may repeat.
            let keys: Vec<(&'static str, String)> =
                it.keys.drain(..).filter(|(w, _)| !opts.update || *w == "username").collect();
            if let Some(((what, v), first)) = keys.iter().find_map(|k| seen.get(k).map(|f| (k, *f))) {
                it.parsed = None;
                it.cells = None;
                it.done("error", None, format!("duplicate {what} '{v}': already in row {first} of this file"));
                continue;
            }
            for k in keys {
                seen.insert(k, it.seq);
            }
        }
        drop(seen);
        let mut done = 0;
        let mut new_ids: HashMap<String, String> = HashMap::new();
        for chunk in items.chunks_mut(BATCH) {
            let n = chunk.len();
            if let Some(m) = &mapping {
                for it in chunk.iter_mut() {
                    if let Some(cells) = it.cells.take() {
                        match csv_import::map_record(m.header, &cells, m.groups, !opts.update) {
                            Ok(p) => it.parsed = Some(p),
                            Err(e) => it.done("error", None, e),
                        }
                    }
                }
            }
            self.run_batch(ctx, job, chunk, opts, source, origin, &mail, &org, &group_ids, &mut new_ids).await?;
            for it in chunk.iter() {
                counts.add(it.result.as_ref().map(|r| r.0.as_str()).unwrap_or("error"));
            }
            done += n;
            progress(done, total);
            let mut tx = self.store().begin().await?;
            tx.db()
                .update_job(
                    job,
                    &JobUpdate {
                        status: "running",
                        processed: done as i64,
                        total: total as i64,
                        counts: &counts.json(),
                        message: note.as_deref(),
                    },
                    self.now(),
                )
                .await?;
            tx.commit().await?;
        }
        self.finish_job(job, "done", done, total, &counts, note.as_deref()).await?;
        Ok(counts)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_batch(
        &self,
        ctx: &Ctx,
        job: &str,
        chunk: &mut [Item],
        opts: ImportOptions,
        source: CreationSource,
        origin: &str,
        mail: &MailChoice,
        org: &crate::Organization,
        group_ids: &HashMap<String, String>,
        new_ids: &mut HashMap<String, String>,
    ) -> Result<()> {
        // What already exists, in two queries for the whole batch.
        let usernames: Vec<String> =
            chunk.iter().filter(|i| i.parsed.is_some()).filter_map(|i| i.username.clone()).collect();
        let emails: Vec<String> = chunk.iter().filter_map(|i| i.parsed.as_ref()?.input.email.clone()).collect();
        let managers: Vec<String> =
            chunk.iter().filter_map(|i| i.parsed.as_ref()?.manager.clone()).map(|m| m.to_lowercase()).collect();
        let emp: Vec<String> = chunk
            .iter()
            .filter_map(|i| i.parsed.as_ref()?.input.profile.get("employeeIdentifier")?.as_str().map(String::from))
            .collect();
        let (existing, manager_users, emp_taken) = {
            let mut c = self.store().read().await?;
            let existing = c.db().users_matching(&usernames, &emails).await?;
            let mut m = c.db().users_matching(&managers, &[]).await?;
            for id in managers.iter().filter(|x| cairn_domain::id::is_object_id(x)) {
                if let Some(u) = c.db().get_user(id).await? {
                    m.push(u);
                }
            }
            let e = c.db().employee_ids_taken(&emp).await?;
            (existing, m, e)
        };
        let by_name: HashMap<&str, &User> = existing.iter().map(|u| (u.username.as_str(), u)).collect();
        let by_email: HashMap<&str, &User> = existing.iter().map(|u| (u.email.as_str(), u)).collect();
        let emp_owner: HashMap<&str, &str> = emp_taken.iter().map(|(e, u)| (e.as_str(), u.as_str())).collect();
        let manager_id = |m: &str, new_ids: &HashMap<String, String>| -> Option<String> {
            let m = m.to_lowercase();
            manager_users
                .iter()
                .find(|u| u.username == m || u.id == m)
                .map(|u| u.id.clone())
                .or_else(|| new_ids.get(&m).cloned())
        };

        let mut creates: Vec<(usize, User, Vec<String>)> = vec![];
        let mut updates: Vec<(usize, String, UserInput, Vec<String>)> = vec![];
        for (idx, it) in chunk.iter_mut().enumerate() {
            let Some(p) = it.parsed.take() else { continue };
            let uname = it.username.clone().unwrap_or_default();
            let mut input = p.input;
            if let Some(m) = &p.manager {
                match manager_id(m, new_ids) {
                    Some(id) => {
                        input.profile.insert("manager".into(), json!(id));
                    }
                    None => {
                        it.done("error", None, format!("column manager: no user '{m}'"));
                        continue;
                    }
                }
            }
            let groups: Vec<String> = p.groups.iter().filter_map(|g| group_ids.get(g).cloned()).collect();
            if opts.update {
                match by_name.get(uname.as_str()) {
                    None => {
                        it.done("error", None, format!("no user with username '{uname}' (update mode never creates)"))
                    }
                    Some(u) => {
                        if let Some(e) = &input.email {
                            if let Some(other) = by_email.get(e.as_str()).filter(|o| o.id != u.id) {
                                it.done(
                                    "error",
                                    Some(u.id.clone()),
                                    format!("column Email: '{e}' is already used by {}", other.username),
                                );
                                continue;
                            }
                        }
                        updates.push((idx, u.id.clone(), input, groups));
                    }
                }
                continue;
            }
            if let Some(u) = by_name.get(uname.as_str()) {
                it.done("exists", Some(u.id.clone()), format!("{uname} already exists"));
                continue;
            }
            let email = input.email.clone().unwrap_or_default();
            if let Some(other) = by_email.get(email.as_str()) {
                it.done("error", None, format!("column Email: '{email}' is already used by {}", other.username));
                continue;
            }
            if let Some(Value::String(e)) = input.profile.get("employeeIdentifier") {
                if let Some(owner) = emp_owner.get(e.as_str()) {
                    it.done("error", None, format!("column employeeIdentifier: '{e}' is already used by {owner}"));
                    continue;
                }
            }
            let hash = match &input.password {
                Some(pw) => match self.checked_hash(org, Some(pw)).await {
                    Ok(h) => h,
                    Err(e) => {
                        it.done("error", None, format!("column Password: {}", first_message(&e)));
                        continue;
                    }
                },
                None => None,
            };
            match self.new_user(org, input, source, origin, hash) {
                Ok(u) => {
                    new_ids.insert(u.username.clone(), u.id.clone());
                    creates.push((idx, u, groups));
                }
                Err(e) => it.done("error", None, e.to_string()),
            }
        }

        if opts.dry_run {
            for (idx, u, _) in &creates {
                chunk[*idx].done("created", None, format!("dry run: {} would be created ({})", u.username, u.state));
            }
            for (idx, id, _, _) in &updates {
                chunk[*idx].done("updated", Some(id.clone()), "dry run: would be updated");
            }
            return self.write_results(job, chunk).await;
        }

        for (idx, id, input, groups) in updates {
            match self.update_user_from(ctx, &id, input).await {
                Ok((u, changed)) => {
                    let added = self.join_groups(ctx, &u.id, &groups).await?;
                    if changed || added > 0 {
                        chunk[idx].done("updated", Some(u.id), "");
                    } else {
                        chunk[idx].done("exists", Some(u.id), "no change");
                    }
                }
                Err(e) => chunk[idx].done("error", Some(id), e.to_string()),
            }
        }

        if !creates.is_empty() {
            let rows: Vec<(usize, User, Vec<String>)> =
                creates.iter().map(|(i, u, g)| (chunk[*i].seq, u.clone(), g.clone())).collect();
            match self.write_creates(ctx, job, &rows, origin, mail).await {
                Ok(()) => {
                    for (idx, u, _) in &creates {
                        chunk[*idx].done("created", Some(u.id.clone()), "");
                        chunk[*idx].written = true;
                    }
                }
                Err(e) => {
                    // Something in the batch was refused (a race with another writer): apply
                    // the records one by one so only the bad one fails.
                    tracing::info!(error = %e, "batch refused; retrying record by record");
                    for (idx, u, groups) in &creates {
                        match self
                            .write_creates(ctx, job, &[(chunk[*idx].seq, u.clone(), groups.clone())], origin, mail)
                            .await
                        {
                            Ok(()) => {
                                chunk[*idx].done("created", Some(u.id.clone()), "");
                                chunk[*idx].written = true;
                            }
                            Err(e) => chunk[*idx].done("error", None, e.to_string()),
                        }
                    }
                }
            }
        }
        self.write_results(job, chunk).await
    }

    /// Inserts users (with their record numbers) and their memberships, events, mail and
    /// job results in one transaction.
    async fn write_creates(
        &self,
        ctx: &Ctx,
        job: &str,
        creates: &[(usize, User, Vec<String>)],
        origin: &str,
        mail: &MailChoice,
    ) -> Result<()> {
        let users: Vec<User> = creates.iter().map(|(_, u, _)| u.clone()).collect();
        let now = self.now();
        let mut tx = self.store().begin().await?;
        tx.db().insert_users(&users).await?;
        let pairs: Vec<(String, String)> =
            creates.iter().flat_map(|(_, u, gs)| gs.iter().map(move |g| (g.clone(), u.id.clone()))).collect();
        tx.db().add_members(&pairs, now).await?;
        let mut events = Vec::with_capacity(users.len());
        // Mail for the whole batch is prepared in memory and written with a few statements.
        let org = crate::org_of(&mut tx.db()).await?.settings.name;
        let mut outgoing = crate::credentials::Outgoing::default();
        for u in &users {
            let mut detail = json!({ "job_id": job, "state": u.state, "creationSource": origin });
            if let Some((kind, to)) = cairn_domain::mail::on_activation(u, mail) {
                self.prepare_mail(&mut outgoing, &org, kind, u, &to);
                detail["mail"] = json!({ "type": kind, "to": to });
            }
            events.push(self.event(
                ctx,
                "user_create",
                Some(("user", &u.id, &u.username)),
                creation_changes(u),
                detail,
            ));
        }
        self.send_prepared(&mut tx.db(), outgoing).await?;
        tx.db().insert_events(&events).await?;
        let results: Vec<JobResult> = creates
            .iter()
            .map(|(seq, u, _)| JobResult {
                seq: *seq as i64,
                username: Some(u.username.clone()),
                user_id: Some(u.id.clone()),
                outcome: "created".into(),
                message: None,
            })
            .collect();
        tx.db().insert_job_results(job, &results).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn join_groups(&self, ctx: &Ctx, user_id: &str, groups: &[String]) -> Result<usize> {
        let mut n = 0;
        for g in groups {
            if self.change_membership(ctx, g, user_id, true).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn write_results(&self, job: &str, chunk: &[Item]) -> Result<()> {
        let results: Vec<JobResult> = chunk
            .iter()
            .filter(|it| !it.written)
            .map(|it| {
                let (outcome, id, msg) =
                    it.result.clone().unwrap_or_else(|| ("error".into(), None, "not processed".into()));
                JobResult {
                    seq: it.seq as i64,
                    username: it.username.clone(),
                    user_id: id,
                    outcome,
                    message: Some(msg).filter(|m| !m.is_empty()),
                }
            })
            .collect();
        let mut tx = self.store().begin().await?;
        tx.db().insert_job_results(job, &results).await?;
        tx.commit().await?;
        Ok(())
    }
}

fn first_message(e: &Error) -> String {
    match e {
        Error::Invalid(v) => v.first().map(|f| f.message.clone()).unwrap_or_default(),
        other => other.to_string(),
    }
}
