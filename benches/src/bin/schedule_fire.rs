//! Issue 3 benchmark: 10,000 activations scheduled for one instant — time from the instant
//! until the last has fired, on SQLite and PostgreSQL. The scheduler's own batch loop is timed
//! (`Directory::run_due_schedules`, what every `cairn serve` process runs every 250 ms), with the
//! clock moved to the instant instead of waiting for it. Mail is on (each activation of a user
//! without a password writes an activation mail and its link), as a real onboarding day has.
//! Reference, side by side on the same database: one plain SQL UPDATE activating the same
//! number of users — the floor that no per-user rule, event or mail could beat.
//!
//! cargo run --release -p cairn-bench --bin schedule_fire

use std::sync::Arc;
use std::time::Instant;

use cairn_directory::{Ctx, Directory, ManualClock, ScheduleRequest};
use cairn_domain::{Actor, State, User};
use cairn_store::Store;
use chrono::Duration;
use serde_json::json;

const N: usize = 10_000;

fn user(d: &Directory, i: usize) -> User {
    let now = d.now();
    let mut profile = serde_json::Map::new();
    profile.insert("firstname".into(), json!(format!("First{i}")));
    profile.insert("lastname".into(), json!(format!("Last{i}")));
    User {
        creation_source: "bench".into(),
        profile,
        ..User::new(d.new_id(), format!("sched{i:05}"), format!("sched{i:05}@example.com"), State::Staged, now)
    }
}

async fn run(name: &str, url: &str) -> anyhow::Result<(f64, f64)> {
    let clock = Arc::new(ManualClock::default());
    let store = Store::connect(url).await?;
    let d = Directory::new(store.clone(), clock.clone());
    d.migrate().await?;
    let users: Vec<User> = (0..2 * N).map(|i| user(&d, i)).collect();
    let mut tx = store.begin().await?;
    tx.db().insert_users(&users).await?;
    tx.commit().await?;
    let ids: Vec<String> = users[..N].iter().map(|u| u.id.clone()).collect();
    let ctx = Ctx::new(Actor::apikey("0123456789abcdef01234567", "bench"), "api", None);
    let at = d.now() + Duration::hours(1);
    let req =
        ScheduleRequest::parse(&json!({"user_ids": ids, "state": "ACTIVATED", "start_date": at.to_rfc3339()}), d.now())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let t = Instant::now();
    d.schedule_states(&ctx, &req).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let scheduling = t.elapsed().as_secs_f64();
    clock.advance(Duration::hours(1));
    let t = Instant::now();
    let mut fired = 0;
    while fired < N {
        fired += d.run_due_schedules().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let firing = t.elapsed().as_secs_f64();
    let (activated, _) = d
        .list_users(
            &cairn_domain::query::ListQuery::from_pairs(&[("filter".into(), "state:ACTIVATED".into())]).unwrap(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(activated as usize, N, "every schedule fired once");

    // Reference: the same number of other staged users activated by one UPDATE.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await?;
    let t = Instant::now();
    let r = sqlx::query("UPDATE users SET state = 'ACTIVATED' WHERE state = 'STAGED'").execute(&pool).await?;
    let reference = t.elapsed().as_secs_f64();
    assert_eq!(r.rows_affected() as usize, N);
    println!("{name:<10} scheduling {N} took {scheduling:.2} s; firing all took {firing:.2} s ({:.0}/s); one-UPDATE reference {reference:.3} s; ratio {:.1}", N as f64 / firing, firing / reference);
    Ok((firing, reference))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    run("SQLite", &format!("sqlite://{}/cairn.db", dir.path().display())).await?;
    if std::env::var("CAIRN_TEST_DATABASE_URL").is_err() {
        std::env::set_var("CAIRN_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test");
    }
    if let Some(url) = cairn_store::testing::fresh_postgres_url("the PostgreSQL half of the benchmark").await {
        run("PostgreSQL", &url).await?;
    }
    Ok(())
}
