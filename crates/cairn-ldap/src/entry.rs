//! The tree's shape: DNs, the attributes of each entry (one function answers both what a
//! filter compares and what a search returns), the RootDSE and the subschema entry.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::model::{GroupRec, Model, UserRec};

/// How values of an attribute compare (RFC 4517 matching rules, simplified to what the tree
/// holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// caseIgnoreMatch / caseIgnoreSubstringsMatch.
    Text,
    /// caseExactMatch (ssh keys).
    Exact,
    /// integerMatch / integerOrderingMatch.
    Int,
    /// distinguishedNameMatch: compared normalized.
    Dn,
    /// generalizedTimeMatch: the one format, so text order is time order.
    Time,
}

pub struct AttrDef {
    pub name: &'static str,
    pub oid: &'static str,
    pub aliases: &'static [&'static str],
    pub syntax: Syntax,
    /// Returned only when asked for by name or with `+` (RFC 4511 §4.5.1.8).
    pub operational: bool,
    pub single: bool,
}

const fn a(name: &'static str, oid: &'static str, syntax: Syntax, single: bool) -> AttrDef {
    AttrDef { name, oid, aliases: &[], syntax, operational: false, single }
}
const fn op(name: &'static str, oid: &'static str, syntax: Syntax) -> AttrDef {
    AttrDef { name, oid, aliases: &[], syntax, operational: true, single: true }
}

/// Every attribute the tree holds, in the order entries list them.
pub const ATTRS: &[AttrDef] = &[
    a("objectClass", "2.5.4.0", Syntax::Text, false),
    AttrDef { aliases: &["userid"], ..a("uid", "0.9.2342.19200300.100.1.1", Syntax::Text, false) },
    AttrDef { aliases: &["commonName"], ..a("cn", "2.5.4.3", Syntax::Text, false) },
    AttrDef { aliases: &["surname"], ..a("sn", "2.5.4.4", Syntax::Text, false) },
    AttrDef { aliases: &["gn"], ..a("givenName", "2.5.4.42", Syntax::Text, false) },
    a("displayName", "2.16.840.1.113730.3.1.241", Syntax::Text, true),
    AttrDef {
        aliases: &["rfc822Mailbox", "email", "emailAddress"],
        ..a("mail", "0.9.2342.19200300.100.1.3", Syntax::Text, false)
    },
    a("telephoneNumber", "2.5.4.20", Syntax::Text, false),
    AttrDef { aliases: &["mobileTelephoneNumber"], ..a("mobile", "0.9.2342.19200300.100.1.41", Syntax::Text, false) },
    a("title", "2.5.4.12", Syntax::Text, false),
    AttrDef { aliases: &["organizationalUnitName"], ..a("ou", "2.5.4.11", Syntax::Text, false) },
    a("departmentNumber", "2.16.840.1.113730.3.1.2", Syntax::Text, false),
    a("employeeNumber", "2.16.840.1.113730.3.1.3", Syntax::Text, true),
    a("employeeType", "2.16.840.1.113730.3.1.4", Syntax::Text, false),
    AttrDef { aliases: &["organizationName"], ..a("o", "2.5.4.10", Syntax::Text, false) },
    AttrDef { aliases: &["localityName"], ..a("l", "2.5.4.7", Syntax::Text, false) },
    a("description", "2.5.4.13", Syntax::Text, false),
    a("manager", "0.9.2342.19200300.100.1.10", Syntax::Dn, false),
    a("memberOf", "1.2.840.113556.1.2.102", Syntax::Dn, false),
    a("nsAccountLock", "2.16.840.1.113730.3.1.610", Syntax::Text, true),
    a("uidNumber", "1.3.6.1.1.1.1.0", Syntax::Int, true),
    a("gidNumber", "1.3.6.1.1.1.1.1", Syntax::Int, true),
    a("homeDirectory", "1.3.6.1.1.1.1.3", Syntax::Exact, true),
    a("loginShell", "1.3.6.1.1.1.1.4", Syntax::Exact, true),
    a("gecos", "1.3.6.1.1.1.1.2", Syntax::Text, true),
    a("sshPublicKey", "1.3.6.1.4.1.24552.500.1.1.1.13", Syntax::Exact, false),
    a("member", "2.5.4.31", Syntax::Dn, false),
    a("memberUid", "1.3.6.1.1.1.1.12", Syntax::Exact, false),
    AttrDef { aliases: &["domainComponent"], ..a("dc", "0.9.2342.19200300.100.1.25", Syntax::Text, true) },
    op("entryUUID", "1.3.6.1.1.16.4", Syntax::Exact),
    op("entryDN", "1.3.6.1.1.20", Syntax::Dn),
    op("createTimestamp", "2.5.18.1", Syntax::Time),
    op("modifyTimestamp", "2.5.18.2", Syntax::Time),
    op("structuralObjectClass", "2.5.21.9", Syntax::Text),
    op("subschemaSubentry", "2.5.18.10", Syntax::Dn),
    op("hasSubordinates", "2.5.18.9", Syntax::Text),
];

/// The definition of an attribute named (case-insensitively) by name, alias or OID.
pub fn attr(name: &str) -> Option<&'static AttrDef> {
    let name = name.trim();
    ATTRS.iter().find(|d| {
        d.name.eq_ignore_ascii_case(name) || d.oid == name || d.aliases.iter().any(|x| x.eq_ignore_ascii_case(name))
    })
}

pub const SUBSCHEMA_DN: &str = "cn=Subschema";

/// One RDN value escaped for a DN string (RFC 4514 §2.4).
pub fn escape_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let n = v.chars().count();
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && (c == ' ' || c == '#'))
            || (i + 1 == n && c == ' ');
        if special {
            out.push('\\');
        }
        if c == '\0' {
            out.push_str("\\00");
        } else {
            out.push(c);
        }
    }
    out
}

/// A DN parsed into RDNs of (lowercase attribute type, unescaped value); multi-valued RDNs
/// are not used by this tree and are refused. `None` when the string is no DN.
pub fn parse_dn(dn: &str) -> Option<Vec<(String, String)>> {
    let dn = dn.trim();
    if dn.is_empty() {
        return Some(vec![]);
    }
    let mut rdns = Vec::new();
    let mut cur = String::new();
    let mut chars = dn.chars().peekable();
    let mut parts: Vec<String> = Vec::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let next = chars.next()?;
                if next.is_ascii_hexdigit() {
                    let lo = chars.next()?;
                    let byte = u8::from_str_radix(&format!("{next}{lo}"), 16).ok()?;
                    cur.push(byte as char);
                } else {
                    cur.push('\u{1}');
                    cur.push(next);
                }
            }
            ',' | ';' => parts.push(std::mem::take(&mut cur)),
            '+' => return None,
            c => cur.push(c),
        }
    }
    parts.push(cur);
    for p in parts {
        // `\u{1}` marks an escaped character, so an escaped `=` does not split.
        let eq = p.find('=')?;
        let (t, v) = (p[..eq].trim(), &p[eq + 1..]);
        if t.is_empty() || !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
            return None;
        }
        let v = v.trim().replace('\u{1}', "");
        let t = attr(t).map(|d| d.name.to_ascii_lowercase()).unwrap_or_else(|| t.to_ascii_lowercase());
        rdns.push((t, v));
    }
    Some(rdns)
}

/// A DN in the form used to compare: lowercase types and values, no spaces around
/// separators; `None` for no DN.
pub fn norm_dn(dn: &str) -> Option<String> {
    let rdns = parse_dn(dn)?;
    Some(rdns.iter().map(|(t, v)| format!("{t}={}", escape_value(&v.to_lowercase()))).collect::<Vec<_>>().join(","))
}

/// What a DN names in this tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    RootDse,
    Subschema,
    Base,
    Users,
    Groups,
    /// `uid=…,ou=Users,<base>`: the value as given.
    User(String),
    /// `cn=…,ou=Groups,<base>`.
    Group(String),
    /// Inside the base but nothing this tree holds (noSuchObject).
    Missing,
    /// Outside the base.
    Outside,
}

/// The base DN and the DNs built from it.
#[derive(Debug, Clone)]
pub struct Base {
    /// As configured, e.g. `dc=cairn,dc=local`.
    pub dn: String,
    rdns: Vec<(String, String)>,
    pub users_dn: String,
    pub groups_dn: String,
}

impl Base {
    pub fn new(dn: &str) -> Option<Base> {
        let rdns = parse_dn(dn)?;
        if rdns.is_empty() {
            return None;
        }
        let dn = rdns.iter().map(|(t, v)| format!("{t}={}", escape_value(v))).collect::<Vec<_>>().join(",");
        Some(Base { users_dn: format!("ou=Users,{dn}"), groups_dn: format!("ou=Groups,{dn}"), dn, rdns })
    }

    pub fn user_dn(&self, u: &UserRec) -> String {
        format!("uid={},{}", escape_value(&u.uid), self.users_dn)
    }

    pub fn group_dn(&self, g: &GroupRec) -> String {
        format!("cn={},{}", escape_value(&g.name), self.groups_dn)
    }

    /// The first RDN's attribute and value (`dc`, `cairn`), for the base entry.
    pub fn top(&self) -> (&str, &str) {
        (&self.rdns[0].0, &self.rdns[0].1)
    }

    pub fn target(&self, dn: &str) -> Option<Target> {
        let rdns = parse_dn(dn)?;
        if rdns.is_empty() {
            return Some(Target::RootDse);
        }
        if rdns.len() == 1 && rdns[0].0 == "cn" && rdns[0].1.eq_ignore_ascii_case("subschema") {
            return Some(Target::Subschema);
        }
        let n = self.rdns.len();
        if rdns.len() < n {
            return Some(Target::Outside);
        }
        let (head, tail) = rdns.split_at(rdns.len() - n);
        let same = tail.iter().zip(&self.rdns).all(|(a, b)| a.0 == b.0 && a.1.eq_ignore_ascii_case(&b.1));
        if !same {
            return Some(Target::Outside);
        }
        Some(match head {
            [] => Target::Base,
            [(t, v)] if t == "ou" && v.eq_ignore_ascii_case("users") => Target::Users,
            [(t, v)] if t == "ou" && v.eq_ignore_ascii_case("groups") => Target::Groups,
            [(t, v), (ot, ov)] if t == "uid" && ot == "ou" && ov.eq_ignore_ascii_case("users") => {
                Target::User(v.clone())
            }
            [(t, v), (ot, ov)] if t == "cn" && ot == "ou" && ov.eq_ignore_ascii_case("groups") => {
                Target::Group(v.clone())
            }
            _ => Target::Missing,
        })
    }
}

/// An entry of the tree, borrowed from the model.
#[derive(Clone, Copy)]
pub enum Entry<'m> {
    Base,
    Users,
    Groups,
    User(&'m UserRec),
    Group(&'m GroupRec),
}

pub fn gtime(t: DateTime<Utc>) -> String {
    t.format("%Y%m%d%H%M%SZ").to_string()
}

/// A stable UUID for an object id (12 bytes), so `entryUUID` never changes: the id, then
/// four bytes of its hash, with the version (8, RFC 9562 custom) and variant bits set.
pub fn entry_uuid(id: &str) -> String {
    let h = hex::encode(Sha256::digest(id.as_bytes()));
    let mut s: Vec<char> = format!("{:0<24}{}", id.to_lowercase(), &h[..8]).chars().take(32).collect();
    s[12] = '8';
    s[16] = ['8', '9', 'a', 'b'][usize::from(s[16].to_digit(16).unwrap_or(0) as u8 & 3)];
    let s: String = s.into_iter().collect();
    format!("{}-{}-{}-{}-{}", &s[0..8], &s[8..12], &s[12..16], &s[16..20], &s[20..32])
}

impl<'m> Entry<'m> {
    pub fn dn(&self, base: &Base) -> String {
        match self {
            Entry::Base => base.dn.clone(),
            Entry::Users => base.users_dn.clone(),
            Entry::Groups => base.groups_dn.clone(),
            Entry::User(u) => base.user_dn(u),
            Entry::Group(g) => base.group_dn(g),
        }
    }

    /// The values of one attribute (by its definition's name).
    pub fn values(&self, m: &Model, base: &Base, name: &str) -> Vec<Cow<'m, str>> {
        match (self, name) {
            (Entry::Base, "objectClass") => vec!["top".into(), "domain".into()],
            (Entry::Base, n) if n.eq_ignore_ascii_case(base.top().0) => vec![Cow::Owned(base.top().1.to_string())],
            (Entry::Users | Entry::Groups, "objectClass") => vec!["top".into(), "organizationalUnit".into()],
            (Entry::Users, "ou") => vec!["Users".into()],
            (Entry::Groups, "ou") => vec!["Groups".into()],
            (Entry::Base | Entry::Users | Entry::Groups, "hasSubordinates") => vec!["TRUE".into()],
            (Entry::Base, "structuralObjectClass") => vec!["domain".into()],
            (Entry::Users | Entry::Groups, "structuralObjectClass") => vec!["organizationalUnit".into()],
            (Entry::User(u), n) => user_values(m, base, u, n),
            (Entry::Group(g), n) => group_values(m, base, g, n),
            (_, "entryDN") => vec![Cow::Owned(self.dn(base))],
            (_, "subschemaSubentry") => vec![SUBSCHEMA_DN.into()],
            _ => vec![],
        }
    }
}

fn one<S: AsRef<str>>(v: &Option<S>) -> Vec<Cow<'_, str>> {
    v.iter().map(|s| Cow::Borrowed(s.as_ref())).collect()
}

fn user_values<'m>(m: &Model, base: &Base, u: &'m UserRec, name: &str) -> Vec<Cow<'m, str>> {
    let posix = u.uid_number.is_some();
    match name {
        "objectClass" => {
            let mut v: Vec<Cow<str>> =
                vec!["top".into(), "person".into(), "organizationalPerson".into(), "inetOrgPerson".into()];
            if posix {
                v.push("posixAccount".into());
            }
            if !u.ssh_keys.is_empty() {
                v.push("ldapPublicKey".into());
            }
            v
        }
        "structuralObjectClass" => vec!["inetOrgPerson".into()],
        "uid" => vec![Cow::Borrowed(&*u.uid)],
        "cn" => vec![Cow::Borrowed(&*u.cn)],
        "sn" => vec![Cow::Borrowed(&*u.sn)],
        "givenName" => one(&u.given_name),
        "displayName" => one(&u.display_name),
        "mail" => vec![Cow::Borrowed(&*u.mail)],
        "telephoneNumber" => u.phones.iter().map(|s| Cow::Borrowed(&**s)).collect(),
        "mobile" => u.mobiles.iter().map(|s| Cow::Borrowed(&**s)).collect(),
        "title" => one(&u.title),
        "ou" | "departmentNumber" => one(&u.department),
        "employeeNumber" => one(&u.employee_number),
        "employeeType" => one(&u.employee_type),
        "o" => one(&u.company),
        "l" => one(&u.location),
        "description" => one(&u.description),
        "manager" => {
            u.manager.as_deref().and_then(|id| m.user(id)).map(|x| Cow::Owned(base.user_dn(x))).into_iter().collect()
        }
        "memberOf" => m.groups_of(&u.id).into_iter().map(|g| Cow::Owned(base.group_dn(g))).collect(),
        "nsAccountLock" if u.state == cairn_domain::State::Suspended => vec!["TRUE".into()],
        "uidNumber" => u.uid_number.map(|n| Cow::Owned(n.to_string())).into_iter().collect(),
        // A posix account needs a primary group: the user's own gid, else its uid (the
        // user-private-group convention).
        "gidNumber" if posix => u.gid_number.or(u.uid_number).map(|n| Cow::Owned(n.to_string())).into_iter().collect(),
        "homeDirectory" if posix => vec![Cow::Owned(format!("/home/{}", u.uid))],
        "loginShell" if posix => vec!["/bin/bash".into()],
        "gecos" if posix => vec![Cow::Borrowed(&*u.cn)],
        "sshPublicKey" => u.ssh_keys.iter().map(|s| Cow::Borrowed(&**s)).collect(),
        "entryUUID" => vec![Cow::Owned(entry_uuid(&u.id))],
        "entryDN" => vec![Cow::Owned(base.user_dn(u))],
        "createTimestamp" => vec![Cow::Owned(gtime(u.created))],
        "modifyTimestamp" => vec![Cow::Owned(gtime(u.updated))],
        "subschemaSubentry" => vec![SUBSCHEMA_DN.into()],
        "hasSubordinates" => vec!["FALSE".into()],
        _ => vec![],
    }
}

fn group_values<'m>(m: &Model, base: &Base, g: &'m GroupRec, name: &str) -> Vec<Cow<'m, str>> {
    let posix = g.gid_number.is_some();
    match name {
        "objectClass" => {
            let mut v: Vec<Cow<str>> = vec!["top".into(), "groupOfNames".into()];
            if posix {
                v.push("posixGroup".into());
            }
            v
        }
        "structuralObjectClass" => vec!["groupOfNames".into()],
        "cn" => vec![Cow::Borrowed(g.name.as_str())],
        "description" => one(&g.description),
        "member" => m.members_of(g).into_iter().map(|u| Cow::Owned(base.user_dn(u))).collect(),
        "memberUid" if posix => m.members_of(g).into_iter().map(|u| Cow::Owned(u.uid.to_string())).collect(),
        "gidNumber" => g.gid_number.map(|n| Cow::Owned(n.to_string())).into_iter().collect(),
        "entryUUID" => vec![Cow::Owned(entry_uuid(&g.id))],
        "entryDN" => vec![Cow::Owned(base.group_dn(g))],
        "createTimestamp" => vec![Cow::Owned(gtime(g.created))],
        "modifyTimestamp" => vec![Cow::Owned(gtime(g.updated))],
        "subschemaSubentry" => vec![SUBSCHEMA_DN.into()],
        "hasSubordinates" => vec!["FALSE".into()],
        _ => vec![],
    }
}
