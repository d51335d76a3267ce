//! Benchmark (issue 2): `GET /api/systemusers` with a filter, a sort and `limit=100` at
//! 100,000 users, on SQLite and PostgreSQL.
//!
//! For each backend: load 100,000 users through the store crate, start the release `cairn
//! serve` against that database and time sequential requests
//! `?filter=department:$eq:Dept NN&sort=lastname&limit=100`. Interleaved with them, request by
//! request, run two references on the same database: the same query through
//! `Directory::list_users` in this process (the server minus HTTP), and the same two SQL
//! statements (count and page) through sqlx's native driver (the ratio's reference). Prints a
//! table, the goals, the server's memory and the query plans.
//!
//! Run: `cargo build --release -p cairn && cargo run --release -p cairn-bench --bin list_users`
//! (the `cairn` binary is looked up in `$CARGO_TARGET_DIR/release`, default
//! `/var/tmp/cairn-target/release`; `CAIRN_BIN` overrides it). PostgreSQL is
//! `postgres@127.0.0.1:5432` with trust auth; it is skipped when unreachable.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use cairn_bench::{loadavg, DbServer};
use cairn_directory::{Directory, SystemClock};
use cairn_domain::query::ListQuery;
use cairn_domain::{State, User};
use cairn_store::Store;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};
use sqlx::{Connection, Executor, Row};

const USERS: usize = 100_000;
const BATCH: usize = 1_000;
const DEPARTMENTS: usize = 50;
const REQUESTS: usize = 2_000;
const WARMUP: usize = 200;
const LIMIT: usize = 100;
/// 32 characters; the server stores it as its bootstrap API key.
const API_KEY: &str = "cairn-bench-0123456789abcdef0123";
const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const PG_BASE_URL: &str = "postgres://postgres@127.0.0.1:5432";
/// The goals of issue 2.
const GOAL_P99_MS: f64 = 20.0;
const GOAL_RSS_MB: f64 = 100.0;

/// The two statements `cairn_store::Db::list_users` sends for this query, written out.
// The statements Cairn runs: names compare and sort through lower() (one index per name field).
const SQL_COUNT: &str = "SELECT COUNT(*) FROM users WHERE (lower(department) = lower($1) AND department = $1)";
const SQL_PAGE: &str = "SELECT * FROM users WHERE (lower(department) = lower($1) AND department = $1) \
                        ORDER BY lower(lastname) ASC NULLS FIRST, id LIMIT 100";

const FIRST_NAMES: &[&str] = &[
    "Ada",
    "Alan",
    "Barbara",
    "Brian",
    "Claude",
    "Dennis",
    "Donald",
    "Edsger",
    "Frances",
    "Grace",
    "Guido",
    "Hedy",
    "Ivan",
    "James",
    "Joan",
    "John",
    "Ken",
    "Leslie",
    "Linus",
    "Margaret",
    "Mary",
    "Niklaus",
    "Radia",
    "Richard",
    "Robin",
    "Shafi",
    "Sophie",
    "Tim",
    "Tony",
    "Whitfield",
];
const LAST_NAMES: &[&str] = &[
    "Abbott", "Allen", "Baker", "Bell", "Brooks", "Brown", "Campbell", "Carter", "Clark", "Collins", "Cook", "Cooper",
    "Davis", "Edwards", "Evans", "Fisher", "Foster", "Garcia", "Gray", "Green", "Hall", "Harris", "Hill", "Howard",
    "Hughes", "Jackson", "James", "Jenkins", "Johnson", "Jones", "Kelly", "King", "Lee", "Lewis", "Lopez", "Martin",
    "Miller", "Mitchell", "Moore", "Morgan", "Morris", "Murphy", "Nelson", "Parker", "Perez", "Peterson", "Phillips",
    "Price", "Reed", "Rivera", "Roberts", "Robinson", "Rogers", "Ross", "Sanchez", "Scott", "Smith", "Stewart",
    "Taylor", "Thomas", "Thompson", "Turner", "Walker", "Ward", "Watson", "White", "Williams", "Wilson", "Wood",
    "Wright", "Young",
];

fn department(n: usize) -> String {
    format!("Dept {n:02}")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let bin = cairn_binary()?;
    println!("sources: {}", source_state());
    println!(
        "list_users: {USERS} users, {DEPARTMENTS} departments, {REQUESTS} sequential requests \
         (+{WARMUP} warm-up), limit={LIMIT}; server {}",
        bin.display()
    );
    let mut results = Vec::new();

    // SQLite: a fresh temporary directory holds the database and the server's data dir.
    let tmp = tempfile::Builder::new().prefix("cairn-bench-").tempdir()?;
    let url = format!("sqlite://{}/cairn.db", tmp.path().display());
    results.push(run_backend("SQLite", &url, &bin, tmp.path()).await?);
    drop(tmp);

    // PostgreSQL: a fresh database, dropped at the end whatever happens.
    match pg_admin().await {
        Err(e) => println!("\nPostgreSQL: skipped, {PG_ADMIN_URL} is unreachable ({e})"),
        Ok(mut admin) => {
            let db = format!("cairn_bench_{}", std::process::id());
            admin.execute(format!("DROP DATABASE IF EXISTS {db}").as_str()).await?;
            admin.execute(format!("CREATE DATABASE {db}").as_str()).await?;
            let tmp = tempfile::Builder::new().prefix("cairn-bench-").tempdir()?;
            let url = format!("{PG_BASE_URL}/{db}");
            let r = run_backend("PostgreSQL", &url, &bin, tmp.path()).await;
            drop(tmp);
            let dropped = admin.execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str()).await;
            admin.close().await.ok();
            results.push(r?);
            dropped.context("dropping the benchmark database")?;
        }
    }

    print_report(&results);
    Ok(())
}

fn cairn_binary() -> Result<PathBuf> {
    let bin = match std::env::var_os("CAIRN_BIN") {
        Some(b) => PathBuf::from(b),
        None => PathBuf::from(std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "/var/tmp/cairn-target".into()))
            .join("release/cairn"),
    };
    if !bin.is_file() {
        bail!("{} is missing: build it first with `cargo build --release -p cairn`", bin.display());
    }
    // A server built from older sources than the benchmark would be measured by mistake (or,
    // when the migrations differ, refuse the database the benchmark loaded).
    let built = std::fs::metadata(&bin)?.modified()?;
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
    if let Some(newer) = newest_source(&crates)?.filter(|(t, _)| *t > built) {
        println!(
            "WARNING: {} is older than {}; rebuild it with `cargo build --release -p cairn`",
            bin.display(),
            newer.1.display()
        );
    }
    Ok(bin)
}

/// The commit of the workspace and whether `crates/` differs from it, for the record.
fn source_state() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match (git(&["log", "-1", "--format=%h %cI"]), git(&["status", "--porcelain", "--", "crates"])) {
        (Some(head), Some(st)) if st.is_empty() => format!("commit {head}, crates/ unmodified"),
        (Some(head), Some(st)) => format!("commit {head}, crates/ with {} uncommitted changes", st.lines().count()),
        _ => "unknown (no git)".into(),
    }
}

/// The most recently modified file under `dir` that goes into a build (tests do not).
fn newest_source(dir: &Path) -> Result<Option<(std::time::SystemTime, PathBuf)>> {
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let meta = e.metadata()?;
            let modified = meta.modified()?;
            if meta.is_dir() {
                if e.file_name() != "tests" {
                    stack.push(e.path());
                }
            } else if newest.as_ref().is_none_or(|(t, _)| modified > *t) {
                newest = Some((modified, e.path()));
            }
        }
    }
    Ok(newest)
}

async fn pg_admin() -> Result<sqlx::PgConnection> {
    let c = tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(PG_ADMIN_URL))
        .await
        .map_err(|_| anyhow!("timed out"))??;
    Ok(c)
}

/// Latency figures of one series, in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Stats {
    p50: f64,
    p99: f64,
    max: f64,
    per_sec: f64,
}

impl Stats {
    /// `per_sec` is the rate of one client sending the next request as soon as the last
    /// answer is in: samples over the sum of their latencies.
    fn of(mut samples: Vec<Duration>) -> Stats {
        samples.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        // Nearest-rank percentile.
        let pct = |q: f64| ms(samples[((q * samples.len() as f64).ceil() as usize).max(1) - 1]);
        Stats {
            p50: pct(0.50),
            p99: pct(0.99),
            max: ms(*samples.last().expect("samples")),
            per_sec: samples.len() as f64 / samples.iter().sum::<Duration>().as_secs_f64(),
        }
    }
}

struct Figures {
    backend: &'static str,
    load_secs: f64,
    http: Stats,
    store: Stats,
    sql: Stats,
    rss_ready_kb: u64,
    rss_kb: u64,
    hwm_kb: u64,
    plans: String,
    /// `/proc/loadavg` before and after the timed requests: other work on the machine.
    load: (String, String),
}

async fn run_backend(backend: &'static str, url: &str, bin: &Path, data_dir: &Path) -> Result<Figures> {
    println!("\n== {backend} ==");
    let t = Instant::now();
    let per_dept = load(url).await.with_context(|| format!("{backend}: load"))?;
    let load_secs = t.elapsed().as_secs_f64();
    println!("loaded {USERS} users in {load_secs:.1} s");

    let reference = Reference::connect(url).await?;
    reference.analyze().await?;
    let in_process = InProcess::connect(url).await?;

    let mut server = DbServer::start(bin, url, data_dir, API_KEY, Duration::from_secs(60)).await?;
    let rss_ready_kb = proc_status_kb(server.pid(), "VmRSS")?;
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build()?;
    let list_url = |d: usize| {
        format!("{}/api/systemusers?filter=department:$eq:Dept%20{d:02}&sort=lastname&limit={LIMIT}", server.base)
    };

    // The answers must be right before their speed matters.
    check_page(&get_json(&client, &list_url(7)).await?, per_dept[7], &department(7))?;
    let (total, rows) = reference.list(&department(7)).await?;
    if total != per_dept[7] as i64 || rows != LIMIT {
        bail!("{backend}: raw SQL answered {total} / {rows} rows");
    }
    let (total, rows) = in_process.list(7).await?;
    if total != per_dept[7] as i64 || rows != LIMIT {
        bail!("{backend}: the store answered {total} / {rows} rows");
    }

    // The three series are interleaved request by request, so that whatever else the machine
    // does at the time slows them alike and the ratios stay meaningful.
    let load_before = loadavg();
    let mut body_bytes = 0usize;
    let mut http = Vec::with_capacity(REQUESTS);
    let mut store = Vec::with_capacity(REQUESTS);
    let mut sql = Vec::with_capacity(REQUESTS);
    for i in 0..WARMUP + REQUESTS {
        let d = (i * 7) % DEPARTMENTS;
        let (u, name) = (list_url(d), department(d));
        let t = Instant::now();
        body_bytes += get_body(&client, &u).await?;
        let t_http = t.elapsed();
        let t = Instant::now();
        in_process.list(d).await?;
        let t_store = t.elapsed();
        let t = Instant::now();
        reference.list(&name).await?;
        let t_sql = t.elapsed();
        if i >= WARMUP {
            http.push(t_http);
            store.push(t_store);
            sql.push(t_sql);
        }
    }
    let load = (load_before, loadavg());
    let (http, store, sql) = (Stats::of(http), Stats::of(store), Stats::of(sql));
    let hwm_kb = proc_status_kb(server.pid(), "VmHWM")?;
    let rss_kb = proc_status_kb(server.pid(), "VmRSS")?;
    for (name, s) in [("HTTP", http), ("store", store), ("raw SQL", sql)] {
        println!("{name:<8} p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  {:.0} /s", s.p50, s.p99, s.max, s.per_sec);
    }
    println!("HTTP response body: {:.1} KB on average", body_bytes as f64 / (WARMUP + REQUESTS) as f64 / 1024.0);

    let plans = reference.plans().await?;
    reference.close().await;
    in_process.dir.close().await;
    server.stop();
    Ok(Figures { backend, load_secs, http, store, sql, rss_ready_kb, rss_kb, hwm_kb, plans, load })
}

// ---- loading -------------------------------------------------------------------------------

/// Loads the users in transactions of `BATCH`; returns how many users each department has.
async fn load(url: &str) -> Result<Vec<usize>> {
    let store = Store::connect(url).await?;
    let dir = Directory::new(store.clone(), Arc::new(SystemClock));
    dir.migrate().await?;
    let mut rng = StdRng::seed_from_u64(2);
    let mut per_dept = vec![0usize; DEPARTMENTS];
    let mut users = Vec::with_capacity(USERS);
    for n in 1..=USERS {
        let d = rng.gen_range(0..DEPARTMENTS);
        per_dept[d] += 1;
        users.push(make_user(&dir, n, d, &mut rng));
    }
    // PostgreSQL takes several writers at once; SQLite has one write lock.
    let writers = match store.backend() {
        cairn_store::Backend::Sqlite => 1,
        cairn_store::Backend::Postgres => 4,
    };
    let batches: Vec<Vec<User>> = users.chunks(BATCH).map(<[User]>::to_vec).collect();
    let per_writer = batches.len().div_ceil(writers);
    let mut tasks = tokio::task::JoinSet::new();
    let mut batches = batches.into_iter();
    for _ in 0..writers {
        let mine: Vec<Vec<User>> = batches.by_ref().take(per_writer).collect();
        let store = store.clone();
        tasks.spawn(async move {
            for batch in mine {
                let mut tx = store.begin().await?;
                for u in &batch {
                    tx.db().insert_user(u).await?;
                }
                tx.commit().await?;
            }
            Ok::<_, cairn_store::StoreError>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    store.close().await;
    Ok(per_dept)
}

fn make_user(dir: &Directory, n: usize, dept: usize, rng: &mut StdRng) -> User {
    let now = dir.now();
    let state = match n % 20 {
        0 => State::Staged,
        1 => State::Suspended,
        _ => State::Activated,
    };
    let mut profile = Map::new();
    profile.insert("firstname".into(), Value::String(FIRST_NAMES[rng.gen_range(0..FIRST_NAMES.len())].into()));
    // One user in a hundred has no last name, so NULLS FIRST has something to order.
    if rng.gen_range(0..100) != 0 {
        profile.insert("lastname".into(), Value::String(LAST_NAMES[rng.gen_range(0..LAST_NAMES.len())].into()));
    }
    profile.insert("department".into(), Value::String(department(dept)));
    User {
        creation_source: "bench".into(),
        profile,
        ..User::new(dir.new_id(), format!("user{n:06}"), format!("user{n:06}@example.com"), state, now)
    }
}

// ---- process status ------------------------------------------------------------------------

fn proc_status_kb(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no {key} in /proc/{pid}/status"))
}

async fn get_body(client: &reqwest::Client, url: &str) -> Result<usize> {
    let r = client.get(url).header("x-api-key", API_KEY).send().await?;
    let status = r.status();
    let body = r.bytes().await?;
    if status != reqwest::StatusCode::OK {
        bail!("GET {url}: {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(body.len())
}

async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value> {
    let r = client.get(url).header("x-api-key", API_KEY).send().await?;
    let status = r.status();
    let body: Value = r.json().await?;
    if status != reqwest::StatusCode::OK {
        bail!("GET {url}: {status}: {body}");
    }
    Ok(body)
}

/// The page holds `LIMIT` users of the department, ordered by last name (missing ones
/// first), and `totalCount` counts the whole department.
fn check_page(page: &Value, expected_total: usize, dept: &str) -> Result<()> {
    let total = page["totalCount"].as_u64().unwrap_or(0) as usize;
    let results = page["results"].as_array().cloned().unwrap_or_default();
    if total != expected_total || results.len() != LIMIT {
        bail!("expected totalCount {expected_total} and {LIMIT} results, got {total} and {}", results.len());
    }
    let mut last: Option<(String, String)> = None;
    for u in &results {
        if u["department"] != dept {
            bail!("a user of another department came back: {u}");
        }
        // Missing last names come back as "" (the JSON default), which sorts first too.
        let key = (u["lastname"].as_str().unwrap_or("").to_string(), u["_id"].as_str().unwrap_or("").to_string());
        if last.as_ref().is_some_and(|l| *l > key) {
            bail!("the page is not ordered by lastname, _id");
        }
        last = Some(key);
    }
    Ok(())
}

// ---- the in-process store ------------------------------------------------------------------

/// The server's own query path without HTTP: `Directory::list_users` in this process, on
/// its own pool. HTTP minus this is the cost of the front end (auth, JSON, transport).
struct InProcess {
    dir: Directory,
}

impl InProcess {
    async fn connect(url: &str) -> Result<InProcess> {
        let dir = Directory::new(Store::connect(url).await?, Arc::new(SystemClock));
        Ok(InProcess { dir })
    }

    async fn list(&self, dept: usize) -> Result<(i64, usize)> {
        let q = ListQuery::from_pairs(&[
            ("filter".to_string(), format!("department:$eq:{}", department(dept))),
            ("sort".to_string(), "lastname".to_string()),
            ("limit".to_string(), LIMIT.to_string()),
        ])?;
        let (total, users) = self.dir.list_users(&q).await?;
        Ok((total, users.len()))
    }
}

// ---- the raw SQL reference -----------------------------------------------------------------

/// One connection, like one server request at a time, through sqlx's native driver.
enum Reference {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Reference {
    async fn connect(url: &str) -> Result<Reference> {
        Ok(if url.starts_with("sqlite:") {
            let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)?.busy_timeout(Duration::from_secs(10));
            Reference::Sqlite(sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect_with(opts).await?)
        } else {
            Reference::Postgres(sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(url).await?)
        })
    }

    /// PostgreSQL: what autovacuum does within a minute or two of a bulk load (statistics and
    /// the visibility map), done now so that every run sees the same steady state. SQLite:
    /// nothing, because Cairn never runs ANALYZE there (no sqlite_stat1 exists).
    async fn analyze(&self) -> Result<()> {
        if let Reference::Postgres(p) = self {
            p.execute("VACUUM ANALYZE users").await?;
        }
        Ok(())
    }

    /// `(count, rows in the page)`.
    async fn list(&self, dept: &str) -> Result<(i64, usize)> {
        Ok(match self {
            Reference::Sqlite(p) => {
                let n: i64 = sqlx::query(SQL_COUNT).bind(dept).fetch_one(p).await?.get(0);
                let rows = sqlx::query(SQL_PAGE).bind(dept).fetch_all(p).await?;
                (n, rows.len())
            }
            Reference::Postgres(p) => {
                let n: i64 = sqlx::query(SQL_COUNT).bind(dept).fetch_one(p).await?.get(0);
                let rows = sqlx::query(SQL_PAGE).bind(dept).fetch_all(p).await?;
                (n, rows.len())
            }
        })
    }

    /// The plans of the two statements the server sends, for the report.
    async fn plans(&self) -> Result<String> {
        let page = "SELECT * FROM users WHERE (lower(department) = lower('Dept 07') AND department = 'Dept 07') \
                    ORDER BY lower(lastname) ASC NULLS FIRST, id ASC LIMIT 100 OFFSET 0";
        let count =
            "SELECT COUNT(*) FROM users WHERE (lower(department) = lower('Dept 07') AND department = 'Dept 07')";
        let mut out = String::new();
        match self {
            Reference::Sqlite(p) => {
                for q in [count, page] {
                    writeln!(out, "EXPLAIN QUERY PLAN {q}")?;
                    for r in sqlx::query(&format!("EXPLAIN QUERY PLAN {q}")).fetch_all(p).await? {
                        writeln!(out, "  {}", r.get::<String, _>("detail"))?;
                    }
                }
            }
            Reference::Postgres(p) => {
                for q in [count, page] {
                    writeln!(out, "EXPLAIN (ANALYZE, BUFFERS) {q}")?;
                    for r in sqlx::query(&format!("EXPLAIN (ANALYZE, BUFFERS) {q}")).fetch_all(p).await? {
                        writeln!(out, "  {}", r.get::<String, _>(0))?;
                    }
                }
            }
        }
        Ok(out)
    }

    async fn close(&self) {
        match self {
            Reference::Sqlite(p) => p.close().await,
            Reference::Postgres(p) => p.close().await,
        }
    }
}

// ---- the report ----------------------------------------------------------------------------

fn print_report(results: &[Figures]) {
    let mb = |kb: u64| kb as f64 / 1024.0;
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    println!("\n## list users at {USERS} (filter department, sort lastname, limit {LIMIT})\n");
    println!(
        "| backend | load s | HTTP p50 | HTTP p99 | HTTP max | req/s | store p50 | store p99 \
         | SQL p50 | SQL p99 | p99 HTTP/SQL | p50 HTTP/SQL | RSS ready | RSS after | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for f in results {
        println!(
            "| {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} \
             | {:.1} | {:.1} | {:.1} |",
            f.backend,
            f.load_secs,
            f.http.p50,
            f.http.p99,
            f.http.max,
            f.http.per_sec,
            f.store.p50,
            f.store.p99,
            f.sql.p50,
            f.sql.p99,
            f.http.p99 / f.sql.p99,
            f.http.p50 / f.sql.p50,
            mb(f.rss_ready_kb),
            mb(f.rss_kb),
            mb(f.hwm_kb),
        );
    }
    println!("(times in ms, memory in MB of the server process: VmRSS at ready, VmRSS and VmHWM after the run)");
    println!("\nGoals: p99 <= {GOAL_P99_MS} ms, RSS <= {GOAL_RSS_MB} MB");
    for f in results {
        println!(
            "  {}: p99 {:.2} ms {}, peak RSS {:.1} MB {}",
            f.backend,
            f.http.p99,
            verdict(f.http.p99 <= GOAL_P99_MS),
            mb(f.hwm_kb),
            verdict(mb(f.hwm_kb) <= GOAL_RSS_MB),
        );
    }
    for f in results {
        println!("\n### {} (load average {} before, {} after the timed requests)", f.backend, f.load.0, f.load.1);
        println!("{}", f.plans);
    }
}
