//! Test support shared by every crate's tests: fresh databases on both backends.
//!
//! PostgreSQL tests read `CAIRN_TEST_DATABASE_URL` (a server URL; each call creates a new,
//! uniquely named database on it). Without it they are skipped with a message, unless
//! `CAIRN_REQUIRE_ALL=1`, which turns the skip into a failure.

use sqlx::Connection;

/// True when skipped tests must fail instead (CI).
pub fn require_all() -> bool {
    std::env::var("CAIRN_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// Skips (prints why) or, under `CAIRN_REQUIRE_ALL=1`, panics.
pub fn skip(what: &str, why: &str) {
    if require_all() {
        panic!("{what} cannot run: {why} (CAIRN_REQUIRE_ALL=1 makes this a failure)");
    }
    eprintln!("SKIPPED {what}: {why}");
}

/// A `sqlite://` URL for a new database file in `dir`.
pub fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}/cairn.db", dir.display())
}

/// Creates a new empty PostgreSQL database and returns its URL, or `None` (after `skip`)
/// when `CAIRN_TEST_DATABASE_URL` is not set.
pub async fn fresh_postgres_url(what: &str) -> Option<String> {
    let Ok(base) = std::env::var("CAIRN_TEST_DATABASE_URL") else {
        skip(what, "CAIRN_TEST_DATABASE_URL is not set");
        return None;
    };
    let name = format!(
        "cairn_t_{}_{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
    );
    let mut c = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("CAIRN_TEST_DATABASE_URL {base} is unreachable: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    let _ = c.close().await;
    Some(with_database(&base, &name))
}

/// `base` with its database name replaced by `name`.
pub fn with_database(base: &str, name: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (base, None),
    };
    let scheme_end = head.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match head[scheme_end..].find('/') {
        Some(i) => &head[..scheme_end + i],
        None => head,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

/// A SQLite setting (`PRAGMA name`) of the connection `c` holds, for tests that check a
/// connection's settings; `None` on PostgreSQL.
pub async fn sqlite_pragma(c: &mut crate::Conn, name: &str) -> Option<i64> {
    if c.backend != crate::Backend::Sqlite {
        return None;
    }
    let row = sqlx::query(&format!("PRAGMA {name}")).fetch_one(&mut *c.c).await.expect("pragma");
    Some(crate::rows::get_i64(&row, 0).expect("pragma value"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_name_is_replaced() {
        assert_eq!(super::with_database("postgres://u@h:5432/test", "x"), "postgres://u@h:5432/x");
        assert_eq!(
            super::with_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(super::with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
