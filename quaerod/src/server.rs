//! Wires the parts together. [`run`] is the daemon: it opens the store, loads the
//! definitions, resumes interrupted jobs, prints the start line (`quaerod listening on
//! http://…`), serves on the listener it is given until
//! `shutdown` resolves, then stops taking work, interrupts running jobs and flushes. The
//! binary calls it with a listener from [`bind`]; in-process tests call it with one on
//! `127.0.0.1:0`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warp::Filter;

use crate::aggregator::Aggregator;
use crate::config::Config;
use crate::engine::Engine;
use crate::store::{OpenError, Store, StoreOptions};

/// How long running jobs get to stop at shutdown (the whole exit stays under 10 s).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(7);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] OpenError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("--recover could not move {path} aside: {source}")]
    Recover {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the engine failed: {0}")]
    Engine(#[from] crate::engine::EngineError),
}

/// Runs the daemon on `listener` until `shutdown` resolves. Returns once it has stopped
/// (running jobs interrupted, the store flushed), or at once with the reason it could not
/// start (the data directory unreadable or in use, a definition that cannot load). Requests
/// that arrive while it starts wait in the listener's backlog.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let fds = crate::http::raise_fd_limit();
    tracing::debug!(limit = fds, "file descriptor limit");
    let aggregator = Aggregator::new(config.time_threshold, config.mode);
    let store = open_store(&config, &aggregator)?;
    let engine = Engine::new(store, aggregator, config);
    engine.load_definitions()?;
    let resumed = engine.recover().await?;
    if resumed > 0 {
        tracing::info!(jobs = resumed, "resumed jobs interrupted by the last stop");
    }
    engine.start_scheduling().await?;
    engine.watch_queues();
    // The start line, once the daemon is ready (tests and scripts wait for it). Not
    // println!: with stdout closed (`quaerod | head -0`), the daemon runs on.
    if let Ok(addr) = listener.local_addr() {
        use std::io::Write;
        let url = format!("http://{addr}");
        let _ = writeln!(std::io::stdout(), "quaerod listening on {url} (dashboard: {url}/queue)");
    }
    serve(engine, listener, shutdown).await;
    Ok(())
}

/// Opens the data directory; with `--recover`, an unreadable one is moved aside and the
/// daemon starts empty.
fn open_store(config: &Config, aggregator: &Arc<Aggregator>) -> Result<Arc<dyn Store>, StartError> {
    let opts = StoreOptions { max_events_per_job: config.max_events_per_job };
    match crate::store::open(&config.storage_path, aggregator.clone(), opts) {
        Ok(s) => Ok(s),
        Err(e) if config.recover && config.storage_path.exists() && !matches!(e, OpenError::InUse { .. }) => {
            let aside = move_aside(&config.storage_path)
                .map_err(|source| StartError::Recover { path: config.storage_path.display().to_string(), source })?;
            tracing::warn!(error = %e, moved_to = %aside.display(), "--recover: moved the unreadable data directory aside; starting empty");
            eprintln!(
                "quaerod: {e}\nquaerod: --recover: moved it to {} and starting with an empty data directory",
                aside.display()
            );
            Ok(crate::store::open(&config.storage_path, aggregator.clone(), opts)?)
        }
        Err(e) => Err(e.into()),
    }
}

async fn serve(engine: Arc<Engine>, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) {
    let token = engine.config().auth_token.clone().map(Arc::<str>::from);
    let stop = CancellationToken::new();
    tokio::spawn(engine.aggregator().clone().run(stop.clone()));
    if let Some(retention) = engine.config().retention {
        tokio::spawn(retention_task(engine.clone(), retention, stop.clone()));
    }

    // The guard follows the address actually served, not the configured one.
    let bound = listener.local_addr().map(|a| a.ip()).unwrap_or(engine.config().host);
    let host_check = host_guard(bound, token.is_some());
    let routes = routes(engine.clone())
        .recover(crate::api::recover)
        .with(warp::log::custom(|info| {
            crate::metrics::METRICS.request(info.path(), info.status().as_u16(), info.elapsed().as_secs_f64());
            tracing::debug!(method = %info.method(), path = info.path(), status = info.status().as_u16(), elapsed = ?info.elapsed(), "request");
        }));
    let routes = host_check.and(routes).recover(crate::api::recover);
    let server_task = tokio::spawn(crate::http::serve(listener, routes, stop.clone()));

    shutdown.await;
    tracing::info!("shutting down: interrupting running jobs");
    engine.shutdown(SHUTDOWN_GRACE).await;
    stop.cancel();
    if tokio::time::timeout(Duration::from_secs(2), server_task).await.is_err() {
        tracing::warn!("open connections did not close in time");
    }
}

/// Every route the daemon serves: the API, `/ws`, `/metrics` and the dashboard.
pub(crate) fn routes(
    engine: Arc<Engine>,
) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    let token = engine.config().auth_token.clone().map(Arc::<str>::from);
    crate::api::filters::api(engine.clone(), token.clone())
        .or(crate::ws::route(engine.aggregator().clone(), token.clone()))
        .or(crate::api::filters::metrics(engine.clone(), token))
        .or(crate::assets::routes())
        .or(crate::api::filters::method_not_allowed())
}

/// Deletes finished managers older than `retention`, checking every tenth of it (between
/// 1 s and 10 min).
async fn retention_task(engine: Arc<Engine>, retention: Duration, stop: CancellationToken) {
    let every = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = engine.sweep_retention(retention).await {
            tracing::warn!(error = %e, "retention sweep failed");
        }
    }
}

/// Renames a data directory to `<name>.broken-<UTC timestamp>` beside it; returns the new
/// path. Never deletes anything.
fn move_aside(path: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    let stamp = crate::time::rfc3339(crate::time::now_ms()).replace([':', '-'], "").replace('.', "-");
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "quaero-data".into());
    let mut aside = path.with_file_name(format!("{name}.broken-{stamp}"));
    let mut i = 1;
    while aside.exists() {
        aside = path.with_file_name(format!("{name}.broken-{stamp}-{i}"));
        i += 1;
    }
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

/// Binds the daemon's listener (the accept loop sets `TCP_NODELAY` on each connection).
pub fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    bind_socket(addr).map_err(|source| StartError::Bind { addr, source })
}

fn bind_socket(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// DNS rebinding guard: on a loopback bind without a token, only requests that name the
/// machine by a loopback Host (`127.0.0.1`, `localhost`, `[::1]`) are served, so a page
/// whose own name was re-pointed at 127.0.0.1 cannot drive the daemon. With a token, or
/// bound to another address (reachable under names we cannot know), the token is the guard.
fn host_guard(
    bind: std::net::IpAddr,
    has_token: bool,
) -> impl warp::Filter<Extract = (), Error = warp::Rejection> + Clone {
    let check = bind.is_loopback() && !has_token;
    warp::header::optional::<String>("host")
        .and_then(move |host: Option<String>| async move {
            if !check || host.as_deref().is_some_and(loopback_host) {
                Ok(())
            } else {
                Err(crate::api::ApiError::forbidden(format!(
                    "Host {:?} is not this machine's loopback name; use http://127.0.0.1 or http://localhost",
                    host.unwrap_or_default()
                )))
            }
        })
        .untuple_one()
}

fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, p)| if p.chars().all(|c| c.is_ascii_digit()) { h } else { host })
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    /// The daemon in-process, as the binary runs it: it serves on the listener it is given,
    /// refuses a second start on the same data directory, and returns when told to stop.
    #[tokio::test]
    async fn run_serves_its_listener_and_returns_after_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            storage_path: dir.path().join("data"),
            definitions_dir: dir.path().join("jobs"),
            ..Config::default()
        };
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let daemon = tokio::spawn(run(listener, config.clone(), async move {
            let _ = stop_rx.await;
        }));
        let health = get(addr, "/api/health").await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        assert!(health.contains(r#""status":"ok""#), "{health}");

        let second = bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let refused = run(second, config, std::future::pending()).await;
        assert!(matches!(refused, Err(StartError::Store(OpenError::InUse { .. }))), "{refused:?}");

        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(15), daemon).await.expect("stops").unwrap().unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener is closed after run returns");
    }

    #[test]
    fn loopback_hosts() {
        for h in ["127.0.0.1:8080", "localhost:1", "LOCALHOST", "[::1]:80", "127.0.0.2"] {
            assert!(super::loopback_host(h), "{h}");
        }
        for h in ["evil.example:8080", "127.0.0.1.evil.example", "0.0.0.0:8080", "", "[::2]:1"] {
            assert!(!super::loopback_host(h), "{h}");
        }
    }
}
