//! Queries for SCIM (§9): tokens, the SCIM-only columns (`externalId`, a `userName` that is not
//! a Cairn username), and SCIM filters turned into SQL over known, indexed columns. Every
//! compared value is a bound argument; only column names from the tables below reach the SQL
//! text.

use cairn_domain::scim::{AttrPath, CompValue, CompareOp, Filter, ScimParseError, ENTERPRISE_SCHEMA};
use cairn_domain::{ScimGroupRow, ScimToken, ScimUserRow};
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;

use crate::rows::{get_i64, get_opt_text, get_text, group_from_row, parse_time, user_from_row};
use crate::{map_unique, time_text, Args, Db, Result};

/// A translated filter and sort: a WHERE clause with its bound values, and an ORDER BY.
#[derive(Clone)]
pub struct ScimWhere {
    sql: String,
    order: String,
    args: Args,
}

#[derive(Clone, Copy)]
enum Col {
    /// Text compared as stored (case-exact): `id`, `externalId`.
    Exact(&'static str),
    /// Text stored lowercase; the value is lowercased: `email`, group `name_key`.
    Lower(&'static str),
    /// Text compared case-insensitively (`caseExact: false`).
    Fold(&'static str),
    /// The SCIM `userName`.
    UserName,
    /// `active`: state is ACTIVATED.
    Active,
    /// An instant stored as sortable UTC text.
    Time(&'static str),
    /// A constant of the synthetic `emails` element (its `type` and `primary`).
    Const(Konst),
    /// `members.value` of a group.
    Member,
}

#[derive(Clone, Copy)]
enum Konst {
    Work,
    True,
}

fn bad(detail: String) -> ScimParseError {
    ScimParseError { scim_type: "invalidFilter", detail }
}

fn is_core_or(p: &AttrPath, ext: bool) -> bool {
    match &p.uri {
        None => true,
        Some(u) if ext => u.eq_ignore_ascii_case(ENTERPRISE_SCHEMA),
        Some(u) => u.to_ascii_lowercase().starts_with("urn:ietf:params:scim:schemas:core:2.0:"),
    }
}

fn user_col(p: &AttrPath, in_emails: bool) -> Option<Col> {
    if in_emails {
        return match p.dotted().to_ascii_lowercase().as_str() {
            "value" => Some(Col::Lower("email")),
            "type" => Some(Col::Const(Konst::Work)),
            "primary" => Some(Col::Const(Konst::True)),
            _ => None,
        };
    }
    if p.uri.as_deref().is_some_and(|u| u.eq_ignore_ascii_case(ENTERPRISE_SCHEMA)) {
        return match p.dotted().to_ascii_lowercase().as_str() {
            "employeenumber" => Some(Col::Exact("employeeidentifier")),
            "costcenter" => Some(Col::Fold("costcenter")),
            "organization" => Some(Col::Fold("company")),
            "department" => Some(Col::Fold("department")),
            "manager" | "manager.value" => Some(Col::Exact("manager")),
            _ => None,
        };
    }
    if !is_core_or(p, false) {
        return None;
    }
    Some(match p.dotted().to_ascii_lowercase().as_str() {
        "id" => Col::Exact("id"),
        "username" => Col::UserName,
        "externalid" => Col::Exact("scim_external_id"),
        "displayname" => Col::Fold("displayname"),
        "name.givenname" => Col::Fold("firstname"),
        "name.familyname" => Col::Fold("lastname"),
        "name.middlename" => Col::Fold("middlename"),
        "title" => Col::Fold("jobtitle"),
        "usertype" => Col::Fold("employeetype"),
        "emails" | "emails.value" => Col::Lower("email"),
        "emails.type" => Col::Const(Konst::Work),
        "emails.primary" => Col::Const(Konst::True),
        "active" => Col::Active,
        "meta.created" => Col::Time("created"),
        "meta.lastmodified" => Col::Time("updated"),
        _ => return None,
    })
}

fn group_col(p: &AttrPath, in_members: bool) -> Option<Col> {
    if !is_core_or(p, false) {
        return None;
    }
    let name = p.dotted().to_ascii_lowercase();
    if in_members {
        return (name == "value").then_some(Col::Member);
    }
    Some(match name.as_str() {
        "id" => Col::Exact("usergroups.id"),
        "displayname" => Col::Lower("name_key"),
        "externalid" => Col::Exact("scim_external_id"),
        "members" | "members.value" => Col::Member,
        "meta.created" => Col::Time("created"),
        "meta.lastmodified" => Col::Time("updated"),
        _ => return None,
    })
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

struct Tr<'a> {
    a: &'a mut Args,
    group: bool,
}

impl Tr<'_> {
    fn col(&self, p: &AttrPath, ctx: Option<&str>) -> std::result::Result<Col, ScimParseError> {
        let found = if self.group { group_col(p, ctx == Some("members")) } else { user_col(p, ctx == Some("emails")) };
        found.ok_or_else(|| bad(format!("filtering on '{p}' is not supported")))
    }

    fn expr(&mut self, f: &Filter, ctx: Option<&str>) -> std::result::Result<String, ScimParseError> {
        Ok(match f {
            Filter::And(l, r) => format!("({} AND {})", self.expr(l, ctx)?, self.expr(r, ctx)?),
            Filter::Or(l, r) => format!("({} OR {})", self.expr(l, ctx)?, self.expr(r, ctx)?),
            // NULL-safe: a comparison with a missing value is false, so its negation is true.
            Filter::Not(x) => format!("(NOT COALESCE({}, FALSE))", self.expr(x, ctx)?),
            Filter::ValuePath(p, inner) => {
                if ctx.is_some() {
                    return Err(bad("a value filter cannot be nested in another".into()));
                }
                let name = p.attr.to_ascii_lowercase();
                match (self.group, name.as_str()) {
                    (false, "emails") => self.expr(inner, Some("emails"))?,
                    (true, "members") => self.expr(inner, Some("members"))?,
                    _ => return Err(bad(format!("'{p}' has no value filter support"))),
                }
            }
            Filter::Present(p) => match self.col(p, ctx)? {
                Col::Exact(c) | Col::Lower(c) | Col::Fold(c) => format!("({c} IS NOT NULL AND {c} <> '')"),
                Col::UserName | Col::Active | Col::Time(_) | Col::Const(_) => "1 = 1".into(),
                Col::Member => "EXISTS (SELECT 1 FROM group_members m WHERE m.group_id = usergroups.id)".into(),
            },
            Filter::Compare(p, op, v) => self.compare(p, *op, v, ctx)?,
        })
    }

    fn compare(
        &mut self,
        p: &AttrPath,
        op: CompareOp,
        v: &CompValue,
        ctx: Option<&str>,
    ) -> std::result::Result<String, ScimParseError> {
        let col = self.col(p, ctx)?;
        if *v == CompValue::Null {
            let present = self.expr(&Filter::Present(p.clone()), ctx)?;
            return match op {
                CompareOp::Eq => Ok(format!("(NOT {present})")),
                CompareOp::Ne => Ok(present),
                _ => Err(bad(format!("'{p}' can be compared with null only by eq or ne"))),
            };
        }
        match col {
            Col::Active => {
                let CompValue::Bool(b) = v else {
                    return Err(bad(format!("'{p}' is a boolean: compare it with true or false")));
                };
                let want = match op {
                    CompareOp::Eq => *b,
                    CompareOp::Ne => !*b,
                    _ => return Err(bad(format!("'{p}' is a boolean: use eq or ne"))),
                };
                Ok(if want { "state = 'ACTIVATED'".into() } else { "state <> 'ACTIVATED'".into() })
            }
            Col::Const(k) => {
                let m = match (k, v) {
                    (Konst::Work, CompValue::Str(s)) => {
                        let s = s.to_lowercase();
                        match op {
                            CompareOp::Eq => s == "work",
                            CompareOp::Ne => s != "work",
                            CompareOp::Co => "work".contains(&s),
                            CompareOp::Sw => "work".starts_with(&s),
                            CompareOp::Ew => "work".ends_with(&s),
                            CompareOp::Gt => "work" > s.as_str(),
                            CompareOp::Ge => "work" >= s.as_str(),
                            CompareOp::Lt => "work" < s.as_str(),
                            CompareOp::Le => "work" <= s.as_str(),
                        }
                    }
                    (Konst::True, CompValue::Bool(b)) => match op {
                        CompareOp::Eq => *b,
                        CompareOp::Ne => !*b,
                        _ => return Err(bad(format!("'{p}' is a boolean: use eq or ne"))),
                    },
                    _ => return Err(bad(format!("'{p}' cannot be compared with that value"))),
                };
                Ok(if m { "1 = 1".into() } else { "1 = 0".into() })
            }
            Col::Time(c) => {
                let CompValue::Str(s) = v else {
                    return Err(bad(format!("'{p}' is a date-time: compare it with a quoted RFC 3339 instant")));
                };
                let t = DateTime::parse_from_rfc3339(s)
                    .map_err(|_| bad(format!("'{s}' is not an RFC 3339 date-time")))?
                    .with_timezone(&Utc);
                let ph = self.a.push(time_text(t));
                let sym = match op {
                    CompareOp::Eq => "=",
                    CompareOp::Ne => "<>",
                    CompareOp::Gt => ">",
                    CompareOp::Ge => ">=",
                    CompareOp::Lt => "<",
                    CompareOp::Le => "<=",
                    _ => return Err(bad(format!("'{p}' is a date-time: use eq ne gt ge lt le"))),
                };
                Ok(format!("{c} {sym} {ph}"))
            }
            Col::Member => {
                let CompValue::Str(s) = v else {
                    return Err(bad(format!("'{p}' is a string: compare it with a quoted value")));
                };
                let ph = self.a.push(s.clone());
                match op {
                    CompareOp::Eq => Ok(format!(
                        "EXISTS (SELECT 1 FROM group_members m WHERE m.group_id = usergroups.id AND m.user_id = {ph})"
                    )),
                    CompareOp::Ne => Ok(format!(
                        "NOT EXISTS (SELECT 1 FROM group_members m WHERE m.group_id = usergroups.id AND m.user_id = {ph})"
                    )),
                    _ => Err(bad(format!("'{p}' can be compared only by eq or ne"))),
                }
            }
            Col::Exact(_) | Col::Lower(_) | Col::Fold(_) | Col::UserName => {
                let s = match v {
                    CompValue::Str(s) => s.clone(),
                    _ => return Err(bad(format!("'{p}' is a string: compare it with a quoted value"))),
                };
                let (expr, val) = match col {
                    Col::Exact(c) => (c.to_string(), s),
                    Col::Lower(c) => (c.to_string(), s.to_lowercase()),
                    Col::Fold(c) => (format!("LOWER({c})"), s.to_lowercase()),
                    _ => ("COALESCE(scim_username_key, lower(username))".to_string(), s.to_lowercase()),
                };
                if let (Col::UserName, CompareOp::Eq) = (col, op) {
                    // Both halves use an index.
                    let ph = self.a.push(val);
                    return Ok(format!(
                        "(scim_username_key = {ph} OR (lower(username) = {ph} AND scim_username_key IS NULL))"
                    ));
                }
                let like = |a: &mut Args, pat: String| format!("{expr} LIKE {} ESCAPE '\\'", a.push(pat));
                Ok(match op {
                    CompareOp::Eq => format!("{expr} = {}", self.a.push(val)),
                    CompareOp::Ne => format!("({expr} <> {} OR {expr} IS NULL)", self.a.push(val)),
                    CompareOp::Co => like(self.a, format!("%{}%", escape_like(&val))),
                    CompareOp::Sw => like(self.a, format!("{}%", escape_like(&val))),
                    CompareOp::Ew => like(self.a, format!("%{}", escape_like(&val))),
                    CompareOp::Gt => format!("{expr} > {}", self.a.push(val)),
                    CompareOp::Ge => format!("{expr} >= {}", self.a.push(val)),
                    CompareOp::Lt => format!("{expr} < {}", self.a.push(val)),
                    CompareOp::Le => format!("{expr} <= {}", self.a.push(val)),
                })
            }
        }
    }
}

fn order_of(group: bool, sort_by: Option<&AttrPath>, descending: bool) -> std::result::Result<String, ScimParseError> {
    let dir = if descending { "DESC" } else { "ASC" };
    let Some(p) = sort_by else {
        return Ok(if group { "usergroups.id ASC".into() } else { "id ASC".into() });
    };
    let col = if group { group_col(p, false) } else { user_col(p, false) };
    let expr = match col {
        Some(Col::Exact(c) | Col::Lower(c) | Col::Time(c)) => c.to_string(),
        Some(Col::Fold(c)) => format!("LOWER({c})"),
        Some(Col::UserName) => "COALESCE(scim_username_key, lower(username))".into(),
        Some(Col::Active) => "state".into(),
        _ => {
            return Err(ScimParseError {
                scim_type: "invalidValue",
                detail: format!("sorting by '{p}' is not supported"),
            })
        }
    };
    let id = if group { "usergroups.id" } else { "id" };
    Ok(format!("{expr} {dir}, {id} ASC"))
}

/// Translates a users filter and sort; an unsupported attribute or a value of the wrong type
/// is an `invalidFilter` (or `invalidValue` for the sort).
pub fn scim_user_where(
    filter: Option<&Filter>,
    sort_by: Option<&AttrPath>,
    descending: bool,
) -> std::result::Result<ScimWhere, ScimParseError> {
    scim_where(false, filter, sort_by, descending)
}

/// As `scim_user_where`, for groups.
pub fn scim_group_where(
    filter: Option<&Filter>,
    sort_by: Option<&AttrPath>,
    descending: bool,
) -> std::result::Result<ScimWhere, ScimParseError> {
    scim_where(true, filter, sort_by, descending)
}

fn scim_where(
    group: bool,
    filter: Option<&Filter>,
    sort_by: Option<&AttrPath>,
    descending: bool,
) -> std::result::Result<ScimWhere, ScimParseError> {
    let mut args = Args::default();
    let sql = match filter {
        Some(f) => format!(" WHERE {}", Tr { a: &mut args, group }.expr(f, None)?),
        None => String::new(),
    };
    Ok(ScimWhere { sql, order: order_of(group, sort_by, descending)?, args })
}

fn user_row(r: &AnyRow) -> Result<ScimUserRow> {
    Ok(ScimUserRow {
        user: user_from_row(r)?,
        external_id: get_opt_text(r, "scim_external_id")?,
        user_name: get_opt_text(r, "scim_username")?,
    })
}

fn group_row(r: &AnyRow) -> Result<ScimGroupRow> {
    Ok(ScimGroupRow { group: group_from_row(r)?, external_id: get_opt_text(r, "scim_external_id")? })
}

fn token_row(r: &AnyRow) -> Result<ScimToken> {
    Ok(ScimToken {
        id: get_text(r, "id")?,
        name: get_text(r, "name")?,
        token_hash: get_text(r, "token_hash")?,
        prefix: get_text(r, "prefix")?,
        created: parse_time(&get_text(r, "created")?)?,
        created_by: get_opt_text(r, "created_by")?,
        last_used: get_opt_text(r, "last_used")?.map(|s| parse_time(&s)).transpose()?,
    })
}

impl Db<'_> {
    // ---- tokens -------------------------------------------------------------------------

    pub async fn insert_scim_token(&mut self, t: &ScimToken) -> Result<()> {
        sqlx::query(
            "INSERT INTO scim_tokens (id, name, token_hash, prefix, created, created_by, last_used) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(t.id.clone())
        .bind(t.name.clone())
        .bind(t.token_hash.clone())
        .bind(t.prefix.clone())
        .bind(time_text(t.created))
        .bind(t.created_by.clone())
        .bind(t.last_used.map(time_text))
        .execute(&mut *self.c)
        .await
        .map_err(map_unique)?;
        Ok(())
    }

    pub async fn list_scim_tokens(&mut self) -> Result<Vec<ScimToken>> {
        let rows = sqlx::query("SELECT * FROM scim_tokens ORDER BY id").fetch_all(&mut *self.c).await?;
        rows.iter().map(token_row).collect()
    }

    pub async fn get_scim_token(&mut self, id: &str) -> Result<Option<ScimToken>> {
        let row = sqlx::query("SELECT * FROM scim_tokens WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *self.c)
            .await?;
        row.map(|r| token_row(&r)).transpose()
    }

    pub async fn scim_token_by_hash(&mut self, hash: &str) -> Result<Option<ScimToken>> {
        let row = sqlx::query("SELECT * FROM scim_tokens WHERE token_hash = $1")
            .bind(hash.to_string())
            .fetch_optional(&mut *self.c)
            .await?;
        row.map(|r| token_row(&r)).transpose()
    }

    pub async fn delete_scim_token(&mut self, id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM scim_tokens WHERE id = $1").bind(id.to_string()).execute(&mut *self.c).await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn touch_scim_token(&mut self, id: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE scim_tokens SET last_used = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(time_text(now))
            .execute(&mut *self.c)
            .await?;
        Ok(())
    }

    // ---- users --------------------------------------------------------------------------

    pub async fn scim_user(&mut self, id: &str) -> Result<Option<ScimUserRow>> {
        let row =
            sqlx::query("SELECT * FROM users WHERE id = $1").bind(id.to_string()).fetch_optional(&mut *self.c).await?;
        row.map(|r| user_row(&r)).transpose()
    }

    /// The user whose SCIM `userName` is `name` (case-insensitive), if any.
    pub async fn scim_user_by_name(&mut self, name: &str) -> Result<Option<ScimUserRow>> {
        let key = name.to_lowercase();
        let row = sqlx::query(
            "SELECT * FROM users WHERE scim_username_key = $1 OR (lower(username) = $1 AND scim_username_key IS NULL)",
        )
        .bind(key)
        .fetch_optional(&mut *self.c)
        .await?;
        row.map(|r| user_row(&r)).transpose()
    }

    /// Sets the SCIM-only columns of a user; `user_name` is the provider's `userName` when it
    /// differs from the Cairn username (`None` clears it).
    pub async fn set_scim_user_columns(
        &mut self,
        id: &str,
        external_id: Option<&str>,
        user_name: Option<&str>,
    ) -> Result<()> {
        sqlx::query("UPDATE users SET scim_external_id = $2, scim_username = $3, scim_username_key = $4 WHERE id = $1")
            .bind(id.to_string())
            .bind(external_id.map(str::to_string))
            .bind(user_name.map(str::to_string))
            .bind(user_name.map(str::to_lowercase))
            .execute(&mut *self.c)
            .await
            .map_err(|e| match map_unique(e) {
                crate::StoreError::Conflict(_) => crate::StoreError::Conflict("userName".into()),
                other => other,
            })?;
        Ok(())
    }

    /// One page of users (`start` is 0-based) and how many match in all.
    pub async fn scim_list_users(&mut self, w: &ScimWhere, start: i64, count: i64) -> Result<(i64, Vec<ScimUserRow>)> {
        let mut a = w.args.clone();
        let total = get_i64(
            &sqlx::query_with(&format!("SELECT COUNT(*) FROM users{}", w.sql), a.build())
                .fetch_one(&mut *self.c)
                .await?,
            0,
        )?;
        if count == 0 {
            return Ok((total, vec![]));
        }
        let lim = a.push(count);
        let off = a.push(start);
        let sql = format!("SELECT * FROM users{} ORDER BY {} LIMIT {lim} OFFSET {off}", w.sql, w.order);
        let rows = sqlx::query_with(&sql, a.build()).fetch_all(&mut *self.c).await?;
        Ok((total, rows.iter().map(user_row).collect::<Result<_>>()?))
    }

    // ---- groups -------------------------------------------------------------------------

    pub async fn scim_group(&mut self, id: &str) -> Result<Option<ScimGroupRow>> {
        let row = sqlx::query("SELECT * FROM usergroups WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *self.c)
            .await?;
        row.map(|r| group_row(&r)).transpose()
    }

    pub async fn set_scim_group_external_id(&mut self, id: &str, external_id: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE usergroups SET scim_external_id = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(external_id.map(str::to_string))
            .execute(&mut *self.c)
            .await?;
        Ok(())
    }

    /// Marks a group modified (membership changes move `meta.lastModified`).
    pub async fn touch_group(&mut self, id: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE usergroups SET updated = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(time_text(now))
            .execute(&mut *self.c)
            .await?;
        Ok(())
    }

    pub async fn scim_list_groups(
        &mut self,
        w: &ScimWhere,
        start: i64,
        count: i64,
    ) -> Result<(i64, Vec<ScimGroupRow>)> {
        let mut a = w.args.clone();
        let total = get_i64(
            &sqlx::query_with(&format!("SELECT COUNT(*) FROM usergroups{}", w.sql), a.build())
                .fetch_one(&mut *self.c)
                .await?,
            0,
        )?;
        if count == 0 {
            return Ok((total, vec![]));
        }
        let lim = a.push(count);
        let off = a.push(start);
        let sql = format!("SELECT * FROM usergroups{} ORDER BY {} LIMIT {lim} OFFSET {off}", w.sql, w.order);
        let rows = sqlx::query_with(&sql, a.build()).fetch_all(&mut *self.c).await?;
        Ok((total, rows.iter().map(group_row).collect::<Result<_>>()?))
    }

    /// Every member of a group as `(user id, display name)`, in the order they were added.
    pub async fn scim_group_members(&mut self, group_id: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT u.id, COALESCE(u.displayname, u.scim_username, u.username) AS display FROM group_members m \
             JOIN users u ON u.id = m.user_id WHERE m.group_id = $1 ORDER BY m.added, m.user_id",
        )
        .bind(group_id.to_string())
        .fetch_all(&mut *self.c)
        .await?;
        rows.iter().map(|r| Ok((get_text(r, "id")?, get_text(r, "display")?))).collect()
    }

    /// The groups of a user as `(group id, name)`.
    pub async fn scim_user_groups(&mut self, user_id: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT g.id, g.name FROM group_members m JOIN usergroups g ON g.id = m.group_id WHERE m.user_id = $1 ORDER BY g.name_key",
        )
        .bind(user_id.to_string())
        .fetch_all(&mut *self.c)
        .await?;
        rows.iter().map(|r| Ok((get_text(r, "id")?, get_text(r, "name")?))).collect()
    }

    /// Which of `ids` are existing users.
    pub async fn existing_user_ids(&mut self, ids: &[String]) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let mut a = Args::default();
        let ps: Vec<String> = ids.iter().map(|id| a.push(id.clone())).collect();
        let sql = format!("SELECT id FROM users WHERE id IN ({})", ps.join(", "));
        let rows = sqlx::query_with(&sql, a.build()).fetch_all(&mut *self.c).await?;
        rows.iter().map(|r| get_text(r, "id")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_domain::scim::parse_filter;

    fn sql(f: &str) -> std::result::Result<String, ScimParseError> {
        scim_user_where(Some(&parse_filter(f).unwrap()), None, false).map(|w| w.sql)
    }

    #[test]
    fn values_are_bound_never_spliced() {
        let s = sql(r#"userName eq "x' OR 1=1 --""#).unwrap();
        assert!(!s.contains("OR 1=1"), "{s}");
        assert!(s.contains("$1"));
        let s = sql(r#"displayName co "50%_off""#).unwrap();
        assert!(!s.contains("50"), "{s}");
    }

    #[test]
    fn unknown_attributes_and_bad_types_are_invalid_filters() {
        assert_eq!(sql(r#"nickName eq "x""#).unwrap_err().scim_type, "invalidFilter");
        assert_eq!(sql(r#"active eq "yes""#).unwrap_err().scim_type, "invalidFilter");
        assert_eq!(sql("userName eq 3").unwrap_err().scim_type, "invalidFilter");
        assert_eq!(sql(r#"meta.created gt "yesterday""#).unwrap_err().scim_type, "invalidFilter");
        assert!(sql(r#"emails[type eq "work" and value co "@example.com"]"#).is_ok());
        assert!(sql(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "7""#).is_ok());
    }
}
