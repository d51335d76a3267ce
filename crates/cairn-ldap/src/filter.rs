//! Search filters (RFC 4511 §4.5.1.7) evaluated on the read model, with RFC 4511's three
//! values (an unknown attribute type makes a comparison Undefined, and `!Undefined` is still
//! Undefined), and the index lookups that spare a scan: equality on `uid`, `mail` or a
//! group's `cn`, and object classes one kind of entry never has.

use std::cmp::Ordering;
use std::sync::Arc;

use ldap3_proto::proto::{LdapFilter, LdapSubstringFilter};

use crate::entry::{attr, Base, Entry, Syntax};
use crate::model::{GroupRec, Model, UserRec};

/// Deepest filter nesting evaluated (the BER decoder bounds it too).
const MAX_DEPTH: usize = 64;

fn fold(s: &str) -> String {
    s.trim().to_lowercase()
}

/// Normalized form of a value for comparison under `syntax`.
fn norm(syntax: Syntax, v: &str) -> String {
    match syntax {
        Syntax::Exact => v.to_string(),
        Syntax::Dn => crate::entry::norm_dn(v).unwrap_or_else(|| fold(v)),
        Syntax::Int => v.trim().trim_start_matches('+').to_string(),
        Syntax::Text | Syntax::Time => fold(v),
    }
}

fn cmp(syntax: Syntax, a: &str, b: &str) -> Option<Ordering> {
    match syntax {
        Syntax::Int => Some(a.trim().parse::<i64>().ok()?.cmp(&b.trim().parse::<i64>().ok()?)),
        _ => Some(norm(syntax, a).cmp(&norm(syntax, b))),
    }
}

fn substring(syntax: Syntax, value: &str, f: &LdapSubstringFilter) -> bool {
    let (v, prep): (String, fn(&str) -> String) = match syntax {
        Syntax::Exact => (value.to_string(), |s| s.to_string()),
        _ => (value.to_lowercase(), |s| s.to_lowercase()),
    };
    let mut rest = v.as_str();
    if let Some(i) = &f.initial {
        let i = prep(i);
        match rest.strip_prefix(i.as_str()) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    let fin = f.final_.as_ref().map(|x| prep(x));
    for a in &f.any {
        let a = prep(a);
        match rest.find(a.as_str()) {
            Some(p) => rest = &rest[p + a.len()..],
            None => return false,
        }
    }
    match fin {
        Some(x) => rest.ends_with(x.as_str()),
        None => true,
    }
}

/// Whether the entry matches: `Some(true)`, `Some(false)`, or `None` for Undefined.
pub fn eval(f: &LdapFilter, e: Entry<'_>, m: &Model, base: &Base) -> Option<bool> {
    eval_at(f, e, m, base, 0)
}

fn eval_at(f: &LdapFilter, e: Entry<'_>, m: &Model, base: &Base, depth: usize) -> Option<bool> {
    if depth > MAX_DEPTH {
        return None;
    }
    let cmp_values = |name: &str, test: &dyn Fn(Syntax, &str) -> bool| -> Option<bool> {
        let d = attr(name)?;
        Some(e.values(m, base, d.name).iter().any(|v| test(d.syntax, v)))
    };
    match f {
        LdapFilter::And(list) => {
            let mut undefined = false;
            for x in list {
                match eval_at(x, e, m, base, depth + 1) {
                    Some(false) => return Some(false),
                    None => undefined = true,
                    Some(true) => {}
                }
            }
            if undefined {
                None
            } else {
                Some(true)
            }
        }
        LdapFilter::Or(list) => {
            let mut undefined = false;
            for x in list {
                match eval_at(x, e, m, base, depth + 1) {
                    Some(true) => return Some(true),
                    None => undefined = true,
                    Some(false) => {}
                }
            }
            if undefined {
                None
            } else {
                Some(false)
            }
        }
        LdapFilter::Not(x) => eval_at(x, e, m, base, depth + 1).map(|b| !b),
        LdapFilter::Equality(a, v) => cmp_values(a, &|s, x| norm(s, x) == norm(s, v)),
        LdapFilter::Approx(a, v) => {
            let squash = |x: &str| x.split_whitespace().collect::<String>().to_lowercase();
            cmp_values(a, &|_, x| squash(x) == squash(v))
        }
        LdapFilter::GreaterOrEqual(a, v) => cmp_values(a, &|s, x| cmp(s, x, v).is_some_and(|o| o != Ordering::Less)),
        LdapFilter::LessOrEqual(a, v) => cmp_values(a, &|s, x| cmp(s, x, v).is_some_and(|o| o != Ordering::Greater)),
        LdapFilter::Substring(a, sf) => cmp_values(a, &|s, x| substring(s, x, sf)),
        LdapFilter::Present(a) => match attr(a) {
            Some(d) if d.name == "objectClass" => Some(true),
            Some(d) => Some(!e.values(m, base, d.name).is_empty()),
            None => Some(false),
        },
        // No extensible matching rule is implemented: Undefined (RFC 4511 §4.5.1.7.7).
        LdapFilter::Extensible(_) => None,
    }
}

/// The candidates of an OR: every branch must have an index, and their union is taken.
fn union<'m, T>(
    list: &[LdapFilter],
    m: &'m Model,
    each: impl Fn(&LdapFilter, &'m Model) -> Option<Vec<&'m Arc<T>>>,
    id: impl Fn(&T) -> &String,
) -> Option<Vec<&'m Arc<T>>> {
    let mut out: Vec<&Arc<T>> = Vec::new();
    for x in list {
        out.extend(each(x, m)?);
    }
    out.sort_by(|a, b| id(a).cmp(id(b)));
    out.dedup_by(|a, b| id(a) == id(b));
    Some(out)
}

const USER_ONLY: &[&str] = &["person", "organizationalperson", "inetorgperson", "posixaccount", "ldappublickey"];
const GROUP_ONLY: &[&str] = &["groupofnames", "posixgroup", "groupofuniquenames"];

/// The users that can match, found through an index, or `None` when only a scan can tell.
pub fn user_candidates<'m>(f: &LdapFilter, m: &'m Model) -> Option<Vec<&'m Arc<UserRec>>> {
    match f {
        LdapFilter::Equality(a, v) => match attr(a).map(|d| d.name) {
            Some("uid") => Some(m.by_uid.get(v.trim()).into_iter().collect()),
            Some("mail") => Some(m.by_mail.get(v.trim()).into_iter().collect()),
            Some("objectClass") if GROUP_ONLY.contains(&fold(v).as_str()) => Some(vec![]),
            _ => None,
        },
        LdapFilter::And(list) => list.iter().find_map(|x| user_candidates(x, m)),
        LdapFilter::Or(list) => union(list, m, user_candidates, |u| &u.id),
        _ => None,
    }
}

/// As [`user_candidates`], for groups.
pub fn group_candidates<'m>(f: &LdapFilter, m: &'m Model) -> Option<Vec<&'m Arc<GroupRec>>> {
    match f {
        LdapFilter::Equality(a, v) => match attr(a).map(|d| d.name) {
            Some("cn") => Some(m.by_cn.get(&fold(v)).and_then(|id| m.groups.get(id)).into_iter().collect()),
            Some("uid" | "mail") => Some(vec![]),
            Some("objectClass") if USER_ONLY.contains(&fold(v).as_str()) => Some(vec![]),
            _ => None,
        },
        LdapFilter::And(list) => list.iter().find_map(|x| group_candidates(x, m)),
        LdapFilter::Or(list) => union(list, m, group_candidates, |g| &g.id),
        _ => None,
    }
}
