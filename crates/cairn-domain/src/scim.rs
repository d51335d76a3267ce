//! SCIM 2.0 filters (RFC 7644 §3.4.2.2) and PATCH paths (§3.5.2), parsed into trees that the
//! store turns into SQL over known columns and that PATCH applies to JSON documents. Pure: no
//! I/O. Every malformed input is a `ScimParseError` naming what is wrong and where; nothing
//! here panics, and nesting is bounded so a hostile filter cannot exhaust the stack.

use std::fmt;

use serde_json::Value;

pub use crate::query::MAX_FILTER_CONDITIONS;

/// The core and extension schema URNs Cairn serves.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// Deepest nesting of parentheses, `not` and value paths accepted in one filter.
pub const MAX_DEPTH: usize = 32;
/// Longest filter or path accepted, in bytes.
pub const MAX_LEN: usize = 4096;

/// A filter or path that cannot be parsed; `scim_type` is RFC 7644's `invalidFilter` or
/// `invalidPath`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimParseError {
    pub scim_type: &'static str,
    pub detail: String,
}

impl fmt::Display for ScimParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for ScimParseError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    fn parse(s: &str) -> Option<CompareOp> {
        Some(match s.to_ascii_lowercase().as_str() {
            "eq" => CompareOp::Eq,
            "ne" => CompareOp::Ne,
            "co" => CompareOp::Co,
            "sw" => CompareOp::Sw,
            "ew" => CompareOp::Ew,
            "gt" => CompareOp::Gt,
            "ge" => CompareOp::Ge,
            "lt" => CompareOp::Lt,
            "le" => CompareOp::Le,
            _ => return None,
        })
    }
}

/// An attribute path: optional schema URN, attribute, optional sub-attribute
/// (`urn:…:enterprise:2.0:User:manager.value`). Names keep the client's case; SCIM attribute
/// names are compared case-insensitively (`AttrPath::is`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    pub uri: Option<String>,
    pub attr: String,
    pub sub: Option<String>,
}

impl AttrPath {
    /// True when this path names `attr` (and `sub`, if given), case-insensitively.
    pub fn is(&self, attr: &str, sub: Option<&str>) -> bool {
        self.attr.eq_ignore_ascii_case(attr)
            && match (sub, &self.sub) {
                (None, None) => true,
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                _ => false,
            }
    }

    /// The dotted form without the URN (`name.givenName`).
    pub fn dotted(&self) -> String {
        match &self.sub {
            Some(s) => format!("{}.{}", self.attr, s),
            None => self.attr.clone(),
        }
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(u) = &self.uri {
            write!(f, "{u}:")?;
        }
        f.write_str(&self.dotted())
    }
}

/// A comparison value: a JSON string, number, boolean or null.
#[derive(Debug, Clone, PartialEq)]
pub enum CompValue {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Present(AttrPath),
    Compare(AttrPath, CompareOp, CompValue),
    /// `emails[type eq "work"]`: some element of a multi-valued attribute matches.
    ValuePath(AttrPath, Box<Filter>),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
}

/// A PATCH `path`: `attr`, `attr.sub`, `attr[filter]` or `attr[filter].sub`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    pub attr: AttrPath,
    pub filter: Option<Filter>,
    /// The sub-attribute after a value filter (`emails[type eq "work"].value` → `value`).
    pub sub: Option<String>,
}

// ---- tokens -------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Num(f64),
    LParen,
    RParen,
    LBracket,
    RBracket,
}

fn filter_err(detail: impl Into<String>) -> ScimParseError {
    ScimParseError { scim_type: "invalidFilter", detail: detail.into() }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '$')
}

fn tokenize(s: &str, err: fn(String) -> ScimParseError) -> Result<Vec<(usize, Tok)>, ScimParseError> {
    if s.len() > MAX_LEN {
        return Err(err(format!("is longer than {MAX_LEN} characters")));
    }
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (pos, c) = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push((pos, Tok::LParen));
                i += 1;
            }
            ')' => {
                out.push((pos, Tok::RParen));
                i += 1;
            }
            '[' => {
                out.push((pos, Tok::LBracket));
                i += 1;
            }
            ']' => {
                out.push((pos, Tok::RBracket));
                i += 1;
            }
            '"' => {
                // A JSON string literal: find its end, honouring escapes, and let serde decode.
                let mut j = i + 1;
                let mut escaped = false;
                loop {
                    let Some(&(_, d)) = chars.get(j) else {
                        return Err(err(format!("the string starting at position {pos} is not closed")));
                    };
                    if escaped {
                        escaped = false;
                    } else if d == '\\' {
                        escaped = true;
                    } else if d == '"' {
                        break;
                    }
                    j += 1;
                }
                let end = chars[j].0 + 1;
                let lit: String = serde_json::from_str(&s[pos..end])
                    .map_err(|e| err(format!("the string at position {pos} is not a valid JSON string: {e}")))?;
                if crate::fields::has_nul(&lit) {
                    return Err(err(format!("the string at position {pos} {}", crate::fields::NUL_REFUSED)));
                }
                out.push((pos, Tok::Str(lit)));
                i = j + 1;
            }
            c if c == '-' || c.is_ascii_digit() => {
                let mut j = i;
                while j < chars.len() && (chars[j].1.is_ascii_alphanumeric() || matches!(chars[j].1, '.' | '-' | '+')) {
                    j += 1;
                }
                let end = chars.get(j).map(|c| c.0).unwrap_or(s.len());
                let text = &s[pos..end];
                // Attribute names never start with a digit or '-', so this is a number.
                let n: f64 = text.parse().map_err(|_| err(format!("'{text}' at position {pos} is not a number")))?;
                if !n.is_finite() {
                    return Err(err(format!("'{text}' at position {pos} is not a finite number")));
                }
                out.push((pos, Tok::Num(n)));
                i = j;
            }
            c if is_word_char(c) => {
                let mut j = i;
                while j < chars.len() && is_word_char(chars[j].1) {
                    j += 1;
                }
                let end = chars.get(j).map(|c| c.0).unwrap_or(s.len());
                out.push((pos, Tok::Word(s[pos..end].to_string())));
                i = j;
            }
            other => return Err(err(format!("unexpected character '{other}' at position {pos}"))),
        }
    }
    Ok(out)
}

/// Splits `urn:…:User:name.givenName` into its parts.
fn parse_attr_path(word: &str, err: fn(String) -> ScimParseError) -> Result<AttrPath, ScimParseError> {
    let (uri, rest) = if word.len() > 4 && word[..4].eq_ignore_ascii_case("urn:") {
        // The URN of a known schema alone names the whole extension (a PATCH path).
        for known in [USER_SCHEMA, GROUP_SCHEMA, ENTERPRISE_SCHEMA] {
            if word.eq_ignore_ascii_case(known) {
                return Ok(AttrPath { uri: Some(known.to_string()), attr: String::new(), sub: None });
            }
            if word.len() > known.len()
                && word[..known.len()].eq_ignore_ascii_case(known)
                && word.as_bytes()[known.len()] == b':'
            {
                return split_attr(Some(known.to_string()), &word[known.len() + 1..], word, err);
            }
        }
        match word.rfind(':') {
            Some(i) => (Some(word[..i].to_string()), &word[i + 1..]),
            None => return Err(err(format!("'{word}' is not a valid attribute path"))),
        }
    } else {
        (None, word)
    };
    split_attr(uri, rest, word, err)
}

fn split_attr(
    uri: Option<String>,
    rest: &str,
    whole: &str,
    err: fn(String) -> ScimParseError,
) -> Result<AttrPath, ScimParseError> {
    let valid_name = |n: &str| {
        let mut cs = n.chars();
        matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '$')
            && cs.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '$'))
    };
    let (attr, sub) = match rest.split_once('.') {
        Some((a, s)) => (a, Some(s)),
        None => (rest, None),
    };
    if !valid_name(attr) || sub.is_some_and(|s| !valid_name(s)) {
        return Err(err(format!("'{whole}' is not a valid attribute path")));
    }
    Ok(AttrPath { uri, attr: attr.to_string(), sub: sub.map(str::to_string) })
}

// ---- filter parser ------------------------------------------------------------------------

struct Parser {
    toks: Vec<(usize, Tok)>,
    i: usize,
    depth: usize,
    /// Attribute conditions so far (`pr` and comparisons), at most `MAX_FILTER_CONDITIONS`.
    conditions: usize,
    len: usize,
    err: fn(String) -> ScimParseError,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|t| &t.1)
    }
    fn pos(&self) -> usize {
        self.toks.get(self.i).map(|t| t.0).unwrap_or(self.len)
    }
    fn fail<T>(&self, what: impl Into<String>) -> Result<T, ScimParseError> {
        Err((self.err)(what.into()))
    }
    fn peek_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn enter(&mut self) -> Result<(), ScimParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.fail(format!("nests deeper than {MAX_DEPTH} levels"));
        }
        Ok(())
    }

    fn or_expr(&mut self) -> Result<Filter, ScimParseError> {
        let mut left = self.and_expr()?;
        while self.peek_keyword("or") {
            self.i += 1;
            let right = self.and_expr()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Filter, ScimParseError> {
        let mut left = self.unary()?;
        while self.peek_keyword("and") {
            self.i += 1;
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn paren(&mut self) -> Result<Filter, ScimParseError> {
        // At '('.
        self.i += 1;
        self.enter()?;
        let f = self.or_expr()?;
        self.depth -= 1;
        match self.peek() {
            Some(Tok::RParen) => {
                self.i += 1;
                Ok(f)
            }
            _ => self.fail(format!("expected ')' at position {}", self.pos())),
        }
    }

    fn unary(&mut self) -> Result<Filter, ScimParseError> {
        match self.peek().cloned() {
            Some(Tok::LParen) => self.paren(),
            Some(Tok::Word(w))
                if w.eq_ignore_ascii_case("not") && self.toks.get(self.i + 1).map(|t| &t.1) == Some(&Tok::LParen) =>
            {
                self.i += 1;
                self.enter()?;
                let f = self.paren()?;
                self.depth -= 1;
                Ok(Filter::Not(Box::new(f)))
            }
            Some(Tok::Word(w)) => {
                let pos = self.pos();
                self.i += 1;
                let path = parse_attr_path(&w, self.err)?;
                if path.attr.is_empty() {
                    return self.fail(format!("'{w}' at position {pos} names a schema, not an attribute"));
                }
                self.attr_expr(path, pos)
            }
            Some(t) => {
                self.fail(format!("expected an attribute path at position {}, found {}", self.pos(), describe(&t)))
            }
            None => self.fail("ends where an attribute path was expected"),
        }
    }

    fn attr_expr(&mut self, path: AttrPath, pos: usize) -> Result<Filter, ScimParseError> {
        if !matches!(self.peek(), Some(Tok::LBracket)) {
            self.conditions += 1;
            if self.conditions > MAX_FILTER_CONDITIONS {
                return self.fail(format!(
                    "has more than {MAX_FILTER_CONDITIONS} conditions (the one at position {pos} is one too many)"
                ));
            }
        }
        match self.peek().cloned() {
            Some(Tok::LBracket) => {
                if path.sub.is_some() {
                    return self.fail(format!("a value filter cannot follow a sub-attribute (position {pos})"));
                }
                self.i += 1;
                self.enter()?;
                let inner = self.or_expr()?;
                self.depth -= 1;
                match self.peek() {
                    Some(Tok::RBracket) => self.i += 1,
                    _ => return self.fail(format!("expected ']' at position {}", self.pos())),
                }
                Ok(Filter::ValuePath(path, Box::new(inner)))
            }
            Some(Tok::Word(op)) if op.eq_ignore_ascii_case("pr") => {
                self.i += 1;
                Ok(Filter::Present(path))
            }
            Some(Tok::Word(op)) => {
                let Some(op) = CompareOp::parse(&op) else {
                    return self.fail(format!(
                        "'{op}' at position {} is not an operator (eq ne co sw ew gt ge lt le pr)",
                        self.pos()
                    ));
                };
                self.i += 1;
                let value = match self.peek().cloned() {
                    Some(Tok::Str(s)) => CompValue::Str(s),
                    Some(Tok::Num(n)) => CompValue::Num(n),
                    Some(Tok::Word(w)) if w == "true" => CompValue::Bool(true),
                    Some(Tok::Word(w)) if w == "false" => CompValue::Bool(false),
                    Some(Tok::Word(w)) if w == "null" => CompValue::Null,
                    Some(t) => {
                        return self.fail(format!(
                            "expected a value (a quoted string, number, true, false or null) at position {}, found {}",
                            self.pos(),
                            describe(&t)
                        ))
                    }
                    None => return self.fail(format!("'{path}' has an operator but no value")),
                };
                self.i += 1;
                Ok(Filter::Compare(path, op, value))
            }
            Some(t) => self.fail(format!("expected an operator after '{path}', found {}", describe(&t))),
            None => self.fail(format!("'{path}' at position {pos} has no operator")),
        }
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("'{w}'"),
        Tok::Str(s) => format!("the string \"{s}\""),
        Tok::Num(n) => format!("the number {n}"),
        Tok::LParen => "'('".into(),
        Tok::RParen => "')'".into(),
        Tok::LBracket => "'['".into(),
        Tok::RBracket => "']'".into(),
    }
}

fn mk_filter_err(d: String) -> ScimParseError {
    filter_err(format!("the filter {d}"))
}

fn mk_path_err(d: String) -> ScimParseError {
    ScimParseError { scim_type: "invalidPath", detail: format!("the path {d}") }
}

/// Parses a `filter` query parameter.
pub fn parse_filter(s: &str) -> Result<Filter, ScimParseError> {
    let toks = tokenize(s, mk_filter_err)?;
    if toks.is_empty() {
        return Err(filter_err("the filter is empty"));
    }
    let mut p = Parser { toks, i: 0, depth: 0, conditions: 0, len: s.len(), err: mk_filter_err };
    let f = p.or_expr()?;
    if p.i < p.toks.len() {
        return Err(filter_err(format!("the filter has unexpected text at position {}", p.pos())));
    }
    Ok(f)
}

/// Parses a PATCH operation's `path`.
pub fn parse_path(s: &str) -> Result<PatchPath, ScimParseError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(mk_path_err("is empty".into()));
    }
    if s.len() > MAX_LEN {
        return Err(mk_path_err(format!("is longer than {MAX_LEN} characters")));
    }
    let Some(open) = s.find('[') else {
        if s.contains(']') || s.contains(char::is_whitespace) {
            return Err(mk_path_err(format!("'{s}' is not a valid attribute path")));
        }
        let attr = parse_attr_path(s, mk_path_err)?;
        return Ok(PatchPath { attr, filter: None, sub: None });
    };
    let attr = parse_attr_path(&s[..open], mk_path_err)?;
    if attr.sub.is_some() || attr.attr.is_empty() {
        return Err(mk_path_err(format!("'{s}': a value filter must follow a multi-valued attribute")));
    }
    let Some(close) = s.rfind(']') else {
        return Err(mk_path_err(format!("'{s}' has '[' without ']'")));
    };
    if close < open {
        return Err(mk_path_err(format!("'{s}' has ']' before '['")));
    }
    let inner = &s[open + 1..close];
    let toks = tokenize(inner, mk_path_err)?;
    if toks.is_empty() {
        return Err(mk_path_err(format!("'{s}' has an empty value filter")));
    }
    let mut p = Parser { toks, i: 0, depth: 1, conditions: 0, len: inner.len(), err: mk_path_err };
    let filter = p.or_expr()?;
    if p.i < p.toks.len() {
        return Err(mk_path_err(format!("'{s}' has unexpected text in its value filter")));
    }
    let rest = &s[close + 1..];
    let sub = if rest.is_empty() {
        None
    } else {
        let Some(name) = rest.strip_prefix('.') else {
            return Err(mk_path_err(format!("'{s}' has unexpected text after ']'")));
        };
        let p = split_attr(None, name, s, mk_path_err)?;
        if p.sub.is_some() {
            return Err(mk_path_err(format!("'{s}' goes deeper than a sub-attribute")));
        }
        Some(p.attr)
    };
    Ok(PatchPath { attr, filter: Some(filter), sub })
}

// ---- evaluation on JSON -------------------------------------------------------------------

fn get_ci<'a>(obj: &'a Value, name: &str) -> Option<&'a Value> {
    obj.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

/// The values a path selects in a resource: for a multi-valued attribute, each element (or
/// each element's sub-attribute).
fn select<'a>(resource: &'a Value, p: &AttrPath) -> Vec<&'a Value> {
    let base = match &p.uri {
        Some(u) if !u.eq_ignore_ascii_case(USER_SCHEMA) && !u.eq_ignore_ascii_case(GROUP_SCHEMA) => {
            match get_ci(resource, u) {
                Some(v) => v,
                None => return vec![],
            }
        }
        _ => resource,
    };
    let Some(v) = get_ci(base, &p.attr) else { return vec![] };
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    match &p.sub {
        None => items,
        Some(s) => items.into_iter().filter_map(|i| get_ci(i, s)).collect(),
    }
}

fn compare(v: &Value, op: CompareOp, want: &CompValue, case_exact: bool) -> bool {
    use std::cmp::Ordering;
    let fold = |s: &str| if case_exact { s.to_string() } else { s.to_lowercase() };
    match (v, want) {
        (Value::String(a), CompValue::Str(b)) => {
            let (a, b) = (fold(a), fold(b));
            match op {
                CompareOp::Eq => a == b,
                CompareOp::Ne => a != b,
                CompareOp::Co => a.contains(&b),
                CompareOp::Sw => a.starts_with(&b),
                CompareOp::Ew => a.ends_with(&b),
                CompareOp::Gt => a > b,
                CompareOp::Ge => a >= b,
                CompareOp::Lt => a < b,
                CompareOp::Le => a <= b,
            }
        }
        (Value::Bool(a), CompValue::Bool(b)) => match op {
            CompareOp::Eq => a == b,
            CompareOp::Ne => a != b,
            _ => false,
        },
        (Value::Number(a), CompValue::Num(b)) => {
            let Some(a) = a.as_f64() else { return false };
            let o = a.partial_cmp(b);
            match op {
                CompareOp::Eq => o == Some(Ordering::Equal),
                CompareOp::Ne => o != Some(Ordering::Equal),
                CompareOp::Gt => o == Some(Ordering::Greater),
                CompareOp::Ge => matches!(o, Some(Ordering::Greater | Ordering::Equal)),
                CompareOp::Lt => o == Some(Ordering::Less),
                CompareOp::Le => matches!(o, Some(Ordering::Less | Ordering::Equal)),
                _ => false,
            }
        }
        (Value::Null, CompValue::Null) => op == CompareOp::Eq,
        (_, CompValue::Null) => op == CompareOp::Ne,
        _ => op == CompareOp::Ne,
    }
}

impl Filter {
    /// Whether a JSON resource (or one element of a multi-valued attribute, for the filter
    /// inside a value path) matches. Strings compare case-insensitively, as `caseExact: false`
    /// attributes do.
    pub fn matches(&self, resource: &Value) -> bool {
        match self {
            Filter::Present(p) => select(resource, p).iter().any(|v| match v {
                Value::Null => false,
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                Value::Object(o) => !o.is_empty(),
                _ => true,
            }),
            Filter::Compare(p, op, want) => {
                let vals = select(resource, p);
                if vals.is_empty() {
                    return matches!((op, want), (CompareOp::Ne, _)) && !matches!(want, CompValue::Null);
                }
                if *op == CompareOp::Ne {
                    vals.iter().all(|v| compare(v, *op, want, false))
                } else {
                    vals.iter().any(|v| compare(v, *op, want, false))
                }
            }
            Filter::ValuePath(p, inner) => {
                let whole = AttrPath { uri: p.uri.clone(), attr: p.attr.clone(), sub: None };
                select(resource, &whole).iter().any(|item| inner.matches(item))
            }
            Filter::And(a, b) => a.matches(resource) && b.matches(resource),
            Filter::Or(a, b) => a.matches(resource) || b.matches(resource),
            Filter::Not(a) => !a.matches(resource),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(a: &str) -> AttrPath {
        AttrPath { uri: None, attr: a.into(), sub: None }
    }

    #[test]
    fn parses_simple_comparisons() {
        assert_eq!(
            parse_filter(r#"userName eq "bjensen""#).unwrap(),
            Filter::Compare(p("userName"), CompareOp::Eq, CompValue::Str("bjensen".into()))
        );
        assert_eq!(
            parse_filter("meta.lastModified gt \"2011-05-13T04:42:34Z\"").unwrap(),
            Filter::Compare(
                AttrPath { uri: None, attr: "meta".into(), sub: Some("lastModified".into()) },
                CompareOp::Gt,
                CompValue::Str("2011-05-13T04:42:34Z".into())
            )
        );
        assert_eq!(parse_filter("title pr").unwrap(), Filter::Present(p("title")));
        assert_eq!(
            parse_filter("active EQ true").unwrap(),
            Filter::Compare(p("active"), CompareOp::Eq, CompValue::Bool(true))
        );
        assert_eq!(parse_filter("x lt 10.5").unwrap(), Filter::Compare(p("x"), CompareOp::Lt, CompValue::Num(10.5)));
        assert_eq!(parse_filter("x eq null").unwrap(), Filter::Compare(p("x"), CompareOp::Eq, CompValue::Null));
    }

    #[test]
    fn every_operator_parses() {
        for op in ["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"] {
            assert!(parse_filter(&format!("userName {op} \"a\"")).is_ok(), "{op}");
        }
    }

    #[test]
    fn precedence_and_grouping() {
        let f = parse_filter(r#"a eq "1" or b eq "2" and c eq "3""#).unwrap();
        assert!(matches!(f, Filter::Or(_, ref r) if matches!(**r, Filter::And(_, _))));
        let f = parse_filter(r#"(a eq "1" or b eq "2") and c eq "3""#).unwrap();
        assert!(matches!(f, Filter::And(ref l, _) if matches!(**l, Filter::Or(_, _))));
        let f = parse_filter(r#"not (a eq "1")"#).unwrap();
        assert!(matches!(f, Filter::Not(_)));
        let f =
            parse_filter(r#"userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")"#)
                .unwrap();
        assert!(matches!(f, Filter::And(_, _)));
    }

    #[test]
    fn value_paths_and_urns() {
        let f = parse_filter(r#"emails[type eq "work" and value co "@example.com"]"#).unwrap();
        assert!(matches!(f, Filter::ValuePath(ref a, _) if a.attr == "emails"));
        let f = parse_filter(r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J""#).unwrap();
        let Filter::Compare(a, _, _) = f else { panic!() };
        assert_eq!(a.uri.as_deref(), Some(USER_SCHEMA));
        assert_eq!(a.attr, "userName");
        let f =
            parse_filter(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "x""#).unwrap();
        let Filter::Compare(a, _, _) = f else { panic!() };
        assert_eq!(a.uri.as_deref(), Some(ENTERPRISE_SCHEMA));
        assert_eq!((a.attr.as_str(), a.sub.as_deref()), ("manager", Some("value")));
    }

    #[test]
    fn string_escapes_decode() {
        let f = parse_filter(r#"displayName eq "a \"quoted\" name\u00e9""#).unwrap();
        assert_eq!(f, Filter::Compare(p("displayName"), CompareOp::Eq, CompValue::Str("a \"quoted\" nameé".into())));
    }

    #[test]
    fn malformed_filters_are_clear_errors() {
        let cases = [
            "",
            "   ",
            "userName",
            "userName eq",
            "userName xx \"a\"",
            "userName eq \"unterminated",
            "userName eq bjensen",
            "(userName eq \"a\"",
            "userName eq \"a\")",
            "userName eq \"a\" and",
            "userName eq \"a\" or or b pr",
            "emails[type eq \"work\"",
            "not userName eq \"a\"",
            "1abc eq \"a\"",
            "userName eq \"a\" extra",
            "a.b.c eq \"x\"",
            "userName eq \"\\q\"",
            "userName ~ \"a\"",
            "urn:ietf:params:scim:schemas:core:2.0:User eq \"a\"",
            "]",
            "x eq 1e999",
        ];
        for c in cases {
            let e = parse_filter(c).expect_err(c);
            assert_eq!(e.scim_type, "invalidFilter", "{c}");
            assert!(e.detail.starts_with("the filter"), "{c}: {}", e.detail);
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = format!("{}a pr{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(parse_filter(&deep[..MAX_LEN.min(deep.len())]).is_err());
        let deep = format!("{}a pr{}", "(".repeat(100), ")".repeat(100));
        let e = parse_filter(&deep).unwrap_err();
        assert!(e.detail.contains("nests deeper"), "{}", e.detail);
        let nots = format!("{}a pr{}", "not (".repeat(100), ")".repeat(100));
        assert!(parse_filter(&nots).is_err());
        let ok = format!("{}a pr{}", "(".repeat(10), ")".repeat(10));
        assert!(parse_filter(&ok).is_ok());
    }

    #[test]
    fn conditions_are_capped_and_nul_bytes_refused() {
        let n = |k: usize| (0..k).map(|i| format!("userName eq \"u{i}\"")).collect::<Vec<_>>().join(" or ");
        assert!(parse_filter(&n(MAX_FILTER_CONDITIONS)).is_ok());
        let e = parse_filter(&n(MAX_FILTER_CONDITIONS + 1)).unwrap_err();
        assert_eq!(e.scim_type, "invalidFilter");
        assert!(e.detail.contains("more than 100 conditions"), "{}", e.detail);
        let in_value_paths = (0..51).map(|i| format!("emails[value eq \"{i}\" and type pr]")).collect::<Vec<_>>();
        assert!(parse_filter(&in_value_paths.join(" or ")).is_err(), "conditions inside value paths count");
        let e = parse_filter(r#"userName eq "a\u0000b""#).unwrap_err();
        assert_eq!(e.scim_type, "invalidFilter");
        assert!(e.detail.contains("NUL"), "{}", e.detail);
        assert!(parse_filter("userName eq \"a\0b\"").is_err(), "a raw NUL too");
    }

    #[test]
    fn patch_paths() {
        assert_eq!(parse_path("active").unwrap(), PatchPath { attr: p("active"), filter: None, sub: None });
        let pp = parse_path("name.givenName").unwrap();
        assert_eq!((pp.attr.attr.as_str(), pp.attr.sub.as_deref()), ("name", Some("givenName")));
        let pp = parse_path(r#"emails[type eq "work"].value"#).unwrap();
        assert_eq!(pp.attr.attr, "emails");
        assert_eq!(pp.sub.as_deref(), Some("value"));
        assert!(pp.filter.is_some());
        let pp = parse_path(r#"members[value eq "2819c223-7f76-453a-919d-413861904646"]"#).unwrap();
        assert_eq!(pp.attr.attr, "members");
        assert!(pp.sub.is_none());
        let pp = parse_path("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber").unwrap();
        assert_eq!(pp.attr.uri.as_deref(), Some(ENTERPRISE_SCHEMA));
        assert_eq!(pp.attr.attr, "employeeNumber");
        let pp = parse_path("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User").unwrap();
        assert_eq!(pp.attr.attr, "");
        let pp = parse_path(r#"addresses[type eq "work" and primary eq true].streetAddress"#).unwrap();
        assert_eq!(pp.sub.as_deref(), Some("streetAddress"));
    }

    #[test]
    fn malformed_paths_are_clear_errors() {
        for c in [
            "",
            "emails[",
            "emails]",
            "emails[]",
            "emails[type eq]",
            "emails[type eq \"work\"]value",
            "emails[type eq \"work\"].value.x",
            "name.givenName[type eq \"x\"]",
            "a b",
            "1abc",
            "emails[type eq \"work\"] extra",
            "a..b",
        ] {
            let e = parse_path(c).expect_err(c);
            assert_eq!(e.scim_type, "invalidPath", "{c}");
            assert!(e.detail.starts_with("the path"), "{c}: {}", e.detail);
        }
    }

    #[test]
    fn evaluates_on_json() {
        let u = json!({
            "userName": "BJensen",
            "active": true,
            "emails": [{"type": "work", "value": "bjensen@example.com", "primary": true}, {"type": "home", "value": "b@home.org"}],
            "name": {"givenName": "Barbara"},
            ENTERPRISE_SCHEMA: {"employeeNumber": "701984"}
        });
        let t = |f: &str| parse_filter(f).unwrap().matches(&u);
        assert!(t(r#"userName eq "bjensen""#));
        assert!(t(r#"emails[type eq "work" and value ew "example.com"]"#));
        assert!(!t(r#"emails[type eq "other"]"#));
        assert!(t(r#"emails.value co "home""#));
        assert!(t(r#"name.givenName sw "bar""#));
        assert!(t("active eq true and not (title pr)"));
        assert!(t(&format!(r#"{ENTERPRISE_SCHEMA}:employeeNumber eq "701984""#)));
        assert!(!t(r#"userName ne "bjensen""#));
    }
}
