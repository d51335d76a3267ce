//! End-to-end: the applications resource (`/api/applications`, JumpCloud's v1 shape with
//! `sso.type: "oidc"`) and its associations, as an admin's client and as an attacker would use
//! them, on SQLite and (with CAIRN_TEST_DATABASE_URL) PostgreSQL.

mod common;

use common::{Db, Server};
use serde_json::{json, Value};

pub fn create_app(s: &Server, body: Value) -> Value {
    let (st, v) = s.post("/api/applications", body.clone());
    assert_eq!(st, 201, "{body}: {v}");
    v
}

fn crud(db: &Db) {
    let s = Server::start(db);
    let app = create_app(
        &s,
        json!({"name": "Wiki", "displayLabel": "Team wiki", "sso": {"type": "oidc"},
               "redirectUris": ["https://wiki.example/cb"], "requireMfa": false}),
    );
    let id = app["_id"].as_str().unwrap().to_string();
    assert_eq!(app["sso"]["type"], "oidc");
    assert_eq!(app["tokenEndpointAuthMethod"], "client_secret_basic");
    assert!(app["clientSecret"].as_str().unwrap().starts_with("cairn_cs_"));
    assert!(app["discoveryUrl"].as_str().unwrap().ends_with("/.well-known/openid-configuration"));
    let (st, got) = s.get(&format!("/api/applications/{id}"));
    assert_eq!(st, 200);
    assert!(got.get("clientSecret").is_none(), "the secret is shown once: {got}");
    assert_eq!(got["clientId"], app["clientId"]);
    let (_, list) = s.get("/api/applications");
    assert_eq!((list["name"].as_str(), list["totalCount"].as_i64()), (Some("applications"), Some(1)));
    assert!(list["results"][0].get("clientSecret").is_none());

    // A public client: no secret, PKCE at sign-in.
    let spa = create_app(&s, json!({"name": "SPA", "public": true, "redirectUris": ["http://127.0.0.1:5173/cb"]}));
    assert_eq!((spa["tokenEndpointAuthMethod"].as_str(), spa.get("clientSecret")), (Some("none"), None));
    let (st, v) = s.post(&format!("/api/applications/{}/secret", spa["_id"].as_str().unwrap()), json!({}));
    assert_eq!(st, 409, "{v}");

    // Bad input names what is wrong and writes nothing.
    for (body, field) in [
        (json!({"redirectUris": ["https://a/cb"]}), "name"),
        (json!({"name": "x"}), "redirectUris"),
        (json!({"name": "x", "redirectUris": ["http://evil.example/cb"]}), "redirectUris[0]"),
        (json!({"name": "x", "redirectUris": ["https://a/cb#frag"]}), "redirectUris[0]"),
        (json!({"name": "x", "redirectUris": ["javascript:alert(1)"]}), "redirectUris[0]"),
        (json!({"name": "x", "redirectUris": ["https://a/cb"], "sso": {"type": "saml"}}), "sso.type"),
        (json!({"name": "x", "redirectUris": ["https://a/cb"], "scopes": ["email"]}), "scopes"),
        (json!({"name": "x", "redirectUris": ["https://a/cb"], "grantTypes": ["implicit"]}), "grantTypes[0]"),
        (
            json!({"name": "x", "redirectUris": ["https://a/cb"], "idTokenSignedResponseAlg": "none"}),
            "idTokenSignedResponseAlg",
        ),
        (
            json!({"name": "x", "redirectUris": ["https://a/cb"], "tokenEndpointAuthMethod": "none"}),
            "tokenEndpointAuthMethod",
        ),
        (json!({"name": "x", "redirectUris": ["https://a/cb"], "nope": 1}), "nope"),
        (json!({"name": "x\u{0}", "redirectUris": ["https://a/cb"]}), "name"),
        (json!({"name": "x".repeat(300), "redirectUris": ["https://a/cb"]}), "name"),
        (json!({"name": "x", "redirectUris": vec!["https://a/cb"; 21]}), "redirectUris"),
        (json!({"name": "x", "redirectUris": [format!("https://a/{}", "a".repeat(3000))]}), "redirectUris[0]"),
    ] {
        let (st, v) = s.post("/api/applications", body.clone());
        let fields: Vec<&str> =
            v["errors"].as_array().into_iter().flatten().filter_map(|e| e["field"].as_str()).collect();
        assert!(st == 400 && fields.contains(&field), "{body}: {st} {v}");
    }
    assert_eq!(s.get("/api/applications").1["totalCount"], 2, "nothing half-applied");

    // PUT changes what it sends; the kind of client is fixed.
    let (st, v) = s.put(&format!("/api/applications/{id}"), json!({"description": "docs", "requireMfa": true}));
    assert_eq!((st, v["description"].as_str(), v["requireMfa"].as_bool()), (200, Some("docs"), Some(true)), "{v}");
    assert_eq!(v["redirectUris"][0], "https://wiki.example/cb");
    let (st, v) = s.put(&format!("/api/applications/{id}"), json!({"public": true}));
    assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some("public")), "{v}");
    let (st, _) = s.put("/api/applications/5f0c1d2e3a4b5c6d7e8f9a0b", json!({"description": "x"}));
    assert_eq!(st, 404);

    // Rotation: a new secret, once.
    let (st, r) = s.post(&format!("/api/applications/{id}/secret"), json!({}));
    assert_eq!(st, 200, "{r}");
    assert_ne!(r["clientSecret"], app["clientSecret"]);

    // Associations in the graph, from both ends.
    let (_, u) = s.post("/api/systemusers", json!({"username": "ada", "email": "ada@example.com"}));
    let (_, g) = s.post("/api/v2/usergroups", json!({"name": "eng"}));
    let uid = u["_id"].as_str().unwrap();
    let gid = g["id"].as_str().unwrap();
    let assoc = format!("/api/v2/applications/{id}/associations");
    for (t, i) in [("user", uid), ("user_group", gid)] {
        let (st, v) = s.post(&assoc, json!({"op": "add", "type": t, "id": i}));
        assert_eq!(st, 204, "{v}");
    }
    let (st, v) = s.get(&format!("{assoc}?targets=user_group"));
    assert_eq!((st, v[0]["to"]["id"].as_str()), (200, Some(gid)), "{v}");
    let (_, v) = s.get(&format!("/api/v2/users/{uid}/associations?targets=application"));
    assert_eq!(v[0]["to"]["type"], "application", "{v}");
    let (st, _) = s.post(&assoc, json!({"op": "add", "type": "user", "id": "5f0c1d2e3a4b5c6d7e8f9a0b"}));
    assert_eq!(st, 404);
    let (st, _) = s.post(
        "/api/v2/applications/5f0c1d2e3a4b5c6d7e8f9a0b/associations",
        json!({"op": "add", "type": "user", "id": uid}),
    );
    assert_eq!(st, 404);

    // A read-only key reads and changes nothing.
    let (_, ro) = s.post("/api/v2/apikeys", json!({"name": "ro", "role": "read-only"}));
    let ro = ro["key"].as_str();
    assert_eq!(s.req("GET", "/api/applications", ro, None).0, 200);
    for (m, p) in [
        ("POST", "/api/applications".to_string()),
        ("DELETE", format!("/api/applications/{id}")),
        ("POST", format!("/api/applications/{id}/secret")),
    ] {
        assert_eq!(s.req(m, &p, ro, Some(&json!({}))).0, 403, "{m} {p}");
    }
    assert_eq!(s.req("GET", "/api/applications", None, None).0, 401);

    // Deleting ends its associations; the events say who did what.
    let (st, _) = s.delete(&format!("/api/applications/{id}"));
    assert_eq!(st, 200);
    assert_eq!(s.get(&format!("/api/applications/{id}")).0, 404);
    let (_, v) = s.get(&format!("/api/v2/users/{uid}/associations?targets=application"));
    assert_eq!(v, json!([]));
    let (_, ev) = s.get("/api/v2/events?limit=100");
    let actions: Vec<&str> = ev.as_array().into_iter().flatten().filter_map(|e| e["action"].as_str()).collect();
    for a in ["application_create", "application_update", "application_secret_rotate", "application_delete"] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
}

#[test]
fn admins_manage_oidc_applications_through_the_jumpcloud_api() {
    for db in Db::all("applications on PostgreSQL") {
        crud(&db);
    }
}

const ADMIN_PW: &str = "correct horse battery staple";

fn admin(s: &Server, email: &str, role: &str) -> common::Browser {
    let out = s
        .command()
        .args(["admin", "create", "--email", email, "--password", ADMIN_PW, "--role", role])
        .output()
        .expect("run cairn admin create");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut b = common::Browser::new(&s.base);
    b.get("/admin/login");
    let p = b.post("/admin/login", &[("email", email), ("password", ADMIN_PW)]);
    assert_eq!(b.follow(p).0, "/admin/users");
    b
}

fn between<'a>(body: &'a str, start: &str, end: &str) -> &'a str {
    let i = body.find(start).unwrap_or_else(|| panic!("{start} in {body}")) + start.len();
    &body[i..i + body[i..].find(end).unwrap()]
}

#[test]
fn admins_manage_applications_in_the_portal_and_users_see_theirs() {
    let s = Server::start(&Db::Sqlite);
    let mut b = admin(&s, "admin@example.com", "admin");
    b.get("/admin/applications");
    let p = b.post(
        "/admin/applications",
        &[("name", "Wiki"), ("redirectUris", "https://wiki.example/cb\nhttps://wiki.example/cb2"), ("requireMfa", "1")],
    );
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("it is not shown again"), "{}", p.body);
    let secret = between(&p.body, "<code id=\"client-secret\">", "<").to_string();
    assert!(secret.starts_with("cairn_cs_"));
    let (_, list) = s.get("/api/applications");
    let app = &list["results"][0];
    let id = app["_id"].as_str().unwrap().to_string();
    assert_eq!(app["redirectUris"], json!(["https://wiki.example/cb", "https://wiki.example/cb2"]));
    assert_eq!(app["requireMfa"], true);
    // The page never shows the secret again.
    let page = b.get(&format!("/admin/applications/{id}"));
    assert!(!page.body.contains(&secret));
    // Edit: a label and one URI fewer; a bad URI is refused by name and changes nothing.
    let p = b.post(
        &format!("/admin/applications/{id}"),
        &[
            ("name", "Wiki"),
            ("displayLabel", "Team wiki"),
            ("redirectUris", "https://wiki.example/cb"),
            ("active", "1"),
            ("idTokenSignedResponseAlg", "EdDSA"),
        ],
    );
    assert_eq!(p.status, 303, "{}", p.body);
    let p = b.post(
        &format!("/admin/applications/{id}"),
        &[
            ("name", "Wiki"),
            ("redirectUris", "http://evil.example/cb"),
            ("active", "1"),
            ("idTokenSignedResponseAlg", "RS256"),
        ],
    );
    assert_eq!(p.status, 400);
    assert!(p.body.contains("redirectUris[0]"), "{}", p.body);
    let (_, got) = s.get(&format!("/api/applications/{id}"));
    assert_eq!(
        (got["displayLabel"].as_str(), got["idTokenSignedResponseAlg"].as_str()),
        (Some("Team wiki"), Some("EdDSA"))
    );
    assert_eq!(got["redirectUris"], json!(["https://wiki.example/cb"]));
    // Associate a group by name; its member sees the application in the user portal.
    let (_, g) = s.post("/api/v2/usergroups", json!({"name": "eng"}));
    let (_, u) = s.post(
        "/api/systemusers",
        json!({"username": "ada", "email": "ada@example.com", "password": "lantern orchard seventeen"}),
    );
    s.post(
        &format!("/api/v2/usergroups/{}/members", g["id"].as_str().unwrap()),
        json!({"op": "add", "type": "user", "id": u["_id"]}),
    );
    b.get(&format!("/admin/applications/{id}"));
    let p = b.post(
        &format!("/admin/applications/{id}/associations"),
        &[("op", "add"), ("type", "user_group"), ("name", "eng")],
    );
    assert_eq!(p.status, 303);
    let page = b.get(&format!("/admin/applications/{id}"));
    assert!(page.body.contains(">eng</a>"), "{}", page.body);
    let mut person = common::Browser::new(&s.base);
    let (_, profile) = person.login("ada", "lantern orchard seventeen");
    assert!(profile.body.contains("Team wiki") && profile.body.contains("https://wiki.example/"), "{}", profile.body);
    // Rotate the secret: a new one, shown once.
    let p = b.post(&format!("/admin/applications/{id}/secret"), &[]);
    let rotated = between(&p.body, "<code id=\"client-secret\">", "<").to_string();
    assert_ne!(rotated, secret);
    // A read-only administrator sees everything and changes nothing.
    let mut ro = admin(&s, "viewer@example.com", "read-only");
    let page = ro.get(&format!("/admin/applications/{id}"));
    assert!(page.body.contains("Team wiki") && !page.body.contains("Rotate the client secret"));
    assert_eq!(ro.post(&format!("/admin/applications/{id}/delete"), &[]).status, 403);
    // Delete: gone from the list and from the person's portal.
    b.get(&format!("/admin/applications/{id}"));
    let p = b.post(&format!("/admin/applications/{id}/delete"), &[]);
    assert_eq!(p.location.as_deref(), Some("/admin/applications?m=deleted"));
    assert_eq!(s.get(&format!("/api/applications/{id}")).0, 404);
    let profile = person.get("/portal/profile");
    assert!(profile.body.contains("No applications are assigned to you."), "{}", profile.body);
}
