//! Issue 5 benchmark: import the same 100,000-row CSV (no passwords) into Cairn on SQLite with
//! `cairn users import`, and with `sqlite3 .import` into a table with the same unique indexes,
//! side by side; Cairn's peak RSS during the import; then an export of the 100,000 users.
//! New users STAGED (no mail, the usual onboarding import) in three rounds of reference then
//! Cairn, with the median ratio; an export of the STAGED users and an `--update` import
//! changing two fields of each; then one round with new users ACTIVATED (the default setting:
//! every user without a password gets an activation mail and link).
//!
//! cargo build --release -p cairn && cargo run --release -p cairn-bench --bin import
//!
//! Issue 19 (`-- scale`, rows from `CAIRN_BENCH_ROWS`, default 1,000,000): the sqlite3
//! reference, then with new users ACTIVATED (mail on) the CLI import, the export of the result,
//! and the same file through `POST /api/v2/users/import` of a running server polled by a client
//! every 200 ms as the admin portal does; peak RSS of each Cairn process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Rows of the issue-5 run; `-- scale` reads `CAIRN_BENCH_ROWS` instead.
const ROWS_DEFAULT: usize = 100_000;

fn rows() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        let scale = std::env::args().any(|a| a == "scale");
        let from_env = std::env::var("CAIRN_BENCH_ROWS").ok().and_then(|v| v.parse().ok());
        match (scale, from_env) {
            (_, Some(n)) => n,
            (true, None) => 1_000_000,
            (false, None) => ROWS_DEFAULT,
        }
    })
}
const ROUNDS: usize = 3;

fn cairn() -> PathBuf {
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{}/../target", env!("CARGO_MANIFEST_DIR")));
    PathBuf::from(dir).join("release/cairn")
}

/// Runs a command, sampling its peak RSS (VmHWM) until it exits; (seconds, peak MiB).
fn timed(mut cmd: Command) -> anyhow::Result<(f64, f64, String)> {
    let start = Instant::now();
    let child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn()?;
    let pid = child.id();
    let mut peak_kb = 0u64;
    let out = std::thread::scope(|s| {
        let h = s.spawn(|| child.wait_with_output());
        while !h.is_finished() {
            if let Ok(st) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                if let Some(v) = st
                    .lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    peak_kb = peak_kb.max(v);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        h.join().expect("waiter")
    })?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() && out.status.code() != Some(2) {
        anyhow::bail!("{:?} failed: {}", cmd, String::from_utf8_lossy(&out.stderr));
    }
    Ok((secs, peak_kb as f64 / 1024.0, String::from_utf8_lossy(&out.stdout).to_string()))
}

fn write_csv(path: &Path) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "Username,Email,FirstName,LastName,Department,jobTitle,employeeIdentifier,location")?;
    for i in 0..rows() {
        writeln!(
            f,
            "user{i:06},user{i:06}@example.com,First{i},Last{i},Dept {:02},Engineer,E{i:06},Site {}",
            i % 50,
            i % 7
        )?;
    }
    Ok(())
}

fn cairn_import(csv: &Path, state: &str) -> anyhow::Result<(f64, f64, PathBuf)> {
    let data = tempfile::tempdir()?.keep();
    // Settings first (a tiny import-free command): the default state for CSV imports.
    let cfg = data.join("cairn.toml");
    std::fs::write(&cfg, format!("data_dir = \"{}\"\n", data.display()))?;
    let mut migrate = Command::new(cairn());
    migrate.args(["--config", cfg.to_str().unwrap(), "migrate"]);
    timed(migrate)?;
    sqlx_settings(&data, state)?;
    let mut cmd = Command::new(cairn());
    cmd.args(["--config", cfg.to_str().unwrap(), "users", "import", csv.to_str().unwrap()]).env("CAIRN_LOG", "warn");
    let (secs, peak, out) = timed(cmd)?;
    assert!(out.contains(&format!("created  {:>8}", rows())), "{out}");
    Ok((secs, peak, data))
}

/// Sets newSystemUserStateDefaults.csvImport through SQL (the bench has no server running).
fn sqlx_settings(data: &Path, state: &str) -> anyhow::Result<()> {
    let db = data.join("cairn.db");
    let out = Command::new("sqlite3")
        .arg(&db)
        .arg(format!("UPDATE organization SET settings = json_set(settings, '$.newSystemUserStateDefaults.csvImport', '{state}');"))
        .output()?;
    anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

fn sqlite_import(csv: &Path) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("ref.db");
    let schema = "CREATE TABLE users (username TEXT NOT NULL, email TEXT NOT NULL, firstname TEXT, lastname TEXT, department TEXT, \
                  jobtitle TEXT, employeeidentifier TEXT, location TEXT); \
                  CREATE UNIQUE INDEX u1 ON users (username); CREATE UNIQUE INDEX u2 ON users (email); \
                  CREATE UNIQUE INDEX u3 ON users (employeeidentifier); PRAGMA journal_mode=WAL;";
    let out = Command::new("sqlite3").arg(&db).arg(schema).output()?;
    anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let start = Instant::now();
    let out = Command::new("sqlite3")
        .arg(&db)
        .args([".mode csv", &format!(".import --skip 1 {} users", csv.display())])
        .output()?;
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let n = Command::new("sqlite3").arg(&db).arg("SELECT COUNT(*) FROM users").output()?;
    anyhow::ensure!(
        String::from_utf8_lossy(&n.stdout).trim() == rows().to_string(),
        "sqlite3 imported {}",
        String::from_utf8_lossy(&n.stdout)
    );
    Ok(secs)
}

fn main() -> anyhow::Result<()> {
    anyhow::ensure!(
        cairn().exists(),
        "build the server first: cargo build --release -p cairn ({} missing)",
        cairn().display()
    );
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("people.csv");
    write_csv(&csv)?;
    if std::env::args().any(|a| a == "scale") {
        return scale(&csv);
    }
    // Rounds of the reference then Cairn back to back: this machine's speed drifts by tens of
    // percent within minutes, so each ratio compares runs made under like load.
    let mut ratios = vec![];
    let mut staged = None;
    for round in 1..=ROUNDS {
        let reference = sqlite_import(&csv)?;
        let (secs, peak, data) = cairn_import(&csv, "STAGED")?;
        ratios.push(secs / reference);
        println!(
            "round {round}: sqlite3 .import {reference:.2} s; cairn users import, new users STAGED: {secs:.2} s \
             ({:.0} rows/s), ratio {:.2}, peak RSS {peak:.0} MiB",
            rows() as f64 / secs,
            secs / reference
        );
        if let Some(old) = staged.replace(data) {
            let _ = std::fs::remove_dir_all(old);
        }
    }
    ratios.sort_by(f64::total_cmp);
    println!("median ratio, new users STAGED: {:.2}", ratios[ratios.len() / 2]);
    let data = staged.expect("at least one round");
    let cfg = data.join("cairn.toml");
    let mut cmd = Command::new(cairn());
    cmd.args(["--config", cfg.to_str().unwrap(), "users", "export", "--format", "csv"]);
    let (secs, peak, out) = timed(cmd)?;
    anyhow::ensure!(out.lines().count() == rows() + 1, "export had {} lines", out.lines().count());
    println!("cairn users export of {} users (CSV): {secs:.2} s, peak RSS {peak:.0} MiB", rows());
    // Update mode: every user gets a new department and job title.
    let upd = dir.path().join("changes.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&upd)?);
    writeln!(f, "Username,Email,Department,jobTitle")?;
    for i in 0..rows() {
        writeln!(f, "user{i:06},,Dept {:02},Senior Engineer", (i + 1) % 50)?;
    }
    drop(f);
    let mut cmd = Command::new(cairn());
    cmd.args(["--config", cfg.to_str().unwrap(), "users", "import", "--update", upd.to_str().unwrap()])
        .env("CAIRN_LOG", "warn");
    let (secs, peak, out) = timed(cmd)?;
    anyhow::ensure!(out.contains(&format!("updated  {:>8}", rows())), "{out}");
    println!("cairn users import --update of {} users: {secs:.2} s, peak RSS {peak:.0} MiB", rows());
    let _ = std::fs::remove_dir_all(data);

    let reference = sqlite_import(&csv)?;
    let (secs, peak, data) = cairn_import(&csv, "ACTIVATED")?;
    println!(
        "sqlite3 .import {reference:.2} s; cairn users import, new users ACTIVATED: {secs:.2} s ({:.0} rows/s), \
         ratio {:.2}, peak RSS {peak:.0} MiB",
        rows() as f64 / secs,
        secs / reference
    );
    let _ = std::fs::remove_dir_all(data);
    Ok(())
}

/// Issue 19: the CLI and API paths with mail on, and the export, against the reference.
fn scale(csv: &Path) -> anyhow::Result<()> {
    let n = rows();
    let reference = sqlite_import(csv)?;
    println!("sqlite3 .import of {n} rows (3 unique indexes): {reference:.2} s");
    let (secs, peak, data) = cairn_import(csv, "ACTIVATED")?;
    println!(
        "cairn users import, new users ACTIVATED (mail on): {secs:.2} s ({:.0} rows/s), ratio {:.2}, peak RSS {peak:.0} MiB",
        n as f64 / secs,
        secs / reference
    );
    let import_secs = secs;
    let cfg = data.join("cairn.toml");
    let mut cmd = Command::new(cairn());
    cmd.args(["--config", cfg.to_str().unwrap(), "users", "export", "--format", "csv"]);
    let (secs, peak, out) = timed(cmd)?;
    anyhow::ensure!(out.lines().count() == n + 1, "export had {} lines", out.lines().count());
    println!(
        "cairn users export of {n} users (CSV): {secs:.2} s = {:.2}× the import, peak RSS {peak:.0} MiB",
        secs / import_secs
    );
    let db_mib = std::fs::metadata(data.join("cairn.db"))?.len() as f64 / 1048576.0;
    println!("database after the import: {db_mib:.0} MiB");
    let _ = std::fs::remove_dir_all(data);

    // The API path: a running server, the file posted as the request body, a client polling.
    let data = tempfile::tempdir()?.keep();
    let key = "cairn_bench_import_key_0123456789abcdef";
    let server = cairn_bench::Server::start(
        &cairn(),
        &data,
        cairn_bench::free_port()?,
        &[("CAIRN_BOOTSTRAP_API_KEY", key.to_string())],
    )?;
    let client = reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(600)).build()?;
    let body = std::fs::read(csv)?;
    let start = Instant::now();
    let r = client
        .post(format!("{}/api/v2/users/import", server.base))
        .header("x-api-key", key)
        .header("content-type", "text/csv")
        .body(body)
        .send()?;
    anyhow::ensure!(r.status().as_u16() == 202, "import answered {}: {}", r.status(), r.text()?);
    let job = r.json::<serde_json::Value>()?["jobId"].as_str().unwrap_or_default().to_string();
    let mut polls = 0;
    let status = loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        polls += 1;
        let v: serde_json::Value =
            client.get(format!("{}/api/v2/users/import/{job}", server.base)).header("x-api-key", key).send()?.json()?;
        if v["status"] != "running" && v["status"] != "queued" {
            break v;
        }
    };
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(status["counts"]["created"] == n, "{status}");
    let (_, peak) = server.rss_mib()?;
    println!(
        "POST /api/v2/users/import, new users ACTIVATED (mail on), {polls} polls: {secs:.2} s ({:.0} rows/s), \
         ratio {:.2}, {:.2}× the CLI, server peak RSS {peak:.0} MiB",
        n as f64 / secs,
        secs / reference,
        secs / import_secs
    );
    backup_while_serving(&server, &data, key)?;
    drop(server);
    let _ = std::fs::remove_dir_all(data);
    Ok(())
}

/// `cairn backup` of the loaded directory while a client asks for a page of users 50 times a
/// second (a new connection each): the slowest answers before and during the backup.
fn backup_while_serving(server: &cairn_bench::Server, data: &Path, key: &str) -> anyhow::Result<()> {
    let stop = std::sync::atomic::AtomicBool::new(false);
    let load = || -> anyhow::Result<Vec<f64>> {
        let mut ms = vec![];
        let mut next = Instant::now();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            next += std::time::Duration::from_millis(20);
            let client = reqwest::blocking::Client::builder().pool_max_idle_per_host(0).build()?;
            let t = Instant::now();
            let r = client
                .get(format!("{}/api/systemusers?limit=10&sort=-lastname", server.base))
                .header("x-api-key", key)
                .send()?;
            anyhow::ensure!(r.status().is_success(), "{}", r.status());
            r.bytes()?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        Ok(ms)
    };
    let summary = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
        format!("{} requests, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", v.len(), p(0.5), p(0.99), p(1.0))
    };
    let quiet = std::thread::scope(|sc| {
        let h = sc.spawn(load);
        std::thread::sleep(std::time::Duration::from_secs(10));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        h.join().expect("load thread")
    })?;
    println!("50 req/s without a backup: {}", summary(quiet));
    stop.store(false, std::sync::atomic::Ordering::Relaxed);
    let file = data.join("bench.cairn-backup");
    let (during, backup) = std::thread::scope(|sc| {
        let h = sc.spawn(load);
        std::thread::sleep(std::time::Duration::from_secs(2));
        let mut cmd = Command::new(cairn());
        cmd.arg("backup").arg(&file).env("CAIRN_DATA_DIR", data).env("CAIRN_LOG", "warn");
        let backup = timed(cmd);
        std::thread::sleep(std::time::Duration::from_secs(2));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (h.join().expect("load thread"), backup)
    });
    let (secs, peak, _) = backup?;
    let size = std::fs::metadata(&file)?.len() as f64 / 1048576.0;
    println!("cairn backup: {secs:.1} s, {size:.0} MiB archive, peak RSS {peak:.0} MiB");
    println!("50 req/s during the backup: {}", summary(during?));
    Ok(())
}
