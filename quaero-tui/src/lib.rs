//! `quaero-tui`: the terminal client of `quaerod`.
//!
//! Layout:
//! - [`client`]: typed REST calls (one `reqwest::Client`, bearer token, JSON error bodies).
//! - [`ws`]: the WebSocket link: connect, subscribe, reconnect with backoff, cancel-safe.
//! - [`tail`]: the scripted mode (`--job` / `--run`): pages events with `after`, exit codes.
//! - [`app`]: dashboard state and the pure `update(msg, now) -> commands`.
//! - [`ui`]: drawing, a pure function of [`app::App`].
//! - [`net`]: the one task that owns REST and WebSocket I/O for the dashboard.
//! - [`term`]: the interactive loop: terminal setup/restore, input thread, redraws.
//! - [`text`]: formatting shared by the tail and the dashboard (times, levels, durations).

pub mod app;
pub mod client;
pub mod net;
pub mod tail;
pub mod term;
pub mod text;
pub mod ui;
pub mod ws;

#[cfg(test)]
mod fixtures;
