//! The JSON shapes of records that several endpoints answer with.

use cairn_domain::lifecycle::Schedule;
use cairn_domain::user::{format_time, project};
use cairn_domain::User;
use serde_json::{json, Value};

/// The `systemuserreturn` JSON plus Cairn's `scheduledStateChanges` (pending schedules).
pub fn user_json(u: &User, org: &str, fields: Option<&[String]>, pending: &[Schedule]) -> Value {
    let mut m = u.to_json(org);
    let mine: Vec<Value> = pending.iter().filter(|s| s.user_id == u.id).map(schedule_json).collect();
    m.insert("scheduledStateChanges".into(), Value::Array(mine));
    Value::Object(project(m, fields))
}

/// JumpCloud `scheduled-userstate-result`.
pub fn schedule_json(s: &Schedule) -> Value {
    json!({
        "id": s.id,
        "scheduledJobId": s.job_id,
        "systemUserId": s.user_id,
        "state": s.target,
        "scheduledDate": format_time(s.due),
        "email": s.email,
        "createdBy": s.created_by,
    })
}
