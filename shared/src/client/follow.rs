//! The gap-free `after` follower over one scope's events.

use crate::{Event, Level, LogsResponse, Order};

use super::rest::{ApiError, Client, LogQuery};

/// The API's largest page of events.
pub const MAX_PAGE: u32 = 5000;

/// A cursor over the events of a job or step (a scope), in `seq` order. Each page is asked
/// with `after=<last seq seen>`, so nothing is skipped or repeated whatever happens between
/// pages (a slow reader, lost triggers, a daemon restart): that is the contract of `seq`
/// (docs/events.md). A page that breaks it (a `seq` not above the cursor) is an error, never
/// silently dropped or printed twice.
#[derive(Debug, Clone)]
pub struct Follower {
    scope: String,
    cursor: u64,
    page: u32,
    level: Option<Level>,
}

/// One page as the follower took it.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub events: Vec<Event>,
    /// The page was full: more is waiting, fetch again before waiting for a trigger.
    pub more: bool,
}

impl Follower {
    /// Follows `scope` from just after `after` (0: from the first event).
    pub fn new(scope: impl Into<String>, after: u64) -> Self {
        Self { scope: scope.into(), cursor: after, page: MAX_PAGE, level: None }
    }

    /// Pages of at most `n` events (1 to 5000).
    pub fn page_size(mut self, n: u32) -> Self {
        self.page = n.clamp(1, MAX_PAGE);
        self
    }

    /// Only events of this level or more severe.
    pub fn level(mut self, level: Option<Level>) -> Self {
        self.level = level;
        self
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The `seq` of the last event taken.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The query for the next page. `after` implies oldest-first by contract; `asc` is said
    /// as well so the cursor stays right against a daemon that lists `after` pages newest-first.
    pub fn query(&self) -> LogQuery {
        LogQuery {
            after: Some(self.cursor),
            limit: Some(self.page),
            order: Some(Order::Asc),
            level: self.level,
            before: None,
        }
    }

    /// Takes a page fetched with [`Self::query`] and moves the cursor past it.
    pub fn accept(&mut self, resp: LogsResponse) -> Result<Page, ApiError> {
        // The whole page is checked before the cursor moves: after an error it still
        // points past the last event handed out, so nothing is skipped.
        let mut last = self.cursor;
        for e in &resp.logs {
            if e.seq <= last {
                return Err(ApiError::Decode(format!(
                    "{}: event seq {} after seq {last}: the server repeated or reordered events",
                    self.scope, e.seq
                )));
            }
            last = e.seq;
        }
        self.cursor = last;
        let more = !resp.logs.is_empty() && resp.logs.len() as u64 >= resp.limit.min(u64::from(self.page));
        Ok(Page { events: resp.logs, more })
    }

    /// Fetches and takes the next page.
    pub async fn next_page(&mut self, client: &Client) -> Result<Page, ApiError> {
        let resp = client.logs(&self.scope, &self.query()).await?;
        self.accept(resp)
    }

    /// Fetches pages until one comes back empty (everything stored so far), calling `f` on
    /// every event in order; returns how many there were.
    pub async fn drain(&mut self, client: &Client, mut f: impl FnMut(&Event)) -> Result<u64, ApiError> {
        let mut n = 0;
        loop {
            let page = self.next_page(client).await?;
            if page.events.is_empty() {
                return Ok(n);
            }
            n += page.events.len() as u64;
            page.events.iter().for_each(&mut f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(seqs: &[u64], limit: u64) -> LogsResponse {
        let event = |seq| Event {
            seq,
            job_id: "m1-s1".into(),
            step_id: Some("m1-s1".into()),
            manager_id: "m1".into(),
            step_name: None,
            level: Level::Info,
            message: "x".into(),
            originator: crate::Originator::Worker,
            timestamp: "00:00:00.000".into(),
            full_timestamp: "2026-01-01T00:00:00.000Z".into(),
        };
        LogsResponse {
            job_id: "m1-s1".into(),
            logs: seqs.iter().map(|&s| event(s)).collect(),
            count: seqs.len() as u64,
            limit,
            order: Order::Asc,
            level: "all".into(),
            last_seq: 0,
        }
    }

    #[test]
    fn the_cursor_moves_and_a_full_page_means_more() {
        let mut f = Follower::new("m1-s1", 0).page_size(2);
        assert_eq!(f.query().after, Some(0));
        let p = f.accept(resp(&[1, 3], 2)).unwrap();
        assert!(p.more);
        assert_eq!(f.cursor(), 3);
        assert_eq!(f.query().after, Some(3));
        let p = f.accept(resp(&[4], 2)).unwrap();
        assert!(!p.more);
        assert!(!f.accept(resp(&[], 2)).unwrap().more);
        assert_eq!(f.cursor(), 4);
    }

    #[test]
    fn a_repeated_or_reordered_event_is_an_error() {
        let mut f = Follower::new("m1-s1", 5);
        let e = f.accept(resp(&[5], 10)).unwrap_err();
        assert!(e.to_string().contains("seq 5 after seq 5"), "{e}");
        let mut f = Follower::new("m1-s1", 0);
        assert!(f.accept(resp(&[3, 4, 2], 10)).is_err());
        assert_eq!(f.cursor(), 0, "a refused page moves nothing: 3 and 4 were not handed out");
    }
}
