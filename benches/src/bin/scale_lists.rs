//! Benchmark (issue 19): lists, search and SCIM lookups at 100,000 and 1,000,000 users, on
//! SQLite and PostgreSQL, side by side in one run.
//!
//! For each backend and each size: load the users into a fresh database through the store's
//! bulk path (`Store::writer`, multi-row `insert_users`; on SQLite the non-unique user indexes
//! are dropped first and built at the end, as a large import does), start the release
//! `cairn serve` on it and time, from this process, sequential requests with keep-alive off
//! (a new TCP connection per request), the series interleaved round by round:
//!
//! - `dept+lastname`: `?filter=department:$eq:Dept NN&sort=lastname&limit=100`
//! - `dept-lastname`: the same with `sort=-lastname`
//! - `state+lastname`: `?filter=state:$eq:SUSPENDED|STAGED&sort=lastname&limit=100`
//! - `all-lastname`: `?sort=-lastname&limit=100` (no filter: counts every user)
//! - `search`: `?search=userNNNNNN&limit=10` (a prefix matching 10 users at either size)
//! - `deep skip`: `dept+lastname` with `skip` at 90 % of the department
//! - `deep cursor`: the same page reached by the `cursor` the previous page returned (only when
//!   the server returns cursors)
//! - `scim userName`: `/scim/v2/Users?filter=userName eq "userNNNNNNN"`
//! - the admin portal's other filters (issue 19): `locked-lastname` (`account_locked:$eq:true`,
//!   `sort=-lastname`), `locked id` (the same, default sort), `unlocked+lastname`,
//!   `expired+lastname` (`password_expired:$eq:true`), `mfa-lastname` (`totp_enabled:$eq:true`),
//!   `no-mfa+email` (`totp_enabled:$eq:false&sort=email`), `title+lastname` / `title id`
//!   (`jobTitle:$eq:Title NN`, any-column `$eq`), `locked-created` (another sort), and
//!   `locked cursor` (`locked-lastname` at 90 % of the locked users, by cursor)
//! - sorts by mostly empty columns: `description-` (`sort=-description`), `pwdate+`
//!   (`sort=password_date`), `uid-` (`sort=-unix_uid`) and the portal's `admin uid`
//! - the admin portal's Users page, signed in (cookie), keep-alive off: `admin users` (the
//!   default view), `admin dept` (`department=…&sort=lastname`), `admin locked`
//!   (`locked=yes`), `admin group` (`group=…`, 5 % of the users) and `admin group+lastname`
//!
//! Users: 20 departments of `size / 20`; half the users have one of 20 clustered last names
//! (skewed: the first few names hold most of them), the other half a uniform random one of
//! 26^5; 1 % have none; states 90 % ACTIVATED, 5 % STAGED, 5 % SUSPENDED; 5 % locked, 3 % with
//! an expired password, 30 % enrolled in TOTP; one of 50 job titles each; 5 % in one group;
//! a description for 10 %, a UID for a third, the password's date for the ACTIVATED.
//!
//! The server runs with its LDAP listener on, as by default, and the 5 % group associated with
//! the LDAP server: the report gives the time to ready, the first LDAP operation (the tree's
//! first load), the one after the grant (its members read into the tree), and the server's
//! memory (RSS and peak) at start, after the grant and after the run. Needs `ldapsearch`.
//!
//! Run: `cargo build --release -p cairn && cargo run --release -p cairn-bench --bin scale_lists`
//! Environment: `SCALE_SIZES` (default `100000,1000000`), `SCALE_REQUESTS` (timed requests per
//! series, default 300), `SCALE_WARMUP` (untimed rounds first, default 20), `SCALE_BACKENDS`
//! (default `sqlite,postgres`), `CAIRN_BIN`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use cairn_bench::{free_port, loadavg, rss_mib, DbServer};
use cairn_directory::{Directory, SystemClock};
use cairn_domain::{Group, Secret, State, User};
use cairn_store::Store;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use sqlx::{Connection, Executor, Row};

const DEPARTMENTS: usize = 20;
const BATCH: usize = 2_000;
const API_KEY: &str = "cairn-bench-0123456789abcdef0123";
const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const PG_BASE_URL: &str = "postgres://postgres@127.0.0.1:5432";
const GOAL_P99_MS: f64 = 20.0;
const GOAL_SCIM_P99_MS: f64 = 10.0;
const GOAL_RATIO: f64 = 1.5;

const CLUSTERED: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Lee",
    "Walker",
    "Hall",
    "Allen",
    "Young",
    "King",
    "Wright",
    "Scott",
    "Green",
    "Baker",
];
const FIRST_NAMES: &[&str] = &["Ada", "Alan", "Barbara", "Claude", "Edsger", "Grace", "Hedy", "Ken", "Radia", "Tim"];

fn department(n: usize) -> String {
    format!("Dept{n:02}")
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let bin = cairn_binary()?;
    let sizes: Vec<usize> = env_or("SCALE_SIZES", "100000,1000000")
        .split(',')
        .map(|s| s.trim().parse().context("SCALE_SIZES"))
        .collect::<Result<_>>()?;
    let requests: usize = env_or("SCALE_REQUESTS", "300").parse()?;
    let warmup: usize = env_or("SCALE_WARMUP", "20").parse()?;
    let backends = env_or("SCALE_BACKENDS", "sqlite,postgres");
    println!("sources: {}", source_state());
    println!(
        "scale_lists: sizes {sizes:?}, {requests} timed requests per series (+{warmup} warm-up), keep-alive off; \
         server {}",
        bin.display()
    );
    let mut runs: Vec<Run> = Vec::new();
    for backend in backends.split(',') {
        for &size in &sizes {
            let r = match backend.trim() {
                "sqlite" => {
                    let tmp = tempfile::Builder::new().prefix("cairn-scale-").tempdir_in("/var/tmp")?;
                    let url = format!("sqlite://{}/cairn.db", tmp.path().display());
                    run_one("SQLite", size, &url, &bin, tmp.path(), requests, warmup).await?
                }
                "postgres" => {
                    let mut admin = pg_admin().await?;
                    let db = format!("cairn_scale_{}_{size}", std::process::id());
                    admin.execute(format!("DROP DATABASE IF EXISTS {db}").as_str()).await?;
                    admin.execute(format!("CREATE DATABASE {db}").as_str()).await?;
                    let tmp = tempfile::Builder::new().prefix("cairn-scale-").tempdir()?;
                    let url = format!("{PG_BASE_URL}/{db}");
                    let r = run_one("PostgreSQL", size, &url, &bin, tmp.path(), requests, warmup).await;
                    let dropped = admin.execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str()).await;
                    admin.close().await.ok();
                    dropped.context("dropping the benchmark database")?;
                    r?
                }
                other => bail!("unknown backend {other}"),
            };
            runs.push(r);
            print_report(&runs);
        }
    }
    Ok(())
}

struct Run {
    backend: &'static str,
    size: usize,
    load_secs: f64,
    series: BTreeMap<&'static str, Stats>,
    plans: String,
    load: (String, String),
    /// Series whose requests the server refused.
    failed: std::collections::BTreeSet<&'static str>,
    server: ServerFacts,
}

/// The server's start, its LDAP tree, and its memory (RSS, peak) in MiB.
struct ServerFacts {
    ready_secs: f64,
    ldap_first_secs: f64,
    ldap_grant_secs: f64,
    rss_start: (f64, f64),
    rss_grant: (f64, f64),
    rss_end: (f64, f64),
}

#[derive(Debug, Clone, Copy)]
struct Stats {
    p50: f64,
    p99: f64,
    max: f64,
}

impl Stats {
    fn of(mut v: Vec<f64>) -> Stats {
        v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        let pct = |q: f64| v[((q * v.len() as f64).ceil() as usize).max(1) - 1];
        Stats { p50: pct(0.50), p99: pct(0.99), max: *v.last().expect("samples") }
    }
}

const SERIES: &[&str] = &[
    "dept+lastname",
    "dept-lastname",
    "state+lastname",
    "all-lastname",
    "search",
    "deep skip",
    "deep cursor",
    "scim userName",
    "locked-lastname",
    "locked id",
    "locked cursor",
    "locked-created",
    "unlocked+lastname",
    "expired+lastname",
    "pending+lastname",
    "mfa-lastname",
    "no-mfa+email",
    "title+lastname",
    "title id",
    "description-",
    "pwdate+",
    "uid-",
    "admin uid",
    "admin users",
    "admin dept",
    "admin locked",
    "admin pending",
    "admin group",
    "admin group+lastname",
];

const TITLES: usize = 50;
/// Marks a request of the admin portal (sent with the session cookie).
const ADMIN: &str = "admin";
const ADMIN_EMAIL: &str = "bench@example.com";
const ADMIN_PASSWORD: &str = "bench admin passphrase";

fn title(n: usize) -> String {
    format!("Title{n:02}")
}

async fn run_one(
    backend: &'static str,
    size: usize,
    url: &str,
    bin: &Path,
    data_dir: &Path,
    requests: usize,
    warmup: usize,
) -> Result<Run> {
    println!("\n== {backend}, {size} users ==");
    let t = Instant::now();
    let group = load(url, size).await.with_context(|| format!("{backend}: load"))?;
    let load_secs = t.elapsed().as_secs_f64();
    println!("loaded {size} users in {load_secs:.1} s");
    if url.starts_with("postgres") {
        // What autovacuum does within a minute or two of a bulk load.
        let mut c = sqlx::PgConnection::connect(url).await?;
        c.execute("VACUUM ANALYZE users, group_members").await?;
        c.close().await?;
    }

    // An administrator for the portal's pages.
    let out = Command::new(bin)
        .args(["admin", "create", "--email", ADMIN_EMAIL, "--password", ADMIN_PASSWORD])
        .current_dir(data_dir)
        .env("CAIRN_DATABASE_URL", url)
        .env("CAIRN_DATA_DIR", data_dir)
        .output()?;
    ensure!(out.status.success(), "admin create: {}", String::from_utf8_lossy(&out.stderr));

    // The LDAP listener is on by default, so it is on here (on a free port).
    let ldap_port = free_port()?;
    let t = Instant::now();
    let ldap_addr = format!("127.0.0.1:{ldap_port}");
    let server =
        DbServer::start_with(bin, url, data_dir, API_KEY, Duration::from_secs(300), &[("CAIRN_LDAP_ADDR", &ldap_addr)])
            .await?;
    let ready_secs = t.elapsed().as_secs_f64();
    let base = server.base.clone();
    let ldap_url = format!("ldap://{ldap_addr}");
    // The first LDAP operation waits for the tree's first load; the next, after the 5 % group
    // is associated with the LDAP server, for its members to be read into the tree.
    let t = Instant::now();
    ldap_touch(&ldap_url)?;
    let ldap_first_secs = t.elapsed().as_secs_f64();
    let rss_start = rss_mib(server.pid())?;
    associate_with_ldap(&base, &group).await?;
    let t = Instant::now();
    ldap_touch(&ldap_url)?;
    let ldap_grant_secs = t.elapsed().as_secs_f64();
    let rss_grant = rss_mib(server.pid())?;
    println!(
        "ready in {ready_secs:.2} s; first LDAP operation {ldap_first_secs:.2} s; after the group's grant {ldap_grant_secs:.2} s; \
         RSS {:.0} MiB (peak {:.0}), with the group in the tree {:.0} MiB (peak {:.0})",
        rss_start.0, rss_start.1, rss_grant.0, rss_grant.1
    );
    let admin = admin_client(&base).await?;
    // Keep-alive off: no idle connection is kept, and the server is asked to close each one.
    let client =
        reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).timeout(Duration::from_secs(120)).build()?;
    let per_dept = size / DEPARTMENTS;
    let deep = (per_dept * 9 / 10) / 100 * 100;

    // A SCIM token.
    let tok: Value = client
        .post(format!("{base}/api/v2/scim/tokens"))
        .header("x-api-key", API_KEY)
        .json(&json!({"name": "bench"}))
        .send()
        .await?
        .json()
        .await?;
    let token = tok["token"].as_str().or(tok["key"].as_str()).ok_or_else(|| anyhow!("no SCIM token in {tok}"))?;
    let bearer = format!("Bearer {token}");

    let dept_url = |d: usize, desc: bool, extra: &str| {
        let s = if desc { "-lastname" } else { "lastname" };
        format!("{base}/api/systemusers?filter=department:$eq:{}&sort={s}&limit=100{extra}", department(d))
    };

    // The answers must be right before their speed matters.
    let page = get_json(&client, &dept_url(7, false, ""), None).await?;
    ensure!(page["totalCount"] == per_dept && page["results"].as_array().map_or(0, Vec::len) == 100, "dept page");
    check_order(&page, false)?;
    check_order(&get_json(&client, &dept_url(7, true, ""), None).await?, true)?;
    let s = get_json(&client, &format!("{base}/api/systemusers?search=user000012&limit=10"), None).await?;
    ensure!(s["totalCount"] == 10, "search user000012: {}", s["totalCount"]);
    let scim =
        get_json(&client, &format!("{base}/scim/v2/Users?filter=userName%20eq%20%22user0000123%22"), Some(&bearer))
            .await?;
    ensure!(scim["totalResults"] == 1, "scim lookup: {scim}");

    // Deep cursors: the page before the deep one, by skip, gives the cursor of the deep one.
    let mut cursors: Vec<Option<String>> = Vec::new();
    for d in 0..DEPARTMENTS {
        let p = get_json(&client, &dept_url(d, false, &format!("&skip={}", deep - 100)), None).await?;
        let c = p["nextCursor"].as_str().map(str::to_string);
        if let Some(c) = &c {
            let by_cursor = get_json(&client, &dept_url(d, false, &format!("&cursor={c}")), None).await?;
            let by_skip = get_json(&client, &dept_url(d, false, &format!("&skip={deep}")), None).await?;
            ensure!(by_cursor["results"] == by_skip["results"], "the cursor page differs from the skip page");
        }
        cursors.push(c);
    }
    // The portal's other filters: right rows, and the deep locked page by cursor = by skip.
    let locked_url =
        |extra: &str| format!("{base}/api/systemusers?filter=account_locked:$eq:true&sort=-lastname&limit=100{extra}");
    let lp = get_json(&client, &locked_url(""), None).await?;
    let locked_total = lp["totalCount"].as_u64().ok_or_else(|| anyhow!("locked count"))? as usize;
    ensure!(
        lp["results"].as_array().is_some_and(|r| r.len() == 100 && r.iter().all(|u| u["account_locked"] == true)),
        "locked page"
    );
    check_order(&lp, true)?;
    let locked_deep = (locked_total * 9 / 10) / 100 * 100;
    let p = get_json(&client, &locked_url(&format!("&skip={}", locked_deep - 100)), None).await?;
    let locked_cursor = p["nextCursor"].as_str().map(str::to_string);
    if let Some(c) = &locked_cursor {
        let by_cursor = get_json(&client, &locked_url(&format!("&cursor={c}")), None).await?;
        let by_skip = get_json(&client, &locked_url(&format!("&skip={locked_deep}")), None).await?;
        ensure!(by_cursor["results"] == by_skip["results"], "the locked cursor page differs from the skip page");
    }
    let t = get_json(
        &client,
        &format!("{base}/api/systemusers?filter=jobTitle:$eq:{}&sort=lastname&limit=100", title(3)),
        None,
    )
    .await?;
    ensure!(t["totalCount"] == size / TITLES, "title count {}", t["totalCount"]);
    check_order(&t, false)?;
    let body = get_admin(&admin, &format!("{base}/admin/users?group={group}&per=100")).await?;
    ensure!(body.matches("type=\"checkbox\"").count() >= 100, "the group's Users page should list 100 rows");
    let have_cursor = cursors.iter().all(Option::is_some);
    println!("cursors: {}", if have_cursor { "yes" } else { "no (server returns none)" });

    let mut rng = StdRng::seed_from_u64(19);
    let mut samples: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let load_before = loadavg();
    let mut failed: std::collections::BTreeSet<&'static str> = std::collections::BTreeSet::new();
    for i in 0..warmup + requests {
        for &name in SERIES {
            let d = rng.gen_range(0..DEPARTMENTS);
            let n = rng.gen_range(1..=size);
            let (url, auth) = match name {
                "dept+lastname" => (dept_url(d, false, ""), None),
                "dept-lastname" => (dept_url(d, true, ""), None),
                "state+lastname" => {
                    let st = if i % 2 == 0 { "SUSPENDED" } else { "STAGED" };
                    (format!("{base}/api/systemusers?filter=state:$eq:{st}&sort=lastname&limit=100"), None)
                }
                "all-lastname" => (format!("{base}/api/systemusers?sort=-lastname&limit=100"), None),
                "search" => {
                    // user + 6 of the 7 digits: 10 users at either size.
                    let prefix = &format!("user{:07}", n.min(size - 9))[..10];
                    (format!("{base}/api/systemusers?search={prefix}&limit=10"), None)
                }
                "deep skip" => (dept_url(d, false, &format!("&skip={deep}")), None),
                "deep cursor" => match &cursors[d] {
                    Some(c) => (dept_url(d, false, &format!("&cursor={c}")), None),
                    None => continue,
                },
                "scim userName" => {
                    (format!("{base}/scim/v2/Users?filter=userName%20eq%20%22user{n:07}%22"), Some(bearer.as_str()))
                }
                "locked-lastname" => (locked_url(""), None),
                "locked id" => (format!("{base}/api/systemusers?filter=account_locked:$eq:true&limit=100"), None),
                "locked cursor" => match &locked_cursor {
                    Some(c) => (locked_url(&format!("&cursor={c}")), None),
                    None => continue,
                },
                "locked-created" => {
                    (format!("{base}/api/systemusers?filter=account_locked:$eq:true&sort=-created&limit=100"), None)
                }
                "unlocked+lastname" => {
                    (format!("{base}/api/systemusers?filter=account_locked:$eq:false&sort=lastname&limit=100"), None)
                }
                "expired+lastname" => {
                    (format!("{base}/api/systemusers?filter=password_expired:$eq:true&sort=lastname&limit=100"), None)
                }
                "pending+lastname" => {
                    (format!("{base}/api/systemusers?filter=activated:$eq:false&sort=lastname&limit=100"), None)
                }
                "mfa-lastname" => {
                    (format!("{base}/api/systemusers?filter=totp_enabled:$eq:true&sort=-lastname&limit=100"), None)
                }
                "no-mfa+email" => {
                    (format!("{base}/api/systemusers?filter=totp_enabled:$eq:false&sort=email&limit=100"), None)
                }
                "title+lastname" => (
                    format!(
                        "{base}/api/systemusers?filter=jobTitle:$eq:{}&sort=lastname&limit=100",
                        title(rng.gen_range(0..TITLES))
                    ),
                    None,
                ),
                "title id" => (
                    format!("{base}/api/systemusers?filter=jobTitle:$eq:{}&limit=100", title(rng.gen_range(0..TITLES))),
                    None,
                ),
                // Mostly empty columns (issue 19), sorted through partial indexes.
                "description-" => (format!("{base}/api/systemusers?sort=-description&limit=100"), None),
                "pwdate+" => (format!("{base}/api/systemusers?sort=password_date&limit=100"), None),
                "uid-" => (format!("{base}/api/systemusers?sort=-unix_uid&limit=100"), None),
                "admin uid" => (format!("{base}/admin/users?sort=unix_uid&per=100"), Some(ADMIN)),
                "admin users" => (format!("{base}/admin/users?per=100"), Some(ADMIN)),
                "admin dept" => {
                    (format!("{base}/admin/users?department={}&sort=lastname&per=100", department(d)), Some(ADMIN))
                }
                "admin locked" => (format!("{base}/admin/users?locked=yes&per=100"), Some(ADMIN)),
                "admin pending" => (format!("{base}/admin/users?pw=pending&per=100"), Some(ADMIN)),
                "admin group" => (format!("{base}/admin/users?group={group}&per=100"), Some(ADMIN)),
                "admin group+lastname" => {
                    (format!("{base}/admin/users?group={group}&sort=lastname&per=100"), Some(ADMIN))
                }
                _ => unreachable!(),
            };
            let t = Instant::now();
            let r = if auth == Some(ADMIN) {
                get_admin(&admin, &url).await.map(|_| ())
            } else {
                get_body(&client, &url, auth).await.map(|_| ())
            };
            let ms = t.elapsed().as_secs_f64() * 1e3;
            if let Err(e) = r {
                // A request the server refuses is reported as such, not timed.
                if failed.insert(name) {
                    println!("{name}: {e:#}");
                }
                continue;
            }
            if i >= warmup {
                samples.entry(name).or_default().push(ms);
            }
        }
    }
    let load = (load_before, loadavg());
    let series: BTreeMap<&'static str, Stats> = samples.into_iter().map(|(k, v)| (k, Stats::of(v))).collect();
    for (k, s) in &series {
        println!("{k:<15} p50 {:7.2} ms  p99 {:7.2} ms  max {:7.2} ms", s.p50, s.p99, s.max);
    }
    let rss_end = rss_mib(server.pid())?;
    println!("server RSS after the run {:.0} MiB, peak {:.0} MiB", rss_end.0, rss_end.1);
    drop(server);
    let plans = plans(url, deep, &group).await.unwrap_or_else(|e| format!("(plans failed: {e})"));
    let server = ServerFacts { ready_secs, ldap_first_secs, ldap_grant_secs, rss_start, rss_grant, rss_end };
    Ok(Run { backend, size, load_secs, series, plans, load, failed, server })
}

/// One anonymous LDAP search of the base entry: it is refused (bind first), but only after
/// the tree is up to date, which is what it waits for.
fn ldap_touch(url: &str) -> Result<()> {
    let out = Command::new("ldapsearch")
        .args(["-x", "-LLL", "-H", url, "-b", "dc=cairn,dc=local", "-s", "base"])
        .output()
        .context("ldapsearch (Debian's ldap-utils)")?;
    // 50: insufficient access, the answer an anonymous search of the tree gets.
    ensure!(matches!(out.status.code(), Some(0 | 50)), "ldapsearch: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// Associates the group with the built-in LDAP server, as an admin does to give its members
/// LDAP.
async fn associate_with_ldap(base: &str, group: &str) -> Result<()> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let servers = get_json(&client, &format!("{base}/api/v2/ldapservers"), None).await?;
    let id = servers[0]["id"].as_str().ok_or_else(|| anyhow!("no LDAP server in {servers}"))?;
    let r = client
        .post(format!("{base}/api/v2/ldapservers/{id}/associations"))
        .header("x-api-key", API_KEY)
        .json(&json!({"op": "add", "type": "user_group", "id": group}))
        .send()
        .await?;
    ensure!(r.status().is_success(), "associating the group with LDAP: {}", r.status());
    Ok(())
}

fn check_order(page: &Value, desc: bool) -> Result<()> {
    let keys: Vec<(String, String)> = page["results"]
        .as_array()
        .ok_or_else(|| anyhow!("no results"))?
        .iter()
        .map(|u| (u["lastname"].as_str().unwrap_or("").to_lowercase(), u["_id"].as_str().unwrap_or("").to_string()))
        .collect();
    for w in keys.windows(2) {
        let ok = if desc {
            // Descending names (missing ones last), ids ascending within a name.
            w[0].0 > w[1].0 || (w[0].0 == w[1].0 && w[0].1 < w[1].1)
        } else {
            w[0] < w[1]
        };
        ensure!(ok, "the page is out of order at {:?} / {:?}", w[0], w[1]);
    }
    Ok(())
}

// ---- loading -------------------------------------------------------------------------------

/// Loads the users and one group holding 5 % of them; the group's id.
async fn load(url: &str, size: usize) -> Result<String> {
    let store = Store::connect(url).await?;
    let dir = Directory::new(store.clone(), Arc::new(SystemClock));
    dir.migrate().await?;
    let mut rng = StdRng::seed_from_u64(1);
    let users: Vec<User> = (1..=size).map(|n| make_user(&dir, n, &mut rng)).collect();
    let now = dir.now();
    let group = Group {
        id: dir.new_id(),
        name: "bench5pc".into(),
        description: None,
        email: None,
        attributes: None,
        membership_method: None,
        unix_gid: None,
        created: now,
        updated: now,
    };
    let members: Vec<(String, String)> =
        users.iter().filter(|_| rng.gen_bool(0.05)).map(|u| (group.id.clone(), u.id.clone())).collect();
    match store.backend() {
        cairn_store::Backend::Sqlite => {
            // As a large import: the non-unique indexes are built once at the end.
            let mut w = store.writer().await?;
            {
                let mut tx = w.begin().await?;
                tx.db().drop_user_search_indexes(&users).await?;
                tx.commit().await?;
            }
            for batch in users.chunks(BATCH) {
                let mut tx = w.begin().await?;
                tx.db().insert_users(batch).await?;
                tx.commit().await?;
                w.committed().await;
            }
            w.build_user_search_indexes().await?;
            let mut tx = w.begin().await?;
            tx.db().insert_group(&group).await?;
            tx.db().add_members(&members, now).await?;
            tx.commit().await?;
            w.finish().await?;
        }
        cairn_store::Backend::Postgres => {
            let users = Arc::new(users);
            let writers = 4;
            let mut tasks = tokio::task::JoinSet::new();
            for k in 0..writers {
                let (store, users) = (store.clone(), users.clone());
                tasks.spawn(async move {
                    for (i, batch) in users.chunks(BATCH).enumerate() {
                        if i % writers != k {
                            continue;
                        }
                        let mut tx = store.begin().await?;
                        tx.db().insert_users(batch).await?;
                        tx.commit().await?;
                    }
                    Ok::<_, cairn_store::StoreError>(())
                });
            }
            while let Some(r) = tasks.join_next().await {
                r??;
            }
            let mut tx = store.begin().await?;
            tx.db().insert_group(&group).await?;
            tx.db().add_members(&members, now).await?;
            tx.commit().await?;
        }
    }
    store.close().await;
    Ok(group.id)
}

fn make_user(dir: &Directory, n: usize, rng: &mut StdRng) -> User {
    let now = dir.now();
    let state = match n % 20 {
        0 => State::Staged,
        1 => State::Suspended,
        _ => State::Activated,
    };
    let mut profile = Map::new();
    profile.insert("firstname".into(), Value::String(FIRST_NAMES[rng.gen_range(0..FIRST_NAMES.len())].into()));
    if rng.gen_range(0..100) != 0 {
        let last = if rng.gen_bool(0.5) {
            // Skewed: the cube pushes most picks to the first few names.
            let r: f64 = rng.gen();
            CLUSTERED[((r * r * r) * CLUSTERED.len() as f64) as usize].to_string()
        } else {
            let mut s = String::with_capacity(5);
            s.push(rng.gen_range(b'A'..=b'Z') as char);
            for _ in 0..4 {
                s.push(rng.gen_range(b'a'..=b'z') as char);
            }
            s
        };
        profile.insert("lastname".into(), Value::String(last));
    }
    profile.insert("department".into(), Value::String(department(n % DEPARTMENTS)));
    // Every title holds the same share (the count check relies on it).
    profile.insert("jobTitle".into(), Value::String(title((n / DEPARTMENTS) % TITLES)));
    // Columns most users leave empty: a description for 10 %, a UID for a third.
    if rng.gen_bool(0.1) {
        profile.insert("description".into(), Value::String(format!("Contractor batch {}", n % 97)));
    }
    if n.is_multiple_of(3) {
        profile.insert("unix_uid".into(), Value::from(10_000 + n as i64));
    }
    let locked = rng.gen_bool(0.05);
    User {
        id: dir.new_id(),
        username: format!("user{n:07}"),
        email: format!("user{n:07}@example.com"),
        state,
        created: now,
        updated: now,
        creation_source: "bench".into(),
        // ACTIVATED users have set a password; the others are pending (`activated` false).
        password_hash: (state == State::Activated).then(|| Secret::new("$argon2id$v=19$m=19456,t=2,p=1$bench")),
        password_expired: rng.gen_bool(0.03),
        // Set with the password: days apart, so that the sort has ties and an order.
        password_date: (state == State::Activated).then(|| now - chrono::Duration::days((n % 400) as i64)),
        account_locked: locked,
        account_locked_date: locked.then_some(now),
        bad_login_attempts: 0,
        totp_enabled: rng.gen_bool(0.30),
        totp_secret: None,
        profile,
    }
}

// ---- query plans ---------------------------------------------------------------------------

async fn plans(url: &str, deep: usize, group: &str) -> Result<String> {
    // The statements the store sends (SQLite compares the exact half as `+department`, see
    // `cond_sql`), with the values inlined.
    let plus = if url.starts_with("sqlite") { "+" } else { "" };
    let dept = format!("(lower(department) = lower('Dept07') AND {plus}department = 'Dept07')");
    // `search=user012345`: a prefix range on every search field, ORed.
    let search = ["lower(username)", "email", "lower(firstname)", "lower(lastname)", "lower(displayname)"]
        .iter()
        .chain(["lower(employeeidentifier)", "lower(department)"].iter())
        .map(|e| format!("({e} >= 'user012345' AND {e} < 'user012346')"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let search = format!("({search})");
    let queries = [
        format!("SELECT COUNT(*) FROM (SELECT 1 FROM users WHERE {dept} LIMIT 100001) capped"),
        format!("SELECT * FROM users WHERE {dept} ORDER BY lower(lastname) DESC NULLS LAST, id DESC LIMIT 100"),
        "SELECT * FROM users WHERE state = 'SUSPENDED' ORDER BY lower(lastname) ASC NULLS FIRST, id ASC LIMIT 100"
            .to_string(),
        format!("SELECT * FROM users WHERE {dept} ORDER BY lower(lastname) ASC NULLS FIRST, id ASC LIMIT 100 OFFSET {deep}"),
        format!(
            "SELECT * FROM users WHERE {dept} AND lower(lastname) >= 'smith' AND (lower(lastname) > 'smith' OR id > '0') \
             ORDER BY lower(lastname) ASC NULLS FIRST, id ASC LIMIT 100"
        ),
        "SELECT COUNT(*) FROM (SELECT 1 FROM users LIMIT 100001) capped".to_string(),
        format!("SELECT * FROM users WHERE {search} ORDER BY id ASC LIMIT 10"),
        format!("SELECT COUNT(*) FROM (SELECT 1 FROM users WHERE {search} LIMIT 100001) capped"),
        // The portal's other filters as the store writes them (a boolean as a literal).
        "SELECT * FROM users WHERE account_locked ORDER BY lower(lastname) DESC NULLS LAST, id DESC LIMIT 100".to_string(),
        "SELECT * FROM users WHERE account_locked ORDER BY id ASC LIMIT 100".to_string(),
        "SELECT * FROM users WHERE account_locked ORDER BY created DESC, id DESC LIMIT 100".to_string(),
        "SELECT * FROM users WHERE NOT account_locked ORDER BY lower(lastname) ASC NULLS FIRST, id ASC LIMIT 100"
            .to_string(),
        "SELECT * FROM users WHERE password_expired ORDER BY lower(lastname) ASC NULLS FIRST, id ASC LIMIT 100"
            .to_string(),
        "SELECT * FROM users WHERE password_hash IS NULL ORDER BY lower(lastname) ASC NULLS FIRST, id ASC LIMIT 100"
            .to_string(),
        "SELECT * FROM users WHERE totp_enabled ORDER BY lower(lastname) DESC NULLS LAST, id DESC LIMIT 100".to_string(),
        "SELECT * FROM users WHERE NOT totp_enabled ORDER BY email ASC, id ASC LIMIT 100".to_string(),
        "SELECT * FROM users WHERE jobtitle = 'Title03' ORDER BY lower(lastname) ASC NULLS FIRST, id ASC LIMIT 100"
            .to_string(),
        "SELECT * FROM users WHERE jobtitle = 'Title03' ORDER BY id ASC LIMIT 100".to_string(),
        "SELECT COUNT(*) FROM (SELECT 1 FROM users WHERE jobtitle = 'Title03' LIMIT 10001) capped".to_string(),
        "SELECT COUNT(*) FROM users WHERE account_locked".to_string(),
        "SELECT COUNT(*) FROM users WHERE totp_enabled".to_string(),
        format!(
            "SELECT COUNT(*) FROM users WHERE id IN (SELECT user_id FROM group_members WHERE group_id = '{group}')"
        ),
        format!(
            "SELECT * FROM users WHERE id IN (SELECT user_id FROM group_members WHERE group_id = '{group}') \
             ORDER BY lower(lastname) ASC NULLS FIRST, id ASC LIMIT 100"
        ),
        format!(
            "SELECT * FROM users WHERE id IN (SELECT user_id FROM group_members WHERE group_id = '{group}') \
             ORDER BY id ASC LIMIT 100"
        ),
        // A large group's early page on SQLite (the store's `list_users_in_group`).
        format!(
            "SELECT * FROM users WHERE EXISTS (SELECT 1 FROM group_members m WHERE m.group_id = '{group}' \
             AND m.user_id = users.id) ORDER BY lower(lastname) ASC NULLS FIRST, id ASC LIMIT 100"
        ),
    ];
    let mut out = String::new();
    if url.starts_with("sqlite") {
        let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
        let mut c = sqlx::SqliteConnection::connect_with(&opts).await?;
        for q in &queries {
            writeln!(out, "EXPLAIN QUERY PLAN {q}")?;
            for r in sqlx::query(&format!("EXPLAIN QUERY PLAN {q}")).fetch_all(&mut c).await? {
                writeln!(out, "  {}", r.get::<String, _>("detail"))?;
            }
        }
        c.close().await?;
    } else {
        let mut c = sqlx::PgConnection::connect(url).await?;
        for q in &queries {
            writeln!(out, "EXPLAIN (ANALYZE, BUFFERS) {q}")?;
            for r in sqlx::query(&format!("EXPLAIN (ANALYZE, BUFFERS) {q}")).fetch_all(&mut c).await? {
                writeln!(out, "  {}", r.get::<String, _>(0))?;
            }
        }
        c.close().await?;
    }
    Ok(out)
}

// ---- the report ----------------------------------------------------------------------------

fn print_report(runs: &[Run]) {
    println!("\n## lists and search (ms, keep-alive off; p50 / p99)\n");
    let mut head = "| backend | users | load s |".to_string();
    let mut rule = "|---|---|---|".to_string();
    for s in SERIES {
        write!(head, " {s} |").ok();
        rule.push_str("---|");
    }
    println!("{head}\n{rule}");
    for r in runs {
        let mut line = format!("| {} | {} | {:.0} |", r.backend, r.size, r.load_secs);
        for s in SERIES {
            match r.series.get(s) {
                Some(st) => write!(line, " {:.2} / {:.2} |", st.p50, st.p99).ok(),
                None if r.failed.contains(s) => write!(line, " error |").ok(),
                None => write!(line, " — |").ok(),
            };
        }
        println!("{line}");
    }
    println!("\n## the server (LDAP listener on, as by default; the 5 % group associated with LDAP)\n");
    println!("| backend | users | ready s | first LDAP op s | LDAP op after the grant s | RSS / peak MiB at start | after the grant | after the run |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in runs {
        let f = &r.server;
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.0} / {:.0} | {:.0} / {:.0} | {:.0} / {:.0} |",
            r.backend,
            r.size,
            f.ready_secs,
            f.ldap_first_secs,
            f.ldap_grant_secs,
            f.rss_start.0,
            f.rss_start.1,
            f.rss_grant.0,
            f.rss_grant.1,
            f.rss_end.0,
            f.rss_end.1
        );
    }
    println!("\nGoals: p99 <= {GOAL_P99_MS} ms (SCIM <= {GOAL_SCIM_P99_MS} ms) at the largest size, p99 <= {GOAL_RATIO}x the smallest");
    for big in runs {
        let small = runs.iter().filter(|r| r.backend == big.backend && r.size < big.size).min_by_key(|r| r.size);
        for s in SERIES {
            let Some(b) = big.series.get(s) else { continue };
            let goal = if *s == "scim userName" { GOAL_SCIM_P99_MS } else { GOAL_P99_MS };
            let mut line =
                format!("  {} {} {s}: p99 {:.2} ms {}", big.backend, big.size, b.p99, verdict(b.p99 <= goal));
            if let Some(sm) = small.and_then(|r| r.series.get(s)) {
                let ratio = b.p99 / sm.p99;
                write!(
                    line,
                    "; {:.2}x the p99 at {} {}",
                    ratio,
                    small.map_or(0, |r| r.size),
                    verdict(ratio <= GOAL_RATIO)
                )
                .ok();
            }
            println!("{line}");
        }
    }
    for r in runs {
        println!(
            "\n### {} at {} (load average {} before, {} after the timed requests)\n{}",
            r.backend, r.size, r.load.0, r.load.1, r.plans
        );
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

// ---- plumbing (as in list_users) -----------------------------------------------------------

fn cairn_binary() -> Result<PathBuf> {
    let bin = match std::env::var_os("CAIRN_BIN") {
        Some(b) => PathBuf::from(b),
        None => PathBuf::from(std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "/var/tmp/cairn-target".into()))
            .join("release/cairn"),
    };
    ensure!(bin.is_file(), "{} is missing: build it first with `cargo build --release -p cairn`", bin.display());
    Ok(bin)
}

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

async fn pg_admin() -> Result<sqlx::PgConnection> {
    let c = tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(PG_ADMIN_URL))
        .await
        .map_err(|_| anyhow!("timed out"))??;
    Ok(c)
}

fn request(client: &reqwest::Client, url: &str, auth: Option<&str>) -> reqwest::RequestBuilder {
    let r = client.get(url).header("connection", "close");
    match auth {
        Some(a) => r.header("authorization", a),
        None => r.header("x-api-key", API_KEY),
    }
}

async fn get_body(client: &reqwest::Client, url: &str, auth: Option<&str>) -> Result<usize> {
    let r = request(client, url, auth).send().await?;
    let status = r.status();
    let body = r.bytes().await?;
    if status != reqwest::StatusCode::OK {
        bail!("GET {url}: {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(body.len())
}

/// A client signed in to the admin portal (its session cookie), keep-alive off.
async fn admin_client(base: &str) -> Result<reqwest::Client> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(120))
        .build()?;
    cairn_bench::admin_login(&client, base, ADMIN_EMAIL, ADMIN_PASSWORD).await?;
    Ok(client)
}

async fn get_admin(client: &reqwest::Client, url: &str) -> Result<String> {
    let r = client.get(url).header("connection", "close").send().await?;
    let status = r.status();
    let body = r.text().await?;
    if status != reqwest::StatusCode::OK {
        bail!("GET {url}: {status}: {}", body.chars().take(300).collect::<String>());
    }
    Ok(body)
}

async fn get_json(client: &reqwest::Client, url: &str, auth: Option<&str>) -> Result<Value> {
    let r = request(client, url, auth).send().await?;
    let status = r.status();
    let body: Value = r.json().await?;
    if status != reqwest::StatusCode::OK {
        bail!("GET {url}: {status}: {body}");
    }
    Ok(body)
}
