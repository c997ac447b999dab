//! The `quaerod` binary: parses flags, builds the configuration, starts the server and
//! waits for SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use quaerod::config::{Cli, Config};

fn init_logging(cli: &Cli) {
    let filter = cli.log_level.clone().or_else(|| std::env::var("QUAERO_LOG").ok()).unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!("quaerod: invalid log filter {filter:?} (--log-level / QUAERO_LOG): {e}");
        std::process::exit(2);
    });
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal (not in a file, a pipe or the journal) without NO_COLOR.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()))
        // A log line that cannot be written (stderr piped to a reader that has gone, as in
        // `quaerod 2>&1 | tee log` after Ctrl-C) is dropped: reporting it would print to
        // that same stderr, which panics, and the daemon would die mid-shutdown.
        .log_internal_errors(false);
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

/// `--check-config`: the configuration and every definition file, checked without
/// opening the store (a running daemon may hold it).
fn check_config(config: &Config) -> ExitCode {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "configuration: ok");
    let _ = writeln!(out, "  listen: {}:{}", config.host, config.port);
    let _ = writeln!(out, "  storage.path: {}", config.storage_path.display());
    let _ = writeln!(out, "  jobs.definitions_dir: {}", config.definitions_dir.display());
    if !config.definitions_dir.is_dir() {
        let _ = writeln!(out, "definitions: {} is not a directory", config.definitions_dir.display());
        print_out(out.as_bytes());
        return ExitCode::from(2);
    }
    let loaded = quaerod::engine::definition::load_dir(&config.definitions_dir);
    let mut bad = 0;
    for l in &loaded {
        let source = &l.source;
        match &l.valid {
            Ok(_) => _ = writeln!(out, "  ok       {:<20} {source}", l.def.id),
            Err(e) => {
                bad += 1;
                let _ = writeln!(out, "  INVALID  {:<20} {source}: {e}", l.def.id);
            }
        }
    }
    let _ = writeln!(out, "definitions: {} valid, {bad} invalid", loaded.len() - bad);
    let printed = print_out(out.as_bytes());
    if bad > 0 { ExitCode::from(2) } else { printed }
}

/// Writes generated text to stdout; a reader that stops early (`| head`) is not an error.
fn print_out(bytes: &[u8]) -> ExitCode {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("quaerod: {e}");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(shell) = cli.completions {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "quaerod", &mut out);
        return print_out(&out);
    }
    if cli.man {
        let mut out = Vec::new();
        if let Err(e) = clap_mangen::Man::new(Cli::command()).render(&mut out) {
            eprintln!("quaerod: {e}");
            return ExitCode::FAILURE;
        }
        return print_out(&out);
    }
    init_logging(&cli);
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("quaerod: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        return check_config(&config);
    }
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
        let listener = match quaerod::server::bind(SocketAddr::new(config.host, config.port)) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("quaerod: {e}");
                return ExitCode::from(2);
            }
        };
        if let Err(e) = quaerod::server::run(listener, config, shutdown_signal()).await {
            eprintln!("quaerod: {e}");
            return ExitCode::from(2);
        }
        ExitCode::SUCCESS
    })
}
