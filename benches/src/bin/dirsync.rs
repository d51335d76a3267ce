//! Issue 18 benchmark: sync N users (default 100,000) from a throwaway OpenLDAP slapd into a
//! release `cairn serve` on SQLite — the first import and a no-change re-sync — side by side
//! with a plain paged dump of the same entries (`ldapsearch -E pr=1000/noprompt`) in the same
//! run; Cairn's peak RSS. Users are created in the `manualEntry` default state (ACTIVATED),
//! delegated (no mail); then a first import again into a new server with the default password
//! authority, where each new user gets an activation mail.
//!
//! cargo build --release -p cairn && cargo run --release -p cairn-bench --bin dirsync [N]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cairn_bench::{free_port, Server};
use serde_json::{json, Value};

const BASE: &str = "dc=example,dc=org";
const ROOT_DN: &str = "cn=admin,dc=example,dc=org";
const ROOT_PW: &str = "admin-secret";
const KEY: &str = "bench-bootstrap-key-0123456789abcdef";

fn cairn() -> PathBuf {
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{}/../target", env!("CARGO_MANIFEST_DIR")));
    PathBuf::from(dir).join("release/cairn")
}

/// slapd with `n` inetOrgPerson users under ou=people; its pid.
fn slapd(dir: &Path, port: u16, n: usize) -> Result<u32> {
    std::fs::create_dir_all(dir.join("db"))?;
    std::fs::write(
        dir.join("slapd.conf"),
        format!(
            "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\nmodulepath /usr/lib/ldap\nmoduleload back_mdb\n\
             pidfile {d}/slapd.pid\nthreads 4\ndatabase mdb\nmaxsize 4294967296\nsuffix \"{BASE}\"\n\
             rootdn \"{ROOT_DN}\"\nrootpw {ROOT_PW}\ndirectory {d}/db\nindex objectClass eq\n\
             sizelimit unlimited\naccess to * by * read\n",
            d = dir.display()
        ),
    )?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("data.ldif"))?);
    write!(f, "dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n")?;
    write!(f, "dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n\n")?;
    for i in 0..n {
        write!(
            f,
            "dn: uid=u{i:06},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: u{i:06}\ncn: First{} Last{i:06}\n\
             sn: Last{i:06}\ngivenName: First{}\nmail: u{i:06}@example.com\ndepartmentNumber: Dept{:02}\ntitle: Engineer\n",
            i % 997,
            i % 997,
            i % 20
        )?;
        // Teams of 50 under a lead, the leads under the first user; one team in ten is listed
        // before its lead (upstream order is not hierarchy order).
        let team = i / 50;
        let lead = if team % 10 == 9 { team * 50 + 49 } else { team * 50 };
        let manager = if i == lead { 0 } else { lead };
        if i != 0 {
            writeln!(f, "manager: uid=u{manager:06},ou=people,{BASE}")?;
        }
        writeln!(f)?;
    }
    drop(f);
    let st = Command::new("/usr/sbin/slapadd")
        .args(["-q", "-f", &dir.join("slapd.conf").to_string_lossy(), "-l", &dir.join("data.ldif").to_string_lossy()])
        .status()?;
    if !st.success() {
        bail!("slapadd failed");
    }
    let st = Command::new("/usr/sbin/slapd")
        .args(["-f", &dir.join("slapd.conf").to_string_lossy(), "-h", &format!("ldap://127.0.0.1:{port}/")])
        .status()?;
    if !st.success() {
        bail!("slapd failed");
    }
    for _ in 0..100 {
        if let Ok(p) = std::fs::read_to_string(dir.join("slapd.pid")) {
            if let Ok(pid) = p.trim().parse() {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok(pid);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("slapd did not start")
}

/// The paged dump of the same entries and attributes a sync reads; seconds.
fn dump(port: u16, n: usize) -> Result<f64> {
    let t = Instant::now();
    let out = Command::new("ldapsearch")
        .args(["-x", "-LLL", "-H", &format!("ldap://127.0.0.1:{port}"), "-D", ROOT_DN, "-w", ROOT_PW])
        .args(["-b", &format!("ou=people,{BASE}"), "-E", "pr=1000/noprompt", "(objectClass=inetOrgPerson)"])
        .args(["entryUUID", "uid", "mail", "givenName", "sn", "cn", "departmentNumber", "title", "manager", "memberOf"])
        .output()?;
    let secs = t.elapsed().as_secs_f64();
    let entries = String::from_utf8_lossy(&out.stdout).matches("\ndn: ").count() + 1;
    if entries < n {
        bail!("ldapsearch returned {entries} entries: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(secs)
}

fn api(s: &Server, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
    let c = reqwest::blocking::Client::new();
    let mut r = c.request(method.parse()?, format!("{}{path}", s.base)).header("x-api-key", KEY);
    if let Some(b) = body {
        r = r.header("content-type", "application/json").body(b.to_string());
    }
    let res = r.send()?;
    let st = res.status();
    let v: Value = res.json().unwrap_or(Value::Null);
    if !st.is_success() {
        bail!("{method} {path}: {st} {v}");
    }
    Ok(v)
}

/// One sync through the API; (seconds, counts, peak RSS MiB while it ran).
fn sync(s: &Server, id: &str) -> Result<(f64, Value, f64)> {
    let t = Instant::now();
    let job = api(s, "POST", &format!("/api/v2/directories/{id}/sync"), Some(json!({})))?["jobId"]
        .as_str()
        .context("jobId")?
        .to_string();
    let mut peak: f64 = 0.0;
    loop {
        let j = api(s, "GET", &format!("/api/v2/directories/{id}/sync/{job}"), None)?;
        peak = peak.max(s.rss_mib()?.1);
        match j["status"].as_str() {
            Some("done") => return Ok((t.elapsed().as_secs_f64(), j["counts"].clone(), peak)),
            Some("failed") => bail!("sync failed: {j}"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn main() -> Result<()> {
    let n: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(100_000);
    let tmp = tempfile::tempdir()?;
    let port = free_port()?;
    let pid = slapd(&tmp.path().join("slapd"), port, n)?;
    let result = (|| -> Result<()> {
        // A new server in `dir` with a connection to the slapd of `authority`; its id.
        let connect = |dir: &str, authority: &str| -> Result<(Server, String)> {
            let s = Server::start(
                &cairn(),
                &tmp.path().join(dir),
                free_port()?,
                &[("CAIRN_BOOTSTRAP_API_KEY", KEY.into())],
            )?;
            let c = api(
                &s,
                "POST",
                "/api/v2/directories",
                Some(json!({
                    "name": "bench", "url": format!("ldap://127.0.0.1:{port}"), "bindDn": ROOT_DN,
                    "bindPassword": ROOT_PW, "userBase": format!("ou=people,{BASE}"), "preset": "openldap",
                    "passwordAuthority": authority,
                })),
            )?;
            let id = c["id"].as_str().context("id")?.to_string();
            Ok((s, id))
        };
        let d1 = dump(port, n)?;
        let (s, id) = connect("cairn", "delegated")?;
        let (first, counts1, rss1) = sync(&s, &id)?;
        // The path with managers was taken: a report points at its lead, a lead listed after
        // its team too.
        for (report, lead) in [("u000051", "u000050"), ("u000451", "u000499")].into_iter().filter(|_| n >= 500) {
            let get = |name: &str| api(&s, "GET", &format!("/api/systemusers?filter=username:$eq:{name}"), None);
            let (r, l) = (get(report)?, get(lead)?);
            if r["results"][0]["manager"] != l["results"][0]["_id"] || r["results"][0]["manager"].is_null() {
                bail!("{report}'s manager is not {lead}: {r}");
            }
        }
        let d2 = dump(port, n)?;
        // DIRSYNC_RESYNCS=k repeats the re-sync (the best is reported, as for the dump).
        let rounds: usize = std::env::var("DIRSYNC_RESYNCS").ok().and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
        let (mut again, mut counts2, mut rss2, mut all) = (f64::MAX, Value::Null, 0.0f64, vec![]);
        eprintln!("re-syncing, {rounds} time(s)");
        for _ in 0..rounds {
            let (secs, counts, rss) = sync(&s, &id)?;
            all.push((secs * 100.0).round() / 100.0);
            (again, counts2, rss2) = (again.min(secs), counts, rss2.max(rss));
        }
        drop(s);
        let d3 = dump(port, n)?;
        // The default authority (none): every new ACTIVATED user gets an activation mail.
        let (s, id) = connect("cairn-mail", "none")?;
        let (mailed, counts3, rss3) = sync(&s, &id)?;
        let dumps = [d1, d2, d3];
        let dump_s = dumps.iter().cloned().fold(f64::MAX, f64::min);
        println!("users: {n}");
        println!("ldapsearch paged dump: {:.2} s (best of {:?})", dump_s, dumps.map(|d| (d * 100.0).round() / 100.0));
        println!("first import: {first:.2} s = {:.1}× the dump; counts {counts1}", first / dump_s);
        println!(
            "no-change re-sync: {again:.2} s = {:.1}× the dump (best of {all:?}); counts {counts2}",
            again / dump_s
        );
        println!("cairn peak RSS: {:.0} MiB (first) {:.0} MiB (after re-sync)", rss1, rss2);
        println!(
            "first import, default authority (activation mail): {mailed:.2} s = {:.1}× the dump; counts {counts3}; \
             peak RSS {rss3:.0} MiB",
            mailed / dump_s
        );
        Ok(())
    })();
    let _ = Command::new("kill").arg(pid.to_string()).status();
    result
}
