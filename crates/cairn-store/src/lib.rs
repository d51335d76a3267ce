//! Persistence for Cairn on SQLite (the embedded default) and PostgreSQL.
//!
//! One `Store` over sqlx's `Any` driver: the SQL is written once in the subset both databases
//! share, with the few dialect differences switched on `Backend`, and each backend has its own
//! migrations. The directory layer opens a `Tx`, calls the query methods of `Db`, and commits;
//! it never writes SQL itself. The conformance suite in `tests/` runs on both backends.

mod access;
mod admins;
mod bulk;
mod changes;
mod credentials;
mod dirsync;
mod graph;
mod oidc;
mod paging;
mod radius;
mod rows;
mod scim;
mod service;
pub mod testing;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_domain::fields::Kind;
use cairn_domain::lifecycle::{Schedule, ScheduleStatus};
use cairn_domain::query::{Cond, ListQuery, Scalar};
use cairn_domain::{Admin, ApiKey, Event, Group, State, User};
use chrono::{DateTime, Utc};
use sqlx::any::{AnyArguments, AnyConnectOptions, AnyPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Arguments, Executor, Transaction};

pub(crate) use access::for_update;
pub use access::{Account, Ticket};
pub use admins::AdminExtras;
pub use bulk::{EventTexts, JobUpdate, NewToken, Prepared, UserKeys};
pub use changes::{Change, ChangeCursor, ChangeKind, MAX_CHANGES};
pub use dirsync::Link;
pub use oidc::{OidcGrant, OidcKey};
pub use rows::time_text;
pub use scim::{scim_group_where, scim_user_where, ScimWhere};
// Records the store reads and writes that front ends see too; they live in the domain.
pub use cairn_domain::{AdminSession, EventQuery, Job, JobResult, OutboxQuery, ScimGroupRow, ScimToken, ScimUserRow};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique index refused the write; the string names the field.
    #[error("duplicate {0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// A bulk INSERT wrote fewer rows than it was given (the transaction must not commit).
    #[error("incomplete write: {0}")]
    Incomplete(String),
    #[error("unsupported database URL '{0}': use sqlite://… or postgres://…")]
    BadUrl(String),
    /// A write waited too long for its turn (SQLite).
    #[error("database busy: {0}")]
    Busy(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pool: sqlx::Pool<Any>,
    backend: Backend,
    /// The SQLite database's WAL file (none in memory or on PostgreSQL).
    wal: Option<std::path::PathBuf>,
    /// Transactions this process committed: a read model that saw `n` knows that nothing
    /// this process wrote since is in its view when it reads more than `n` (see
    /// `changes.rs`).
    commits: Arc<AtomicU64>,
    /// Changes other processes announced (PostgreSQL's `cairn_changes`; see `changes.rs`).
    external: Arc<AtomicU64>,
    url: String,
    /// SQLite's one write lock, taken in this process in turn: SQLite's own busy handler
    /// polls, so a writer that commits and begins again at once (an import's batches, an
    /// index build) can starve a waiting request past `busy_timeout` into "database is
    /// locked". Waiting here is first come, first served.
    write_gate: Arc<tokio::sync::Mutex<()>>,
}

/// How long a write waits for its turn before it fails as busy (a large import's index
/// build holds the lock for seconds; a stuck writer must still not hang every request).
const WRITE_GATE_WAIT: Duration = Duration::from_secs(120);

impl Store {
    /// Connects to `sqlite://PATH` (created when missing) or `postgres://…`.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::BadUrl(url.to_string()));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        let opts: AnyConnectOptions = url.parse().map_err(|_| StoreError::BadUrl(url.clone()))?;
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the writer; NORMAL is durable in WAL mode
                        // against process crashes, which is what a kill -9 is. 16 KiB pages
                        // (set only while the file is new) and statement journals in memory
                        // cut the cost of keeping a dozen indexes on users in large imports.
                        // A WAL that a large import grew is cut back to 64 MiB when it
                        // next starts over.
                        conn.execute(
                            format!(
                                "PRAGMA page_size=16384; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; \
                                 PRAGMA busy_timeout={BUSY_TIMEOUT_MS}; PRAGMA foreign_keys=ON; \
                                 PRAGMA temp_store=MEMORY; PRAGMA journal_size_limit=67108864;"
                            )
                            .as_str(),
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        let wal = match backend {
            Backend::Sqlite => url
                .parse::<sqlx::sqlite::SqliteConnectOptions>()
                .ok()
                .map(|o| o.get_filename().to_path_buf())
                .filter(|p| !p.as_os_str().is_empty() && p.as_os_str() != ":memory:")
                .map(|p| {
                    let mut name = p.into_os_string();
                    name.push("-wal");
                    name.into()
                }),
            Backend::Postgres => None,
        };
        Ok(Store {
            pool,
            backend,
            wal,
            commits: Arc::default(),
            external: Arc::default(),
            url: url.clone(),
            write_gate: Arc::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The migrations of this build for the store's backend.
    fn migrator(&self) -> sqlx::migrate::Migrator {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        }
    }

    /// One number of the migrations table (0 before the first migration).
    async fn migrations_applied(&self, aggregate: &str) -> Result<i64> {
        let mut c = self.pool.acquire().await?;
        let sql = format!("SELECT COALESCE({aggregate}, 0) FROM _sqlx_migrations WHERE success = TRUE");
        Ok(sqlx::query(&sql).fetch_one(&mut *c).await.ok().and_then(|r| rows::get_i64(&r, 0).ok()).unwrap_or(0))
    }

    pub async fn migrate(&self) -> Result<()> {
        self.migrator().run(&self.pool).await?;
        // An import that died while loading leaves these missing: every start puts them back.
        if !self.read().await?.db().missing_user_search_indexes().await?.is_empty() {
            let mut tx = self.begin().await?;
            tx.db().create_user_search_indexes().await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// True when the database answers and every migration has been applied.
    pub async fn ready(&self) -> Result<bool> {
        // A database that does not answer is an error; one never migrated has applied 0.
        drop(self.pool.acquire().await?);
        Ok(self.migrations_applied("COUNT(*)").await? as usize >= self.migrator().iter().count())
    }

    /// A transaction for a change. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so two writers queue instead of failing on lock upgrade.
    pub async fn begin(&self) -> Result<Tx> {
        let (tx, gate) = match self.backend {
            Backend::Sqlite => {
                let gate = write_turn(&self.write_gate).await?;
                (self.pool.begin_with("BEGIN IMMEDIATE").await?, Some(gate))
            }
            Backend::Postgres => (self.pool.begin().await?, None),
        };
        Ok(Tx { tx, backend: self.backend, commits: self.commits.clone(), _gate: gate })
    }

    /// One connection held for a series of write transactions (an import's batches), so the
    /// pages it caches carry over from one batch to the next. On SQLite it holds a larger page
    /// cache and leaves checkpoints to another connection (see [`Writer::committed`]) until
    /// [`Writer::finish`].
    pub async fn writer(&self) -> Result<Writer> {
        let mut c = self.pool.acquire().await?;
        let checkpoints = match self.backend {
            Backend::Sqlite => {
                c.execute(format!("PRAGMA cache_size=-{BULK_CACHE_KIB}; PRAGMA wal_autocheckpoint=0;").as_str())
                    .await?;
                Some(Checkpointer::start(self.pool.clone()))
            }
            Backend::Postgres => None,
        };
        Ok(Writer {
            c: Some(c),
            backend: self.backend,
            checkpoints,
            wal: self.wal.clone(),
            commits: self.commits.clone(),
            write_gate: self.write_gate.clone(),
            held: None,
        })
    }

    /// A pooled connection for reads.
    pub async fn read(&self) -> Result<Conn> {
        Ok(Conn { c: self.pool.acquire().await?, backend: self.backend })
    }

    /// The URL the store was opened with (for `pg_dump` and `pg_restore`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Writes a consistent copy of a SQLite database to `path` (which must not exist) while
    /// the database keeps serving: `VACUUM INTO` reads one snapshot, and in WAL mode writers
    /// go on beside it. PostgreSQL is copied by `pg_dump` instead.
    pub async fn snapshot_into(&self, path: &std::path::Path) -> Result<()> {
        if self.backend != Backend::Sqlite {
            return Err(StoreError::Incomplete("only a SQLite database is copied by the store".into()));
        }
        let mut c = self.pool.acquire().await?;
        sqlx::query("VACUUM INTO $1").bind(path.to_string_lossy().into_owned()).execute(&mut *c).await?;
        Ok(())
    }

    /// The tables of the database (of the current schema on PostgreSQL): none means nothing
    /// was ever written there, the only kind of database a restore goes into.
    pub async fn tables(&self) -> Result<Vec<String>> {
        let sql = match self.backend {
            Backend::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
            Backend::Postgres => {
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() \
                 ORDER BY table_name"
            }
        };
        let mut c = self.pool.acquire().await?;
        let rows = sqlx::query(sql).fetch_all(&mut *c).await?;
        rows.iter().map(|r| rows::get_text(r, 0)).collect()
    }

    /// The newest migration applied to the database, and the newest this build knows.
    pub async fn schema_versions(&self) -> Result<(i64, i64)> {
        let applied = self.migrations_applied("MAX(version)").await?;
        Ok((applied, self.migrator().iter().map(|m| m.version).max().unwrap_or(0)))
    }

    pub async fn close(&self) {
        self.pool.close().await
    }
}

pub struct Tx {
    tx: Transaction<'static, Any>,
    backend: Backend,
    commits: Arc<AtomicU64>,
    /// The turn at SQLite's write lock, given up after the transaction (fields drop in order).
    _gate: Option<tokio::sync::OwnedMutexGuard<()>>,
}

/// This process's turn at SQLite's write lock (see `Store::write_gate`).
async fn write_turn(gate: &Arc<tokio::sync::Mutex<()>>) -> Result<tokio::sync::OwnedMutexGuard<()>> {
    tokio::time::timeout(WRITE_GATE_WAIT, gate.clone().lock_owned()).await.map_err(|_| {
        StoreError::Busy(format!("another change held the database for over {} s", WRITE_GATE_WAIT.as_secs()))
    })
}

impl Tx {
    pub fn db(&mut self) -> Db<'_> {
        Db { c: &mut self.tx, b: self.backend }
    }
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        self.commits.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Commits a transaction that wrote nothing the change log records (a credential's time
    /// of last use), without counting it in [`Store::local_commits`]: counts and read models
    /// kept while nothing changed stay valid. (Counted, the once-a-minute touch of an API key
    /// made every large list on PostgreSQL count its users again: 130 ms at 1,000,000.)
    pub async fn commit_unlogged(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }

    /// A savepoint inside this transaction: one record's writes among many, undone alone
    /// when it is dropped without `commit`.
    pub async fn savepoint(&mut self) -> Result<Savepoint<'_>> {
        Ok(Savepoint {
            tx: sqlx::Connection::begin(&mut *self.tx).await?,
            backend: self.backend,
            commits: None,
            _gate: None,
        })
    }
}

/// See [`Store::writer`].
pub struct Writer {
    /// `None` only once [`Writer::finish`] has given it back.
    c: Option<PoolConnection<Any>>,
    backend: Backend,
    /// Checkpoints the WAL behind the writer (SQLite).
    checkpoints: Option<Checkpointer>,
    wal: Option<std::path::PathBuf>,
    commits: Arc<AtomicU64>,
    write_gate: Arc<tokio::sync::Mutex<()>>,
    /// The transaction [`Writer::hold`] opened, with its turn at SQLite's write lock.
    held: Option<Held>,
}

struct Held {
    since: std::time::Instant,
    _gate: Option<tokio::sync::OwnedMutexGuard<()>>,
}

/// The page cache of a bulk writer's connection (SQLite), and SQLite's default, which it
/// goes back to: with a larger one a batch's dirty index pages are neither spilled nor read
/// again by the next batch.
const BULK_CACHE_KIB: u32 = 16 * 1024;
const DEFAULT_CACHE_KIB: u32 = 2000;
/// A writer's page cache while it builds indexes (see `Writer::build_user_search_indexes`).
const INDEX_BUILD_CACHE_KIB: u32 = 4 * 1024;
/// How long a connection waits for a lock another holds before giving up.
const BUSY_TIMEOUT_MS: u32 = 10_000;
/// SQLite's default WAL size, in pages, past which a commit checkpoints.
const DEFAULT_AUTOCHECKPOINT: u32 = 1000;
/// While checkpoints run behind a bulk writer the WAL cannot start over (the writer is always
/// in a transaction), so it grows by all the writer writes; past this size the writer waits
/// for a checkpoint to finish, and its next transaction starts the WAL again from the
/// beginning (unless a reader still needs it).
const BULK_WAL_BYTES: u64 = 256 * 1024 * 1024;

impl Writer {
    fn conn(&mut self) -> &mut AnyConnection {
        self.c.as_mut().expect("a writer is used only until finished")
    }

    /// A transaction on this connection, as [`Store::begin`] starts them.
    pub async fn begin(&mut self) -> Result<Savepoint<'_>> {
        if self.held.is_some() {
            // Its turn at the write lock is the held transaction's: waiting for it would wait forever.
            return Err(StoreError::Incomplete("a writer's held transaction must be committed first".into()));
        }
        let backend = self.backend;
        let commits = self.commits.clone();
        // Each batch takes its turn, so requests get theirs between batches.
        let gate = match backend {
            Backend::Sqlite => Some(write_turn(&self.write_gate).await?),
            Backend::Postgres => None,
        };
        let c = self.conn();
        let tx = match backend {
            Backend::Sqlite => sqlx::Connection::begin_with(c, "BEGIN IMMEDIATE").await?,
            Backend::Postgres => sqlx::Connection::begin(c).await?,
        };
        Ok(Savepoint { tx, backend, commits: Some(commits), _gate: gate })
    }

    pub fn db(&mut self) -> Db<'_> {
        let b = self.backend;
        Db { c: self.conn(), b }
    }

    /// Opens a transaction that stays open across calls until [`Writer::commit_held`] (when
    /// none is open yet). Each commit rewrites every index page it touched, so work arriving
    /// in many small pieces commits far less data together; [`Writer::part`] gives each piece
    /// a savepoint of its own. Nothing else may write meanwhile: commit first.
    pub async fn hold(&mut self) -> Result<()> {
        if self.held.is_some() {
            return Ok(());
        }
        let backend = self.backend;
        let gate = match backend {
            Backend::Sqlite => Some(write_turn(&self.write_gate).await?),
            Backend::Postgres => None,
        };
        let statement = (backend == Backend::Sqlite).then_some("BEGIN IMMEDIATE".into());
        <<Any as sqlx::Database>::TransactionManager as sqlx::TransactionManager>::begin(self.conn(), statement)
            .await?;
        self.held = Some(Held { since: std::time::Instant::now(), _gate: gate });
        Ok(())
    }

    /// How long the held transaction has been open (`None`: none is).
    pub fn held_for(&self) -> Option<std::time::Duration> {
        self.held.as_ref().map(|h| h.since.elapsed())
    }

    /// A savepoint inside the held transaction: one piece of work, undone alone by
    /// [`Savepoint::rollback`].
    pub async fn part(&mut self) -> Result<Savepoint<'_>> {
        if self.held.is_none() {
            return Err(StoreError::Incomplete("a writer's part needs a held transaction".into()));
        }
        let backend = self.backend;
        Ok(Savepoint { tx: sqlx::Connection::begin(self.conn()).await?, backend, commits: None, _gate: None })
    }

    /// Commits the held transaction, if any (see [`Writer::committed`] for the checkpoint).
    pub async fn commit_held(&mut self) -> Result<()> {
        if self.held.is_none() {
            return Ok(());
        }
        type Manager = <Any as sqlx::Database>::TransactionManager;
        let r = <Manager as sqlx::TransactionManager>::commit(self.conn()).await;
        // The write lock's turn goes with the transaction, committed or not; a commit that
        // failed leaves it open, so it is rolled back (what it held is lost, and said).
        self.held = None;
        if let Err(e) = r {
            let _ = <Manager as sqlx::TransactionManager>::rollback(self.conn()).await;
            return Err(e.into());
        }
        self.commits.fetch_add(1, Ordering::Release);
        self.committed().await;
        Ok(())
    }

    /// Builds whichever of [`USER_SEARCH_INDEXES`] are missing, in a transaction of its own.
    /// On SQLite the sort of their keys spills to temporary files rather than memory while it
    /// runs (a million users' keys would hold a hundred MB per index), and with a small page
    /// cache: each of the sort's threads keeps a buffer the size of the cache, so the bulk
    /// cache made a 1M import's builds peak 49 MB higher, for no speed (4 MiB built them as
    /// fast or faster). The settings can only change between transactions, so they are set
    /// here and put back after.
    pub async fn build_user_search_indexes(&mut self) -> Result<()> {
        let sqlite = self.backend == Backend::Sqlite;
        if sqlite {
            self.conn()
                .execute(format!("PRAGMA temp_store = FILE; PRAGMA cache_size = -{INDEX_BUILD_CACHE_KIB}").as_str())
                .await?;
        }
        let built = async {
            let mut tx = self.begin().await?;
            tx.db().create_user_search_indexes().await?;
            tx.commit().await
        }
        .await;
        if sqlite {
            self.conn()
                .execute(format!("PRAGMA temp_store = MEMORY; PRAGMA cache_size = -{BULK_CACHE_KIB}").as_str())
                .await?;
        }
        built
    }

    /// Call after each commit: the WAL pages it wrote are copied into the database by another
    /// connection while this one goes on writing (once the WAL is past [`BULK_WAL_BYTES`],
    /// this waits for that copy, so that the next transaction starts the WAL over).
    pub async fn committed(&mut self) {
        if let Some(ck) = &mut self.checkpoints {
            let asked = ck.nudge();
            // The file only shrinks when the WAL starts over (journal_size_limit), so its size
            // is what the writer has added since.
            let size = self.wal.as_ref().and_then(|w| std::fs::metadata(w).ok()).map_or(0, |m| m.len());
            if size > BULK_WAL_BYTES {
                ck.wait_for(asked).await;
            }
        }
    }

    /// Checkpoints what the writer committed, cuts the WAL back, and gives the connection
    /// back to the pool with its usual settings (or closes it when they cannot be restored).
    pub async fn finish(mut self) -> Result<()> {
        // What a held transaction holds is complete work: kept.
        self.commit_held().await?;
        // What was committed since the last checkpoint (the last batches, an index build: 0.8
        // GB at a million users) is copied now, by the checkpointer (readers and other writers
        // go on), and then the WAL is cut back to nothing. Left as it was, the next ordinary
        // commit would do both (2.2 s and 0.5 s measured after a 1,000,000-user import), and
        // the request behind it would wait.
        if let Some(mut ck) = self.checkpoints.take() {
            let last = ck.nudge();
            ck.wait_for(last).await;
            ck.finish().await;
        }
        let Some(mut c) = self.c.take() else { return Ok(()) };
        if self.backend == Backend::Sqlite {
            // The cut holds off writers while the file shrinks; it is skipped (a later commit
            // does it) rather than waited for while a reader still uses the WAL.
            let restore = format!(
                "PRAGMA busy_timeout=200; PRAGMA wal_checkpoint(TRUNCATE); PRAGMA busy_timeout={BUSY_TIMEOUT_MS}; \
                 PRAGMA cache_size=-{DEFAULT_CACHE_KIB}; PRAGMA wal_autocheckpoint={DEFAULT_AUTOCHECKPOINT};"
            );
            if let Err(e) = c.execute(restore.as_str()).await {
                let _ = c.close().await;
                return Err(e.into());
            }
        }
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Not finished (an error returned early): the connection still has the bulk
        // settings, so it is closed rather than handed to another user of the pool.
        if let Some(c) = self.c.take() {
            // A transaction left held is not handed on either.
            if self.backend == Backend::Sqlite || self.held.is_some() {
                drop(c.detach());
            }
        }
    }
}

/// Runs `PRAGMA wal_checkpoint(PASSIVE)` on a connection of its own when asked. A bulk
/// writer leaves checkpoints to it: copying a commit's pages from the WAL into the database
/// (and the two fsyncs) then overlaps the next transaction's writes instead of stalling them.
/// A failed checkpoint is only logged: the data is committed in the WAL, and a later
/// checkpoint copies it.
struct Checkpointer {
    /// How many checkpoints have been asked for.
    asked: tokio::sync::watch::Sender<u64>,
    /// The last request a finished checkpoint covered.
    done: tokio::sync::watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Checkpointer {
    fn start(pool: sqlx::Pool<Any>) -> Checkpointer {
        let (asked, mut asks) = tokio::sync::watch::channel(0u64);
        let (done_tx, done) = tokio::sync::watch::channel(0u64);
        let task = tokio::spawn(async move {
            let mut conn: Option<PoolConnection<Any>> = None;
            // Requests made while one runs are answered by the next: a checkpoint copies
            // everything committed before it starts.
            while asks.changed().await.is_ok() {
                let n = *asks.borrow_and_update();
                let c = match &mut conn {
                    Some(c) => c,
                    None => match pool.acquire().await {
                        Ok(c) => conn.insert(c),
                        Err(e) => {
                            tracing::warn!(error = %e, "no connection for a checkpoint");
                            done_tx.send_replace(n);
                            continue;
                        }
                    },
                };
                if let Err(e) = c.execute("PRAGMA wal_checkpoint(PASSIVE)").await {
                    tracing::warn!(error = %e, "checkpoint failed");
                }
                done_tx.send_replace(n);
            }
        });
        Checkpointer { asked, done, task }
    }

    /// Asks for a checkpoint; returns its number.
    fn nudge(&self) -> u64 {
        self.asked.send_modify(|n| *n += 1);
        *self.asked.borrow()
    }

    /// Until checkpoint `n` (or a later one) has finished.
    async fn wait_for(&mut self, n: u64) {
        let _ = self.done.wait_for(|covered| *covered >= n).await;
    }

    async fn finish(self) {
        drop(self.asked);
        let _ = self.task.await;
    }
}

/// The non-unique indexes on users (SQLite), as the migrations create them. A large import
/// into a smaller directory drops them and builds them again at its end: building an index
/// from all its keys at once costs a fraction of 100,000s of inserts at random places (names
/// arrive in no order). The unique indexes stay: they are what finds a taken username.
///
/// A partial index that a column's value (or truth) lets a user into is left in place when the
/// first users of the import have none ([`entry_column`]): keeping an index nobody enters costs
/// nothing, building it again a read of every user (a tenth of a second each at a million).
pub const USER_SEARCH_INDEXES: &[(&str, &str)] = &[
    ("users_state_ix", "users (state, id)"),
    ("users_firstname_ix", "users (lower(firstname), id)"),
    ("users_lastname_ix", "users (lower(lastname), id)"),
    ("users_displayname_ix", "users (lower(displayname), id)"),
    ("users_department_ix", "users (lower(department), id)"),
    ("users_employeeidentifier_lower_ix", "users (lower(employeeidentifier))"),
    ("users_department_lastname_ix", "users (lower(department), lower(lastname), id, department)"),
    ("users_state_lastname_ix", "users (state, lower(lastname), id)"),
    ("users_locked_lastname_ix", "users (lower(lastname), id) WHERE account_locked"),
    ("users_locked_id_ix", "users (id) WHERE account_locked"),
    ("users_expired_lastname_ix", "users (lower(lastname), id) WHERE password_expired"),
    ("users_expired_id_ix", "users (id) WHERE password_expired"),
    ("users_pending_lastname_ix", "users (lower(lastname), id) WHERE password_hash IS NULL"),
    ("users_pending_id_ix", "users (id) WHERE password_hash IS NULL"),
    ("users_jobtitle_ix", "users (jobtitle, id)"),
    ("users_company_ix", "users (company, id)"),
    ("users_costcenter_ix", "users (costcenter, id)"),
    ("users_employeetype_ix", "users (employeetype, id)"),
    ("users_location_ix", "users (location, id)"),
    ("users_jobtitle_lastname_ix", "users (jobtitle, lower(lastname), id) WHERE jobtitle IS NOT NULL"),
    ("users_company_lastname_ix", "users (company, lower(lastname), id) WHERE company IS NOT NULL"),
    ("users_costcenter_lastname_ix", "users (costcenter, lower(lastname), id) WHERE costcenter IS NOT NULL"),
    ("users_employeetype_lastname_ix", "users (employeetype, lower(lastname), id) WHERE employeetype IS NOT NULL"),
    ("users_location_lastname_ix", "users (location, lower(lastname), id) WHERE location IS NOT NULL"),
    ("users_alternateemail_ix", "users (alternateemail, id) WHERE alternateemail IS NOT NULL"),
    ("users_description_ix", "users (description, id) WHERE description IS NOT NULL"),
    ("users_password_date_ix", "users (password_date, id) WHERE password_date IS NOT NULL"),
    ("users_unix_uid_ix", "users (unix_uid, id) WHERE unix_uid IS NOT NULL"),
    ("users_unix_guid_ix", "users (unix_guid, id) WHERE unix_guid IS NOT NULL"),
];

/// The column a user needs a value in (or true) to enter the partial index `on`
/// (`… WHERE col IS NOT NULL`, `… WHERE col`); `None` for a full index or another condition
/// (no password: most users).
fn entry_column(on: &str) -> Option<&str> {
    let cond = on.split_once(" WHERE ")?.1;
    let col = cond.strip_suffix(" IS NOT NULL").unwrap_or(cond);
    (!col.contains(' ')).then_some(col)
}

/// A transaction borrowing its connection: a savepoint inside a [`Tx`], or a transaction on a
/// [`Writer`].
pub struct Savepoint<'t> {
    tx: Transaction<'t, Any>,
    backend: Backend,
    /// A writer's transactions count as commits; savepoints inside one do not.
    commits: Option<Arc<AtomicU64>>,
    /// A writer's transaction holds its turn at SQLite's write lock (see `write_turn`).
    _gate: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Savepoint<'_> {
    pub fn db(&mut self) -> Db<'_> {
        Db { c: &mut self.tx, b: self.backend }
    }
    /// Rolls back now: a writer keeps its connection, so a transaction merely dropped would
    /// hold SQLite's write lock until the writer's next statement.
    pub async fn rollback(self) -> Result<()> {
        self.tx.rollback().await?;
        Ok(())
    }
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        if let Some(c) = self.commits {
            c.fetch_add(1, Ordering::Release);
        }
        Ok(())
    }
}

pub struct Conn {
    c: PoolConnection<Any>,
    backend: Backend,
}

impl Conn {
    pub fn db(&mut self) -> Db<'_> {
        Db { c: &mut self.c, b: self.backend }
    }
}

/// Query methods over one connection or transaction.
pub struct Db<'c> {
    c: &'c mut AnyConnection,
    b: Backend,
}

/// Bound arguments with their `$n` placeholders; kept as values so that one WHERE clause
/// can serve both the count and the page query.
#[derive(Default, Clone)]
pub(crate) struct Args {
    vals: Vec<Arg>,
    /// Anonymous `?` placeholders (each used once): SQLite resolves a named `$N` parameter
    /// by a linear scan, so binding thousands of them is quadratic; `?` binds by position.
    pub(crate) anon: bool,
}

#[derive(Clone)]
pub(crate) enum Arg {
    Text(Option<String>),
    Bool(bool),
    Int(Option<i64>),
}

impl From<String> for Arg {
    fn from(v: String) -> Arg {
        Arg::Text(Some(v))
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Arg {
        Arg::Bool(v)
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Arg {
        Arg::Int(Some(v))
    }
}

impl Args {
    /// For statements with many parameters, each placeholder used exactly once.
    pub(crate) fn positional(b: Backend) -> Args {
        Args { vals: Vec::new(), anon: b == Backend::Sqlite }
    }

    /// Adds a value whose placeholder the caller writes (`?` for every SQLite bulk value).
    fn bind(&mut self, v: impl Into<Arg>) {
        self.vals.push(v.into());
    }

    fn push(&mut self, v: impl Into<Arg>) -> String {
        self.vals.push(v.into());
        if self.anon {
            return "?".into();
        }
        format!("${}", self.vals.len())
    }

    /// The arguments, moved rather than copied (bulk statements bind tens of thousands).
    fn finish(self) -> AnyArguments<'static> {
        let mut a = AnyArguments::default();
        for v in self.vals {
            match v {
                Arg::Text(t) => a.add(t),
                Arg::Bool(b) => a.add(b),
                Arg::Int(n) => a.add(n),
            }
            .expect("encode argument");
        }
        a
    }

    fn build(&self) -> AnyArguments<'static> {
        let mut a = AnyArguments::default();
        for v in &self.vals {
            match v.clone() {
                Arg::Text(t) => a.add(t),
                Arg::Bool(b) => a.add(b),
                Arg::Int(n) => a.add(n),
            }
            .expect("encode argument");
        }
        a
    }
}

pub(crate) fn map_unique(e: sqlx::Error) -> StoreError {
    if let Some(db) = e.as_database_error() {
        if db.is_unique_violation() {
            let msg = format!("{} {}", db.message(), db.constraint().unwrap_or(""));
            // SQLite names the column ("users.username"), PostgreSQL the index.
            for (needles, field) in [
                (["users.username", "users_username_uq"], "username"),
                (["users.email", "users_email_uq"], "email"),
                (["users.employeeidentifier", "users_employeeidentifier_uq"], "employeeIdentifier"),
                (["usergroups.name_key", "usergroups_name_uq"], "name"),
                (["admins.email", "admins_email_uq"], "email"),
                (["apikeys.key_hash", "apikeys_hash_uq"], "key"),
                (["service_accounts.client_id", "service_accounts_client_uq"], "client_id"),
                (["directory_connections.name", "directory_connections_name_uq"], "name"),
            ] {
                if needles.iter().any(|n| msg.contains(n)) {
                    return StoreError::Conflict(field.to_string());
                }
            }
            return StoreError::Conflict("value".into());
        }
    }
    StoreError::Db(e)
}

impl Db<'_> {
    // ---- users -------------------------------------------------------------------------

    pub async fn insert_user(&mut self, u: &User) -> Result<()> {
        let mut a = Args::default();
        let mut cols = Vec::new();
        let mut vals = Vec::new();
        rows::bind_user(u, &mut |col, v| {
            cols.push(col);
            vals.push(push_value(&mut a, v));
        });
        let sql = format!("INSERT INTO users ({}) VALUES ({})", cols.join(", "), vals.join(", "));
        sqlx::query_with(&sql, a.build()).execute(&mut *self.c).await.map_err(map_unique)?;
        Ok(())
    }

    pub async fn update_user(&mut self, u: &User) -> Result<bool> {
        let mut a = Args::default();
        let mut sets = Vec::new();
        rows::bind_user(u, &mut |col, v| {
            if col != "id" {
                let p = push_value(&mut a, v);
                sets.push(format!("{col} = {p}"));
            }
        });
        let p = a.push(u.id.clone());
        let sql = format!("UPDATE users SET {} WHERE id = {p}", sets.join(", "));
        let r = sqlx::query_with(&sql, a.build()).execute(&mut *self.c).await.map_err(map_unique)?;
        Ok(r.rows_affected() == 1)
    }

    /// Deletes a user with its memberships and associations.
    pub async fn delete_user(&mut self, id: &str) -> Result<bool> {
        sqlx::query("DELETE FROM group_members WHERE user_id = $1").bind(id.to_string()).execute(&mut *self.c).await?;
        let r = sqlx::query("DELETE FROM users WHERE id = $1").bind(id.to_string()).execute(&mut *self.c).await?;
        // After the row: an association being added to this user holds the row (see
        // `Db::subject_name`), so by now it is committed and this statement sees it.
        self.remove_subject_associations(cairn_domain::graph::SubjectKind::User, id).await?;
        self.revoke_oidc_of_user(id).await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn get_user(&mut self, id: &str) -> Result<Option<User>> {
        self.user_where("id", id).await
    }

    /// The user whose username is `username`, compared case-insensitively (§2.1).
    pub async fn user_by_username(&mut self, username: &str) -> Result<Option<User>> {
        self.user_where("lower(username)", &username.to_lowercase()).await
    }

    pub async fn user_by_email(&mut self, email: &str) -> Result<Option<User>> {
        self.user_where("email", &email.to_lowercase()).await
    }

    async fn user_where(&mut self, col: &'static str, v: &str) -> Result<Option<User>> {
        let sql = format!("SELECT * FROM users WHERE {col} = $1");
        let row = sqlx::query(&sql).bind(v.to_string()).fetch_optional(&mut *self.c).await?;
        row.map(|r| rows::user_from_row(&r)).transpose()
    }

    /// Which unique fields of a prospective user are already taken by another user.
    pub async fn user_conflicts(
        &mut self,
        username: &str,
        email: &str,
        employee_id: Option<&str>,
        except_id: Option<&str>,
    ) -> Result<Vec<&'static str>> {
        let rows = sqlx::query(
            "SELECT username, email, employeeidentifier FROM users \
             WHERE (lower(username) = $1 OR email = $2 OR employeeidentifier = $3) AND id <> $4",
        )
        .bind(username.to_lowercase())
        .bind(email.to_string())
        .bind(employee_id.map(str::to_string))
        .bind(except_id.unwrap_or("").to_string())
        .fetch_all(&mut *self.c)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            if rows::get_opt_text(&r, "username")?.is_some_and(|u| u.eq_ignore_ascii_case(username)) {
                out.push("username");
            }
            if rows::get_opt_text(&r, "email")?.as_deref() == Some(email) {
                out.push("email");
            }
            if employee_id.is_some() && rows::get_opt_text(&r, "employeeidentifier")?.as_deref() == employee_id {
                out.push("employeeIdentifier");
            }
        }
        out.dedup();
        Ok(out)
    }

    /// The page of users a list query asks for, and how many match in all.
    pub async fn list_users(&mut self, q: &ListQuery) -> Result<(i64, Vec<User>)> {
        let page = self.list_users_page(q, None).await?;
        Ok((page.total, page.users))
    }

    pub(crate) fn user_where_clause(&self, q: &ListQuery, a: &mut Args) -> String {
        let mut clauses = Vec::new();
        for c in &q.all {
            clauses.push(cond_sql(self.b, c, a));
        }
        if !q.any.is_empty() {
            let ors: Vec<String> = q.any.iter().map(|c| cond_sql(self.b, c, a)).collect();
            clauses.push(format!("({})", ors.join(" OR ")));
        }
        for term in &q.search {
            let ors: Vec<String> = if q.search_substring {
                let like = match self.b {
                    Backend::Sqlite => "LIKE",
                    Backend::Postgres => "ILIKE",
                };
                let p = a.push(format!("%{}%", escape_like(term)));
                q.search_fields.iter().map(|f| format!("{} {like} {p} ESCAPE '\\'", f.column)).collect()
            } else {
                // A prefix as a range over lowercase values: every branch is an index range.
                let t = term.to_lowercase();
                let lo = a.push(t.clone());
                let hi = a.push(format!("{t}\u{10FFFF}"));
                q.search_fields
                    .iter()
                    .map(|f| {
                        let expr = match f.column {
                            "email" => f.column.to_string(),
                            c => format!("lower({c})"),
                        };
                        format!("({expr} >= {lo} AND {expr} < {hi})")
                    })
                    .collect()
            };
            clauses.push(format!("({})", ors.join(" OR ")));
        }
        if clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", clauses.join(" AND "))
        }
    }

    /// Drops the indexes of [`USER_SEARCH_INDEXES`] (SQLite only; false, doing nothing, on
    /// PostgreSQL, where dropping an index locks out readers until the transaction ends),
    /// but the partial ones none of `sample` (the first users of the load) would enter.
    pub async fn drop_user_search_indexes(&mut self, sample: &[User]) -> Result<bool> {
        if self.b != Backend::Sqlite {
            return Ok(false);
        }
        for (name, on) in USER_SEARCH_INDEXES {
            if entry_column(on).is_some_and(|col| !sample.iter().any(|u| rows::has_value(u, col))) {
                continue;
            }
            sqlx::query(&format!("DROP INDEX IF EXISTS {name}")).execute(&mut *self.c).await?;
        }
        Ok(true)
    }

    /// Which of [`USER_SEARCH_INDEXES`] the database lacks (SQLite; none on PostgreSQL).
    pub async fn missing_user_search_indexes(&mut self) -> Result<Vec<&'static str>> {
        if self.b != Backend::Sqlite {
            return Ok(vec![]);
        }
        let present: Vec<String> =
            sqlx::query("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'users'")
                .fetch_all(&mut *self.c)
                .await?
                .iter()
                .map(|r| rows::get_text(r, "name"))
                .collect::<Result<_>>()?;
        Ok(USER_SEARCH_INDEXES.iter().map(|(name, _)| *name).filter(|n| !present.iter().any(|p| p == n)).collect())
    }

    /// Builds whichever of [`USER_SEARCH_INDEXES`] are missing (SQLite only).
    pub async fn create_user_search_indexes(&mut self) -> Result<()> {
        if self.b != Backend::Sqlite {
            return Ok(());
        }
        // Sorting the keys may use a second core (an import has finished with its own).
        sqlx::query("PRAGMA threads = 2").execute(&mut *self.c).await?;
        for (name, on) in USER_SEARCH_INDEXES {
            sqlx::query(&format!("CREATE INDEX IF NOT EXISTS {name} ON {on}")).execute(&mut *self.c).await?;
        }
        sqlx::query("PRAGMA threads = 0").execute(&mut *self.c).await?;
        Ok(())
    }

    pub async fn count_users_by_state(&mut self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM users GROUP BY state").fetch_all(&mut *self.c).await?;
        rows.iter().map(|r| Ok((rows::get_text(r, "state")?, rows::get_i64(r, "n")?))).collect()
    }

    // ---- groups ------------------------------------------------------------------------

    pub async fn insert_group(&mut self, g: &Group) -> Result<()> {
        sqlx::query(
            "INSERT INTO usergroups (id, name, name_key, description, email, attributes, membership_method, unix_gid, created, updated) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(g.id.clone())
        .bind(g.name.clone())
        .bind(g.name.to_lowercase())
        .bind(g.description.clone())
        .bind(g.email.clone())
        .bind(g.attributes.as_ref().map(|v| v.to_string()))
        .bind(g.membership_method.clone())
        .bind(g.unix_gid)
        .bind(time_text(g.created))
        .bind(time_text(g.updated))
        .execute(&mut *self.c)
        .await
        .map_err(map_unique)?;
        Ok(())
    }

    pub async fn update_group(&mut self, g: &Group) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE usergroups SET name = $2, name_key = $3, description = $4, email = $5, attributes = $6, \
             membership_method = $7, unix_gid = $8, updated = $9 WHERE id = $1",
        )
        .bind(g.id.clone())
        .bind(g.name.clone())
        .bind(g.name.to_lowercase())
        .bind(g.description.clone())
        .bind(g.email.clone())
        .bind(g.attributes.as_ref().map(|v| v.to_string()))
        .bind(g.membership_method.clone())
        .bind(g.unix_gid)
        .bind(time_text(g.updated))
        .execute(&mut *self.c)
        .await
        .map_err(map_unique)?;
        Ok(r.rows_affected() == 1)
    }

    /// Deletes a group with its memberships and associations.
    pub async fn delete_group(&mut self, id: &str) -> Result<bool> {
        sqlx::query("DELETE FROM group_members WHERE group_id = $1").bind(id.to_string()).execute(&mut *self.c).await?;
        let r = sqlx::query("DELETE FROM usergroups WHERE id = $1").bind(id.to_string()).execute(&mut *self.c).await?;
        // After the row, as in `delete_user`.
        self.remove_subject_associations(cairn_domain::graph::SubjectKind::UserGroup, id).await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn get_group(&mut self, id: &str) -> Result<Option<Group>> {
        let row = sqlx::query("SELECT * FROM usergroups WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *self.c)
            .await?;
        row.map(|r| rows::group_from_row(&r)).transpose()
    }

    pub async fn group_by_name(&mut self, name: &str) -> Result<Option<Group>> {
        let row = sqlx::query("SELECT * FROM usergroups WHERE name_key = $1")
            .bind(name.to_lowercase())
            .fetch_optional(&mut *self.c)
            .await?;
        row.map(|r| rows::group_from_row(&r)).transpose()
    }

    /// Groups ordered by name; `name` filters on an exact (case-insensitive) name.
    pub async fn list_groups(&mut self, name: Option<&str>, limit: i64, skip: i64) -> Result<(i64, Vec<Group>)> {
        let key = name.map(str::to_lowercase);
        let total = rows::get_i64(
            &sqlx::query("SELECT COUNT(*) FROM usergroups WHERE ($1 IS NULL OR name_key = $1)")
                .bind(key.clone())
                .fetch_one(&mut *self.c)
                .await?,
            0,
        )?;
        let rows = sqlx::query(
            "SELECT * FROM usergroups WHERE ($1 IS NULL OR name_key = $1) ORDER BY name_key, id LIMIT $2 OFFSET $3",
        )
        .bind(key)
        .bind(limit)
        .bind(skip)
        .fetch_all(&mut *self.c)
        .await?;
        Ok((total, rows.iter().map(rows::group_from_row).collect::<Result<_>>()?))
    }

    /// A page of groups by a v2 list query (filters AND'ed, sorted; by name when no sort is
    /// given, the id last so pages are stable), and how many match in all.
    pub async fn query_groups(
        &mut self,
        q: &cairn_domain::group_query::GroupQuery,
        limit: i64,
        skip: i64,
    ) -> Result<(i64, Vec<Group>)> {
        use cairn_domain::group_query::GroupOp;
        let mut a = Args::default();
        let mut clauses = vec![];
        for c in &q.all {
            // Folded fields have a lowercase column of their own (`name_key`); values come lowercase.
            let col = c.field.column;
            let v = c.values.first().cloned().unwrap_or_default();
            clauses.push(match c.op {
                GroupOp::Eq => format!("{col} = {}", a.push(v)),
                GroupOp::Ne => format!("({col} <> {} OR {col} IS NULL)", a.push(v)),
                GroupOp::Gt => format!("{col} > {}", a.push(v)),
                GroupOp::Ge => format!("{col} >= {}", a.push(v)),
                GroupOp::Lt => format!("{col} < {}", a.push(v)),
                GroupOp::Le => format!("{col} <= {}", a.push(v)),
                GroupOp::In => {
                    let ps: Vec<String> = c.values.iter().map(|v| a.push(v.clone())).collect();
                    format!("{col} IN ({})", ps.join(", "))
                }
                GroupOp::Search => {
                    format!("lower({col}) LIKE {} ESCAPE '\\'", a.push(format!("%{}%", escape_like(&v))))
                }
            });
        }
        let w = if clauses.is_empty() { String::new() } else { format!(" WHERE {}", clauses.join(" AND ")) };
        let total = rows::get_i64(
            &sqlx::query_with(&format!("SELECT COUNT(*) FROM usergroups{w}"), a.build())
                .fetch_one(&mut *self.c)
                .await?,
            0,
        )?;
        let mut order: Vec<String> = q
            .sort
            .iter()
            .map(|(f, desc)| {
                let expr = if f.column == "name_key" || f.column == "id" {
                    f.column.to_string()
                } else {
                    format!("lower({})", f.column)
                };
                if *desc {
                    format!("{expr} DESC NULLS LAST")
                } else {
                    format!("{expr} ASC NULLS FIRST")
                }
            })
            .collect();
        if order.is_empty() {
            order.push("name_key ASC".into());
        }
        if !q.sort.iter().any(|(f, _)| f.column == "id") {
            order.push("id ASC".into());
        }
        let (lim, off) = (a.push(limit), a.push(skip));
        let sql = format!("SELECT * FROM usergroups{w} ORDER BY {} LIMIT {lim} OFFSET {off}", order.join(", "));
        let rows = sqlx::query_with(&sql, a.build()).fetch_all(&mut *self.c).await?;
        Ok((total, rows.iter().map(rows::group_from_row).collect::<Result<_>>()?))
    }

    /// Adds a member; false when it already was one.
    pub async fn add_member(&mut self, group_id: &str, user_id: &str, now: DateTime<Utc>) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO group_members (group_id, user_id, added) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(group_id.to_string())
        .bind(user_id.to_string())
        .bind(time_text(now))
        .execute(&mut *self.c)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn remove_member(&mut self, group_id: &str, user_id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2")
            .bind(group_id.to_string())
            .bind(user_id.to_string())
            .execute(&mut *self.c)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Member user ids of a group, in the order they were added.
    pub async fn group_members(&mut self, group_id: &str, limit: i64, skip: i64) -> Result<(i64, Vec<String>)> {
        let total = rows::get_i64(
            &sqlx::query("SELECT COUNT(*) FROM group_members WHERE group_id = $1")
                .bind(group_id.to_string())
                .fetch_one(&mut *self.c)
                .await?,
            0,
        )?;
        let rows = sqlx::query(
            "SELECT user_id FROM group_members WHERE group_id = $1 ORDER BY added, user_id LIMIT $2 OFFSET $3",
        )
        .bind(group_id.to_string())
        .bind(limit)
        .bind(skip)
        .fetch_all(&mut *self.c)
        .await?;
        Ok((total, rows.iter().map(|r| rows::get_text(r, "user_id")).collect::<Result<_>>()?))
    }

    pub async fn groups_of_user(&mut self, user_id: &str) -> Result<Vec<Group>> {
        let rows = sqlx::query(
            "SELECT g.* FROM usergroups g JOIN group_members m ON m.group_id = g.id WHERE m.user_id = $1 ORDER BY g.name_key",
        )
        .bind(user_id.to_string())
        .fetch_all(&mut *self.c)
        .await?;
        rows.iter().map(rows::group_from_row).collect()
    }

    // ---- events ------------------------------------------------------------------------

    pub async fn insert_event(&mut self, e: &Event) -> Result<()> {
        sqlx::query(
            "INSERT INTO events (id, time, actor_kind, actor_id, actor_name, action, target_kind, target_id, target_name, \
             source, client_addr, outcome, changes, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(e.id.clone())
        .bind(time_text(e.time))
        .bind(e.actor.kind.clone())
        .bind(e.actor.id.clone())
        .bind(e.actor.name.clone())
        .bind(e.action.clone())
        .bind(e.target_kind.clone())
        .bind(e.target_id.clone())
        .bind(e.target_name.clone())
        .bind(e.source.clone())
        .bind(e.client_addr.clone())
        .bind(e.outcome.clone())
        .bind(e.changes.to_string())
        .bind(e.detail.to_string())
        .execute(&mut *self.c)
        .await?;
        Ok(())
    }

    /// Newest first.
    pub async fn list_events(&mut self, q: &EventQuery) -> Result<(i64, Vec<Event>)> {
        let mut a = Args::default();
        let mut clauses = Vec::new();
        if let Some(t) = &q.target_id {
            clauses.push(format!("target_id = {}", a.push(t.clone())));
        }
        if let Some(t) = &q.action {
            clauses.push(format!("action = {}", a.push(t.clone())));
        }
        if let Some(t) = q.since {
            clauses.push(format!("time >= {}", a.push(time_text(t))));
        }
        if let Some(t) = q.until {
            clauses.push(format!("time <= {}", a.push(time_text(t))));
        }
        let w = if clauses.is_empty() { String::new() } else { format!(" WHERE {}", clauses.join(" AND ")) };
        let total = rows::get_i64(
            &sqlx::query_with(&format!("SELECT COUNT(*) FROM events{w}"), a.build()).fetch_one(&mut *self.c).await?,
            0,
        )?;
        let lim = a.push(q.limit);
        let off = a.push(q.skip);
        let sql = format!("SELECT * FROM events{w} ORDER BY id DESC LIMIT {lim} OFFSET {off}");
        let rows = sqlx::query_with(&sql, a.build()).fetch_all(&mut *self.c).await?;
        Ok((total, rows.iter().map(rows::event_from_row).collect::<Result<_>>()?))
    }

    // ---- organization ------------------------------------------------------------------

    /// `(id, name, settings JSON, created)` of the one organization, once it exists.
    pub async fn organization(&mut self) -> Result<Option<(String, String, String, DateTime<Utc>)>> {
        let row = sqlx::query("SELECT * FROM organization ORDER BY id LIMIT 1").fetch_optional(&mut *self.c).await?;
        row.map(|r| {
            Ok((
                rows::get_text(&r, "id")?,
                rows::get_text(&r, "name")?,
                rows::get_text(&r, "settings")?,
                rows::parse_time(&rows::get_text(&r, "created")?)?,
            ))
        })
        .transpose()
    }

    pub async fn put_organization(
        &mut self,
        id: &str,
        name: &str,
        settings: &str,
        created: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO organization (id, name, settings, created) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, settings = excluded.settings",
        )
        .bind(id.to_string())
        .bind(name.to_string())
        .bind(settings.to_string())
        .bind(time_text(created))
        .execute(&mut *self.c)
        .await?;
        Ok(())
    }

    // ---- API keys and administrators ----------------------------------------------------

    pub async fn insert_apikey(&mut self, k: &ApiKey) -> Result<()> {
        sqlx::query(
            "INSERT INTO apikeys (id, name, role, key_hash, prefix, created, created_by, last_used) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(k.id.clone())
        .bind(k.name.clone())
        .bind(k.role.as_str())
        .bind(k.key_hash.clone())
        .bind(k.prefix.clone())
        .bind(time_text(k.created))
        .bind(k.created_by.clone())
        .bind(k.last_used.map(time_text))
        .execute(&mut *self.c)
        .await
        .map_err(map_unique)?;
        Ok(())
    }

    pub async fn list_apikeys(&mut self) -> Result<Vec<ApiKey>> {
        let rows = sqlx::query("SELECT * FROM apikeys ORDER BY id").fetch_all(&mut *self.c).await?;
        rows.iter().map(rows::apikey_from_row).collect()
    }

    pub async fn get_apikey(&mut self, id: &str) -> Result<Option<ApiKey>> {
        let row = sqlx::query("SELECT * FROM apikeys WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *self.c)
            .await?;
        row.map(|r| rows::apikey_from_row(&r)).transpose()
    }

    pub async fn apikey_by_hash(&mut self, hash: &str) -> Result<Option<ApiKey>> {
        let row = sqlx::query("SELECT * FROM apikeys WHERE key_hash = $1")
            .bind(hash.to_string())
            .fetch_optional(&mut *self.c)
            .await?;
        row.map(|r| rows::apikey_from_row(&r)).transpose()
    }

    pub async fn delete_apikey(&mut self, id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM apikeys WHERE id = $1").bind(id.to_string()).execute(&mut *self.c).await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn touch_apikey(&mut self, id: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE apikeys SET last_used = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(time_text(now))
            .execute(&mut *self.c)
            .await?;
        Ok(())
    }

    pub async fn insert_admin(&mut self, a: &Admin) -> Result<()> {
        sqlx::query(
            "INSERT INTO admins (id, email, password_hash, role, created, updated) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(a.id.clone())
        .bind(a.email.clone())
        .bind(a.password_hash.expose().to_string())
        .bind(a.role.as_str())
        .bind(time_text(a.created))
        .bind(time_text(a.updated))
        .execute(&mut *self.c)
        .await
        .map_err(map_unique)?;
        Ok(())
    }

    pub async fn admin_by_email(&mut self, email: &str) -> Result<Option<Admin>> {
        let row = sqlx::query("SELECT * FROM admins WHERE email = $1")
            .bind(email.to_lowercase())
            .fetch_optional(&mut *self.c)
            .await?;
        row.map(|r| rows::admin_from_row(&r)).transpose()
    }

    pub async fn count_admins(&mut self) -> Result<i64> {
        rows::get_i64(&sqlx::query("SELECT COUNT(*) FROM admins").fetch_one(&mut *self.c).await?, 0)
    }

    pub async fn count_apikeys(&mut self) -> Result<i64> {
        rows::get_i64(&sqlx::query("SELECT COUNT(*) FROM apikeys").fetch_one(&mut *self.c).await?, 0)
    }
}

impl Db<'_> {
    // ---- scheduled state changes ----------------------------------------------------------

    pub async fn insert_schedule(&mut self, s: &Schedule) -> Result<()> {
        sqlx::query(
            "INSERT INTO schedules (id, job_id, user_id, target_state, due, email, created, created_by, status, finished, message) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(s.id.clone())
        .bind(s.job_id.clone())
        .bind(s.user_id.clone())
        .bind(s.target.as_str())
        .bind(time_text(s.due))
        .bind(s.email.encode())
        .bind(time_text(s.created))
        .bind(serde_json::to_string(&s.created_by).expect("actor serializes"))
        .bind(s.status.as_str())
        .bind(s.finished.map(time_text))
        .bind(s.message.clone())
        .execute(&mut *self.c)
        .await
        .map_err(map_unique)?;
        Ok(())
    }

    pub async fn pending_schedule(&mut self, user_id: &str, target: State) -> Result<Option<Schedule>> {
        let row =
            sqlx::query("SELECT * FROM schedules WHERE user_id = $1 AND target_state = $2 AND status = 'pending'")
                .bind(user_id.to_string())
                .bind(target.as_str())
                .fetch_optional(&mut *self.c)
                .await?;
        row.map(|r| rows::schedule_from_row(&r)).transpose()
    }

    /// Ends a schedule that is still pending (or being fired in this transaction); false when
    /// it had already ended.
    pub async fn finish_schedule(
        &mut self,
        id: &str,
        status: ScheduleStatus,
        at: DateTime<Utc>,
        message: Option<&str>,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE schedules SET status = $2, finished = $3, message = $4 WHERE id = $1 AND status IN ('pending', 'firing')",
        )
        .bind(id.to_string())
        .bind(status.as_str())
        .bind(time_text(at))
        .bind(message.map(str::to_string))
        .execute(&mut *self.c)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Claims up to `limit` schedules due at `now` for this transaction. On PostgreSQL rows
    /// another process is firing are skipped, not waited for; on SQLite the transaction
    /// already holds the write lock. Either way a schedule is claimed by one transaction only,
    /// and it fires in that same transaction: exactly once.
    pub async fn claim_due_schedules(&mut self, now: DateTime<Utc>, limit: i64) -> Result<Vec<Schedule>> {
        let lock = match self.b {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE schedules SET status = 'firing' WHERE id IN \
             (SELECT id FROM schedules WHERE status = 'pending' AND due <= $1 ORDER BY due, id LIMIT $2{lock}) RETURNING *"
        );
        let rows = sqlx::query(&sql).bind(time_text(now)).bind(limit).fetch_all(&mut *self.c).await?;
        let mut v = rows.iter().map(rows::schedule_from_row).collect::<Result<Vec<_>>>()?;
        v.sort_by(|a, b| (a.due, &a.id).cmp(&(b.due, &b.id)));
        Ok(v)
    }

    /// The earliest due time among pending schedules.
    pub async fn next_due(&mut self) -> Result<Option<DateTime<Utc>>> {
        let row = sqlx::query("SELECT MIN(due) AS due FROM schedules WHERE status = 'pending'")
            .fetch_one(&mut *self.c)
            .await?;
        rows::get_opt_text(&row, "due")?.map(|s| rows::parse_time(&s)).transpose()
    }

    /// Pending schedules, soonest first; optionally of one user or one job.
    pub async fn pending_schedules(
        &mut self,
        user_id: Option<&str>,
        job_id: Option<&str>,
        limit: i64,
        skip: i64,
    ) -> Result<(i64, Vec<Schedule>)> {
        let w = "status = 'pending' AND ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR job_id = $2)";
        let total = rows::get_i64(
            &sqlx::query(&format!("SELECT COUNT(*) FROM schedules WHERE {w}"))
                .bind(user_id.map(str::to_string))
                .bind(job_id.map(str::to_string))
                .fetch_one(&mut *self.c)
                .await?,
            0,
        )?;
        let rows = sqlx::query(&format!("SELECT * FROM schedules WHERE {w} ORDER BY due, id LIMIT $3 OFFSET $4"))
            .bind(user_id.map(str::to_string))
            .bind(job_id.map(str::to_string))
            .bind(limit)
            .bind(skip)
            .fetch_all(&mut *self.c)
            .await?;
        Ok((total, rows.iter().map(rows::schedule_from_row).collect::<Result<_>>()?))
    }

    /// Pending schedules of several users at once (for the `scheduledStateChanges` of a page).
    pub async fn pending_schedules_of(&mut self, user_ids: &[String]) -> Result<Vec<Schedule>> {
        if user_ids.is_empty() {
            return Ok(vec![]);
        }
        let mut a = Args::default();
        let ps: Vec<String> = user_ids.iter().map(|id| a.push(id.clone())).collect();
        let sql = format!(
            "SELECT * FROM schedules WHERE status = 'pending' AND user_id IN ({}) ORDER BY due, id",
            ps.join(", ")
        );
        let rows = sqlx::query_with(&sql, a.build()).fetch_all(&mut *self.c).await?;
        rows.iter().map(rows::schedule_from_row).collect()
    }

    // ---- revocation ---------------------------------------------------------------------

    pub async fn insert_session(
        &mut self,
        id: &str,
        user_id: &str,
        kind: &str,
        created: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query("INSERT INTO sessions (id, user_id, kind, created, expires) VALUES ($1, $2, $3, $4, $5)")
            .bind(id.to_string())
            .bind(user_id.to_string())
            .bind(kind.to_string())
            .bind(time_text(created))
            .bind(time_text(expires))
            .execute(&mut *self.c)
            .await?;
        Ok(())
    }

    pub async fn count_sessions(&mut self, user_id: &str) -> Result<i64> {
        rows::get_i64(
            &sqlx::query("SELECT COUNT(*) FROM sessions WHERE user_id = $1")
                .bind(user_id.to_string())
                .fetch_one(&mut *self.c)
                .await?,
            0,
        )
    }

    /// Deletes every session and one-time token of a user; the number removed.
    pub async fn revoke_user_access(&mut self, user_id: &str) -> Result<u64> {
        let a = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user_id.to_string())
            .execute(&mut *self.c)
            .await?;
        let b = sqlx::query("DELETE FROM user_tokens WHERE user_id = $1")
            .bind(user_id.to_string())
            .execute(&mut *self.c)
            .await?;
        // And what applications hold of the user (OIDC codes and tokens).
        let c = self.revoke_oidc_of_user(user_id).await?;
        Ok(a.rows_affected() + b.rows_affected() + c)
    }
}

/// ORDER BY for a list query: NULLs first ascending and last descending on both databases,
/// the id last so pages are stable.
/// Name fields sort and compare through `lower()`: one index per field then serves the sort,
/// the prefix search and (narrowed first, then compared exactly) the equality filter.
fn folded(column: &str) -> bool {
    matches!(column, "firstname" | "lastname" | "displayname" | "department")
}

/// Usernames keep their case but are one name whatever the case (§2.1): filters and sorts
/// read them through `lower()`, which their unique index is on.
fn case_insensitive(column: &str) -> bool {
    column == "username"
}

/// Whether a sort field's column is NOT NULL in both schemas (flags and server-kept fields).
fn never_null(f: &cairn_domain::fields::Field) -> bool {
    f.kind == Kind::Bool
        || matches!(f.column, "id" | "username" | "email" | "state" | "created" | "creationsource" | "badloginattempts")
}

/// The expression a column sorts by.
pub(crate) fn sort_expr(column: &str) -> String {
    if column == "activated" {
        // Derived: having a password (the portal's "Password status" column sorts by it).
        "(password_hash IS NOT NULL)".into()
    } else if folded(column) || case_insensitive(column) {
        format!("lower({column})")
    } else {
        column.to_string()
    }
}

/// The id breaks ties in the direction of the last sort field, so that one index on
/// `(…, field, id)` read either way serves both directions (and a keyset cursor is one range).
pub(crate) fn order_by(q: &ListQuery) -> String {
    order_by_with(q, "")
}

/// As [`order_by`], each expression behind `prefix`: `+` keeps SQLite from reading a whole
/// index in sort order to find the few rows a prefix search matches (it reads the search's
/// index ranges and sorts their rows instead).
pub(crate) fn order_by_with(q: &ListQuery, prefix: &str) -> String {
    let mut order: Vec<String> = q
        .sort
        .iter()
        .map(|(f, desc)| {
            let expr = format!("{prefix}{}", sort_expr(f.column));
            if never_null(f) {
                // No NULLS clause where there are none: PostgreSQL matches an index's NULLS
                // order to the sort's, so `email ASC NULLS FIRST` sorted every user instead of
                // reading `users_email_uq` (issue 19); the rows are the same.
                format!("{expr} {}", if *desc { "DESC" } else { "ASC" })
            } else if *desc {
                format!("{expr} DESC NULLS LAST")
            } else {
                format!("{expr} ASC NULLS FIRST")
            }
        })
        .collect();
    if !q.sort.iter().any(|(f, _)| f.column == "id") {
        order.push(format!("{prefix}id {}", if paging::id_desc(q) { "DESC" } else { "ASC" }));
    }
    order.join(", ")
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

fn cond_sql(b: Backend, c: &Cond, a: &mut Args) -> String {
    let col = c.field.column;
    // A boolean `$eq` / `$ne` as a literal condition (`col` or `NOT col`, the same rows as `=`
    // and `<>` on the NOT NULL flags): a statement naming it can use a partial index `WHERE col`
    // (the rare flags' sort indexes, migration 0022), which a bound `col = ?` cannot select.
    if let Scalar::Bool(v) = c.value {
        use cairn_domain::query::Op;
        if matches!(c.op, Op::Eq | Op::Ne) {
            let yes = (c.op == Op::Eq) == v;
            return match (col, yes) {
                // `activated` is having a password (no column of its own).
                ("activated", true) => "password_hash IS NOT NULL".into(),
                ("activated", false) => "password_hash IS NULL".into(),
                (col, true) => col.to_string(),
                (col, false) => format!("NOT {col}"),
            };
        }
    }
    let p = match &c.value {
        Scalar::Text(s) => a.push(s.clone()),
        Scalar::Bool(b) => a.push(*b),
        Scalar::Int(n) => a.push(*n),
    };
    if case_insensitive(col) {
        return format!("lower({col}) {} lower({p})", c.op.sql());
    }
    // `$ne` also matches users without a value, as an admin reading "not X" expects.
    if c.op == cairn_domain::query::Op::Ne && matches!(c.field.kind, Kind::Text | Kind::Int | Kind::Time) {
        format!("({col} <> {p} OR {col} IS NULL)")
    } else if c.op == cairn_domain::query::Op::Eq && folded(col) {
        let Scalar::Text(s) = &c.value else { return format!("{col} = {p}") };
        let exact = a.push(s.clone());
        // On SQLite `col = ?` would be propagated into `lower(col)` as a constant (`lower(?)`),
        // which no index is on: the whole table would be scanned. `+col` is not a column to
        // propagate, and is still read from the index (issue 19).
        let plus = if b == Backend::Sqlite { "+" } else { "" };
        format!("(lower({col}) = lower({p}) AND {plus}{col} = {exact})")
    } else {
        format!("{col} {} {p}", c.op.sql())
    }
}

fn push_value(a: &mut Args, v: rows::Value) -> String {
    a.push(v.into_arg())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn index_sql(store: &Store, name: &str) -> Option<String> {
        let mut c = store.read().await.unwrap();
        sqlx::query("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?")
            .bind(name)
            .fetch_optional(&mut *c.c)
            .await
            .unwrap()
            .map(|r| rows::get_text(&r, "sql").unwrap())
    }

    /// A bulk writer committing batch after batch for longer than SQLite's busy timeout: a
    /// request's write still gets its turn between two batches instead of failing with
    /// "database is locked" (SQLite's busy handler polls and would miss every gap).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_gets_its_turn_between_the_batches_of_a_long_bulk_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&testing::sqlite_url(dir.path())).await.unwrap();
        store.migrate().await.unwrap();
        let mut c = store.read().await.unwrap();
        sqlx::query("CREATE TABLE scratch (who TEXT NOT NULL)").execute(&mut *c.c).await.unwrap();
        drop(c);
        let bulk = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut w = store.writer().await.unwrap();
                let until = std::time::Instant::now() + Duration::from_secs(12);
                while std::time::Instant::now() < until {
                    let mut tx = w.begin().await.unwrap();
                    sqlx::query("INSERT INTO scratch VALUES ('bulk')").execute(&mut *tx.tx).await.unwrap();
                    // A batch's worth of work while holding the lock.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    tx.commit().await.unwrap();
                    w.committed().await;
                }
                w.finish().await.unwrap();
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        for _ in 0..5 {
            let mut tx = store.begin().await.expect("a request's write waits for its turn");
            sqlx::query("INSERT INTO scratch VALUES ('request')").execute(&mut *tx.tx).await.unwrap();
            tx.commit().await.unwrap();
        }
        bulk.await.unwrap();
        let mut c = store.read().await.unwrap();
        let n = sqlx::query("SELECT COUNT(*) FROM scratch WHERE who = 'request'").fetch_one(&mut *c.c).await.unwrap();
        assert_eq!(rows::get_i64(&n, 0).unwrap(), 5);
    }

    #[tokio::test]
    async fn user_search_indexes_match_the_migrations_and_come_back_after_an_interrupted_import() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&testing::sqlite_url(dir.path())).await.unwrap();
        store.migrate().await.unwrap();
        for (name, on) in USER_SEARCH_INDEXES {
            assert_eq!(index_sql(&store, name).await, Some(format!("CREATE INDEX {name} ON {on}")));
        }
        // A partial index names the column its users need; "no password" is most users.
        assert_eq!(entry_column("users (id) WHERE account_locked"), Some("account_locked"));
        assert_eq!(entry_column("users (jobtitle, id) WHERE jobtitle IS NOT NULL"), Some("jobtitle"));
        assert_eq!(entry_column("users (id) WHERE password_hash IS NULL"), None);
        assert_eq!(entry_column("users (state, id)"), None);
        let partial = USER_SEARCH_INDEXES.iter().filter(|(_, on)| entry_column(on).is_some()).count();
        assert_eq!(partial, 14, "locked and expired (2 each), 5 fields by last name, 5 mostly empty columns");
        // A load whose first users set no optional column keeps the partial indexes.
        let plain = cairn_domain::User::new("u1", "a", "a@x.org", State::Staged, Utc::now());
        let mut tx = store.begin().await.unwrap();
        assert!(tx.db().drop_user_search_indexes(std::slice::from_ref(&plain)).await.unwrap());
        tx.commit().await.unwrap();
        for (name, on) in USER_SEARCH_INDEXES {
            assert_eq!(index_sql(&store, name).await.is_some(), entry_column(on).is_some(), "{name}");
        }
        store.migrate().await.unwrap();
        // One whose users set them (one user each is enough) drops them all, and dies before
        // building them again.
        let mut full = plain.clone();
        (full.account_locked, full.password_expired, full.password_date) = (true, true, Some(Utc::now()));
        for c in ["jobTitle", "company", "costCenter", "employeeType", "location", "alternateEmail", "description"] {
            full.profile.insert(c.into(), serde_json::json!("x"));
        }
        full.profile.insert("unix_uid".into(), serde_json::json!(5001));
        full.profile.insert("unix_guid".into(), serde_json::json!(5001));
        let mut tx = store.begin().await.unwrap();
        assert!(tx.db().drop_user_search_indexes(&[plain, full]).await.unwrap());
        tx.commit().await.unwrap();
        for (name, _) in USER_SEARCH_INDEXES {
            assert_eq!(index_sql(&store, name).await, None, "{name}");
        }
        store.migrate().await.unwrap();
        for (name, on) in USER_SEARCH_INDEXES {
            assert_eq!(index_sql(&store, name).await, Some(format!("CREATE INDEX {name} ON {on}")));
        }
    }
}
