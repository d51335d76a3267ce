//! The access core through `Directory::authenticate`, on SQLite and PostgreSQL: lockout
//! across both factors, TOTP replay, step tickets, revocation on password change, throttling,
//! and the races a suspension must always win. Each test reproduces a hole a probe of the
//! earlier build found (issue 13).

use std::sync::Arc;

use cairn_directory::{
    AuthRequest, Authenticated, Config, Credential, Ctx, Directory, Error, ManualClock, Principal, Refusal,
};
use cairn_domain::access::{Denial, Protocol, Step};
use cairn_domain::throttle::Rate;
use cairn_domain::{Actor, CreationSource, Role, Secret, State};
use cairn_store::{testing, EventQuery, Store};
use chrono::Duration;
use serde_json::json;

const PW: &str = "correct horse battery staple";

struct T {
    d: Directory,
    clock: Arc<ManualClock>,
    pg: bool,
    _tmp: Option<tempfile::TempDir>,
}

/// The default burst of sign-in failures per address, refilled slowly enough that the time
/// the tests themselves take does not matter: the clock is moved instead.
fn config() -> Config {
    Config {
        secret_key: Some([7u8; 32]),
        sign_in_rate: Rate { burst: 30, per_minute: 1 },
        reset_rate: Rate { burst: 10, per_minute: 1 },
        ..Config::default()
    }
}

async fn dirs(what: &str) -> Vec<T> {
    let mut out = vec![];
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::connect(&testing::sqlite_url(tmp.path())).await.unwrap();
    let clock = Arc::new(ManualClock::default());
    let d = Directory::with_config(store, clock.clone(), config());
    d.migrate().await.unwrap();
    out.push(T { d, clock, pg: false, _tmp: Some(tmp) });
    if let Some(url) = testing::fresh_postgres_url(what).await {
        let clock = Arc::new(ManualClock::default());
        let d = Directory::with_config(Store::connect(&url).await.unwrap(), clock.clone(), config());
        d.migrate().await.unwrap();
        out.push(T { d, clock, pg: true, _tmp: None });
    }
    out
}

fn admin() -> Ctx {
    Ctx::new(Actor::admin("0123456789abcdef01234567", "boss@example.com"), "api", None)
}

fn portal() -> Ctx {
    Ctx::new(Actor { kind: "user".into(), id: None, name: None }, "portal", None)
}

async fn user(d: &Directory, name: &str) -> String {
    d.create_user(
        &admin(),
        &json!({"username": name, "email": format!("{name}@example.com"), "password": PW}),
        CreationSource::ManualEntry,
        "api",
    )
    .await
    .unwrap()
    .id
}

async fn policy(d: &Directory, p: serde_json::Value) {
    d.update_settings(&admin(), &json!({"passwordPolicy": p})).await.unwrap();
}

async fn sign_in(
    d: &Directory,
    proto: Protocol,
    login: &str,
    pw: &str,
    addr: Option<&str>,
) -> Result<Authenticated, Error> {
    let password = Secret::new(pw);
    let req = AuthRequest {
        protocol: proto,
        credential: Credential::Password { login, password: &password, code: None },
        resource: None,
        client_addr: addr.map(str::to_string),
        device: None,
    };
    d.authenticate(&portal(), req).await
}

async fn code(d: &Directory, proto: Protocol, ticket: &str, code: &str) -> Result<Authenticated, Error> {
    let req = AuthRequest {
        protocol: proto,
        credential: Credential::SecondFactor { ticket, code },
        resource: None,
        client_addr: None,
        device: None,
    };
    d.authenticate(&portal(), req).await
}

fn refusal(r: Result<Authenticated, Error>) -> Refusal {
    match r {
        Err(Error::Refused(r)) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn ticket_of(r: Result<Authenticated, Error>, want: Step) -> String {
    match r {
        Ok(Authenticated::Step { step, ticket, .. }) if step == want => ticket,
        other => panic!("expected step {want:?}, got {other:?}"),
    }
}

async fn events(d: &Directory, id: &str, action: &str) -> Vec<cairn_domain::Event> {
    d.list_events(&EventQuery {
        target_id: Some(id.into()),
        action: Some(action.into()),
        limit: 1000,
        ..Default::default()
    })
    .await
    .unwrap()
    .1
}

/// Enrols TOTP for `id` through the directory's own enrolment, returning the raw secret.
async fn enrol(t: &T, id: &str) -> Vec<u8> {
    let sealed = t.d.new_totp_secret().unwrap();
    let u = t.d.get_user(id).await.unwrap();
    let (b32, _, _) = t.d.totp_enrollment(&u, &sealed).await.unwrap();
    let secret = totp_rs::Secret::Encoded(b32).to_bytes().unwrap();
    // A code of an earlier step, so the current one stays usable for the test itself.
    let earlier = cairn_directory::totp_code(&secret, t.d.now() - Duration::seconds(30));
    t.d.confirm_totp(&admin(), id, &sealed, &earlier).await.unwrap();
    secret
}

fn now_code(t: &T, secret: &[u8]) -> String {
    cairn_directory::totp_code(secret, t.d.now())
}

#[tokio::test]
async fn parallel_wrong_passwords_count_one_each_up_to_the_lock() {
    for t in dirs("parallel_wrong_passwords").await {
        let id = user(&t.d, "pat").await;
        // Nine at once, below the limit of ten: exactly nine.
        let tasks: Vec<_> = (0..9)
            .map(|_| {
                let d = t.d.clone();
                tokio::spawn(async move { sign_in(&d, Protocol::Portal, "pat", "wrong wrong wrong", None).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(refusal(task.await.unwrap()), Refusal::Credentials);
        }
        let u = t.d.get_user(&id).await.unwrap();
        assert_eq!((u.bad_login_attempts, u.account_locked), (9, false), "pg={}", t.pg);
        // Fifteen more at once: the tenth locks, the rest are refused uncounted.
        let tasks: Vec<_> = (0..15)
            .map(|_| {
                let d = t.d.clone();
                tokio::spawn(async move { sign_in(&d, Protocol::Portal, "pat", "wrong wrong wrong", None).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap_err();
        }
        let u = t.d.get_user(&id).await.unwrap();
        assert_eq!((u.bad_login_attempts, u.account_locked), (10, true), "pg={}", t.pg);
        assert_eq!(events(&t.d, &id, "login_failure").await.len(), 24, "one event per attempt");
    }
}

#[tokio::test]
async fn a_suspension_always_wins_a_race_with_failed_sign_ins() {
    for t in dirs("suspension_race").await {
        // PostgreSQL is where the race was: 100 trials there, a few on SQLite.
        let trials = if t.pg { 100 } else { 5 };
        policy(&t.d, json!({"maxLoginAttempts": 1000})).await;
        for trial in 0..trials {
            let name = format!("racer{trial}");
            let id = user(&t.d, &name).await;
            let mut tasks = vec![];
            for _ in 0..20 {
                let (d, name) = (t.d.clone(), name.clone());
                tasks.push(tokio::spawn(async move {
                    let _ = sign_in(&d, Protocol::Portal, &name, "wrong wrong wrong", None).await;
                }));
            }
            let (d, id2) = (t.d.clone(), id.clone());
            let suspend = tokio::spawn(async move {
                tokio::task::yield_now().await;
                d.suspend(&admin(), &id2).await.unwrap()
            });
            for task in tasks {
                task.await.unwrap();
            }
            suspend.await.unwrap();
            let u = t.d.get_user(&id).await.unwrap();
            assert_eq!(u.state, State::Suspended, "trial {trial}, pg={}", t.pg);
            assert_eq!(u.bad_login_attempts, 20, "trial {trial}: every failure counted once");
            let r = sign_in(&t.d, Protocol::Portal, &name, PW, None).await;
            assert_eq!(refusal(r), Refusal::Denied(Denial::NotActive), "trial {trial}");
        }
    }
}

#[tokio::test]
async fn a_right_password_does_not_reset_the_count_before_the_code() {
    for t in dirs("totp_guessing").await {
        policy(&t.d, json!({"maxLoginAttempts": 5})).await;
        let id = user(&t.d, "tess").await;
        let secret = enrol(&t, &id).await;
        // The probe: right password, wrong code, again and again. Each wrong code counts and
        // the right password in between resets nothing, so the fifth wrong code locks.
        for i in 1..=5 {
            let ticket = ticket_of(sign_in(&t.d, Protocol::Portal, "tess", PW, None).await, Step::SecondFactor);
            assert_eq!(refusal(code(&t.d, Protocol::Portal, &ticket, "000000").await), Refusal::Credentials);
            assert_eq!(t.d.get_user(&id).await.unwrap().bad_login_attempts, i);
        }
        assert!(t.d.get_user(&id).await.unwrap().account_locked);
        // Locked: the right password and the right code get nothing.
        let r = sign_in(&t.d, Protocol::Portal, "tess", PW, None).await;
        assert_eq!(refusal(r), Refusal::Denied(Denial::Locked));
        t.d.unlock(&admin(), &id).await.unwrap();
        // A full success resets.
        let ticket = ticket_of(sign_in(&t.d, Protocol::Portal, "tess", PW, None).await, Step::SecondFactor);
        refusal(code(&t.d, Protocol::Portal, &ticket, "000000").await);
        assert_eq!(t.d.get_user(&id).await.unwrap().bad_login_attempts, 1);
        let ok = code(&t.d, Protocol::Portal, &ticket, &now_code(&t, &secret)).await.unwrap();
        assert!(matches!(ok, Authenticated::Granted(Principal::User(_))));
        assert_eq!(t.d.get_user(&id).await.unwrap().bad_login_attempts, 0);
        // The ticket was used up by the success.
        refusal(code(&t.d, Protocol::Portal, &ticket, &now_code(&t, &secret)).await);
    }
}

#[tokio::test]
async fn a_totp_code_is_accepted_once() {
    for t in dirs("totp_replay").await {
        let id = user(&t.d, "rey").await;
        let secret = enrol(&t, &id).await;
        let c = now_code(&t, &secret);
        let ticket = ticket_of(sign_in(&t.d, Protocol::Portal, "rey", PW, None).await, Step::SecondFactor);
        code(&t.d, Protocol::Portal, &ticket, &c).await.unwrap();
        let ticket = ticket_of(sign_in(&t.d, Protocol::Portal, "rey", PW, None).await, Step::SecondFactor);
        assert_eq!(refusal(code(&t.d, Protocol::Portal, &ticket, &c).await), Refusal::Credentials);
        let failures = events(&t.d, &id, "login_failure").await;
        assert!(failures[0].detail["reason"].as_str().unwrap().contains("already used"), "{:?}", failures[0].detail);
        // The next step's code works.
        t.clock.advance(Duration::seconds(30));
        code(&t.d, Protocol::Portal, &ticket, &now_code(&t, &secret)).await.unwrap();
    }
}

#[tokio::test]
async fn the_code_comes_before_a_forced_password_change() {
    for t in dirs("expired_totp").await {
        let id = user(&t.d, "exa").await;
        let secret = enrol(&t, &id).await;
        t.d.expire_password(&admin(), &id).await.unwrap();
        // The old password alone leads to the code, not to the change form.
        let ticket = ticket_of(sign_in(&t.d, Protocol::Portal, "exa", PW, None).await, Step::SecondFactor);
        assert!(
            t.d.change_password_with_ticket(
                &portal(),
                Protocol::Portal,
                &ticket,
                &Secret::new("a new long passphrase")
            )
            .await
            .is_err(),
            "a code ticket is not a change ticket"
        );
        let change =
            ticket_of(code(&t.d, Protocol::Portal, &ticket, &now_code(&t, &secret)).await, Step::ChangePassword);
        let done = t
            .d
            .change_password_with_ticket(&portal(), Protocol::Portal, &change, &Secret::new("a new long passphrase"))
            .await
            .unwrap();
        assert!(matches!(done, Authenticated::Granted(_)));
        // LDAP and RADIUS refuse an expired password outright.
        t.d.expire_password(&admin(), &id).await.unwrap();
        let r = sign_in(&t.d, Protocol::Ldap, "exa", "a new long passphrase", None).await;
        assert_eq!(refusal(r), Refusal::Denied(Denial::PasswordExpired));
    }
}

#[tokio::test]
async fn a_new_password_ends_other_sessions_and_old_links() {
    for t in dirs("password_revokes").await {
        let id = user(&t.d, "lena").await;
        let d = &t.d;
        // A reset link issued before the change, and an open session.
        d.send_password_reset_email(&admin(), &id).await.unwrap().unwrap();
        let session = d.start_session(&id, "portal", json!({})).await.unwrap();
        let link = reset_token(d, &id).await;
        d.change_own_password(&portal(), &id, &Secret::new(PW), &Secret::new("river stone lighthouse")).await.unwrap();
        assert!(d.session(&session).await.unwrap().is_none(), "own change ends other sessions");
        assert!(d.link_user(&link, "reset").await.unwrap().is_none(), "own change kills earlier links");
        // The same for an admin PUT and for a reset link.
        let session = d.start_session(&id, "portal", json!({})).await.unwrap();
        d.update_user(&admin(), &id, &json!({"password": "another good passphrase"})).await.unwrap();
        assert!(d.session(&session).await.unwrap().is_none(), "an admin's new password ends sessions");
        d.send_password_reset_email(&admin(), &id).await.unwrap().unwrap();
        let first = reset_token(d, &id).await;
        let session = d.start_session(&id, "portal", json!({})).await.unwrap();
        d.set_password_with_link(&portal(), &first, "reset", &Secret::new("yet another passphrase")).await.unwrap();
        assert!(d.session(&session).await.unwrap().is_none(), "a reset ends sessions");
        // A wrong current password counts like any failed sign-in.
        let e = d
            .change_own_password(&portal(), &id, &Secret::new("not it at all"), &Secret::new("whatever passphrase"))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{e:?}");
        assert_eq!(d.get_user(&id).await.unwrap().bad_login_attempts, 1);
    }
}

/// The token of the last reset mail sent to `id`, read from the outbox (no SMTP here).
async fn reset_token(d: &Directory, id: &str) -> String {
    let q = cairn_store::OutboxQuery { limit: 100, ..Default::default() };
    let (_, msgs) = d.list_messages(&q).await.unwrap();
    let u = d.get_user(id).await.unwrap();
    let m = msgs.iter().find(|m| m.to == u.email && m.kind == "password_reset").expect("a reset mail");
    let at = m.text.find("token=").unwrap() + 6;
    m.text[at..].split_whitespace().next().unwrap().to_string()
}

#[tokio::test]
async fn administrators_lock_out_like_users_and_are_throttled() {
    for t in dirs("admin_lockout").await {
        policy(&t.d, json!({"maxLoginAttempts": 3})).await;
        t.d.create_admin(&admin(), "ops@example.com", Some(Secret::new(PW)), Role::Admin).await.unwrap();
        for _ in 0..3 {
            let r = sign_in(&t.d, Protocol::AdminPortal, "ops@example.com", "wrong wrong", None).await;
            assert_eq!(refusal(r), Refusal::Credentials);
        }
        let r = sign_in(&t.d, Protocol::AdminPortal, "ops@example.com", PW, None).await;
        assert_eq!(refusal(r), Refusal::Denied(Denial::Locked), "the right password after the lock");
        // Users' logins do not reach administrators, nor the other way round.
        let r = sign_in(&t.d, Protocol::Portal, "ops@example.com", PW, None).await;
        assert_eq!(refusal(r), Refusal::Credentials);
        // From one address, failures are throttled whatever the account.
        let mut throttled = 0;
        for i in 0..40 {
            let r = sign_in(&t.d, Protocol::AdminPortal, &format!("x{i}@example.com"), "nope", Some("192.0.2.9")).await;
            if refusal(r) == Refusal::Throttled {
                throttled += 1;
            }
        }
        assert_eq!(throttled, 10, "30 failures in a burst, then 429s");
        // Another address is not affected.
        let r = sign_in(&t.d, Protocol::AdminPortal, "x@example.com", "nope", Some("192.0.2.10")).await;
        assert_eq!(refusal(r), Refusal::Credentials);
        t.clock.advance(Duration::seconds(61));
        let r = sign_in(&t.d, Protocol::AdminPortal, "x@example.com", "nope", Some("192.0.2.9")).await;
        assert_eq!(refusal(r), Refusal::Credentials, "the bucket refills");
    }
}

#[tokio::test]
async fn locks_open_by_themselves_without_a_sign_in() {
    for t in dirs("auto_unlock").await {
        policy(&t.d, json!({"maxLoginAttempts": 2, "lockoutTimeInSeconds": 60})).await;
        let id = user(&t.d, "otto").await;
        let session = t.d.start_session(&id, "portal", json!({})).await.unwrap();
        for _ in 0..2 {
            refusal(sign_in(&t.d, Protocol::Portal, "otto", "wrong wrong", None).await);
        }
        assert!(t.d.get_user(&id).await.unwrap().account_locked);
        assert!(t.d.session(&session).await.unwrap().is_none(), "the lock ended the open session");
        assert_eq!(t.d.unlock_expired_locks().await.unwrap(), 0, "not yet");
        t.clock.advance(Duration::seconds(61));
        assert_eq!(t.d.unlock_expired_locks().await.unwrap(), 1);
        let u = t.d.get_user(&id).await.unwrap();
        assert_eq!((u.account_locked, u.bad_login_attempts), (false, 0));
        assert_eq!(events(&t.d, &id, "user_unlock").await.len(), 1);
        sign_in(&t.d, Protocol::Portal, "otto", PW, None).await.unwrap();
    }
}

#[tokio::test]
async fn portal_sessions_end_when_the_user_locks_or_expires() {
    for t in dirs("portal_session_checks").await {
        let id = user(&t.d, "sue").await;
        let s = t.d.start_session(&id, "portal", json!({})).await.unwrap();
        assert!(t.d.portal_session(&s, "portal").await.unwrap().is_some());
        // An admin locks the account: the session ends.
        t.d.update_user(&admin(), &id, &json!({"account_locked": true})).await.unwrap();
        assert!(t.d.portal_session(&s, "portal").await.unwrap().is_none());
        t.d.unlock(&admin(), &id).await.unwrap();
        let s = t.d.start_session(&id, "portal", json!({})).await.unwrap();
        t.d.expire_password(&admin(), &id).await.unwrap();
        assert!(t.d.portal_session(&s, "portal").await.unwrap().is_none());
    }
}

#[tokio::test]
async fn anonymous_input_is_bounded_in_what_it_stores() {
    for t in dirs("login_strings").await {
        let huge = "a".repeat(1_900_000);
        refusal(sign_in(&t.d, Protocol::Portal, &huge, "x", None).await);
        t.d.request_password_reset(&portal(), &huge).await.unwrap();
        let (_, evs) = t.d.list_events(&EventQuery { limit: 100, ..Default::default() }).await.unwrap();
        for e in evs {
            let size = e.detail.to_string().len();
            assert!(size < 1000, "{} stores {size} bytes", e.action);
        }
        // Reset mails: at most three an hour for one account, however often asked.
        let id = user(&t.d, "mia").await;
        for _ in 0..10 {
            t.d.request_password_reset(&portal(), "mia@example.com").await.unwrap();
        }
        let q = cairn_store::OutboxQuery { limit: 100, ..Default::default() };
        let mails = t.d.list_messages(&q).await.unwrap().1;
        assert_eq!(mails.iter().filter(|m| m.kind == "password_reset").count(), 3);
        assert_eq!(events(&t.d, &id, "password_reset_request").await.len(), 10);
        // From one address: a burst, then refused.
        let mut refused = 0;
        for _ in 0..15 {
            let ctx =
                Ctx::new(Actor { kind: "user".into(), id: None, name: None }, "portal", Some("198.51.100.4".into()));
            if let Err(Error::Refused(Refusal::Throttled)) = t.d.request_password_reset(&ctx, "nobody").await {
                refused += 1;
            }
        }
        assert_eq!(refused, 5, "a burst of ten");
    }
}
