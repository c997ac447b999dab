//! `quaerod`: the Quaero job queue daemon.
//!
//! Layout:
//! - [`config`]: `quaero.toml` < `QUAERO_*` environment < flags, validated at start.
//! - [`store`]: the `Store` trait (event log, job records, definitions) and its sled
//!   implementation, the only code that names sled.
//! - [`engine`]: definitions, the manager runner (fan-out in `run.rs`), the worker pool,
//!   the step runners, and the search for processes a killed daemon left (`leftovers.rs`).
//! - [`aggregator`]: turns commits into per-client `refresh_step_events` triggers.
//! - [`api`]: the REST routes (warp filters, handlers, one `recover`) and the OpenAPI
//!   document they are built from.
//! - [`ws`]: the `/ws` endpoint: one outbox per client, fed by the aggregator.
//! - `http`: the accept loop (header-read timeout, connection budget).
//! - [`server`]: wires it all together; [`server::run`] (listener, config, shutdown) is the
//!   daemon, called by the binary and by in-process tests.
//! - [`metrics`]: `GET /metrics` (Prometheus text format).
//! - `page_cache`: logs pages shared by the clients that ask for the same one.
//! - [`time`]: timestamp formatting.
//! - `wire`: logs pages serialised straight from stored records.
//! - `assets`: the dashboard's files under `pages/`, embedded at build time.

pub mod aggregator;
pub mod api;
mod assets;
pub mod config;
pub mod engine;
pub(crate) mod http;
pub mod metrics;
mod page_cache;
pub mod server;
pub mod store;
pub mod time;
mod wire;
pub mod ws;
