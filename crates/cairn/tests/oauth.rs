//! End-to-end: OAuth 2.0 client credentials for service accounts (`/oauth2/token`), tried as
//! a client and as an attacker would, on SQLite and (with CAIRN_TEST_DATABASE_URL) PostgreSQL.

mod common;

use common::{Db, Server, KEY};
use serde_json::{json, Value};

fn token_req(
    s: &Server,
    basic: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut r = s.raw().post(format!("{}/oauth2/token", s.base)).form(form);
    if let Some((id, secret)) = basic {
        r = r.basic_auth(id, Some(secret));
    }
    let res = r.send().unwrap();
    let st = res.status().as_u16();
    let h = res.headers().clone();
    (st, res.json().unwrap_or(Value::Null), h)
}

fn bearer(s: &Server, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = s.raw().request(method.parse().unwrap(), format!("{}{path}", s.base)).bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let res = r.send().unwrap();
    let st = res.status().as_u16();
    (st, res.json().unwrap_or(Value::Null))
}

fn account(s: &Server, name: &str, role: &str) -> (String, String, String) {
    let (st, v) = s.post("/api/v2/serviceaccounts", json!({"name": name, "role": role}));
    assert_eq!(st, 201, "{v}");
    let s = |k: &str| v[k].as_str().unwrap().to_string();
    (s("id"), s("client_id"), s("client_secret"))
}

fn client_credentials(db: &Db) {
    let s = Server::start(db);
    let (id, client, secret) = account(&s, "terraform", "admin");
    let (_, list) = s.get("/api/v2/serviceaccounts");
    assert_eq!(list[0]["client_id"], client.as_str());
    assert!(list[0].get("client_secret").is_none(), "the secret is shown once: {list}");
    let (_, ro_key) = s.post("/api/v2/apikeys", json!({"name": "ro", "role": "read-only"}));
    let (st, _) = s.req("POST", "/api/v2/serviceaccounts", ro_key["key"].as_str(), Some(&json!({"name": "x"})));
    assert_eq!(st, 403, "a read-only key creates no accounts");
    for (body, field) in [
        (json!({}), "name"),
        (json!({"name": "a", "role": "root"}), "role"),
        (json!({"name": "a", "scope": "x"}), "scope"),
    ] {
        let (st, v) = s.post("/api/v2/serviceaccounts", body.clone());
        assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some(field)), "{body}: {v}");
    }

    // client_secret_basic and client_secret_post.
    let grant = [("grant_type", "client_credentials")];
    let (st, t, h) = token_req(&s, Some((&client, &secret)), &grant);
    assert_eq!(st, 200, "{t}");
    assert_eq!(
        (t["token_type"].as_str(), t["expires_in"].as_i64(), t["scope"].as_str()),
        (Some("Bearer"), Some(3600), Some("api"))
    );
    assert_eq!(h["cache-control"], "no-store");
    let token = t["access_token"].as_str().unwrap().to_string();
    let (st, t2, _) = token_req(
        &s,
        None,
        &[("grant_type", "client_credentials"), ("client_id", &client), ("client_secret", &secret), ("scope", "api")],
    );
    assert_eq!(st, 200, "{t2}");
    assert_ne!(t2["access_token"], t["access_token"]);
    // The token is an API key of the account's role; it may be used again and again.
    for _ in 0..2 {
        assert_eq!(bearer(&s, "GET", "/api/systemusers", &token, None).0, 200);
    }
    let (st, u) = bearer(
        &s,
        "POST",
        "/api/systemusers",
        &token,
        Some(json!({"username": "Bot-Made", "email": "bot@example.com"})),
    );
    assert_eq!(st, 200, "{u}");
    let (_, ev) = s.get(&format!("/api/v2/events?user_id={}", u["_id"].as_str().unwrap()));
    assert_eq!(ev[0]["actor"], json!({"kind": "service_account", "id": id, "name": "terraform"}));
    assert_eq!(
        s.raw().get(format!("{}/api/systemusers", s.base)).header("x-api-key", &token).send().unwrap().status(),
        200
    );
    // Not a SCIM token, not a client secret.
    assert_eq!(bearer(&s, "GET", "/scim/v2/Users", &token, None).0, 401);
    assert_eq!(token_req(&s, Some((&client, &token)), &grant).0, 401);
    assert_eq!(token_req(&s, Some((&client, KEY)), &grant).0, 401);
    // A forged or altered token is nothing.
    let forged = format!("{}x", &token[..token.len() - 1]);
    assert_eq!(bearer(&s, "GET", "/api/systemusers", &forged, None).0, 401);

    // A read-only account reads and changes nothing.
    let (_, ro_client, ro_secret) = account(&s, "auditor", "read-only");
    let (_, t, _) = token_req(&s, Some((&ro_client, &ro_secret)), &grant);
    let ro = t["access_token"].as_str().unwrap().to_string();
    assert_eq!(bearer(&s, "GET", "/api/systemusers", &ro, None).0, 200);
    let (st, v) =
        bearer(&s, "POST", "/api/systemusers", &ro, Some(json!({"username": "no", "email": "no@example.com"})));
    assert_eq!((st, v["code"].as_i64()), (403, Some(403)), "{v}");
    assert_eq!(bearer(&s, "POST", "/api/v2/serviceaccounts", &ro, Some(json!({"name": "escalate"}))).0, 403);
    assert_eq!(bearer(&s, "DELETE", &format!("/api/v2/serviceaccounts/{id}"), &ro, None).0, 403);

    // Wrong, missing, malformed: refusals that say what is wrong but not which part of a secret.
    let (st, v, h) = token_req(&s, Some((&client, "wrong")), &grant);
    assert_eq!((st, v["error"].as_str(), v["code"].as_i64()), (401, Some("invalid_client"), Some(401)), "{v}");
    assert!(h.contains_key("www-authenticate"));
    let (_, unknown, _) = token_req(&s, Some(("no-such-client", &secret)), &grant);
    assert_eq!(unknown, v, "an unknown client and a wrong secret answer alike");
    let nul = format!("{client}\0");
    for (basic, form, status, error) in [
        (None, vec![("grant_type", "client_credentials")], 401, "invalid_client"),
        (Some((client.as_str(), "")), grant.to_vec(), 401, "invalid_client"),
        (Some((nul.as_str(), secret.as_str())), grant.to_vec(), 401, "invalid_client"),
        (None, vec![("grant_type", "client_credentials"), ("client_secret", secret.as_str())], 400, "invalid_request"),
        (Some((client.as_str(), secret.as_str())), vec![("grant_type", "password")], 400, "unsupported_grant_type"),
        (Some((client.as_str(), secret.as_str())), vec![], 400, "invalid_request"),
        (
            Some((client.as_str(), secret.as_str())),
            vec![("grant_type", "client_credentials"), ("scope", "admin")],
            400,
            "invalid_scope",
        ),
        (
            Some((client.as_str(), secret.as_str())),
            vec![("grant_type", "client_credentials"), ("client_secret", secret.as_str())],
            400,
            "invalid_request",
        ),
        (
            Some((client.as_str(), secret.as_str())),
            vec![("grant_type", "client_credentials"), ("grant_type", "client_credentials")],
            400,
            "invalid_request",
        ),
    ] {
        let (st, v, _) = token_req(&s, basic, &form);
        assert_eq!((st, v["error"].as_str()), (status, Some(error)), "{basic:?} {form:?}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    let r = s
        .raw()
        .post(format!("{}/oauth2/token", s.base))
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400, "a JSON body is not a token request");
    let huge = format!("grant_type=client_credentials&client_id={client}&client_secret={}", "x".repeat(1 << 20));
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let (st, _, _) = s.send_unread("POST", "/oauth2/token", &form, huge.into_bytes());
    assert_eq!(st, 413, "a huge request is refused before it is read");
    let (_, fails) = s.get("/api/v2/events?action=login_failure&limit=1000");
    let fails: Vec<&Value> = fails.as_array().unwrap().iter().filter(|e| e["detail"]["protocol"] == "oauth2").collect();
    assert!(fails.iter().all(|e| e["source"] == "oauth2" && e["outcome"] == "failure"));
    assert!(
        fails.iter().any(|e| e["target"]["id"] == id.as_str() && e["detail"]["reason"] == "wrong client secret"),
        "{fails:?}"
    );

    // Secrets and tokens are stored as hashes only.
    if matches!(db, Db::Sqlite) {
        let mut bytes = std::fs::read(s.data_dir().join("cairn.db")).unwrap();
        bytes.extend(std::fs::read(s.data_dir().join("cairn.db-wal")).unwrap_or_default());
        let has = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
        assert!(!has(&secret) && !has(&token), "no client secret or token in the database files");
    }

    // Revocation ends every token of the account at once, and its secret.
    assert_eq!(s.delete(&format!("/api/v2/serviceaccounts/{id}")).0, 204);
    assert_eq!(bearer(&s, "GET", "/api/systemusers", &token, None).0, 401);
    assert_eq!(bearer(&s, "GET", "/api/systemusers", t2["access_token"].as_str().unwrap(), None).0, 401);
    assert_eq!(token_req(&s, Some((&client, &secret)), &grant).0, 401);
    assert_eq!(s.delete(&format!("/api/v2/serviceaccounts/{id}")).0, 404);
    let (_, ev) = s.get("/api/v2/events?action=service_account_delete");
    assert_eq!(ev[0]["target"]["id"], id.as_str());
    assert_eq!(bearer(&s, "GET", "/api/systemusers", &ro, None).0, 200, "other accounts keep their tokens");
}

#[test]
fn service_accounts_trade_client_credentials_for_api_tokens() {
    for db in Db::all("OAuth client credentials on PostgreSQL") {
        client_credentials(&db);
    }
}

#[test]
fn a_flood_of_wrong_secrets_is_throttled_per_address() {
    let s = Server::start(&Db::Sqlite);
    let (_, client, secret) = account(&s, "ci", "admin");
    let grant = [("grant_type", "client_credentials")];
    let mut statuses = vec![];
    for _ in 0..60 {
        statuses.push(token_req(&s, Some((&client, "guess")), &grant).0);
    }
    assert!(statuses.iter().all(|s| *s == 401 || *s == 429), "{statuses:?}");
    let first_429 = statuses.iter().position(|s| *s == 429).expect("the flood is throttled");
    assert!(first_429 >= 10, "a person mistyping is not throttled at once: {statuses:?}");
    let (st, v, _) = token_req(&s, Some((&client, &secret)), &grant);
    assert_eq!((st, v["error"].as_str()), (429, Some("slow_down")), "the address waits, whatever it sends: {v}");
    let (_, ev) = s.get("/api/v2/events?action=login_failure&limit=1000");
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(ev.as_array().unwrap().len(), 60 - throttled, "a throttled attempt does no work and writes nothing");
}

#[test]
fn admins_create_and_revoke_service_accounts_in_the_portal() {
    let s = Server::start(&Db::Sqlite);
    let pw = "correct horse battery staple";
    for (email, role) in [("admin@example.com", "admin"), ("viewer@example.com", "read-only")] {
        let out =
            s.command().args(["admin", "create", "--email", email, "--password", pw, "--role", role]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let mut b = common::Browser::new(&s.base);
    b.get("/admin/login");
    let p = b.post("/admin/login", &[("email", "admin@example.com"), ("password", pw)]);
    b.follow(p);
    let p = b.get("/admin/service-accounts");
    assert_eq!(p.status, 200);
    assert!(p.body.contains("No service accounts"), "{}", p.body);
    let p = b.post("/admin/service-accounts", &[("name", "ci-pipeline"), ("role", "read-only")]);
    assert_eq!(p.status, 200);
    let secret = p
        .body
        .split("cairn_cs_")
        .nth(1)
        .map(|r| format!("cairn_cs_{}", &r[..r.find('<').unwrap()]))
        .expect("the secret is shown");
    let (_, list) = s.get("/api/v2/serviceaccounts");
    let client = list[0]["client_id"].as_str().unwrap().to_string();
    assert_eq!(list[0]["role"], "read-only");
    let (st, t, _) = token_req(&s, Some((&client, &secret)), &[("grant_type", "client_credentials")]);
    assert_eq!(st, 200, "the secret shown once works: {t}");
    let p = b.get("/admin/service-accounts");
    assert!(p.body.contains("ci-pipeline") && !p.body.contains(&secret), "listed, the secret not shown again");
    // A read-only administrator sees the list and changes nothing.
    let mut viewer = common::Browser::new(&s.base);
    viewer.get("/admin/login");
    let p = viewer.post("/admin/login", &[("email", "viewer@example.com"), ("password", pw)]);
    viewer.follow(p);
    assert!(viewer.get("/admin/service-accounts").body.contains("ci-pipeline"));
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert_eq!(viewer.post(&format!("/admin/service-accounts/{id}/delete"), &[]).status, 403);
    let p = b.post(&format!("/admin/service-accounts/{id}/delete"), &[]);
    assert_eq!(p.location.as_deref(), Some("/admin/service-accounts?m=revoked"));
    assert_eq!(bearer(&s, "GET", "/api/systemusers", t["access_token"].as_str().unwrap(), None).0, 401);
}
