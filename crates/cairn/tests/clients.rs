//! End-to-end: what a JumpCloud client that manages users and groups by name sees (issue 14),
//! on SQLite and (with CAIRN_TEST_DATABASE_URL) PostgreSQL: case-kept usernames, lookups by
//! name, the password and MFA endpoints, associations, import results.

mod common;

use std::time::{Duration, Instant};

use common::{usernames, Browser, Db, Server, KEY};
use serde_json::{json, Value};

const PW: &str = "correct horse battery staple";

fn create(s: &Server, body: Value) -> Value {
    let (st, v) = s.post("/api/systemusers", body);
    assert_eq!(st, 200, "{v}");
    v
}

fn upload(s: &Server, query: &str, csv: &str) -> (u16, Value) {
    let r = s
        .raw()
        .post(format!("{}/api/v2/users/import{query}", s.base))
        .header("x-api-key", KEY)
        .header("content-type", "text/csv")
        .body(csv.to_string())
        .send()
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().unwrap_or(Value::Null))
}

/// Runs an import to its end; the job's status answer.
fn import(s: &Server, query: &str, csv: &str) -> Value {
    let (st, v) = upload(s, query, csv);
    assert_eq!(st, 202, "{v}");
    let id = v["jobId"].as_str().unwrap().to_string();
    let start = Instant::now();
    loop {
        let (_, v) = s.get(&format!("/api/v2/users/import/{id}"));
        if v["status"] == "done" || v["status"] == "failed" {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "job did not finish: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mixed_case_round_trip(db: &Db) {
    let s = Server::start(db);
    let dave = create(&s, json!({"username": "Salt-Dave", "email": "dave@example.com", "password": PW}));
    assert_eq!(dave["username"], "Salt-Dave", "stored exactly as given");
    let id = dave["_id"].as_str().unwrap().to_string();
    let (_, v) = s.get(&format!("/api/systemusers/{id}"));
    assert_eq!(v["username"], "Salt-Dave");
    // Unique whatever the case.
    let (st, v) = s.post("/api/systemusers", json!({"username": "salt-dave", "email": "other@example.com"}));
    assert_eq!(st, 409, "{v}");
    assert!(v["message"].as_str().unwrap().contains("username 'salt-dave'"), "{v}");
    // Equality filters and searches match case-insensitively and answer the name as stored.
    for f in ["username:$eq:salt-dave", "username:$eq:SALT-DAVE", "username:Salt-Dave"] {
        let (st, v) = s.get(&format!("/api/systemusers?filter={f}"));
        assert_eq!((st, usernames(&v)), (200, vec!["Salt-Dave".to_string()]), "{f}");
    }
    let (_, v) = s.get("/api/systemusers?search=salt");
    assert_eq!(usernames(&v), ["Salt-Dave"]);
    let (_, v) = s.post("/api/search/systemusers", json!({"filter": [{"username": "SALT-dave"}]}));
    assert_eq!(usernames(&v), ["Salt-Dave"]);
    // Sign-in matches case-insensitively.
    let mut b = Browser::new(&s.base);
    let (at, _) = b.login("salt-DAVE", PW);
    assert_eq!(at, "/portal/profile");
    // A rename that changes only the case is the same user; a new name starts with a letter.
    let (st, v) = s.put(&format!("/api/systemusers/{id}"), json!({"username": "SALT-Dave"}));
    assert_eq!((st, v["username"].as_str()), (200, Some("SALT-Dave")), "{v}");
    let (st, v) = s.post("/api/systemusers", json!({"username": "9lives", "email": "cat@example.com"}));
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["errors"][0]["field"], "username");
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("start with a letter"), "{v}");
    // A CSV import keeps the case it is given and finds the user again on a re-run.
    let csv = "Username,Email\nMary-Ann,mary@example.com\n";
    let job = import(&s, "", csv);
    assert_eq!(job["counts"]["created"], 1, "{job}");
    let (_, v) = s.get("/api/systemusers?filter=username:$eq:mary-ann");
    assert_eq!(usernames(&v), ["Mary-Ann"]);
    let job = import(&s, "", "Username,Email\nMARY-ANN,mary@example.com\n");
    assert_eq!(job["counts"]["exists"], 1, "the same user whatever the case: {job}");
}

#[test]
fn usernames_keep_their_case_and_match_case_insensitively() {
    for db in Db::all("mixed-case usernames on PostgreSQL") {
        mixed_case_round_trip(&db);
    }
}

fn password_endpoint(db: &Db) {
    let s = Server::start(db);
    let u = create(&s, json!({"username": "Pat", "email": "pat@example.com", "password": PW}));
    let id = u["_id"].as_str().unwrap().to_string();
    let path = format!("/api/systemusers/{id}/password");
    let mut b = Browser::new(&s.base);
    assert_eq!(b.login("pat", PW).0, "/portal/profile");
    let new = "a brand new passphrase for pat";
    let (st, v) = s.post(&path, json!({"password": new}));
    assert_eq!(st, 200, "{v}");
    assert_eq!((v["_id"].as_str(), v["activated"].as_bool()), (Some(id.as_str()), Some(true)), "{v}");
    assert!(v.get("password").is_none(), "a password is never returned");
    // The open session ended; the old password no longer signs in, the new one does.
    assert_eq!(b.get("/portal/profile").location.as_deref(), Some("/portal/login"));
    assert_ne!(Browser::new(&s.base).login("pat", PW).0, "/portal/profile");
    assert_eq!(Browser::new(&s.base).login("PAT", new).0, "/portal/profile");
    let (_, ev) = s.get(&format!("/api/v2/events?user_id={id}&action=password_set_by_admin"));
    assert_eq!(ev[0]["detail"]["revoked_sessions_and_tokens"], 1, "{ev}");
    assert_eq!(ev[0]["source"], "api");
    // The same rules as any password change, in JumpCloud's error shape.
    let (st, v) = s.post(&path, json!({"password": "short"}));
    assert_eq!((st, v["code"].as_i64(), v["status"].as_str()), (400, Some(400), Some("Bad Request")), "{v}");
    assert_eq!(v["errors"][0]["field"], "password");
    for (body, field) in [
        (json!({}), "password"),
        (json!({"password": 12}), "password"),
        (json!({"password": new, "username": "x"}), "username"),
        (json!(["x"]), "body"),
    ] {
        let (st, v) = s.post(&path, body.clone());
        assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some(field)), "{body}: {v}");
    }
    let (st, v) = s.post("/api/systemusers/0123456789abcdef01234567/password", json!({"password": new}));
    assert_eq!((st, v["code"].as_i64()), (404, Some(404)), "{v}");
    let (st, _) = s.req("POST", &path, None, Some(&json!({"password": new})));
    assert_eq!(st, 401);
    let (_, k) = s.post("/api/v2/apikeys", json!({"name": "ro", "role": "read-only"}));
    let (st, _) = s.req("POST", &path, k["key"].as_str(), Some(&json!({"password": new})));
    assert_eq!(st, 403, "a read-only key changes nothing");
    // A password an external directory holds is not Cairn's to set.
    let (st, v) = s.put(
        &format!("/api/systemusers/{id}"),
        json!({"restrictedFields": [{"field": "password", "type": "active_directory"}]}),
    );
    assert_eq!(st, 200, "{v}");
    let (st, v) = s.post(&path, json!({"password": "yet another passphrase here"}));
    assert_eq!(st, 409, "{v}");
    assert!(v["message"].as_str().unwrap().contains("external directory"), "{v}");
}

#[test]
fn an_admin_sets_a_password_through_the_v1_password_path() {
    for db in Db::all("POST /systemusers/{id}/password on PostgreSQL") {
        password_endpoint(&db);
    }
}

fn mfa_exclusion(db: &Db) {
    let s = Server::start(db);
    let u = create(
        &s,
        json!({"username": "mo", "email": "mo@example.com", "password": PW, "enable_user_portal_multifactor": true}),
    );
    let id = u["_id"].as_str().unwrap().to_string();
    assert_eq!(Browser::new(&s.base).login("mo", PW).0, "/portal/enroll", "MFA required, nothing enrolled");
    let until = (chrono::Utc::now() + chrono::Duration::days(7)).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let (st, v) =
        s.post(&format!("/api/systemusers/{id}/resetmfa"), json!({"exclusion": true, "exclusionUntil": until}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["user"]["mfa"], json!({"configured": false, "exclusion": true, "exclusionUntil": until}), "{v}");
    let (_, v) = s.get(&format!("/api/systemusers/{id}"));
    assert_eq!(v["mfa"]["exclusionUntil"], until, "visible on the user");
    assert_eq!(Browser::new(&s.base).login("mo", PW).0, "/portal/profile", "no TOTP asked during the exclusion");
    // exclusionDays, as JumpCloud's samples send it beside exclusionUntil.
    let (st, v) = s.post(&format!("/api/systemusers/{id}/resetmfa"), json!({"exclusion": true, "exclusionDays": 2}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["user"]["mfa"]["exclusion"], true);
    // Once the period is over the user must enrol.
    let (st, v) = s.put(
        &format!("/api/systemusers/{id}"),
        json!({"mfa": {"exclusion": true, "exclusionUntil": "2020-01-01T00:00:00.000Z"}}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(Browser::new(&s.base).login("mo", PW).0, "/portal/enroll", "the exclusion is over");
    // A plain reset ends any exclusion.
    let (_, v) = s.post(&format!("/api/systemusers/{id}/resetmfa"), json!({}));
    assert_eq!(v["user"]["mfa"], json!({"configured": false, "exclusion": false}), "{v}");
    for (body, field) in [
        (json!({"exclusion": true}), "exclusionUntil"),
        (json!({"exclusion": true, "exclusionUntil": "2001-01-01T00:00:00Z"}), "exclusionUntil"),
        (json!({"exclusion": true, "exclusionUntil": "next week"}), "exclusionUntil"),
        (json!({"exclusion": true, "exclusionDays": -1}), "exclusionDays"),
        (json!({"exclusion": 1}), "exclusion"),
        (json!({"exclude": true}), "exclude"),
    ] {
        let (st, v) = s.post(&format!("/api/systemusers/{id}/resetmfa"), body.clone());
        assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some(field)), "{body}: {v}");
    }
    let (_, ev) = s.get(&format!("/api/v2/events?user_id={id}&action=mfa_reset"));
    assert_eq!(ev.as_array().unwrap().len(), 3, "one event per reset, none for refused bodies: {ev}");
}

#[test]
fn resetmfa_honours_an_exclusion_period_then_enrolment_is_required() {
    for db in Db::all("resetmfa exclusion on PostgreSQL") {
        mfa_exclusion(&db);
    }
}

fn key_only_updates(db: &Db) {
    let s = Server::start(db);
    let job = import(
        &s,
        "",
        "Username,Email,employeeIdentifier\nAnna,anna@example.com,E-1\nben,ben@example.com,E-2\ncy,cy@example.com,E-3\n",
    );
    assert_eq!(job["counts"]["created"], 3, "{job}");
    let get = |name: &str| s.get(&format!("/api/systemusers?filter=username:$eq:{name}")).1["results"][0].clone();
    // The key column plus the columns to change: no Email needed to update by username.
    let job = import(&s, "?update=true", "Username,department\nanna,Ops\nnobody,Ops\n");
    assert_eq!((job["status"].as_str(), job["counts"]["updated"].as_i64()), (Some("done"), Some(1)), "{job}");
    assert_eq!(get("Anna")["department"], "Ops");
    assert_eq!(get("Anna")["email"], "anna@example.com", "the missing column changes nothing");
    let (_, errs) = s.get(&format!("/api/v2/users/import/{}/results?outcome=error", job["jobId"].as_str().unwrap()));
    assert!(errs[0]["message"].as_str().unwrap().contains("no user with username 'nobody'"), "{errs}");
    // By e-mail when there is no Username column, by employee id when there is neither.
    let job = import(&s, "?update=true", "Email,jobTitle\nBEN@example.com,Builder\n");
    assert_eq!(job["counts"]["updated"], 1, "{job}");
    assert_eq!(get("ben")["jobTitle"], "Builder");
    let job = import(&s, "?update=true", "employeeIdentifier,location\nE-3,Lisbon\n");
    assert_eq!(job["counts"]["updated"], 1, "{job}");
    assert_eq!(get("cy")["location"], "Lisbon");
    // A second run changes nothing.
    let job = import(&s, "?update=true", "employeeIdentifier,location\nE-3,Lisbon\n");
    assert_eq!((job["counts"]["updated"].as_i64(), job["counts"]["exists"].as_i64()), (Some(0), Some(1)), "{job}");
    // A file with no key column fails whole, saying so; create mode still needs both.
    let job = import(&s, "?update=true", "department\nOps\n");
    assert_eq!(job["status"], "failed");
    assert!(job["message"].as_str().unwrap().contains("no key column"), "{job}");
    let job = import(&s, "", "Username,department\ndee,Ops\n");
    assert_eq!(job["status"], "failed");
    assert!(job["message"].as_str().unwrap().contains("no Email column"), "{job}");
}

#[test]
fn an_update_file_needs_only_its_key_column_and_the_columns_to_change() {
    for db in Db::all("key-only update CSV on PostgreSQL") {
        key_only_updates(&db);
    }
}

fn paged_results(db: &Db) {
    let s = Server::start(db);
    let mut csv = String::from("Username,Email\n");
    for i in 0..25 {
        csv.push_str(&format!("u{i},u{i}@example.com\n"));
    }
    csv.push_str("u3,dup@example.com\n");
    let job = import(&s, "", &csv);
    assert!(job["results"].is_string() && job.get("resultCount").is_none(), "counts and progress only: {job}");
    assert_eq!((job["processed"].as_i64(), job["total"].as_i64()), (Some(26), Some(26)));
    let id = job["jobId"].as_str().unwrap();
    let page = |q: &str| {
        let r = s
            .raw()
            .get(format!("{}/api/v2/users/import/{id}/results{q}", s.base))
            .header("x-api-key", KEY)
            .send()
            .unwrap();
        let total = r.headers()["x-total-count"].to_str().unwrap().parse::<i64>().unwrap();
        (total, r.json::<Value>().unwrap())
    };
    let (total, first) = page("");
    assert_eq!((total, first.as_array().unwrap().len()), (26, 10), "JumpCloud's default page of 10");
    assert_eq!(first[0]["row"], 2, "the header is row 1");
    let (_, next) = page("?limit=10&skip=20");
    assert_eq!(next.as_array().unwrap().len(), 6);
    let (errors, e) = page("?outcome=error");
    assert_eq!((errors, e[0]["row"].as_i64()), (1, Some(27)));
    assert_eq!((e[0]["status"].as_str(), e[0]["meta"]["outcome"].as_str()), (Some("failed"), Some("error")));
    // The JSON bulk endpoint pages the same way, in the same shape.
    let (st, v) = s.get(&format!("/api/v2/bulk/users/{id}/results?limit=2&skip=1"));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["id"], format!("{id}-3"));
    assert_eq!(v[0]["persistedFields"]["username"], "u1");
}

#[test]
fn import_results_are_paged_and_the_status_carries_counts_only() {
    for db in Db::all("paged import results on PostgreSQL") {
        paged_results(&db);
    }
}

/// A configuration-management client: makes the directory hold these users, groups,
/// memberships and grants, finding everything by name as JumpCloud integrations do, and
/// changing only what differs. Returns how many changes it sent.
fn ensure(s: &Server, users: &[(&str, &str, &str)], groups: &[(&str, &[&str])], absent: &[&str]) -> usize {
    let mut changes = 0;
    let mut ids = std::collections::HashMap::new();
    for (name, email, dept) in users {
        let (st, v) = s.get(&format!("/api/systemusers?filter=username:eq:{name}&limit=2"));
        assert_eq!(st, 200, "{v}");
        match v["totalCount"].as_i64().unwrap() {
            0 => {
                let u = create(s, json!({"username": name, "email": email, "department": dept}));
                changes += 1;
                ids.insert(name.to_string(), u["_id"].as_str().unwrap().to_string());
            }
            1 => {
                let u = &v["results"][0];
                assert_eq!(u["username"], *name, "found by exact name");
                let id = u["_id"].as_str().unwrap().to_string();
                if u["email"] != *email || u["department"] != *dept {
                    let (st, v) = s.put(&format!("/api/systemusers/{id}"), json!({"email": email, "department": dept}));
                    assert_eq!(st, 200, "{v}");
                    changes += 1;
                }
                ids.insert(name.to_string(), id);
            }
            n => panic!("{n} users named {name}"),
        }
    }
    let (_, ldap) = s.get("/api/v2/ldapservers");
    let ldap = ldap[0]["id"].as_str().unwrap().to_string();
    for (group, members) in groups {
        let (st, v) = s.get(&format!("/api/v2/usergroups?filter=name:eq:{group}"));
        assert_eq!(st, 200, "{v}");
        let gid = match v.as_array().unwrap().first() {
            Some(g) => g["id"].as_str().unwrap().to_string(),
            None => {
                let (st, g) = s.post("/api/v2/usergroups", json!({"name": group}));
                assert_eq!(st, 201, "{g}");
                changes += 1;
                g["id"].as_str().unwrap().to_string()
            }
        };
        let mut have = vec![];
        for skip in (0..).step_by(100) {
            let (_, page) = s.get(&format!("/api/v2/usergroups/{gid}/members?limit=100&skip={skip}"));
            let page = page.as_array().unwrap().clone();
            have.extend(page.iter().map(|m| m["to"]["id"].as_str().unwrap().to_string()));
            if page.len() < 100 {
                break;
            }
        }
        for m in *members {
            let uid = &ids[*m];
            if !have.contains(uid) {
                let (st, v) = s.post(
                    &format!("/api/v2/usergroups/{gid}/members"),
                    json!({"op": "add", "type": "user", "id": uid}),
                );
                assert_eq!(st, 204, "{v}");
                changes += 1;
            }
        }
        let (st, grants) = s.get(&format!("/api/v2/usergroups/{gid}/associations?targets=ldap_server"));
        assert_eq!(st, 200, "{grants}");
        if !grants.as_array().unwrap().iter().any(|g| g["to"]["id"] == ldap.as_str()) {
            let (st, v) = s.post(
                &format!("/api/v2/usergroups/{gid}/associations"),
                json!({"op": "add", "type": "ldap_server", "id": ldap}),
            );
            assert_eq!(st, 204, "{v}");
            changes += 1;
        }
    }
    for name in absent {
        let (_, v) = s.get(&format!("/api/systemusers?filter=username:eq:{name}"));
        for u in v["results"].as_array().unwrap() {
            assert_eq!(s.delete(&format!("/api/systemusers/{}", u["_id"].as_str().unwrap())).0, 200);
            changes += 1;
        }
    }
    changes
}

fn ensure_present_twice(db: &Db) {
    let s = Server::start(db);
    create(&s, json!({"username": "Leaver", "email": "leaver@example.com"}));
    create(&s, json!({"username": "Salt-Dave", "email": "dave@example.com", "department": "Old"}));
    let users = [
        ("Salt-Dave", "dave@example.com", "Ops"),
        ("ada", "ada@example.com", "R&D"),
        ("Bob.B", "bob@example.com", "Ops"),
    ];
    let groups: [(&str, &[&str]); 2] = [("Engineering", &["Salt-Dave", "ada"]), ("ops", &["Bob.B"])];
    let first = ensure(&s, &users, &groups, &["leaver"]);
    // Dave's department, two users, two groups, three memberships, two grants, one deletion.
    assert_eq!(first, 11);
    let (_, events) = s.get("/api/v2/events?limit=1000");
    let second = ensure(&s, &users, &groups, &["leaver"]);
    assert_eq!(second, 0, "the second run finds everything as it should be and changes nothing");
    let (_, after) = s.get("/api/v2/events?limit=1000");
    assert_eq!(after.as_array().unwrap().len(), events.as_array().unwrap().len(), "no event either");
    let (_, v) = s.get("/api/systemusers?sort=username");
    assert_eq!(usernames(&v), ["ada", "Bob.B", "Salt-Dave"]);
}

#[test]
fn a_client_ensuring_users_and_groups_by_name_changes_nothing_the_second_time() {
    for db in Db::all("client-style ensure-present on PostgreSQL") {
        ensure_present_twice(&db);
    }
}

fn filters_cairn_cannot_read(db: &Db) {
    let s = Server::start(db);
    for (u, d) in [("ann", "Ops"), ("Bea", "IT"), ("cy", "Sales")] {
        create(&s, json!({"username": u, "email": format!("{u}@example.com"), "department": d}));
    }
    // Operators with and without `$`.
    for (f, want) in [
        ("department:eq:Ops", vec!["ann"]),
        ("department:$ne:Ops", vec!["Bea", "cy"]),
        ("department:ne:Ops", vec!["Bea", "cy"]),
        ("username:gt:bea", vec!["cy"]),
        ("username:$lte:BEA", vec!["ann", "Bea"]),
    ] {
        let (st, v) = s.get(&format!("/api/systemusers?filter={f}&sort=username"));
        assert_eq!((st, usernames(&v)), (200, want.iter().map(|s| s.to_string()).collect::<Vec<_>>()), "{f}");
    }
    let (_, v) = s.get("/api/systemusers?filter[or][0]=username:eq:ann&filter[or][1]=username:eq:cy&sort=-username");
    assert_eq!(usernames(&v), ["cy", "ann"], "descending");
    // What Cairn cannot read is a 400 saying what is wrong, never an empty 200.
    for f in [
        "username:like:ann",
        "username:in:ann|cy",
        "username:$regex:a",
        "username:eq",
        "username",
        "shoeSize:eq:9",
        "addresses:eq:x",
    ] {
        let (st, v) = s.get(&format!("/api/systemusers?filter={}", f.replace('|', "%7C")));
        assert_eq!((st, v["code"].as_i64(), v["status"].as_str()), (400, Some(400), Some("Bad Request")), "{f}: {v}");
        assert!(v["errors"][0]["field"].as_str().unwrap().starts_with("filter"), "{f}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    let (st, v) = s.get("/api/systemusers?sort=shoeSize");
    assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some("sort")), "{v}");
    // v2 groups: sort both ways, filter on more than the name, refuse what is not understood.
    for g in ["Alpha", "beta", "Gamma"] {
        let (st, _) = s.post("/api/v2/usergroups", json!({"name": g, "description": format!("{g} team")}));
        assert_eq!(st, 201);
    }
    let names =
        |v: &Value| v.as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(names(&s.get("/api/v2/usergroups?sort=-name").1), ["Gamma", "beta", "Alpha"]);
    assert_eq!(names(&s.get("/api/v2/usergroups?sort=name").1), ["Alpha", "beta", "Gamma"]);
    assert_eq!(names(&s.get("/api/v2/usergroups?filter=name:eq:BETA").1), ["beta"]);
    assert_eq!(names(&s.get("/api/v2/usergroups?filter=name:$ne:beta&sort=-name").1), ["Gamma", "Alpha"]);
    assert_eq!(names(&s.get("/api/v2/usergroups?filter=name:in:alpha%7Cgamma").1), ["Alpha", "Gamma"]);
    assert_eq!(
        names(&s.get("/api/v2/usergroups?filter=description:search:TEAM&filter=name:gt:b").1),
        ["beta", "Gamma"]
    );
    for q in ["filter=name:like:a", "filter=owner:eq:x", "filter=name:Alpha", "sort=-members"] {
        let (st, v) = s.get(&format!("/api/v2/usergroups?{q}"));
        assert_eq!((st, v["code"].as_i64()), (400, Some(400)), "{q}: {v}");
    }
}

#[test]
fn filters_take_operators_with_or_without_the_dollar_and_what_cairn_cannot_read_is_a_400() {
    for db in Db::all("v1 and v2 filters on PostgreSQL") {
        filters_cairn_cannot_read(&db);
    }
}

#[test]
fn the_openapi_document_lists_every_mounted_route_and_only_those() {
    let s = Server::start(&Db::Sqlite);
    let (st, doc) = s.req("GET", "/api/openapi.json", None, None);
    assert_eq!(st, 200);
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/systemusers/{id}/password",
        "/v2/serviceaccounts",
        "/oauth2/token",
        "/v2/users/import/{id}/results",
        "/v2/usergroups/{id}/associations",
        "/openapi.json",
    ] {
        assert!(paths.contains_key(p), "{p} is missing");
    }
    assert!(doc["paths"]["/v2/usergroups"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "sort"));
    let id = "0123456789abcdef01234567";
    let mut ops = 0;
    for (path, item) in paths {
        let prefix = if path == "/oauth2/token" { "" } else { "/api" };
        let url = format!("{prefix}{}", path.replace("{id}", id));
        for (method, op) in item.as_object().unwrap() {
            if !["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            assert!(op["operationId"].is_string() && op["responses"].is_object(), "{method} {path}");
            let (st, v) = s.req(&method.to_uppercase(), &url, Some(KEY), Some(&json!({})));
            assert_ne!(st, 405, "{method} {path} is documented but not mounted");
            assert!(v["message"] != "no such API endpoint", "{method} {path} is documented but not mounted: {v}");
            if !["/openapi.json", "/oauth2/token"].contains(&path.as_str()) {
                let (st, _) = s.req(&method.to_uppercase(), &url, None, Some(&json!({})));
                assert_eq!(st, 401, "{method} {path} answers without an API key");
            }
            ops += 1;
        }
    }
    assert!(ops >= 55, "{ops} operations");
    // And nothing undocumented answers: an unknown path is the fallback.
    let (st, v) = s.get("/api/v2/nothing-here");
    assert_eq!((st, v["message"].as_str()), (404, Some("no such API endpoint")));
}
