//! How the bench talks to the daemon: a small REST client, and WebSocket clients that
//! either never read (a stuck browser tab) or behave as the dashboard does (refetch the
//! last 100 events of each step a trigger names, at most once per 500 ms per step, at once
//! for `finished` triggers).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use quaero_shared::{Event, Job, LogsResponse, ServerMessage};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The dashboard refetches a step at most this often, except on `finished` triggers.
const REFETCH_EVERY: Duration = Duration::from_millis(500);
/// What the dashboard fetches for an open step panel.
pub const LAST_100: &str = "logs?limit=100&order=asc";
/// Largest page of `GET /api/jobs/{id}/logs`.
const PAGE: usize = 5000;

#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str) -> Result<Api> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(128)
            // quaerod closes keep-alive connections idle for 10 s.
            .pool_idle_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .build()
            .context("http client")?;
        Ok(Api { base: base.to_string(), http })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let r = self.http.get(format!("{}{path}", self.base)).send().await.with_context(|| format!("GET {path}"))?;
        let status = r.status();
        let body = r.bytes().await.with_context(|| format!("GET {path}: body"))?;
        if !status.is_success() {
            bail!("GET {path} → {status}: {}", String::from_utf8_lossy(&body));
        }
        serde_json::from_slice(&body).with_context(|| format!("GET {path}: unexpected body"))
    }

    pub async fn post(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = r.status();
        let body = r.bytes().await?;
        if !status.is_success() {
            bail!("POST {path} → {status}: {}", String::from_utf8_lossy(&body));
        }
        serde_json::from_slice(&body).with_context(|| format!("POST {path}: unexpected body"))
    }

    /// Creates (or replaces) a definition from JSON.
    pub async fn put_definition(&self, def: &serde_json::Value) -> Result<()> {
        self.post("/api/job-definitions", def).await.map(|_| ())
    }

    /// Executes a definition; returns the new manager id.
    pub async fn execute(&self, def_id: &str) -> Result<String> {
        let b = self.post(&format!("/api/job-definitions/{def_id}/execute"), &serde_json::json!({})).await?;
        b["job_id"].as_str().map(str::to_string).context("execute: no job_id")
    }

    pub async fn job(&self, id: &str) -> Result<Job> {
        self.get(&format!("/api/jobs/{id}")).await
    }

    /// Polls a job every `every` until it is terminal.
    pub async fn wait_terminal(&self, id: &str, every: Duration, limit: Duration) -> Result<Job> {
        let deadline = Instant::now() + limit;
        loop {
            let j = self.job(id).await?;
            if j.status.is_terminal() {
                return Ok(j);
            }
            if Instant::now() > deadline {
                bail!("{id} still {} after {limit:?}", j.status);
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Visits every event of a scope in seq order (paging with `after`), checking that
    /// seqs strictly increase. Returns how many there were.
    pub async fn for_each_event(&self, id: &str, mut f: impl FnMut(&Event)) -> Result<u64> {
        let mut after = 0u64;
        let mut n = 0;
        loop {
            let page: LogsResponse = self.get(&format!("/api/jobs/{id}/logs?after={after}&limit={PAGE}")).await?;
            if page.logs.is_empty() {
                return Ok(n);
            }
            for e in &page.logs {
                if e.seq <= after {
                    bail!("{id}: seq {} after {after}: events out of order or repeated", e.seq);
                }
                after = e.seq;
                n += 1;
                f(e);
            }
        }
    }
}

/// A client that connects and never reads: the server must not let it slow anything.
pub async fn connect_idle(url: &str) -> Result<WsStream> {
    let (s, _) = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(url))
        .await
        .context("WebSocket connect timed out")?
        .context("WebSocket connect")?;
    Ok(s)
}

/// A `finished` trigger as a client received it.
#[derive(Debug, Clone)]
pub struct Finished {
    pub step_ids: Vec<String>,
    pub manager_ids: Vec<String>,
    pub at: SystemTime,
}

/// What one reading client saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatchStats {
    pub messages: u64,
    pub bytes: u64,
    pub job_logs: u64,
    pub refreshes: u64,
    pub finished: u64,
    pub fetches: u64,
    pub fetch_errors: u64,
}

/// A reading client, running in its own task until [`Watcher::stop`].
pub struct Watcher {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<WatchStats>>,
}

impl Watcher {
    /// Connects and waits for `hello`. With `api`, refetches steps as the dashboard does;
    /// every `finished` trigger goes to `finished` when given.
    pub async fn start(url: &str, api: Option<Api>, finished: Option<mpsc::UnboundedSender<Finished>>) -> Result<Self> {
        let mut ws = connect_idle(url).await?;
        let mut stats = WatchStats::default();
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.as_str().contains("\"hello\"") => {
                stats.messages += 1;
                stats.bytes += t.len() as u64;
            }
            other => bail!("expected hello, got {other:?}"),
        }
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut last_fetch: HashMap<String, Instant> = HashMap::new();
            loop {
                let msg = tokio::select! {
                    _ = &mut stopped => return Ok(stats),
                    m = ws.next() => m,
                };
                let text = match msg {
                    None | Some(Ok(Message::Close(_))) => return Ok(stats),
                    Some(Err(e)) => return Err(e).context("WebSocket read"),
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                };
                stats.messages += 1;
                stats.bytes += text.len() as u64;
                // Push mode sends one of these per event: count, do not parse.
                if text.as_str().starts_with("{\"type\":\"job_log\"") {
                    stats.job_logs += 1;
                    continue;
                }
                let Ok(ServerMessage::RefreshStepEvents(r)) = serde_json::from_str::<ServerMessage>(text.as_str())
                else {
                    continue;
                };
                if r.finished {
                    stats.finished += 1;
                    if let Some(tx) = &finished {
                        let at = SystemTime::now();
                        let _ =
                            tx.send(Finished { step_ids: r.step_ids.clone(), manager_ids: r.manager_ids.clone(), at });
                    }
                } else {
                    stats.refreshes += 1;
                }
                let Some(api) = &api else { continue };
                for step in &r.step_ids {
                    let due = last_fetch.get(step).is_none_or(|t| t.elapsed() >= REFETCH_EVERY);
                    if !(r.finished || due) {
                        continue;
                    }
                    last_fetch.insert(step.clone(), Instant::now());
                    stats.fetches += 1;
                    let ok = match api.http.get(format!("{}/api/jobs/{step}/{LAST_100}", api.base)).send().await {
                        Ok(resp) => resp.status().is_success() && resp.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if !ok {
                        stats.fetch_errors += 1;
                    }
                }
            }
        });
        Ok(Watcher { stop, task })
    }

    pub async fn stop(self) -> Result<WatchStats> {
        let _ = self.stop.send(());
        self.task.await.context("watcher task")?
    }
}
