//! The table of `Directory::authenticate`: protocol × state × password status (pending,
//! active, expired, delegated) × locked × MFA (none, required without an authenticator,
//! enrolled without the code, enrolled with it) × granted → the outcome, and exactly one
//! event per attempt saying so. Real users in a real database (SQLite and PostgreSQL), set
//! up through the directory's own use cases; the expected answer is written out as the rule
//! reads, not computed by the code under test.

use std::sync::Arc;

use cairn_directory::{AuthRequest, Authenticated, Config, Credential, Ctx, Directory, Error, ManualClock, Refusal};
use cairn_domain::access::{Denial, Protocol, Step};
use cairn_domain::graph::{GraphOp, ResourceKind, ResourceRef, SubjectKind, SubjectRef};
use cairn_domain::{Actor, CreationSource, Secret};
use cairn_store::{testing, EventQuery, Store};
use chrono::Duration;
use serde_json::json;

const PW: &str = "correct horse battery staple";

#[derive(Debug, Clone, Copy, PartialEq)]
enum St {
    Staged,
    Activated,
    Suspended,
}
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pw {
    Pending,
    Active,
    Expired,
    Delegated,
}
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mfa {
    None,
    /// Required of the user, no authenticator yet.
    Required,
    /// Required, authenticator enrolled.
    Enrolled,
}

#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Granted,
    Step(Step),
    Credentials,
    Denied(Denial),
}

/// The rule, as the module documentation of `auth.rs` and §3.1 say it.
fn expected(p: Protocol, st: St, pw: Pw, locked: bool, mfa: Mfa, code: bool, granted: bool) -> Expect {
    // Secrets that cannot be verified here are wrong secrets.
    if pw == Pw::Delegated || pw == Pw::Pending {
        return Expect::Credentials;
    }
    if st != St::Activated {
        return Expect::Denied(Denial::NotActive);
    }
    if locked {
        return Expect::Denied(Denial::Locked);
    }
    let web = matches!(p, Protocol::Portal | Protocol::Oidc);
    if pw == Pw::Expired && !web {
        return Expect::Denied(Denial::PasswordExpired);
    }
    // The portal needs no grant; the others only reach the resource through the graph.
    if p != Protocol::Portal && !granted {
        return Expect::Denied(Denial::NotGranted);
    }
    let mfa_required = mfa != Mfa::None;
    let missing = mfa_required && !code;
    if missing && mfa == Mfa::Enrolled && p != Protocol::Ldap {
        return Expect::Step(Step::SecondFactor);
    }
    if pw == Pw::Expired {
        return Expect::Step(Step::ChangePassword);
    }
    if missing && mfa == Mfa::Required && web {
        return Expect::Step(Step::Enroll);
    }
    if missing {
        return Expect::Denied(Denial::MfaRequired);
    }
    Expect::Granted
}

struct Row {
    name: String,
    id: String,
    st: St,
    pw: Pw,
    locked: bool,
    mfa: Mfa,
    secret: Option<Vec<u8>>,
}

fn admin() -> Ctx {
    Ctx::new(Actor::admin("0123456789abcdef01234567", "boss@example.com"), "api", None)
}

async fn setup(d: &Directory, n: usize, st: St, pw: Pw, locked: bool, mfa: Mfa) -> Row {
    let name = format!("u{n:03}");
    let mut body = json!({"username": name, "email": format!("{name}@example.com")});
    if pw != Pw::Pending {
        body["password"] = json!(PW);
    }
    body["state"] = json!(match st {
        St::Staged => "STAGED",
        St::Activated => "ACTIVATED",
        St::Suspended => "SUSPENDED",
    });
    let id = d.create_user(&admin(), &body, CreationSource::ManualEntry, "api").await.unwrap().id;
    let mut secret = None;
    if mfa == Mfa::Enrolled {
        let sealed = d.new_totp_secret().unwrap();
        let u = d.get_user(&id).await.unwrap();
        let (b32, _, _) = d.totp_enrollment(&u, &sealed).await.unwrap();
        let raw = totp_rs::Secret::Encoded(b32).to_bytes().unwrap();
        let earlier = cairn_directory::totp_code(&raw, d.now() - Duration::seconds(30));
        d.confirm_totp(&admin(), &id, &sealed, &earlier).await.unwrap();
        secret = Some(raw);
    }
    if mfa != Mfa::None {
        d.update_user(&admin(), &id, &json!({"enable_user_portal_multifactor": true})).await.unwrap();
    }
    match pw {
        Pw::Expired => {
            d.expire_password(&admin(), &id).await.unwrap();
        }
        Pw::Delegated => {
            d.update_user(&admin(), &id, &json!({"delegatedAuthority": {"id": "ad1", "name": "ActiveDirectory"}}))
                .await
                .unwrap();
        }
        _ => {}
    }
    if locked {
        d.update_user(&admin(), &id, &json!({"account_locked": true})).await.unwrap();
    }
    Row { name, id, st, pw, locked, mfa, secret }
}

async fn attempts(d: &Directory, id: &str) -> Vec<cairn_domain::Event> {
    let mut out = vec![];
    for action in ["login_success", "login_failure"] {
        let q =
            EventQuery { target_id: Some(id.into()), action: Some(action.into()), limit: 1000, ..Default::default() };
        out.extend(d.list_events(&q).await.unwrap().1);
    }
    out
}

#[tokio::test]
async fn authenticate_follows_the_table_and_records_each_attempt_once() {
    let mut dirs = vec![];
    let tmp = tempfile::tempdir().unwrap();
    dirs.push(Store::connect(&testing::sqlite_url(tmp.path())).await.unwrap());
    if let Some(url) = testing::fresh_postgres_url("access_table").await {
        dirs.push(Store::connect(&url).await.unwrap());
    }
    for store in dirs {
        let clock = Arc::new(ManualClock::default());
        let d = Directory::with_config(store, clock.clone(), Config { secret_key: Some([3; 32]), ..Config::default() });
        d.migrate().await.unwrap();
        // Pending users fail every attempt: keep them from locking half-way through the table.
        d.update_settings(&admin(), &json!({"passwordPolicy": {"maxLoginAttempts": 1000}})).await.unwrap();
        let ldap = ResourceRef::new(ResourceKind::LdapServer, d.builtin_ldap_server().await.unwrap().id);
        let mut rows = vec![];
        let mut n = 0;
        for st in [St::Staged, St::Activated, St::Suspended] {
            for pw in [Pw::Pending, Pw::Active, Pw::Expired, Pw::Delegated] {
                for locked in [false, true] {
                    for mfa in [Mfa::None, Mfa::Required, Mfa::Enrolled] {
                        rows.push(setup(&d, n, st, pw, locked, mfa).await);
                        n += 1;
                    }
                }
            }
        }
        let mut checked = 0;
        // Not granted first, then every user associated with the resource.
        for granted in [false, true] {
            if granted {
                for r in &rows {
                    let subject = SubjectRef::new(SubjectKind::User, r.id.clone());
                    d.associate(&admin(), &subject, &ldap, GraphOp::Add).await.unwrap();
                }
            }
            for p in [Protocol::Portal, Protocol::Ldap, Protocol::Radius, Protocol::Oidc] {
                if p == Protocol::Portal && granted {
                    continue; // no resource: nothing to grant
                }
                for r in &rows {
                    for with_code in [false, true] {
                        if with_code && r.mfa != Mfa::Enrolled {
                            continue;
                        }
                        // A fresh time step for every code: each is accepted once.
                        clock.advance(Duration::seconds(30));
                        let code =
                            r.secret.as_ref().filter(|_| with_code).map(|s| cairn_directory::totp_code(s, d.now()));
                        let password = Secret::new(PW);
                        let req = AuthRequest {
                            protocol: p,
                            credential: Credential::Password {
                                login: &r.name,
                                password: &password,
                                code: code.as_deref(),
                            },
                            resource: (p != Protocol::Portal).then(|| ldap.clone()),
                            client_addr: Some("203.0.113.5".into()),
                            device: None,
                        };
                        let before = attempts(&d, &r.id).await.len();
                        let got = match d.authenticate(&admin(), req).await {
                            Ok(Authenticated::Granted(_)) => Expect::Granted,
                            Ok(Authenticated::Step { step, .. }) => Expect::Step(step),
                            Err(Error::Refused(Refusal::Credentials)) => Expect::Credentials,
                            Err(Error::Refused(Refusal::Denied(x))) => Expect::Denied(x),
                            other => panic!("{other:?}"),
                        };
                        let want = expected(p, r.st, r.pw, r.locked, r.mfa, with_code, granted);
                        let case = format!(
                            "{p:?} {:?} {:?} locked={} {:?} code={with_code} granted={granted}",
                            r.st, r.pw, r.locked, r.mfa
                        );
                        assert_eq!(got, want, "{case}");
                        let evs = attempts(&d, &r.id).await;
                        assert_eq!(evs.len(), before + 1, "one event per attempt: {case}");
                        let ev = evs.iter().max_by_key(|e| e.id.clone()).unwrap();
                        let ok = matches!(want, Expect::Granted | Expect::Step(_));
                        assert_eq!(ev.outcome, if ok { "success" } else { "failure" }, "{case}");
                        assert_eq!(ev.detail["protocol"], json!(p), "{case}");
                        if p != Protocol::Portal {
                            assert_eq!(ev.detail["resource"]["id"], json!(ldap.id), "{case}");
                        }
                        checked += 1;
                    }
                }
            }
        }
        // 72 users, and 24 of them again with the code, in 7 protocol × grant runs.
        assert_eq!(checked, 7 * 96, "every row of the table ran");
    }
}
