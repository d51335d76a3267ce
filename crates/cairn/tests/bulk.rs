//! End-to-end bulk work: CSV import with row-level results, dry run, update mode, re-runs
//! and a crash mid-import; JSON bulk jobs; streamed export.

mod common;

use std::time::{Duration, Instant};

use common::{Db, Server, KEY};
use serde_json::{json, Value};

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

fn wait_job(s: &Server, id: &str) -> Value {
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

fn import(s: &Server, query: &str, csv: &str) -> Value {
    let (st, v) = upload(s, query, csv);
    assert_eq!(st, 202, "{v}");
    let mut job = wait_job(s, v["jobId"].as_str().unwrap());
    assert!(job.get("results").is_some_and(Value::is_string), "the status carries no results, only where they are");
    // Its results, paged (this file's jobs are small).
    let (st, results) = s.get(&format!("/api/v2/users/import/{}/results?limit=1000", v["jobId"].as_str().unwrap()));
    assert_eq!(st, 200, "{results}");
    job["results"] = results;
    job
}

fn result(job: &Value, row: i64) -> Value {
    job["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["row"] == row)
        .cloned()
        .unwrap_or_else(|| panic!("no row {row} in {job}"))
}

fn count(s: &Server) -> i64 {
    s.get("/api/systemusers?limit=1").1["totalCount"].as_i64().unwrap()
}

#[test]
fn every_kind_of_bad_record_is_reported_on_its_row_and_the_rest_are_imported() {
    for db in Db::all("CSV import row results on PostgreSQL") {
        let s = Server::start(&db);
        s.post("/api/systemusers", json!({"username": "old", "email": "old@example.com"}));
        s.post("/api/v2/usergroups", json!({"name": "Engineering"}));
        let csv =
            "\u{feff}Username,Email,FirstName,Description,unix_uid,Engineering,manager,State,Password,Shoe Size\r\n\
        ada,ada@example.com,Ada,\"multi\r\nline, \"\"quoted\"\"\",1001,true,,,,42\r\n\
        ,nouser@example.com,No,,,,,,,\r\n\
        bad,not-an-email,Bad,,,,,,,\r\n\
        ada,ada2@example.com,Dup,,,,,,,\r\n\
        eve,ADA@example.com,Eve,,,,,,,\r\n\
        old,old@example.com,Old,,,,,,,\r\n\
        uid,uid@example.com,Uid,,many,,,,,\r\n\
        grp,grp@example.com,Grp,,,maybe,,,,\r\n\
        mgr,mgr@example.com,Mgr,,,,nobody,,,\r\n\
        st,st@example.com,St,,,,,SLEEPING,,\r\n\
        pw,pw@example.com,Pw,,,,,,password,\r\n\
        bob,bob@example.com,Bob,,,yes,ada,staged,lantern orchard seventeen,\r\n";
        let job = import(&s, "", csv);
        assert_eq!(job["status"], "done", "{job}");
        assert_eq!(job["counts"], json!({"created": 2, "updated": 0, "exists": 1, "error": 9}), "{job}");
        assert!(job["message"].as_str().unwrap().contains("Shoe Size"), "unknown columns are reported: {job}");
        assert_eq!(result(&job, 2)["outcome"], "created");
        assert_eq!(result(&job, 2)["username"], "ada");
        let expect = [
            (3, "column Username"),
            (4, "column Email"),
            (5, "duplicate username 'ada': already in row 2"),
            (6, "duplicate email 'ada@example.com': already in row 2"),
            (8, "column unix_uid"),
            (9, "column Engineering"),
            (10, "column manager: no user 'nobody'"),
            (11, "column State"),
            (12, "column Password"),
        ];
        for (row, text) in expect {
            let r = result(&job, row);
            assert_eq!(r["outcome"], "error", "row {row}: {r}");
            assert!(r["message"].as_str().unwrap().contains(text), "row {row}: {r}");
        }
        assert_eq!(result(&job, 7)["outcome"], "exists");
        assert_eq!(result(&job, 13)["outcome"], "created", "records after bad ones still import");

        let (_, ada) = s.get("/api/systemusers?filter=username:ada");
        let ada = &ada["results"][0];
        assert_eq!(ada["description"], "multi\r\nline, \"quoted\"");
        assert_eq!(ada["unix_uid"], 1001);
        assert_eq!(ada["creationSource"], "csv");
        let (_, bob) = s.get("/api/systemusers?filter=username:bob");
        let bob = &bob["results"][0];
        assert_eq!((bob["state"].as_str(), bob["activated"].as_bool()), (Some("STAGED"), Some(true)));
        assert_eq!(bob["manager"], ada["_id"], "manager by username");
        let (_, groups) = s.get(&format!("/api/v2/users/{}/memberof", bob["_id"].as_str().unwrap()));
        assert_eq!(groups.as_array().unwrap().len(), 1, "group column");
        let (_, f) = s.get("/api/v2/users/import/nope");
        assert_eq!(f["code"], 404);
        let r = s
            .raw()
            .get(format!(
                "{}/api/v2/users/import/{}/results?outcome=error&limit=2",
                s.base,
                job["jobId"].as_str().unwrap()
            ))
            .header("x-api-key", KEY)
            .send()
            .unwrap();
        assert_eq!(r.headers()["x-total-count"], "9");
        let errs: Value = r.json().unwrap();
        assert_eq!(errs.as_array().unwrap().len(), 2);
        assert!(errs.as_array().unwrap().iter().all(|e| e["outcome"] == "error" && e["status"] == "failed"), "{errs}");
        let (st, v) = s.get(&format!("/api/v2/users/import/{}/results?outcome=maybe", job["jobId"].as_str().unwrap()));
        assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some("outcome")), "{v}");
        let (st, v) = s.get(&format!("/api/v2/users/import/{}/results?limit=1001", job["jobId"].as_str().unwrap()));
        assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some("limit")), "{v}");
        let (st, _) = s.get("/api/v2/users/import/0123456789abcdef01234567/results");
        assert_eq!(st, 404);

        // Keys another user already has in the directory (not in this file).
        s.post("/api/systemusers", json!({"username": "emp", "email": "emp@example.com", "employeeIdentifier": "E-1"}));
        let taken = import(&s, "", "Username,Email,employeeIdentifier\nnewbie,old@example.com,\nother,other@example.com,E-1\nfine,fine@example.com,E-2\n");
        assert_eq!(taken["counts"], json!({"created": 1, "updated": 0, "exists": 0, "error": 2}), "{taken}");
        assert_eq!(result(&taken, 2)["message"], "column Email: 'old@example.com' is already used by old");
        assert_eq!(result(&taken, 3)["message"], "column employeeIdentifier: 'E-1' is already used by emp");
        assert_eq!(result(&taken, 4)["outcome"], "created");
    }
}

#[test]
fn dry_run_changes_nothing_reruns_converge_and_update_mode_never_creates() {
    for db in Db::all("CSV import re-runs and update mode on PostgreSQL") {
        let s = Server::start(&db);
        let csv = "Username,Email,Department\nada,ada@example.com,R&D\nbob,bob@example.com,Sales\n";
        let dry = import(&s, "?dry_run=true", csv);
        assert_eq!(dry["counts"]["created"], 2);
        assert_eq!(dry["dryRun"], true);
        assert_eq!(count(&s), 0, "a dry run changes nothing");
        let (_, evs) = s.get("/api/v2/events?action=user_create");
        assert_eq!(evs, json!([]));

        let first = import(&s, "", csv);
        assert_eq!(first["counts"]["created"], 2);
        let again = import(&s, "", csv);
        assert_eq!(again["counts"], json!({"created": 0, "updated": 0, "exists": 2, "error": 0}));
        assert_eq!(count(&s), 2);

        let upd = "Username,Email,Department\nada,,Ops\nzed,zed@example.com,IT\nbob,,\n";
        let up = import(&s, "?update=true", upd);
        assert_eq!(up["counts"], json!({"created": 0, "updated": 1, "exists": 1, "error": 1}), "{up}");
        assert!(result(&up, 3)["message"].as_str().unwrap().contains("never creates"));
        assert_eq!(count(&s), 2);
        let (_, ada) = s.get("/api/systemusers?filter=username:ada");
        assert_eq!(ada["results"][0]["department"], "Ops");
        assert_eq!(ada["results"][0]["email"], "ada@example.com", "empty cells leave fields alone");

        // One batch mixing plain field updates (written together) with records that take the
        // one-by-one path (an e-mail, a state, a group), one of which fails.
        s.post("/api/v2/usergroups", json!({"name": "Engineering"}));
        import(&s, "", "Username,Email\ncyd,cyd@example.com\ndee,dee@example.com\n");
        let mixed = "Username,Email,Department,State,Engineering\n\
            ada,,R&D,,\n\
            bob,ada@example.com,Marketing,,\n\
            cyd,cyd2@example.com,Ops,,\n\
            dee,,Ops,SUSPENDED,true\n\
            bob,,Sales,,\n";
        let up = import(&s, "?update=true", mixed);
        assert_eq!(up["counts"], json!({"created": 0, "updated": 3, "exists": 0, "error": 2}), "{up}");
        assert_eq!(result(&up, 2)["outcome"], "updated");
        assert!(result(&up, 3)["message"].as_str().unwrap().contains("already used by ada"), "{up}");
        assert!(result(&up, 6)["message"].as_str().unwrap().contains("duplicate username 'bob'"), "{up}");
        let user = |name: &str| s.get(&format!("/api/systemusers?filter=username:{name}")).1["results"][0].clone();
        assert_eq!(
            (user("ada")["department"].as_str(), user("bob")["department"].as_str()),
            (Some("R&D"), Some("Sales")),
            "a failed record changes nothing"
        );
        assert_eq!(
            (user("cyd")["email"].as_str(), user("cyd")["department"].as_str()),
            (Some("cyd2@example.com"), Some("Ops"))
        );
        assert_eq!(
            (user("dee")["state"].as_str(), user("dee")["department"].as_str()),
            (Some("SUSPENDED"), Some("Ops"))
        );
        let dee = user("dee")["_id"].as_str().unwrap().to_string();
        assert_eq!(s.get(&format!("/api/v2/users/{dee}/memberof")).1.as_array().unwrap().len(), 1);
        let ada_id = user("ada")["_id"].as_str().unwrap().to_string();
        let (_, evs) = s.get(&format!("/api/v2/events?user_id={ada_id}&action=user_update"));
        assert_eq!(evs[0]["changes"], json!([{"field": "department", "old": "Ops", "new": "R&D"}]), "{evs}");
        let again = import(&s, "?update=true", "Username,Email,Department\nada,,R&D\n");
        assert_eq!(again["counts"]["exists"], 1, "an update that changes nothing is `exists`");
    }
}

#[test]
fn bad_files_and_limits_are_refused_whole() {
    let s = Server::start(&Db::Sqlite);
    let (st, v) = upload(&s, "", "");
    assert_eq!(st, 400, "{v}");
    let job = import(&s, "", "Name,Mail\nx,y\n");
    assert_eq!(job["status"], "failed");
    assert!(job["message"].as_str().unwrap().contains("Username"), "{job}");
    let long = format!("Username,Email,Description\nada,ada@example.com,{}\n", "x".repeat(70_000));
    let (st, v) = upload(&s, "", &long);
    assert_eq!(st, 400);
    assert!(v["message"].as_str().unwrap().contains("line 2"), "{v}");
    let (st, v) = upload(&s, "?dry_run=perhaps", "Username,Email\n");
    assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some("dry_run")));
}

#[test]
fn a_crash_in_the_middle_of_a_large_import_then_a_rerun_gives_exactly_one_of_each() {
    let mut s = Server::start(&Db::Sqlite);
    // Staged, as a typical onboarding import is: no mail to write for 20,000 users.
    s.put("/api/organizations", json!({"settings": {"newSystemUserStateDefaults": {"csvImport": "STAGED"}}}));
    let mut csv = String::from("Username,Email,FirstName,LastName,Department\n");
    let n = 40_000;
    for i in 0..n {
        csv.push_str(&format!("user{i:05},user{i:05}@example.com,First{i},Last{i},Dept {}\n", i % 40));
    }
    let (st, v) = upload(&s, "", &csv);
    assert_eq!(st, 202);
    let id = v["jobId"].as_str().unwrap().to_string();
    let start = Instant::now();
    loop {
        let (_, j) = s.get(&format!("/api/v2/users/import/{id}?limit=1"));
        if j["processed"].as_i64().unwrap_or(0) > 0 {
            assert!(j["processed"].as_i64().unwrap() < n, "too fast to interrupt: {j}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(5));
    }
    s.kill();
    s.restart();
    let (_, j) = s.get(&format!("/api/v2/users/import/{id}?limit=1"));
    assert_eq!((j["status"].as_str(), j["interrupted"].as_bool()), (Some("failed"), Some(true)), "{j}");
    let partial = count(&s);
    assert!(partial > 0 && partial < n, "{partial}");

    let rerun = import(&s, "", &csv);
    assert_eq!(rerun["counts"]["error"], 0);
    assert_eq!(rerun["counts"]["exists"].as_i64().unwrap() + rerun["counts"]["created"].as_i64().unwrap(), n);
    assert_eq!(count(&s), n, "exactly one of each");
    let (_, events) = s.get("/api/v2/events?action=user_create&limit=1");
    let r = s
        .raw()
        .get(format!("{}/api/v2/events?action=user_create&limit=1", s.base))
        .header("x-api-key", KEY)
        .send()
        .unwrap();
    let total: i64 = r.headers()["x-total-count"].to_str().unwrap().parse().unwrap();
    assert_eq!(total, n, "one creation event per user, none for a half-written one: {events}");
    let (_, last) = s.get("/api/systemusers?filter=username:user39999");
    assert_eq!(
        (last["results"][0]["firstname"].as_str(), last["results"][0]["department"].as_str()),
        (Some("First39999"), Some("Dept 39"))
    );
}

fn bulk(s: &Server, source: Option<&str>, body: Value) -> (u16, Value) {
    let mut r = s.raw().post(format!("{}/api/v2/bulk/users", s.base)).header("x-api-key", KEY).json(&body);
    if let Some(src) = source {
        r = r.header("creation-source", src);
    }
    let r = r.send().unwrap();
    let st = r.status().as_u16();
    (st, r.json().unwrap())
}

fn wait_bulk(s: &Server, job: &str, n: usize) -> Value {
    let start = Instant::now();
    loop {
        let (_, v) = s.get(&format!("/api/v2/bulk/users/{job}/results?limit=1000"));
        if v.as_array().map(|a| a.len()).unwrap_or(0) >= n {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bulk_jobs_pick_the_default_state_by_creation_source() {
    let s = Server::start(&Db::Sqlite);
    s.put(
        "/api/organizations",
        json!({"settings": {"newSystemUserStateDefaults": {"csvImport": "STAGED", "applicationImport": "ACTIVATED"}}}),
    );
    let (st, v) =
        bulk(&s, None, json!([{"username": "a1", "email": "a1@example.com"}, {"username": "bad", "email": "nope"}]));
    assert_eq!(st, 201, "{v}");
    let res = wait_bulk(&s, v["jobId"].as_str().unwrap(), 2);
    assert_eq!(res[0]["status"], "finished");
    assert_eq!(res[1]["status"], "failed");
    assert!(res[1]["statusMsg"].as_str().unwrap().contains("email"));
    let (st, v) = bulk(&s, Some("jumpcloud:workday"), json!([{"username": "w1", "email": "w1@example.com"}]));
    assert_eq!(st, 201);
    wait_bulk(&s, v["jobId"].as_str().unwrap(), 1);
    let (st, v) = bulk(&s, Some("not a source"), json!([{"username": "x", "email": "x@example.com"}]));
    assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some("creation-source")));
    let (_, a1) = s.get("/api/systemusers?filter=username:a1");
    assert_eq!(a1["results"][0]["state"], "STAGED", "jumpcloud:bulk → csvImport default");
    let (_, w1) = s.get("/api/systemusers?filter=username:w1");
    assert_eq!(w1["results"][0]["state"], "ACTIVATED", "other sources → applicationImport default");

    let id = a1["results"][0]["_id"].as_str().unwrap();
    let r = s
        .raw()
        .patch(format!("{}/api/v2/bulk/users", s.base))
        .header("x-api-key", KEY)
        .json(&json!([{"id": id, "department": "Ops"}, {"department": "no id"}]))
        .send()
        .unwrap();
    let v: Value = r.json().unwrap();
    let res = wait_bulk(&s, v["jobId"].as_str().unwrap(), 2);
    assert_eq!((res[0]["status"].as_str(), res[1]["status"].as_str()), (Some("finished"), Some("failed")));
    assert_eq!(s.get(&format!("/api/systemusers/{id}")).1["department"], "Ops");
}

#[test]
fn exports_stream_every_match_safely() {
    let s = Server::start(&Db::Sqlite);
    for (u, d, f) in [
        ("ada", "R&D", "=HYPERLINK(\"http://evil\")"),
        ("bob", "Sales", "+1 555"),
        ("cy", "Sales", "@SUM(1)"),
        ("dee", "IT", "Dee"),
    ] {
        let (st, _) = s.post("/api/systemusers", json!({"username": u, "email": format!("{u}@example.com"), "department": d, "firstname": f, "password": "lantern orchard seventeen"}));
        assert_eq!(st, 200);
    }
    let r = s.raw().get(format!("{}/api/v2/users/export?format=csv", s.base)).header("x-api-key", KEY).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let text = r.text().unwrap();
    assert_eq!(text.lines().count(), 5, "header + every user, not a page: {text}");
    assert!(text.contains("'=HYPERLINK") && text.contains("'+1 555") && text.contains("'@SUM"), "{text}");
    assert!(!text.contains(",=HYPERLINK") && !text.contains("argon2"), "no formula, no hash: {text}");

    let r = s.raw().get(format!("{}/api/v2/users/export?format=json&filter=department:$eq:Sales&sort=-username&fields=username%20department", s.base)).header("x-api-key", KEY).send().unwrap();
    let v: Value = r.json().unwrap();
    assert_eq!(
        v,
        json!([{"_id": v[0]["_id"], "username": "cy", "department": "Sales"}, {"_id": v[1]["_id"], "username": "bob", "department": "Sales"}])
    );
    let (st, v) = s.get("/api/v2/users/export?format=xml");
    assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some("format")));
}

#[test]
fn the_command_line_imports_with_a_summary_and_exports() {
    let s = Server::start(&Db::Sqlite);
    let file = s.data_dir().parent().unwrap().join("people.csv");
    std::fs::write(&file, "Username,Email,FirstName\nada,ada@example.com,Ada\nbad,bad,Bad\n").unwrap();
    let out = s.command().args(["users", "import", file.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "errors give a non-zero status: {text}");
    assert!(
        text.contains("created         1") && text.contains("error           1") && text.contains("column Email"),
        "{text}"
    );
    let out =
        s.command().args(["users", "export", "--format", "json", "--fields", "username firstname"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["username"], "ada");
    let out = s.command().args(["users", "import", "/nonexistent.csv"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.starts_with("error: cannot read /nonexistent.csv"), "{err}");
}
