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
