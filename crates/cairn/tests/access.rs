//! The access core from outside (issue 13): the probe of the earlier build, repeated against
//! the real binary through its portals — each hole it found, tried again.

mod common;

use common::{enrolled_admin, link_in, Browser, Db, Server, SmtpSink, ADMIN_PW, KEY};
use serde_json::{json, Value};

const PW: &str = "lantern orchard seventeen";

fn create(s: &Server, body: Value) -> String {
    let (st, v) = s.post("/api/systemusers", body);
    assert_eq!(st, 200, "{v}");
    v["_id"].as_str().unwrap().to_string()
}

fn user_with_password(s: &Server, name: &str) -> String {
    create(s, json!({"username": name, "email": format!("{name}@example.com"), "password": PW}))
}

fn events(s: &Server, query: &str) -> Vec<Value> {
    let (st, v) = s.get(&format!("/api/v2/events?{query}&limit=1000"));
    assert_eq!(st, 200, "{v}");
    v.as_array().cloned().unwrap_or_else(|| v["results"].as_array().cloned().unwrap_or_default())
}

#[test]
fn anonymous_sign_in_forms_store_little_and_are_throttled() {
    for db in Db::all("access_anonymous") {
        let s = Server::start(&db);
        user_with_password(&s, "ann");
        // A 1.9 MB login, as the probe sent: refused, and at most a short prefix recorded.
        let huge = "x".repeat(1_900_000);
        let mut b = Browser::new(&s.base);
        b.get("/portal/login");
        let p = b.post("/portal/login", &[("login", &huge), ("password", "nope")]);
        assert_eq!(p.status, 401);
        assert!(p.body.len() < 100_000, "the page does not echo it back whole");
        b.get("/portal/reset-request");
        let p = b.post("/portal/reset-request", &[("login", &huge)]);
        assert_eq!(p.status, 200);
        for action in ["login_failure", "password_reset_request"] {
            let evs = events(&s, &format!("action={action}"));
            assert!(!evs.is_empty(), "{action} recorded");
            for e in evs {
                assert!(e.to_string().len() < 2000, "{action} stores {} bytes", e.to_string().len());
            }
        }
        // Wrong passwords from one address: a burst of 30, then 429 before any hashing.
        let mut statuses = vec![];
        for i in 0..60 {
            b.get("/portal/login");
            let p = b.post("/portal/login", &[("login", &format!("guess{i}")), ("password", "nope")]);
            statuses.push(p.status);
            if p.status == 429 {
                assert!(p.body.contains("Too many attempts"), "{}", p.body);
            }
        }
        assert!(statuses[..28].iter().all(|s| *s == 401), "{statuses:?}");
        assert!(statuses.contains(&429), "{statuses:?}");
        // The admin portal shares the address's limit.
        let mut b2 = Browser::new(&s.base);
        b2.get("/admin/login");
        let p = b2.post("/admin/login", &[("email", "admin@example.com"), ("password", "nope")]);
        assert_eq!(p.status, 429);
    }
}

struct Mail {
    s: Server,
    smtp: SmtpSink,
}

fn with_mail() -> Option<Mail> {
    let smtp = SmtpSink::start()?;
    let s = Server::start_with(&Db::Sqlite, &[("CAIRN_BOOTSTRAP_API_KEY", KEY), ("CAIRN_SMTP_URL", &smtp.url())]);
    Some(Mail { s, smtp })
}

#[test]
fn a_password_change_ends_other_sessions_and_earlier_reset_links() {
    let Some(m) = with_mail() else { return };
    let id = user_with_password(&m.s, "lena");
    // A reset link asked for before the change.
    let mut b = Browser::new(&m.s.base);
    b.get("/portal/reset-request");
    b.post("/portal/reset-request", &[("login", "lena@example.com")]);
    // The first message is the welcome mail of the creation.
    let mail = m.smtp.wait_for("lena@example.com", 2);
    let link = link_in(mail["text"].as_str().unwrap(), "/portal/reset?token=");
    // Two browsers signed in; one changes the password.
    let mut other = Browser::new(&m.s.base);
    assert_eq!(other.login("lena", PW).0, "/portal/profile");
    assert_eq!(b.login("lena", PW).0, "/portal/profile");
    b.get("/portal/change-password");
    let p = b.post(
        "/portal/change-password",
        &[("current_password", PW), ("password", "river stone lighthouse"), ("confirm", "river stone lighthouse")],
    );
    assert_eq!(b.follow(p).0, "/portal/profile?m=password-changed", "the changing browser stays in");
    assert_eq!(other.get("/portal/profile").location.as_deref(), Some("/portal/login"), "the other session ended");
    assert_eq!(b.get(&link).status, 404, "the earlier reset link is dead");
    // An admin's new password ends the sessions too.
    assert_eq!(b.get("/portal/profile").status, 200);
    let (st, _) = m.s.put(&format!("/api/systemusers/{id}"), json!({"password": "an admin chose this one"}));
    assert_eq!(st, 200);
    assert_eq!(b.get("/portal/profile").location.as_deref(), Some("/portal/login"));
    // Reset mails to one account: a few an hour, whoever asks.
    let mut c = Browser::new(&m.s.base);
    for _ in 0..6 {
        c.get("/portal/reset-request");
        assert_eq!(c.post("/portal/reset-request", &[("login", "lena")]).status, 200);
    }
    let (_, mails) = m.s.get("/api/v2/emails?to=lena@example.com&type=password_reset");
    let n = mails["totalCount"].as_i64().unwrap_or_else(|| mails.as_array().map_or(0, |a| a.len() as i64));
    assert_eq!(n, 3, "{mails}");
}

#[test]
fn an_open_session_ends_when_the_account_locks() {
    for db in Db::all("access_lock_ends_session") {
        let s = Server::start(&db);
        let (st, _) = s.put("/api/organizations", json!({"settings": {"passwordPolicy": {"maxLoginAttempts": 3}}}));
        assert_eq!(st, 200);
        user_with_password(&s, "lou");
        let mut mine = Browser::new(&s.base);
        assert_eq!(mine.login("lou", PW).0, "/portal/profile");
        let mut guesser = Browser::new(&s.base);
        for _ in 0..3 {
            guesser.login("lou", "not the password");
        }
        assert_eq!(mine.get("/portal/profile").location.as_deref(), Some("/portal/login"));
    }
}

#[test]
fn the_admin_code_step_counts_toward_lockout_and_a_code_works_once() {
    for db in Db::all("access_admin_totp") {
        let s = Server::start(&db);
        let (st, _) = s.put("/api/organizations", json!({"settings": {"passwordPolicy": {"maxLoginAttempts": 5}}}));
        assert_eq!(st, 200);
        let secret = enrolled_admin(&s, "ops@example.com");
        let code = cairn_directory::totp_code(&secret, chrono::Utc::now());
        let mut b = Browser::new(&s.base);
        b.get("/admin/login");
        let p = b.post("/admin/login", &[("email", "ops@example.com"), ("password", ADMIN_PW)]);
        assert_eq!(p.location.as_deref(), Some("/admin/totp"));
        b.get("/admin/totp");
        assert_eq!(b.post("/admin/totp", &[("code", &code)]).location.as_deref(), Some("/admin/users"));
        // The same code again, from another sign-in: refused.
        let mut b2 = Browser::new(&s.base);
        b2.get("/admin/login");
        b2.post("/admin/login", &[("email", "ops@example.com"), ("password", ADMIN_PW)]);
        b2.get("/admin/totp");
        assert_eq!(b2.post("/admin/totp", &[("code", &code)]).status, 401, "a code works once");
        // Four more wrong codes make five failures: locked, and the open session ends.
        for _ in 0..4 {
            assert_eq!(b2.post("/admin/totp", &[("code", "000000")]).status, 401);
        }
        let right = cairn_directory::totp_code(&secret, chrono::Utc::now() + chrono::Duration::seconds(30));
        let p = b2.post("/admin/totp", &[("code", &right)]);
        assert_ne!(p.location.as_deref(), Some("/admin/users"), "locked: the right code does not open it");
        assert_eq!(b.get("/admin/users").location.as_deref(), Some("/admin/login"), "the lock ended the session");
        let mut b3 = Browser::new(&s.base);
        b3.get("/admin/login");
        let p = b3.post("/admin/login", &[("email", "ops@example.com"), ("password", ADMIN_PW)]);
        assert_eq!(p.status, 401, "locked: the right password is refused");
        let evs = events(&s, "action=login_failure");
        assert!(evs.iter().any(|e| e["detail"]["reason"] == "TOTP code already used"), "{evs:?}");
        assert!(evs.iter().any(|e| e["detail"]["reason"] == "the account is locked"));
    }
}

#[test]
fn admin_passwords_lock_out_like_users() {
    let s = Server::start(&Db::Sqlite);
    let (st, _) = s.put("/api/organizations", json!({"settings": {"passwordPolicy": {"maxLoginAttempts": 3}}}));
    assert_eq!(st, 200);
    let out =
        s.command().args(["admin", "create", "--email", "ada@example.com", "--password", ADMIN_PW]).output().unwrap();
    assert!(out.status.success());
    let mut b = Browser::new(&s.base);
    for _ in 0..3 {
        b.get("/admin/login");
        assert_eq!(b.post("/admin/login", &[("email", "ada@example.com"), ("password", "wrong")]).status, 401);
    }
    b.get("/admin/login");
    let p = b.post("/admin/login", &[("email", "ada@example.com"), ("password", ADMIN_PW)]);
    assert_eq!(p.status, 401, "locked after three failures");
    assert!(p.body.contains("incorrect"), "the same message as any refusal");
}
