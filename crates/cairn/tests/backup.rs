//! `cairn backup` while serving and `cairn restore` into an empty place, on both databases:
//! users, groups, schedules, events, API keys and sealed TOTP secrets come back working, and
//! nothing is ever overwritten.

mod common;

use common::{enrolled_admin, Browser, Db, Server, ADMIN_PW, KEY};
use serde_json::{json, Value};

const PW: &str = "correct horse battery staple";

fn run(s: &Server, args: &[&str]) -> (bool, String) {
    let out = s.command().args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// What must come back: users with their states, the group and its member, the pending
/// schedule, and the event count.
fn picture(s: &Server, ada: &str, bob: &str) -> Value {
    let (_, users) = s.get("/api/systemusers?sort=username&fields=username%20state%20email");
    let (_, groups) = s.get("/api/v2/usergroups");
    let gid = groups[0]["id"].as_str().unwrap().to_string();
    let (_, members) = s.get(&format!("/api/v2/usergroups/{gid}/members"));
    let (_, schedules) = s.get(&format!("/api/v2/bulk/userstates?userid={bob}"));
    let (_, ada_user) = s.get(&format!("/api/systemusers/{ada}"));
    let (_, events) = s.get("/api/v2/events?limit=1000");
    json!({
        "users": users["results"].as_array().unwrap().iter().map(|u| json!([u["username"], u["state"], u["email"]])).collect::<Vec<_>>(),
        "group": groups[0]["name"],
        "members": members.as_array().unwrap().iter().map(|m| m["to"]["id"].clone()).collect::<Vec<_>>(),
        "schedules": schedules.as_array().unwrap().iter().map(|j| json!([j["state"], j["scheduledDate"]])).collect::<Vec<_>>(),
        "ada": [ada_user["_id"], ada_user["department"]],
        "events": events.as_array().unwrap().iter().map(|e| e["action"].clone()).collect::<Vec<_>>(),
    })
}

fn admin_signs_in_with_code(s: &Server, email: &str, secret: &[u8]) {
    let code = cairn_directory::totp_code(secret, chrono::Utc::now());
    let mut b = Browser::new(&s.base);
    b.get("/admin/login");
    let p = b.post("/admin/login", &[("email", email), ("password", ADMIN_PW)]);
    assert_eq!(p.location.as_deref(), Some("/admin/totp"));
    b.get("/admin/totp");
    assert_eq!(b.post("/admin/totp", &[("code", &code)]).location.as_deref(), Some("/admin/users"));
}

#[test]
fn a_backup_taken_while_serving_restores_into_an_empty_place_with_everything_working() {
    for db in Db::all("backup_round_trip") {
        let s = Server::start(&db);
        let (st, ada) = s.post(
            "/api/systemusers",
            json!({"username": "ada", "email": "ada@example.com", "password": PW, "state": "ACTIVATED", "department": "Eng"}),
        );
        assert_eq!(st, 200, "{ada}");
        let ada = ada["_id"].as_str().unwrap().to_string();
        let (_, bob) =
            s.post("/api/systemusers", json!({"username": "bob", "email": "bob@example.com", "state": "STAGED"}));
        let bob = bob["_id"].as_str().unwrap().to_string();
        let at = (chrono::Utc::now() + chrono::Duration::days(3)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let (st, v) =
            s.post("/api/v2/bulk/userstates", json!({"user_ids": [bob], "state": "ACTIVATED", "start_date": at}));
        assert_eq!(st, 201, "{v}");
        let (_, g) = s.post("/api/v2/usergroups", json!({"name": "engineering"}));
        let gid = g["id"].as_str().unwrap().to_string();
        let (st, v) =
            s.post(&format!("/api/v2/usergroups/{gid}/members"), json!({"op": "add", "type": "user", "id": ada}));
        assert_eq!(st, 204, "{v}");
        let secret = enrolled_admin(&s, "ops@example.com");
        let before = picture(&s, &ada, &bob);
        assert_eq!(before["members"], json!([ada]));
        assert_eq!(before["schedules"].as_array().unwrap().len(), 1);

        // Taken while the server serves; the server goes on.
        let file = s.data_dir.parent().unwrap().join("backup.cairn");
        let f = file.to_str().unwrap();
        let (ok, text) = run(&s, &["backup", f]);
        assert!(ok, "{text}");
        assert!(text.contains("it holds secret.key"), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(s.get("/api/systemusers?limit=1").0, 200, "the server kept serving");
        // Never overwritten without being asked.
        let (ok, text) = run(&s, &["backup", f]);
        assert!(!ok && text.contains("already exists") && text.contains("--force"), "{text}");

        // Into an empty place.
        let mut r = Server::unstarted(&db.another("backup_target"), &[("CAIRN_BOOTSTRAP_API_KEY", KEY)]);
        let (ok, text) = run(&r, &["restore", f]);
        assert!(ok, "{text}");
        assert!(text.contains("2 users (1 active, 1 staged, 0 suspended)"), "{text}");
        // A second restore into the now full place is refused, naming what is there.
        let (ok, text) = run(&r, &["restore", f]);
        assert!(!ok && text.contains("secret.key exists"), "{text}");
        r.launch();
        assert_eq!(picture(&r, &ada, &bob), before, "users, group, member, schedule and events came back");
        // The API key (stored hashed), the user's password and the admin's sealed TOTP secret work.
        let (_, u) = r.get(&format!("/api/systemusers/{ada}"));
        assert_eq!(u["username"], "ada");
        let (at, _) = Browser::new(&r.base).login("ada", PW);
        assert_eq!(at, "/portal/profile");
        admin_signs_in_with_code(&r, "ops@example.com", &secret);
    }
}

#[test]
fn a_backup_without_the_key_needs_it_back_and_bad_archives_are_refused() {
    for db in Db::all("backup_without_key") {
        let s = Server::start(&db);
        let secret = enrolled_admin(&s, "ops@example.com");
        let dir = s.data_dir.parent().unwrap();
        let file = dir.join("nokey.cairn");
        let f = file.to_str().unwrap();
        let (ok, text) = run(&s, &["backup", "--without-key", f]);
        assert!(ok && text.contains("does not hold secret.key"), "{text}");

        let mut r = Server::unstarted(&db.another("backup_nokey_target"), &[("CAIRN_BOOTSTRAP_API_KEY", KEY)]);
        let (ok, text) = run(&r, &["restore", f]);
        assert!(!ok && text.contains("--without-key") && text.contains("--key"), "{text}");
        // Another directory's key does not open the secrets: said at once, not at sign-in.
        let wrong = dir.join("wrong.key");
        std::fs::write(&wrong, "ab".repeat(32)).unwrap();
        let w = Server::unstarted(&db.another("backup_wrong_key"), &[]);
        let (ok, text) = run(&w, &["restore", "--key", wrong.to_str().unwrap(), f]);
        assert!(!ok && text.contains("does not open the secrets"), "{text}");

        let key = s.data_dir.join("secret.key");
        let (ok, text) = run(&r, &["restore", "--key", key.to_str().unwrap(), f]);
        assert!(ok, "{text}");
        r.launch();
        admin_signs_in_with_code(&r, "ops@example.com", &secret);

        // Not a backup, damaged, or of the other kind of database: refused, nothing written.
        let junk = dir.join("junk.cairn");
        std::fs::write(&junk, b"not an archive at all").unwrap();
        let e = Server::unstarted(&db.another("backup_junk"), &[]);
        let (ok, text) = run(&e, &["restore", junk.to_str().unwrap()]);
        assert!(!ok && text.contains("is not a Cairn backup"), "{text}");
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&junk, &bytes[..bytes.len() / 2]).unwrap();
        let (ok, text) = run(&e, &["restore", junk.to_str().unwrap()]);
        assert!(!ok, "a cut archive is refused: {text}");
        assert!(!e.data_dir.join("secret.key").exists(), "nothing of a failed restore stays");
        let other = match db {
            Db::Sqlite => None,
            Db::Postgres(_) => Some(Server::unstarted(&Db::Sqlite, &[])),
        };
        if let Some(o) = other {
            let (ok, text) = run(&o, &["restore", "--key", key.to_str().unwrap(), f]);
            assert!(!ok && text.contains("restore into the same kind of database"), "{text}");
        }
    }
}
