//! Harness for the end-to-end tests (and the bench's launcher): [`Daemon`] starts the real
//! `quaerod` binary on `127.0.0.1:0` with a temporary data dir, reads the address it prints,
//! and stops it (gracefully or with SIGKILL) when asked or when dropped; [`Api`] is the
//! shared client (`quaero_shared::client`) with the shortcuts tests want.

use std::time::Duration;

pub use quaero_shared as shared;
use quaero_shared::client::{Client, Follower};
use reqwest::Method;

pub mod daemon;
pub use daemon::{Daemon, DaemonBuilder, bin_path};

/// The shared client with what tests want: raw status and JSON for any route, and typed
/// shortcuts that panic with a clear message instead of returning errors.
#[derive(Clone)]
pub struct Api {
    pub client: Client,
}

impl Api {
    pub fn new(d: &Daemon) -> Api {
        Api { client: Client::new(&d.base, None).expect("daemon address") }
    }

    /// The same daemon with a bearer token.
    pub fn with_token(d: &Daemon, token: &str) -> Api {
        Api { client: Client::new(&d.base, Some(token.to_string())).expect("daemon address") }
    }

    /// The underlying HTTP client, for requests the shortcuts do not make.
    pub fn http(&self) -> &reqwest::Client {
        self.client.http()
    }

    async fn call(&self, method: Method, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
        let what = format!("{method} {path}");
        let r = self.client.raw(method, path, body.as_ref()).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        (r.status, r.json())
    }

    /// GET → (status, JSON body; `Null` if the body is not JSON).
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.call(Method::GET, path, None).await
    }

    /// POST with a JSON body → (status, JSON body).
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// DELETE (saying it is JSON, as every mutation must) → (status, JSON body).
    pub async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        self.call(Method::DELETE, path, Some(serde_json::json!({}))).await
    }

    /// Executes a definition; returns the manager id.
    pub async fn execute(&self, def: &str) -> String {
        self.client.execute(def).await.unwrap_or_else(|e| panic!("execute {def}: {e}")).job_id
    }

    /// The job's status, or `?` when it cannot be read (gone, say).
    pub async fn status(&self, id: &str) -> String {
        self.client.job(id).await.map(|j| j.status.to_string()).unwrap_or_else(|_| "?".into())
    }

    /// Waits until the job has `status` (or panics after `secs`): a run is `pending` for a
    /// moment after execute answers, until a runner takes it.
    pub async fn wait_status(&self, id: &str, status: &str, secs: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.status(id).await;
            if s == status {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{id} still {s} after {secs}s, waiting for {status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the job is terminal (or panics after `secs`); returns its status.
    pub async fn wait_terminal(&self, id: &str, secs: u64) -> String {
        let within = Duration::from_secs(secs);
        let job = self.client.wait_terminal(id, Duration::from_millis(50), within).await;
        job.unwrap_or_else(|e| panic!("{e}")).status.to_string()
    }

    /// Every event of a scope, following `after` in pages of `page` (the follower fails on
    /// a repeated or reordered event).
    pub async fn all_events(&self, id: &str, page: usize) -> Vec<serde_json::Value> {
        let mut f = Follower::new(id, 0).page_size(page as u32);
        let mut out = Vec::new();
        f.drain(&self.client, |e| out.push(serde_json::to_value(e).expect("event")))
            .await
            .unwrap_or_else(|e| panic!("events of {id}: {e}"));
        out
    }
}

/// Writes a definition file body for an `emit` step.
pub fn emit_definition(id: &str, config: &str) -> String {
    format!("id = \"{id}\"\nname = \"{id}\"\n[[steps]]\nname = \"emit\"\ntype = \"emit\"\n[steps.config]\n{config}\n")
}
