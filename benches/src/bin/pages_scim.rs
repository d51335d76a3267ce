//! Issues 6 and 7 benchmark, at 100,000 users on SQLite: the admin portal's Users page (100
//! rows, one filter, sorted), `GET /scim/v2/Users?filter=userName eq "…"` and
//! `GET /scim/v2/Groups`: p50 and p99 of the whole request as the client sees it (server time
//! plus loopback), sequential requests to the release `cairn serve`. Reference, side by side:
//! `GET /healthz` on the same server (no database, no rendering), so noise and HTTP overhead
//! show.
//!
//! cargo build --release -p cairn && cargo run --release -p cairn-bench --bin pages_scim

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use cairn_directory::{Directory, SystemClock};
use cairn_domain::{State, User};
use cairn_store::Store;
use serde_json::{json, Value};

const USERS: usize = 100_000;
const REQUESTS: usize = 1000;
const KEY: &str = "cairn-bench-0123456789abcdef0123";

fn bin() -> std::path::PathBuf {
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{}/../target", env!("CARGO_MANIFEST_DIR")));
    std::path::PathBuf::from(dir).join("release/cairn")
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 * p).ceil() as usize).saturating_sub(1).min(v.len() - 1)]
}

async fn time_get(client: &reqwest::Client, urls: &[String], headers: &[(&str, String)]) -> Result<(f64, f64)> {
    for u in urls.iter().take(50) {
        let mut r = client.get(u);
        for (k, v) in headers {
            r = r.header(*k, v);
        }
        r.send().await?.bytes().await?;
    }
    let mut ms = Vec::with_capacity(urls.len());
    for u in urls {
        let mut r = client.get(u);
        for (k, v) in headers {
            r = r.header(*k, v);
        }
        let t = Instant::now();
        let res = r.send().await?;
        anyhow::ensure!(res.status().is_success(), "{u}: {}", res.status());
        res.bytes().await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((percentile(&mut ms.clone(), 0.50), percentile(&mut ms, 0.99)))
}

#[tokio::main]
async fn main() -> Result<()> {
    anyhow::ensure!(bin().exists(), "build the server first: cargo build --release -p cairn");
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data)?;
    let url = format!("sqlite://{}/cairn.db", data.display());
    {
        let store = Store::connect(&url).await?;
        let d = Directory::new(store.clone(), Arc::new(SystemClock));
        d.migrate().await?;
        let now = d.now();
        for chunk in (0..USERS).collect::<Vec<_>>().chunks(2000) {
            let users: Vec<User> = chunk
                .iter()
                .map(|&i| {
                    let mut profile = serde_json::Map::new();
                    profile.insert("firstname".into(), json!(format!("First{i}")));
                    profile.insert("lastname".into(), json!(format!("Last{:05}", (i * 7919) % USERS)));
                    profile.insert("department".into(), json!(format!("Dept {:02}", i % 50)));
                    let state = if i % 10 == 0 { State::Staged } else { State::Activated };
                    User {
                        creation_source: "bench".into(),
                        profile,
                        ..User::new(d.new_id(), format!("user{i:06}"), format!("user{i:06}@example.com"), state, now)
                    }
                })
                .collect();
            let mut tx = store.begin().await?;
            tx.db().insert_users(&users).await?;
            tx.commit().await?;
        }
        d.close().await;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let base = format!("http://127.0.0.1:{port}");
    let env = |c: &mut Command| {
        c.env("CAIRN_DATA_DIR", &data)
            .env("CAIRN_DATABASE_URL", &url)
            .env("CAIRN_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("CAIRN_BOOTSTRAP_API_KEY", KEY)
            .env("CAIRN_LDAP_ADDR", "off")
            .env("CAIRN_RADIUS_ADDR", "off")
            .env("CAIRN_LOG", "warn");
    };
    let mut admin = Command::new(bin());
    env(&mut admin);
    let out = admin
        .args(["admin", "create", "--email", "bench@example.com", "--password", "bench admin passphrase"])
        .output()?;
    anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut serve = Command::new(bin());
    env(&mut serve);
    let mut child = serve.arg("serve").stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let client = reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build()?;
    let start = Instant::now();
    while client.get(format!("{base}/readyz")).send().await.map(|r| r.status() != 200).unwrap_or(true) {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(60), "server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let result = async {
        // Admin portal login (form with the CSRF token of the login page).
        cairn_bench::admin_login(&client, &base, "bench@example.com", "bench admin passphrase").await?;
        let pages: Vec<String> = (0..REQUESTS)
            .map(|i| format!("{base}/admin/users?department=Dept+{:02}&sort=lastname&per=100&page=1", i % 50))
            .collect();
        let body = client.get(&pages[0]).send().await?.text().await?;
        anyhow::ensure!(body.matches("type=\"checkbox\"").count() >= 100, "the Users page should list 100 rows");
        let users_page = time_get(&client, &pages, &[]).await?;

        let tok: Value = client
            .post(format!("{base}/api/v2/scim/tokens"))
            .header("x-api-key", KEY)
            .json(&json!({"name": "bench"}))
            .send()
            .await?
            .json()
            .await?;
        let token =
            tok["token"].as_str().or(tok["key"].as_str()).ok_or_else(|| anyhow!("no SCIM token in {tok}"))?.to_string();
        for g in 0..20 {
            client
                .post(format!("{base}/api/v2/usergroups"))
                .header("x-api-key", KEY)
                .json(&json!({"name": format!("group{g:02}")}))
                .send()
                .await?;
        }
        let auth = vec![("authorization", format!("Bearer {token}"))];
        let lookups: Vec<String> = (0..REQUESTS)
            .map(|i| format!("{base}/scim/v2/Users?filter=userName%20eq%20%22user{:06}%22", (i * 97) % USERS))
            .collect();
        let probe: Value = client.get(&lookups[1]).header("authorization", &auth[0].1).send().await?.json().await?;
        anyhow::ensure!(probe["totalResults"] == 1, "SCIM lookup should find one user: {probe}");
        let scim_users = time_get(&client, &lookups, &auth).await?;
        let groups: Vec<String> = (0..REQUESTS).map(|_| format!("{base}/scim/v2/Groups")).collect();
        let scim_groups = time_get(&client, &groups, &auth).await?;
        let health: Vec<String> = (0..REQUESTS).map(|_| format!("{base}/healthz")).collect();
        let reference = time_get(&client, &health, &[]).await?;
        println!("{USERS} users, SQLite, {REQUESTS} sequential requests each (p50 / p99 ms):");
        println!(
            "  /admin/users (100 rows, one filter, sorted)   {:>7.2} / {:>7.2}   goal p99 <= 50",
            users_page.0, users_page.1
        );
        println!(
            "  /scim/v2/Users?filter=userName eq \"…\"         {:>7.2} / {:>7.2}   goal p99 <= 10",
            scim_users.0, scim_users.1
        );
        println!(
            "  /scim/v2/Groups                               {:>7.2} / {:>7.2}   goal p99 <= 10",
            scim_groups.0, scim_groups.1
        );
        println!("  /healthz (reference)                          {:>7.2} / {:>7.2}", reference.0, reference.1);
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}
