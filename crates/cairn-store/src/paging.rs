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

/// After a cursor in a list sorted by one yes/no field: the rest of the cursor's side after its
/// id, then the other side if it comes later; each phase is read in id order.
fn flag_after(q: &ListQuery, c: &Cursor, a: &mut Args) -> Option<(&'static str, Vec<String>)> {
    let (dir, [first, second]) = flag_sides(q)?;
    let v = c.keys.first()?.as_bool()?;
    let id = a.push(c.id.clone());
    let op = if dir == "DESC" { "<" } else { ">" };
    let mut phases = vec![];
    for (side, value) in [&first, &second] {
        if *value == v {
            phases.push(format!("{side} AND id {op} {id}"));
        } else if !phases.is_empty() {
            phases.push(side.clone());
        }
    }
    Some((dir, phases))
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
                let sql = match self.by_flag_sql(q, &keys, &mut a) {
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
                // A yes/no sort reads each side in id order (see `by_flag_sql`).
                let flag = flag_after(q, c, &mut Args::default());
                let order = match &flag {
                    Some((dir, _)) => format!("id {dir}"),
                    None => order,
                };
                let phases = flag.map_or_else(|| after_conditions(q, c, &mut Args::default()).len(), |f| f.1.len());
                for phase in 0..phases {
                    let want = q.limit - rows.len() as i64;
                    if want <= 0 {
                        break;
                    }
                    let mut a = Args::default();
                    let where_sql = self.user_where_clause(q, &mut a);
                    let cond = match flag_after(q, c, &mut a) {
                        Some((_, mut f)) => f.swap_remove(phase),
                        None => after_conditions(q, c, &mut a).swap_remove(phase),
                    };
                    let glue = if where_sql.is_empty() { " WHERE" } else { " AND" };
                    let lim = a.push(want);
                    let sql = format!("SELECT *{keys} FROM users{where_sql}{glue} {cond} ORDER BY {order} LIMIT {lim}");
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

    /// A page sorted by one yes/no field, as the users with the first value in id order, then
    /// those with the other: two reads of the id index (or of a partial one, such as the locked
    /// users'), each stopping once it has `skip + limit` rows. No index has a flag and the id,
    /// so `ORDER BY flag, id` read and sorted every user: 0.15–3.7 s a page at 1,000,000 users
    /// on SQLite (issue 19). When one side is empty and has no index of its own, its read walks
    /// every user, about what the sort cost. Not for a search, which reads its own ranges.
    fn by_flag_sql(&self, q: &ListQuery, keys: &str, a: &mut Args) -> Option<String> {
        let (dir, sides) = flag_sides(q)?;
        let [first, second] = sides.map(|(side, _)| {
            let w = self.user_where_clause(q, a);
            let n = a.push(q.skip.saturating_add(q.limit));
            let glue = if w.is_empty() { " WHERE" } else { " AND" };
            format!("SELECT * FROM (SELECT * FROM users{w}{glue} {side} ORDER BY id {dir} LIMIT {n})")
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
