//! End-to-end: JumpCloud's v2 graph (§4.2) through the real binary, on SQLite and (with
//! CAIRN_TEST_DATABASE_URL) PostgreSQL: associations from either end, the built-in LDAP
//! server, events, and what an attacker sends.

mod common;

use common::{Db, Server, KEY};
use serde_json::{json, Value};

const MISSING: &str = "0123456789abcdef01234567";

fn id_of(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_else(|| panic!("no {key} in {v}")).to_string()
}

fn user(s: &Server, name: &str) -> String {
    let (st, v) = s.post("/api/systemusers", json!({"username": name, "email": format!("{name}@example.com")}));
    assert_eq!(st, 200, "{v}");
    id_of(&v, "_id")
}

fn group(s: &Server, name: &str) -> String {
    let (st, v) = s.post("/api/v2/usergroups", json!({"name": name}));
    assert_eq!(st, 201, "{v}");
    id_of(&v, "id")
}

fn ldap_id(s: &Server) -> String {
    let (st, v) = s.get("/api/v2/ldapservers");
    assert_eq!(st, 200, "{v}");
    id_of(&v[0], "id")
}

fn op(op: &str, kind: &str, id: &str) -> Value {
    json!({"op": op, "type": kind, "id": id})
}

fn to(kind: &str, id: &str) -> Value {
    json!({"to": {"id": id, "type": kind, "attributes": null}, "attributes": null})
}

fn graph(db: &Db) {
    let s = Server::start(db);
    let (st, v) = s.get("/api/v2/ldapservers");
    assert_eq!(st, 200);
    let servers = v.as_array().unwrap();
    assert_eq!(servers.len(), 1, "one built-in LDAP server: {v}");
    let lid = id_of(&servers[0], "id");
    assert!(cairn_domain::id::is_object_id(&lid));
    assert_eq!(
        servers[0],
        json!({"id": lid, "name": "Cairn LDAP", "userLockoutAction": "disable", "userPasswordExpirationAction": "disable"})
    );
    let (st, v) = s.get(&format!("/api/v2/ldapservers/{lid}"));
    assert_eq!((st, &v), (200, &servers[0]));
    assert_eq!(s.get(&format!("/api/v2/ldapservers/{MISSING}")).0, 404);
    assert_eq!(s.get("/api/v2/ldapservers/builtin").0, 404);
    assert_eq!(s.get("/api/v2/ldapservers?skip=1").1, json!([]));
    let (st, v) = s.get("/api/v2/ldapservers?filter=name:eq:x");
    assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some("filter")));

    let (ada, bob, carol) = (user(&s, "ada"), user(&s, "bob"), user(&s, "carol"));
    let ops = group(&s, "ops");
    let ldap_assoc = format!("/api/v2/ldapservers/{lid}/associations");

    // From the user's and the group's end …
    let ada_assoc = format!("/api/v2/users/{ada}/associations");
    let ops_assoc = format!("/api/v2/usergroups/{ops}/associations");
    assert_eq!(s.post(&ada_assoc, op("add", "ldap_server", &lid)).0, 204);
    assert_eq!(s.post(&ada_assoc, op("add", "ldap_server", &lid)).0, 204, "adding again is harmless");
    assert_eq!(s.post(&ops_assoc, json!({"op": "add", "type": "ldap_server", "id": lid, "attributes": {}})).0, 204);
    assert_eq!(s.get(&format!("{ada_assoc}?targets=ldap_server")).1, json!([to("ldap_server", &lid)]));
    assert_eq!(s.get(&format!("{ops_assoc}?targets=ldap_server")).1, json!([to("ldap_server", &lid)]));
    assert_eq!(s.get(&format!("{ada_assoc}?targets=application")).1, json!([]), "none of that type");
    assert_eq!(s.get(&format!("{ada_assoc}?targets=radius_server,ldap_server")).1, json!([to("ldap_server", &lid)]));
    // … and from the resource's.
    assert_eq!(s.post(&ldap_assoc, op("add", "user", &bob)).0, 204);
    assert_eq!(
        s.get(&format!("/api/v2/users/{bob}/associations?targets=ldap_server")).1,
        json!([to("ldap_server", &lid)])
    );
    let (st, v) = s.get(&format!("{ldap_assoc}?targets=user"));
    assert_eq!(st, 200);
    let mut users = vec![to("user", &ada), to("user", &bob)];
    users.sort_by_key(|v| v["to"]["id"].as_str().unwrap().to_string());
    assert_eq!(v, json!(users));
    assert_eq!(s.get(&format!("{ldap_assoc}?targets=user_group")).1, json!([to("user_group", &ops)]));
    let (_, v) = s.get(&format!("{ldap_assoc}?targets=user&targets=user_group"));
    assert_eq!(v.as_array().unwrap().len(), 3, "{v}");
    let (_, v) = s.get(&format!("{ldap_assoc}?targets=user&targets=user_group&limit=1&skip=2"));
    assert_eq!(v, json!([to("user_group", &ops)]), "paged, users before groups");
    let (st, v) = s.get(&format!("{ldap_assoc}?targets=user&limit=101"));
    assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some("limit")));
    let r =
        s.raw().get(format!("{}{ldap_assoc}?targets=user&limit=1", s.base)).header("x-api-key", KEY).send().unwrap();
    assert_eq!(r.headers()["x-total-count"], "2");

    // Removing, also what is not there.
    assert_eq!(s.post(&ldap_assoc, op("remove", "user", &ada)).0, 204);
    assert_eq!(s.post(&ada_assoc, op("remove", "ldap_server", &lid)).0, 204, "removing again is harmless");
    assert_eq!(s.post(&format!("/api/v2/users/{carol}/associations"), op("remove", "ldap_server", &lid)).0, 204);
    assert_eq!(s.get(&format!("{ada_assoc}?targets=ldap_server")).1, json!([]));

    // One event per change, none for the repeats.
    let (_, v) = s.get("/api/v2/events?action=association_add");
    assert_eq!(v.as_array().unwrap().len(), 3, "ada, ops, bob: {v}");
    let (_, v) = s.get("/api/v2/events?action=association_remove");
    let removes = v.as_array().unwrap();
    assert_eq!(removes.len(), 1, "{v}");
    assert_eq!(removes[0]["target"]["id"], ada.as_str(), "{v}");
    assert_eq!(removes[0]["detail"]["resource_id"], lid.as_str());
    assert_eq!(removes[0]["detail"]["resource_type"], "ldap_server");
    let (_, v) = s.get(&format!("/api/v2/events?user_id={ops}&action=association_add"));
    assert_eq!(v.as_array().unwrap().len(), 1, "the group's own event: {v}");

    // What does not exist is a 404 from either end.
    for path in [
        format!("/api/v2/users/{MISSING}/associations"),
        format!("/api/v2/usergroups/{MISSING}/associations"),
        format!("/api/v2/ldapservers/{MISSING}/associations"),
        "/api/v2/users/nope/associations".to_string(),
    ] {
        let target = if path.contains("ldapservers") { "user" } else { "ldap_server" };
        assert_eq!(s.get(&format!("{path}?targets={target}")).0, 404, "{path}");
        let (st, v) = s.post(&path, op("add", target, &ada));
        assert_eq!(st, 404, "{path}: {v}");
    }
    for (path, body) in [
        (ada_assoc.clone(), op("add", "ldap_server", MISSING)),
        (ldap_assoc.clone(), op("add", "user", MISSING)),
        (ldap_assoc.clone(), op("add", "user_group", &ada)),
        (ada_assoc.clone(), op("add", "radius_server", MISSING)),
        (ops_assoc.clone(), op("add", "application", MISSING)),
    ] {
        let (st, v) = s.post(&path, body.clone());
        assert_eq!(st, 404, "{path} {body}: {v}");
    }
    let (_, v) = s.post(&ops_assoc, op("add", "radius_server", MISSING));
    assert!(v["message"].as_str().unwrap().contains("no RADIUS server with id"), "{v}");

    // Every type JumpCloud defines for users and groups is accepted: those Cairn has no objects
    // of list nothing and name no object here (404); others are refused by name, with the
    // supported ones; targets is required.
    for t in [
        "system",
        "system_group",
        "g_suite",
        "office_365",
        "active_directory",
        "idp_routing_policy",
        "password_manager_item",
    ] {
        for path in [&ada_assoc, &ops_assoc] {
            let (st, v) = s.get(&format!("{path}?targets={t}"));
            assert_eq!((st, v), (200, json!([])), "{path}?targets={t}");
            let (st, v) = s.post(path, op("add", t, &lid));
            assert_eq!(st, 404, "{t}: {v}");
            assert!(v["message"].as_str().unwrap().contains(&format!("no {t} with id")), "{v}");
        }
    }
    let (_, v) = s.get(&format!("{ada_assoc}?targets=system&targets=ldap_server"));
    assert_eq!(v, json!([]), "ada has no LDAP server at this point either");
    let (st, v) = s.post(&format!("/api/v2/users/{MISSING}/associations"), op("add", "system", &lid));
    assert_eq!(st, 404, "the subject is checked first: {v}");
    assert!(v["message"].as_str().unwrap().contains("no user"), "{v}");
    let (st, v) = s.post(&ops_assoc, op("add", "command", &lid));
    assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some("type")), "{v}");
    let m = v["errors"][0]["message"].as_str().unwrap();
    assert!(m.contains("'command'") && m.contains("ldap_server, radius_server, application, active_directory"), "{m}");
    let (st, v) = s.post(&ldap_assoc, op("add", "ldap_server", &lid));
    assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some("type")), "a resource holds users and groups");
    for (path, q) in [
        (&ada_assoc, "targets=policy"),
        (&ada_assoc, "targets=user"),
        (&ldap_assoc, "targets=ldap_server"),
        (&ldap_assoc, "targets=user&targets=g_suite"),
        (&ada_assoc, "targets="),
        (&ada_assoc, ""),
        (&ldap_assoc, "limit=5"),
    ] {
        let (st, v) = s.get(&format!("{path}?{q}"));
        assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some("targets")), "{path}?{q}: {v}");
    }
    let (_, v) = s.get(&format!("{ldap_assoc}?targets=system"));
    assert!(v["message"].as_str().unwrap().contains("supported: user, user_group"), "{v}");

    // Read-only keys read the graph and change nothing.
    let (_, k) = s.post("/api/v2/apikeys", json!({"name": "auditor", "role": "read-only"}));
    let ro = id_of(&k, "key");
    let (st, _) = s.req("GET", &format!("{ldap_assoc}?targets=user"), Some(&ro), None);
    assert_eq!(st, 200);
    assert_eq!(s.req("GET", "/api/v2/ldapservers", Some(&ro), None).0, 200);
    for path in [&ada_assoc, &ops_assoc, &ldap_assoc] {
        let kind = if path.contains("ldapservers") { "user" } else { "ldap_server" };
        let id = if kind == "user" { &ada } else { &lid };
        let (st, _) = s.req("POST", path, Some(&ro), Some(&op("add", kind, id)));
        assert_eq!(st, 403, "{path}");
    }
    assert_eq!(s.get(&format!("{ada_assoc}?targets=ldap_server")).1, json!([]), "the refused add left nothing");

    // Deleting a user or a group deletes its associations.
    assert_eq!(s.delete(&format!("/api/systemusers/{bob}")).0, 200);
    assert_eq!(s.get(&format!("{ldap_assoc}?targets=user")).1, json!([]));
    assert_eq!(s.delete(&format!("/api/v2/usergroups/{ops}")).0, 200);
    assert_eq!(s.get(&format!("{ldap_assoc}?targets=user_group")).1, json!([]));
    // A new group never inherits anything.
    let ops2 = group(&s, "ops");
    assert_eq!(s.get(&format!("/api/v2/usergroups/{ops2}/associations?targets=ldap_server")).1, json!([]));
}

#[test]
fn users_and_groups_are_associated_with_the_ldap_server_from_either_end() {
    for db in Db::all("end-to-end grants on PostgreSQL") {
        graph(&db);
    }
}

/// What an attacker sends: every attempt a precise refusal, none a 500, nothing changed.
fn attacks(db: &Db) {
    let s = Server::start(db);
    let lid = ldap_id(&s);
    let ada = user(&s, "ada");
    let ada_assoc = format!("/api/v2/users/{ada}/associations");
    let ldap_assoc = format!("/api/v2/ldapservers/{lid}/associations");
    let raw = |path: &str, body: String| {
        // The server may answer before reading a large body and close.
        let h = [("x-api-key", KEY), ("content-type", "application/json")];
        let (status, _, text) = s.send_unread("POST", path, &h, body.into_bytes());
        (status, serde_json::from_slice::<Value>(&text).unwrap_or(Value::Null))
    };

    let (st, v) =
        raw(&ada_assoc, format!("{{\"op\":\"add\",\"type\":\"ldap_server\",\"id\":\"{}\"}}", "a".repeat(2 << 20)));
    assert_eq!((st, v["code"].as_i64()), (413, Some(413)), "{v}");
    let (st, v) = raw(&ada_assoc, "{\"op\": \"add\", ".into());
    assert_eq!(st, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("malformed JSON"), "{v}");
    assert_eq!(raw(&ada_assoc, String::new()).0, 400, "an empty body");
    for body in [json!([op("add", "ldap_server", &lid)]), json!("add"), json!(null), json!(7)] {
        let (st, v) = s.post(&ada_assoc, body.clone());
        assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some("body")), "{body}: {v}");
    }
    for (field, body) in [
        ("id", op("add", "ldap_server", &lid.to_uppercase())),
        ("id", op("add", "ldap_server", &lid[..23])),
        ("id", op("add", "ldap_server", &format!("{lid}0"))),
        ("id", op("add", "ldap_server", &format!("{}\u{0}", &lid[..23]))),
        ("id", json!({"op": "add", "type": "ldap_server", "id": 12345})),
        ("id", json!({"op": "add", "type": "ldap_server"})),
        ("type", op("add", "ldap_server\u{0}", &lid)),
        ("type", op("add", "LDAP_SERVER", &lid)),
        ("type", json!({"op": "add", "type": ["ldap_server"], "id": lid})),
        ("op", op("update", "ldap_server", &lid)),
        ("op", op("delete", "ldap_server", &lid)),
        ("op", op("ADD", "ldap_server", &lid)),
        ("op", json!({"type": "ldap_server", "id": lid})),
        (
            "attributes",
            json!({"op": "add", "type": "ldap_server", "id": lid, "attributes": {"sudo": {"enabled": true}}}),
        ),
        ("attributes", json!({"op": "add", "type": "ldap_server", "id": lid, "attributes": "x"})),
        ("from", json!({"op": "add", "type": "ldap_server", "id": lid, "from": {"id": ada, "type": "user"}})),
    ] {
        let (st, v) = s.post(&ada_assoc, body.clone());
        assert_eq!(st, 400, "{body}: {v}");
        let named: Vec<&str> = v["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert!(named.contains(&field), "{field} not named for {body}: {v}");
    }
    let many: serde_json::Map<String, Value> = (0..20_000).map(|i| (format!("f{i}"), json!(i))).collect();
    let (st, v) = s.post(&ldap_assoc, Value::Object(many));
    assert_eq!(st, 400);
    assert!(v["errors"].as_array().unwrap().len() <= 20, "a short answer to a body of 20,000 fields");
    let (st, v) = s.get(&format!("{ldap_assoc}?targets={}", "x".repeat(20_000)));
    assert_eq!(st, 400);
    assert!(v.to_string().len() < 1000, "a refused value is not echoed whole: {}", v.to_string().len());

    // NUL bytes and non-ids in the path and the query stop before the store (PostgreSQL
    // refuses NUL in text with an error of its own).
    for path in [
        "/api/v2/users/%00/associations?targets=ldap_server".to_string(),
        format!("/api/v2/users/{}%00/associations?targets=ldap_server", &ada[..23]),
        "/api/v2/usergroups/..%2F..%2Fsystemusers/associations?targets=ldap_server".to_string(),
        "/api/v2/ldapservers/%00/associations?targets=user".to_string(),
        "/api/v2/ldapservers/%00".to_string(),
        format!("/api/v2/ldapservers/{}", "f".repeat(5000)),
    ] {
        let (st, v) = s.get(&path);
        assert_eq!(st, 404, "{path}: {v}");
    }
    let (st, v) = s.get(&format!("{ada_assoc}?targets=ldap%00server"));
    assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some("targets")), "{v}");
    let (st, _) = s.post("/api/v2/users/%00/associations", op("add", "ldap_server", &lid));
    assert_eq!(st, 404);
    let (st, _) = s.post(&format!("/api/v2/ldapservers/{}%00/associations", &lid[..23]), op("add", "user", &ada));
    assert_eq!(st, 404);

    assert_eq!(s.get(&format!("{ada_assoc}?targets=ldap_server")).1, json!([]), "nothing was associated");
    let (_, v) = s.get("/api/v2/events?action=association_add");
    assert_eq!(v, json!([]));
    // And the server is still well.
    assert_eq!(s.post(&ada_assoc, op("add", "ldap_server", &lid)).0, 204);
}

#[test]
fn malformed_graph_operations_are_refused_precisely_and_change_nothing() {
    for db in Db::all("end-to-end grant attacks on PostgreSQL") {
        attacks(&db);
    }
}
