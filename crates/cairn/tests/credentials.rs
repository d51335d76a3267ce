//! End-to-end credentials and mail: a real SMTP server receives the mail; the links in it are
//! followed like a person would; time is moved through the test clock.

mod common;

use common::{link_in, Browser, Db, Server, SmtpSink, KEY};
use serde_json::{json, Value};

struct Env {
    s: Server,
    smtp: SmtpSink,
    clock: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

fn env() -> Option<Env> {
    let smtp = SmtpSink::start()?;
    let tmp = tempfile::tempdir().unwrap();
    let clock = tmp.path().join("clock");
    let s = Server::start_with(
        &Db::Sqlite,
        &[
            ("CAIRN_BOOTSTRAP_API_KEY", KEY),
            ("CAIRN_SMTP_URL", &smtp.url()),
            ("CAIRN_TEST_CLOCK_FILE", clock.to_str().unwrap()),
        ],
    );
    Some(Env { s, smtp, clock, _tmp: tmp })
}

fn create(s: &Server, body: Value) -> Value {
    let (st, v) = s.post("/api/systemusers", body);
    assert_eq!(st, 200, "{v}");
    v
}

const PW: &str = "lantern orchard seventeen";

/// Activates a new user through the mailed link; returns its id.
fn activated_user(e: &Env, name: &str) -> String {
    let u = create(&e.s, json!({"username": name, "email": format!("{name}@example.com")}));
    let mail = e.smtp.wait_for(&format!("{name}@example.com"), 1);
    let mut b = Browser::new(&e.s.base);
    b.get(&link_in(mail["text"].as_str().unwrap(), "/portal/activate"));
    let p = b.post("/portal/activate", &[("password", PW), ("confirm", PW), ("token", &token_of(&mail))]);
    assert_eq!(p.location.as_deref(), Some("/portal/login?m=password-set"), "{}", p.body);
    u["_id"].as_str().unwrap().to_string()
}

fn token_of(mail: &Value) -> String {
    let link = link_in(mail["text"].as_str().unwrap(), "token=");
    link.split("token=").nth(1).unwrap().to_string()
}

#[test]
fn an_activation_mail_leads_to_a_password_and_a_login() {
    let Some(e) = env() else { return };
    let u = create(&e.s, json!({"username": "ada", "email": "ada@example.com", "firstname": "Ada"}));
    let mail = e.smtp.wait_for("ada@example.com", 1);
    assert!(mail["subject"].as_str().unwrap().contains("Activate"), "{mail}");
    assert!(mail["from"].as_str().unwrap().contains("noreply@localhost"));
    let text = mail["text"].as_str().unwrap();
    assert!(text.contains("Hello Ada") && text.contains("Cairn"), "names the user and the organization: {text}");
    assert!(mail["html"].as_str().unwrap().contains("<a href="), "plain text plus HTML");
    let link = link_in(text, "/portal/activate?token=");
    assert!(link.starts_with(&e.s.base), "links point at CAIRN_BASE_URL: {link}");

    let mut b = Browser::new(&e.s.base);
    let p = b.get(&link);
    assert_eq!(p.status, 200);
    assert!(p.body.contains("Activate your account"));
    let token = token_of(&mail);
    // A link's token leads with an id in clear: that id alone, or with another secret after
    // it, or the token with one character changed, opens nothing (and the real one still does).
    let mut changed = token.clone().into_bytes();
    *changed.last_mut().unwrap() ^= 1;
    let forged = [
        token[..24].to_string(),
        format!("{}{}", &token[..24], "A".repeat(token.len() - 24)),
        String::from_utf8(changed).unwrap(),
    ];
    for f in &forged {
        let p = b.get(&format!("/portal/activate?token={f}"));
        assert_eq!(p.status, 404, "a forged token {f}: {}", p.body);
        let p = b.post("/portal/activate", &[("password", PW), ("confirm", PW), ("token", f)]);
        assert_ne!(p.location.as_deref(), Some("/portal/login?m=password-set"), "a forged token sets no password");
    }
    assert_eq!(b.get(&link).status, 200);
    let p = b.post("/portal/activate", &[("password", "1qaz2wsx3edc"), ("confirm", "1qaz2wsx3edc"), ("token", &token)]);
    assert_eq!(p.status, 400, "a common password is refused");
    assert!(p.body.contains("commonly used"), "{}", p.body);
    let p = b.post("/portal/activate", &[("password", PW), ("confirm", "different words here"), ("token", &token)]);
    assert!(p.body.contains("not the same"));
    let p = b.post("/portal/activate", &[("password", PW), ("confirm", PW), ("token", &token)]);
    assert_eq!(p.location.as_deref(), Some("/portal/login?m=password-set"));
    let p = b.get(&link);
    assert_eq!(p.status, 404, "the link is used up");

    let (at, p) = b.login("ADA@example.com", PW);
    assert_eq!(at, "/portal/profile");
    assert!(p.body.contains("ada@example.com"), "{}", p.body);
    let (_, v) = e.s.get(&format!("/api/systemusers/{}", u["_id"].as_str().unwrap()));
    assert_eq!(v["activated"], true);
    assert!(v["password_date"].is_string());
    let (_, evs) = e.s.get("/api/v2/events?action=login_success");
    assert_eq!(evs[0]["source"], "portal");
    assert_eq!(evs[0]["client_addr"], "127.0.0.1");
    let (_, emails) = e.s.get("/api/v2/emails?to=ada@example.com");
    assert_eq!(emails[0]["status"], "sent");
    assert!(emails[0]["text"].as_str().unwrap().contains("token=[redacted]"), "the stored copy keeps no usable token");
}

#[test]
fn which_message_goes_to_whom() {
    let Some(e) = env() else { return };
    create(&e.s, json!({"username": "alt", "email": "alt@example.com", "alternateEmail": "home@example.net"}));
    assert!(
        e.smtp.wait_for("home@example.net", 1)["subject"].as_str().unwrap().contains("Activate"),
        "activation goes to alternateEmail"
    );
    create(&e.s, json!({"username": "pw", "email": "pw@example.com", "password": PW}));
    assert!(
        e.smtp.wait_for("pw@example.com", 1)["subject"].as_str().unwrap().contains("Welcome"),
        "a user with a password is welcomed"
    );
    let st = create(&e.s, json!({"username": "st", "email": "st@example.com", "state": "STAGED"}));
    let quiet = create(&e.s, json!({"username": "quiet", "email": "quiet@example.com", "state": "STAGED"}));
    let (_, v) = e
        .s
        .post(&format!("/api/systemusers/{}/state/activate", quiet["_id"].as_str().unwrap()), json!({"email": false}));
    assert_eq!(v["outcome"], "done");
    let (_, v) = e.s.post(
        &format!("/api/systemusers/{}/state/activate", st["_id"].as_str().unwrap()),
        json!({"email": "elsewhere@example.org"}),
    );
    assert_eq!(v["outcome"], "done");
    assert!(
        e.smtp.wait_for("elsewhere@example.org", 1)["subject"].as_str().unwrap().contains("Activate"),
        "the override address wins"
    );
    let (st_code, _) =
        e.s.post("/api/systemusers?suppressEmail=true", json!({"username": "sup", "email": "sup@example.com"}));
    assert_eq!(st_code, 200);

    // Staged users receive nothing, even when asked.
    let staged = create(&e.s, json!({"username": "staged", "email": "staged@example.com", "state": "STAGED"}));
    let (_, r) =
        e.s.post("/api/v2/users/actions", json!({"action": "send_activation_email", "user_ids": [staged["_id"]]}));
    assert_eq!(r["results"][0]["outcome"], "skipped");
    assert!(r["results"][0]["message"].as_str().unwrap().contains("STAGED"));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let to: Vec<String> = e.smtp.messages().iter().map(|m| m["rcpt_to"][0].as_str().unwrap().to_string()).collect();
    for silent in ["st@example.com", "quiet@example.com", "sup@example.com", "staged@example.com"] {
        assert!(!to.contains(&silent.to_string()), "{silent} got mail: {to:?}");
    }
    let (_, reset) =
        e.s.post("/api/v2/users/actions", json!({"action": "send_password_reset_email", "user_ids": [quiet["_id"]]}));
    assert_eq!(reset["results"][0]["outcome"], "skipped", "no password yet: {reset}");
}

#[test]
fn lockout_counts_failures_unlocks_by_admin_and_by_itself() {
    let Some(e) = env() else { return };
    let (st, _) = e.s.put(
        "/api/organizations",
        json!({"settings": {"passwordPolicy": {"maxLoginAttempts": 3, "lockoutTimeInSeconds": 60}}}),
    );
    assert_eq!(st, 200);
    let id = activated_user(&e, "lock");
    let mut b = Browser::new(&e.s.base);
    for _ in 0..3 {
        let (at, p) = b.login("lock", "wrong wrong wrong");
        assert_eq!(at, "", "no redirect on failure");
        assert!(p.body.contains("incorrect"));
    }
    let (_, u) = e.s.get(&format!("/api/systemusers/{id}"));
    assert_eq!((u["account_locked"].as_bool(), u["badLoginAttempts"].as_i64()), (Some(true), Some(3)));
    assert!(u["account_locked_date"].is_string());
    let (at, _) = b.login("lock", PW);
    assert_eq!(at, "", "a locked account refuses even the right password");

    e.s.post(&format!("/api/systemusers/{id}/expire"), json!({}));
    let (st, v) = e.s.post(&format!("/api/systemusers/{id}/unlock"), json!({}));
    assert_eq!((st, v["outcome"].as_str()), (200, Some("done")));
    assert_eq!((v["user"]["account_locked"].as_bool(), v["user"]["badLoginAttempts"].as_i64()), (Some(false), Some(0)));
    assert_eq!(v["user"]["password_expired"], true, "unlock keeps password_expired");
    let (at, _) = b.login("lock", PW);
    assert_eq!(at, "/portal/change-password", "an expired password leads straight to the change form");
    let p = b.post(
        "/portal/change-password",
        &[("password", "brand new phrase here"), ("confirm", "brand new phrase here")],
    );
    let (at, _) = b.follow(p);
    assert_eq!(at, "/portal/profile");

    for _ in 0..3 {
        b.login("lock", "wrong wrong wrong");
    }
    let (at, _) = b.login("lock", "brand new phrase here");
    assert_eq!(at, "");
    std::fs::write(&e.clock, "61").unwrap();
    let (at, _) = b.login("lock", "brand new phrase here");
    assert_eq!(at, "/portal/profile", "lockoutTimeInSeconds unlocks by itself");
    let (_, evs) = e.s.get(&format!("/api/v2/events?user_id={id}&action=login_failure"));
    assert!(evs.as_array().unwrap().len() >= 7);
    assert!(evs.to_string().contains("the account is locked"));
}

#[test]
fn reset_links_expire_and_requests_never_reveal_accounts() {
    let Some(e) = env() else { return };
    let id = activated_user(&e, "rita");
    let mut b = Browser::new(&e.s.base);
    b.get("/portal/reset-request");
    let known = b.post("/portal/reset-request", &[("login", "rita@example.com")]);
    b.get("/portal/reset-request");
    let unknown = b.post("/portal/reset-request", &[("login", "nobody@example.com")]);
    assert_eq!((known.status, known.body.clone()), (unknown.status, unknown.body.clone()), "identical answers");
    let mail = e.smtp.wait_for("rita@example.com", 2);
    assert!(mail["subject"].as_str().unwrap().contains("Reset"));
    let link = link_in(mail["text"].as_str().unwrap(), "/portal/reset?token=");

    std::fs::write(&e.clock, "3700").unwrap();
    let p = b.get(&link);
    assert_eq!(p.status, 404, "a reset link lasts one hour");
    std::fs::write(&e.clock, "0").unwrap();
    let p = b.get(&link);
    assert_eq!(p.status, 200);
    let token = link.split("token=").nth(1).unwrap();
    let p = b.post(
        "/portal/reset",
        &[("password", "river stone lighthouse"), ("confirm", "river stone lighthouse"), ("token", token)],
    );
    assert_eq!(p.location.as_deref(), Some("/portal/login?m=password-set"));
    let (at, _) = b.login("rita", "river stone lighthouse");
    assert_eq!(at, "/portal/profile");

    let (_, r) = e.s.post("/api/v2/users/actions", json!({"action": "send_activation_email", "user_ids": [id]}));
    assert_eq!(r["results"][0]["outcome"], "done");
    assert!(
        e.smtp.wait_for("rita@example.com", 3)["subject"].as_str().unwrap().contains("Reset"),
        "an active password gets a reset mail"
    );
}

#[test]
fn suspension_forced_change_and_totp_reset_end_live_sessions() {
    let Some(e) = env() else { return };
    let id = activated_user(&e, "sam");
    let mut b = Browser::new(&e.s.base);
    let (at, _) = b.login("sam", PW);
    assert_eq!(at, "/portal/profile");
    assert_eq!(b.get("/portal/profile").status, 200);
    e.s.post(&format!("/api/systemusers/{id}/state/suspend"), json!({}));
    let p = b.get("/portal/profile");
    assert_eq!(p.location.as_deref(), Some("/portal/login"), "the open session died with the suspension");
    let (at, p) = b.login("sam", PW);
    assert_eq!(at, "");
    assert!(p.body.contains("incorrect, or the account cannot sign in"), "the message does not say why");

    e.s.post(&format!("/api/systemusers/{id}/state/activate"), json!({"email": false}));
    let (at, _) = b.login("sam", PW);
    assert_eq!(at, "/portal/profile", "reactivation restores access with the same password");
    e.s.post("/api/v2/users/actions", json!({"action": "force_password_change", "user_ids": [id]}));
    assert_eq!(b.get("/portal/profile").location.as_deref(), Some("/portal/login"));
}

#[test]
fn totp_is_enrolled_when_required_and_reset_by_the_admin() {
    let Some(e) = env() else { return };
    let id = activated_user(&e, "tess");
    let (_, r) =
        e.s.post("/api/v2/users/actions", json!({"action": "set_mfa_required", "required": true, "user_ids": [id]}));
    assert_eq!(r["results"][0]["outcome"], "done");
    let mut b = Browser::new(&e.s.base);
    let (at, p) = b.login("tess", PW);
    assert_eq!(at, "/portal/enroll");
    assert!(p.body.contains("<svg"), "a QR code is shown");
    let marker = "<code class=\"secret\">";
    let start = p.body.find(marker).unwrap() + marker.len();
    let b32 = &p.body[start..start + p.body[start..].find('<').unwrap()];
    let secret = totp_rs::Secret::Encoded(b32.to_string()).to_bytes().unwrap();
    let p = b.post("/portal/enroll", &[("code", "000000")]);
    assert_eq!(p.status, 400);
    let code = cairn_directory::totp_code(&secret, chrono::Utc::now());
    let (at, _) = {
        let p = b.post("/portal/enroll", &[("code", &code)]);
        b.follow(p)
    };
    assert_eq!(at, "/portal/profile");
    let (_, u) = e.s.get(&format!("/api/systemusers/{id}"));
    assert_eq!(
        (u["totp_enabled"].as_bool(), u["mfaEnrollment"]["totpStatus"].as_str()),
        (Some(true), Some("ENROLLED"))
    );
    assert!(!u.to_string().contains(b32), "the secret never leaves the server");

    let mut b2 = Browser::new(&e.s.base);
    let (at, _) = b2.login("tess", PW);
    assert_eq!(at, "/portal/totp");
    let p = b2.post("/portal/totp", &[("code", "123456")]);
    assert_eq!(p.status, 401);
    // The enrolment used this step's code up, and a code is accepted once: the next one
    // (one step of clock skew is allowed) signs in.
    let p = b2.post("/portal/totp", &[("code", &code)]);
    assert_eq!(p.status, 401, "the enrolment's code is not accepted again");
    let next = cairn_directory::totp_code(&secret, chrono::Utc::now() + chrono::Duration::seconds(30));
    let p = b2.post("/portal/totp", &[("code", &next)]);
    assert_eq!(b2.follow(p).0, "/portal/profile");

    let (st, v) = e.s.post(&format!("/api/systemusers/{id}/resetmfa"), json!({}));
    assert_eq!((st, v["outcome"].as_str()), (200, Some("done")));
    assert_eq!(v["user"]["totp_enabled"], false);
    assert_eq!(b2.get("/portal/profile").location.as_deref(), Some("/portal/login"), "TOTP reset ends sessions");
    assert!(e.smtp.wait_for("tess@example.com", 2)["subject"].as_str().unwrap().contains("two-factor"));
    let (at, _) = b2.login("tess", PW);
    assert_eq!(at, "/portal/enroll", "re-enrolment is required");
}

#[test]
fn external_password_authority_blocks_changes_in_cairn() {
    let Some(e) = env() else { return };
    let id = activated_user(&e, "ext");
    e.s.post(
        "/api/v2/users/actions",
        json!({"action": "set_password_authority", "authority": "active_directory", "user_ids": [id]}),
    );
    let mut b = Browser::new(&e.s.base);
    let (at, p) = b.login("ext", PW);
    assert_eq!(at, "/portal/profile");
    assert!(p.body.contains("managed by"), "{}", p.body);
    let p = b.get("/portal/change-password");
    assert!(p.body.contains("managed by") && !p.body.contains("name=\"password\""));
    let (st, v) = e.s.put(&format!("/api/systemusers/{id}"), json!({"password": "admin chosen phrase"}));
    assert_eq!(st, 409, "{v}");
}

#[test]
fn forms_without_the_csrf_token_are_refused() {
    let Some(e) = env() else { return };
    activated_user(&e, "carl");
    let http = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r =
        http.post(format!("{}/portal/login", e.s.base)).form(&[("login", "carl"), ("password", PW)]).send().unwrap();
    assert_eq!(r.status(), 403);
    let r = http.get(format!("{}/portal/login", e.s.base)).send().unwrap();
    let cookies: Vec<String> =
        r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect();
    assert!(cookies.iter().any(|c| c.contains("HttpOnly") && c.contains("SameSite=Lax")), "{cookies:?}");
}

/// Delivered (or, without SMTP, logged) messages leave the outbox after the retention
/// (`CAIRN_OUTBOX_RETENTION_DAYS`, 30 by default); younger ones and every event stay.
#[test]
fn old_delivered_and_logged_messages_are_pruned_and_their_events_stay() {
    let emails = |s: &Server, to: &str| s.get(&format!("/api/v2/emails?to={to}")).1.as_array().unwrap().len();
    let creations = |s: &Server| s.get("/api/v2/events?action=user_create&limit=1000").1.as_array().unwrap().len();
    let move_clock = |clock: &std::path::Path, days: i64| std::fs::write(clock, (days * 86_400).to_string()).unwrap();
    let wait_gone = |s: &Server, to: &str| {
        let start = std::time::Instant::now();
        while emails(s, to) > 0 {
            assert!(start.elapsed() < std::time::Duration::from_secs(30), "the old message stayed");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    // Sent through a real SMTP server.
    let Some(mut e) = env() else { return };
    create(&e.s, json!({"username": "old", "email": "old@example.com"}));
    e.smtp.wait_for("old@example.com", 1);
    let start = std::time::Instant::now();
    while e.s.get("/api/v2/emails?to=old@example.com&status=sent").1.as_array().unwrap().is_empty() {
        assert!(start.elapsed() < std::time::Duration::from_secs(30), "never marked sent");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    move_clock(&e.clock, 20);
    create(&e.s, json!({"username": "young", "email": "young@example.com"}));
    e.smtp.wait_for("young@example.com", 1);
    move_clock(&e.clock, 31);
    // Pruning runs shortly after start and then about once a minute.
    e.s.restart();
    wait_gone(&e.s, "old@example.com");
    assert_eq!(emails(&e.s, "young@example.com"), 1, "an 11-day-old message stays");
    assert_eq!(creations(&e.s), 2, "events stay");

    // Logged without SMTP, on both databases; a retention of 0 keeps everything.
    for db in Db::all("outbox_retention") {
        let tmp = tempfile::tempdir().unwrap();
        let clock = tmp.path().join("clock");
        let c = clock.to_str().unwrap();
        let mut s = Server::start_with(&db, &[("CAIRN_BOOTSTRAP_API_KEY", KEY), ("CAIRN_TEST_CLOCK_FILE", c)]);
        create(&s, json!({"username": "ann", "email": "ann@example.com"}));
        assert_eq!(s.get("/api/v2/emails?to=ann@example.com&status=logged").1.as_array().unwrap().len(), 1);
        move_clock(&clock, 45);
        s.env.push(("CAIRN_OUTBOX_RETENTION_DAYS".into(), "0".into()));
        s.restart();
        std::thread::sleep(std::time::Duration::from_secs(2));
        assert_eq!(emails(&s, "ann@example.com"), 1, "retention 0 keeps messages");
        s.env.pop();
        s.restart();
        wait_gone(&s, "ann@example.com");
        assert_eq!(creations(&s), 1);
    }
}
