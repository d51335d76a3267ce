//! The LDAP tree as a read model: the groups associated with the LDAP server, and the unstaged
//! users it reaches (associated directly or through such a group; no other user or group can
//! ever be present), compacted to what LDAP shows, with the LDAP server's grants and the indexes searches use. A directory of
//! a million people of whom none uses LDAP holds no user here. Loaded once, then
//! kept coherent with the directory's change log before each operation (`Tree::fresh`), so a
//! change made through any interface is in the next operation's answer.
//!
//! Who is in the tree (§3.1, §10; JumpCloud: users must be bound to the LDAP directory):
//! ```text
//!  STAGED ──────────────────────────────────────────────▶ absent
//!  not associated with the LDAP server (nor a group of it) ▶ absent
//!  locked, and the server's userLockoutAction is remove ──▶ absent
//!  password expired, and userPasswordExpirationAction remove ▶ absent
//!  otherwise ─────────────────────────────────────────────▶ present (SUSPENDED: nsAccountLock TRUE)
//! ```
//! Groups are present when associated with the LDAP server; their members are the present
//! users among theirs.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use cairn_directory::{Directory, TreeChange, TreeCursor};
use cairn_domain::graph::SubjectKind;
use cairn_domain::{Group, LdapServer, LdapServerAction, State, User};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// A user as LDAP shows it.
#[derive(Debug, Clone)]
pub struct UserRec {
    pub id: String,
    /// The username as stored (case kept); `key` is its lowercase form.
    pub uid: String,
    pub key: String,
    pub mail: String,
    pub state: State,
    pub locked: bool,
    pub expired: bool,
    /// When the password was last set: a bind made before a change ends with it.
    pub password_date: Option<DateTime<Utc>>,
    /// JumpCloud's `ldap_binding_user`: may search the whole tree.
    pub service: bool,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    pub cn: String,
    pub sn: String,
    pub given_name: Option<String>,
    pub display_name: Option<String>,
    pub title: Option<String>,
    pub department: Option<String>,
    pub employee_number: Option<String>,
    pub employee_type: Option<String>,
    pub company: Option<String>,
    pub location: Option<String>,
    pub description: Option<String>,
    pub manager: Option<String>,
    pub phones: Vec<String>,
    pub mobiles: Vec<String>,
    pub uid_number: Option<i64>,
    pub gid_number: Option<i64>,
    pub ssh_keys: Vec<String>,
}

fn text(u: &User, f: &str) -> Option<String> {
    u.text(f).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
}

impl UserRec {
    pub fn of(u: &User) -> UserRec {
        let first = text(u, "firstname");
        let last = text(u, "lastname");
        let display = text(u, "displayname");
        let cn = display.clone().unwrap_or_else(|| match (&first, &last) {
            (Some(f), Some(l)) => format!("{f} {l}"),
            (Some(x), None) | (None, Some(x)) => x.clone(),
            (None, None) => u.username.clone(),
        });
        let mut phones = Vec::new();
        let mut mobiles = Vec::new();
        if let Some(Value::Array(list)) = u.profile.get("phoneNumbers") {
            for p in list {
                let Some(n) = p.get("number").and_then(Value::as_str).filter(|n| !n.trim().is_empty()) else {
                    continue;
                };
                if p.get("type").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("mobile")) {
                    mobiles.push(n.to_string());
                } else {
                    phones.push(n.to_string());
                }
            }
        }
        let ssh_keys = match u.profile.get("ssh_keys") {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(|k| k.get("public_key").and_then(Value::as_str))
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect(),
            _ => vec![],
        };
        UserRec {
            id: u.id.clone(),
            uid: u.username.clone(),
            key: u.username.to_lowercase(),
            mail: u.email.clone(),
            state: u.state,
            locked: u.account_locked,
            expired: u.password_expired,
            password_date: u.password_date,
            service: u.flag("ldap_binding_user"),
            created: u.created,
            updated: u.updated,
            sn: last.clone().unwrap_or_else(|| u.username.clone()),
            cn,
            given_name: first,
            display_name: display,
            title: text(u, "jobTitle"),
            department: text(u, "department"),
            employee_number: text(u, "employeeIdentifier"),
            employee_type: text(u, "employeeType"),
            company: text(u, "company"),
            location: text(u, "location"),
            description: text(u, "description"),
            manager: text(u, "manager"),
            phones,
            mobiles,
            uid_number: u.profile.get("unix_uid").and_then(Value::as_i64),
            gid_number: u.profile.get("unix_guid").and_then(Value::as_i64),
            ssh_keys,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GroupRec {
    pub id: String,
    pub name: String,
    pub key: String,
    pub description: Option<String>,
    pub gid_number: Option<i64>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    /// Every member's id, present in the tree or not.
    pub members: Vec<String>,
}

impl GroupRec {
    fn of(g: &Group, members: Vec<String>) -> GroupRec {
        GroupRec {
            id: g.id.clone(),
            name: g.name.clone(),
            key: g.name.to_lowercase(),
            description: g.description.clone().filter(|d| !d.trim().is_empty()),
            gid_number: g.unix_gid,
            created: g.created,
            updated: g.updated,
            members,
        }
    }
}

/// One consistent view of the tree.
#[derive(Default)]
pub struct Model {
    pub users: HashMap<String, Arc<UserRec>>,
    pub groups: HashMap<String, Arc<GroupRec>>,
    /// user id → ids of the groups it is a member of.
    pub user_groups: HashMap<String, Vec<String>>,
    /// Lowercase username / e-mail → user id.
    pub by_uid: HashMap<String, String>,
    pub by_mail: HashMap<String, String>,
    /// Lowercase group name → group id.
    pub by_cn: HashMap<String, String>,
    pub granted_users: HashSet<String>,
    pub granted_groups: HashSet<String>,
    pub lockout_remove: bool,
    pub expiration_remove: bool,
    pub server_id: String,
}

impl Model {
    fn put_user(&mut self, u: UserRec) {
        if let Some(old) = self.users.get(&u.id) {
            let (old_key, old_mail) = (old.key.clone(), old.mail.to_lowercase());
            self.by_uid.remove(&old_key);
            self.by_mail.remove(&old_mail);
        }
        self.by_uid.insert(u.key.clone(), u.id.clone());
        self.by_mail.insert(u.mail.to_lowercase(), u.id.clone());
        self.users.insert(u.id.clone(), Arc::new(u));
    }

    fn drop_user(&mut self, id: &str) {
        if let Some(old) = self.users.remove(id) {
            self.by_uid.remove(&old.key);
            self.by_mail.remove(&old.mail.to_lowercase());
        }
    }

    fn put_group(&mut self, g: GroupRec) {
        self.drop_group(&g.id);
        for m in &g.members {
            self.user_groups.entry(m.clone()).or_default().push(g.id.clone());
        }
        self.by_cn.insert(g.key.clone(), g.id.clone());
        self.groups.insert(g.id.clone(), Arc::new(g));
    }

    /// Removes the group, and returns it.
    fn drop_group(&mut self, id: &str) -> Option<Arc<GroupRec>> {
        let old = self.groups.remove(id)?;
        self.by_cn.remove(&old.key);
        for m in &old.members {
            if let Some(list) = self.user_groups.get_mut(m) {
                list.retain(|g| g != id);
                if list.is_empty() {
                    self.user_groups.remove(m);
                }
            }
        }
        Some(old)
    }

    /// Whether the LDAP server reaches this user, directly or through a group: only such
    /// users are held.
    fn reaches(&self, user_id: &str) -> bool {
        self.granted_users.contains(user_id)
            || self.user_groups.get(user_id).is_some_and(|gs| gs.iter().any(|g| self.granted_groups.contains(g)))
    }

    /// The users the server reaches that are not held (to read), through any grant or, with
    /// `groups`, through these groups only; sorted, so that reads by id go in index order.
    fn wanted(&self, groups: Option<&[String]>) -> Vec<String> {
        let mut out: HashSet<&String> = HashSet::new();
        let held = |id: &&String| !self.users.contains_key(*id);
        match groups {
            None => {
                out.extend(self.granted_users.iter().filter(held));
                for g in self.granted_groups.iter().filter_map(|g| self.groups.get(g)) {
                    out.extend(g.members.iter().filter(held));
                }
            }
            Some(ids) => {
                for g in ids.iter().filter(|g| self.granted_groups.contains(*g)).filter_map(|g| self.groups.get(g)) {
                    out.extend(g.members.iter().filter(held));
                }
            }
        }
        let mut out: Vec<String> = out.into_iter().cloned().collect();
        out.sort_unstable();
        out
    }

    /// What the model holds, in `/metrics` (the tree's memory grows with it).
    fn report(&self) {
        metrics::gauge!("cairn_ldap_tree_held", "kind" => "user").set(self.users.len() as f64);
        metrics::gauge!("cairn_ldap_tree_held", "kind" => "group").set(self.groups.len() as f64);
    }

    /// Drops the held users among `ids` that the server no longer reaches.
    fn drop_unreached<'a>(&mut self, ids: impl IntoIterator<Item = &'a String>) {
        let gone: Vec<String> =
            ids.into_iter().filter(|id| self.users.contains_key(*id) && !self.reaches(id)).cloned().collect();
        for id in &gone {
            self.drop_user(id);
        }
    }

    fn set_server(&mut self, s: &LdapServer, grants: &[(SubjectKind, String)]) {
        self.server_id = s.id.clone();
        self.lockout_remove = s.user_lockout_action == LdapServerAction::Remove;
        self.expiration_remove = s.user_password_expiration_action == LdapServerAction::Remove;
        self.granted_users.clear();
        self.granted_groups.clear();
        for (kind, id) in grants {
            match kind {
                SubjectKind::User => self.granted_users.insert(id.clone()),
                SubjectKind::UserGroup => self.granted_groups.insert(id.clone()),
            };
        }
    }

    /// Whether the user is in the tree (see the module's documentation).
    pub fn present(&self, u: &UserRec) -> bool {
        u.state != State::Staged
            && !(u.locked && self.lockout_remove)
            && !(u.expired && self.expiration_remove)
            && self.reaches(&u.id)
    }

    pub fn present_group(&self, g: &GroupRec) -> bool {
        self.granted_groups.contains(&g.id)
    }

    /// The present user of this id.
    pub fn user(&self, id: &str) -> Option<&Arc<UserRec>> {
        self.users.get(id).filter(|u| self.present(u))
    }

    /// The present user of this username (any case).
    pub fn user_by_uid(&self, uid: &str) -> Option<&Arc<UserRec>> {
        self.by_uid.get(&uid.to_lowercase()).and_then(|id| self.user(id))
    }

    pub fn group_by_cn(&self, cn: &str) -> Option<&Arc<GroupRec>> {
        self.by_cn.get(&cn.to_lowercase()).and_then(|id| self.groups.get(id)).filter(|g| self.present_group(g))
    }

    /// The present groups of a user, by name.
    pub fn groups_of(&self, user_id: &str) -> Vec<&Arc<GroupRec>> {
        let mut out: Vec<&Arc<GroupRec>> = self
            .user_groups
            .get(user_id)
            .map(|gs| gs.iter().filter_map(|g| self.groups.get(g)).filter(|g| self.present_group(g)).collect())
            .unwrap_or_default();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// The present members of a group, by username.
    pub fn members_of(&self, g: &GroupRec) -> Vec<&Arc<UserRec>> {
        let mut out: Vec<&Arc<UserRec>> = g.members.iter().filter_map(|m| self.user(m)).collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

/// Users read per read transaction when many come into reach at once.
const READ_PAGE: usize = 1_000;

/// The model and how to keep it fresh.
pub struct Tree {
    dir: Directory,
    model: RwLock<Model>,
    cursor: tokio::sync::Mutex<Option<TreeCursor>>,
    /// Full loads so far (metrics, tests).
    pub loads: AtomicU64,
}

impl Tree {
    pub fn new(dir: Directory) -> Tree {
        Tree { dir, model: RwLock::new(Model::default()), cursor: Default::default(), loads: AtomicU64::new(0) }
    }

    /// Applies every change committed before this call; then [`Tree::read`] shows them.
    pub async fn fresh(&self) -> Result<(), cairn_directory::Error> {
        let mut cursor = self.cursor.lock().await;
        match cursor.as_ref() {
            Some(c) if !self.dir.tree_dirty(c) => {}
            Some(c) => match self.dir.tree_changes(c).await? {
                Some((changes, next)) => {
                    if !changes.is_empty() {
                        self.apply(changes).await?;
                    }
                    *cursor = Some(next);
                }
                None => *cursor = Some(self.load().await?),
            },
            None => *cursor = Some(self.load().await?),
        }
        Ok(())
    }

    /// The model, for reading; held only while an operation evaluates (never across an await).
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, Model> {
        self.model.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Model> {
        self.model.write().unwrap_or_else(|e| e.into_inner())
    }

    async fn load(&self) -> Result<TreeCursor, cairn_directory::Error> {
        let t = self.dir.tree_load().await?;
        let mut m = Model::default();
        let groups = t.groups.len();
        for (g, members) in t.groups {
            m.put_group(GroupRec::of(&g, members));
        }
        m.set_server(&t.ldap_server, &t.ldap_grants);
        for page in m.wanted(None).chunks(READ_PAGE) {
            for u in self.records(page).await? {
                m.put_user(u);
            }
        }
        let users = m.users.len();
        m.report();
        *self.write() = m;
        self.loads.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(users, groups, "LDAP tree loaded");
        Ok(t.cursor)
    }

    /// These users, as the tree holds them (the unstaged ones among those that exist).
    async fn records(&self, ids: &[String]) -> Result<Vec<UserRec>, cairn_directory::Error> {
        let users = self.dir.tree_users(ids).await?;
        Ok(users.iter().filter(|u| u.state != State::Staged).map(UserRec::of).collect())
    }

    /// Loads what changed, then applies it in place under the write lock (held only while
    /// the maps change, never while the database is read). Users a change of grants or of a
    /// group's members brings into reach are read after, in pages.
    async fn apply(&self, changes: Vec<TreeChange>) -> Result<(), cairn_directory::Error> {
        let mut users = Vec::new();
        let mut groups = Vec::new();
        let mut server = false;
        for c in changes {
            match c {
                TreeChange::User(id) => users.push(id),
                TreeChange::Group(id) => groups.push(id),
                TreeChange::LdapServer => server = true,
            }
        }
        let loaded_users = if users.is_empty() { vec![] } else { self.dir.tree_users(&users).await? };
        let server = if server {
            let s = self.dir.builtin_ldap_server().await?;
            let grants = self.dir.tree_ldap_grants(&s.id).await?;
            Some((s, grants))
        } else {
            None
        };
        // The groups to read: those that changed, and those a new grant brings in.
        if let Some((_, grants)) = &server {
            let m = self.read();
            for (kind, id) in grants {
                if *kind == SubjectKind::UserGroup && !m.groups.contains_key(id) && !groups.contains(id) {
                    groups.push(id.clone());
                }
            }
        }
        let loaded_groups = if groups.is_empty() { vec![] } else { self.dir.tree_groups(&groups).await? };
        let wanted = {
            let mut guard = self.write();
            let m = &mut *guard;
            // Members before and after a change of their group: whom it may bring or take away.
            let mut moved: Vec<String> = Vec::new();
            if let Some((s, grants)) = &server {
                m.set_server(s, grants);
                let ungranted: Vec<String> =
                    m.groups.keys().filter(|g| !m.granted_groups.contains(*g)).cloned().collect();
                for g in &ungranted {
                    m.drop_group(g);
                }
            }
            let mut found: HashMap<&str, &(Group, Vec<String>)> =
                loaded_groups.iter().map(|g| (g.0.id.as_str(), g)).collect();
            for id in &groups {
                if let Some(old) = m.drop_group(id) {
                    moved.extend(old.members.iter().cloned());
                }
                match found.remove(id.as_str()) {
                    Some((g, members)) if m.granted_groups.contains(id) => {
                        m.put_group(GroupRec::of(g, members.clone()))
                    }
                    _ => {}
                }
            }
            if server.is_some() {
                moved = m.users.keys().cloned().collect();
            }
            m.drop_unreached(&moved);
            let found: HashMap<&str, &User> = loaded_users.iter().map(|u| (u.id.as_str(), u)).collect();
            for id in &users {
                match found.get(id.as_str()) {
                    Some(u) if u.state != State::Staged && m.reaches(id) => m.put_user(UserRec::of(u)),
                    _ => m.drop_user(id),
                }
            }
            let mut wanted = m.wanted(if server.is_some() { None } else { Some(&groups) });
            // Just read: a staged one would otherwise be read again.
            wanted.retain(|id| !found.contains_key(id.as_str()));
            wanted
        };
        for page in wanted.chunks(READ_PAGE) {
            let recs = self.records(page).await?;
            // Operations wait for `fresh`, so none sees the model between pages.
            let mut m = self.write();
            for u in recs {
                m.put_user(u);
            }
        }
        self.read().report();
        Ok(())
    }
}
