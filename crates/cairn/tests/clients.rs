//! End-to-end: what a JumpCloud client that manages users and groups by name sees (issue 14),
//! on SQLite and (with CAIRN_TEST_DATABASE_URL) PostgreSQL: case-kept usernames, lookups by
//! name, the password and MFA endpoints, associations, import results.

mod common;

use std::time::{Duration, Instant};

use common::{usernames, Browser, Db, Server, KEY};
use serde_json::{json, Value};

const PW: &str = "correct horse battery staple";

fn create(s: &Server, body: Value) -> Value {
    let (st, v) = s.post("/api/systemusers", body);
    assert_eq!(st, 200, "{v}");
    v
}

fn upload(s: &Server, query: &str, csv: &str) -> (u16, Value) {
    let r = s
        .raw()
        .post(format!("{}/api/v2/users/import{query}", s.base))
        .header("x-api-key", KEY)
        .header("content-type", "text/csv")
        .body(csv.to_string())
        .send()
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().unwrap_or(Value::Null))
}

/// Runs an import to its end; the job's status answer.
fn import(s: &Server, query: &str, csv: &str) -> Value {
    let (st, v) = upload(s, query, csv);
    assert_eq!(st, 202, "{v}");
    let id = v["jobId"].as_str().unwrap().to_string();
    let start = Instant::now();
    loop {
        let (_, v) = s.get(&format!("/api/v2/users/import/{id}"));
        if v["status"] == "done" || v["status"] == "failed" {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "job did not finish: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mixed_case_round_trip(db: &Db) {
    let s = Server::start(db);
    let dave = create(&s, json!({"username": "Salt-Dave", "email": "dave@example.com", "password": PW}));
    assert_eq!(dave["username"], "Salt-Dave", "stored exactly as given");
    let id = dave["_id"].as_str().unwrap().to_string();
    let (_, v) = s.get(&format!("/api/systemusers/{id}"));
    assert_eq!(v["username"], "Salt-Dave");
    // Unique whatever the case.
    let (st, v) = s.post("/api/systemusers", json!({"username": "salt-dave", "email": "other@example.com"}));
    assert_eq!(st, 409, "{v}");
    assert!(v["message"].as_str().unwrap().contains("username 'salt-dave'"), "{v}");
    // Equality filters and searches match case-insensitively and answer the name as stored.
    for f in ["username:$eq:salt-dave", "username:$eq:SALT-DAVE", "username:Salt-Dave"] {
        let (st, v) = s.get(&format!("/api/systemusers?filter={f}"));
        assert_eq!((st, usernames(&v)), (200, vec!["Salt-Dave".to_string()]), "{f}");
    }
    let (_, v) = s.get("/api/systemusers?search=salt");
    assert_eq!(usernames(&v), ["Salt-Dave"]);
    let (_, v) = s.post("/api/search/systemusers", json!({"filter": [{"username": "SALT-dave"}]}));
    assert_eq!(usernames(&v), ["Salt-Dave"]);
    // Sign-in matches case-insensitively.
    let mut b = Browser::new(&s.base);
    let (at, _) = b.login("salt-DAVE", PW);
    assert_eq!(at, "/portal/profile");
    // A rename that changes only the case is the same user; a new name starts with a letter.
    let (st, v) = s.put(&format!("/api/systemusers/{id}"), json!({"username": "SALT-Dave"}));
    assert_eq!((st, v["username"].as_str()), (200, Some("SALT-Dave")), "{v}");
    let (st, v) = s.post("/api/systemusers", json!({"username": "9lives", "email": "cat@example.com"}));
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["errors"][0]["field"], "username");
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("start with a letter"), "{v}");
    // A CSV import keeps the case it is given and finds the user again on a re-run.
    let csv = "Username,Email\nMary-Ann,mary@example.com\n";
    let job = import(&s, "", csv);
    assert_eq!(job["counts"]["created"], 1, "{job}");
    let (_, v) = s.get("/api/systemusers?filter=username:$eq:mary-ann");
    assert_eq!(usernames(&v), ["Mary-Ann"]);
    let job = import(&s, "", "Username,Email\nMARY-ANN,mary@example.com\n");
    assert_eq!(job["counts"]["exists"], 1, "the same user whatever the case: {job}");
}

#[test]
fn usernames_keep_their_case_and_match_case_insensitively() {
    for db in Db::all("mixed-case usernames on PostgreSQL") {
        mixed_case_round_trip(&db);
    }
}
