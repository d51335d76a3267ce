//! Issue 15 benchmark: Cairn's LDAP against OpenLDAP `slapd` (back-mdb) holding the same
//! 100,000 users, driven by the same load client (`shared/tools/ldapbench`), side by side:
//! `(uid=…)` searches per second, p99 and server CPU seconds per 10,000 searches at 8 and 32
//! connections, and binds per second with the same Argon2id parameters (slapd's argon2
//! module), against the raw Argon2id verification rate of this machine.
//!
//! Needs Debian's `slapd` and Python's `argon2-cffi` (for the slapd loader), and the load client
//! built: `cargo build --release` in `$CAIRN_BENCH_TOOLS/ldapbench` (default
//! `../shared/tools`; its binary is looked up in `$LDAPBENCH` or
//! `/var/tmp/ldapbench-target/release/ldapbench`).
//!
//! cargo build --release -p cairn && cargo run --release -p cairn-bench --bin ldap_vs_slapd

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use cairn_bench::{free_port, raw_argon2_rate, Server};
use serde_json::{json, Value};

const KEY: &str = "cairn_bench_ldap_key_0123456789abcdef";
const BASE: &str = "dc=cairn,dc=local";
const USERS: usize = 100_000;
const WITH_PASSWORD: usize = 1_000;
const SECONDS: u64 = 10;

fn main() -> Result<()> {
    let target = PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()));
    let cairn = target.join("release/cairn");
    let tools = PathBuf::from(std::env::var("CAIRN_BENCH_TOOLS").unwrap_or_else(|_| "../shared/tools".into()));
    let bench = PathBuf::from(
        std::env::var("LDAPBENCH").unwrap_or_else(|_| "/var/tmp/ldapbench-target/release/ldapbench".into()),
    );
    for (p, what) in [(&cairn, "cargo build --release -p cairn"), (&bench, "cargo build --release in tools/ldapbench")]
    {
        if !p.exists() {
            bail!("{} is missing: {what}", p.display());
        }
    }
    let tmp = tempfile::tempdir()?;

    // slapd, loaded by the shared script.
    let t = Instant::now();
    let slapd_dir = tmp.path().join("slapd");
    let slapd_port = free_port()?;
    let out = Command::new("bash")
        .arg(tools.join("slapd-bench/slapd-up.sh"))
        .args([slapd_dir.to_str().unwrap(), &slapd_port.to_string(), &USERS.to_string(), &WITH_PASSWORD.to_string()])
        .output()
        .context("running slapd-up.sh")?;
    if !out.status.success() {
        bail!("slapd-up.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let slapd_pid: u32 = String::from_utf8_lossy(&out.stdout).trim().lines().last().unwrap_or("").parse()?;
    let _slapd = Kill(slapd_pid);
    println!("slapd loaded in {:.1} s (pid {slapd_pid})", t.elapsed().as_secs_f64());

    // Cairn, the same users through the CSV import, granted through one group.
    let t = Instant::now();
    let (http, ldap) = (free_port()?, free_port()?);
    let env = [
        ("CAIRN_LDAP_ADDR", format!("127.0.0.1:{ldap}")),
        ("CAIRN_RADIUS_ADDR", "off".to_string()),
        ("CAIRN_BOOTSTRAP_API_KEY", KEY.to_string()),
    ];
    let server = Server::start(&cairn, &tmp.path().join("cairn"), http, &env)?;
    let c = reqwest::blocking::Client::builder().timeout(Duration::from_secs(600)).build()?;
    let api = |method: &str, path: &str, body: Value| -> Result<Value> {
        let r =
            c.request(method.parse()?, format!("{}{path}", server.base)).header("x-api-key", KEY).json(&body).send()?;
        let st = r.status();
        let v: Value = r.json().unwrap_or(Value::Null);
        if !st.is_success() {
            bail!("{method} {path}: {st} {v}");
        }
        Ok(v)
    };
    // slapd's passwords are `pw-uNNNNNN`: 10 characters.
    api("PUT", "/api/organizations", json!({"settings": {"passwordPolicy": {"minLength": 8}}}))?;
    let group = api("POST", "/api/v2/usergroups", json!({"name": "ldap"}))?["id"].as_str().unwrap().to_string();
    let lid = api("GET", "/api/v2/ldapservers", json!(null))?[0]["id"].as_str().unwrap().to_string();
    api(
        "POST",
        &format!("/api/v2/ldapservers/{lid}/associations"),
        json!({"op": "add", "type": "user_group", "id": group}),
    )?;
    let mut csv = String::from("Username,Email,FirstName,LastName,department,Password,ldap\n");
    for i in 0..USERS {
        let pw = if i < WITH_PASSWORD { format!("pw-u{i:06}") } else { String::new() };
        csv.push_str(&format!(
            "u{i:06},u{i:06}@example.com,First{},Last{:06},Dept{:02},{pw},true\n",
            i % 997,
            (i * 7919) % 100_003,
            i % 20
        ));
    }
    let r = c
        .post(format!("{}/api/v2/users/import", server.base))
        .header("x-api-key", KEY)
        .header("content-type", "text/csv")
        .body(csv)
        .send()?;
    let job: Value = r.json()?;
    let job = job["jobId"].as_str().ok_or_else(|| anyhow!("no job: {job}"))?.to_string();
    loop {
        let v = api("GET", &format!("/api/v2/users/import/{job}"), json!(null))?;
        match v["status"].as_str() {
            Some("done") => break,
            Some("failed") => bail!("import failed: {v}"),
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
    let svc = "svc-bench";
    api(
        "POST",
        "/api/systemusers",
        json!({"username": svc, "email": "svc@example.com", "password": "service password 1", "ldap_binding_user": true}),
    )?;
    let svc_id = api("GET", &format!("/api/systemusers?filter=username:$eq:{svc}"), json!(null))?["results"][0]["_id"]
        .as_str()
        .unwrap()
        .to_string();
    api(
        "POST",
        &format!("/api/v2/ldapservers/{lid}/associations"),
        json!({"op": "add", "type": "user", "id": svc_id}),
    )?;
    println!("Cairn loaded in {:.1} s (pid {})", t.elapsed().as_secs_f64(), server.child.id());

    let slapd_url = format!("ldap://127.0.0.1:{slapd_port}");
    let cairn_url = format!("ldap://127.0.0.1:{ldap}");
    let slapd_bind = (format!("cn=admin,{BASE}"), "admin".to_string());
    let cairn_bind = (format!("uid={svc},ou=Users,{BASE}"), "service password 1".to_string());
    // Warm both (Cairn's tree loads at start; slapd's pages).
    run(&bench, &slapd_url, "search", 3, 8, USERS, Some(&slapd_bind), slapd_pid)?;
    run(&bench, &cairn_url, "search", 3, 8, USERS, Some(&cairn_bind), server.child.id())?;

    println!("\n| test | conns | slapd ops/s | Cairn ops/s | Cairn / slapd | slapd p99 ms | Cairn p99 ms | slapd CPU s / 10k | Cairn CPU s / 10k | errors |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (mode, conns, n) in [("search", 8, USERS), ("search", 32, USERS), ("bind", 8, WITH_PASSWORD)] {
        for round in 0..2 {
            let bind_s = (mode == "search").then_some(&slapd_bind);
            let bind_c = (mode == "search").then_some(&cairn_bind);
            let s = run(&bench, &slapd_url, mode, SECONDS, conns, n, bind_s, slapd_pid)?;
            let k = run(&bench, &cairn_url, mode, SECONDS, conns, n, bind_c, server.child.id())?;
            println!(
                "| {mode} r{round} | {conns} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.3} | {:.3} | {}/{} |",
                s.ops,
                k.ops,
                k.ops / s.ops,
                s.p99,
                k.p99,
                s.cpu_per_10k,
                k.cpu_per_10k,
                s.errors,
                k.errors
            );
        }
    }
    let raw = raw_argon2_rate()?;
    println!("\nraw Argon2id verification on this machine (every core): {raw:.1}/s");
    let rss = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()))?;
    for l in rss.lines().filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM")) {
        println!("Cairn {l}");
    }
    Ok(())
}

struct Figures {
    ops: f64,
    p99: f64,
    errors: u64,
    cpu_per_10k: f64,
}

#[allow(clippy::too_many_arguments)]
fn run(
    bench: &Path,
    url: &str,
    mode: &str,
    secs: u64,
    conns: usize,
    n: usize,
    bind: Option<&(String, String)>,
    pid: u32,
) -> Result<Figures> {
    let cpu0 = cpu_seconds(pid)?;
    let mut cmd = Command::new(bench);
    cmd.args([url, mode, &secs.to_string(), &conns.to_string(), &n.to_string(), BASE]);
    if let Some((dn, pw)) = bind {
        cmd.args([dn, pw]);
    }
    let out = cmd.output()?;
    let cpu = cpu_seconds(pid)? - cpu0;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!("ldapbench failed: {text} {}", String::from_utf8_lossy(&out.stderr));
    }
    // "ops/s 1234 p50_ms 0.61 p99_ms 2.50 errors 0 total 12340": the number after each label.
    let num = |label: &str| -> Result<f64> {
        let i = text.find(label).ok_or_else(|| anyhow!("no {label} in: {text}"))?;
        text[i + label.len()..]
            .split_whitespace()
            .next()
            .and_then(|v| v.trim_matches(|c: char| !c.is_ascii_digit() && c != '.').parse().ok())
            .ok_or_else(|| anyhow!("unreadable {label} in: {text}"))
    };
    let ops = num("ops/s")?;
    Ok(Figures {
        ops,
        p99: num("p99_ms")?,
        errors: num("errors")? as u64,
        cpu_per_10k: cpu / (ops * secs as f64) * 10_000.0,
    })
}

fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').ok_or_else(|| anyhow!("bad stat"))? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

/// Argon2id verifications per second on every core, Cairn's parameters.
struct Kill(u32);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.to_string()).stdout(Stdio::null()).status();
    }
}
