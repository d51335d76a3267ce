//! `totalCount` of user lists at a million users (issue 19). A filter matching up to
//! [`EXACT_COUNT_UP_TO`] users (`Config::exact_count_up_to`, JumpCloud-style) is counted
//! exactly on every request: counting stops one past that size, so it never costs more than
//! reading that many index entries. A larger match (a department of 50,000, every ACTIVATED
//! user, the whole directory) is counted exactly once and then served from memory, marked
//! `estimated`, while a background task counts it again when the figure is older than
//! [`COUNT_MAX_AGE`]: no request waits for a count of a large list after the first. (Measured
//! at 1,000,000 users on 2 busy cores, an exact count of a 50,000-user department through its
//! index took about as long as the whole rest of the request: see BENCHMARKS.md, issue 19.)

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cairn_domain::query::ListQuery;

use crate::{Directory, Result};

/// Lists matching at most this many users carry an exact, fresh `totalCount`.
pub const EXACT_COUNT_UP_TO: i64 = 10_000;
/// How old a large count may be before it is counted again (in the background).
pub const COUNT_MAX_AGE: Duration = Duration::from_secs(60);
/// Distinct large filters remembered at most.
const CACHED_COUNTS: usize = 256;

#[derive(Default)]
pub(crate) struct CountCache {
    counts: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    n: i64,
    at: Instant,
    refreshing: bool,
}

/// What a count depends on: the filter and the search, not the sort or the page.
fn key(q: &ListQuery) -> String {
    let fields: Vec<&str> = q.search_fields.iter().map(|f| f.name).collect();
    format!("{:?}|{:?}|{:?}|{}|{fields:?}", q.all, q.any, q.search, q.search_substring)
}

/// The count of a list and whether it is from memory rather than counted now. A list once
/// found large is served from memory without counting (not even up to the limit) until a
/// background count finds it small again.
pub(crate) async fn total(dir: &Directory, q: &ListQuery) -> Result<(i64, bool)> {
    let k = key(q);
    let cached = {
        let mut m = dir.inner.counts.counts.lock().expect("count cache");
        match m.get_mut(&k) {
            Some(e) => {
                let stale = e.at.elapsed() >= COUNT_MAX_AGE && !e.refreshing;
                e.refreshing |= stale;
                Some((e.n, stale))
            }
            None => None,
        }
    };
    if let Some((n, stale)) = cached {
        if stale {
            refresh(dir.clone(), q.clone(), k);
        }
        return Ok((n, true));
    }
    let store = dir.store();
    let cap = dir.config().exact_count_up_to;
    if let Some(n) = store.read().await?.db().count_users_up_to(q, cap).await? {
        return Ok((n, false));
    }
    let n = store.read().await?.db().count_users(q).await?;
    let mut m = dir.inner.counts.counts.lock().expect("count cache");
    if m.len() >= CACHED_COUNTS {
        m.clear();
    }
    m.insert(k, Entry { n, at: Instant::now(), refreshing: false });
    Ok((n, false))
}

/// Counts a large list again in the background; one that has become small leaves the cache.
fn refresh(dir: Directory, q: ListQuery, k: String) {
    tokio::spawn(async move {
        let counted = async { Ok::<_, crate::Error>(dir.store().read().await?.db().count_users(&q).await?) }.await;
        let mut m = dir.inner.counts.counts.lock().expect("count cache");
        match counted {
            Ok(n) if n <= dir.config().exact_count_up_to => {
                m.remove(&k);
            }
            Ok(n) => {
                m.insert(k, Entry { n, at: Instant::now(), refreshing: false });
            }
            Err(e) => {
                tracing::warn!("counting users again failed: {e}");
                if let Some(e) = m.get_mut(&k) {
                    e.refreshing = false;
                }
            }
        }
    });
}
