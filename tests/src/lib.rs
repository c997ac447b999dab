//! Harness for the end-to-end tests: starts the real `quaerod` binary on `127.0.0.1:0` with
//! a temporary data dir, reads the address it prints, and stops it (gracefully or with
//! SIGKILL) when asked or when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use quaero_shared as shared;

/// Path of a binary of this workspace, built next to the test executable
/// (`target/<profile>/deps/test-xxxx` → `target/<profile>/<name>`).
pub fn bin_path(name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(format!("QUAERO_BIN_{}", name.replace('-', "_").to_uppercase())) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built: run the tests with `cargo nextest run --workspace` (or cargo build first)",
        p.display()
    );
    p
}

/// A running daemon on a temp data dir.
pub struct Daemon {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub definitions_dir: PathBuf,
    extra_args: Vec<String>,
    envs: Vec<(String, String)>,
    _tmp: tempfile::TempDir,
    /// Everything the daemon printed on stderr and stdout, for failure messages.
    pub output: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

pub struct DaemonBuilder {
    args: Vec<String>,
    envs: Vec<(String, String)>,
    definitions: Vec<(String, String)>,
}

impl DaemonBuilder {
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.envs.push((k.into(), v.into()));
        self
    }
    /// Writes `<file_name>` with `toml` into the definitions dir before start.
    pub fn definition(mut self, file_name: &str, toml: &str) -> Self {
        self.definitions.push((file_name.into(), toml.into()));
        self
    }
    pub fn start(self) -> Daemon {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let definitions_dir = tmp.path().join("jobs");
        std::fs::create_dir_all(&definitions_dir).unwrap();
        for (name, body) in &self.definitions {
            std::fs::write(definitions_dir.join(name), body).unwrap();
        }
        let mut d = Daemon {
            child: None,
            base: String::new(),
            port: 0,
            data_dir,
            definitions_dir,
            extra_args: self.args,
            envs: self.envs,
            _tmp: tmp,
            output: Default::default(),
        };
        d.spawn(0);
        d
    }
}

impl Daemon {
    pub fn builder() -> DaemonBuilder {
        DaemonBuilder { args: vec![], envs: vec![], definitions: vec![] }
    }

    pub fn start() -> Daemon {
        Self::builder().start()
    }

    fn spawn(&mut self, port: u16) {
        let mut cmd = Command::new(bin_path("quaerod"));
        cmd.arg("--port")
            .arg(port.to_string())
            .arg("--data")
            .arg(&self.data_dir)
            .arg("--definitions")
            .arg(&self.definitions_dir)
            .args(&self.extra_args)
            .env_remove("QUAERO_SERVER_PORT")
            .env("QUAERO_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn quaerod");
        let (tx, rx) = mpsc::channel::<String>();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for stream in [Box::new(out) as Box<dyn std::io::Read + Send>, Box::new(err)] {
            let tx = tx.clone();
            let log = self.output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    // The start line (`quaerod listening on http://…`), not a warning that
                    // mentions where it listens (`--host 0.0.0.0` without a token).
                    if let Some(rest) = line.split("listening on ").nth(1).filter(|r| r.starts_with("http")) {
                        let url = rest.split_whitespace().next().unwrap().to_string();
                        self.port = url.rsplit(':').next().unwrap().parse().unwrap();
                        self.base = url;
                        break;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("quaerod did not print its address; output:\n{}", self.output.lock().unwrap().join("\n"));
                }
            }
        }
        self.child = Some(child);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        c.wait().expect("wait")
    }

    /// Starts again on the same data dir and the same port (so clients can reconnect).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill9 first");
        let port = self.port;
        self.spawn(port);
    }

    /// Starts again on the same data dir on a new free port.
    pub fn restart_any_port(&mut self) {
        assert!(self.child.is_none(), "stop or kill9 first");
        self.spawn(0);
    }

    pub fn data_path(&self) -> &Path {
        &self.data_dir
    }

    pub fn output_text(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A small HTTP client for the tests.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub token: Option<String>,
}

impl Api {
    pub fn new(d: &Daemon) -> Api {
        Api { base: d.base.clone(), http: reqwest::Client::new(), token: None }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    /// GET → (status, JSON body).
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.req(reqwest::Method::GET, path).send().await.expect("GET");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// POST with a JSON body → (status, JSON body).
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = self.req(reqwest::Method::POST, path).json(&body).send().await.expect("POST");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .req(reqwest::Method::DELETE, path)
            .header("content-type", "application/json")
            .send()
            .await
            .expect("DELETE");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Executes a definition; returns the manager id.
    pub async fn execute(&self, def: &str) -> String {
        let (s, b) = self.post(&format!("/api/job-definitions/{def}/execute"), serde_json::json!({})).await;
        assert_eq!(s, 202, "execute {def}: {b}");
        b["job_id"].as_str().expect("job_id").to_string()
    }

    pub async fn status(&self, id: &str) -> String {
        let (_, b) = self.get(&format!("/api/jobs/{id}")).await;
        b["status"].as_str().unwrap_or("?").to_string()
    }

    /// Waits until the job has `status` (or panics after `secs`): a run is `pending` for a
    /// moment after execute answers, until a runner takes it.
    pub async fn wait_status(&self, id: &str, status: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.status(id).await;
            if s == status {
                return;
            }
            assert!(Instant::now() < deadline, "{id} still {s} after {secs}s, waiting for {status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the job is terminal (or panics after `secs`); returns its status.
    pub async fn wait_terminal(&self, id: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.status(id).await;
            if matches!(s.as_str(), "completed" | "failed" | "cancelled") {
                return s;
            }
            assert!(Instant::now() < deadline, "{id} still {s} after {secs}s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every event of a scope, following `after` in pages of `page`.
    pub async fn all_events(&self, id: &str, page: usize) -> Vec<serde_json::Value> {
        let mut after = 0u64;
        let mut out = Vec::new();
        loop {
            let (s, b) = self.get(&format!("/api/jobs/{id}/logs?after={after}&limit={page}")).await;
            assert_eq!(s, 200, "{b}");
            let logs = b["logs"].as_array().expect("logs").clone();
            if logs.is_empty() {
                return out;
            }
            after = logs.last().unwrap()["seq"].as_u64().unwrap();
            out.extend(logs);
        }
    }
}

/// Writes a definition file body for an `emit` step.
pub fn emit_definition(id: &str, config: &str) -> String {
    format!("id = \"{id}\"\nname = \"{id}\"\n[[steps]]\nname = \"emit\"\ntype = \"emit\"\n[steps.config]\n{config}\n")
}
