//! Configuration: embedded defaults < `quaero.toml` < `QUAERO_<SECTION>_<KEY>` environment
//! variables < command-line flags. Every layer is collected as text per key and parsed
//! once, so a bad value is reported with its key and where it came from, whichever layer
//! it came from. Nothing falls back silently.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Command-line flags. Each one overrides the same key from the file and the environment.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "quaerod",
    version,
    about = "Quaero job queue daemon: runs job definitions, keeps every step event, serves a REST API, a WebSocket of refresh triggers and a dashboard at /queue."
)]
pub struct Cli {
    /// Configuration file (TOML). None is needed to start.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// [server] host: address to bind.
    #[arg(long)]
    pub host: Option<String>,
    /// [server] port: 0 picks a free port (the start line prints it).
    #[arg(long)]
    pub port: Option<String>,
    /// [storage] path: the data directory.
    #[arg(long, value_name = "DIR")]
    pub data: Option<String>,
    /// [jobs] definitions_dir: TOML job definitions loaded at start.
    #[arg(long, value_name = "DIR")]
    pub definitions: Option<String>,
    /// [queue] concurrency: worker pool size.
    #[arg(long, value_name = "N")]
    pub concurrency: Option<String>,
    /// [websocket] time_threshold: at most one refresh trigger per client per this long.
    #[arg(long, value_name = "DUR")]
    pub time_threshold: Option<String>,
    /// [websocket] mode: trigger (default) or push (one job_log message per event).
    #[arg(long, value_name = "trigger|push")]
    pub mode: Option<String>,
    /// [server] auth_token: require `Authorization: Bearer <token>`.
    #[arg(long, value_name = "T")]
    pub auth_token: Option<String>,
    /// [storage] max_events_per_job: a job keeps at most this many events (0 = no limit).
    #[arg(long, value_name = "N")]
    pub max_events_per_job: Option<String>,
    /// [storage] retention: finished managers older than this are deleted ("off" keeps all).
    #[arg(long, value_name = "DUR")]
    pub retention: Option<String>,
    /// [server] share_log_pages: serve one read of a logs page to every client asking for
    /// the same page while it is current (true, the default) or read it for each (false).
    #[arg(long, value_name = "true|false")]
    pub share_log_pages: Option<String>,
    /// If the data directory cannot be opened, move it aside (renamed with a timestamp)
    /// and start with an empty one. Nothing is deleted.
    #[arg(long)]
    pub recover: bool,
    /// Validate the configuration and the definitions directory, print what was found,
    /// and exit: 0 when everything is valid, 2 otherwise.
    #[arg(long)]
    pub check_config: bool,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) and exit.
    #[arg(long, value_name = "SHELL")]
    pub completions: Option<clap_complete::Shell>,
    /// Print the man page (roff) and exit.
    #[arg(long)]
    pub man: bool,
    /// Log filter for the daemon's own logs (e.g. info, debug, quaerod=trace); env QUAERO_LOG.
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Daemon log format: text or json.
    #[arg(long, value_name = "text|json", default_value = "text")]
    pub log_format: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsMode {
    Trigger,
    Push,
}

impl WsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trigger => "trigger",
            Self::Push => "push",
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub auth_token: Option<String>,
    pub storage_path: PathBuf,
    pub concurrency: usize,
    pub time_threshold: Duration,
    pub mode: WsMode,
    pub definitions_dir: PathBuf,
    pub max_events_per_job: u64,
    /// None = keep finished managers forever.
    pub retention: Option<Duration>,
    pub share_log_pages: bool,
    /// `--recover`: move an unreadable data directory aside and start empty.
    pub recover: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config::from_layers(&BTreeMap::new()).expect("defaults are valid")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value for {key} ({source_name}): {message}")]
    Invalid { key: String, source_name: String, message: String },
    #[error("cannot read config file {path}: {message}")]
    File { path: String, message: String },
    #[error("unknown key {key} in {path}")]
    UnknownKey { key: String, path: String },
}

/// Every key: (section.key, default).
const KEYS: &[(&str, &str)] = &[
    ("server.host", "127.0.0.1"),
    ("server.port", "8080"),
    ("server.auth_token", ""),
    ("storage.path", "./quaero-data"),
    ("queue.concurrency", "16"),
    ("websocket.time_threshold", "1s"),
    ("websocket.mode", "trigger"),
    ("jobs.definitions_dir", "./jobs"),
    ("storage.max_events_per_job", "100000"),
    ("storage.retention", "7d"),
    ("server.share_log_pages", "true"),
];

/// A raw value and where it came from, for error messages.
type Layers = BTreeMap<&'static str, (String, String)>;

impl Config {
    /// Builds the configuration from the file named by `cli.config`, the process
    /// environment and the flags.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        Self::load_with_env(cli, std::env::vars())
    }

    pub fn load_with_env(cli: &Cli, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut layers: Layers = BTreeMap::new();
        if let Some(path) = &cli.config {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::File { path: shown.clone(), message: e.to_string() })?;
            let table: toml::Table = text
                .parse()
                .map_err(|e: toml::de::Error| ConfigError::File { path: shown.clone(), message: e.to_string() })?;
            for (section, v) in table {
                let Some(inner) = v.as_table() else {
                    return Err(ConfigError::UnknownKey { key: section, path: shown });
                };
                for (k, v) in inner {
                    let full = format!("{section}.{k}");
                    let Some(&(key, _)) = KEYS.iter().find(|(name, _)| *name == full) else {
                        return Err(ConfigError::UnknownKey { key: full, path: shown });
                    };
                    let text = match v {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    layers.insert(key, (text, shown.clone()));
                }
            }
        }
        let env: BTreeMap<String, String> = env.into_iter().collect();
        for &(key, _) in KEYS {
            let var = format!("QUAERO_{}", key.replace('.', "_").to_uppercase());
            if let Some(v) = env.get(&var) {
                layers.insert(key, (v.clone(), var));
            }
        }
        let flags: [(&str, &Option<String>, &str); 11] = [
            ("server.host", &cli.host, "--host"),
            ("server.port", &cli.port, "--port"),
            ("storage.path", &cli.data, "--data"),
            ("jobs.definitions_dir", &cli.definitions, "--definitions"),
            ("queue.concurrency", &cli.concurrency, "--concurrency"),
            ("websocket.time_threshold", &cli.time_threshold, "--time-threshold"),
            ("websocket.mode", &cli.mode, "--mode"),
            ("server.auth_token", &cli.auth_token, "--auth-token"),
            ("storage.max_events_per_job", &cli.max_events_per_job, "--max-events-per-job"),
            ("storage.retention", &cli.retention, "--retention"),
            ("server.share_log_pages", &cli.share_log_pages, "--share-log-pages"),
        ];
        for (key, v, flag) in flags {
            if let Some(v) = v {
                let key = KEYS.iter().find(|(k, _)| *k == key).expect("known key").0;
                layers.insert(key, (v.clone(), flag.to_string()));
            }
        }
        let mut config = Self::from_layers(&layers)?;
        config.recover = cli.recover;
        Ok(config)
    }

    fn from_layers(layers: &Layers) -> Result<Config, ConfigError> {
        let get = |key: &'static str| -> (String, String) {
            layers.get(key).cloned().unwrap_or_else(|| {
                let d = KEYS.iter().find(|(k, _)| *k == key).expect("known key").1;
                (d.to_string(), "default".to_string())
            })
        };
        fn parse<T>(
            key: &str,
            (text, src): (String, String),
            f: impl FnOnce(&str) -> Result<T, String>,
        ) -> Result<T, ConfigError> {
            f(text.trim()).map_err(|message| ConfigError::Invalid { key: key.to_string(), source_name: src, message })
        }
        let host = parse("server.host", get("server.host"), |s| {
            if s == "localhost" {
                return Ok(IpAddr::from([127, 0, 0, 1]));
            }
            s.parse::<IpAddr>().map_err(|_| format!("{s:?} is not an IP address"))
        })?;
        let port = parse("server.port", get("server.port"), |s| {
            s.parse::<u16>().map_err(|_| format!("{s:?} is not a port number (0-65535)"))
        })?;
        let auth_token = parse("server.auth_token", get("server.auth_token"), |s| {
            if s.is_empty() {
                Ok(None)
            } else if s.len() < 8 {
                Err("a token must be at least 8 characters".to_string())
            } else {
                Ok(Some(s.to_string()))
            }
        })?;
        let storage_path = parse("storage.path", get("storage.path"), |s| {
            if s.is_empty() { Err("must not be empty".into()) } else { Ok(PathBuf::from(s)) }
        })?;
        let concurrency = parse("queue.concurrency", get("queue.concurrency"), |s| match s.parse::<usize>() {
            Ok(n) if (1..=4096).contains(&n) => Ok(n),
            _ => Err(format!("{s:?} is not a number of workers between 1 and 4096")),
        })?;
        let time_threshold = parse("websocket.time_threshold", get("websocket.time_threshold"), |s| {
            let d = humantime::parse_duration(s)
                .map_err(|e| format!("{s:?} is not a duration like \"250ms\" or \"1s\": {e}"))?;
            if d < Duration::from_millis(10) {
                return Err(format!("{s:?} is below the minimum of 10ms"));
            }
            if d > Duration::from_secs(3600) {
                return Err(format!("{s:?} is above the maximum of 1h"));
            }
            Ok(d)
        })?;
        let mode = parse("websocket.mode", get("websocket.mode"), |s| match s {
            "trigger" => Ok(WsMode::Trigger),
            "push" => Ok(WsMode::Push),
            _ => Err(format!("{s:?} is not \"trigger\" or \"push\"")),
        })?;
        let definitions_dir = parse("jobs.definitions_dir", get("jobs.definitions_dir"), |s| {
            if s.is_empty() { Err("must not be empty".into()) } else { Ok(PathBuf::from(s)) }
        })?;
        let max_events_per_job = parse("storage.max_events_per_job", get("storage.max_events_per_job"), |s| {
            s.parse::<u64>().map_err(|_| format!("{s:?} is not a number of events (0 = no limit)"))
        })?;
        let retention = parse("storage.retention", get("storage.retention"), |s| {
            if s == "off" {
                return Ok(None);
            }
            let d = humantime::parse_duration(s)
                .map_err(|e| format!("{s:?} is not a duration like \"7d\" or \"12h\" (or \"off\"): {e}"))?;
            if d < Duration::from_secs(1) {
                return Err(format!("{s:?} is below the minimum of 1s"));
            }
            Ok(Some(d))
        })?;
        let share_log_pages = parse("server.share_log_pages", get("server.share_log_pages"), |s| match s {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(format!("{s:?} is not true or false")),
        })?;
        Ok(Config {
            host,
            port,
            auth_token,
            storage_path,
            concurrency,
            time_threshold,
            mode,
            definitions_dir,
            max_events_per_job,
            retention,
            share_log_pages,
            recover: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("quaerod").chain(args.iter().copied())).unwrap();
        Config::load_with_env(&cli, env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_match_the_documented_contract() {
        let c = load(&[], &[]).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.host.to_string(), "127.0.0.1");
        assert_eq!(c.concurrency, 16);
        assert_eq!(c.time_threshold, Duration::from_secs(1));
        assert_eq!(c.mode, WsMode::Trigger);
        assert_eq!(c.storage_path, PathBuf::from("./quaero-data"));
        assert_eq!(c.definitions_dir, PathBuf::from("./jobs"));
        assert_eq!(c.max_events_per_job, 100_000);
        assert_eq!(c.retention, Some(Duration::from_secs(7 * 24 * 3600)));
        assert_eq!(load(&["--retention", "off"], &[]).unwrap().retention, None);
        assert!(c.share_log_pages);
        assert!(!load(&[], &[("QUAERO_SERVER_SHARE_LOG_PAGES", "false")]).unwrap().share_log_pages);
        let e = load(&["--share-log-pages", "no"], &[]).unwrap_err().to_string();
        assert!(e.contains("server.share_log_pages") && e.contains("--share-log-pages"), "{e}");
        let e = load(&[], &[("QUAERO_STORAGE_RETENTION", "forever")]).unwrap_err().to_string();
        assert!(e.contains("storage.retention") && e.contains("QUAERO_STORAGE_RETENTION"), "{e}");
        let e = load(&["--max-events-per-job=-1"], &[]).unwrap_err().to_string();
        assert!(e.contains("storage.max_events_per_job") && e.contains("--max-events-per-job"), "{e}");
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("q.toml");
        std::fs::write(&f, "[server]\nport = 9000\nhost = \"0.0.0.0\"\n[queue]\nconcurrency = 4\n").unwrap();
        let fs = f.to_str().unwrap();
        let c = load(&["--config", fs], &[]).unwrap();
        assert_eq!((c.port, c.concurrency), (9000, 4));
        let c = load(&["--config", fs], &[("QUAERO_SERVER_PORT", "9001")]).unwrap();
        assert_eq!(c.port, 9001);
        let c = load(&["--config", fs, "--port", "9002"], &[("QUAERO_SERVER_PORT", "9001")]).unwrap();
        assert_eq!(c.port, 9002);
        assert_eq!(c.host.to_string(), "0.0.0.0");
    }

    #[test]
    fn bad_values_name_their_key_and_source() {
        let e = load(&["--time-threshold", "5ms"], &[]).unwrap_err().to_string();
        assert!(e.contains("websocket.time_threshold") && e.contains("--time-threshold"), "{e}");
        let e = load(&[], &[("QUAERO_WEBSOCKET_TIME_THRESHOLD", "soon")]).unwrap_err().to_string();
        assert!(e.contains("websocket.time_threshold") && e.contains("QUAERO_WEBSOCKET_TIME_THRESHOLD"), "{e}");
        let e = load(&["--port", "http"], &[]).unwrap_err().to_string();
        assert!(e.contains("server.port"), "{e}");
        let e = load(&["--mode", "pull"], &[]).unwrap_err().to_string();
        assert!(e.contains("websocket.mode"), "{e}");
        let e = load(&["--concurrency", "0"], &[]).unwrap_err().to_string();
        assert!(e.contains("queue.concurrency"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("q.toml");
        std::fs::write(&f, "[server]\nprot = 1\n").unwrap();
        let e = load(&["--config", f.to_str().unwrap()], &[]).unwrap_err().to_string();
        assert!(e.contains("server.prot"), "{e}");
        assert_eq!(load(&["--time-threshold", "250ms"], &[]).unwrap().time_threshold, Duration::from_millis(250));
    }
}
