//! List queries in JumpCloud's v1 style (§4.1): `limit`, `skip`, `sort`, `fields`,
//! `filter=field:$op:value` (`filter[0]`… AND, `filter[or][0]`… OR) and `search`.
//! Parsed here into typed conditions over `fields::queryable` columns, so the store binds
//! every value and names only known columns.

use serde_json::Value;

use crate::error::{DomainError, FieldError};
use crate::fields::{self, has_nul, Field, Kind, NUL_REFUSED};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Op {
    /// JumpCloud's operators, with or without the `$` (clients send both); v2's `ge` and
    /// `le` are the same as `gte` and `lte`.
    fn parse(s: &str) -> Option<Op> {
        Some(match s.strip_prefix('$').unwrap_or(s) {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "gt" => Op::Gt,
            "gte" | "ge" => Op::Gte,
            "lt" => Op::Lt,
            "lte" | "le" => Op::Lte,
            _ => return None,
        })
    }
    pub fn sql(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "<>",
            Op::Gt => ">",
            Op::Gte => ">=",
            Op::Lt => "<",
            Op::Lte => "<=",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Text(String),
    Bool(bool),
    Int(i64),
}

#[derive(Debug, Clone)]
pub struct Cond {
    pub field: &'static Field,
    pub op: Op,
    pub value: Scalar,
}

#[derive(Debug, Clone)]
pub struct ListQuery {
    pub limit: i64,
    pub skip: i64,
    /// Column and descending flag; the id is always the last tie-breaker.
    pub sort: Vec<(&'static Field, bool)>,
    pub fields: Option<Vec<String>>,
    /// Every one of these must hold …
    pub all: Vec<Cond>,
    /// … and, when non-empty, at least one of these.
    pub any: Vec<Cond>,
    /// Case-insensitive search over `SEARCH_FIELDS` (or the fields given): by prefix, served
    /// by indexes (`search=`), or by substring (JumpCloud's `searchFilter`), a scan.
    pub search: Vec<String>,
    pub search_substring: bool,
    pub search_fields: Vec<&'static Field>,
    /// Keyset paging (`cursor=`): the page starts after this position of the same sort.
    pub after: Option<Cursor>,
}

/// One page of a user list.
#[derive(Debug, Clone)]
pub struct UserPage {
    /// How many users match in all.
    pub total: i64,
    pub users: Vec<crate::User>,
    /// Where the next page starts, when this one is full (there may be more).
    pub next: Option<Cursor>,
}

/// A position in a sorted user list: the sort it belongs to, the last row's sort keys as the
/// database compares them (names lowercased) and its id. Clients get it as `nextCursor` and
/// send it back as `cursor=`; it is opaque to them (URL-safe base64 of JSON).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    /// The sort as `sort=` spells it, canonical (`lastname,-email`).
    #[serde(rename = "s")]
    pub sort: String,
    /// One value per sort field (text, number, boolean or null).
    #[serde(rename = "k")]
    pub keys: Vec<Value>,
    #[serde(rename = "i")]
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("a cursor serializes"))
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// The canonical spelling of a sort, as a cursor records it.
pub fn sort_text(sort: &[(&'static Field, bool)]) -> String {
    sort.iter().map(|(f, desc)| format!("{}{}", if *desc { "-" } else { "" }, f.name)).collect::<Vec<_>>().join(",")
}

pub const DEFAULT_LIMIT: i64 = 10;
pub const MAX_LIMIT: i64 = 1000;
/// Most filter conditions one query may hold, AND'ed and OR'ed together (SCIM filters too): far
/// more than a person writes, and few enough that no database's expression limit is reached
/// (SQLite stops at a depth of 1,000).
pub const MAX_FILTER_CONDITIONS: usize = 100;
/// Most search terms one query may hold: each is compared with every search field.
pub const MAX_SEARCH_TERMS: usize = 20;
pub const SEARCH_FIELDS: &[&str] =
    &["username", "email", "firstname", "lastname", "displayname", "employeeIdentifier", "department"];

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            limit: DEFAULT_LIMIT,
            skip: 0,
            sort: vec![],
            fields: None,
            all: vec![],
            any: vec![],
            search: vec![],
            search_substring: false,
            search_fields: default_search_fields(),
            after: None,
        }
    }
}

fn default_search_fields() -> Vec<&'static Field> {
    SEARCH_FIELDS.iter().filter_map(|n| fields::queryable(n)).collect()
}

impl ListQuery {
    /// A cursor belongs to one sort and holds one key per sorted field; it replaces `skip`.
    fn check_cursor(&self, c: &Cursor) -> Result<(), FieldError> {
        if c.sort != sort_text(&self.sort) || c.keys.len() != self.sort.len() {
            return Err(FieldError::new(
                "cursor",
                "belongs to another sort: send the sort of the page that returned it",
            ));
        }
        // Each key is of its field's kind (or null), so the database is never asked to compare a
        // number column with text.
        let fits = |f: &Field, k: &Value| match (f.kind, k) {
            (_, Value::Null) => true,
            (Kind::Int, Value::Number(n)) => n.is_i64(),
            (Kind::Bool, Value::Bool(_)) => true,
            (Kind::Text | Kind::Time | Kind::Json, Value::String(_)) => true,
            _ => false,
        };
        if !self.sort.iter().zip(&c.keys).all(|((f, _), k)| fits(f, k)) {
            return Err(FieldError::new("cursor", "is not a cursor this server returned (nextCursor)"));
        }
        if self.skip != 0 {
            return Err(FieldError::new("skip", "cannot be used with cursor"));
        }
        Ok(())
    }

    /// Parses URL query pairs. Unknown parameters are ignored (JumpCloud clients send
    /// extras such as `sortIgnoreCase`); bad values of known ones are errors.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<ListQuery, DomainError> {
        let mut q = ListQuery::default();
        // Too many conditions or terms are refused before any is parsed.
        let is_filter = |k: &str| k == "filter" || k.starts_with("filter[");
        let filters = pairs.iter().filter(|(k, _)| is_filter(k)).count();
        let terms = pairs.iter().filter(|(k, v)| k == "search" && !v.trim().is_empty()).count();
        check_counts(filters, terms).map_err(|e| DomainError::Invalid(vec![e]))?;
        let mut errors = Vec::new();
        for (k, v) in pairs {
            let res = match k.as_str() {
                "limit" => parse_int(v, 1, MAX_LIMIT).map(|n| q.limit = n).map_err(|m| FieldError::new("limit", m)),
                "skip" => parse_int(v, 0, i64::MAX).map(|n| q.skip = n).map_err(|m| FieldError::new("skip", m)),
                "cursor" if v.trim().is_empty() => Ok(()),
                "cursor" => Cursor::decode(v)
                    .map(|c| q.after = Some(c))
                    .ok_or_else(|| FieldError::new("cursor", "is not a cursor this server returned (nextCursor)")),
                "sort" => parse_sort(v).map(|s| q.sort = s),
                "fields" => parse_fields(v).map(|f| q.fields = f),
                "search" if has_nul(v) => Err(FieldError::new("search", NUL_REFUSED)),
                "search" => {
                    if !v.trim().is_empty() {
                        q.search.push(v.trim().to_string());
                    }
                    Ok(())
                }
                k if is_filter(k) => {
                    let or = k.starts_with("filter[or]");
                    parse_filter(v).map(|c| if or { q.any.push(c) } else { q.all.push(c) })
                }
                _ => Ok(()),
            };
            if let Err(e) = res {
                errors.push(e);
            }
        }
        if let Some(c) = &q.after {
            if let Err(e) = q.check_cursor(c) {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(q)
        } else {
            Err(DomainError::Invalid(errors))
        }
    }

    /// Applies the body of `POST /api/search/systemusers`: `filter` (`{and:[…]}`, `{or:[…]}`
    /// or a list, each entry `{field: value}` or `{field: {"$op": value}}`), `searchFilter`
    /// (`{searchTerm, fields}`), `fields`, `limit`, `skip`.
    pub fn apply_search_body(&mut self, body: &Value) -> Result<(), DomainError> {
        let Some(obj) = body.as_object() else {
            return Err(DomainError::field("body", "must be a JSON object"));
        };
        let mut errors = Vec::new();
        for (k, v) in obj {
            let res: Result<(), FieldError> = match k.as_str() {
                "filter" => {
                    let (list, or) = match v {
                        Value::Array(a) => (a.clone(), false),
                        Value::Object(o) if o.len() == 1 && o.contains_key("and") => (as_list(&o["and"]), false),
                        Value::Object(o) if o.len() == 1 && o.contains_key("or") => (as_list(&o["or"]), true),
                        Value::Object(_) => (vec![v.clone()], false),
                        _ => (vec![], false),
                    };
                    if !v.is_array() && !v.is_object() {
                        Err(FieldError::new("filter", "must be an object {and:[…]} / {or:[…]} or a list"))
                    } else {
                        list.iter().try_for_each(|e| {
                            for c in body_conds(e)? {
                                if or {
                                    self.any.push(c)
                                } else {
                                    self.all.push(c)
                                }
                            }
                            Ok(())
                        })
                    }
                }
                "searchFilter" => {
                    let term = v.get("searchTerm");
                    let terms: Vec<String> = match term {
                        Some(Value::String(s)) => vec![s.clone()],
                        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_str().map(String::from)).collect(),
                        _ => vec![],
                    };
                    let mut res = match terms.iter().any(|t| has_nul(t)) {
                        true => Err(FieldError::new("searchFilter.searchTerm", NUL_REFUSED)),
                        false => Ok(()),
                    };
                    if let Some(Value::Array(fs)) = v.get("fields") {
                        let mut out = vec![];
                        for f in fs {
                            match f.as_str().and_then(fields::queryable).filter(|f| matches!(f.kind, Kind::Text)) {
                                Some(f) => out.push(f),
                                None => {
                                    res = Err(FieldError::new("searchFilter.fields", format!("cannot search on {f}")))
                                }
                            }
                        }
                        if !out.is_empty() {
                            self.search_fields = out;
                        }
                    }
                    self.search.extend(terms.into_iter().filter(|t| !t.trim().is_empty()));
                    self.search_substring = true;
                    res
                }
                "fields" => match v.as_str() {
                    Some(s) => parse_fields(s).map(|f| self.fields = f),
                    None => Err(FieldError::new("fields", "must be a space-separated string")),
                },
                "limit" => match v.as_i64() {
                    Some(n) if (1..=MAX_LIMIT).contains(&n) => {
                        self.limit = n;
                        Ok(())
                    }
                    _ => Err(FieldError::new("limit", format!("must be a number from 1 to {MAX_LIMIT}"))),
                },
                "skip" => match v.as_i64() {
                    Some(n) if n >= 0 => {
                        self.skip = n;
                        Ok(())
                    }
                    _ => Err(FieldError::new("skip", "must be a number of at least 0")),
                },
                "sort" => match v.as_str() {
                    Some(s) => parse_sort(s).map(|s| self.sort = s),
                    None => Err(FieldError::new("sort", "must be a space-separated string")),
                },
                other => Err(FieldError::new(
                    other,
                    "is not a search parameter (filter, searchFilter, fields, limit, skip, sort)",
                )),
            };
            if let Err(e) = res {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            let terms = self.search.len();
            check_counts(self.all.len() + self.any.len(), terms).map_err(|e| DomainError::Invalid(vec![e]))
        } else {
            Err(DomainError::Invalid(errors))
        }
    }
}

/// Refuses more than [`MAX_FILTER_CONDITIONS`] conditions or [`MAX_SEARCH_TERMS`] terms.
fn check_counts(conditions: usize, terms: usize) -> Result<(), FieldError> {
    if conditions > MAX_FILTER_CONDITIONS {
        return Err(FieldError::new(
            "filter",
            format!("at most {MAX_FILTER_CONDITIONS} filter conditions are allowed in one query ({conditions} given)"),
        ));
    }
    if terms > MAX_SEARCH_TERMS {
        return Err(FieldError::new(
            "search",
            format!("at most {MAX_SEARCH_TERMS} search terms are allowed in one query ({terms} given)"),
        ));
    }
    Ok(())
}

fn as_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    }
}

fn body_conds(entry: &Value) -> Result<Vec<Cond>, FieldError> {
    let Some(o) = entry.as_object() else {
        return Err(FieldError::new("filter", "each entry must be an object {field: value}"));
    };
    let mut out = vec![];
    for (name, v) in o {
        let field = queryable(name, "filter")?;
        match v {
            Value::Object(ops) => {
                for (op, val) in ops {
                    let op = Op::parse(op).ok_or_else(|| {
                        FieldError::new(
                            format!("filter.{name}"),
                            format!("unknown operator {op} (use $eq $ne $gt $gte $lt $lte)"),
                        )
                    })?;
                    out.push(Cond { field, op, value: json_scalar(field, val)? });
                }
            }
            _ => out.push(Cond { field, op: Op::Eq, value: json_scalar(field, v)? }),
        }
    }
    Ok(out)
}

fn json_scalar(field: &'static Field, v: &Value) -> Result<Scalar, FieldError> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => {
            return Err(FieldError::new(format!("filter.{}", field.name), "value must be a string, number or boolean"))
        }
    };
    scalar(field, &text)
}

fn queryable(name: &str, param: &str) -> Result<&'static Field, FieldError> {
    fields::queryable(name).ok_or_else(|| FieldError::new(param, format!("cannot filter or sort on '{name}'")))
}

fn parse_int(v: &str, min: i64, max: i64) -> Result<i64, String> {
    match v.trim().parse::<i64>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ if max == i64::MAX => Err(format!("must be a whole number of at least {min}")),
        _ => Err(format!("must be a whole number from {min} to {max}")),
    }
}

fn parse_sort(v: &str) -> Result<Vec<(&'static Field, bool)>, FieldError> {
    v.split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (desc, name) = match s.strip_prefix('-') {
                Some(n) => (true, n),
                None => (false, s.strip_prefix('+').unwrap_or(s)),
            };
            Ok((queryable(name, "sort")?, desc))
        })
        .collect()
}

fn parse_fields(v: &str) -> Result<Option<Vec<String>>, FieldError> {
    let names: Vec<String> = v.split([' ', ',']).filter(|s| !s.is_empty()).map(String::from).collect();
    if names.is_empty() {
        return Ok(None);
    }
    for n in &names {
        if !fields::is_output_field(n) {
            return Err(FieldError::new("fields", format!("'{n}' is not a field of a system user")));
        }
    }
    Ok(Some(names))
}

/// Operator names JumpCloud's filters use that Cairn's v1 filters do not take: a filter
/// naming one is refused, not read as an equality with a value that begins with it.
const UNSUPPORTED_OPS: &[&str] =
    &["in", "nin", "search", "between", "regex", "like", "exists", "contains", "co", "sw", "ew", "pr"];

/// A filter quoted back in a message, cut short.
fn quote(v: &str) -> String {
    let q: String = v.chars().take(64).collect();
    if q.len() < v.len() {
        format!("'{q}…'")
    } else {
        format!("'{q}'")
    }
}

/// `field:$op:value`, `field:op:value` (the operator without `$`, as many clients send it) or
/// `field:value` (meaning `$eq`). Anything Cairn cannot read exactly is a 400 saying why,
/// never a filter that silently matches nothing.
fn parse_filter(v: &str) -> Result<Cond, FieldError> {
    let bad = |why: String| FieldError::new("filter", format!("{} {why}", quote(v)));
    let Some((name, rest)) = v.split_once(':') else {
        return Err(bad("is not of the form field:$op:value (e.g. username:$eq:ada)".into()));
    };
    let field = queryable(name, "filter")?;
    let ops = "$eq $ne $gt $gte $lt $lte (the $ may be left out)";
    let (op, value) = match rest.split_once(':') {
        Some((op, value)) if Op::parse(op).is_some() => (Op::parse(op).expect("checked"), value),
        Some((op, _)) if op.starts_with('$') || UNSUPPORTED_OPS.contains(&op) => {
            return Err(bad(format!("has an operator Cairn does not support: '{op}'; use {ops}")))
        }
        None if rest.starts_with('$') || Op::parse(rest).is_some() || UNSUPPORTED_OPS.contains(&rest) => {
            return Err(bad(format!("has an operator but no value: write {name}:$eq:VALUE (operators: {ops})")))
        }
        _ => (Op::Eq, rest),
    };
    Ok(Cond { field, op, value: scalar(field, value)? })
}

fn scalar(field: &'static Field, v: &str) -> Result<Scalar, FieldError> {
    let bad = |m: &str| FieldError::new(format!("filter.{}", field.name), m.to_string());
    if has_nul(v) {
        return Err(bad(NUL_REFUSED));
    }
    Ok(match field.kind {
        Kind::Bool => match v {
            "true" => Scalar::Bool(true),
            "false" => Scalar::Bool(false),
            _ => return Err(bad("must be true or false")),
        },
        Kind::Int => Scalar::Int(v.parse().map_err(|_| bad("must be a whole number"))?),
        // Usernames and e-mails are stored lowercase: compare them that way.
        Kind::Text if matches!(field.name, "username" | "email" | "alternateEmail") => Scalar::Text(v.to_lowercase()),
        Kind::Text | Kind::Time | Kind::Json => Scalar::Text(v.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn a_cursor_round_trips_and_belongs_to_its_sort_without_skip() {
        let c = Cursor { sort: "-lastname".into(), keys: vec![Value::String("smith".into())], id: "abc".into() };
        let text = c.encode();
        // A text key for a number field would make the database compare a number with text.
        let forged = |sort: &str, key: Value| Cursor { sort: sort.into(), keys: vec![key], id: "abc".into() }.encode();
        let unix_text = forged("unix_uid", Value::String("1".into()));
        // The two-run sorts (a yes/no field, a mostly empty column) bind their key the same way.
        let flag_text = forged("-account_locked", Value::String("true".into()));
        let uid_float = forged("-unix_uid", serde_json::json!(1.5));
        let date_number = forged("password_date", serde_json::json!(20261207));
        assert!(text.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'), "URL-safe: {text}");
        let q = ListQuery::from_pairs(&pairs(&[("sort", "-lastname"), ("cursor", &text)])).unwrap();
        assert_eq!(q.after, Some(c));
        for bad in [
            vec![("sort", "lastname"), ("cursor", text.as_str())],
            vec![("cursor", text.as_str())],
            vec![("sort", "-lastname"), ("cursor", text.as_str()), ("skip", "10")],
            vec![("sort", "-lastname"), ("cursor", "bm90IGpzb24")],
            vec![("sort", "unix_uid"), ("cursor", unix_text.as_str())],
            vec![("sort", "-account_locked"), ("cursor", flag_text.as_str())],
            vec![("sort", "-unix_uid"), ("cursor", uid_float.as_str())],
            vec![("sort", "password_date"), ("cursor", date_number.as_str())],
        ] {
            assert!(ListQuery::from_pairs(&pairs(&bad)).is_err(), "{bad:?}");
        }
        // A null key is a cursor in the run of users without a value.
        let null_uid = forged("unix_uid", Value::Null);
        assert!(ListQuery::from_pairs(&pairs(&[("sort", "unix_uid"), ("cursor", &null_uid)])).is_ok());
        let none = ListQuery::from_pairs(&pairs(&[("cursor", "")])).unwrap();
        assert!(none.after.is_none(), "an empty cursor is the first page");
    }

    #[test]
    fn parses_the_jumpcloud_list_parameters() {
        let q = ListQuery::from_pairs(&pairs(&[
            ("limit", "100"),
            ("skip", "5"),
            ("sort", "-lastname firstname"),
            ("fields", "username email"),
            ("filter[0]", "department:$eq:Sales"),
            ("filter[1]", "unix_uid:$gte:1000"),
            ("filter[or][0]", "state:ACTIVATED"),
            ("search", "ada"),
        ]))
        .unwrap();
        assert_eq!(q.limit, 100);
        assert_eq!(q.skip, 5);
        assert_eq!(q.sort.len(), 2);
        assert!(q.sort[0].1);
        assert_eq!(q.sort[0].0.name, "lastname");
        assert_eq!(q.all.len(), 2);
        assert_eq!(q.all[1].value, Scalar::Int(1000));
        assert_eq!(q.any[0].op, Op::Eq);
        assert_eq!(q.search, vec!["ada"]);
    }

    #[test]
    fn bad_parameters_are_named() {
        for (k, v, field) in [
            ("limit", "0", "limit"),
            ("limit", "1001", "limit"),
            ("skip", "-1", "skip"),
            ("sort", "password", "sort"),
            ("filter", "nope:$eq:1", "filter"),
            ("filter", "department:$like:x", "filter"),
            ("filter", "sudo:$eq:maybe", "filter.sudo"),
            ("fields", "username hash", "fields"),
        ] {
            let Err(DomainError::Invalid(e)) = ListQuery::from_pairs(&pairs(&[(k, v)])) else {
                panic!("{k}={v} should fail")
            };
            assert_eq!(e[0].field, field, "{k}={v}");
        }
    }

    #[test]
    fn conditions_and_terms_are_capped_and_nul_bytes_refused() {
        let field_of = |r: Result<ListQuery, DomainError>| match r {
            Err(DomainError::Invalid(e)) => (e[0].field.clone(), e[0].message.clone()),
            other => panic!("{other:?}"),
        };
        let filters = |n: usize, key: &str| -> Vec<(String, String)> {
            (0..n).map(|i| (format!("{key}[{i}]"), format!("department:$eq:d{i}"))).collect()
        };
        assert_eq!(ListQuery::from_pairs(&filters(MAX_FILTER_CONDITIONS, "filter")).unwrap().all.len(), 100);
        let (f, m) = field_of(ListQuery::from_pairs(&filters(1_100, "filter")));
        assert_eq!(f, "filter");
        assert!(m.contains("at most 100 filter conditions") && m.contains("1100 given"), "{m}");
        let mut mixed = filters(60, "filter");
        mixed.extend(filters(41, "filter[or]"));
        assert_eq!(field_of(ListQuery::from_pairs(&mixed)).0, "filter");
        let terms: Vec<(String, String)> = (0..20_000).map(|i| ("search".into(), format!("t{i}"))).collect();
        let (f, m) = field_of(ListQuery::from_pairs(&terms));
        assert_eq!(f, "search");
        assert!(m.contains("at most 20 search terms"), "{m}");
        let mut q = ListQuery::default();
        let body = serde_json::json!({"filter": {"or": (0..1_100).map(|i| serde_json::json!({"department": i.to_string()})).collect::<Vec<_>>()}});
        let Err(DomainError::Invalid(e)) = q.apply_search_body(&body) else { panic!() };
        assert_eq!(e[0].field, "filter");
        let mut q = ListQuery::default();
        let body =
            serde_json::json!({"searchFilter": {"searchTerm": (0..21).map(|i| format!("t{i}")).collect::<Vec<_>>()}});
        let Err(DomainError::Invalid(e)) = q.apply_search_body(&body) else { panic!() };
        assert_eq!(e[0].field, "search");

        assert_eq!(field_of(ListQuery::from_pairs(&pairs(&[("search", "a\0b")]))).0, "search");
        assert_eq!(field_of(ListQuery::from_pairs(&pairs(&[("filter", "department:$eq:a\0")]))).0, "filter.department");
        let mut q = ListQuery::default();
        let Err(DomainError::Invalid(e)) = q.apply_search_body(&serde_json::json!({"filter": [{"department": "\0"}]}))
        else {
            panic!()
        };
        assert_eq!(e[0].field, "filter.department");
        let mut q = ListQuery::default();
        let Err(DomainError::Invalid(e)) =
            q.apply_search_body(&serde_json::json!({"searchFilter": {"searchTerm": ["ok", "\0"]}}))
        else {
            panic!()
        };
        assert_eq!(e[0].field, "searchFilter.searchTerm");
    }

    #[test]
    fn operators_with_or_without_the_dollar() {
        for (f, op, value) in [
            ("username:eq:Salt-Dave", Op::Eq, "salt-dave"),
            ("username:$eq:Salt-Dave", Op::Eq, "salt-dave"),
            ("username:Salt-Dave", Op::Eq, "salt-dave"),
            ("department:ne:IT", Op::Ne, "IT"),
            ("department:gte:A", Op::Gte, "A"),
            ("department:ge:A", Op::Gte, "A"),
            ("department:$lte:Z", Op::Lte, "Z"),
            ("department:$eq:", Op::Eq, ""),
            ("department:Sales:East", Op::Eq, "Sales:East"),
            ("description:eq:a:b", Op::Eq, "a:b"),
        ] {
            let q = ListQuery::from_pairs(&pairs(&[("filter", f)])).unwrap();
            assert_eq!((q.all[0].op, &q.all[0].value), (op, &Scalar::Text(value.into())), "{f}");
        }
        let q = ListQuery::from_pairs(&pairs(&[("filter", "unix_uid:gt:1000")])).unwrap();
        assert_eq!((q.all[0].op, &q.all[0].value), (Op::Gt, &Scalar::Int(1000)));
        for f in [
            "username:like:ada",
            "username:in:a|b",
            "username:$in:a",
            "username:$regex:a",
            "username:eq",
            "username:$eq",
            "username",
            "nosuchfield:eq:x",
            "addresses:eq:x",
            "unix_uid:eq:many",
        ] {
            let Err(DomainError::Invalid(e)) = ListQuery::from_pairs(&pairs(&[("filter", f)])) else {
                panic!("{f} must be refused")
            };
            assert!(e[0].field.starts_with("filter"), "{f}: {e:?}");
        }
    }

    #[test]
    fn username_filters_compare_lowercase() {
        let q = ListQuery::from_pairs(&pairs(&[("filter", "username:$eq:Ada")])).unwrap();
        assert_eq!(q.all[0].value, Scalar::Text("ada".into()));
    }

    #[test]
    fn search_body_shapes() {
        let mut q = ListQuery::default();
        q.apply_search_body(&serde_json::json!({
            "filter": {"or": [{"department": "IT"}, {"department": "Sales"}]},
            "searchFilter": {"searchTerm": "@example.com", "fields": ["email"]},
            "fields": "email username"
        }))
        .unwrap();
        assert_eq!(q.any.len(), 2);
        assert_eq!(q.search_fields.len(), 1);
        let mut q = ListQuery::default();
        q.apply_search_body(&serde_json::json!({"filter": [{"unix_uid": {"$gt": 10}}]})).unwrap();
        assert_eq!(q.all[0].op, Op::Gt);
        assert!(ListQuery::default().apply_search_body(&serde_json::json!({"nope": 1})).is_err());
    }
}
