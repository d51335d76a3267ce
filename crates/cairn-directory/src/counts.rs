//! `totalCount` of user lists at a million users (issue 19). A filter matching up to
//! [`EXACT_COUNT_UP_TO`] users (`Config::exact_count_up_to`) is counted on every request:
//! counting stops one past that size, so it never costs more than reading that many index
//! entries. A larger match (a department of 50,000, every ACTIVATED user, the whole directory)
//! is counted in full once and then served from memory for as long as no user changes (see
//! [`generation`]): the count stays exact, and a read-mostly directory does not read 50,000+
//! index entries per page. (Measured at 1,000,000 users on 2 busy cores, an exact count of a
//! 50,000-user department took about as long as the whole rest of the request: BENCHMARKS.md,
//! issue 19.)

use std::collections::HashMap;
use std::sync::Mutex;

use cairn_domain::query::ListQuery;
use cairn_store::{Backend, ChangeCursor};

use crate::{Directory, Result};

/// Lists matching at most this many users carry an exact, fresh `totalCount`.
pub const EXACT_COUNT_UP_TO: i64 = 10_000;
/// Distinct large filters remembered at most.
const CACHED_COUNTS: usize = 256;

#[derive(Default)]
pub(crate) struct CountCache {
    counts: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    n: i64,
    /// The users' change generation when counted (see [`generation`]).
    generation: u64,
}

/// What a count depends on: the filter, the search and the group, not the sort or the page.
fn key(q: &ListQuery, group: Option<&str>) -> String {
    let fields: Vec<&str> = q.search_fields.iter().map(|f| f.name).collect();
    format!("{:?}|{:?}|{:?}|{}|{fields:?}|{group:?}", q.all, q.any, q.search, q.search_substring)
}

/// A number that moves whenever users may have changed: on SQLite the change log's sequence
/// (its triggers fire on every write to users, whichever process writes); on PostgreSQL this
/// process's commits plus the change notifications of every process (the change log's triggers
/// notify on commit).
async fn generation(dir: &Directory) -> Result<u64> {
    let store = dir.store();
    Ok(match store.backend() {
        Backend::Sqlite => match store.read().await?.db().change_cursor().await? {
            ChangeCursor::Seq(n) => n as u64,
            ChangeCursor::Xid { horizon, .. } => horizon as u64,
        },
        Backend::Postgres => {
            dir.watch_changes();
            store.local_commits() + store.external_changes()
        }
    })
}

/// The count of a list. A list once found large is counted again only when users may have
/// changed since (see [`generation`]); otherwise its count comes from memory, still exact.
pub(crate) async fn total(dir: &Directory, q: &ListQuery) -> Result<i64> {
    total_in(dir, q, None).await
}

/// As [`total`], among the members of a group when one is given (a membership change moves
/// the generation too: the change log records it).
pub(crate) async fn total_in(dir: &Directory, q: &ListQuery, group: Option<&str>) -> Result<i64> {
    let k = key(q, group);
    let generation = generation(dir).await?;
    {
        let m = dir.inner.counts.counts.lock().expect("count cache");
        if let Some(e) = m.get(&k).filter(|e| e.generation == generation) {
            return Ok(e.n);
        }
    }
    let store = dir.store();
    let cap = dir.config().exact_count_up_to;
    let capped = match group {
        Some(g) => store.read().await?.db().count_users_in_group_up_to(q, g, cap).await?,
        None => store.read().await?.db().count_users_up_to(q, cap).await?,
    };
    if let Some(n) = capped {
        dir.inner.counts.counts.lock().expect("count cache").remove(&k);
        return Ok(n);
    }
    let n = match group {
        Some(g) => store.read().await?.db().count_users_in_group(q, g).await?,
        None => store.read().await?.db().count_users(q).await?,
    };
    let mut m = dir.inner.counts.counts.lock().expect("count cache");
    if m.len() >= CACHED_COUNTS {
        m.clear();
    }
    m.insert(k, Entry { n, generation });
    Ok(n)
}
