//! End-to-end lifecycle: activate and suspend now, bulk actions, scheduled state changes that
//! survive a kill -9 and fire once, also with two servers on one PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use common::{Db, Server};
use serde_json::{json, Value};

fn staged(s: &Server, name: &str) -> String {
    let (st, v) = s
        .post("/api/systemusers", json!({"username": name, "email": format!("{name}@example.com"), "state": "STAGED"}));
    assert_eq!(st, 200, "{v}");
    v["_id"].as_str().unwrap().to_string()
}

/// A server whose clock the test moves through a file (`CAIRN_TEST_CLOCK_FILE`).
fn with_clock(db: &Db, clock: &std::path::Path) -> Server {
    Server::start_with(
        db,
        &[("CAIRN_BOOTSTRAP_API_KEY", common::KEY), ("CAIRN_TEST_CLOCK_FILE", clock.to_str().unwrap())],
    )
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

fn in_an_hour() -> String {
    (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339()
}

#[test]
fn activate_and_suspend_now_with_the_email_flag() {
    let s = Server::start(&Db::Sqlite);
    let id = staged(&s, "ada");
    let (st, v) = s.post(&format!("/api/systemusers/{id}/state/activate"), json!({"email": "alt@example.com"}));
    assert_eq!(st, 200, "{v}");
    assert_eq!((v["outcome"].as_str(), v["user"]["state"].as_str()), (Some("done"), Some("ACTIVATED")));
    let (_, v) = s.post(&format!("/api/systemusers/{id}/state/activate"), json!({}));
    assert_eq!(v["outcome"], "skipped", "a no-op is reported as skipped");
    let (st, v) = s.post(&format!("/api/systemusers/{id}/state/activate"), json!({"email": 12}));
    assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some("email")));
    let (_, evs) = s.get(&format!("/api/v2/events?user_id={id}&action=user_activate"));
    assert_eq!(evs[0]["detail"]["email"], json!({"mail": "to", "to": "alt@example.com"}));

    // An empty body (curl -X POST with no data) is the default flag.
    let r = s
        .raw()
        .post(format!("{}/api/systemusers/{id}/state/suspend", s.base))
        .header("x-api-key", common::KEY)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, v) = s.get(&format!("/api/systemusers/{id}"));
    assert_eq!((v["state"].as_str(), v["suspended"].as_bool()), (Some("SUSPENDED"), Some(true)));
    let (st, v) = s.put(&format!("/api/systemusers/{id}"), json!({"state": "STAGED"}));
    assert_eq!(st, 409, "{v}");
    assert!(v["message"].as_str().unwrap().contains("STAGED"));
    let (st, v) = s.put(&format!("/api/systemusers/{id}"), json!({"state": "ACTIVATED"}));
    assert_eq!((st, v["state"].as_str()), (200, Some("ACTIVATED")));
    let (st, _) = s.post("/api/systemusers/0123456789abcdef01234567/state/activate", json!({}));
    assert_eq!(st, 404);
}

#[test]
fn bulk_actions_answer_per_user_and_never_fail_the_batch() {
    let s = Server::start(&Db::Sqlite);
    let a = staged(&s, "ada");
    let b = staged(&s, "bob");
    let (st, v) =
        s.post("/api/v2/users/actions", json!({"action": "activate", "email": false, "user_ids": [a, b, "bogus"]}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["counts"], json!({"done": 2, "skipped": 0, "error": 1}));
    assert_eq!(v["results"][2], json!({"user_id": "bogus", "outcome": "error", "message": "no user with id 'bogus'"}));
    let (_, v) = s.post("/api/v2/users/actions", json!({"action": "suspend", "user_ids": [a]}));
    assert_eq!(v["results"][0]["outcome"], "done");
    let (_, v) = s.post("/api/v2/users/actions", json!({"action": "suspend", "user_ids": [a]}));
    assert_eq!(v["results"][0]["outcome"], "skipped");
    let (st, v) = s.post("/api/v2/users/actions", json!({"action": "teleport", "user_ids": [a]}));
    assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some("action")));
    let (st, v) = s.post(
        "/api/v2/users/actions",
        json!({"action": "add_to_group", "group_id": "0123456789abcdef01234567", "user_ids": [a]}),
    );
    assert_eq!(st, 404, "{v}");
}

#[test]
fn scheduled_changes_are_listed_validated_canceled_and_shown_on_the_user() {
    let s = Server::start(&Db::Sqlite);
    let a = staged(&s, "ada");
    let b = staged(&s, "bob");
    let at = in_an_hour();
    let (st, v) = s.post(
        "/api/v2/bulk/userstates",
        json!({"user_ids": [a, b, "0123456789abcdef01234567"], "state": "ACTIVATED", "start_date": at, "send_activation_emails": true}),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 3, "one result per user");
    assert_eq!(v[0]["systemUserId"], a);
    assert_eq!(v[0]["state"], "ACTIVATED");
    assert!(v[2]["error"].as_str().unwrap().contains("no user"));
    let job = v[0]["scheduledJobId"].as_str().unwrap().to_string();
    assert_eq!(v[1]["scheduledJobId"], job);

    let (_, list) = s.get(&format!("/api/v2/bulk/userstates?userid={a}"));
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (_, u) = s.get(&format!("/api/systemusers/{a}"));
    assert_eq!(u["scheduledStateChanges"][0]["scheduledJobId"], job);
    let (_, next) = s.get(&format!("/api/v2/bulk/userstates/eventlist/next?users={a},{b}"));
    assert_eq!(next["events_count"], 2);

    for (body, field) in [
        (json!({"user_ids": [a], "state": "ACTIVATED", "start_date": "2001-01-01T00:00:00Z"}), "start_date"),
        (json!({"user_ids": [a], "state": "ACTIVATED", "start_date": "next tuesday"}), "start_date"),
        (json!({"user_ids": [a], "state": "STAGED", "start_date": at}), "state"),
        (
            json!({"user_ids": [a, b], "state": "ACTIVATED", "start_date": at, "activation_email_override": "x@example.com"}),
            "activation_email_override",
        ),
        (
            json!({"user_ids": [a], "state": "ACTIVATED", "start_date": "2030-01-01T09:00", "time_zone": "Nowhere/City"}),
            "time_zone",
        ),
    ] {
        let (st, v) = s.post("/api/v2/bulk/userstates", body.clone());
        assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some(field)), "{body} -> {v}");
    }

    let (st, _) = s.delete(&format!("/api/v2/bulk/userstates/{job}"));
    assert_eq!(st, 204);
    let (_, list) = s.get("/api/v2/bulk/userstates");
    assert_eq!(list, json!([]));
    let (st, _) = s.delete(&format!("/api/v2/bulk/userstates/{job}"));
    assert_eq!(st, 404);
}

#[test]
fn a_schedule_fires_when_its_time_comes_and_names_who_scheduled_it() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = tmp.path().join("clock");
    let s = with_clock(&Db::Sqlite, &clock);
    let a = staged(&s, "ada");
    let (st, v) =
        s.post("/api/v2/bulk/userstates", json!({"user_ids": [a], "state": "ACTIVATED", "start_date": in_an_hour()}));
    assert_eq!(st, 201, "{v}");
    std::fs::write(&clock, "3601").unwrap();
    // How soon it fires is measured by the benchmark (benches/), not asserted here.
    wait_for("the activation", Duration::from_secs(30), || {
        s.get(&format!("/api/systemusers/{a}")).1["state"] == "ACTIVATED"
    });
    let (_, evs) = s.get(&format!("/api/v2/events?user_id={a}&action=user_activate"));
    assert_eq!(evs.as_array().unwrap().len(), 1);
    assert_eq!(evs[0]["actor"]["kind"], "scheduler");
    assert_eq!(evs[0]["detail"]["scheduled_by"]["kind"], "apikey");
    let (_, list) = s.get("/api/v2/bulk/userstates");
    assert_eq!(list, json!([]), "a fired schedule is no longer pending");
}

#[test]
fn a_schedule_due_while_the_server_was_killed_fires_once_at_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = tmp.path().join("clock");
    let mut s = with_clock(&Db::Sqlite, &clock);
    let a = staged(&s, "ada");
    let b = staged(&s, "bob");
    let (st, _) = s
        .post("/api/v2/bulk/userstates", json!({"user_ids": [a, b], "state": "ACTIVATED", "start_date": in_an_hour()}));
    assert_eq!(st, 201);
    s.kill();
    std::fs::write(&clock, "7200").unwrap();
    s.restart();
    wait_for("the catch-up", Duration::from_secs(10), || {
        s.get(&format!("/api/systemusers/{a}")).1["state"] == "ACTIVATED"
            && s.get(&format!("/api/systemusers/{b}")).1["state"] == "ACTIVATED"
    });
    s.restart();
    std::thread::sleep(Duration::from_millis(600));
    let (_, evs) = s.get("/api/v2/events?action=user_activate");
    assert_eq!(evs.as_array().unwrap().len(), 2, "each fired exactly once across restarts");
}

fn total(s: &Server, path: &str) -> i64 {
    let r = s.raw().get(format!("{}{}", s.base, path)).header("x-api-key", common::KEY).send().unwrap();
    r.headers()["x-total-count"].to_str().unwrap().parse().unwrap()
}

#[test]
fn two_servers_on_one_postgresql_fire_a_thousand_schedules_exactly_once() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let Some(url) = rt.block_on(cairn_store::testing::fresh_postgres_url("two-process scheduler on PostgreSQL")) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let clock = tmp.path().join("clock");
    let one = with_clock(&Db::Postgres(url.clone()), &clock);
    let two = with_clock(&Db::Postgres(url), &clock);
    let ids: Vec<String> =
        (0..1000).map(|i| staged(if i % 2 == 0 { &one } else { &two }, &format!("user{i:04}"))).collect();
    let (st, v) =
        one.post("/api/v2/bulk/userstates", json!({"user_ids": ids, "state": "ACTIVATED", "start_date": in_an_hour()}));
    assert_eq!(st, 201);
    assert!(v.as_array().unwrap().iter().all(|r| r.get("error").is_none()));
    std::fs::write(&clock, "3700").unwrap();
    wait_for("1,000 activations", Duration::from_secs(60), || {
        one.get("/api/systemusers?filter=state:ACTIVATED&limit=1").1["totalCount"] == 1000
    });
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(total(&one, "/api/v2/events?action=user_activate&limit=1"), 1000, "1,000 events, none twice");
    assert_eq!(total(&two, "/api/v2/events?action=schedule_skip&limit=1"), 0);
    let (_, evs) = one.get("/api/v2/events?action=user_activate&limit=1000");
    let mut targets: Vec<&str> = evs.as_array().unwrap().iter().map(|e| e["target"]["id"].as_str().unwrap()).collect();
    targets.sort();
    targets.dedup();
    assert_eq!(targets.len(), 1000, "every user activated once");
    let nodes: std::collections::HashSet<i64> =
        evs.as_array().unwrap().iter().map(|e| e["detail"]["node"].as_i64().unwrap()).collect();
    eprintln!("schedules were fired by {} process(es)", nodes.len());
    let (_, pending) = two.get("/api/v2/bulk/userstates");
    assert_eq!(pending, Value::Array(vec![]));
}
