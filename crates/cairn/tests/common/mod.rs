//! Starts the real `cairn` binary on a free port with a temporary data directory and talks to
//! it over HTTP.
#![allow(dead_code)]

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
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        let db_url = match db {
            Db::Sqlite => format!("sqlite://{}/cairn.db", data_dir.display()),
            Db::Postgres(u) => u.clone(),
        };
        let mut s = Server {
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
        };
        s.launch();
        s
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
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    fn launch(&mut self) {
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
