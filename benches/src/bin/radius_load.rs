//! Issue 16 benchmark: RADIUS Access-Requests per second and p99 with 50 outstanding
//! (authentic PAP requests of associated users, each accepted), side by side with the raw
//! Argon2id verification rate measured in the same run; then a 10× overload (500 outstanding,
//! each slot waiting 5 s for a reply as a NAS does before retransmitting) with the server's
//! RSS sampled throughout.
//!
//! cargo build --release -p cairn -p cairn-bench && cargo run --release -p cairn-bench --bin radius_load

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cairn_bench::{free_port, raw_argon2_rate, Server};
use cairn_radius::wire::{read_reply, Code, Request};
use serde_json::{json, Value};

const KEY: &str = "cairn_bench_radius_key_0123456789abcdef";
const SECRET: &str = "bench-shared-secret-0123456789";
const USERS: usize = 50;
const SECONDS: u64 = 15;

fn main() -> Result<()> {
    let target = PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()));
    let cairn = target.join("release/cairn");
    if !cairn.exists() {
        bail!("{} is missing: cargo build --release -p cairn", cairn.display());
    }
    let tmp = tempfile::tempdir()?;
    let (http, radius) = (free_port()?, free_port()?);
    let env = [
        ("CAIRN_LDAP_ADDR", "off".to_string()),
        ("CAIRN_RADIUS_ADDR", format!("127.0.0.1:{radius}")),
        ("CAIRN_BOOTSTRAP_API_KEY", KEY.to_string()),
    ];
    let server = Server::start(&cairn, &tmp.path().join("cairn"), http, &env)?;
    let c = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build()?;
    let api = |method: &str, path: &str, body: Value| -> Result<Value> {
        let r =
            c.request(method.parse()?, format!("{}{path}", server.base)).header("x-api-key", KEY).json(&body).send()?;
        let status = r.status();
        let text = r.text()?;
        if !status.is_success() {
            bail!("{method} {path}: {status} {text}");
        }
        Ok(if text.is_empty() { Value::Null } else { serde_json::from_str(&text)? })
    };
    let wifi = api(
        "POST",
        "/api/radiusservers",
        json!({"name": "bench", "networkSourceIp": "127.0.0.1", "sharedSecret": SECRET}),
    )?;
    let group = api("POST", "/api/v2/usergroups", json!({"name": "staff"}))?;
    let gid = group["id"].as_str().context("group id")?.to_string();
    for i in 0..USERS {
        let u = api(
            "POST",
            "/api/systemusers",
            json!({"username": format!("u{i:03}"), "email": format!("u{i:03}@example.com"), "password": format!("pw-u{i:03}-long-enough")}),
        )?;
        let uid = u["_id"].as_str().context("user id")?;
        api("POST", &format!("/api/v2/usergroups/{gid}/members"), json!({"op": "add", "type": "user", "id": uid}))?;
    }
    let sid = wifi["_id"].as_str().context("server id")?;
    api(
        "POST",
        &format!("/api/v2/radiusservers/{sid}/associations"),
        json!({"op": "add", "type": "user_group", "id": gid}),
    )?;
    let to: SocketAddr = format!("127.0.0.1:{radius}").parse()?;

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let (rss0, _) = server.rss_mib()?;
    println!("server RSS {rss0:.0} MiB after loading {USERS} users");
    let warm = rt.block_on(load(to, 50, Duration::from_secs(3), Duration::from_secs(30)));
    println!("warm-up: {:.1}/s", warm.answered as f64 / 3.0);
    // Each run between two raw Argon2id measurements, read against their mean, so that load
    // from elsewhere on the machine weighs on both sides alike.
    println!("\n| outstanding | Access-Requests/s | raw Argon2id/s (before, after) | ratio | p50 | p99 | rejected | unanswered |");
    println!("|---|---|---|---|---|---|---|---|");
    for _ in 0..3 {
        let before = raw_argon2_rate()?;
        let f = rt.block_on(load(to, 50, Duration::from_secs(SECONDS), Duration::from_secs(30)));
        let after = raw_argon2_rate()?;
        let raw = (before + after) / 2.0;
        let rate = f.answered as f64 / SECONDS as f64;
        println!(
            "| 50 | {rate:.1} | {raw:.1} ({before:.1}, {after:.1}) | **{:.0} %** | {:.0} ms | {:.0} ms | {} | {} |",
            100.0 * rate / raw,
            f.p(0.50),
            f.p(0.99),
            f.rejected,
            f.unanswered
        );
    }

    // 10× overload: RSS sampled every 250 ms while it runs.
    let samples = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let pid = server.child.id();
    let stop = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (samples, stop) = (samples.clone(), stop.clone());
        std::thread::spawn(move || {
            while stop.load(Ordering::Relaxed) == 0 {
                if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    if let Some(kib) =
                        s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1))
                    {
                        samples.lock().unwrap().push(kib.parse::<f64>().unwrap_or(0.0) / 1024.0);
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    let (rss_before, _) = server.rss_mib()?;
    let over = rt.block_on(load(to, 500, Duration::from_secs(SECONDS), Duration::from_secs(5)));
    stop.store(1, Ordering::Relaxed);
    sampler.join().ok();
    let (rss_after, _) = server.rss_mib()?;
    let s = samples.lock().unwrap().clone();
    let max = s.iter().cloned().fold(0.0, f64::max);
    let text = c.get(format!("{}/metrics", server.base)).send()?.text()?;
    let dropped: f64 = text
        .lines()
        .filter(|l| l.starts_with("cairn_radius_dropped_total{reason=\"overload\"}"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    println!(
        "\n10× overload (500 outstanding, {SECONDS} s): answered {:.1}/s, p99 of answered {:.0} ms, unanswered {}, \
         dropped by the server as overload {dropped}; server RSS {rss_before:.0} MiB before, at most {max:.0} MiB \
         during, {rss_after:.0} MiB after ({} samples)",
        over.answered as f64 / SECONDS as f64,
        over.p(0.99),
        over.unanswered,
        s.len()
    );
    Ok(())
}

struct Figures {
    answered: u64,
    rejected: u64,
    unanswered: u64,
    latencies_ms: Vec<f64>,
}

impl Figures {
    fn p(&self, q: f64) -> f64 {
        if self.latencies_ms.is_empty() {
            return f64::NAN;
        }
        let mut v = self.latencies_ms.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v[((v.len() as f64 - 1.0) * q).round() as usize]
    }
}

/// `outstanding` NAS slots, each with its own socket sending one request and waiting for its
/// reply (at most `wait`) before the next, for `run`.
async fn load(to: SocketAddr, outstanding: usize, run: Duration, wait: Duration) -> Figures {
    let end = Instant::now() + run;
    let tasks: Vec<_> = (0..outstanding)
        .map(|slot| {
            tokio::spawn(async move {
                let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
                let mut f = Figures { answered: 0, rejected: 0, unanswered: 0, latencies_ms: vec![] };
                let mut id = 0u8;
                let mut buf = [0u8; 4096];
                while Instant::now() < end {
                    id = id.wrapping_add(1);
                    let user = format!("u{:03}", slot % USERS);
                    let pw = format!("pw-u{:03}-long-enough", slot % USERS);
                    let req = Request {
                        id,
                        secret: SECRET.as_bytes(),
                        user: &user,
                        password: pw.as_bytes(),
                        state: None,
                        nas_identifier: Some("bench"),
                        message_authenticator: true,
                    };
                    let (bytes, _) = req.encode();
                    let t = Instant::now();
                    sock.send_to(&bytes, to).await.expect("send");
                    match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
                        Ok(Ok((n, _))) => match read_reply(&buf[..n], &bytes, SECRET.as_bytes()) {
                            Ok(r) if r.code == Code::AccessAccept => {
                                f.answered += 1;
                                f.latencies_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                            }
                            _ => f.rejected += 1,
                        },
                        _ => f.unanswered += 1,
                    }
                }
                f
            })
        })
        .collect();
    let mut all = Figures { answered: 0, rejected: 0, unanswered: 0, latencies_ms: vec![] };
    for t in tasks {
        let f = t.await.expect("slot");
        all.answered += f.answered;
        all.rejected += f.rejected;
        all.unanswered += f.unanswered;
        all.latencies_ms.extend(f.latencies_ms);
    }
    all
}
