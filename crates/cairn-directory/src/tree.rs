//! What a read model of the directory (the LDAP tree) is built from and kept coherent with:
//! one full load (the LDAP server's grants and granted groups, then the users the model holds,
//! read by id in pages so that a large directory is never in memory as whole records at once),
//! then the changes since, read from the store's change log whenever this
//! process committed something, another process announced a change (PostgreSQL's
//! `cairn_changes` notifications), or a second has passed (writers the notifications miss:
//! another process on the same SQLite file, such as `cairn users import`).

use std::time::{Duration, Instant};

use cairn_domain::fields::Field;
use cairn_domain::graph::{ResourceKind, ResourceRef, SubjectKind};
use cairn_domain::{Group, LdapServer, User};
use cairn_store::{ChangeCursor, ChangeKind};

use crate::error::Result;
use crate::Directory;

/// Longest a reader goes without reading the change log (see the module's documentation).
const POLL: Duration = Duration::from_secs(1);
/// A reader that has not read for this long loads everything again (the log keeps an hour).
const STALE: Duration = Duration::from_secs(600);
/// How long the change log keeps rows.
pub(crate) const CHANGE_LOG_KEEP: chrono::Duration = chrono::Duration::hours(1);

/// Where a reader stands: opaque to front ends.
#[derive(Debug, Clone)]
pub struct TreeCursor {
    log: ChangeCursor,
    local: u64,
    external: u64,
    read_at: Instant,
}

/// One change, as a read model applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeChange {
    /// Load this user again (it may be gone, or staged now).
    User(String),
    /// Load this group and its members again (it may be gone).
    Group(String),
    /// The LDAP server's associations or settings changed.
    LdapServer,
}

/// What a read model starts from; it reads the users it holds with [`Directory::tree_users`].
pub struct TreeLoad {
    pub cursor: TreeCursor,
    /// The groups associated with the LDAP server, with their members.
    pub groups: Vec<(Group, Vec<String>)>,
    pub ldap_server: LdapServer,
    /// The users and groups associated with the LDAP server.
    pub ldap_grants: Vec<(SubjectKind, String)>,
}

impl Directory {
    /// A full load, with the cursor to follow changes from (taken first, so that what commits
    /// during the load, or between it and the reads of users that follow, is applied again
    /// after them).
    pub async fn tree_load(&self) -> Result<TreeLoad> {
        let local = self.store().local_commits();
        let external = self.store().external_changes();
        let log = self.store().read().await?.db().change_cursor().await?;
        let ldap_server = self.builtin_ldap_server().await?;
        let ldap_grants = self.tree_ldap_grants(&ldap_server.id).await?;
        let granted: Vec<String> =
            ldap_grants.iter().filter(|(k, _)| *k == SubjectKind::UserGroup).map(|(_, id)| id.clone()).collect();
        let groups = if granted.is_empty() { vec![] } else { self.tree_groups(&granted).await? };
        Ok(TreeLoad {
            cursor: TreeCursor { log, local, external, read_at: Instant::now() },
            groups,
            ldap_server,
            ldap_grants,
        })
    }

    /// Whether the change log may hold something `cursor` has not seen: cheap enough to ask
    /// before every operation.
    pub fn tree_dirty(&self, cursor: &TreeCursor) -> bool {
        cursor.local != self.store().local_commits()
            || cursor.external != self.store().external_changes()
            || cursor.read_at.elapsed() >= POLL
    }

    /// The changes after `cursor`, and the cursor after them; `None` when the reader is too
    /// far behind and should load everything again.
    pub async fn tree_changes(&self, cursor: &TreeCursor) -> Result<Option<(Vec<TreeChange>, TreeCursor)>> {
        if cursor.read_at.elapsed() >= STALE {
            return Ok(None);
        }
        let local = self.store().local_commits();
        let external = self.store().external_changes();
        let mut c = self.store().read().await?;
        let Some((changes, log)) = c.db().changes_after(&cursor.log).await? else {
            return Ok(None);
        };
        let ldap = self.builtin_ldap_server_id().await?;
        let mut out = Vec::with_capacity(changes.len());
        for ch in changes {
            let t = match ch.kind {
                ChangeKind::User => TreeChange::User(ch.id),
                ChangeKind::Group | ChangeKind::Members => TreeChange::Group(ch.id),
                ChangeKind::Grant | ChangeKind::LdapServer if ch.id == ldap => TreeChange::LdapServer,
                ChangeKind::Grant | ChangeKind::LdapServer => continue,
            };
            if !out.contains(&t) {
                out.push(t);
            }
        }
        Ok(Some((out, TreeCursor { log, local, external, read_at: Instant::now() })))
    }

    /// These users as stored now (absent: deleted), with only the `profile` fields the read
    /// model shows and no secrets.
    pub async fn tree_users(&self, ids: &[String], profile: &[&'static Field]) -> Result<Vec<User>> {
        let mut c = self.store().read().await?;
        Ok(c.db().read_user_views(ids, profile).await?)
    }

    /// These groups with their members (absent: deleted).
    pub async fn tree_groups(&self, ids: &[String]) -> Result<Vec<(Group, Vec<String>)>> {
        let mut c = self.store().read().await?;
        Ok(c.db().groups_with_members(Some(ids)).await?)
    }

    /// The users and groups associated with the LDAP server `id`.
    pub async fn tree_ldap_grants(&self, id: &str) -> Result<Vec<(SubjectKind, String)>> {
        let mut c = self.store().read().await?;
        let r = ResourceRef { kind: ResourceKind::LdapServer, id: id.to_string() };
        Ok(c.db().all_subjects_of(&r).await?)
    }

    /// The built-in LDAP server's id, read once: the server is never deleted.
    pub async fn builtin_ldap_server_id(&self) -> Result<String> {
        if let Some(id) = self.inner.ldap_server_id.get() {
            return Ok(id.clone());
        }
        let id = self.builtin_ldap_server().await?.id;
        Ok(self.inner.ldap_server_id.get_or_init(|| id).clone())
    }

    /// Listens for other processes' changes (PostgreSQL), so that read models here read them
    /// at once rather than within a second.
    pub fn watch_changes(&self) {
        self.inner.watching.call_once(|| self.store().watch_changes());
    }

    /// Drops change log rows no reader needs any more (the scheduler's sweep).
    pub(crate) async fn prune_change_log(&self) -> Result<u64> {
        let mut tx = self.store().begin().await?;
        // The log's times are the database's clock, not the directory's.
        let n = tx.db().prune_changes(chrono::Utc::now() - CHANGE_LOG_KEEP).await?;
        tx.commit().await?;
        Ok(n)
    }
}
