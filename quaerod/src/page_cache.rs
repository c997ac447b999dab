//! Serialised logs pages, shared by every request for the same page while it is current.
//!
//! A trigger goes to every watching client at once, and each of them asks for the same page
//! (the dashboard: the last 100 events of each step it names). Without sharing, N watchers
//! cost N reads and N serialisations at the moment the queue is busiest; with it they cost
//! one, which is what keeps watching from slowing ingest.
//!
//! A page is stored with the store's [`version`](crate::store::Store::version) of its scope
//! as read *before* the page was read, and served only while that version is unchanged (or
//! to a request that saw an older one). The writer moves a scope's version after applying
//! a commit and before announcing it, so a request that follows a trigger never gets a page
//! older than the commit the trigger announced. Concurrent requests for a page that is not
//! there yet wait for the first one's read instead of repeating it. Errors are not stored.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::store::LogQuery;
use bytes::Bytes;
use tokio::sync::OnceCell;

/// Pages larger than this are served but not kept.
const MAX_PAGE_BYTES: usize = 1024 * 1024;
/// When the kept pages pass either bound, all are dropped (they refill on demand).
const MAX_BYTES: usize = 32 * 1024 * 1024;
const MAX_PAGES: usize = 4096;

/// What a page depends on besides the scope's events: the request exactly (the id as
/// spelled, which the page echoes, and the query).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageKey {
    pub id: String,
    pub query: LogQuery,
}

struct Slot {
    version: u64,
    page: Arc<OnceCell<Bytes>>,
    /// Bytes counted in `State::bytes` for this slot (0 until its read is accounted).
    counted: usize,
}

#[derive(Default)]
struct State {
    slots: HashMap<PageKey, Slot>,
    bytes: usize,
}

pub struct PageCache {
    /// `[server] share_log_pages`; when false every request reads.
    enabled: bool,
    state: Mutex<State>,
    /// Pages read from the store (not shared).
    reads: AtomicU64,
}

impl PageCache {
    pub fn new(enabled: bool) -> PageCache {
        PageCache { enabled, state: Default::default(), reads: AtomicU64::new(0) }
    }

    /// The page for `key` at scope version `version`: a kept one if it is at least that
    /// recent, else the one `read` makes (one `read` at a time per key and version).
    pub async fn get_or_read<E, F, Fut>(&self, key: PageKey, version: u64, read: F) -> Result<Bytes, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
    {
        if !self.enabled {
            self.reads.fetch_add(1, Ordering::Relaxed);
            crate::metrics::METRICS.log_pages.with_label_values(&["read"]).inc();
            return read().await;
        }
        let page = {
            let mut st = self.state.lock().expect("page cache");
            match st.slots.get(&key) {
                Some(slot) if slot.version >= version => slot.page.clone(),
                _ => {
                    let page = Arc::new(OnceCell::new());
                    if let Some(old) = st.slots.insert(key.clone(), Slot { version, page: page.clone(), counted: 0 }) {
                        st.bytes -= old.counted;
                    }
                    page
                }
            }
        };
        let mut filled = false;
        let bytes = page
            .get_or_try_init(|| {
                filled = true;
                read()
            })
            .await?
            .clone();
        if filled {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.account(&key, &page, bytes.len());
        }
        crate::metrics::METRICS.log_pages.with_label_values(&[if filled { "read" } else { "shared" }]).inc();
        Ok(bytes)
    }

    /// Counts a page just read against the bounds; drops it if too big, or everything when
    /// over a bound.
    fn account(&self, key: &PageKey, page: &Arc<OnceCell<Bytes>>, len: usize) {
        let mut st = self.state.lock().expect("page cache");
        let Some(slot) = st.slots.get_mut(key).filter(|s| Arc::ptr_eq(&s.page, page)) else {
            return; // replaced meanwhile by a newer version
        };
        if len > MAX_PAGE_BYTES {
            st.slots.remove(key);
            return;
        }
        slot.counted = len;
        st.bytes += len;
        if st.bytes > MAX_BYTES || st.slots.len() > MAX_PAGES {
            st.slots.clear();
            st.bytes = 0;
        }
    }

    /// Pages read from the store so far (the others were shared).
    #[cfg(test)]
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    fn kept(&self) -> (usize, usize) {
        let st = self.state.lock().expect("page cache");
        (st.slots.len(), st.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn key(id: &str) -> PageKey {
        let query = LogQuery {
            path: quaero_shared::JobPath::manager(1),
            limit: 100,
            order: quaero_shared::Order::Asc,
            after: None,
            before: None,
            min_level: None,
        };
        PageKey { id: id.into(), query }
    }

    async fn get(c: &PageCache, k: &str, version: u64, reads: &AtomicUsize, body: &str) -> Bytes {
        let body = Bytes::copy_from_slice(body.as_bytes());
        c.get_or_read(key(k), version, || async {
            reads.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            Ok::<_, ()>(body)
        })
        .await
        .expect("read")
    }

    #[tokio::test]
    async fn shares_while_current_and_rereads_after_a_change() {
        let c = PageCache::new(true);
        let reads = AtomicUsize::new(0);
        assert_eq!(get(&c, "m1-s1", 5, &reads, "a").await, "a");
        assert_eq!(get(&c, "m1-s1", 5, &reads, "b").await, "a", "same version: the kept page");
        assert_eq!(get(&c, "m1-s1", 3, &reads, "b").await, "a", "an older version is served the newer page");
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        assert_eq!(get(&c, "m1-s1", 6, &reads, "c").await, "c", "the scope changed: read again");
        assert_eq!(get(&c, "m1-s2", 6, &reads, "d").await, "d", "another page");
        assert_eq!(reads.load(Ordering::SeqCst), 3);
        assert_eq!(c.kept(), (2, 2));
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_read() {
        let c = PageCache::new(true);
        let reads = AtomicUsize::new(0);
        let all = futures_util::future::join_all((0..50).map(|_| get(&c, "m1-s1", 9, &reads, "page"))).await;
        assert!(all.iter().all(|b| b == "page"));
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn disabled_reads_every_time() {
        let c = PageCache::new(false);
        let reads = AtomicUsize::new(0);
        assert_eq!(get(&c, "m1", 1, &reads, "a").await, "a");
        assert_eq!(get(&c, "m1", 1, &reads, "b").await, "b");
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        assert_eq!(c.kept(), (0, 0));
    }

    #[tokio::test]
    async fn errors_are_not_kept_and_bounds_hold() {
        let c = PageCache::new(true);
        let failed: Result<Bytes, &str> = c.get_or_read(key("m1"), 1, || async { Err("disk") }).await;
        assert_eq!(failed, Err("disk"));
        let reads = AtomicUsize::new(0);
        assert_eq!(get(&c, "m1", 1, &reads, "ok").await, "ok", "the failed read was not kept");
        let big = "x".repeat(MAX_PAGE_BYTES + 1);
        assert_eq!(get(&c, "m2", 1, &reads, &big).await.len(), big.len());
        assert_eq!(c.kept(), (1, 2), "a page over the size bound is served, not kept");
        for i in 0..=MAX_PAGES {
            get(&c, &format!("m{i}-s1"), 1, &reads, "p").await;
        }
        assert!(c.kept().0 <= MAX_PAGES, "past the count bound everything is dropped");
    }
}
