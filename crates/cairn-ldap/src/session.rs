//! One connection's operations: one method per LDAP operation, one exhaustive match, precise
//! result codes with readable messages. Binds go through `Directory::authenticate` (protocol
//! `ldap`, the LDAP server as the resource); everything read comes from the read model,
//! refreshed before each operation.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_directory::{AuthRequest, Authenticated, Credential, Ctx, Error, Principal, Refusal};
use cairn_domain::access::{Denial, Protocol};
use cairn_domain::graph::{ResourceKind, ResourceRef};
use cairn_domain::{Actor, Secret, State};
use ldap3_proto::control::LdapControl;
use ldap3_proto::proto::*;

use crate::entry::{attr, Entry, Target, ATTRS};
use crate::filter::{eval, group_candidates, user_candidates};
use crate::model::Model;
use crate::schema::{self, OID_PASSWD, OID_STARTTLS, OID_WHOAMI};
use crate::Shared;

/// Paged searches a connection may keep open at once; the oldest is dropped past it.
const MAX_OPEN_PAGES: usize = 8;
/// Past this many candidates a search is evaluated off the async runtime, so a scan of the
/// whole tree does not hold up other connections.
const BLOCKING_SCAN: usize = 2_000;

#[derive(Debug, Clone, PartialEq)]
enum Bound {
    Anonymous,
    User { id: String, dn: String, password_date: Option<chrono::DateTime<chrono::Utc>> },
}

/// An entry of a result, by identity: looked up again when its page is sent, so a change
/// between pages shows.
#[derive(Debug, Clone)]
enum Item {
    Base,
    Users,
    Groups,
    User(String),
    Group(String),
}

struct Paged {
    /// What the search asked, to refuse a cookie sent with another search.
    request: (String, LdapSearchScope, LdapFilter),
    remaining: VecDeque<Item>,
    attrs: Vec<String>,
    typesonly: bool,
    opened: Instant,
}

/// What the connection loop does after an operation.
pub enum After {
    Continue,
    Close,
    /// Answer sent; the loop upgrades the connection to TLS.
    StartTls,
}

pub struct Session {
    shared: Arc<Shared>,
    peer: SocketAddr,
    bound: Bound,
    pub tls: bool,
    pages: HashMap<Vec<u8>, Paged>,
}

fn result(code: LdapResultCode, message: impl Into<String>) -> LdapResult {
    LdapResult { code, matcheddn: String::new(), message: message.into(), referral: vec![] }
}

fn msg(id: i32, op: LdapOp) -> LdapMsg {
    LdapMsg { msgid: id, op, ctrl: vec![] }
}

fn done(id: i32, code: LdapResultCode, message: impl Into<String>) -> LdapMsg {
    msg(id, LdapOp::SearchResultDone(result(code, message)))
}

fn ext(id: i32, code: LdapResultCode, message: &str, value: Option<Vec<u8>>) -> LdapMsg {
    msg(id, LdapOp::ExtendedResponse(LdapExtendedResponse { res: result(code, message), name: None, value }))
}

/// The attributes an entry returns for a request's attribute list (RFC 4511 §4.5.1.8).
struct Selection {
    all_user: bool,
    all_operational: bool,
    named: Vec<&'static str>,
    /// Names of the special entries' attributes (RootDSE, subschema), as asked.
    raw: Vec<String>,
}

impl Selection {
    fn of(attrs: &[String]) -> Selection {
        let none = attrs.len() == 1 && attrs[0] == "1.1";
        Selection {
            all_user: !none && (attrs.is_empty() || attrs.iter().any(|a| a == "*")),
            all_operational: attrs.iter().any(|a| a == "+"),
            named: attrs.iter().filter_map(|a| attr(a)).map(|d| d.name).collect(),
            raw: attrs.iter().map(|a| a.to_ascii_lowercase()).collect(),
        }
    }

    fn wants(&self, name: &'static str, operational: bool) -> bool {
        (if operational { self.all_operational } else { self.all_user }) || self.named.contains(&name)
    }

    fn wants_raw(&self, name: &str) -> bool {
        self.all_user || self.all_operational || self.raw.iter().any(|r| r.eq_ignore_ascii_case(name))
    }
}

fn partial(name: &str, values: Vec<String>, typesonly: bool) -> LdapPartialAttribute {
    LdapPartialAttribute {
        atype: name.to_string(),
        vals: if typesonly { vec![] } else { values.into_iter().map(String::into_bytes).collect() },
    }
}

/// Evaluates a filter over a special entry's attribute list (RootDSE, subschema), where only
/// presence and equality make sense.
fn special_matches(f: &LdapFilter, attrs: &[(&str, Vec<String>)]) -> bool {
    let get = |a: &str| attrs.iter().find(|(n, _)| n.eq_ignore_ascii_case(a)).map(|(_, v)| v);
    match f {
        LdapFilter::Present(a) => a.eq_ignore_ascii_case("objectClass") || get(a).is_some(),
        LdapFilter::Equality(a, v) => get(a).is_some_and(|vs| vs.iter().any(|x| x.eq_ignore_ascii_case(v))),
        LdapFilter::And(l) => l.iter().all(|x| special_matches(x, attrs)),
        LdapFilter::Or(l) => l.iter().any(|x| special_matches(x, attrs)),
        LdapFilter::Not(x) => !special_matches(x, attrs),
        _ => false,
    }
}

impl Session {
    pub fn new(shared: Arc<Shared>, peer: SocketAddr, tls: bool) -> Session {
        Session { shared, peer, bound: Bound::Anonymous, tls, pages: HashMap::new() }
    }

    fn ctx(&self) -> Ctx {
        Ctx::new(Actor { kind: "user".into(), id: None, name: None }, "ldap", Some(self.peer.ip().to_string()))
    }

    /// The bound user, if its bind still stands: present in the tree, active, unlocked, and
    /// with the password it bound with. A bind ends when any of these changes.
    fn check_bound(&mut self, m: &Model) {
        if let Bound::User { id, password_date, .. } = &self.bound {
            let ok = m.user(id).is_some_and(|u| {
                u.state == State::Activated && !u.locked && !u.expired && u.password_date == *password_date
            });
            if !ok {
                tracing::info!(peer = %self.peer, user = %id, "LDAP bind ended: the account changed");
                self.bound = Bound::Anonymous;
            }
        }
    }

    /// Handles one message: the answers to send, and what the connection does next.
    pub async fn handle(&mut self, m: LdapMsg) -> (Vec<LdapMsg>, After) {
        let id = m.msgid;
        let kind = op_name(&m.op);
        metrics::counter!("cairn_ldap_operations_total", "op" => kind).increment(1);
        match m.op {
            LdapOp::BindRequest(b) => (vec![self.bind(id, b).await], After::Continue),
            LdapOp::UnbindRequest => (vec![], After::Close),
            LdapOp::SearchRequest(s) => (self.search(id, s, &m.ctrl).await, After::Continue),
            LdapOp::CompareRequest(c) => (vec![self.compare(id, c).await], After::Continue),
            LdapOp::ExtendedRequest(e) => self.extended(id, e).await,
            // Nothing runs long enough to abandon; no answer is sent (RFC 4511 §4.11).
            LdapOp::AbandonRequest(_) => (vec![], After::Continue),
            LdapOp::AddRequest(_) => (vec![msg(id, LdapOp::AddResponse(read_only()))], After::Continue),
            LdapOp::ModifyRequest(_) => (vec![msg(id, LdapOp::ModifyResponse(read_only()))], After::Continue),
            LdapOp::DelRequest(_) => (vec![msg(id, LdapOp::DelResponse(read_only()))], After::Continue),
            LdapOp::ModifyDNRequest(_) => (vec![msg(id, LdapOp::ModifyDNResponse(read_only()))], After::Continue),
            // A client sending a server's message is not speaking LDAP.
            _ => (
                vec![ldap3_proto::DisconnectionNotice::gen_response(
                    LdapResultCode::ProtocolError,
                    "a client sent a response message",
                )],
                After::Close,
            ),
        }
    }

    // ---- bind -------------------------------------------------------------------------

    async fn bind(&mut self, id: i32, b: LdapBindRequest) -> LdapMsg {
        let answer = |code, message: &str| {
            msg(id, LdapOp::BindResponse(LdapBindResponse { res: result(code, message), saslcreds: None }))
        };
        // A failed bind, or one of another kind, leaves the connection anonymous (RFC 4513 §5).
        self.bound = Bound::Anonymous;
        self.pages.clear();
        if b.version != 3 {
            return answer(LdapResultCode::ProtocolError, "only LDAP version 3 is supported");
        }
        let pw = match &b.cred {
            LdapBindCred::Simple(pw) => pw.clone(),
            _ => return answer(LdapResultCode::AuthMethodNotSupported, "only simple binds are supported"),
        };
        match (b.dn.trim().is_empty(), pw.is_empty()) {
            (true, true) => return answer(LdapResultCode::Success, ""),
            // RFC 4513 §5.1.2: a DN with an empty password is an unauthenticated bind, which
            // must never authenticate as that DN.
            (false, true) => {
                metrics::counter!("cairn_ldap_binds_total", "result" => "unauthenticated").increment(1);
                return answer(
                    LdapResultCode::UnwillingToPerform,
                    "unauthenticated bind (a DN with an empty password) is not allowed",
                );
            }
            (true, false) => return answer(LdapResultCode::InvalidCredentials, "invalid credentials"),
            (false, false) => {}
        }
        // Only user DNs can bind; anything else is checked as an unknown login, so it costs
        // the same time and leaves an event.
        let login = match self.shared.base.target(&b.dn) {
            Some(Target::User(uid)) => uid,
            _ => b.dn.clone(),
        };
        let resource = match self.shared.dir.builtin_ldap_server_id().await {
            Ok(rid) => ResourceRef { kind: ResourceKind::LdapServer, id: rid },
            Err(e) => {
                tracing::error!(error = %e, "LDAP bind: the LDAP server record cannot be read");
                return answer(LdapResultCode::Other, "internal error; see the server log");
            }
        };
        let secret = Secret::new(pw);
        let req = AuthRequest {
            protocol: Protocol::Ldap,
            credential: Credential::Password { login: &login, password: &secret, code: None },
            resource: Some(resource),
            client_addr: Some(self.peer.ip().to_string()),
            device: None,
        };
        let (code, message, outcome) = match self.shared.dir.authenticate(&self.ctx(), req).await {
            Ok(Authenticated::Granted(Principal::User(u))) => {
                let dn = format!("uid={},{}", crate::entry::escape_value(&u.username), self.shared.base.users_dn);
                self.bound = Bound::User { id: u.id.clone(), dn, password_date: u.password_date };
                (LdapResultCode::Success, "", "success")
            }
            Ok(_) => (LdapResultCode::InvalidCredentials, "invalid credentials", "refused"),
            // The password was right: its owner may learn why (RFC 4513 §6.1, ppolicy-style).
            Err(Error::Refused(Refusal::Denied(Denial::PasswordExpired))) => (
                LdapResultCode::InvalidCredentials,
                "the password has expired: change it in the user portal, then bind again",
                "expired",
            ),
            Err(Error::Refused(Refusal::Throttled)) => {
                (LdapResultCode::Busy, "too many failed attempts from this address; try again later", "throttled")
            }
            Err(Error::Refused(_)) => (LdapResultCode::InvalidCredentials, "invalid credentials", "refused"),
            Err(e) => {
                tracing::error!(error = %e, "LDAP bind failed");
                (LdapResultCode::Other, "internal error; see the server log", "error")
            }
        };
        metrics::counter!("cairn_ldap_binds_total", "result" => outcome).increment(1);
        answer(code, message)
    }

    // ---- search -----------------------------------------------------------------------

    async fn search(&mut self, id: i32, s: LdapSearchRequest, ctrl: &[LdapControl]) -> Vec<LdapMsg> {
        let shared = self.shared.clone();
        let Some(target) = shared.base.target(&s.base) else {
            return vec![done(id, LdapResultCode::InvalidDNSyntax, format!("'{}' is not a DN", s.base))];
        };
        let sel = Selection::of(&s.attrs);
        match target {
            Target::RootDse => {
                if s.scope != LdapSearchScope::Base {
                    return vec![done(id, LdapResultCode::Success, "")];
                }
                let attrs = schema::root_dse(&shared.base.dn, shared.tls.is_some() && !self.tls);
                return self.special(id, "", &attrs, &s, &sel);
            }
            Target::Subschema => {
                if s.scope != LdapSearchScope::Base {
                    return vec![done(id, LdapResultCode::Success, "")];
                }
                return self.special(id, crate::entry::SUBSCHEMA_DN, &schema::subschema(), &s, &sel);
            }
            _ => {}
        }
        if let Err(e) = shared.tree.fresh().await {
            tracing::error!(error = %e, "LDAP: the tree cannot be read");
            return vec![done(id, LdapResultCode::Unavailable, "the directory cannot be read; see the server log")];
        }
        self.check_bound(&shared.tree.read());
        let Bound::User { id: me, .. } = self.bound.clone() else {
            return vec![done(
                id,
                LdapResultCode::InsufficentAccessRights,
                "bind first: anonymous clients read only the RootDSE and the subschema",
            )];
        };
        let service = shared.tree.read().user(&me).is_some_and(|u| u.service);

        // Simple paged results (RFC 2696).
        let paging = ctrl.iter().find_map(|c| match c {
            LdapControl::SimplePagedResults { size, cookie } => Some((*size, cookie.clone())),
            _ => None,
        });
        let request = (s.base.to_lowercase(), s.scope.clone(), s.filter.clone());
        let limits = &shared.limits;
        let mut p = match &paging {
            Some((size, cookie)) if !cookie.is_empty() => {
                let Some(p) = self.pages.get(cookie) else {
                    return vec![done(
                        id,
                        LdapResultCode::UnwillingToPerform,
                        "the paged results cookie is not one this connection was given",
                    )];
                };
                if p.request != request {
                    return vec![done(
                        id,
                        LdapResultCode::UnwillingToPerform,
                        "a paged results cookie must come back with the search it was given for",
                    )];
                }
                if *size <= 0 {
                    self.pages.remove(cookie);
                    return vec![paged_done(id, LdapResultCode::Success, "", vec![])];
                }
                self.pages.remove(cookie).expect("checked above")
            }
            _ => {
                let started = Instant::now();
                let time_limit = match s.timelimit {
                    n if n > 0 => Duration::from_secs(n as u64).min(limits.time_limit),
                    _ => limits.time_limit,
                };
                let found = match self.collect(&s, target, &me, service, started, time_limit).await {
                    Ok(items) => items,
                    Err(r) => return vec![done(id, r.code, r.message)],
                };
                Paged {
                    request,
                    remaining: found.into(),
                    attrs: s.attrs.clone(),
                    typesonly: s.typesonly,
                    opened: Instant::now(),
                }
            }
        };
        let mut out = Vec::new();
        let page = match &paging {
            Some((size, _)) => (*size).clamp(1, limits.max_page as i64) as usize,
            None => {
                let client = if s.sizelimit > 0 { s.sizelimit as usize } else { usize::MAX };
                client.min(limits.size_limit)
            }
        };
        let sel = Selection::of(&p.attrs);
        {
            let m = shared.tree.read();
            while out.len() < page {
                let Some(item) = p.remaining.pop_front() else { break };
                if let Some(e) = self.entry_msg(id, &m, &item, &sel, p.typesonly) {
                    out.push(e);
                }
            }
            // Entries gone since the search began are not counted against the page.
            while p.remaining.front().is_some_and(|i| !item_present(&m, i)) {
                p.remaining.pop_front();
            }
        }
        metrics::counter!("cairn_ldap_entries_returned_total").increment(out.len() as u64);
        match paging {
            Some(_) if !p.remaining.is_empty() => {
                let cookie: Vec<u8> = rand::random::<[u8; 16]>().to_vec();
                let estimate = p.remaining.len() as i64;
                if self.pages.len() >= MAX_OPEN_PAGES {
                    let oldest = self.pages.iter().min_by_key(|(_, v)| v.opened).map(|(k, _)| k.clone());
                    if let Some(k) = oldest {
                        self.pages.remove(&k);
                    }
                }
                self.pages.insert(cookie.clone(), p);
                out.push(paged_done_with(id, estimate, cookie));
            }
            Some(_) => out.push(paged_done(id, LdapResultCode::Success, "", vec![])),
            None if !p.remaining.is_empty() => out.push(done(
                id,
                LdapResultCode::SizeLimitExceeded,
                format!("more than {page} entries match; use the paged results control or a narrower filter"),
            )),
            None => out.push(done(id, LdapResultCode::Success, "")),
        }
        out
    }

    /// The entries in scope that match, in a stable order, as this user may see them.
    async fn collect(
        &self,
        s: &LdapSearchRequest,
        target: Target,
        me: &str,
        service: bool,
        started: Instant,
        time_limit: Duration,
    ) -> Result<Vec<Item>, LdapResult> {
        let shared = self.shared.clone();
        let base = &shared.base;
        let not_found = |matched: &str| LdapResult {
            code: LdapResultCode::NoSuchObject,
            matcheddn: matched.to_string(),
            message: format!("no entry '{}'", s.base),
            referral: vec![],
        };
        // Containers and the two kinds of leaves in scope.
        let (containers, users, groups): (Vec<Item>, Option<Option<String>>, Option<Option<String>>) = {
            let m = shared.tree.read();
            use LdapSearchScope::*;
            match (&target, &s.scope) {
                (Target::Outside, _) => return Err(not_found("")),
                (Target::Missing, _) => return Err(not_found(&base.dn)),
                (Target::Base, Base) => (vec![Item::Base], None, None),
                (Target::Base, OneLevel) => (vec![Item::Users, Item::Groups], None, None),
                (Target::Base, _) => (vec![Item::Base, Item::Users, Item::Groups], Some(None), Some(None)),
                (Target::Users, Base) => (vec![Item::Users], None, None),
                (Target::Users, OneLevel) => (vec![], Some(None), None),
                (Target::Users, _) => (vec![Item::Users], Some(None), None),
                (Target::Groups, Base) => (vec![Item::Groups], None, None),
                (Target::Groups, OneLevel) => (vec![], None, Some(None)),
                (Target::Groups, _) => (vec![Item::Groups], None, Some(None)),
                (Target::User(uid), scope) => match m.user_by_uid(uid) {
                    // Another user's entry is, to one that may not read it, as absent as a
                    // missing one: no oracle of who exists.
                    Some(u) if !service && u.id != me => return Err(not_found(&base.users_dn)),
                    Some(u) if *scope != OneLevel => (vec![], Some(Some(u.id.clone())), None),
                    Some(_) => (vec![], None, None),
                    None => return Err(not_found(&base.users_dn)),
                },
                (Target::Group(_), _) if !service => return Err(not_found(&base.groups_dn)),
                (Target::Group(cn), scope) => match m.group_by_cn(cn) {
                    Some(g) if *scope != OneLevel => (vec![], None, Some(Some(g.id.clone()))),
                    Some(_) => (vec![], None, None),
                    None => return Err(not_found(&base.groups_dn)),
                },
                (Target::RootDse | Target::Subschema, _) => (vec![], None, None),
            }
        };
        // A user that is not a service account reads its own entry and nothing else.
        let (containers, users, groups) = if service {
            (containers, users, groups)
        } else {
            let mine = match users {
                Some(None) => Some(Some(me.to_string())),
                Some(Some(id)) if id == me => Some(Some(id)),
                _ => None,
            };
            (vec![], mine, None)
        };
        let filter = s.filter.clone();
        let work = move || -> Result<Vec<Item>, LdapResult> {
            let m = shared.tree.read();
            let base = &shared.base;
            let mut out = Vec::new();
            let timed_out = || LdapResult {
                code: LdapResultCode::TimeLimitExceeded,
                matcheddn: String::new(),
                message: "the search took longer than its time limit".into(),
                referral: vec![],
            };
            for c in containers {
                let e = match c {
                    Item::Base => Entry::Base,
                    Item::Users => Entry::Users,
                    _ => Entry::Groups,
                };
                if eval(&filter, e, &m, base) == Some(true) {
                    out.push(c);
                }
            }
            if let Some(which) = users {
                let mut list: Vec<&Arc<crate::model::UserRec>> = match which {
                    Some(id) => m.user(&id).into_iter().collect(),
                    None => user_candidates(&filter, &m).unwrap_or_else(|| m.users.values().collect()),
                };
                list.sort_by(|a, b| a.key().cmp(b.key()));
                for (i, u) in list.into_iter().enumerate() {
                    if i % 1024 == 0 && started.elapsed() > time_limit {
                        return Err(timed_out());
                    }
                    if m.present(u) && eval(&filter, Entry::User(u), &m, base) == Some(true) {
                        out.push(Item::User(u.id.clone()));
                    }
                }
            }
            if let Some(which) = groups {
                let mut list: Vec<&Arc<crate::model::GroupRec>> = match which {
                    Some(id) => m.groups.get(&id).into_iter().collect(),
                    None => group_candidates(&filter, &m).unwrap_or_else(|| m.groups.values().collect()),
                };
                list.sort_by(|a, b| a.key.cmp(&b.key));
                for g in list {
                    if m.present_group(g) && eval(&filter, Entry::Group(g), &m, base) == Some(true) {
                        out.push(Item::Group(g.id.clone()));
                    }
                }
            }
            Ok(out)
        };
        let big = {
            let m = self.shared.tree.read();
            user_candidates(&s.filter, &m).map_or(m.users.len(), |c| c.len()) > BLOCKING_SCAN
        };
        if big {
            tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "LDAP search task failed");
                Err(result(LdapResultCode::Other, "internal error; see the server log"))
            })
        } else {
            work()
        }
    }

    fn entry_msg(&self, id: i32, m: &Model, item: &Item, sel: &Selection, typesonly: bool) -> Option<LdapMsg> {
        let base = &self.shared.base;
        let e = match item {
            Item::Base => Entry::Base,
            Item::Users => Entry::Users,
            Item::Groups => Entry::Groups,
            Item::User(uid) => Entry::User(m.user(uid)?),
            Item::Group(gid) => Entry::Group(m.groups.get(gid).filter(|g| m.present_group(g))?),
        };
        let mut attributes = Vec::new();
        for d in ATTRS {
            if !sel.wants(d.name, d.operational) {
                continue;
            }
            let vals = e.values(m, base, d.name);
            if !vals.is_empty() {
                attributes.push(partial(d.name, vals.into_iter().map(|v| v.into_owned()).collect(), typesonly));
            }
        }
        Some(msg(id, LdapOp::SearchResultEntry(LdapSearchResultEntry { dn: e.dn(base), attributes })))
    }

    /// A search of the RootDSE or the subschema entry (readable without a bind).
    fn special(
        &self,
        id: i32,
        dn: &str,
        attrs: &[(&'static str, Vec<String>)],
        s: &LdapSearchRequest,
        sel: &Selection,
    ) -> Vec<LdapMsg> {
        if !special_matches(&s.filter, attrs) {
            return vec![done(id, LdapResultCode::Success, "")];
        }
        let attributes =
            attrs.iter().filter(|(n, _)| sel.wants_raw(n)).map(|(n, v)| partial(n, v.clone(), s.typesonly)).collect();
        vec![
            msg(id, LdapOp::SearchResultEntry(LdapSearchResultEntry { dn: dn.to_string(), attributes })),
            done(id, LdapResultCode::Success, ""),
        ]
    }

    // ---- compare ----------------------------------------------------------------------

    async fn compare(&mut self, id: i32, c: LdapCompareRequest) -> LdapMsg {
        let answer = |code, message: &str| msg(id, LdapOp::CompareResult(result(code, message)));
        let shared = self.shared.clone();
        let Some(target) = shared.base.target(&c.dn) else {
            return answer(LdapResultCode::InvalidDNSyntax, "not a DN");
        };
        if let Err(e) = shared.tree.fresh().await {
            tracing::error!(error = %e, "LDAP: the tree cannot be read");
            return answer(LdapResultCode::Unavailable, "the directory cannot be read; see the server log");
        }
        let m = shared.tree.read();
        self.check_bound(&m);
        let Bound::User { id: me, .. } = &self.bound else {
            return answer(LdapResultCode::InsufficentAccessRights, "bind first");
        };
        let service = m.user(me).is_some_and(|u| u.service);
        let e = match &target {
            Target::User(uid) => match m.user_by_uid(uid) {
                Some(u) if service || &u.id == me => Entry::User(u),
                _ => return answer(LdapResultCode::NoSuchObject, "no such entry"),
            },
            Target::Group(cn) if service => match m.group_by_cn(cn) {
                Some(g) => Entry::Group(g),
                None => return answer(LdapResultCode::NoSuchObject, "no such entry"),
            },
            Target::Base if service => Entry::Base,
            Target::Users if service => Entry::Users,
            Target::Groups if service => Entry::Groups,
            _ => return answer(LdapResultCode::NoSuchObject, "no such entry"),
        };
        let Some(d) = attr(&c.atype) else {
            return answer(LdapResultCode::UndefinedAttributeType, "unknown attribute type");
        };
        let want = String::from_utf8_lossy(&c.val).to_string();
        let vals = e.values(&m, &shared.base, d.name);
        if vals.is_empty() {
            return answer(LdapResultCode::NoSuchAttribute, "the entry has no such attribute");
        }
        let f = LdapFilter::Equality(d.name.to_string(), want);
        if eval(&f, e, &m, &shared.base) == Some(true) {
            answer(LdapResultCode::CompareTrue, "")
        } else {
            answer(LdapResultCode::CompareFalse, "")
        }
    }

    // ---- extended operations -------------------------------------------------------------

    async fn extended(&mut self, id: i32, e: LdapExtendedRequest) -> (Vec<LdapMsg>, After) {
        match e.name.as_str() {
            OID_WHOAMI => {
                if let Ok(()) = self.shared.tree.fresh().await {
                    let shared = self.shared.clone();
                    self.check_bound(&shared.tree.read());
                }
                let v = match &self.bound {
                    Bound::Anonymous => String::new(),
                    Bound::User { dn, .. } => format!("dn:{dn}"),
                };
                (vec![ext(id, LdapResultCode::Success, "", Some(v.into_bytes()))], After::Continue)
            }
            OID_PASSWD => (vec![self.password_modify(id, &e).await], After::Continue),
            OID_STARTTLS => {
                if self.shared.tls.is_none() {
                    return (
                        vec![ext(id, LdapResultCode::Unavailable, "TLS is not configured", None)],
                        After::Continue,
                    );
                }
                // Twice, or after a bind, is refused and ends the connection: what was said
                // in the clear cannot be made private afterwards.
                if self.tls || self.bound != Bound::Anonymous {
                    return (
                        vec![ext(
                            id,
                            LdapResultCode::OperationsError,
                            "StartTLS is allowed once, before any bind",
                            None,
                        )],
                        After::Close,
                    );
                }
                let mut r = ext(id, LdapResultCode::Success, "", None);
                if let LdapOp::ExtendedResponse(x) = &mut r.op {
                    x.name = Some(OID_STARTTLS.to_string());
                }
                (vec![r], After::StartTls)
            }
            other => (
                vec![ext(id, LdapResultCode::ProtocolError, &format!("unsupported extended operation {other}"), None)],
                After::Continue,
            ),
        }
    }

    /// Password Modify (RFC 3062) within §3.5: the current password is required and checked
    /// by `authenticate`; the new one meets the policy; the change ends other sessions.
    async fn password_modify(&mut self, id: i32, e: &LdapExtendedRequest) -> LdapMsg {
        let Ok(req) = LdapPasswordModifyRequest::try_from(e) else {
            return ext(id, LdapResultCode::ProtocolError, "the password modify request cannot be read", None);
        };
        let shared = self.shared.clone();
        if let Err(e) = shared.tree.fresh().await {
            tracing::error!(error = %e, "LDAP: the tree cannot be read");
            return ext(id, LdapResultCode::Unavailable, "the directory cannot be read", None);
        }
        let user_id = {
            let m = shared.tree.read();
            self.check_bound(&m);
            match (&req.user_identity, &self.bound) {
                (Some(who), _) => {
                    let uid = match shared.base.target(who) {
                        Some(Target::User(uid)) => uid,
                        _ => who.clone(),
                    };
                    m.user_by_uid(&uid).map(|u| u.id.clone())
                }
                (None, Bound::User { id, .. }) => Some(id.clone()),
                (None, Bound::Anonymous) => {
                    return ext(id, LdapResultCode::InsufficentAccessRights, "bind first, or name the user", None)
                }
            }
        };
        let (Some(old), Some(new)) = (req.old_password, req.new_password) else {
            return ext(
                id,
                LdapResultCode::UnwillingToPerform,
                "give the current password (oldPasswd) and the new one (newPasswd)",
                None,
            );
        };
        let Some(user_id) = user_id else {
            return ext(id, LdapResultCode::InvalidCredentials, "invalid credentials", None);
        };
        let ctx = self.ctx();
        match shared.dir.change_own_password(&ctx, &user_id, &Secret::new(old), &Secret::new(new)).await {
            Ok(_) => ext(id, LdapResultCode::Success, "", None),
            Err(Error::Invalid(errs)) if errs.iter().any(|e| e.field == "current_password") => {
                ext(id, LdapResultCode::InvalidCredentials, "invalid credentials", None)
            }
            Err(e @ Error::Invalid(_)) => ext(id, LdapResultCode::ConstraintViolation, &e.to_string(), None),
            Err(Error::Conflict(m)) | Err(Error::Forbidden(m)) => ext(id, LdapResultCode::UnwillingToPerform, &m, None),
            Err(Error::Refused(Refusal::Throttled)) => {
                ext(id, LdapResultCode::Busy, "too many failed attempts from this address; try again later", None)
            }
            Err(Error::Refused(_) | Error::Unauthorized(_) | Error::NotFound(_)) => {
                ext(id, LdapResultCode::InvalidCredentials, "invalid credentials", None)
            }
            Err(e) => {
                tracing::error!(error = %e, "LDAP password modify failed");
                ext(id, LdapResultCode::Other, "internal error; see the server log", None)
            }
        }
    }
}

fn item_present(m: &Model, i: &Item) -> bool {
    match i {
        Item::User(id) => m.user(id).is_some(),
        Item::Group(id) => m.groups.get(id).is_some_and(|g| m.present_group(g)),
        _ => true,
    }
}

fn read_only() -> LdapResult {
    result(
        LdapResultCode::UnwillingToPerform,
        "the directory is read-only over LDAP: change it in the admin portal, the REST API or SCIM",
    )
}

fn paged_done(id: i32, code: LdapResultCode, message: &str, cookie: Vec<u8>) -> LdapMsg {
    let mut m = done(id, code, message);
    m.ctrl = vec![LdapControl::SimplePagedResults { size: 0, cookie }];
    m
}

fn paged_done_with(id: i32, estimate: i64, cookie: Vec<u8>) -> LdapMsg {
    let mut m = done(id, LdapResultCode::Success, "");
    m.ctrl = vec![LdapControl::SimplePagedResults { size: estimate, cookie }];
    m
}

fn op_name(op: &LdapOp) -> &'static str {
    match op {
        LdapOp::BindRequest(_) => "bind",
        LdapOp::UnbindRequest => "unbind",
        LdapOp::SearchRequest(_) => "search",
        LdapOp::CompareRequest(_) => "compare",
        LdapOp::ExtendedRequest(_) => "extended",
        LdapOp::AbandonRequest(_) => "abandon",
        LdapOp::AddRequest(_) | LdapOp::ModifyRequest(_) | LdapOp::DelRequest(_) | LdapOp::ModifyDNRequest(_) => {
            "write"
        }
        _ => "other",
    }
}
