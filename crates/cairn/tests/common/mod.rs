//! Starts the real `cairn` binary on a free port with a temporary data directory and talks to
//! it over HTTP.
#![allow(dead_code)]

pub mod chrome;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const KEY: &str = "test-bootstrap-key-0123456789abcdef";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cairn")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Which database a test server uses.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite,
    Postgres(String),
}

impl Db {
    /// SQLite, plus PostgreSQL when `CAIRN_TEST_DATABASE_URL` is set (a fresh database each).
    pub fn all(what: &str) -> Vec<Db> {
        let mut v = vec![Db::Sqlite];
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        if let Some(url) = rt.block_on(cairn_store::testing::fresh_postgres_url(what)) {
            v.push(Db::Postgres(url));
        }
        v
    }

    /// Another empty database of the same kind (a second data directory's for SQLite).
    pub fn another(&self, what: &str) -> Db {
        match self {
            Db::Sqlite => Db::Sqlite,
            Db::Postgres(_) => {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                Db::Postgres(rt.block_on(cairn_store::testing::fresh_postgres_url(what)).expect("PostgreSQL"))
            }
        }
    }
}

pub struct Server {
    pub child: Option<Child>,
    pub base: String,
    pub data_dir: PathBuf,
    pub db_url: String,
    pub port: u16,
    pub stdout: Arc<Mutex<String>>,
    pub stderr: Arc<Mutex<String>>,
    pub env: Vec<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
    http: reqwest::blocking::Client,
}

impl Server {
    pub fn start(db: &Db) -> Server {
        Server::start_with(db, &[("CAIRN_BOOTSTRAP_API_KEY", KEY)])
    }

    pub fn start_with(db: &Db, env: &[(&str, &str)]) -> Server {
        let mut s = Server::unstarted(db, env);
        s.launch();
        s
    }

    /// A data directory and database for a server, not started (e.g. to restore into first).
    pub fn unstarted(db: &Db, env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        let db_url = match db {
            Db::Sqlite => format!("sqlite://{}/cairn.db", data_dir.display()),
            Db::Postgres(u) => u.clone(),
        };
        Server {
            child: None,
            base: String::new(),
            data_dir,
            db_url,
            port: 0,
            stdout: Default::default(),
            stderr: Default::default(),
            env: env.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
            _tmp: Some(tmp),
            http: reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap(),
        }
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(bin());
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CAIRN_DATA_DIR", &self.data_dir)
            .env("CAIRN_DATABASE_URL", &self.db_url)
            .env("CAIRN_LDAP_ADDR", "off")
            .env("CAIRN_RADIUS_ADDR", "off")
            .env("CAIRN_LOG", "warn,cairn=info")
            .current_dir(self.data_dir.parent().unwrap());
        // `{base}` in a value is the server's own URL (CAIRN_BASE_URL for the OIDC issuer).
        for (k, v) in &self.env {
            c.env(k, v.replace("{base}", &self.base));
        }
        c
    }

    pub fn launch(&mut self) {
        self.port = free_port();
        self.base = format!("http://127.0.0.1:{}", self.port);
        let mut child = self
            .command()
            .arg("serve")
            .env("CAIRN_HTTP_ADDR", format!("127.0.0.1:{}", self.port))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cairn");
        for (pipe, sink) in [
            (Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>, self.stdout.clone()),
            (Box::new(child.stderr.take().unwrap()), self.stderr.clone()),
        ] {
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut s = sink.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            });
        }
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("cairn exited with {status} before it was ready:\n{}", self.stderr.lock().unwrap());
            }
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send() {
                if r.status() == 200 {
                    return;
                }
            }
            if start.elapsed() > Duration::from_secs(30) {
                panic!("cairn did not become ready:\n{}", self.stderr.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the process the hard way (kill -9), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn req(&self, method: &str, path: &str, key: Option<&str>, body: Option<&Value>) -> (u16, Value) {
        let url = format!("{}{}", self.base, path);
        let mut r = self.http.request(method.parse().unwrap(), url);
        if let Some(k) = key {
            r = r.header("x-api-key", k);
        }
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b.to_string());
        }
        let res = r.send().expect("request");
        let status = res.status().as_u16();
        let text = res.text().unwrap_or_default();
        let v = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, v)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.req("GET", path, Some(KEY), None)
    }
    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.req("POST", path, Some(KEY), Some(&body))
    }
    pub fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.req("PUT", path, Some(KEY), Some(&body))
    }
    pub fn delete(&self, path: &str) -> (u16, Value) {
        self.req("DELETE", path, Some(KEY), None)
    }

    /// Sends as curl does: the body goes out from another thread while the answer is read, so
    /// a server that refuses before reading the whole body (413 on the length, 400 mid-stream)
    /// is heard even when the rest of the body then meets a closed socket (a broken pipe with
    /// reqwest). Answers the status, the headers (names lowercased) and the body.
    pub fn send_unread(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let c = std::net::TcpStream::connect(format!("127.0.0.1:{}", self.port)).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(120))).unwrap();
        let mut w = c.try_clone().unwrap();
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        let writer = std::thread::spawn(move || {
            // A write error is the server having answered and closed: the answer decides.
            let _ = w.write_all(head.as_bytes()).and_then(|_| w.write_all(&body));
        });
        let mut r = BufReader::new(c);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let status = line.split_whitespace().nth(1).unwrap_or_else(|| panic!("no status line: {line:?}"));
        let status: u16 = status.parse().unwrap();
        let mut got = Vec::new();
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            let Some((k, v)) = line.trim_end().split_once(':') else { break };
            got.push((k.to_ascii_lowercase(), v.trim().to_string()));
        }
        let len = got.iter().find(|(k, _)| k == "content-length").map(|(_, v)| v.parse::<usize>().unwrap());
        let mut text = Vec::new();
        match len {
            Some(n) => {
                text.resize(n, 0);
                r.read_exact(&mut text).unwrap();
            }
            // `connection: close` was asked for: the body runs to the end of the stream.
            None => drop(r.read_to_end(&mut text)),
        }
        drop(r);
        let _ = writer.join();
        (status, got, text)
    }

    pub fn raw(&self) -> &reqwest::blocking::Client {
        &self.http
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `results[*].username` of a list answer.
pub fn usernames(v: &Value) -> Vec<String> {
    v["results"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap().to_string()).collect()
}

/// A real SMTP server (aiosmtpd, run by Python) that records what it receives.
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    file: PathBuf,
    _tmp: tempfile::TempDir,
}

impl SmtpSink {
    pub fn start() -> Option<SmtpSink> {
        let ok = Command::new("python3").args(["-c", "import aiosmtpd"]).status().map(|s| s.success()).unwrap_or(false);
        if !ok {
            cairn_store::testing::skip(
                "SMTP end-to-end tests",
                "python3 with aiosmtpd is not installed (pip install aiosmtpd)",
            );
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("mail.jsonl");
        let port = free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/smtp_sink.py");
        let mut child = Command::new("python3")
            .args([script, &port.to_string(), file.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the SMTP sink");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "SMTP sink did not start");
        Some(SmtpSink { child, port, file, _tmp: tmp })
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}?tls=none", self.port)
    }

    /// Every message received so far.
    pub fn messages(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.file)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits for a message to `to` (the n-th one to that address, counting from 1).
    pub fn wait_for(&self, to: &str, n: usize) -> Value {
        let start = Instant::now();
        loop {
            let mine: Vec<Value> = self
                .messages()
                .into_iter()
                .filter(|m| m["rcpt_to"].as_array().unwrap().iter().any(|r| r == to))
                .collect();
            if mine.len() >= n {
                return mine[n - 1].clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no message #{n} to {to}; received: {:?}",
                self.messages()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first `http…` link in a text that contains `needle`.
pub fn link_in(text: &str, needle: &str) -> String {
    text.split_whitespace()
        .find(|w| w.starts_with("http") && w.contains(needle))
        .unwrap_or_else(|| panic!("no link with {needle} in:\n{text}"))
        .to_string()
}

/// A browser-like HTTP client: keeps cookies, does not follow redirects, and fills in the
/// CSRF field from the last page it saw.
pub struct Browser {
    http: reqwest::blocking::Client,
    base: String,
    csrf: String,
}

pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Browser {
    pub fn new(base: &str) -> Browser {
        let http = reqwest::blocking::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Browser { http, base: base.to_string(), csrf: String::new() }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{}", self.base, path)
        }
    }

    fn page(&mut self, r: reqwest::blocking::Response) -> Page {
        let status = r.status().as_u16();
        let location = r.headers().get("location").map(|v| v.to_str().unwrap().to_string());
        let headers = r.headers().clone();
        let body = r.text().unwrap_or_default();
        if let Some(i) = body.find("name=\"csrf\" value=\"") {
            let rest = &body[i + 19..];
            self.csrf = rest[..rest.find('"').unwrap()].to_string();
        }
        Page { status, location, body, headers }
    }

    pub fn get(&mut self, path: &str) -> Page {
        let r = self.http.get(self.url(path)).send().unwrap();
        self.page(r)
    }

    /// Posts a form with the current CSRF token.
    pub fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut form: Vec<(String, String)> = fields.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        form.push(("csrf".into(), self.csrf.clone()));
        let r = self.http.post(self.url(path)).form(&form).send().unwrap();
        self.page(r)
    }

    /// Posts a body as it is (a multipart form, say).
    pub fn post_body(&mut self, path: &str, content_type: &str, body: Vec<u8>) -> Page {
        let r = self.http.post(self.url(path)).header("content-type", content_type).body(body).send().unwrap();
        self.page(r)
    }

    /// Follows redirects from a page until one answers with content.
    pub fn follow(&mut self, mut p: Page) -> (String, Page) {
        let mut at = String::new();
        while let Some(loc) = p.location.clone() {
            at = loc.clone();
            p = self.get(&loc);
        }
        (at, p)
    }

    /// Signs in; returns where the login led.
    pub fn login(&mut self, login: &str, password: &str) -> (String, Page) {
        self.get("/portal/login");
        let p = self.post("/portal/login", &[("login", login), ("password", password)]);
        self.follow(p)
    }
}

/// The password of administrators the tests create.
pub const ADMIN_PW: &str = "correct horse battery staple";

/// An administrator (password `ADMIN_PW`) with an authenticator enrolled through the admin
/// portal; answers its TOTP secret.
pub fn enrolled_admin(s: &Server, email: &str) -> Vec<u8> {
    let out = s.command().args(["admin", "create", "--email", email, "--password", ADMIN_PW]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut b = Browser::new(&s.base);
    b.get("/admin/login");
    let p = b.post("/admin/login", &[("email", email), ("password", ADMIN_PW)]);
    assert_eq!(b.follow(p).0, "/admin/users");
    b.get("/admin/account");
    let p = b.post("/admin/account/totp", &[]);
    let (_, page) = b.follow(p);
    let marker = "<code class=\"secret\">";
    let start = page.body.find(marker).unwrap() + marker.len();
    let b32 = &page.body[start..start + page.body[start..].find('<').unwrap()];
    let secret = totp_rs::Secret::Encoded(b32.to_string()).to_bytes().unwrap();
    let earlier = cairn_directory::totp_code(&secret, chrono::Utc::now() - chrono::Duration::seconds(30));
    let p = b.post("/admin/account/totp/confirm", &[("code", &earlier)]);
    assert_eq!(b.follow(p).0, "/admin/account?m=totp");
    secret
}
