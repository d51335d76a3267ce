//! Lifecycle use cases through `Directory`, on SQLite and PostgreSQL, with an injected clock
//! that the tests move forward instead of sleeping.

use std::sync::Arc;

use cairn_directory::{Action, Ctx, Directory, ManualClock, Outcome, ScheduleRequest, StateOutcome};
use cairn_domain::lifecycle::MailChoice;
use cairn_domain::{Actor, CreationSource, State};
use cairn_store::{testing, EventQuery, Store};
use chrono::Duration;
use serde_json::json;

/// Each database's directory, its clock, its store (to set up and read what no use case shows)
/// and the SQLite directory's folder.
async fn dirs(what: &str) -> Vec<(Directory, Arc<ManualClock>, Store, Option<tempfile::TempDir>)> {
    let mut out = vec![];
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::connect(&testing::sqlite_url(tmp.path())).await.unwrap();
    let clock = Arc::new(ManualClock::default());
    let d = Directory::new(store.clone(), clock.clone());
    d.migrate().await.unwrap();
    out.push((d, clock, store, Some(tmp)));
    if let Some(url) = testing::fresh_postgres_url(what).await {
        let clock = Arc::new(ManualClock::default());
        let store = Store::connect(&url).await.unwrap();
        let d = Directory::new(store.clone(), clock.clone());
        d.migrate().await.unwrap();
        out.push((d, clock, store, None));
    }
    out
}

fn admin() -> Ctx {
    Ctx::new(Actor::admin("0123456789abcdef01234567", "boss@example.com"), "api", Some("10.0.0.1".into()))
}

async fn staged(d: &Directory, name: &str) -> String {
    let u = d
        .create_user(
            &admin(),
            &json!({"username": name, "email": format!("{name}@example.com"), "state": "STAGED"}),
            CreationSource::ManualEntry,
            "api",
        )
        .await
        .unwrap();
    u.id
}

async fn events(d: &Directory, user: &str, action: &str) -> Vec<cairn_domain::Event> {
    d.list_events(&EventQuery {
        target_id: Some(user.into()),
        action: Some(action.into()),
        limit: 100,
        ..Default::default()
    })
    .await
    .unwrap()
    .1
}

#[tokio::test]
async fn transitions_follow_the_table_and_suspension_revokes_sessions() {
    for (d, _, store, _tmp) in dirs("lifecycle transitions on PostgreSQL").await {
        let id = staged(&d, "ada").await;
        let out = d.activate(&admin(), &id, MailChoice::To("alt@example.com".into())).await.unwrap();
        assert!(matches!(out, StateOutcome::Changed(ref u) if u.state == State::Activated));
        let ev = &events(&d, &id, "user_activate").await[0];
        assert_eq!(ev.detail["email"], json!({"mail": "to", "to": "alt@example.com"}), "the mail choice is recorded");
        assert!(matches!(d.activate(&admin(), &id, MailChoice::Default).await.unwrap(), StateOutcome::Unchanged(_)));

        // Sessions of the user end in the suspending transaction.
        let now = d.now();
        {
            let mut tx = store.begin().await.unwrap();
            tx.db().insert_session("s1", &id, "portal", now, now + Duration::hours(1)).await.unwrap();
            tx.db().insert_session("s2", &id, "portal", now, now + Duration::hours(1)).await.unwrap();
            tx.commit().await.unwrap();
        }
        let out = d.suspend(&admin(), &id).await.unwrap();
        assert_eq!(out.user().state, State::Suspended);
        let mut c = store.read().await.unwrap();
        assert_eq!(c.db().count_sessions(&id).await.unwrap(), 0);
        drop(c);
        // Two sessions and the activation link mailed at activation.
        assert_eq!(events(&d, &id, "user_suspend").await[0].detail["revoked_sessions_and_tokens"], 3);

        let err = d.update_user(&admin(), &id, &json!({"state": "STAGED"})).await.unwrap_err();
        assert!(matches!(err, cairn_directory::Error::Conflict(_)), "{err}");
        let u = d.update_user(&admin(), &id, &json!({"state": "ACTIVATED", "jobTitle": "x"})).await.unwrap();
        assert_eq!(u.state, State::Activated, "reactivation restores the same user");
        assert_eq!(events(&d, &id, "user_activate").await.len(), 2);
    }
}

#[tokio::test]
async fn schedules_fire_once_when_time_comes_and_are_skipped_when_moot() {
    for (d, clock, _, _tmp) in dirs("scheduler on PostgreSQL").await {
        let a = staged(&d, "ada").await;
        let b = staged(&d, "bob").await;
        let gone = staged(&d, "gone").await;
        let req = ScheduleRequest::parse(
            &json!({"user_ids": [a, b, gone, "0123456789abcdef01234567"], "state": "ACTIVATED", "start_date": (d.now() + Duration::hours(1)).to_rfc3339()}),
            d.now(),
        )
        .unwrap();
        let (job, results) = d.schedule_states(&admin(), &req).await.unwrap();
        assert_eq!(results.iter().filter(|(_, r)| r.is_ok()).count(), 3);
        assert!(results[3].1.is_err(), "an unknown id is a per-user error");
        assert_eq!(d.pending_schedules(None, 100, 0).await.unwrap().0, 3);

        // A new schedule for the same user and state replaces the old one.
        let later = ScheduleRequest { user_ids: vec![b.clone()], at: d.now() + Duration::hours(2), ..req.clone() };
        d.schedule_states(&admin(), &later).await.unwrap();
        assert_eq!(d.pending_schedules(Some(&b), 100, 0).await.unwrap().0, 1);
        assert_eq!(events(&d, &b, "schedule_replace").await.len(), 1);

        d.activate(&admin(), &a, MailChoice::None).await.unwrap();
        d.delete_user(&admin(), &gone).await.unwrap();

        assert_eq!(d.run_due_schedules().await.unwrap(), 0, "nothing is due yet");
        clock.advance(Duration::minutes(61));
        assert_eq!(d.run_due_schedules().await.unwrap(), 2);
        assert_eq!(d.run_due_schedules().await.unwrap(), 0, "each fires once");
        let skip_a = events(&d, &a, "schedule_skip").await;
        assert!(skip_a[0].detail["reason"].as_str().unwrap().contains("already ACTIVATED"));
        assert_eq!(events(&d, &gone, "schedule_skip").await[0].detail["reason"], "the user was deleted");
        assert_eq!(d.get_user(&b).await.unwrap().state, State::Staged, "bob's schedule was moved to later");

        clock.advance(Duration::hours(1));
        assert_eq!(d.run_due_schedules().await.unwrap(), 1);
        let ev = &events(&d, &b, "user_activate").await[0];
        assert_eq!(ev.actor.kind, "scheduler");
        assert_eq!(ev.source, "scheduler");
        assert_eq!(ev.detail["scheduled_by"]["name"], "boss@example.com", "the event names who scheduled it");
        assert!(ev.detail["job_id"].as_str().is_some());
        let _ = job;
    }
}

#[tokio::test]
async fn schedules_can_be_canceled_by_job_or_by_user() {
    for (d, clock, _, _tmp) in dirs("schedule cancel on PostgreSQL").await {
        let a = staged(&d, "ada").await;
        let b = staged(&d, "bob").await;
        let at = (d.now() + Duration::hours(1)).to_rfc3339();
        let req = ScheduleRequest::parse(&json!({"user_ids": [a, b], "state": "SUSPENDED", "start_date": at}), d.now())
            .unwrap();
        let (job, _) = d.schedule_states(&admin(), &req).await.unwrap();
        assert_eq!(d.cancel_user_schedules(&admin(), &a, None).await.unwrap(), 1);
        assert_eq!(d.cancel_job(&admin(), &job).await.unwrap(), 1);
        assert!(d.cancel_job(&admin(), &job).await.is_err(), "nothing left to cancel");
        clock.advance(Duration::hours(2));
        assert_eq!(d.run_due_schedules().await.unwrap(), 0);
        assert_eq!(d.get_user(&a).await.unwrap().state, State::Staged);
    }
}

#[tokio::test]
async fn actions_answer_one_outcome_per_user() {
    for (d, _, _, _tmp) in dirs("actions on PostgreSQL").await {
        let a = staged(&d, "ada").await;
        let b = staged(&d, "bob").await;
        let g = d.create_group(&admin(), &json!({"name": "eng"})).await.unwrap();
        let run = |body: serde_json::Value| {
            let d = d.clone();
            async move {
                let (action, ids) = Action::parse(&body, d.now()).unwrap();
                d.run_action(&admin(), &action, &ids).await.unwrap()
            }
        };
        d.activate(&admin(), &b, MailChoice::None).await.unwrap();
        let r = run(json!({"action": "activate", "email": false, "user_ids": [a, b, "nope"]})).await;
        assert_eq!(r.iter().map(|r| r.outcome).collect::<Vec<_>>(), [Outcome::Done, Outcome::Skipped, Outcome::Error]);
        assert!(r[2].message.contains("no user"), "{}", r[2].message);

        let r = run(json!({"action": "add_to_group", "group_id": g.id, "user_ids": [a, a, b]})).await;
        assert_eq!(r.len(), 2, "duplicates are dropped");
        let r = run(json!({"action": "add_to_group", "group_id": g.id, "user_ids": [a]})).await;
        assert_eq!(r[0].outcome, Outcome::Skipped);
        let r = run(json!({"action": "set_mfa_required", "required": true, "user_ids": [a]})).await;
        assert_eq!(r[0].outcome, Outcome::Done);
        assert!(d.get_user(&a).await.unwrap().flag("enable_user_portal_multifactor"));
        let r = run(json!({"action": "set_password_authority", "authority": "scim", "user_ids": [a]})).await;
        assert_eq!(r[0].outcome, Outcome::Done);
        assert_eq!(d.get_user(&a).await.unwrap().password_authority(), Some(cairn_domain::PasswordAuthority::Scim));
        let r = run(json!({"action": "set_delegated_authority", "authority": {"id": "x", "name": "ActiveDirectory"}, "user_ids": [a]})).await;
        assert_eq!(r[0].outcome, Outcome::Done);
        let at = (d.now() + Duration::hours(1)).to_rfc3339();
        let r =
            run(json!({"action": "schedule_state", "state": "SUSPENDED", "start_date": at, "user_ids": [a, "nope"]}))
                .await;
        assert_eq!((r[0].outcome, r[1].outcome), (Outcome::Done, Outcome::Error));
        let r = run(json!({"action": "cancel_schedule", "user_ids": [a, b]})).await;
        assert_eq!((r[0].outcome, r[1].outcome), (Outcome::Done, Outcome::Skipped));
        let r = run(json!({"action": "suspend", "user_ids": [a]})).await;
        assert_eq!(r[0].outcome, Outcome::Done);
        let r = run(json!({"action": "delete", "user_ids": [a, b]})).await;
        assert!(r.iter().all(|r| r.outcome == Outcome::Done));

        for bad in [
            json!({"action": "explode", "user_ids": [a]}),
            json!({"action": "activate", "user_ids": []}),
            json!({"action": "activate", "email": 3, "user_ids": [a]}),
            json!({"action": "add_to_group", "user_ids": [a]}),
            json!({"action": "suspend", "user_ids": [a], "email": false}),
            json!({"action": "schedule_state", "state": "ACTIVATED", "start_date": "2000-01-01T00:00:00Z", "user_ids": [a]}),
        ] {
            assert!(Action::parse(&bad, d.now()).is_err(), "{bad}");
        }
    }
}
