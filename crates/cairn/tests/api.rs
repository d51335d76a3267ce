//! End-to-end: the real binary, over HTTP, on SQLite and (with CAIRN_TEST_DATABASE_URL)
//! PostgreSQL.

mod common;

use common::{usernames, Db, Server, KEY};
use serde_json::{json, Value};

fn create(s: &Server, body: Value) -> Value {
    let (st, v) = s.post("/api/systemusers", body);
    assert_eq!(st, 200, "{v}");
    v
}

fn crud(db: &Db) {
    let s = Server::start(db);
    let ada = create(
        &s,
        json!({"username": "Ada", "email": "Ada@Example.com", "firstname": "Ada", "lastname": "Lovelace",
               "department": "R&D", "employeeIdentifier": "E-1", "sudo": true, "unix_uid": 1001,
               "attributes": [{"name": "badge", "value": "7"}]}),
    );
    assert_eq!(ada["username"], "Ada", "usernames keep their case (§2.1)");
    assert_eq!(ada["email"], "ada@example.com");
    assert_eq!(ada["state"], "ACTIVATED", "the manualEntry default");
    assert_eq!(ada["activated"], false, "no password yet");
    assert_eq!(ada["sudo"], true, "JumpCloud fields Cairn does not act on are kept");
    let id = ada["_id"].as_str().unwrap().to_string();
    assert!(cairn_domain::id::is_object_id(&id));
    for (u, d, l) in [("bob", "Sales", "Brown"), ("carol", "Sales", "Adams"), ("dave", "IT", "Young")] {
        create(&s, json!({"username": u, "email": format!("{u}@example.com"), "department": d, "lastname": l}));
    }

    let (st, v) = s.get("/api/systemusers");
    assert_eq!(st, 200);
    assert_eq!(v["totalCount"], 4);
    assert_eq!(usernames(&v), ["Ada", "bob", "carol", "dave"]);

    let (_, v) = s.get("/api/systemusers?filter=department:$eq:Sales&sort=lastname&fields=username%20lastname");
    assert_eq!(usernames(&v), ["carol", "bob"]);
    assert_eq!(v["results"][0].as_object().unwrap().len(), 3, "_id, username, lastname: {v}");

    let (_, v) = s.get("/api/systemusers?filter[0]=department:$eq:Sales&filter[1]=lastname:$ne:Brown");
    assert_eq!(usernames(&v), ["carol"]);
    let (_, v) = s.get("/api/systemusers?filter[or][0]=username:dave&filter[or][1]=unix_uid:$gte:1000&sort=-username");
    assert_eq!(usernames(&v), ["dave", "Ada"]);
    let (_, v) = s.get("/api/systemusers?search=LOVE");
    assert_eq!(usernames(&v), ["Ada"]);
    let (_, v) = s.get("/api/systemusers?limit=2&skip=1&sort=-username");
    assert_eq!((v["totalCount"].as_i64(), usernames(&v)), (Some(4), vec!["carol".to_string(), "bob".to_string()]));
    // Keyset paging (issue 19): a full page returns nextCursor; cursor= with the same sort is
    // the page after it, in either direction; the count stays the whole list's.
    let (_, v) = s.get("/api/systemusers?limit=2&sort=-username");
    assert_eq!(usernames(&v), ["dave", "carol"]);
    let next = v["nextCursor"].as_str().expect("a full page has a next cursor").to_string();
    let (st, v) = s.get(&format!("/api/systemusers?limit=2&sort=-username&cursor={next}"));
    assert_eq!(
        (st, v["totalCount"].as_i64(), usernames(&v)),
        (200, Some(4), vec!["bob".to_string(), "Ada".to_string()])
    );
    let last = v["nextCursor"].as_str().unwrap().to_string();
    let (_, v) = s.get(&format!("/api/systemusers?limit=2&sort=-username&cursor={last}"));
    assert!(usernames(&v).is_empty() && v.get("nextCursor").is_none(), "{v}");
    let (_, v) = s.get("/api/systemusers?limit=3&sort=lastname");
    assert_eq!(usernames(&v), ["carol", "bob", "Ada"]);
    let next = v["nextCursor"].as_str().unwrap().to_string();
    let (_, v) = s.get(&format!("/api/systemusers?limit=3&sort=lastname&cursor={next}"));
    assert_eq!(usernames(&v), ["dave"]);
    assert!(v.get("nextCursor").is_none(), "the last page has none: {v}");
    let (st, v) = s.get(&format!("/api/systemusers?limit=3&sort=-lastname&cursor={next}"));
    assert_eq!(st, 400, "a cursor belongs to its sort: {v}");
    let (st, v) = s.get(&format!("/api/systemusers?limit=3&sort=lastname&skip=3&cursor={next}"));
    assert_eq!(st, 400, "cursor replaces skip: {v}");
    let (st, _) = s.get("/api/systemusers?cursor=not-a-cursor");
    assert_eq!(st, 400);
    let (st, v) = s.post(
        "/api/search/systemusers",
        json!({"filter": {"or": [{"department": "IT"}, {"username": "bob"}]}, "fields": "username"}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(usernames(&v), ["bob", "dave"]);
    let (_, v) =
        s.post("/api/search/systemusers", json!({"searchFilter": {"searchTerm": "@example.com", "fields": ["email"]}}));
    assert_eq!(v["totalCount"], 4);

    let (st, v) = s.put(&format!("/api/systemusers/{id}"), json!({"jobTitle": "Countess", "department": null}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["jobTitle"], "Countess");
    assert_eq!(v["department"], "", "null clears a field");
    assert_eq!(v["firstname"], "Ada", "PUT changes only the fields given");
    let (_, v) = s.get(&format!("/api/systemusers/{id}?fields=jobTitle"));
    assert_eq!(v, json!({"_id": id, "jobTitle": "Countess"}));

    let (st, v) = s.delete(&format!("/api/systemusers/{id}"));
    assert_eq!((st, v["username"].as_str()), (200, Some("Ada")));
    let (st, v) = s.get(&format!("/api/systemusers/{id}"));
    assert_eq!(st, 404, "{v}");
    assert_eq!(v["code"], 404);
    let (_, v) = s.get("/api/systemusers");
    assert_eq!(v["totalCount"], 3);
}

#[test]
fn users_are_created_listed_filtered_updated_and_deleted() {
    for db in Db::all("end-to-end user CRUD on PostgreSQL") {
        crud(&db);
    }
}

#[test]
fn duplicates_are_409_and_bad_input_is_400_naming_each_field() {
    let s = Server::start(&Db::Sqlite);
    create(&s, json!({"username": "ada", "email": "ada@example.com", "employeeIdentifier": "E1"}));
    for body in [
        json!({"username": "ADA", "email": "x@example.com"}),
        json!({"username": "x", "email": "ADA@example.com"}),
        json!({"username": "y", "email": "y@example.com", "employeeIdentifier": "E1"}),
    ] {
        let (st, v) = s.post("/api/systemusers", body.clone());
        assert_eq!(st, 409, "{body} -> {v}");
        assert_eq!(v["status"], "Conflict");
        assert!(v["message"].as_str().unwrap().contains("already exists"));
    }
    let (st, v) = s.post(
        "/api/systemusers",
        json!({"username": "-bad", "email": "nope", "sudo": "yes", "favouriteColour": "red"}),
    );
    assert_eq!(st, 400);
    let fields: Vec<&str> = v["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    for f in ["username", "email", "sudo", "favouriteColour"] {
        assert!(fields.contains(&f), "{f} not named in {v}");
    }
    let (st, v) = s.post("/api/systemusers", json!({"email": "z@example.com"}));
    assert_eq!(st, 400);
    assert_eq!(v["errors"][0]["field"], "username");

    let r = s
        .raw()
        .post(format!("{}/api/systemusers", s.base))
        .header("x-api-key", KEY)
        .body("{\"username\": ")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().unwrap();
    assert!(v["message"].as_str().unwrap().contains("malformed JSON"), "{v}");

    let big = format!(
        "{{\"username\":\"x\",\"email\":\"x@example.com\",\"description\":\"{}\"}}",
        "x".repeat(2 * 1024 * 1024)
    );
    // The server answers before reading the whole body and closes.
    let (st, _, text) = s.send_unread("POST", "/api/systemusers", &[("x-api-key", KEY)], big.into_bytes());
    assert_eq!(st, 413);
    let v: Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(v["code"], 413);

    let (st, v) = s.get("/api/systemusers?limit=5000");
    assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some("limit")));
    let (st, v) = s.get("/api/systemusers?filter=password:$eq:x");
    assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some("filter")));
    let (_, v) = s.get("/api/systemusers");
    assert_eq!(v["totalCount"], 1, "nothing half-applied");
}

#[test]
fn api_keys_authenticate_and_read_only_keys_cannot_change_anything() {
    let s = Server::start(&Db::Sqlite);
    let (st, v) = s.req("GET", "/api/systemusers", None, None);
    assert_eq!((st, v["code"].as_i64()), (401, Some(401)));
    let (st, _) = s.req("GET", "/api/systemusers", Some("wrong-key-wrong-key"), None);
    assert_eq!(st, 401);
    let r = s.raw().get(format!("{}/api/systemusers", s.base)).bearer_auth(KEY).send().unwrap();
    assert_eq!(r.status(), 200, "Authorization: Bearer works too");

    let (st, k) = s.post("/api/v2/apikeys", json!({"name": "auditor", "role": "read-only"}));
    assert_eq!(st, 201, "{k}");
    let ro = k["key"].as_str().unwrap().to_string();
    let (_, list) = s.get("/api/v2/apikeys");
    assert!(list.as_array().unwrap().iter().all(|k| k.get("key").is_none()), "keys are shown only once");
    assert!(list.to_string().contains("auditor"));

    let (st, _) = s.req("GET", "/api/systemusers", Some(&ro), None);
    assert_eq!(st, 200);
    let (st, _) = s.req("POST", "/api/search/systemusers", Some(&ro), Some(&json!({})));
    assert_eq!(st, 200, "searching is reading");
    let (st, v) =
        s.req("POST", "/api/systemusers", Some(&ro), Some(&json!({"username": "x", "email": "x@example.com"})));
    assert_eq!(st, 403, "{v}");
    let (st, _) = s.req("POST", "/api/v2/usergroups", Some(&ro), Some(&json!({"name": "g"})));
    assert_eq!(st, 403);
    let (st, _) = s.req("PUT", "/api/organizations", Some(&ro), Some(&json!({"settings": {}})));
    assert_eq!(st, 403);
    let (st, _) = s.req("POST", "/api/v2/apikeys", Some(&ro), Some(&json!({"name": "escalate"})));
    assert_eq!(st, 403);

    let (_, list) = s.get("/api/v2/apikeys");
    let auditor = list.as_array().unwrap().iter().find(|k| k["name"] == "auditor").unwrap().clone();
    assert!(auditor["lastUsed"].is_string(), "last use is kept: {auditor}");
    let (st, _) = s.delete(&format!("/api/v2/apikeys/{}", auditor["id"].as_str().unwrap()));
    assert_eq!(st, 204);
    let (st, _) = s.req("GET", "/api/systemusers", Some(&ro), None);
    assert_eq!(st, 401, "a deleted key stops working");
}

#[test]
fn data_survives_a_restart_and_a_kill() {
    let mut s = Server::start(&Db::Sqlite);
    create(&s, json!({"username": "ada", "email": "ada@example.com"}));
    let (_, g) = s.post("/api/v2/usergroups", json!({"name": "eng"}));
    s.kill();
    s.restart();
    let (_, v) = s.get("/api/systemusers");
    assert_eq!(usernames(&v), ["ada"]);
    let (st, _) = s.get(&format!("/api/v2/usergroups/{}", g["id"].as_str().unwrap()));
    assert_eq!(st, 200);
}

#[test]
fn groups_hold_users_and_users_know_their_groups() {
    let s = Server::start(&Db::Sqlite);
    let ada = create(&s, json!({"username": "ada", "email": "ada@example.com"}));
    let uid = ada["_id"].as_str().unwrap();
    let (st, g) = s.post("/api/v2/usergroups", json!({"name": "Engineering", "description": "builders"}));
    assert_eq!(st, 201, "{g}");
    let gid = g["id"].as_str().unwrap();
    assert_eq!(g["type"], "user_group");
    let (st, _) = s.post("/api/v2/usergroups", json!({"name": "engineering"}));
    assert_eq!(st, 409, "group names are unique regardless of case");
    let (st, v) = s.post("/api/v2/usergroups", json!({"description": "no name"}));
    assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some("name")));

    let members = format!("/api/v2/usergroups/{gid}/members");
    let (st, _) = s.post(&members, json!({"op": "add", "type": "user", "id": uid}));
    assert_eq!(st, 204);
    let (st, _) = s.post(&members, json!({"op": "add", "type": "user", "id": uid}));
    assert_eq!(st, 204, "adding again is harmless");
    let (st, v) = s.post(&members, json!({"op": "add", "type": "system", "id": uid}));
    assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some("type")));
    let (st, _) = s.post(&members, json!({"op": "add", "type": "user", "id": "0123456789abcdef01234567"}));
    assert_eq!(st, 404);

    let (_, v) = s.get(&members);
    assert_eq!(v, json!([{"to": {"id": uid, "type": "user", "attributes": null}, "attributes": null}]));
    let (_, v) = s.get(&format!("/api/v2/usergroups/{gid}/membership"));
    assert_eq!(v[0]["id"], uid);
    let (_, v) = s.get(&format!("/api/v2/users/{uid}/memberof"));
    assert_eq!(v[0]["id"], gid);
    assert_eq!(v[0]["type"], "user_group");

    let (_, v) = s.get("/api/v2/usergroups?filter=name:eq:engineering");
    assert_eq!(v.as_array().unwrap().len(), 1);
    let (st, v) = s.put(&format!("/api/v2/usergroups/{gid}"), json!({"name": "Eng"}));
    assert_eq!((st, v["name"].as_str()), (200, Some("Eng")));

    let (st, _) = s.post(&members, json!({"op": "remove", "type": "user", "id": uid}));
    assert_eq!(st, 204);
    let (_, v) = s.get(&format!("/api/v2/users/{uid}/memberof"));
    assert_eq!(v, json!([]));
    let (st, _) = s.delete(&format!("/api/v2/usergroups/{gid}"));
    assert_eq!(st, 200);
    let (st, _) = s.get(&format!("/api/v2/usergroups/{gid}"));
    assert_eq!(st, 404);
}

#[test]
fn the_creation_source_picks_the_default_state_and_an_explicit_state_wins() {
    let s = Server::start(&Db::Sqlite);
    let (st, org) = s.get("/api/organizations");
    assert_eq!(st, 200);
    let org_id = org["results"][0]["_id"].as_str().unwrap().to_string();
    let settings = &org["results"][0]["settings"];
    assert_eq!(settings["newSystemUserStateDefaults"]["manualEntry"], "ACTIVATED");
    assert_eq!(settings["passwordPolicy"]["minLength"], 12);

    let (st, v) = s.put(
        &format!("/api/organizations/{org_id}"),
        json!({"settings": {"newSystemUserStateDefaults": {"manualEntry": "STAGED"},
                            "systemUserDefaults": {"restrictedFields": [{"field": "password", "type": "scim"}]}}}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["settings"]["newSystemUserStateDefaults"]["manualEntry"], "STAGED");
    assert_eq!(v["settings"]["newSystemUserStateDefaults"]["csvImport"], "ACTIVATED", "untouched settings stay");

    let u = create(&s, json!({"username": "staged", "email": "s@example.com"}));
    assert_eq!(u["state"], "STAGED");
    assert_eq!(u["restrictedFields"], json!([{"field": "password", "type": "scim"}]), "default password authority");
    let u = create(&s, json!({"username": "explicit", "email": "e@example.com", "state": "ACTIVATED"}));
    assert_eq!(u["state"], "ACTIVATED");
    // restrictedFields of one connection are stored packed: the packed form itself is not
    // input, and a list of that shape reads back as sent.
    let uid = u["_id"].as_str().unwrap();
    let packed = json!({"active_directory": "0123456789abcdef01234567", "fields": ["password"]});
    let (st, v) = s.put(&format!("/api/systemusers/{uid}"), json!({ "restrictedFields": packed }));
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["errors"][0]["field"], "restrictedFields", "{v}");
    let list = json!([{"field": "email", "type": "active_directory", "id": "0123456789abcdef01234567"},
                      {"field": "password", "type": "active_directory", "id": "0123456789abcdef01234567"}]);
    let (st, v) = s.put(&format!("/api/systemusers/{uid}"), json!({ "restrictedFields": list }));
    assert_eq!((st, &v["restrictedFields"]), (200, &list), "{v}");
    let (_, v) = s.get(&format!("/api/systemusers/{uid}"));
    assert_eq!(v["restrictedFields"], list);

    let (st, v) =
        s.put("/api/organizations", json!({"settings": {"newSystemUserStateDefaults": {"manualEntry": "SUSPENDED"}}}));
    assert_eq!(st, 400);
    assert_eq!(v["errors"][0]["field"], "settings.newSystemUserStateDefaults.manualEntry");
    let (st, _) = s.put("/api/organizations", json!({"settings": {"passwordPolicy": {"minLength": 3}}}));
    assert_eq!(st, 400);

    // Staging is for creation only.
    let (st, v) = s.put(&format!("/api/systemusers/{}", u["_id"].as_str().unwrap()), json!({"state": "STAGED"}));
    assert_eq!(st, 409, "{v}");
}

#[test]
fn every_change_is_an_event_with_actor_source_address_and_changes() {
    let s = Server::start(&Db::Sqlite);
    let u = create(&s, json!({"username": "ada", "email": "ada@example.com", "password": "correct horse battery"}));
    let id = u["_id"].as_str().unwrap();
    assert_eq!(u["activated"], true);
    assert!(u.get("password").is_none(), "a password is never returned");
    s.put(&format!("/api/systemusers/{id}"), json!({"firstname": "Ada", "password": "another long passphrase"}));

    let (st, evs) = s.get(&format!("/api/v2/events?user_id={id}"));
    assert_eq!(st, 200);
    let evs = evs.as_array().unwrap();
    assert_eq!(evs.len(), 2, "{evs:?}");
    let update = &evs[0];
    assert_eq!(update["action"], "user_update");
    assert_eq!(update["actor"]["kind"], "apikey");
    assert_eq!(update["source"], "api");
    assert_eq!(update["client_addr"], "127.0.0.1");
    let changes = update["changes"].as_array().unwrap();
    assert!(changes.contains(&json!({"field": "firstname", "old": "", "new": "Ada"})), "{changes:?}");
    assert!(changes.contains(&json!({"field": "password", "old": "***", "new": "***"})), "{changes:?}");
    let all = serde_json::to_string(evs).unwrap();
    assert!(
        !all.contains("correct horse") && !all.contains("another long") && !all.contains("argon2"),
        "secrets are elided"
    );

    let (_, g) = s.post("/api/v2/usergroups", json!({"name": "eng"}));
    s.post(
        &format!("/api/v2/usergroups/{}/members", g["id"].as_str().unwrap()),
        json!({"op": "add", "type": "user", "id": id}),
    );
    s.put("/api/organizations", json!({"settings": {"passwordPolicy": {"maxLoginAttempts": 5}}}));
    s.delete(&format!("/api/systemusers/{id}"));
    for action in ["group_create", "group_member_add", "settings_update", "user_delete", "apikey_create"] {
        let (_, v) = s.get(&format!("/api/v2/events?action={action}"));
        assert!(!v.as_array().unwrap().is_empty(), "no {action} event");
    }
    let (_, v) = s.get("/api/v2/events?action=settings_update");
    assert_eq!(v[0]["changes"][0], json!({"field": "settings.passwordPolicy.maxLoginAttempts", "old": 10, "new": 5}));
    let (_, v) = s.get("/api/v2/events?action=user_delete");
    assert_eq!(v[0]["detail"]["username"], "ada", "the log keeps who was deleted");
    let (st, v) = s.get("/api/v2/events?since=yesterday");
    assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some("since")));
    let (_, v) = s.get("/api/v2/events?since=2000-01-01T00:00:00Z&until=2001-01-01T00:00:00Z");
    assert_eq!(v, json!([]));
}

#[test]
fn a_weak_password_is_refused() {
    let s = Server::start(&Db::Sqlite);
    let (st, v) =
        s.post("/api/systemusers", json!({"username": "ada", "email": "ada@example.com", "password": "short"}));
    assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some("password")));
}

#[test]
fn health_metrics_and_openapi_answer() {
    let s = Server::start(&Db::Sqlite);
    let r = s.raw().get(format!("{}/healthz", s.base)).send().unwrap();
    assert_eq!(r.status(), 200);
    create(&s, json!({"username": "ada", "email": "ada@example.com"}));
    let text = s.raw().get(format!("{}/metrics", s.base)).send().unwrap().text().unwrap();
    assert!(text.contains("cairn_http_requests_total"), "{text}");
    assert!(text.contains("cairn_users{state=\"ACTIVATED\"} 1"), "{text}");
    assert!(text.contains("cairn_auth_total"), "{text}");
    assert!(text.contains("cairn_outbox_depth"), "{text}");

    let (st, doc) = s.req("GET", "/api/openapi.json", None, None);
    assert_eq!(st, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/systemusers",
        "/systemusers/{id}",
        "/search/systemusers",
        "/organizations",
        "/organizations/{id}",
        "/v2/usergroups",
        "/v2/usergroups/{id}",
        "/v2/usergroups/{id}/members",
        "/v2/usergroups/{id}/membership",
        "/v2/users/{id}/memberof",
        "/v2/apikeys",
        "/v2/apikeys/{id}",
        "/v2/events",
        "/systemusers/{id}/state/activate",
        "/systemusers/{id}/state/suspend",
        "/v2/users/actions",
        "/v2/bulk/userstates",
        "/v2/bulk/userstates/{id}",
        "/v2/bulk/userstates/eventlist/next",
        "/systemusers/{id}/expire",
        "/systemusers/{id}/unlock",
        "/systemusers/{id}/resetmfa",
        "/v2/emails",
        "/v2/users/import",
        "/v2/users/import/{id}",
        "/v2/bulk/users",
        "/v2/bulk/users/{id}/results",
        "/v2/users/export",
        "/v2/users/{id}/associations",
        "/v2/usergroups/{id}/associations",
        "/v2/ldapservers",
        "/v2/ldapservers/{id}",
        "/v2/ldapservers/{id}/associations",
        "/v2/directories",
        "/v2/directories/{id}",
        "/v2/directories/{id}/sync",
        "/v2/directories/{id}/sync/{job_id}",
        "/v2/directories/{id}/sync/{job_id}/results",
    ] {
        assert!(paths.contains_key(p), "{p} missing from the OpenAPI document");
    }
    let props = doc["components"]["schemas"]["SystemUserPost"]["properties"].as_object().unwrap();
    assert!(props.contains_key("sudo") && props.contains_key("employeeIdentifier"));
}
