//! JumpCloud v2 list parameters for user groups (§4.2): `filter=field:op:value` (repeated:
//! AND'ed), `sort=name,-description`, with v2's operators `eq ne gt ge lt le in search`
//! (with or without `$`). Parsed into typed conditions over known columns; anything else is
//! a 400 naming it, never an empty answer.

use crate::error::{DomainError, FieldError};
use crate::fields::{has_nul, NUL_REFUSED};
use crate::query::MAX_FILTER_CONDITIONS;

/// A group field a v2 list filters or sorts on: its JSON name and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupField {
    pub name: &'static str,
    pub column: &'static str,
    /// Compared lowercase (names are unique whatever their case).
    pub folded: bool,
}

pub const GROUP_FIELDS: &[GroupField] = &[
    GroupField { name: "id", column: "id", folded: false },
    GroupField { name: "name", column: "name_key", folded: true },
    GroupField { name: "description", column: "description", folded: false },
    GroupField { name: "email", column: "email", folded: false },
    GroupField { name: "membershipMethod", column: "membership_method", folded: false },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    /// One of `a|b|c`.
    In,
    /// Contains, case-insensitively.
    Search,
}

impl GroupOp {
    fn parse(s: &str) -> Option<GroupOp> {
        Some(match s.strip_prefix('$').unwrap_or(s) {
            "eq" => GroupOp::Eq,
            "ne" => GroupOp::Ne,
            "gt" => GroupOp::Gt,
            "ge" | "gte" => GroupOp::Ge,
            "lt" => GroupOp::Lt,
            "le" | "lte" => GroupOp::Le,
            "in" => GroupOp::In,
            "search" => GroupOp::Search,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCond {
    pub field: GroupField,
    pub op: GroupOp,
    /// One value, or several for `in`; lowercase for folded fields.
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupQuery {
    pub all: Vec<GroupCond>,
    /// Field and descending; by name (then id) when empty.
    pub sort: Vec<(GroupField, bool)>,
}

fn field(name: &str, param: &str) -> Result<GroupField, FieldError> {
    GROUP_FIELDS.iter().copied().find(|f| f.name == name).ok_or_else(|| {
        let known: Vec<&str> = GROUP_FIELDS.iter().map(|f| f.name).collect();
        let n: String = name.chars().take(64).collect();
        FieldError::new(param, format!("cannot filter or sort groups on '{n}' (fields: {})", known.join(", ")))
    })
}

fn quote(v: &str) -> String {
    let q: String = v.chars().take(64).collect();
    if q.len() < v.len() {
        format!("'{q}…'")
    } else {
        format!("'{q}'")
    }
}

impl GroupQuery {
    /// Reads `filter` (repeatable) and `sort` from the query pairs; other parameters are the
    /// caller's (`limit`, `skip`).
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<GroupQuery, DomainError> {
        let mut q = GroupQuery::default();
        let filters: Vec<&str> =
            pairs.iter().filter(|(k, _)| k == "filter" || k.starts_with("filter[")).map(|(_, v)| v.as_str()).collect();
        if filters.len() > MAX_FILTER_CONDITIONS {
            return Err(DomainError::field(
                "filter",
                format!(
                    "at most {MAX_FILTER_CONDITIONS} filter conditions are allowed in one query ({} given)",
                    filters.len()
                ),
            ));
        }
        let mut errors = vec![];
        for f in filters {
            match parse_cond(f) {
                Ok(c) => q.all.push(c),
                Err(e) => errors.push(e),
            }
        }
        for (_, v) in pairs.iter().filter(|(k, _)| k == "sort") {
            for s in v.split([',', ' ']).filter(|s| !s.is_empty()) {
                let (desc, name) = match s.strip_prefix('-') {
                    Some(n) => (true, n),
                    None => (false, s.strip_prefix('+').unwrap_or(s)),
                };
                match field(name, "sort") {
                    Ok(f) => q.sort.push((f, desc)),
                    Err(e) => errors.push(e),
                }
            }
        }
        if errors.is_empty() {
            Ok(q)
        } else {
            Err(DomainError::Invalid(errors))
        }
    }
}

fn parse_cond(f: &str) -> Result<GroupCond, FieldError> {
    if has_nul(f) {
        return Err(FieldError::new("filter", NUL_REFUSED));
    }
    let ops = "eq ne gt ge lt le in search (the $ may be left out)";
    let (name, op, value) = match f.splitn(3, ':').collect::<Vec<_>>().as_slice() {
        [name, op, value] => (*name, *op, *value),
        _ => {
            return Err(FieldError::new(
                "filter",
                format!("{} is not of the form field:op:value (e.g. name:eq:Engineering)", quote(f)),
            ))
        }
    };
    let field = field(name, "filter")?;
    let op = GroupOp::parse(op).ok_or_else(|| {
        FieldError::new(
            "filter",
            format!("{} has an operator Cairn does not support: {}; use {ops}", quote(f), quote(op)),
        )
    })?;
    let fold = |v: &str| if field.folded { v.to_lowercase() } else { v.to_string() };
    let values: Vec<String> = match op {
        GroupOp::In => value.split('|').map(fold).collect(),
        GroupOp::Search => vec![value.to_lowercase()],
        _ => vec![fold(value)],
    };
    Ok(GroupCond { field, op, values })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn v2_filters_and_sorts() {
        let q = GroupQuery::from_pairs(&pairs(&[
            ("filter", "name:eq:Engineering"),
            ("filter", "description:$search:Ops"),
            ("filter", "name:in:a|B"),
            ("sort", "-name,id"),
        ]))
        .unwrap();
        assert_eq!(q.all[0].values, ["engineering"], "names compare lowercase");
        assert_eq!((q.all[1].op, q.all[1].values.clone()), (GroupOp::Search, vec!["ops".to_string()]));
        assert_eq!(q.all[2].values, ["a", "b"]);
        assert_eq!(q.sort.iter().map(|(f, d)| (f.name, *d)).collect::<Vec<_>>(), [("name", true), ("id", false)]);
        for (k, v) in [
            ("filter", "name:like:x"),
            ("filter", "name:Engineering"),
            ("filter", "owner:eq:x"),
            ("filter", "name:eq:a\0"),
            ("sort", "-members"),
        ] {
            let Err(DomainError::Invalid(e)) = GroupQuery::from_pairs(&pairs(&[(k, v)])) else { panic!("{k}={v}") };
            assert_eq!(e[0].field, k, "{k}={v}");
        }
    }
}
