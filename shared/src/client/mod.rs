//! The one client of `quaerod` (feature `client`), used by the TUI, the scripted tail,
//! quaero-bench and the end-to-end tests:
//!
//! - [`Client`]: typed REST calls (one `reqwest::Client`, bearer token, JSON error bodies
//!   turned into [`ApiError`]s that keep "retry" apart from "not found").
//! - [`Follower`]: the gap-free `after` cursor over a scope's events (docs/events.md):
//!   every page is `after=<last seen seq>`, so an event is seen once and in `seq` order
//!   whatever happens between pages.
//! - [`WsLink`]: the WebSocket link to `/ws`: connect, subscribe, reconnect with backoff.
//! - [`Throttle`] and [`StepRefetch`]: a step's events are refetched at most every
//!   [`STEP_REFETCH_EVERY`] (at once for a `finished` trigger), and a trigger folded into
//!   the window is not lost: one trailing fetch runs when the window ends. The dashboard's
//!   `queue.js` does the same.

mod follow;
mod link;
mod rest;
mod throttle;

pub use follow::{Follower, MAX_PAGE, Page};
pub use link::{BACKOFF_MAX, BACKOFF_MIN, LinkEvent, WsLink};
pub use rest::{ApiError, Client, ClientOptions, LogQuery, RawResponse};
pub use throttle::{STEP_REFETCH_EVERY, StepRefetch, Throttle};
