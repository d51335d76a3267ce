//! Reading the records a use case works on.

use cairn_domain::User;
use cairn_store::Db;

use crate::error::{Error, Result};

/// The user, its row locked until the transaction ends: every read-modify-write of a user
/// starts here, so concurrent changes (a suspension, a failed sign-in) queue on PostgreSQL
/// instead of overwriting each other (SQLite's writers already run one at a time).
pub(crate) async fn load_user(db: &mut Db<'_>, id: &str) -> Result<User> {
    if !cairn_domain::id::is_object_id(id) {
        return Err(Error::NotFound(format!("no user with id '{id}'")));
    }
    db.lock_user(id).await?.ok_or_else(|| Error::NotFound(format!("no user with id '{id}'")))
}

/// The user, for reading only.
pub(crate) async fn read_user(db: &mut Db<'_>, id: &str) -> Result<User> {
    if !cairn_domain::id::is_object_id(id) {
        return Err(Error::NotFound(format!("no user with id '{id}'")));
    }
    db.get_user(id).await?.ok_or_else(|| Error::NotFound(format!("no user with id '{id}'")))
}
