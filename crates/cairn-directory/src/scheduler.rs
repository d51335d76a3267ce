//! Scheduled state changes (§3.4): durable rows that a worker in every `cairn serve` process
//! fires. A schedule is claimed and fired in one transaction, so it fires exactly once across
//! processes and crashes; one that came due while no process ran fires at the next start.

use std::time::Duration;

use cairn_domain::lifecycle::{MailChoice, Schedule, ScheduleStatus};
use cairn_domain::user::format_time;
use cairn_domain::{Actor, FieldError, State};
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::lifecycle::{StateChange, StateOutcome};
use crate::load::load_user;
use crate::{Ctx, Directory};

/// Most users one request may schedule.
pub const MAX_SCHEDULE_USERS: usize = 100_000;
/// Schedules fired per transaction.
const FIRE_BATCH: i64 = 500;

/// A validated JumpCloud `bulk-scheduled-statechange-create` body.
#[derive(Debug, Clone)]
pub struct ScheduleRequest {
    pub user_ids: Vec<String>,
    pub state: State,
    pub at: DateTime<Utc>,
    pub mail: MailChoice,
}

/// Parses an instant: RFC 3339 with an offset, or a local date-time (JumpCloud sends
/// `2020-01-01T02:00:00`) read in `zone` (an IANA name), UTC when no zone is given.
pub fn parse_instant(s: &str, zone: Option<&str>, field: &str) -> std::result::Result<DateTime<Utc>, FieldError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        if zone.is_some() {
            return Err(FieldError::new("time_zone", "give either an offset in start_date or a time_zone, not both"));
        }
        return Ok(t.with_timezone(&Utc));
    }
    let naive = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .ok_or_else(|| FieldError::new(field, format!("'{s}' is not a date-time such as 2026-01-31T09:00:00Z")))?;
    match zone {
        None => Ok(Utc.from_utc_datetime(&naive)),
        Some(z) => {
            let tz: chrono_tz::Tz = z.parse().map_err(|_| {
                FieldError::new("time_zone", format!("'{z}' is not an IANA time zone such as Europe/Paris"))
            })?;
            tz.from_local_datetime(&naive)
                .earliest()
                .map(|t| t.with_timezone(&Utc))
                .ok_or_else(|| FieldError::new(field, format!("{s} does not exist in {z} (a daylight-saving gap)")))
        }
    }
}

impl ScheduleRequest {
    /// Validates the body against `now`. Every problem is named; an unknown user id is not a
    /// problem here but a per-user error when scheduling.
    pub fn parse(body: &Value, now: DateTime<Utc>) -> Result<ScheduleRequest> {
        let Some(obj) = body.as_object() else {
            return Err(Error::invalid("body", "must be a JSON object"));
        };
        let mut errors = Vec::new();
        for k in obj.keys() {
            if !matches!(
                k.as_str(),
                "user_ids"
                    | "state"
                    | "start_date"
                    | "send_activation_emails"
                    | "activation_email_override"
                    | "time_zone"
            ) {
                errors.push(FieldError::new(k.clone(), "is not a field of a scheduled state change"));
            }
        }
        let user_ids = parse_user_ids(obj.get("user_ids")).unwrap_or_else(|e| {
            errors.push(e);
            vec![]
        });
        let state = match obj.get("state").and_then(Value::as_str) {
            Some("ACTIVATED") => Some(State::Activated),
            Some("SUSPENDED") => Some(State::Suspended),
            _ => {
                errors.push(FieldError::new("state", "must be ACTIVATED or SUSPENDED"));
                None
            }
        };
        let zone = match obj.get("time_zone") {
            None | Some(Value::Null) => None,
            Some(Value::String(z)) => Some(z.as_str()),
            Some(_) => {
                errors.push(FieldError::new("time_zone", "must be an IANA time zone name"));
                None
            }
        };
        let at = match obj.get("start_date").and_then(Value::as_str) {
            Some(s) => match parse_instant(s, zone, "start_date") {
                Ok(t) if t <= now => {
                    errors.push(FieldError::new("start_date", format!("{} is in the past", format_time(t))));
                    None
                }
                Ok(t) => Some(t),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
            _ => {
                errors.push(FieldError::new("start_date", "is required (e.g. 2026-01-31T09:00:00Z)"));
                None
            }
        };
        let send = match obj.get("send_activation_emails") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                errors.push(FieldError::new("send_activation_emails", "must be true or false"));
                None
            }
        };
        let override_to = match obj.get("activation_email_override") {
            None | Some(Value::Null) => None,
            Some(v) => match MailChoice::from_flag(Some(v), "activation_email_override") {
                Ok(MailChoice::To(a)) => Some(a),
                Ok(_) => {
                    errors.push(FieldError::new("activation_email_override", "must be an e-mail address"));
                    None
                }
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
        };
        if override_to.is_some() && user_ids.len() > 1 {
            errors.push(FieldError::new("activation_email_override", "can only be used with a single user"));
        }
        if override_to.is_some() && state == Some(State::Suspended) {
            errors.push(FieldError::new("activation_email_override", "applies to scheduled activations only"));
        }
        if send.is_some() && state == Some(State::Suspended) {
            errors.push(FieldError::new("send_activation_emails", "applies to scheduled activations only"));
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        // JumpCloud: the override is ignored when mail is explicitly turned off.
        let mail = match (send, override_to) {
            (Some(false), _) => MailChoice::None,
            (_, Some(a)) => MailChoice::To(a),
            (Some(true), None) => MailChoice::Yes,
            (None, None) => MailChoice::Default,
        };
        Ok(ScheduleRequest { user_ids, state: state.unwrap_or(State::Activated), at: at.unwrap_or(now), mail })
    }
}

/// `user_ids`: a non-empty list of strings, duplicates dropped, order kept.
pub fn parse_user_ids(v: Option<&Value>) -> std::result::Result<Vec<String>, FieldError> {
    let Some(Value::Array(a)) = v else {
        return Err(FieldError::new("user_ids", "must be a list of user ids"));
    };
    if a.is_empty() {
        return Err(FieldError::new("user_ids", "must name at least one user"));
    }
    if a.len() > MAX_SCHEDULE_USERS {
        return Err(FieldError::new("user_ids", format!("at most {MAX_SCHEDULE_USERS} users per request")));
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(a.len());
    for v in a {
        let Some(s) = v.as_str() else {
            return Err(FieldError::new("user_ids", "every entry must be a string"));
        };
        if seen.insert(s) {
            out.push(s.to_string());
        }
    }
    Ok(out)
}

/// What a fired schedule's events say about it.
fn fire_detail(s: &Schedule) -> Value {
    json!({
        "schedule_id": s.id,
        "job_id": s.job_id,
        "scheduled_by": s.created_by,
        "due": format_time(s.due),
        "node": std::process::id(),
    })
}

fn scheduler_ctx() -> Ctx {
    Ctx::new(Actor { kind: "scheduler".into(), id: None, name: Some("scheduler".into()) }, "scheduler", None)
}

impl Directory {
    /// Schedules a state change for each user, all under one job id, in one transaction. A
    /// pending schedule of the same user and target state is replaced (and the replacement
    /// recorded). Returns the job id and, per user, the schedule or why there is none.
    pub async fn schedule_states(
        &self,
        ctx: &Ctx,
        req: &ScheduleRequest,
    ) -> Result<(String, Vec<(String, Result<Schedule>)>)> {
        let job_id = self.new_id();
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let mut out = Vec::with_capacity(req.user_ids.len());
        for uid in &req.user_ids {
            let user = match load_user(&mut tx.db(), uid).await {
                Ok(u) => u,
                Err(e) => {
                    out.push((uid.clone(), Err(e)));
                    continue;
                }
            };
            if let Some(old) = tx.db().pending_schedule(&user.id, req.state).await? {
                tx.db()
                    .finish_schedule(&old.id, ScheduleStatus::Replaced, now, Some("replaced by a newer schedule"))
                    .await?;
                let ev = self.event(
                    ctx,
                    "schedule_replace",
                    Some(("user", &user.id, &user.username)),
                    vec![],
                    json!({ "schedule_id": old.id, "state": old.target, "due": format_time(old.due) }),
                );
                tx.db().insert_event(&ev).await?;
            }
            let s = Schedule {
                id: self.new_id(),
                job_id: job_id.clone(),
                user_id: user.id.clone(),
                target: req.state,
                due: req.at,
                email: req.mail.clone(),
                created: now,
                created_by: ctx.actor.clone(),
                status: ScheduleStatus::Pending,
                finished: None,
                message: None,
            };
            tx.db().insert_schedule(&s).await?;
            let ev = self.event(
                ctx,
                "schedule_create",
                Some(("user", &user.id, &user.username)),
                vec![],
                json!({ "schedule_id": s.id, "job_id": job_id, "state": s.target, "due": format_time(s.due), "email": s.email }),
            );
            tx.db().insert_event(&ev).await?;
            out.push((uid.clone(), Ok(s)));
        }
        tx.commit().await?;
        Ok((job_id, out))
    }

    pub async fn pending_schedules(
        &self,
        user_id: Option<&str>,
        limit: i64,
        skip: i64,
    ) -> Result<(i64, Vec<Schedule>)> {
        let mut c = self.store().read().await?;
        Ok(c.db().pending_schedules(user_id, None, limit, skip).await?)
    }

    pub async fn pending_schedules_of(&self, user_ids: &[String]) -> Result<Vec<Schedule>> {
        let mut c = self.store().read().await?;
        Ok(c.db().pending_schedules_of(user_ids).await?)
    }

    /// Cancels every pending schedule of a job (JumpCloud `DELETE /bulk/userstates/{id}`); a
    /// schedule id is accepted too.
    pub async fn cancel_job(&self, ctx: &Ctx, job_id: &str) -> Result<usize> {
        let mut tx = self.store().begin().await?;
        let (_, mut list) = tx.db().pending_schedules(None, Some(job_id), i64::MAX, 0).await?;
        if list.is_empty() {
            // Also accept the id of a single schedule.
            let (_, all) = tx.db().pending_schedules(None, None, i64::MAX, 0).await?;
            list = all.into_iter().filter(|s| s.id == job_id).collect();
        }
        if list.is_empty() {
            return Err(Error::NotFound(format!("no pending scheduled state change with id '{job_id}'")));
        }
        for s in &list {
            self.cancel_one(&mut tx.db(), ctx, s).await?;
        }
        tx.commit().await?;
        Ok(list.len())
    }

    /// Cancels a user's pending schedules (of one target state, or all); how many.
    pub async fn cancel_user_schedules(&self, ctx: &Ctx, user_id: &str, state: Option<State>) -> Result<usize> {
        let mut tx = self.store().begin().await?;
        load_user(&mut tx.db(), user_id).await?;
        let (_, list) = tx.db().pending_schedules(Some(user_id), None, i64::MAX, 0).await?;
        let mut n = 0;
        for s in list.iter().filter(|s| state.is_none_or(|st| s.target == st)) {
            self.cancel_one(&mut tx.db(), ctx, s).await?;
            n += 1;
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn cancel_one(&self, db: &mut cairn_store::Db<'_>, ctx: &Ctx, s: &Schedule) -> Result<()> {
        let now = self.now();
        if db.finish_schedule(&s.id, ScheduleStatus::Canceled, now, Some("canceled")).await? {
            let name = db.get_user(&s.user_id).await?.map(|u| u.username).unwrap_or_default();
            let ev = self.event(
                ctx,
                "schedule_cancel",
                Some(("user", &s.user_id, &name)),
                vec![],
                json!({ "schedule_id": s.id, "job_id": s.job_id, "state": s.target, "due": format_time(s.due) }),
            );
            db.insert_event(&ev).await?;
        }
        Ok(())
    }

    /// Fires the schedules that are due, one batch per transaction; how many were handled.
    pub async fn run_due_schedules(&self) -> Result<usize> {
        let mut handled = 0;
        loop {
            let now = self.now();
            let mut tx = self.store().begin().await?;
            let batch = tx.db().claim_due_schedules(now, FIRE_BATCH).await?;
            if batch.is_empty() {
                return Ok(handled);
            }
            let ctx = scheduler_ctx();
            let max_lag = batch.iter().map(|s| (now - s.due).num_milliseconds() as f64 / 1000.0).fold(0.0, f64::max);
            self.fire_batch(&mut tx.db(), &ctx, &batch).await?;
            tx.commit().await?;
            metrics::gauge!("cairn_scheduler_lag_seconds").set(max_lag);
            metrics::counter!("cairn_scheduler_fired_total").increment(batch.len() as u64);
            handled += batch.len();
            if (batch.len() as i64) < FIRE_BATCH {
                return Ok(handled);
            }
        }
    }

    /// Fires a claimed batch: the common case (each user once, not yet in the target state) in
    /// one `apply_states` call; the rest one by one.
    async fn fire_batch(&self, db: &mut cairn_store::Db<'_>, ctx: &Ctx, batch: &[Schedule]) -> Result<()> {
        let ids: Vec<String> = batch.iter().map(|s| s.user_id.clone()).collect();
        let users: std::collections::HashMap<String, cairn_domain::User> =
            db.users_by_ids(&ids).await?.into_iter().map(|u| (u.id.clone(), u)).collect();
        let mut seen = std::collections::HashSet::new();
        let (mut together, mut alone) = (vec![], vec![]);
        for s in batch {
            match users.get(&s.user_id) {
                Some(u) if u.state != s.target && seen.insert(&s.user_id) => together.push((s, u.clone())),
                _ => alone.push(s),
            }
        }
        let changes = together
            .iter()
            .map(|(s, u)| StateChange { user: u.clone(), to: s.target, mail: s.email.clone(), detail: fire_detail(s) })
            .collect();
        self.apply_states(db, ctx, changes).await?;
        let fired: Vec<String> = together.iter().map(|(s, _)| s.id.clone()).collect();
        db.finish_schedules_fired(&fired, self.now()).await?;
        for s in alone {
            self.fire(db, ctx, s).await?;
        }
        Ok(())
    }

    async fn fire(&self, db: &mut cairn_store::Db<'_>, ctx: &Ctx, s: &Schedule) -> Result<()> {
        let now = self.now();
        let detail = fire_detail(s);
        let skipped = match db.get_user(&s.user_id).await? {
            None => Some("the user was deleted".to_string()),
            Some(user) => match self.apply_state(db, ctx, user, s.target, s.email.clone(), detail.clone()).await {
                Ok(StateOutcome::Changed(_)) => None,
                Ok(StateOutcome::Unchanged(u)) => Some(format!("{} is already {}", u.username, u.state)),
                // A rule refused it: recorded as skipped with the reason, never retried forever.
                Err(e @ (Error::Conflict(_) | Error::Invalid(_) | Error::NotFound(_))) => Some(e.to_string()),
                Err(e) => return Err(e),
            },
        };
        match skipped {
            None => {
                db.finish_schedule(&s.id, ScheduleStatus::Fired, now, None).await?;
            }
            Some(reason) => {
                db.finish_schedule(&s.id, ScheduleStatus::Skipped, now, Some(&reason)).await?;
                let name = db.get_user(&s.user_id).await?.map(|u| u.username).unwrap_or_default();
                let mut d = detail;
                d["state"] = json!(s.target);
                d["reason"] = json!(reason);
                let mut ev = self.event(ctx, "schedule_skip", Some(("user", &s.user_id, &name)), vec![], d);
                ev.outcome = "skipped".into();
                db.insert_event(&ev).await?;
            }
        }
        Ok(())
    }

    /// Runs the scheduler until `stop` resolves: catches up at once, then polls often enough
    /// to fire every schedule within a second of its instant.
    /// Also opens, about once a second, the locks whose `lockoutTimeInSeconds` has passed.
    pub async fn run_scheduler(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut pass: u64 = 0;
        loop {
            match self.run_due_schedules().await {
                Ok(n) if n > 0 => tracing::info!(fired = n, "scheduled state changes handled"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "scheduler pass failed; retrying"),
            }
            if pass.is_multiple_of(4) {
                match self.unlock_expired_locks().await {
                    Ok(n) if n > 0 => tracing::info!(unlocked = n, "lockout time elapsed"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "unlock pass failed; retrying"),
                }
            }
            // Periodic directory syncs, checked every 5 seconds (each claimed by one process).
            if pass % 20 == 2 {
                match self.run_due_directory_syncs().await {
                    Ok(n) if n > 0 => tracing::info!(started = n, "periodic directory syncs started"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "directory sync pass failed; retrying"),
                }
            }
            // With PostgreSQL, a process that stopped leaves its jobs running: another one
            // marks them once they are silent long enough, and resumes their directory syncs.
            // (With SQLite this process runs every job; the start does it.)
            if pass % 240 == 3 && self.store().backend() == cairn_store::Backend::Postgres {
                match self.interrupt_stale_jobs().await {
                    Ok(n) if n > 0 => tracing::warn!(jobs = n, "marked jobs a stopped process left as interrupted"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "stale job pass failed; retrying"),
                }
                if let Err(e) = self.resume_interrupted_directory_syncs().await {
                    tracing::warn!(error = %e, "cannot resume interrupted directory syncs");
                }
            }
            // About once a minute.
            if pass % 240 == 1 {
                if let Err(e) = self.prune_change_log().await {
                    tracing::warn!(error = %e, "change log pruning failed; retrying");
                }
                match self.prune_outbox().await {
                    Ok(n) if n > 0 => tracing::info!(pruned = n, "old messages left the outbox"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "outbox pruning failed; retrying"),
                }
            }
            pass += 1;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    #[test]
    fn instants_with_offsets_zones_or_neither() {
        assert_eq!(
            parse_instant("2026-03-01T09:00:00+01:00", None, "d").unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap()
        );
        assert_eq!(
            parse_instant("2026-03-01T09:00:00", None, "d").unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap()
        );
        assert_eq!(
            parse_instant("2026-07-01T09:00", Some("Europe/Paris"), "d").unwrap(),
            Utc.with_ymd_and_hms(2026, 7, 1, 7, 0, 0).unwrap()
        );
        assert_eq!(parse_instant("2026-07-01T09:00", Some("Mars/Olympus"), "d").unwrap_err().field, "time_zone");
        assert_eq!(parse_instant("tomorrow", None, "start_date").unwrap_err().field, "start_date");
        assert!(parse_instant("2026-03-29T02:30:00", Some("Europe/Paris"), "d").is_err(), "DST gap");
    }

    #[test]
    fn schedule_bodies_are_validated_field_by_field() {
        let ok = ScheduleRequest::parse(
            &json!({"user_ids": ["a", "b", "a"], "state": "ACTIVATED", "start_date": "2026-02-01T00:00:00Z", "send_activation_emails": false}),
            now(),
        )
        .unwrap();
        assert_eq!(ok.user_ids, vec!["a", "b"]);
        assert_eq!(ok.mail, MailChoice::None);
        let one = ScheduleRequest::parse(
            &json!({"user_ids": ["a"], "state": "ACTIVATED", "start_date": "2026-02-01T00:00:00Z", "activation_email_override": "alt@x.io"}),
            now(),
        )
        .unwrap();
        assert_eq!(one.mail, MailChoice::To("alt@x.io".into()));

        let fields = |body: Value| -> Vec<String> {
            match ScheduleRequest::parse(&body, now()) {
                Err(Error::Invalid(e)) => e.into_iter().map(|e| e.field).collect(),
                other => panic!("expected invalid, got {other:?}"),
            }
        };
        assert_eq!(
            fields(json!({"user_ids": ["a"], "state": "ACTIVATED", "start_date": "2025-01-01T00:00:00Z"})),
            ["start_date"]
        );
        assert_eq!(
            fields(json!({"user_ids": ["a"], "state": "STAGED", "start_date": "2026-02-01T00:00:00Z"})),
            ["state"]
        );
        assert_eq!(fields(json!({"user_ids": ["a"], "state": "ACTIVATED", "start_date": "soon"})), ["start_date"]);
        assert_eq!(
            fields(
                json!({"user_ids": ["a", "b"], "state": "ACTIVATED", "start_date": "2026-02-01T00:00:00Z", "activation_email_override": "x@y.io"})
            ),
            ["activation_email_override"]
        );
        assert_eq!(
            fields(json!({"user_ids": [], "state": "ACTIVATED", "start_date": "2026-02-01T00:00:00Z"})),
            ["user_ids"]
        );
        assert_eq!(
            fields(json!({"state": "ACTIVATED", "start_date": "2026-02-01T00:00:00Z", "extra": 1})),
            ["extra", "user_ids"]
        );
    }
}
