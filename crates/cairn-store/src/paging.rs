//! Pages of users by keyset (`cursor=`): a page starts after the last row of the one before,
//! found through the sort index instead of counting `skip` rows from the top, so page 500 costs
//! what page 1 does. The cursor carries the sort keys as the database compares them (names
//! lowercased), so the next page's position is an index range.
//!
//! Sorts are `ORDER BY k1 [DESC], …, id` with NULLs first ascending and last descending (see
//! [`crate::order_by`]); the id follows the direction of the last sort field, so that one index
//! on `(…, k, id)` read forwards or backwards serves both directions.

use cairn_domain::fields::Kind;
use cairn_domain::query::{sort_text, Cursor, ListQuery, UserPage};
use serde_json::Value;
use sqlx::any::AnyRow;

use crate::rows::{self, get_opt_i64, get_opt_text, get_text};
use crate::{order_by, order_by_with, sort_expr, Args, Backend, Db, Result};

/// The direction the id tie-breaker takes: that of the last sort field.
pub(crate) fn id_desc(q: &ListQuery) -> bool {
    q.sort.last().is_some_and(|(_, desc)| *desc)
}

fn sorts_by_id(q: &ListQuery) -> bool {
    q.sort.iter().any(|(f, _)| f.column == "id")
}

/// The columns a page query selects besides `*`: each sort expression, for the cursor.
pub(crate) fn key_columns(q: &ListQuery) -> String {
    q.sort.iter().enumerate().map(|(i, (f, _))| format!(", {} AS cursor_k{i}", sort_expr(f.column))).collect()
}

/// The cursor of the page after the one ending at this row.
pub(crate) fn cursor_of(q: &ListQuery, r: &AnyRow) -> Result<Cursor> {
    let mut keys = Vec::with_capacity(q.sort.len());
    for (i, (f, _)) in q.sort.iter().enumerate() {
        let col = format!("cursor_k{i}");
        let v = match f.kind {
            Kind::Int => get_opt_i64(r, col.as_str())?.map_or(Value::Null, Value::from),
            Kind::Bool => Value::Bool(rows::get_bool(r, &col)?),
            Kind::Text | Kind::Time | Kind::Json => get_opt_text(r, col.as_str())?.map_or(Value::Null, Value::String),
        };
        keys.push(v);
    }
    Ok(Cursor { sort: sort_text(&q.sort), keys, id: get_text(r, "id")? })
}

fn push_key(a: &mut Args, v: &Value) -> String {
    match v {
        Value::Bool(b) => a.push(*b),
        Value::Number(n) => a.push(n.as_i64().unwrap_or_default()),
        Value::String(s) => a.push(s.clone()),
        other => a.push(other.to_string()),
    }
}

/// A list sorted by one yes/no field (and no search): the id's direction, and the two sides
/// in sort order, each as its condition and its value.
fn flag_sides(q: &ListQuery) -> Option<(&'static str, [(String, bool); 2])> {
    let [(f, desc)] = q.sort.as_slice() else { return None };
    if f.kind != Kind::Bool || !q.search.is_empty() {
        return None;
    }
    let e = sort_expr(f.column);
    let (no, yes) = ((format!("NOT {e}"), false), (e, true));
    Some(if *desc { ("DESC", [yes, no]) } else { ("ASC", [no, yes]) })
}

/// Columns whose sort is read through a partial index of the users with a value (migrations
/// 0007 and 0026; employee IDs through their unique index): most users have none, and an index
/// holding every user's NULL cost every import for a column few sort by.
const NULLABLE_SORTED: &[&str] =
    &["alternateemail", "description", "manager", "password_date", "unix_uid", "unix_guid", "employeeidentifier"];

/// A list sorted by one of [`NULLABLE_SORTED`] (and no search): its column and direction.
fn nullable_sort(q: &ListQuery) -> Option<(&'static str, &'static str)> {
    let [(f, desc)] = q.sort.as_slice() else { return None };
    (q.search.is_empty() && NULLABLE_SORTED.contains(&f.column))
        .then_some((f.column, if *desc { "DESC" } else { "ASC" }))
}

/// One run of a list of [`two_runs`]: its rows, their order, and the statement's tail.
struct Run {
    cond: String,
    order: String,
    /// When set, the run is read only if this holds (evaluated once, before the read).
    only_if: Option<String>,
}

impl Run {
    /// `ORDER BY … LIMIT …` for at most `n` rows (a placeholder).
    fn tail(&self, n: &str) -> String {
        match &self.only_if {
            // In the LIMIT, not the WHERE: SQLite then skips the read, rather than walking
            // the index and testing each row against the constant.
            Some(c) => format!("ORDER BY {} LIMIT CASE WHEN {c} THEN {n} ELSE 0 END", self.order),
            None => format!("ORDER BY {} LIMIT {n}", self.order),
        }
    }
}

/// A list whose order is two runs, each read in order through an index of its own: a yes/no
/// sort (each value's users in id order) or a nullable one (the users without a value in id
/// order; NULLs come first ascending, last descending; those with one in the column's order).
fn two_runs(q: &ListQuery, sqlite: bool) -> Option<[Run; 2]> {
    if let Some((dir, [a, b])) = flag_sides(q) {
        let run = |cond| Run { cond, order: format!("id {dir}"), only_if: None };
        return Some([run(a.0), run(b.0)]);
    }
    let (col, dir) = nullable_sort(q)?;
    // `+` keeps SQLite from finding the NULLs through the column's unique index and sorting
    // them all by id (employee IDs); the id index, read in order, finds them. Where nobody
    // lacks a value, that read would walk every user to find none: the EXISTS (through that
    // unique index for employee IDs) skips it.
    let plus = if sqlite { "+" } else { "" };
    let null = Run {
        cond: format!("{plus}{col} IS NULL"),
        order: format!("id {dir}"),
        only_if: Some(format!("EXISTS (SELECT 1 FROM users n WHERE n.{col} IS NULL)")),
    };
    let set = Run { cond: format!("{col} IS NOT NULL"), order: format!("{col} {dir}, id {dir}"), only_if: None };
    Some(if dir == "DESC" { [set, null] } else { [null, set] })
}

/// After a cursor in a list of [`two_runs`]: the rest of the cursor's run after it, then the
/// other run if it comes later.
fn two_runs_after(q: &ListQuery, c: &Cursor, a: &mut Args, sqlite: bool) -> Option<Vec<Run>> {
    let runs = two_runs(q, sqlite)?;
    let key = c.keys.first()?;
    let id = a.push(c.id.clone());
    let desc = q.sort.first().is_some_and(|(_, d)| *d);
    let op = if desc { "<" } else { ">" };
    // Which run the cursor's row is in, and the condition that continues it.
    let (at, rest) = match (flag_sides(q), nullable_sort(q)) {
        (Some((_, [first, _])), _) => {
            let v = key.as_bool()?;
            (usize::from(first.1 != v), format!("id {op} {id}"))
        }
        (None, Some(_)) if key.is_null() => (usize::from(desc), format!("id {op} {id}")),
        (None, Some((col, _))) => {
            let v = push_key(a, key);
            let range = format!("{col} {op}= {v} AND ({col} {op} {v} OR id {op} {id})");
            (usize::from(!desc), range)
        }
        (None, None) => return None,
    };
    let mut phases = Vec::new();
    for (i, run) in runs.into_iter().enumerate() {
        if i == at {
            phases.push(Run { cond: format!("{} AND {rest}", run.cond), ..run });
        } else if i > at {
            phases.push(run);
        }
    }
    Some(phases)
}

/// The conditions that select the rows after the cursor, one per phase: each phase's rows
/// come after all of the previous phase's, so a page reads the phases in turn until it is
/// full. One sort field (the common case) gives index ranges: `k >= v AND (k > v OR id > i)` and, where
/// the NULLs of `k` come after, `k IS NULL` as a second phase.
pub(crate) fn after_conditions(q: &ListQuery, c: &Cursor, a: &mut Args) -> Vec<String> {
    let id_dir = if id_desc(q) { "<" } else { ">" };
    match q.sort.as_slice() {
        [] => vec![format!("id {id_dir} {}", a.push(c.id.clone()))],
        [(f, desc)] if f.column == "id" => {
            let v = push_key(a, &c.keys[0]);
            vec![format!("id {} {v}", if *desc { "<" } else { ">" })]
        }
        [(f, desc)] => {
            let k = sort_expr(f.column);
            let v = &c.keys[0];
            match (desc, v.is_null()) {
                // `k >= v` is the index range; the rest drops the rows of `v` up to the id.
                (false, false) => {
                    let (v, id) = (push_key(a, v), a.push(c.id.clone()));
                    vec![format!("{k} >= {v} AND ({k} > {v} OR id > {id})")]
                }
                (false, true) => {
                    let id = a.push(c.id.clone());
                    vec![format!("{k} IS NULL AND id > {id}"), format!("{k} IS NOT NULL")]
                }
                (true, false) => {
                    let (v, id) = (push_key(a, v), a.push(c.id.clone()));
                    vec![format!("{k} <= {v} AND ({k} < {v} OR id < {id})"), format!("{k} IS NULL")]
                }
                (true, true) => {
                    let id = a.push(c.id.clone());
                    vec![format!("{k} IS NULL AND id < {id}")]
                }
            }
        }
        sort => {
            // Several fields: OR over "equal up to field i, after it at i".
            let mut keys: Vec<(String, bool, Value)> =
                sort.iter().zip(&c.keys).map(|((f, desc), v)| (sort_expr(f.column), *desc, v.clone())).collect();
            if !sorts_by_id(q) {
                keys.push(("id".into(), id_desc(q), Value::String(c.id.clone())));
            }
            let mut ors = Vec::new();
            for i in 0..keys.len() {
                let mut ands = Vec::new();
                for (k, _, v) in &keys[..i] {
                    ands.push(if v.is_null() { format!("{k} IS NULL") } else { format!("{k} = {}", push_key(a, v)) });
                }
                let (k, desc, v) = &keys[i];
                ands.push(match (desc, v.is_null()) {
                    (false, false) => format!("{k} > {}", push_key(a, v)),
                    (false, true) => format!("{k} IS NOT NULL"),
                    (true, false) => format!("({k} < {} OR {k} IS NULL)", push_key(a, v)),
                    (true, true) => "1 = 0".into(),
                });
                ors.push(format!("({})", ands.join(" AND ")));
            }
            vec![format!("({})", ors.join(" OR "))]
        }
    }
}

impl Db<'_> {
    /// The page of users a list query asks for (from `skip`, or after its cursor), how many
    /// match in all, and the cursor of the next page.
    pub async fn list_users_page(&mut self, q: &ListQuery, total: Option<i64>) -> Result<UserPage> {
        let total = match total {
            Some(n) => n,
            None => self.count_users(q).await?,
        };
        // A prefix search on SQLite: its rows come from the search's index ranges, then sorted
        // (an index in sort order would be read until enough rows match, most of it).
        let order = if self.b == Backend::Sqlite && !q.search.is_empty() && !q.search_substring {
            order_by_with(q, "+")
        } else {
            order_by(q)
        };
        let keys = key_columns(q);
        let mut rows: Vec<AnyRow> = Vec::new();
        match &q.after {
            None => {
                let mut a = Args::default();
                let sql = match self.two_runs_sql(q, &keys, &mut a) {
                    Some(sql) => sql,
                    None => {
                        let where_sql = self.user_where_clause(q, &mut a);
                        let lim = a.push(q.limit);
                        let off = a.push(q.skip);
                        if self.b == Backend::Postgres && q.skip > 0 {
                            // A page after others on PostgreSQL: the ids first, from the sort
                            // index alone (an index-only scan where it covers the filter and
                            // sort, see migration 0020), then only this page's rows. Reading
                            // every skipped row from the table made the planner sort the whole
                            // filter instead (200+ ms for a deep page of a 50,000-user
                            // department).
                            format!(
                                "SELECT u.*{keys} FROM users u JOIN (SELECT id FROM users{where_sql} \
                                 ORDER BY {order} LIMIT {lim} OFFSET {off}) page USING (id) ORDER BY {order}"
                            )
                        } else {
                            format!("SELECT *{keys} FROM users{where_sql} ORDER BY {order} LIMIT {lim} OFFSET {off}")
                        }
                    }
                };
                rows = sqlx::query_with(&sql, a.build()).fetch_all(&mut *self.c).await?;
            }
            Some(c) => {
                let sqlite = self.b == Backend::Sqlite;
                let phases = match two_runs_after(q, c, &mut Args::default(), sqlite) {
                    Some(p) => p.len(),
                    None => after_conditions(q, c, &mut Args::default()).len(),
                };
                for phase in 0..phases {
                    let want = q.limit - rows.len() as i64;
                    if want <= 0 {
                        break;
                    }
                    let mut a = Args::default();
                    let where_sql = self.user_where_clause(q, &mut a);
                    // A list of two runs reads each in its own order (see `two_runs_sql`).
                    let run = match two_runs_after(q, c, &mut a, sqlite) {
                        Some(mut p) => p.swap_remove(phase),
                        None => Run {
                            cond: after_conditions(q, c, &mut a).swap_remove(phase),
                            order: order.clone(),
                            only_if: None,
                        },
                    };
                    let glue = if where_sql.is_empty() { " WHERE" } else { " AND" };
                    let lim = a.push(want);
                    let sql = format!("SELECT *{keys} FROM users{where_sql}{glue} {} {}", run.cond, run.tail(&lim));
                    rows.extend(sqlx::query_with(&sql, a.build()).fetch_all(&mut *self.c).await?);
                }
            }
        }
        let next = match rows.last() {
            Some(r) if rows.len() as i64 == q.limit => Some(cursor_of(q, r)?),
            _ => None,
        };
        let users = rows.iter().map(rows::user_from_row).collect::<Result<Vec<_>>>()?;
        Ok(UserPage { total, users, next })
    }

    /// A page of a list of [`two_runs`], as the first run then the second, each read in order
    /// through its own index and stopping once it has `skip + limit` rows.
    ///
    /// - A yes/no sort: no index has a flag and the id, so `ORDER BY flag, id` read and sorted
    ///   every user: 0.15–3.7 s a page at 1,000,000 users on SQLite (issue 19). When one side is
    ///   empty and has no index of its own, its read walks every user, about what the sort cost.
    /// - A sort by a mostly empty column ([`NULLABLE_SORTED`]): the users with a value come from
    ///   the column's partial index, those without from the id index (0.2–2.1 s a page before).
    ///   When nearly every user has a value, the NULLs' read walks most of the id index (when
    ///   every user has one, it is skipped).
    ///
    /// Not for a search, which reads its own ranges.
    fn two_runs_sql(&self, q: &ListQuery, keys: &str, a: &mut Args) -> Option<String> {
        let runs = two_runs(q, self.b == Backend::Sqlite)?;
        let [first, second] = runs.map(|run| {
            let w = self.user_where_clause(q, a);
            let n = a.push(q.skip.saturating_add(q.limit));
            let glue = if w.is_empty() { " WHERE" } else { " AND" };
            format!("SELECT * FROM (SELECT * FROM users{w}{glue} {} {})", run.cond, run.tail(&n))
        });
        let lim = a.push(q.limit);
        let off = a.push(q.skip);
        Some(format!(
            "SELECT *{keys} FROM ({first} f UNION ALL {second} s) u ORDER BY {} LIMIT {lim} OFFSET {off}",
            order_by(q)
        ))
    }

    /// How many users a list query matches.
    pub async fn count_users(&mut self, q: &ListQuery) -> Result<i64> {
        let mut a = Args::default();
        let where_sql = self.user_where_clause(q, &mut a);
        let sql = format!("SELECT COUNT(*) FROM users{where_sql}");
        rows::get_i64(&sqlx::query_with(&sql, a.build()).fetch_one(&mut *self.c).await?, 0)
    }

    /// How many users a list query matches, counting no further than `cap`: `None` when more.
    pub async fn count_users_up_to(&mut self, q: &ListQuery, cap: i64) -> Result<Option<i64>> {
        let mut a = Args::default();
        let where_sql = self.user_where_clause(q, &mut a);
        let lim = a.push(cap + 1);
        let sql = format!("SELECT COUNT(*) FROM (SELECT 1 FROM users{where_sql} LIMIT {lim}) capped");
        let n = rows::get_i64(&sqlx::query_with(&sql, a.build()).fetch_one(&mut *self.c).await?, 0)?;
        Ok((n <= cap).then_some(n))
    }
}
