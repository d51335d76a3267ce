//! Issue 17 benchmark: the OIDC token endpoint of the release binary — requests per second and
//! p50/p99 of `grant_type=authorization_code` (a code redeemed with PKCE: the code row locked
//! and spent, an access and a refresh token stored, an RS256 ID token signed, one event) and of
//! `grant_type=refresh_token` (a chain: each refresh spends the previous token) — side by side
//! with the signing rate of the same RS256 key in this process (the directory's `oidc_sign`
//! over the server's own database and data-dir key), the floor of any token answer.
//!
//! One client, one keep-alive connection, requests one after another, on SQLite.
//!
//! cargo build --release -p cairn && cargo run --release -p cairn-bench --bin oidc_token

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

const KEY: &str = "cairn_bench_oidc_key_0123456789abcdef";
const REDIRECT: &str = "http://127.0.0.1:9/cb";
const PW: &str = "lantern orchard seventeen";
const N: usize = 2000;
const BATCH: usize = 200;
/// A fixed PKCE pair: the challenge is BASE64URL(SHA-256(verifier)).
const VERIFIER: &str = "dBjftJeZ4CVP-mJ0kzyXMkVwiKMXCq3JSLMeCwf1gFk";
const CHALLENGE: &str = "hB6Ul2s51ze2yj-OKqhm-1HWxxZo1_mTbgs-RkvQ73g";

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn stats(name: &str, mut lat: Vec<Duration>) -> f64 {
    lat.sort();
    let total: f64 = lat.iter().map(Duration::as_secs_f64).sum();
    let rate = lat.len() as f64 / total;
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0;
    println!("{name:<34} {:>5} {:>9.0} /s   p50 {:>6.2} ms   p99 {:>6.2} ms", lat.len(), rate, p(0.5), p(0.99));
    rate
}

fn location(r: &reqwest::blocking::Response) -> Option<String> {
    r.headers().get("location").and_then(|v| v.to_str().ok()).map(String::from)
}

fn param(url: &str, k: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    q.split('&').filter_map(|kv| kv.split_once('=')).find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
}

fn main() -> Result<()> {
    let target = PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()));
    let cairn = target.join("release/cairn");
    if !cairn.exists() {
        bail!("{} is missing: cargo build --release -p cairn", cairn.display());
    }
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data)?;
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(tmp.path().join("server.log"))?;
    let child = Command::new(&cairn)
        .arg("serve")
        .current_dir(tmp.path())
        .env("CAIRN_DATA_DIR", &data)
        .env("CAIRN_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("CAIRN_BASE_URL", &base)
        .env("CAIRN_LDAP_ADDR", "off")
        .env("CAIRN_RADIUS_ADDR", "off")
        .env("CAIRN_BOOTSTRAP_API_KEY", KEY)
        .env("CAIRN_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let _server = Server(child);
    let http = reqwest::blocking::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()?;
    let start = Instant::now();
    while http.get(format!("{base}/readyz")).send().map(|r| r.status() != 200).unwrap_or(true) {
        if start.elapsed() > Duration::from_secs(30) {
            bail!("cairn did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let api = |path: &str, body: Value| -> Result<Value> {
        let r = http.post(format!("{base}/api{path}")).header("x-api-key", KEY).json(&body).send()?;
        let st = r.status();
        let v: Value = r.json().unwrap_or(Value::Null);
        if !st.is_success() {
            bail!("{path}: {st} {v}");
        }
        Ok(v)
    };
    let user = api("/systemusers", json!({"username": "ada", "email": "ada@example.com", "password": PW}))?;
    let app = api("/applications", json!({"name": "Bench", "redirectUris": [REDIRECT]}))?;
    let s = |v: &Value, k: &str| v[k].as_str().map(String::from).ok_or_else(|| anyhow!("no {k} in {v}"));
    let (app_id, client_id, secret) = (s(&app, "_id")?, s(&app, "clientId")?, s(&app, "clientSecret")?);
    api(
        &format!("/v2/applications/{app_id}/associations"),
        json!({"op": "add", "type": "user", "id": s(&user, "_id")?}),
    )?;

    // A portal session: every authorization request after it gets a code at once.
    let page = http.get(format!("{base}/portal/login")).send()?.text()?;
    let i = page.find("name=\"csrf\" value=\"").context("csrf")? + 19;
    let csrf = page[i..i + 48].to_string();
    let r = http
        .post(format!("{base}/portal/login"))
        .form(&[("login", "ada"), ("password", PW), ("csrf", csrf.as_str())])
        .send()?;
    if location(&r).as_deref() != Some("/portal/profile") {
        bail!("portal login failed: {}", r.status());
    }
    let authorize = format!(
        "{base}/portal/oidc/authorize?response_type=code&client_id={client_id}&redirect_uri={}&scope=openid%20profile%20email&state=s&nonce=n&code_challenge={CHALLENGE}&code_challenge_method=S256",
        "http%3A%2F%2F127.0.0.1%3A9%2Fcb"
    );
    let token = |form: &[(&str, &str)]| -> Result<(Duration, Value)> {
        let t = Instant::now();
        let r = http.post(format!("{base}/oidc/token")).basic_auth(&client_id, Some(&secret)).form(form).send()?;
        let st = r.status();
        let v: Value = r.json()?;
        let d = t.elapsed();
        if st != 200 {
            bail!("token: {st} {v}");
        }
        Ok((d, v))
    };

    // Warm up (keys made, caches filled), then codes in batches (a code lives 60 s).
    let mut auth_lat = vec![];
    let mut code_lat = vec![];
    let mut refresh = String::new();
    for round in 0..(N / BATCH + 1) {
        let mut codes = vec![];
        for _ in 0..BATCH {
            let t = Instant::now();
            let r = http.get(&authorize).send()?;
            let d = t.elapsed();
            let loc = location(&r).ok_or_else(|| anyhow!("authorize: {}", r.status()))?;
            codes.push(param(&loc, "code").ok_or_else(|| anyhow!("no code in {loc}"))?);
            if round > 0 {
                auth_lat.push(d);
            }
        }
        for code in codes {
            let (d, v) = token(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ])?;
            if round > 0 {
                code_lat.push(d);
            }
            refresh = s(&v, "refresh_token")?;
        }
    }
    let mut refresh_lat = vec![];
    for i in 0..(N + BATCH) {
        let (d, v) = token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)])?;
        if i >= BATCH {
            refresh_lat.push(d);
        }
        refresh = s(&v, "refresh_token")?;
    }

    // The same key, signing in this process: the directory over the server's database.
    let key_hex = std::fs::read_to_string(data.join("secret.key"))?;
    let key: Vec<u8> =
        (0..64).step_by(2).map(|i| u8::from_str_radix(&key_hex.trim()[i..i + 2], 16)).collect::<Result<_, _>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let sign_lat = rt.block_on(async {
        let store = cairn_store::Store::connect(&format!("sqlite://{}/cairn.db", data.display())).await?;
        let config = cairn_directory::Config {
            secret_key: Some(key.as_slice().try_into()?),
            base_url: base.clone(),
            ..Default::default()
        };
        let dir = cairn_directory::Directory::with_config(store, Arc::new(cairn_directory::SystemClock), config);
        let claims = json!({"iss": base, "sub": "0123456789abcdef01234567", "aud": client_id, "iat": 0, "exp": 3600,
            "auth_time": 0, "nonce": "n", "name": "Ada", "email": "ada@example.com", "at_hash": "abcdefghijklmnopqrstuv"});
        let mut lat = vec![];
        for i in 0..(N + BATCH) {
            let t = Instant::now();
            dir.oidc_sign("RS256", &claims).await?;
            if i >= BATCH {
                lat.push(t.elapsed());
            }
        }
        Ok::<_, anyhow::Error>(lat)
    })?;

    println!("\nOIDC token endpoint, one client, sequential, SQLite ({} requests each after warm-up)\n", N);
    let sign = stats("RS256 signature (same key, in process)", sign_lat);
    stats("authorize (SSO session → code)", auth_lat);
    let code = stats("token: authorization_code", code_lat);
    let refr = stats("token: refresh_token", refresh_lat);
    println!(
        "\nauthorization_code: {:.1} % of the signing rate; refresh_token: {:.1} %",
        code / sign * 100.0,
        refr / sign * 100.0
    );
    Ok(())
}
