//! The command line: first start, key and admin creation, migrate, and clear errors.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{bin, Db, Server};
use serde_json::json;

#[test]
fn first_start_prints_an_admin_password_and_an_api_key_once() {
    let mut s = Server::start_with(&Db::Sqlite, &[]);
    let out = s.stdout.lock().unwrap().clone();
    assert!(out.contains("admin@localhost"), "{out}");
    let key = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("API key:"))
        .map(|k| k.trim().to_string())
        .unwrap_or_else(|| panic!("no key printed:\n{out}"));
    assert!(out.lines().any(|l| l.trim().starts_with("password:")), "{out}");
    let (st, _) = s.req("GET", "/api/systemusers", Some(&key), None);
    assert_eq!(st, 200, "the printed key works");

    s.stdout.lock().unwrap().clear();
    s.restart();
    let out = s.stdout.lock().unwrap().clone();
    assert!(!out.contains("API key:") && !out.contains("password:"), "printed only once:\n{out}");
}

#[test]
fn apikey_and_admin_commands_work_from_the_shell() {
    let s = Server::start(&Db::Sqlite);
    let out = s.command().args(["apikey", "create", "--name", "ci", "--role", "read-only"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (st, _) = s.req("GET", "/api/systemusers", Some(&key), None);
    assert_eq!(st, 200);
    let (st, _) =
        s.req("POST", "/api/systemusers", Some(&key), Some(&json!({"username": "x", "email": "x@example.com"})));
    assert_eq!(st, 403);

    let out = s.command().args(["admin", "create", "--email", "Boss@Example.com"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("boss@example.com") && text.contains("password:"), "{text}");
    let out = s
        .command()
        .args(["admin", "create", "--email", "boss@example.com", "--password", "a long enough password"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "duplicate admin");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: ") && err.contains("already exists") && err.lines().count() == 1, "{err}");
    let out =
        s.command().args(["admin", "create", "--email", "x@example.com", "--password", "short"]).output().unwrap();
    assert!(!out.status.success());

    let out = s.command().args(["apikey", "create", "--name", "x", "--role", "god"]).output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success() && err.contains("--role"), "{err}");

    let out = s.command().arg("migrate").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let (_, evs) = s.get("/api/v2/events?action=admin_create");
    assert_eq!(evs[0]["source"], "cli");
}

#[test]
fn bad_configuration_is_one_line_and_a_failure_status() {
    let dir = tempfile::tempdir().unwrap();
    let run = |env: &[(&str, &str)], args: &[&str]| {
        let mut c = Command::new(bin());
        c.env_clear().current_dir(dir.path()).env("CAIRN_DATA_DIR", dir.path().join("d"));
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.args(args).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (ok, err) = run(&[("CAIRN_DATABASE_URL", "mysql://x")], &["migrate"]);
    assert!(!ok && err.starts_with("error: ") && err.contains("CAIRN_DATABASE_URL"), "{err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"));
    let (ok, err) = run(&[("CAIRN_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")], &["migrate"]);
    assert!(!ok && err.starts_with("error: cannot open the database"), "{err}");
    std::fs::write(dir.path().join("bad.toml"), "http_adr = 1").unwrap();
    let (ok, err) = run(&[], &["--config", "bad.toml", "migrate"]);
    assert!(!ok && err.contains("bad.toml") && err.contains("http_adr"), "{err}");
    let (ok, err) = run(&[("CAIRN_HTTP_ADDR", "not-an-address")], &["serve"]);
    assert!(!ok && err.contains("CAIRN_HTTP_ADDR"), "{err}");
}

#[test]
fn the_toml_file_configures_and_variables_win() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    std::fs::write(
        dir.path().join("cairn.toml"),
        format!(
            "http_addr = \"127.0.0.1:1\"\ndata_dir = \"{}\"\nbootstrap_api_key = \"{}\"\n",
            dir.path().join("d").display(),
            common::KEY
        ),
    )
    .unwrap();
    let mut child = Command::new(bin())
        .env_clear()
        .current_dir(dir.path())
        .env("CAIRN_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let client = reqwest::blocking::Client::new();
    let ok = loop {
        if let Ok(r) =
            client.get(format!("http://127.0.0.1:{port}/api/systemusers")).header("x-api-key", common::KEY).send()
        {
            break r.status() == 200;
        }
        if start.elapsed() > Duration::from_secs(20) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "the variable's address and the file's key and data dir were used");
    assert!(dir.path().join("d").join("cairn.db").exists());
}
