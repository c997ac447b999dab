//! The `quaerod` binary: parses flags, builds the configuration, starts the server and
//! waits for SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use quaerod::config::{Cli, Config};
use quaerod::server::Server;

fn init_logging(cli: &Cli) {
    let filter = cli.log_level.clone().or_else(|| std::env::var("QUAERO_LOG").ok()).unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!("quaerod: invalid log filter {filter:?} (--log-level / QUAERO_LOG): {e}");
        std::process::exit(2);
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format.as_str() {
        "json" => builder.json().init(),
        "text" => builder.init(),
        other => {
            eprintln!("quaerod: invalid value for --log-format: {other:?} is not text or json");
            std::process::exit(2);
        }
    }
}

/// Installs the SIGINT/SIGTERM handlers now (before the start line is printed, so that a
/// signal sent as soon as the daemon says it listens is a graceful stop) and resolves when
/// one arrives.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("quaerod: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async move {
        if !config.host.is_loopback() && config.auth_token.is_none() {
            tracing::warn!(
                "WARNING: listening on {} without an auth_token: anyone who can reach this port can run commands on this machine. Set [server] auth_token (or --auth-token).",
                config.host
            );
            eprintln!(
                "quaerod: WARNING: binding {} without an auth token exposes command execution to the network",
                config.host
            );
        }
        let server = match Server::start(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("quaerod: {e}");
                return ExitCode::from(2);
            }
        };
        let shutdown = shutdown_signal();
        let url = format!("http://{}", server.addr);
        println!("quaerod listening on {url} (dashboard: {url}/queue)");
        if server.resumed() > 0 {
            tracing::info!(jobs = server.resumed(), "resumed jobs interrupted by the last stop");
        }
        server.run(shutdown).await;
        ExitCode::SUCCESS
    })
}
