//! The LDAP tree as a read model: the groups associated with the LDAP server, and the unstaged
//! users it reaches (associated directly or through such a group; no other user or group can
//! ever be present), compacted to what LDAP shows, with the LDAP server's grants and the
//! indexes searches use. A directory of a million people of whom none uses LDAP holds no user
//! here. Loaded once, then kept coherent with the directory's change log before each operation
//! (`Tree::fresh`), so a change made through any interface is in the next operation's answer.
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
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};

use cairn_directory::{Directory, TreeChange, TreeCursor};
use cairn_domain::fields::{self, Field};
use cairn_domain::graph::SubjectKind;
use cairn_domain::{Group, LdapServer, LdapServerAction, State, User};
use chrono::{DateTime, Utc};
use hashbrown::HashTable;
use serde_json::Value;

/// A user as LDAP shows it, kept small: a tree may hold a million of them. Text is boxed
/// (no spare capacity), the organisation's few titles, departments and the like are shared
/// between users (see [`Model::put_user`]), and the lowercase username is kept only when it
/// differs from the username.
#[derive(Debug, Clone)]
pub struct UserRec {
    pub id: String,
    /// The username as stored (case kept); [`UserRec::key`] is its lowercase form.
    pub uid: Box<str>,
    pub(crate) lower_uid: Option<Box<str>>,
    pub mail: Box<str>,
    pub state: State,
    pub locked: bool,
    pub expired: bool,
    /// JumpCloud's `ldap_binding_user`: may search the whole tree.
    pub service: bool,
    /// When the password was last set: a bind made before a change ends with it.
    pub password_date: Option<DateTime<Utc>>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    pub cn: Box<str>,
    pub sn: Box<str>,
    pub given_name: Option<Box<str>>,
    pub display_name: Option<Box<str>>,
    pub title: Option<Arc<str>>,
    pub department: Option<Arc<str>>,
    pub employee_number: Option<Box<str>>,
    pub employee_type: Option<Arc<str>>,
    pub company: Option<Arc<str>>,
    pub location: Option<Arc<str>>,
    pub description: Option<Box<str>>,
    pub manager: Option<Box<str>>,
    pub phones: Box<[Box<str>]>,
    pub mobiles: Box<[Box<str>]>,
    pub uid_number: Option<i64>,
    pub gid_number: Option<i64>,
    pub ssh_keys: Box<[Box<str>]>,
}

/// The profile fields [`UserRec::of`] reads: only these are read from the store for the tree.
const SHOWN: &[&str] = &[
    "firstname",
    "lastname",
    "displayname",
    "jobTitle",
    "department",
    "employeeIdentifier",
    "employeeType",
    "company",
    "location",
    "description",
    "manager",
    "phoneNumbers",
    "ssh_keys",
    "unix_uid",
    "unix_guid",
    "ldap_binding_user",
];

static SHOWN_FIELDS: LazyLock<Vec<&'static Field>> =
    LazyLock::new(|| fields::PROFILE.iter().filter(|f| SHOWN.contains(&f.name)).collect());

fn text<'u>(u: &'u User, f: &str) -> Option<&'u str> {
    u.text(f).map(str::trim).filter(|s| !s.is_empty())
}

impl UserRec {
    pub fn of(u: &User) -> UserRec {
        let first = text(u, "firstname");
        let last = text(u, "lastname");
        let display = text(u, "displayname");
        let cn: Box<str> = match (display, first, last) {
            (Some(d), _, _) => d.into(),
            (None, Some(f), Some(l)) => format!("{f} {l}").into(),
            (None, Some(x), None) | (None, None, Some(x)) => x.into(),
            (None, None, None) => u.username.as_str().into(),
        };
        let mut phones = Vec::new();
        let mut mobiles = Vec::new();
        if let Some(Value::Array(list)) = u.profile.get("phoneNumbers") {
            for p in list {
                let Some(n) = p.get("number").and_then(Value::as_str).filter(|n| !n.trim().is_empty()) else {
                    continue;
                };
                if p.get("type").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("mobile")) {
                    mobiles.push(n.into());
                } else {
                    phones.push(n.into());
                }
            }
        }
        let ssh_keys: Box<[Box<str>]> = match u.profile.get("ssh_keys") {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(|k| k.get("public_key").and_then(Value::as_str))
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(Into::into)
                .collect(),
            _ => Box::default(),
        };
        let lower = u.username.to_lowercase();
        let shared = |f: &str| text(u, f).map(Arc::from);
        UserRec {
            id: u.id.clone(),
            uid: u.username.as_str().into(),
            lower_uid: (lower != u.username).then(|| lower.into()),
            mail: u.email.as_str().into(),
            state: u.state,
            locked: u.account_locked,
            expired: u.password_expired,
            password_date: u.password_date,
            service: u.flag("ldap_binding_user"),
            created: u.created,
            updated: u.updated,
            sn: last.unwrap_or(&u.username).into(),
            cn,
            given_name: first.map(Into::into),
            display_name: display.map(Into::into),
            title: shared("jobTitle"),
            department: shared("department"),
            employee_number: text(u, "employeeIdentifier").map(Into::into),
            employee_type: shared("employeeType"),
            company: shared("company"),
            location: shared("location"),
            description: text(u, "description").map(Into::into),
            manager: text(u, "manager").map(Into::into),
            phones: phones.into(),
            mobiles: mobiles.into(),
            uid_number: u.profile.get("unix_uid").and_then(Value::as_i64),
            gid_number: u.profile.get("unix_guid").and_then(Value::as_i64),
            ssh_keys,
        }
    }

    /// The username in lowercase: how the tree orders and finds users.
    pub fn key(&self) -> &str {
        self.lower_uid.as_deref().unwrap_or(&self.uid)
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

/// Users found by one of their fields, exactly or ignoring case. The table holds only the
/// record's pointer, hashed by the record's own field, so each index costs a user one pointer
/// rather than copies of the key and the id (at a million users, hundreds of megabytes).
pub struct UserIndex {
    table: HashTable<Arc<UserRec>>,
    key: fn(&UserRec) -> &str,
    fold: bool,
    hasher: RandomState,
}

impl UserIndex {
    fn new(key: fn(&UserRec) -> &str, fold: bool) -> UserIndex {
        UserIndex { table: HashTable::new(), key, fold, hasher: RandomState::new() }
    }

    fn hash(hasher: &RandomState, fold: bool, s: &str) -> u64 {
        let mut h = hasher.build_hasher();
        if fold {
            for c in s.chars().flat_map(char::to_lowercase) {
                h.write_u32(c as u32);
            }
        } else {
            h.write(s.as_bytes());
        }
        h.finish()
    }

    fn same(fold: bool, a: &str, b: &str) -> bool {
        if fold {
            a.chars().flat_map(char::to_lowercase).eq(b.chars().flat_map(char::to_lowercase))
        } else {
            a == b
        }
    }

    /// The user whose field is `k`.
    pub fn get(&self, k: &str) -> Option<&Arc<UserRec>> {
        let (key, fold) = (self.key, self.fold);
        self.table.find(Self::hash(&self.hasher, fold, k), |u| Self::same(fold, key(u), k))
    }

    pub fn contains_key(&self, k: &str) -> bool {
        self.get(k).is_some()
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn values(&self) -> impl Iterator<Item = &Arc<UserRec>> {
        self.table.iter()
    }

    /// Files `u` under its field, in place of whoever had it.
    pub(crate) fn insert(&mut self, u: Arc<UserRec>) {
        let UserIndex { table, key, fold, hasher } = self;
        let (key, fold) = (*key, *fold);
        let k = key(&u);
        let h = Self::hash(hasher, fold, k);
        match table.find_entry(h, |x| Self::same(fold, key(x), k)) {
            Ok(mut e) => *e.get_mut() = u,
            Err(_) => {
                table.insert_unique(h, u, |x| Self::hash(hasher, fold, key(x)));
            }
        }
    }

    /// Removes `u` (this record's id under its field: another user now filed there stays).
    fn remove(&mut self, u: &UserRec) {
        let h = Self::hash(&self.hasher, self.fold, (self.key)(u));
        if let Ok(e) = self.table.find_entry(h, |x| x.id == u.id) {
            e.remove();
        }
    }
}

/// One consistent view of the tree.
pub struct Model {
    /// By id.
    pub users: UserIndex,
    pub groups: HashMap<String, Arc<GroupRec>>,
    /// user id → ids of the groups it is a member of.
    pub user_groups: HashMap<String, Vec<String>>,
    /// By username / e-mail, ignoring case.
    pub by_uid: UserIndex,
    pub by_mail: UserIndex,
    /// The values users share (titles, departments …), each held once. Values no user holds
    /// any more are let go when the set has doubled since it was last trimmed.
    shared: HashSet<Arc<str>>,
    shared_trim_at: usize,
    /// Lowercase group name → group id.
    pub by_cn: HashMap<String, String>,
    pub granted_users: HashSet<String>,
    pub granted_groups: HashSet<String>,
    pub lockout_remove: bool,
    pub expiration_remove: bool,
    pub server_id: String,
}

impl Default for Model {
    fn default() -> Model {
        Model {
            users: UserIndex::new(|u| &u.id, false),
            groups: HashMap::new(),
            user_groups: HashMap::new(),
            by_uid: UserIndex::new(|u| &u.uid, true),
            by_mail: UserIndex::new(|u| &u.mail, true),
            by_cn: HashMap::new(),
            shared: HashSet::new(),
            shared_trim_at: 1024,
            granted_users: HashSet::new(),
            granted_groups: HashSet::new(),
            lockout_remove: false,
            expiration_remove: false,
            server_id: String::new(),
        }
    }
}

impl Model {
    pub(crate) fn put_user(&mut self, mut u: UserRec) {
        self.drop_user(&u.id);
        for f in [&mut u.title, &mut u.department, &mut u.employee_type, &mut u.company, &mut u.location] {
            if let Some(v) = f.take() {
                *f = Some(match self.shared.get(&v) {
                    Some(held) => held.clone(),
                    None => {
                        self.shared.insert(v.clone());
                        v
                    }
                });
            }
        }
        if self.shared.len() >= self.shared_trim_at {
            self.shared.retain(|v| Arc::strong_count(v) > 1);
            self.shared_trim_at = (self.shared.len() * 2).max(1024);
        }
        let u = Arc::new(u);
        self.by_uid.insert(u.clone());
        self.by_mail.insert(u.clone());
        self.users.insert(u);
    }

    fn drop_user(&mut self, id: &str) {
        if let Some(old) = self.users.get(id).cloned() {
            self.users.remove(&old);
            self.by_uid.remove(&old);
            self.by_mail.remove(&old);
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
        let held = |id: &&String| !self.users.contains_key(id);
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
            ids.into_iter().filter(|id| self.users.contains_key(id) && !self.reaches(id)).cloned().collect();
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
        self.by_uid.get(uid).filter(|u| self.present(u))
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
        out.sort_by(|a, b| a.key().cmp(b.key()));
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
        let mut pages = self.records(m.wanted(None));
        while let Some(page) = pages.recv().await {
            for u in page? {
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

    /// These users, as the tree holds them (the unstaged ones among those that exist), in
    /// pages read and decoded on another task while the caller files the page before: at a
    /// million users a load is mostly decoding rows. A failed read is the last page.
    fn records(&self, ids: Vec<String>) -> tokio::sync::mpsc::Receiver<Result<Vec<UserRec>, cairn_directory::Error>> {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let dir = self.dir.clone();
        tokio::spawn(async move {
            for page in ids.chunks(READ_PAGE) {
                let recs = dir
                    .tree_users(page, &SHOWN_FIELDS)
                    .await
                    .map(|users| users.iter().filter(|u| u.state != State::Staged).map(UserRec::of).collect());
                let failed = recs.is_err();
                // The receiver gone (its load failed or was dropped) ends the reads.
                if tx.send(recs).await.is_err() || failed {
                    return;
                }
            }
        });
        rx
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
        let loaded_users = if users.is_empty() { vec![] } else { self.dir.tree_users(&users, &SHOWN_FIELDS).await? };
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
                moved = m.users.values().map(|u| u.id.clone()).collect();
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
        let mut pages = self.records(wanted);
        while let Some(page) = pages.recv().await {
            let page = page?;
            // Operations wait for `fresh`, so none sees the model between pages.
            let mut m = self.write();
            for u in page {
                m.put_user(u);
            }
        }
        self.read().report();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_domain::fields::Kind;

    fn user(n: usize, title: &str) -> User {
        let mut u = User::new(
            format!("{n:024x}"),
            format!("User{n}"),
            format!("user{n}@example.com"),
            State::Activated,
            Utc::now(),
        );
        u.profile.insert("jobTitle".into(), Value::String(title.into()));
        u.profile.insert("department".into(), Value::String("R&D".into()));
        u
    }

    /// The tree reads only [`SHOWN`] of a user's profile: a user read so gives the same entry
    /// as the whole user, whatever the profile holds.
    #[test]
    fn the_tree_reads_every_field_it_shows() {
        assert_eq!(SHOWN_FIELDS.len(), SHOWN.len(), "every name in SHOWN is a profile field");
        let mut full = user(7, "Engineer");
        for f in fields::PROFILE {
            let v = match (f.kind, f.name) {
                (_, "phoneNumbers") => {
                    serde_json::json!([{"type": "work", "number": "+1 555"}, {"type": "mobile", "number": "+1 556"}])
                }
                (_, "ssh_keys") => serde_json::json!([{"name": "k", "public_key": "ssh-ed25519 AAAA k"}]),
                (Kind::Json, _) => serde_json::json!({"x": 1}),
                (Kind::Bool, _) => Value::Bool(true),
                (Kind::Int, _) => Value::from(4242),
                (Kind::Text | Kind::Time, _) => Value::String(format!("{} value", f.name)),
            };
            full.profile.insert(f.name.into(), v);
        }
        let mut read = full.clone();
        read.profile.retain(|k, _| SHOWN.contains(&k.as_str()));
        assert_eq!(format!("{:?}", UserRec::of(&read)), format!("{:?}", UserRec::of(&full)));
    }

    /// Users find each other by id, username and e-mail in any case; shared values are held
    /// once, and those no user holds any more are let go (titles churned by a sync would
    /// otherwise grow the set until the next full load).
    #[test]
    fn indexes_and_shared_values() {
        let mut m = Model::default();
        for n in 0..3 {
            m.put_user(UserRec::of(&user(n, "Engineer")));
        }
        assert_eq!(m.by_uid.get("USER1").map(|u| u.id.clone()), Some(format!("{:024x}", 1)));
        assert_eq!(m.by_mail.get("User2@Example.COM").map(|u| &*u.uid), Some("User2"));
        assert_eq!(m.users.get(&format!("{:024x}", 0)).map(|u| u.key()), Some("user0"));
        let a = m.users.get(&format!("{:024x}", 0)).unwrap().title.clone().unwrap();
        let b = m.users.get(&format!("{:024x}", 2)).unwrap().title.clone().unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one title, held once");
        drop((a, b));
        // A rename is filed under the new name only; a removal leaves no trace.
        let mut renamed = user(1, "Engineer");
        renamed.username = "Renamed".into();
        m.put_user(UserRec::of(&renamed));
        assert!(m.by_uid.get("user1").is_none() && m.by_uid.get("renamed").is_some());
        m.drop_user(&format!("{:024x}", 2));
        assert!(m.by_mail.get("user2@example.com").is_none() && m.users.len() == 2);
        // One user's title changed 10,000 times: the set stays small.
        for i in 0..10_000 {
            m.put_user(UserRec::of(&user(0, &format!("Title {i}"))));
        }
        assert!(m.shared.len() < 2_100, "{} shared values held", m.shared.len());
        assert_eq!(m.users.get(&format!("{:024x}", 0)).unwrap().title.as_deref(), Some("Title 9999"));
    }
}
