//! `quaero-tui`: the terminal client of `quaerod`.
//!
//! Layout:
//! - [`client`]: the daemon's client, `quaero_shared::client` (REST calls, the `after`
//!   follower, the WebSocket link with backoff, the refetch throttle), shared with
//!   quaero-bench and the end-to-end tests.
//! - [`tail`]: the scripted mode (`--job` / `--run`): pages events with `after`, exit codes.
//! - [`app`]: dashboard state and the pure `update(msg, now) -> commands`.
//! - [`ui`]: drawing, a pure function of [`app::App`].
//! - [`net`]: the one task that owns REST and WebSocket I/O for the dashboard.
//! - [`term`]: the interactive loop: terminal setup/restore, input thread, redraws.
//! - [`text`]: formatting shared by the tail and the dashboard (times, levels, durations).

pub mod app;
pub use quaero_shared::client;
pub mod net;
pub mod tail;
pub mod term;
pub mod text;
pub mod ui;

#[cfg(test)]
mod fixtures;
