//! CSV import and bulk jobs (§6, §4.2): each record validated and applied on its own, in
//! batches for speed; results written with the users they describe; jobs that a crash
//! interrupted are marked so, and re-running the same input converges.

use std::collections::HashMap;
use std::io::{BufReader, Read, Seek, SeekFrom};

use cairn_domain::csv_import::{self, Header, Parsed};
use cairn_domain::lifecycle::MailChoice;
use cairn_domain::user::UserInput;
use cairn_domain::{CreationSource, User};
use cairn_store::{Job, JobResult, JobUpdate, UserKeys};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::upload::{entries_of, ImportSlot, Upload};
use crate::{Ctx, Directory};

/// Records built and written as one unit.
const BATCH: usize = 2_000;
/// The first batch is smaller, so that the writer starts sooner.
const FIRST_BATCH: usize = 200;
/// Batches built ahead of the one being written (each about 6 MiB): a commit pauses the writer
/// for a moment, and the thread building batches keeps on meanwhile. For 100,000 records,
/// 1 → 6 → 12: 2.33 → 2.21 → 2.00 s; 12 took an import sending activation mail (whose writer
/// is slower, so the queue stays full) to 207 MiB, 6 kept it at 176. Since a batch carries its
/// mail's statements too, 6 took a server importing 1,000,000 users to 202 MiB.
const BUILT_AHEAD: usize = 4;
/// A transaction spans batches until it holds this many records or has been open this long.
/// Every commit rewrites each index page the transaction touched, and usernames, e-mails and
/// names arrive in no order, so nearly every batch touches every page of their indexes: fewer
/// commits write far less. The time bound keeps other writers' waits short.
const COMMIT_RECORDS: usize = 50_000;
const COMMIT_AFTER: std::time::Duration = std::time::Duration::from_millis(1_000);
/// Fewest records for which an import into a directory with no more users than that rebuilds
/// the search indexes at its end (`cairn_store::USER_SEARCH_INDEXES`) rather than updating them.
const REINDEX_MIN_RECORDS: usize = 10_000;
/// Largest CSV upload, in bytes.
pub const MAX_IMPORT_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, Clone, Copy, Default)]
pub struct ImportOptions {
    pub dry_run: bool,
    pub update: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    fn merge(&mut self, o: &Counts) {
        self.created += o.created;
        self.updated += o.updated;
        self.exists += o.exists;
        self.error += o.error;
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
    /// CSV cells not yet mapped: records are mapped batch by batch, so memory holds the raw
    /// cells of the file, not every parsed record at once.
    cells: Option<csv::StringRecord>,
    /// The normalized unique keys (see [`KEYS`]), for duplicates inside the file.
    keys: Keys,
    /// Update mode: the key column (`username`, `email`, `employeeIdentifier`) and this
    /// record's value of it, which finds the user to update.
    key: Option<(&'static str, String)>,
}

/// A key field's column name in JumpCloud's template.
fn header_name(field: &str) -> &'static str {
    match field {
        "username" => "Username",
        "email" => "Email",
        _ => "employeeIdentifier",
    }
}

/// The keys no two users share, in the order of [`Item::keys`].
const KEYS: [&str; 3] = ["username", "email", "employeeIdentifier"];
type Keys = [Option<String>; 3];

/// Items as they are read: a CSV import parses its records batch by batch.
type ItemSource = Box<dyn Iterator<Item = Item> + Send>;
/// A bulk job's entries, parsed one at a time from its upload.
type Entries = Box<dyn Iterator<Item = std::result::Result<Value, String>> + Send>;

fn read_failed(e: std::io::Error) -> Error {
    Error::Internal(format!("cannot read the upload back: {e}"))
}

/// Duplicates inside the file: the later record is the error.
enum Dedupe {
    /// Per key of [`KEYS`]: the values seen → the record that had it first (bulk jobs, at
    /// most 100,000 entries).
    Values(Vec<HashMap<String, usize, foldhash::fast::RandomState>>),
    /// Only the keys a scan of the file found more than once are remembered (CSV imports,
    /// whose files may hold millions of records).
    Repeats(Repeats),
}

impl Dedupe {
    /// Sized for `records` (capped: a file of tiny records could otherwise reserve gigabytes),
    /// so the maps do not grow mid-import. Update mode matches by username only: the other
    /// keys may repeat.
    fn new(records: usize, update: bool) -> Dedupe {
        let n = if update { 1 } else { KEYS.len() };
        let cap = records.min(1 << 20);
        Dedupe::Values((0..n).map(|_| HashMap::with_capacity_and_hasher(cap, Default::default())).collect())
    }

    fn check(&mut self, it: &mut Item) {
        if it.result.is_some() {
            return;
        }
        let mut keys = std::mem::take(&mut it.keys);
        let first = match self {
            Dedupe::Values(seen) => seen.iter().zip(&keys).enumerate().find_map(|(k, (seen, v))| {
                let v = v.as_ref()?;
                seen.get(v).map(|first| (k, *first))
            }),
            Dedupe::Repeats(r) => keys.iter().enumerate().find_map(|(k, v)| {
                let first = *r.first.get(&r.hash(k, v.as_deref()?))?;
                (first != 0).then_some((k, first as usize))
            }),
        };
        if let Some((k, first)) = first {
            let v = keys[k].as_deref().unwrap_or_default();
            let msg = format!("duplicate {} '{v}': already in row {first} of this file", KEYS[k]);
            it.parsed = None;
            it.cells = None;
            it.done("error", None, msg);
            return;
        }
        match self {
            Dedupe::Values(seen) => {
                for (seen, v) in seen.iter_mut().zip(keys.iter_mut()) {
                    if let Some(v) = v.take() {
                        seen.insert(v, it.seq);
                    }
                }
            }
            Dedupe::Repeats(r) => {
                for (k, v) in keys.iter().enumerate() {
                    let Some(v) = v.as_deref() else { continue };
                    let h = r.hash(k, v);
                    if let Some(first) = r.first.get_mut(&h) {
                        if *first == 0 {
                            *first = it.seq as u32;
                        }
                    }
                }
            }
        }
    }
}

/// Key hashes a scan pass keeps at most (32 MiB); a file with more keys is scanned again, one
/// share of the hashes per pass.
const SCAN_HASHES: usize = 4 << 20;
/// Most distinct keys a file may repeat (each costs the import about 20 bytes while it runs).
const MAX_REPEATED_KEYS: usize = 2_000_000;

/// The keys (see [`KEYS`]) that a CSV file holds more than once, found before its import by a
/// scan of every record's keys as seeded 64-bit hashes, sorted: the import then remembers when
/// it first met each of those, and nothing about the others, so its memory does not grow with
/// the file. Two different keys of one file with the same hash would make the later a false
/// duplicate: the seed is random per import, and for a million records the chance is about
/// one in four million.
struct Repeats {
    state: foldhash::fast::RandomState,
    /// The hash of every repeated key → the row that had it first (0 until met).
    first: HashMap<u64, u32, foldhash::fast::RandomState>,
}

impl Repeats {
    fn hash(&self, key: usize, value: &str) -> u64 {
        use std::hash::BuildHasher;
        self.state.hash_one((key as u8, value))
    }
}

/// Where a file's key columns are; reads a record's keys the same way for the scan and for the
/// import.
#[derive(Clone, Copy)]
struct KeyCols {
    username: Option<usize>,
    email: Option<usize>,
    employee: Option<usize>,
    /// What an update file matches users by (its first key column).
    update: Option<(&'static str, usize)>,
}

/// A record's keys, read by [`KeyCols::read`].
struct RecordKeys {
    /// The username as given (its case is kept).
    username: Option<String>,
    /// What must not repeat inside the file (lowercase but the employee id).
    keys: Keys,
    /// An update file's key of the record.
    key: Option<(&'static str, String)>,
    /// An update file's record without its key.
    error: Option<String>,
}

impl KeyCols {
    fn of(header: &Header, update: bool) -> KeyCols {
        let col = |name: &'static str| header.columns.iter().position(|c| *c == csv_import::Column::Field(name));
        KeyCols {
            username: col("username"),
            email: col("email"),
            employee: col("employeeIdentifier"),
            update: if update { header.update_key() } else { None },
        }
    }

    fn read(&self, cells: &csv::StringRecord) -> RecordKeys {
        let cell = |i: Option<usize>| i.and_then(|i| cells.get(i)).map(|c| c.trim()).filter(|c| !c.is_empty());
        let username = cell(self.username).map(str::to_string);
        let mut out = RecordKeys {
            keys: [
                username.as_deref().map(str::to_lowercase),
                cell(self.email).map(str::to_lowercase),
                cell(self.employee).map(str::to_string),
            ],
            username,
            key: None,
            error: None,
        };
        if let Some((name, i)) = self.update {
            let v = cell(Some(i));
            let v = if name == "employeeIdentifier" { v.map(str::to_string) } else { v.map(str::to_lowercase) };
            match v {
                // In update mode the file's key is what must not repeat.
                Some(v) => {
                    out.keys = [Some(v.clone()), None, None];
                    out.key = Some((name, v));
                }
                None => out.error = Some(format!("the key column {} is empty", header_name(name))),
            }
        }
        out
    }
}

/// Counts a CSV file's records and finds the keys it repeats ([`Repeats`]), reading it once,
/// or once more per share of its key hashes when it has more than [`SCAN_HASHES`] keys.
fn scan_repeats<R: Read + Seek>(input: &mut R, cols: KeyCols) -> std::result::Result<(usize, Repeats), String> {
    let state = foldhash::fast::RandomState::default();
    let repeats = Repeats { state, first: HashMap::default() };
    let rewind = |f: &mut R| f.seek(SeekFrom::Start(0)).map_err(|e| format!("the file cannot be read: {e}"));
    // Each pass keeps the hashes of one share (hash % shares == share) and sorts them.
    let pass = |input: &mut R, shares: u64, share: u64, hashes: &mut Vec<u64>| {
        hashes.clear();
        let (mut records, mut keys) = (0usize, 0usize);
        let (_, rows) = csv_import::records(BufReader::with_capacity(256 * 1024, &mut *input))?;
        for (_, cells) in rows {
            records += 1;
            let Ok(cells) = cells else { continue };
            let k = cols.read(&cells);
            if k.error.is_some() {
                continue;
            }
            for (i, v) in k.keys.iter().enumerate() {
                let Some(v) = v else { continue };
                keys += 1;
                let h = repeats.hash(i, v);
                if h % shares == share && hashes.len() < SCAN_HASHES {
                    hashes.push(h);
                }
            }
        }
        Ok::<_, String>((records, keys))
    };
    let mut hashes: Vec<u64> = Vec::with_capacity(SCAN_HASHES);
    let (total, keys) = pass(input, 1, 0, &mut hashes)?;
    let shares = keys.div_ceil(SCAN_HASHES).max(1) as u64;
    let mut first: HashMap<u64, u32, foldhash::fast::RandomState> = HashMap::default();
    for share in 0..shares {
        if shares > 1 {
            rewind(input)?;
            pass(input, shares, share, &mut hashes)?;
        }
        hashes.sort_unstable();
        for w in hashes.windows(2) {
            if w[0] == w[1] {
                first.insert(w[0], 0);
            }
        }
        if first.len() > MAX_REPEATED_KEYS {
            return Err(format!(
                "more than {MAX_REPEATED_KEYS} usernames, e-mails or employee ids repeat in this file (is it the \
                 same records twice?): remove the repeated records and import it again"
            ));
        }
    }
    drop(hashes);
    rewind(input)?;
    Ok((total, Repeats { first, ..repeats }))
}

impl Item {
    /// Its row of the job's results.
    fn job_result(&self) -> JobResult {
        let (outcome, id, msg) = self.result.clone().unwrap_or_else(|| ("error".into(), None, "not processed".into()));
        JobResult {
            seq: self.seq as i64,
            username: self.username.clone(),
            user_id: id,
            outcome,
            message: Some(msg).filter(|m| !m.is_empty()),
        }
    }

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
    /// PostgreSQL other processes may be working, so only jobs silent for
    /// `Config::stale_job_after` (5 minutes) are.
    pub async fn interrupt_stale_jobs(&self) -> Result<u64> {
        let now = self.now();
        let cutoff = match self.store().backend() {
            cairn_store::Backend::Sqlite => now,
            cairn_store::Backend::Postgres => now - self.config().stale_job_after,
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

    /// Starts a CSV import of an upload in the background; returns the job id at once. The
    /// slot is held until the import ends.
    pub async fn start_csv_import(
        &self,
        ctx: &Ctx,
        upload: Upload,
        opts: ImportOptions,
        slot: ImportSlot,
    ) -> Result<String> {
        if upload.bytes == 0 {
            return Err(Error::invalid("body", "the CSV file is empty"));
        }
        // A line too long is refused before a job exists; the file is read, not loaded.
        let file = tokio::task::spawn_blocking(move || -> Result<std::fs::File> {
            let mut file = upload.rewound().map_err(read_failed)?;
            csv_import::check_line_lengths_in(&mut file).map_err(|m| Error::invalid("body", m))?;
            file.seek(SeekFrom::Start(0)).map_err(read_failed)?;
            Ok(file)
        })
        .await
        .map_err(|e| Error::Internal(format!("the import check failed: {e}")))??;
        let job = self.create_job(ctx, "csv_import", json!({ "dry_run": opts.dry_run, "update": opts.update })).await?;
        let (dir, ctx, id) = (self.clone(), ctx.clone(), job.clone());
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = dir.run_csv_import(&ctx, &id, file, opts, &|_, _| {}).await {
                tracing::error!(job = %id, error = %e, "import failed");
            }
        });
        Ok(job)
    }

    /// Runs a CSV import for an existing job, reporting progress; returns the counts. The file
    /// is read three times (line lengths, record count, records), never whole into memory.
    pub async fn run_csv_import<F: Read + Seek + Send + 'static>(
        &self,
        ctx: &Ctx,
        job: &str,
        input: F,
        opts: ImportOptions,
        progress: Progress<'_>,
    ) -> Result<Counts> {
        let update = opts.update;
        let prepared = tokio::task::spawn_blocking(move || {
            let mut input = input;
            csv_import::check_line_lengths_in(&mut input)?;
            input.seek(SeekFrom::Start(0)).map_err(|e| format!("the file cannot be read: {e}"))?;
            let (header, _) = csv_import::records(BufReader::new(&mut input))?;
            header.require(update)?;
            input.seek(SeekFrom::Start(0)).map_err(|e| format!("the file cannot be read: {e}"))?;
            let cols = KeyCols::of(&header, update);
            let (total, repeats) = scan_repeats(&mut input, cols)?;
            let (header, records) = csv_import::records(BufReader::with_capacity(256 * 1024, input))?;
            Ok::<_, String>((total, header, records, repeats, cols))
        })
        .await
        .map_err(|e| Error::Internal(format!("the import's file check failed: {e}")))?;
        let (total, header, records, repeats, cols) = match prepared {
            Ok(x) => x,
            Err(m) => {
                self.finish_job(job, "failed", 0, 0, &Counts::default(), Some(&m)).await?;
                return Err(Error::invalid("file", m));
            }
        };
        let groups = self.group_names().await?;
        let unknown = header.unknown(&groups);
        let note = (!unknown.is_empty()).then(|| format!("ignored unknown columns: {}", unknown.join(", ")));
        // Records become items as they are read (on the worker thread, for create mode).
        let items = records.map(move |(row, cells)| {
            let mut item = Item {
                seq: row,
                username: None,
                parsed: None,
                result: None,
                cells: None,
                keys: Keys::default(),
                key: None,
            };
            match cells {
                Ok(cells) => {
                    let k = cols.read(&cells);
                    (item.username, item.keys, item.key) = (k.username, k.keys, k.key);
                    if let Some(e) = k.error {
                        item.done("error", None, e);
                    }
                    item.cells = Some(cells);
                }
                Err(m) => item.done("error", None, m),
            }
            item
        });
        let source = CreationSource::CsvImport;
        let mapping = Mapping { header: &header, groups: &groups };
        let items: ItemSource = Box::new(items);
        let dedupe = Dedupe::Repeats(repeats);
        self.run_items(
            ctx,
            job,
            items,
            total,
            opts,
            source,
            "csv",
            MailChoice::Default,
            note,
            Some(mapping),
            Some(dedupe),
            progress,
        )
        .await
    }

    /// Starts a JSON bulk job (`POST|PATCH /api/v2/bulk/users`) of an upload counted by
    /// [`Directory::receive_upload`]; its entries are read back one by one as the job goes.
    /// The slot is held until the job ends.
    #[allow(clippy::too_many_arguments)]
    pub async fn start_bulk_users(
        &self,
        ctx: &Ctx,
        upload: Upload,
        update: bool,
        source: CreationSource,
        origin: String,
        mail: MailChoice,
        slot: ImportSlot,
    ) -> Result<String> {
        let total = upload.entries;
        let file = upload.rewound().map_err(read_failed)?;
        let kind = if update { "bulk_update" } else { "bulk_create" };
        let job = self.create_job(ctx, kind, json!({ "update": update, "creation_source": origin })).await?;
        let (dir, ctx, id) = (self.clone(), ctx.clone(), job.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let entries: Entries = Box::new(entries_of(file));
            let r = if update {
                dir.run_bulk_update(&ctx, &id, entries, total).await
            } else {
                dir.run_bulk_create(&ctx, &id, entries, total, source, &origin, mail).await
            };
            if let Err(e) = r {
                tracing::error!(job = %id, error = %e, "bulk job failed");
            }
        });
        Ok(job)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_bulk_create(
        &self,
        ctx: &Ctx,
        job: &str,
        entries: Entries,
        total: usize,
        source: CreationSource,
        origin: &str,
        mail: MailChoice,
    ) -> Result<Counts> {
        // Entries become items as they are read (on the worker thread of the creates).
        let items = entries.enumerate().map(|(i, v)| {
            let mut item = Item {
                seq: i + 1,
                username: None,
                parsed: None,
                result: None,
                cells: None,
                keys: Keys::default(),
                key: None,
            };
            let v = match v {
                Ok(v) => v,
                Err(m) => {
                    item.done("error", None, m);
                    return item;
                }
            };
            item.username = v.get("username").and_then(Value::as_str).map(|u| u.trim().to_string());
            let parsed = match v {
                Value::Object(o) => cairn_domain::user::parse_user_object(o, true),
                other => cairn_domain::user::parse_user_input(&other, true),
            };
            match parsed {
                Ok(input) => {
                    item.keys = [
                        input.username.as_deref().map(str::to_lowercase),
                        input.email.clone(),
                        input.profile.get("employeeIdentifier").and_then(Value::as_str).map(String::from),
                    ];
                    item.parsed = Some(Parsed { input, groups: vec![], manager: None });
                }
                Err(e) => item.done("error", None, e.to_string()),
            }
            item
        });
        let ctx = Ctx { source: "bulk_api".into(), ..ctx.clone() };
        let items: ItemSource = Box::new(items);
        let opts = ImportOptions::default();
        self.run_items(&ctx, job, items, total, opts, source, origin, mail, None, None, None, &|_, _| {}).await
    }

    /// Updates by `id` (JumpCloud `bulk-user-update`), each user in its own transaction.
    async fn run_bulk_update(&self, ctx: &Ctx, job: &str, entries: Entries, total: usize) -> Result<Counts> {
        let ctx = Ctx { source: "bulk_api".into(), ..ctx.clone() };
        let mut counts = Counts::default();
        self.finish_job(job, "running", 0, total, &counts, None).await?;
        let mut results = Vec::with_capacity(total);
        let mut entries = entries.enumerate();
        loop {
            // The next entries are parsed off the async runtime.
            let (rest, chunk) = tokio::task::spawn_blocking(move || {
                let chunk: Vec<_> = entries.by_ref().take(BATCH).collect();
                (entries, chunk)
            })
            .await
            .map_err(|e| Error::Internal(format!("reading the bulk job's entries failed: {e}")))?;
            entries = rest;
            if chunk.is_empty() {
                break;
            }
            for (i, v) in chunk {
                let mut v = match v {
                    Ok(v) => v,
                    Err(m) => {
                        counts.add("error");
                        let message = Some(m);
                        results.push(JobResult {
                            seq: i as i64 + 1,
                            username: None,
                            user_id: None,
                            outcome: "error".into(),
                            message,
                        });
                        continue;
                    }
                };
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
        items: ItemSource,
        total: usize,
        opts: ImportOptions,
        source: CreationSource,
        origin: &str,
        mail: MailChoice,
        note: Option<String>,
        mapping: Option<Mapping<'_>>,
        dedupe: Option<Dedupe>,
        progress: Progress<'_>,
    ) -> Result<Counts> {
        let mut counts = Counts::default();
        self.finish_job(job, "running", 0, total, &counts, note.as_deref()).await?;
        let org = self.organization().await?;
        let group_ids: HashMap<String, String> = {
            let (_, groups) = self.list_groups(None, i64::MAX, 0).await?;
            groups.into_iter().map(|g| (g.name, g.id)).collect()
        };
        let mut dedupe = dedupe.unwrap_or_else(|| Dedupe::new(total, opts.update));
        let items = items.map(move |mut it| {
            dedupe.check(&mut it);
            it
        });
        if !opts.update && !opts.dry_run {
            let plan = CreatePlan {
                job: job.to_string(),
                ctx: ctx.clone(),
                source,
                origin: origin.to_string(),
                mail,
                org,
                group_ids,
                managers: mapping.as_ref().is_some_and(|m| m.header.columns.contains(&csv_import::Column::Manager)),
                mapping: mapping.map(|m| (m.header.clone(), m.groups.clone())),
            };
            return match self.run_creates(job, Box::new(items), total, plan, note.as_deref(), progress).await {
                Ok(counts) => Ok(counts),
                Err(e) => {
                    // Batches committed before the failure stay, with their results: the job
                    // keeps the progress they recorded.
                    let (done, counts) = match self.job(job).await {
                        Ok(j) => (j.processed as usize, serde_json::from_value(j.counts).unwrap_or_default()),
                        Err(_) => (0, Counts::default()),
                    };
                    let _ = self.finish_job(job, "failed", done, total, &counts, Some(&e.to_string())).await;
                    Err(e)
                }
            };
        }
        // Batch by batch: the file's records are never all in memory.
        let mut items: ItemSource = Box::new(items);
        let mut done = 0;
        // Usernames of the users created so far, kept only when a record may name one as its
        // manager (a file with a manager column).
        let mut new_ids: HashMap<String, String> = HashMap::new();
        let managers = mapping.as_ref().is_some_and(|m| m.header.columns.contains(&csv_import::Column::Manager));
        loop {
            let (rest, mut chunk) = tokio::task::spawn_blocking(move || {
                let chunk: Vec<Item> = items.by_ref().take(BATCH).collect();
                (items, chunk)
            })
            .await
            .map_err(|e| Error::Internal(format!("reading the import's records failed: {e}")))?;
            items = rest;
            if chunk.is_empty() {
                break;
            }
            let chunk = &mut chunk[..];
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
            let ids = managers.then_some(&mut new_ids);
            self.run_batch(ctx, job, chunk, opts, source, origin, &org, &group_ids, ids).await?;
            for it in chunk.iter() {
                counts.add(it.result.as_ref().map(|r| r.0.as_str()).unwrap_or("error"));
            }
            done += n;
            progress(done, total);
            let mut tx = self.store().begin().await?;
            self.record_progress(&mut tx.db(), job, done, total, &counts, note.as_deref()).await?;
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
        org: &crate::Organization,
        group_ids: &HashMap<String, String>,
        mut new_ids: Option<&mut HashMap<String, String>>,
    ) -> Result<()> {
        // What already exists, in two queries for the whole batch.
        let usernames: Vec<String> = chunk
            .iter()
            .filter(|i| i.parsed.is_some())
            .filter_map(|i| i.username.as_deref().map(str::to_lowercase))
            .collect();
        let mut emails: Vec<String> = chunk.iter().filter_map(|i| i.parsed.as_ref()?.input.email.clone()).collect();
        // Update files keyed by e-mail or employee id find their users by those.
        let key_of = |name: &str| -> Vec<String> {
            chunk
                .iter()
                .filter(|i| i.parsed.is_some())
                .filter_map(|i| i.key.as_ref().filter(|(k, _)| *k == name).map(|(_, v)| v.clone()))
                .collect()
        };
        emails.extend(key_of("email"));
        let emp_keys = key_of("employeeIdentifier");
        let managers: Vec<String> =
            chunk.iter().filter_map(|i| i.parsed.as_ref()?.manager.clone()).map(|m| m.to_lowercase()).collect();
        let emp: Vec<String> = chunk
            .iter()
            .filter_map(|i| i.parsed.as_ref()?.input.profile.get("employeeIdentifier")?.as_str().map(String::from))
            .collect();
        let (holders, manager_users, by_emp) = {
            let mut c = self.store().read().await?;
            let holders = Holders::find(&mut c.db(), &usernames, &emails, &emp).await?;
            let by_emp: HashMap<String, UserKeys> =
                c.db().users_by_employee_ids(&emp_keys).await?.into_iter().collect();
            let mut m = c.db().users_matching(&managers, &[]).await?;
            for id in managers.iter().filter(|x| cairn_domain::id::is_object_id(x)) {
                if let Some(u) = c.db().get_user(id).await? {
                    m.push(UserKeys { id: u.id, username: u.username, email: u.email });
                }
            }
            (holders, m, by_emp)
        };
        let Holders { by_name, by_email, emp_owner } = &holders;
        let manager_id = |m: &str, new_ids: Option<&HashMap<String, String>>| -> Option<String> {
            let m = m.to_lowercase();
            manager_users
                .iter()
                .find(|u| u.username.eq_ignore_ascii_case(&m) || u.id == m)
                .map(|u| u.id.clone())
                .or_else(|| new_ids?.get(&m).cloned())
        };

        let mut creates: Vec<(usize, User, Vec<String>)> = vec![];
        let mut updates: Vec<(usize, String, UserInput, Vec<String>)> = vec![];
        for (idx, it) in chunk.iter_mut().enumerate() {
            let Some(p) = it.parsed.take() else { continue };
            let uname = it.username.clone().unwrap_or_default();
            let ukey = uname.to_lowercase();
            let mut input = p.input;
            if let Some(m) = &p.manager {
                match manager_id(m, new_ids.as_deref()) {
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
                let (key, value) = it.key.clone().unwrap_or(("username", ukey.clone()));
                let found = match key {
                    "email" => {
                        // The key, not a change.
                        input.email = None;
                        by_email.get(value.as_str())
                    }
                    "employeeIdentifier" => {
                        input.profile.remove("employeeIdentifier");
                        by_emp.get(value.as_str())
                    }
                    _ => by_name.get(value.as_str()),
                };
                match found {
                    None => it.done("error", None, format!("no user with {key} '{value}' (update mode never creates)")),
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
            if let Some(u) = by_name.get(ukey.as_str()) {
                it.done("exists", Some(u.id.clone()), format!("{} already exists", u.username));
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
            match self.new_user(org, input, source, origin, hash, self.now()) {
                Ok(u) => {
                    if let Some(ids) = new_ids.as_deref_mut() {
                        ids.insert(u.username.to_lowercase(), u.id.clone());
                    }
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

        // The batch's updates and results in one transaction. Updates of profile fields only
        // (no key, manager, state, password or group) cannot fail on their own: they are
        // written together. Each of the others runs in a savepoint of its own: a record that
        // fails leaves nothing behind and the others stand.
        let mut tx = self.store().begin().await?;
        let ids: Vec<String> = updates.iter().map(|u| u.1.clone()).collect();
        let mut current: HashMap<String, User> =
            tx.db().users_by_ids(&ids).await?.into_iter().map(|u| (u.id.clone(), u)).collect();
        let mut plain = PlainUpdates::default();
        for (idx, id, input, groups) in updates {
            let Some(old) = current.remove(&id) else {
                chunk[idx].done("error", Some(id), "the user was deleted during the import");
                continue;
            };
            let (old, input) = match plain.take(self, ctx, idx, old, input, &groups) {
                Taken::Yes => continue,
                Taken::Unchanged(id) => {
                    chunk[idx].done("exists", Some(id), "no change");
                    continue;
                }
                Taken::No(back) => *back,
            };
            let mut sp = tx.savepoint().await?;
            match self.update_with_groups(&mut sp.db(), ctx, old, input, &groups).await {
                Ok((u, changed)) => {
                    sp.commit().await?;
                    if changed {
                        chunk[idx].done("updated", Some(u.id), "");
                    } else {
                        chunk[idx].done("exists", Some(u.id), "no change");
                    }
                }
                Err(e) => chunk[idx].done("error", Some(id), e.to_string()),
            }
        }
        if !plain.users.is_empty() {
            let fields: Vec<&'static cairn_domain::fields::Field> =
                cairn_domain::fields::PROFILE.iter().filter(|f| plain.fields.contains(f.name)).collect();
            let written = tx.db().update_users_fields(&plain.users, &fields).await?;
            let mut events = Vec::with_capacity(plain.users.len());
            for ((idx, ev), u) in plain.done.into_iter().zip(&plain.users) {
                if written.contains(&u.id) {
                    events.push(ev);
                    chunk[idx].done("updated", Some(u.id.clone()), "");
                } else {
                    chunk[idx].done("error", Some(u.id.clone()), "the user was deleted during the import");
                }
            }
            tx.db().insert_events(&events).await?;
        }
        let results: Vec<JobResult> = chunk.iter().map(Item::job_result).collect();
        tx.db().insert_job_results(job, &results).await?;
        tx.commit().await?;
        Ok(())
    }

    /// One update-mode record: its fields, then the groups it asks to join.
    async fn update_with_groups(
        &self,
        db: &mut cairn_store::Db<'_>,
        ctx: &Ctx,
        old: User,
        input: UserInput,
        groups: &[String],
    ) -> Result<(User, bool)> {
        let (u, mut changed) = self.update_loaded_in(db, ctx, old, input, false).await?;
        for g in groups {
            changed |= self.change_membership_in(db, ctx, g, &u.id, true).await?;
        }
        Ok((u, changed))
    }

    async fn write_results(&self, job: &str, chunk: &[Item]) -> Result<()> {
        let results: Vec<JobResult> = chunk.iter().map(Item::job_result).collect();
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

/// Users of the directory that hold some of a batch's keys, by key (a re-run has a whole
/// batch of users that exist).
struct Holders {
    by_name: HashMap<String, UserKeys>,
    by_email: HashMap<String, UserKeys>,
    /// Employee identifier → the username holding it.
    emp_owner: HashMap<String, String>,
}

impl Holders {
    async fn find(
        db: &mut cairn_store::Db<'_>,
        usernames: &[String],
        emails: &[String],
        employee_ids: &[String],
    ) -> Result<Holders> {
        let (mut by_name, mut by_email) = (HashMap::new(), HashMap::new());
        for u in db.users_matching(usernames, emails).await? {
            by_email.insert(u.email.clone(), u.clone());
            by_name.insert(u.username.to_lowercase(), u);
        }
        let emp_owner = db.employee_ids_taken(employee_ids).await?.into_iter().collect();
        Ok(Holders { by_name, by_email, emp_owner })
    }
}

/// A batch's updates that set profile fields only, written with one statement per few
/// thousand users instead of one per user.
#[derive(Default)]
struct PlainUpdates {
    users: Vec<User>,
    /// Per user: its record's place in the batch and its `user_update` event.
    done: Vec<(usize, cairn_domain::Event)>,
    /// The profile fields any of them changes.
    fields: std::collections::HashSet<String>,
}

enum Taken {
    Yes,
    /// A plain update that changes nothing: the user's id.
    Unchanged(String),
    /// Not a plain update: for the one-by-one path.
    No(Box<(User, UserInput)>),
}

impl PlainUpdates {
    fn take(
        &mut self,
        dir: &Directory,
        ctx: &Ctx,
        idx: usize,
        old: User,
        input: UserInput,
        groups: &[String],
    ) -> Taken {
        if !groups.is_empty() || !crate::users::sets_fields_only(&old, &input) {
            return Taken::No(Box::new((old, input)));
        }
        let mut user = old.clone();
        crate::users::apply_fields(&mut user, None, None, input.profile.clone());
        let changes = cairn_domain::user::diff(&old, &user);
        if changes.is_empty() {
            return Taken::Unchanged(user.id);
        }
        if !changes.iter().all(|c| cairn_domain::fields::profile(&c.field).is_some()) {
            // A field shown as derived from others changed too: the one-by-one path.
            return Taken::No(Box::new((old, input)));
        }
        user.updated = dir.now();
        self.fields.extend(changes.iter().map(|c| c.field.clone()));
        let target = Some(("user", user.id.as_str(), user.username.as_str()));
        let ev = dir.event(ctx, "user_update", target, changes, json!({}));
        self.done.push((idx, ev));
        self.users.push(user);
        Taken::Yes
    }
}

/// What every batch of a create-mode job shares.
struct CreatePlan {
    job: String,
    ctx: Ctx,
    source: CreationSource,
    origin: String,
    mail: MailChoice,
    org: crate::Organization,
    group_ids: HashMap<String, String>,
    /// For CSV imports: the header and the group names, to map raw cells.
    mapping: Option<(Header, HashMap<String, String>)>,
    /// Records may name a manager by username (a CSV `manager` column): the usernames of
    /// the users created so far are kept, so that a later record can name an earlier one.
    managers: bool,
}

/// Usernames of the users an import has created so far → their ids.
type NewIds = HashMap<String, String, foldhash::fast::RandomState>;

/// A batch of records made ready to write: every user built and every statement bound, so
/// that writing it is all that is left. Its records' results say `created` for each user to
/// create, and the results' INSERTs and counts are bound for that case too: the writer only
/// redoes them when some user turns out to be taken.
struct Batch {
    items: Vec<Item>,
    /// The users to create, with the index of their record in `items` and their group ids.
    users: Vec<User>,
    places: Vec<(usize, Vec<String>)>,
    insert: cairn_store::Prepared,
    events_insert: cairn_store::Prepared,
    mail_insert: cairn_store::Prepared,
    results_insert: cairn_store::Prepared,
    counts: Counts,
}

/// What is left of a written batch, handed back to the thread that built it: freeing memory
/// there is cheaper (the allocator's own thread) and off the writer's path.
type Spent = (Vec<Item>, Vec<User>, Vec<(usize, Vec<String>)>);

impl Directory {
    /// Create mode, pipelined: one thread maps, validates and binds batch n+1 while the
    /// database writes batch n. Each batch is one transaction holding its users, their
    /// memberships, events, mail and job results; a user whose username, email or employee
    /// id another user already has is left out and reported, never half-written.
    async fn run_creates(
        &self,
        job: &str,
        items: ItemSource,
        total: usize,
        plan: CreatePlan,
        note: Option<&str>,
        progress: Progress<'_>,
    ) -> Result<Counts> {
        let plan = std::sync::Arc::new(plan);
        let (send, mut batches) = tokio::sync::mpsc::channel::<Result<Batch>>(BUILT_AHEAD);
        let (spent, spent_back) = std::sync::mpsc::channel::<Spent>();
        let producer = {
            let (dir, plan, rt) = (self.clone(), plan.clone(), tokio::runtime::Handle::current());
            tokio::task::spawn_blocking(move || {
                let mut new_ids = NewIds::default();
                let mut rest = items;
                let mut size = FIRST_BATCH;
                loop {
                    // A slot first: at most BUILT_AHEAD batches wait, besides the one written.
                    let Ok(slot) = rt.block_on(send.reserve()) else { break };
                    spent_back.try_iter().for_each(drop);
                    // Sized up front: growing a vector of records moves every record again.
                    let mut chunk: Vec<Item> = Vec::with_capacity(size);
                    chunk.extend(rest.by_ref().take(size));
                    size = BATCH;
                    if chunk.is_empty() {
                        break;
                    }
                    let batch = dir.prepare_creates(&rt, chunk, &plan, &mut new_ids);
                    let failed = batch.is_err();
                    slot.send(batch);
                    if failed {
                        break;
                    }
                }
            })
        };
        let mut counts = Counts::default();
        let mut done = 0;
        let mut writer = self.store().writer().await?;
        // Loading many users into a directory with fewer: build the search indexes once at
        // the end instead of updating them user by user.
        let existing: i64 = writer.db().count_users_by_state().await?.iter().map(|(_, n)| n).sum();
        let mut reindex = total >= REINDEX_MIN_RECORDS && total as i64 >= existing;
        // Batches share a transaction up to COMMIT_RECORDS or COMMIT_AFTER; whatever fails
        // rolls back to the last commit (the job is then failed and a re-run converges).
        let written = async {
            let mut tx = writer.begin().await?;
            let (mut opened, mut held) = (std::time::Instant::now(), 0);
            let mut first = true;
            while let Some(batch) = batches.recv().await {
                let batch = batch?;
                // The first users tell which partial indexes the load would enter.
                if std::mem::take(&mut first) && reindex {
                    reindex = tx.db().drop_user_search_indexes(&batch.users).await?;
                }
                done += batch.items.len();
                held += batch.items.len();
                let left = self.write_batch(&mut tx, job, batch, &plan, &mut counts, done, total, note).await?;
                // Gone already when the producer has finished: then it is freed here.
                let _ = spent.send(left);
                if held >= COMMIT_RECORDS || opened.elapsed() >= COMMIT_AFTER {
                    tx.commit().await?;
                    writer.committed().await;
                    tx = writer.begin().await?;
                    (opened, held) = (std::time::Instant::now(), 0);
                }
                progress(done, total);
            }
            if reindex {
                // The users first, so that their pages are checkpointed while the indexes
                // are built.
                tx.commit().await?;
                writer.committed().await;
                writer.build_user_search_indexes().await?;
                return Ok(());
            }
            tx.commit().await?;
            Ok::<_, Error>(())
        }
        .await;
        if written.is_err() && reindex {
            // Whatever was committed before the failure stays; the indexes must come back.
            writer.build_user_search_indexes().await?;
        }
        writer.finish().await?;
        written?;
        producer.await.map_err(|e| Error::Internal(format!("import worker: {e}")))?;
        self.finish_job(job, "done", done, done, &counts, note).await?;
        Ok(counts)
    }

    /// Maps, validates and builds a batch (runs on a blocking thread; the few lookups it
    /// needs — managers named by username, password checks — go through `rt`).
    fn prepare_creates(
        &self,
        rt: &tokio::runtime::Handle,
        mut chunk: Vec<Item>,
        plan: &CreatePlan,
        new_ids: &mut NewIds,
    ) -> Result<Batch> {
        if let Some((header, groups)) = &plan.mapping {
            for it in chunk.iter_mut() {
                if let Some(cells) = it.cells.take() {
                    match csv_import::map_record(header, &cells, groups, true) {
                        Ok(p) => it.parsed = Some(p),
                        Err(e) => it.done("error", None, e),
                    }
                }
            }
        }
        // Managers that are neither earlier records of this file nor ids: one lookup.
        let wanted: Vec<String> = chunk
            .iter()
            .filter_map(|i| i.parsed.as_ref()?.manager.as_ref())
            .map(|m| m.to_lowercase())
            .filter(|m| !new_ids.contains_key(m))
            .collect();
        let managers = if wanted.is_empty() { vec![] } else { rt.block_on(self.find_managers(&wanted))? };
        let mut users = Vec::with_capacity(chunk.len());
        let mut places = Vec::with_capacity(chunk.len());
        let now = self.now();
        for (idx, it) in chunk.iter_mut().enumerate() {
            let Some(p) = it.parsed.take() else { continue };
            let mut input = p.input;
            if let Some(m) = &p.manager {
                let key = m.to_lowercase();
                let id = managers
                    .iter()
                    .find(|(name, id)| name.eq_ignore_ascii_case(&key) || *id == key)
                    .map(|(_, id)| id.clone())
                    .or_else(|| new_ids.get(&key).cloned());
                match id {
                    Some(id) => {
                        input.profile.insert("manager".into(), json!(id));
                    }
                    None => {
                        it.done("error", None, format!("column manager: no user '{m}'"));
                        continue;
                    }
                }
            }
            let hash = match &input.password {
                Some(pw) => match rt.block_on(self.checked_hash(&plan.org, Some(pw))) {
                    Ok(h) => h,
                    Err(e) => {
                        it.done("error", None, format!("column Password: {}", first_message(&e)));
                        continue;
                    }
                },
                None => None,
            };
            // One instant for the batch's users: a column equal for all is bound once.
            match self.new_user(&plan.org, input, plan.source, &plan.origin, hash, now) {
                Ok(u) => {
                    if plan.managers {
                        new_ids.insert(u.username.to_lowercase(), u.id.clone());
                    }
                    let groups = p.groups.iter().filter_map(|g| plan.group_ids.get(g).cloned()).collect();
                    places.push((idx, groups));
                    users.push(u);
                }
                Err(e) => it.done("error", None, e.to_string()),
            }
        }
        for (u, (idx, _)) in users.iter().zip(&places) {
            chunk[*idx].done("created", Some(u.id.clone()), "");
        }
        let (results_insert, counts) = self.results_insert(&plan.job, &chunk);
        Ok(Batch {
            insert: self.store().prepare_new_users(&users),
            events_insert: self.creation_events(&users, plan),
            mail_insert: self.prepare_new_users_mail(&plan.org.settings.name, &users, &plan.mail),
            results_insert,
            counts,
            items: chunk,
            users,
            places,
        })
    }

    /// The INSERTs of these records' results, and their counts.
    fn results_insert(&self, job: &str, items: &[Item]) -> (cairn_store::Prepared, Counts) {
        let results: Vec<JobResult> = items.iter().map(Item::job_result).collect();
        let mut counts = Counts::default();
        for r in &results {
            counts.add(&r.outcome);
        }
        (self.store().prepare_job_results(job, &results), counts)
    }

    /// The `user_create` events of these users, as statements.
    fn creation_events<'a>(
        &self,
        users: impl IntoIterator<Item = &'a User>,
        plan: &CreatePlan,
    ) -> cairn_store::Prepared {
        self.user_create_events(users, &plan.ctx, &plan.job, &plan.origin, &plan.mail)
    }

    /// The `user_create` events of users a job (`job`) creates from `origin`, as statements
    /// (their changes written as text directly: imports write 100,000s).
    pub(crate) fn user_create_events<'a>(
        &self,
        users: impl IntoIterator<Item = &'a User>,
        ctx: &Ctx,
        job: &str,
        origin: &str,
        mail: &MailChoice,
    ) -> cairn_store::Prepared {
        let mut events = vec![];
        let mut texts = cairn_store::EventTexts { changes: vec![], details: vec![] };
        // The detail of users without mail depends on their state only: made once per state.
        let mut plain: Option<(cairn_domain::State, std::sync::Arc<str>)> = None;
        let mut restricted = None;
        for u in users {
            let detail = |mail: Option<Value>| {
                let mut d = json!({ "job_id": job, "state": u.state, "creationSource": origin });
                if let Some(m) = mail {
                    d["mail"] = m;
                }
                std::sync::Arc::<str>::from(d.to_string())
            };
            let detail = match cairn_domain::mail::on_activation(u, mail) {
                Some((kind, to)) => detail(Some(json!({ "type": kind, "to": to }))),
                None => match &plain {
                    Some((state, d)) if *state == u.state => d.clone(),
                    _ => plain.insert((u.state, detail(None))).1.clone(),
                },
            };
            let mut e = self.event(ctx, "user_create", Some(("user", &u.id, &u.username)), vec![], Value::Null);
            e.changes = Value::Null;
            e.time = u.created;
            texts.changes.push(creation_changes_json(u, &mut restricted));
            texts.details.push(detail);
            events.push(e);
        }
        self.store().prepare_events(&events, &texts)
    }

    /// (username, id) of the users named by these usernames or ids.
    async fn find_managers(&self, wanted: &[String]) -> Result<Vec<(String, String)>> {
        let mut c = self.store().read().await?;
        let mut found: Vec<(String, String)> =
            c.db().users_matching(wanted, &[]).await?.into_iter().map(|u| (u.username, u.id)).collect();
        for id in wanted.iter().filter(|x| cairn_domain::id::is_object_id(x)) {
            if let Some(u) = c.db().get_user(id).await? {
                found.push((u.username, u.id));
            }
        }
        Ok(found)
    }

    /// Writes one batch, with the job's progress, in the import's current transaction.
    #[allow(clippy::too_many_arguments)]
    async fn write_batch(
        &self,
        tx: &mut cairn_store::Savepoint<'_>,
        job: &str,
        batch: Batch,
        plan: &CreatePlan,
        counts: &mut Counts,
        done: usize,
        total: usize,
        note: Option<&str>,
    ) -> Result<Spent> {
        let Batch {
            mut items,
            users,
            places,
            insert,
            events_insert,
            mail_insert,
            mut results_insert,
            counts: mut batch_counts,
        } = batch;
        let inserted = tx.db().insert_new_users(&users, insert).await?;
        let all = inserted.is_none();
        let inserted = inserted.unwrap_or_default();
        let is_in = |u: &User| all || inserted.contains(&u.id);
        if !all {
            // Someone has these usernames, emails or employee ids: say who.
            let left: Vec<&User> = users.iter().filter(|u| !is_in(u)).collect();
            let names: Vec<String> = left.iter().map(|u| u.username.to_lowercase()).collect();
            let emails: Vec<String> = left.iter().map(|u| u.email.clone()).collect();
            let emps: Vec<String> =
                left.iter().filter_map(|u| u.text("employeeIdentifier").map(String::from)).collect();
            let Holders { by_name, by_email, emp_owner } = Holders::find(&mut tx.db(), &names, &emails, &emps).await?;
            for (u, (idx, _)) in users.iter().zip(&places) {
                if is_in(u) {
                    continue;
                }
                let it = &mut items[*idx];
                let emp = u.text("employeeIdentifier");
                if let Some(e) = by_name.get(u.username.to_lowercase().as_str()) {
                    it.done("exists", Some(e.id.clone()), format!("{} already exists", e.username));
                } else if let Some(e) = by_email.get(u.email.as_str()) {
                    it.done("error", None, format!("column Email: '{}' is already used by {}", u.email, e.username));
                } else if let Some((emp, owner)) = emp.and_then(|e| emp_owner.get_key_value(e)) {
                    it.done("error", None, format!("column employeeIdentifier: '{emp}' is already used by {owner}"));
                } else {
                    it.done("error", None, format!("{} conflicts with an existing user", u.username));
                }
            }
        }
        let pairs: Vec<(String, String)> = users
            .iter()
            .zip(&places)
            .filter(|(u, _)| is_in(u))
            .flat_map(|(u, (_, gs))| gs.iter().map(move |g| (g.clone(), u.id.clone())))
            .collect();
        if !pairs.is_empty() {
            tx.db().add_members(&pairs, self.now()).await?;
        }
        if all {
            tx.db().execute_prepared(events_insert).await?;
            tx.db().execute_prepared(mail_insert).await?;
        } else {
            let events = self.creation_events(users.iter().filter(|u| is_in(u)), plan);
            tx.db().execute_prepared(events).await?;
            let org = &plan.org.settings.name;
            self.mail_new_users(&mut tx.db(), org, users.iter().filter(|u| is_in(u)), &plan.mail).await?;
        }
        if !all {
            // The users left out have their outcome now: their results are bound anew.
            (results_insert, batch_counts) = self.results_insert(job, &items);
        }
        tx.db().execute_prepared(results_insert).await?;
        counts.merge(&batch_counts);
        self.record_progress(&mut tx.db(), job, done, total, counts, note).await?;
        Ok((items, users, places))
    }

    /// A running job's progress, written in the caller's transaction.
    async fn record_progress(
        &self,
        db: &mut cairn_store::Db<'_>,
        job: &str,
        done: usize,
        total: usize,
        counts: &Counts,
        note: Option<&str>,
    ) -> Result<()> {
        let update = JobUpdate {
            status: "running",
            processed: done as i64,
            total: total as i64,
            counts: &counts.json(),
            message: note,
        };
        db.update_job(job, &update, self.now()).await?;
        Ok(())
    }
}

/// The changes of a `user_create` event as stored JSON text: the object of the values set,
/// which reads back as [`creation_changes`] (see `cairn_domain::user::changes_list`), written
/// directly without building a JSON tree (imports write 100,000s). `restricted` keeps the last
/// `restrictedFields` and its text: a directory's users all have the same.
fn creation_changes_json(u: &User, restricted: &mut Option<(Value, String)>) -> String {
    fn key(out: &mut Vec<u8>, field: &str) {
        out.push(if out.is_empty() { b'{' } else { b',' });
        serde_json::to_writer(&mut *out, field).expect("field serializes");
        out.push(b':');
    }
    fn add<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, field: &str, new: &T) {
        key(out, field);
        serde_json::to_writer(&mut *out, new).expect("value serializes");
    }
    let mut out = Vec::with_capacity(320);
    add(&mut out, "username", &u.username);
    add(&mut out, "email", &u.email);
    add(&mut out, "state", &u.state);
    add(&mut out, "creationSource", &u.creation_source);
    if u.password_hash.is_some() {
        add(&mut out, "password", "***");
    }
    for (k, v) in &u.profile {
        if crate::users::is_empty_value(v) {
            continue;
        }
        if k != "restrictedFields" {
            add(&mut out, k, v);
            continue;
        }
        // A connection's list goes in packed, as in the user's row; read back whole.
        if restricted.as_ref().is_none_or(|(last, _)| !cairn_domain::user::same_json(last, v)) {
            *restricted = Some((v.clone(), cairn_domain::user::restricted_text(v)));
        }
        key(&mut out, k);
        out.extend_from_slice(restricted.as_ref().map_or("null", |(_, t)| t.as_str()).as_bytes());
    }
    out.push(b'}');
    String::from_utf8(out).expect("JSON is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::creation_changes;

    #[test]
    fn creation_changes_text_reads_back_as_the_creation_changes() {
        let now = chrono::Utc::now();
        let mut u = User {
            creation_source: "csv".into(),
            ..User::new("0123456789abcdef01234567", "ada", "ada@x.io", cairn_domain::State::Staged, now)
        };
        let read_back = |u: &User| {
            cairn_domain::user::changes_list(serde_json::from_str(&creation_changes_json(u, &mut None)).unwrap())
        };
        assert_eq!(read_back(&u), serde_json::to_value(creation_changes(&u)).unwrap());
        u.profile.insert("firstname".into(), json!("Ada \"the\" First"));
        u.profile.insert("sudo".into(), json!(false));
        u.profile.insert("addresses".into(), json!([{"type": "work", "locality": "Zürich"}]));
        u.profile.insert("unix_uid".into(), json!(5001));
        u.password_hash = Some(cairn_domain::Secret::new("x".to_string()));
        assert_eq!(read_back(&u), serde_json::to_value(creation_changes(&u)).unwrap());
        // A directory connection's restrictedFields: packed in the text, whole when read.
        let c = "6b15c941cc7d3f60eb61bdc7";
        u.profile.insert(
            "restrictedFields".into(),
            json!([{"field": "email", "type": "active_directory", "id": c},
                   {"field": "manager", "type": "active_directory", "id": c}]),
        );
        assert!(
            creation_changes_json(&u, &mut None).contains(&format!(r#""restrictedFields":{{"active_directory":"{c}""#))
        );
        assert_eq!(read_back(&u), serde_json::to_value(creation_changes(&u)).unwrap());
        // An admin's own list stays as it was sent.
        u.profile.insert("restrictedFields".into(), json!([{"field": "email", "type": "scim"}]));
        assert!(
            creation_changes_json(&u, &mut None).contains(r#""restrictedFields":[{"field":"email","type":"scim"}]"#)
        );
        assert_eq!(read_back(&u), serde_json::to_value(creation_changes(&u)).unwrap());
        // Users of one batch share the memo: each still gets its own list.
        let mut memo = None;
        let lists = [
            json!([{"field": "email", "type": "active_directory", "id": c}]),
            json!([{"field": "email", "type": "active_directory", "id": c}]),
            json!([{"field": "email", "type": "active_directory", "id": "another"}]),
            json!([{"field": "email", "type": "scim"}]),
        ];
        for list in lists {
            u.profile.insert("restrictedFields".into(), list.clone());
            let text = creation_changes_json(&u, &mut memo);
            let back = cairn_domain::user::changes_list(serde_json::from_str(&text).unwrap());
            let set = back.as_array().unwrap().iter().find(|c| c["field"] == "restrictedFields").unwrap();
            assert_eq!(set["new"], list, "{text}");
        }
    }
}
