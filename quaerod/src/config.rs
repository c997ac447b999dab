//! Configuration: embedded defaults < `quaero.toml` < `QUAERO_<SECTION>_<KEY>` environment
//! variables < command-line flags. Every layer is collected as text per key and parsed
//! once, so a bad value is reported with its key and where it came from, whichever layer
//! it came from. Nothing falls back silently.
//!
//! Each key is declared once, in the [`keys!`] list below: its field, its `section.key`
//! name, its flag, its default and the function that parses it. The file keys, the
//! environment variables, the flags (with their help) and the [`Config`] struct all come
//! from that list.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command, Parser};

/// Declares every configuration key once; see the module doc.
macro_rules! keys {
    ($(
        $(#[doc = $doc:literal])+
        $field:ident: $ty:ty = $key:literal, flag $flag:literal $vn:literal, default $default:literal, $parse:expr;
    )+) => {
        /// The validated configuration.
        #[derive(Debug, Clone)]
        pub struct Config {
            $( $(#[doc = $doc])+ pub $field: $ty, )+
            /// `--recover`: move an unreadable data directory aside and start empty.
            pub recover: bool,
            /// `[queues.<name>] concurrency = N` (file only): named queues beside `default`.
            pub queues: BTreeMap<String, usize>,
        }

        /// Every key, as the layers and the flags know it.
        const KEYS: &[Key] = &[
            $( Key { name: $key, flag: $flag, value_name: $vn, default: $default, help: concat!($($doc, "\n"),+) }, )+
        ];

        impl Config {
            fn from_layers(layers: &Layers) -> Result<Config, ConfigError> {
                Ok(Config { $( $field: layers.parse($key, $parse)?, )+ recover: false, queues: BTreeMap::new() })
            }
        }
    };
}

keys! {
    /// Address to bind.
    host: IpAddr = "server.host", flag "host" "ADDR", default "127.0.0.1", parse_host;
    /// 0 picks a free port (the start line prints it).
    port: u16 = "server.port", flag "port" "PORT", default "8080", parse_port;
    /// Require `Authorization: Bearer <token>` (at least 8 characters; empty: no token).
    auth_token: Option<String> = "server.auth_token", flag "auth-token" "T", default "", parse_token;
    /// The data directory.
    storage_path: PathBuf = "storage.path", flag "data" "DIR", default "./quaero-data", parse_path;
    /// Worker pool size.
    concurrency: usize = "queue.concurrency", flag "concurrency" "N", default "16", parse_concurrency;
    /// At most one refresh trigger per client per this long (10ms to 1h).
    time_threshold: Duration = "websocket.time_threshold", flag "time-threshold" "DUR", default "1s", parse_threshold;
    /// trigger (the default) or push (one job_log message per event).
    mode: WsMode = "websocket.mode", flag "mode" "trigger|push", default "trigger", parse_mode;
    /// TOML job definitions loaded at start.
    definitions_dir: PathBuf = "jobs.definitions_dir", flag "definitions" "DIR", default "./jobs", parse_path;
    /// A job keeps at most this many events (0 = no limit).
    max_events_per_job: u64 = "storage.max_events_per_job", flag "max-events-per-job" "N", default "100000", parse_max_events;
    /// Finished managers older than this are deleted ("off" keeps all).
    retention: Option<Duration> = "storage.retention", flag "retention" "DUR", default "7d", parse_retention;
    /// Serve one read of a logs page to every client asking for the same page while it is
    /// current (true) or read it for each (false).
    share_log_pages: bool = "server.share_log_pages", flag "share-log-pages" "true|false", default "true", parse_bool;
}

fn parse_host(s: &str) -> Result<IpAddr, String> {
    if s == "localhost" {
        return Ok(IpAddr::from([127, 0, 0, 1]));
    }
    s.parse::<IpAddr>().map_err(|_| format!("{s:?} is not an IP address"))
}

fn parse_port(s: &str) -> Result<u16, String> {
    s.parse::<u16>().map_err(|_| format!("{s:?} is not a port number (0-65535)"))
}

fn parse_token(s: &str) -> Result<Option<String>, String> {
    match s.len() {
        0 => Ok(None),
        1..8 => Err("a token must be at least 8 characters".to_string()),
        _ => Ok(Some(s.to_string())),
    }
}

fn parse_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() { Err("must not be empty".into()) } else { Ok(PathBuf::from(s)) }
}

fn parse_concurrency(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=4096).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a number of workers between 1 and 4096")),
    }
}

fn parse_threshold(s: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like \"250ms\" or \"1s\": {e}"))?;
    if d < Duration::from_millis(10) {
        return Err(format!("{s:?} is below the minimum of 10ms"));
    }
    if d > Duration::from_secs(3600) {
        return Err(format!("{s:?} is above the maximum of 1h"));
    }
    Ok(d)
}

fn parse_mode(s: &str) -> Result<WsMode, String> {
    match s {
        "trigger" => Ok(WsMode::Trigger),
        "push" => Ok(WsMode::Push),
        _ => Err(format!("{s:?} is not \"trigger\" or \"push\"")),
    }
}

fn parse_max_events(s: &str) -> Result<u64, String> {
    s.parse::<u64>().map_err(|_| format!("{s:?} is not a number of events (0 = no limit)"))
}

fn parse_retention(s: &str) -> Result<Option<Duration>, String> {
    if s == "off" {
        return Ok(None);
    }
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like \"7d\" or \"12h\" (or \"off\"): {e}"))?;
    if d < Duration::from_secs(1) {
        return Err(format!("{s:?} is below the minimum of 1s"));
    }
    Ok(Some(d))
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{s:?} is not true or false")),
    }
}

/// One configuration key.
struct Key {
    /// `section.key`, as in the file; the environment variable is `QUAERO_SECTION_KEY`.
    name: &'static str,
    /// The flag, without its `--`.
    flag: &'static str,
    value_name: &'static str,
    default: &'static str,
    help: &'static str,
}

impl Key {
    fn env_var(&self) -> String {
        format!("QUAERO_{}", self.name.replace('.', "_").to_uppercase())
    }

    fn find(name: &str) -> Option<&'static Key> {
        KEYS.iter().find(|k| k.name == name)
    }
}

/// Command-line flags. Each key's flag overrides the same key from the file and the
/// environment.
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
    #[command(flatten)]
    pub keys: KeyFlags,
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

/// The flags of the configuration keys, made from [`KEYS`]: key name → value given.
#[derive(Debug, Clone, Default)]
pub struct KeyFlags(BTreeMap<&'static str, String>);

impl clap::FromArgMatches for KeyFlags {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(KeyFlags(KEYS.iter().filter_map(|k| Some((k.name, m.get_one::<String>(k.flag)?.clone()))).collect()))
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for KeyFlags {
    fn augment_args(cmd: Command) -> Command {
        KEYS.iter().fold(cmd, |cmd, k| {
            let (section, key) = k.name.split_once('.').expect("section.key");
            let text: Vec<&str> = k.help.lines().map(str::trim).collect();
            let help = format!("[{section}] {key}: {} (default {:?}; env {})", text.join(" "), k.default, k.env_var());
            cmd.arg(Arg::new(k.flag).long(k.flag).value_name(k.value_name).help(help).action(ArgAction::Set))
        })
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
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

impl Default for Config {
    fn default() -> Self {
        Config::from_layers(&Layers::default()).expect("defaults are valid")
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

/// Each key's raw value and where it came from (a file, a variable, a flag), for errors.
#[derive(Debug, Default)]
struct Layers(BTreeMap<&'static str, (String, String)>);

impl Layers {
    fn set(&mut self, key: &'static str, value: String, source: String) {
        self.0.insert(key, (value, source));
    }

    /// Parses a key's value from the highest layer that has it, or its default.
    fn parse<T>(&self, name: &str, f: impl FnOnce(&str) -> Result<T, String>) -> Result<T, ConfigError> {
        let key = Key::find(name).expect("declared key");
        let (text, source) = match self.0.get(key.name) {
            Some((v, src)) => (v.as_str(), src.as_str()),
            None => (key.default, "default"),
        };
        f(text.trim()).map_err(|message| ConfigError::Invalid {
            key: key.name.to_string(),
            source_name: source.to_string(),
            message,
        })
    }
}

impl Config {
    /// Builds the configuration from the file named by `cli.config`, the process
    /// environment and the flags.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        Self::load_with_env(cli, std::env::vars())
    }

    pub fn load_with_env(cli: &Cli, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut layers = Layers::default();
        let mut queues = BTreeMap::new();
        if let Some(path) = &cli.config {
            queues = file_layer(path, &mut layers)?;
        }
        let env: BTreeMap<String, String> = env.into_iter().collect();
        for k in KEYS {
            let var = k.env_var();
            if let Some(v) = env.get(&var) {
                layers.set(k.name, v.clone(), var);
            }
        }
        for (&name, v) in &cli.keys.0 {
            let key = Key::find(name).expect("declared key");
            layers.set(key.name, v.clone(), format!("--{}", key.flag));
        }
        let mut config = Self::from_layers(&layers)?;
        config.recover = cli.recover;
        config.queues = queues;
        Ok(config)
    }
}

/// The file's keys as text; a key that is not declared is an error naming it. Returns the
/// named queues (`[queues.<name>] concurrency = N`), which only the file declares.
fn file_layer(path: &std::path::Path, layers: &mut Layers) -> Result<BTreeMap<String, usize>, ConfigError> {
    let mut queues = BTreeMap::new();
    let shown = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError::File { path: shown.clone(), message: e.to_string() })?;
    let table: toml::Table =
        text.parse().map_err(|e: toml::de::Error| ConfigError::File { path: shown.clone(), message: e.to_string() })?;
    for (section, v) in table {
        let Some(inner) = v.as_table() else {
            return Err(ConfigError::UnknownKey { key: section, path: shown });
        };
        if section == "queues" {
            for (name, q) in inner {
                let (n, c) = parse_queue(name, q).map_err(|(key, message)| ConfigError::Invalid {
                    key,
                    source_name: shown.clone(),
                    message,
                })?;
                queues.insert(n, c);
            }
            continue;
        }
        for (k, v) in inner {
            let full = format!("{section}.{k}");
            let Some(key) = Key::find(&full) else {
                return Err(ConfigError::UnknownKey { key: full, path: shown });
            };
            let text = match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            layers.set(key.name, text, shown.clone());
        }
    }
    Ok(queues)
}

/// `[queues.<name>]`: its name and concurrency, or (the key at fault, why).
fn parse_queue(name: &str, v: &toml::Value) -> Result<(String, usize), (String, String)> {
    let at = format!("queues.{name}");
    if name.is_empty()
        || name.len() > 64
        || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err((at, format!("{name:?}: a queue name is 1 to 64 of a-z, 0-9, _ and -")));
    }
    if name == "default" {
        return Err((at, "the default queue is sized by [queue] concurrency".into()));
    }
    let table =
        v.as_table().ok_or_else(|| (at.clone(), "must be a table: [queues.NAME] concurrency = N".to_string()))?;
    if let Some(k) = table.keys().find(|k| *k != "concurrency") {
        return Err((format!("{at}.{k}"), "unknown key (a queue has concurrency only)".into()));
    }
    let c = table.get("concurrency").ok_or_else(|| (format!("{at}.concurrency"), "missing".to_string()))?;
    let text = match c {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    parse_concurrency(text.trim()).map(|n| (name.to_string(), n)).map_err(|m| (format!("{at}.concurrency"), m))
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

    /// Each key is declared once: its file key, variable and flag all reach it, and a bad
    /// value from each names the key and the layer.
    #[test]
    fn every_key_is_reachable_from_every_layer() {
        let dir = tempfile::tempdir().unwrap();
        for k in KEYS {
            let (section, key) = k.name.split_once('.').unwrap();
            let flag = format!("--{}", k.flag);
            // A value this key refuses (free text keys refuse only some).
            let bad = ["no such value!", "", "short"]
                .into_iter()
                .find(|v| load(&[&flag, v], &[]).is_err())
                .unwrap_or_else(|| panic!("{} accepts anything", k.name));
            let f = dir.path().join(format!("{section}-{key}.toml"));
            std::fs::write(&f, format!("[{section}]\n{key} = {bad:?}\n")).unwrap();
            let e = load(&["--config", f.to_str().unwrap()], &[]).unwrap_err().to_string();
            assert!(e.contains(k.name) && e.contains(f.to_str().unwrap()), "{e}");
            let e = load(&[], &[(&k.env_var(), bad)]).unwrap_err().to_string();
            assert!(e.contains(k.name) && e.contains(&k.env_var()), "{e}");
            let e = load(&[&flag, bad], &[]).unwrap_err().to_string();
            assert!(e.contains(k.name) && e.contains(&flag), "{e}");
            // The default parses, from every layer too.
            load(&[&flag, k.default], &[]).unwrap_or_else(|e| panic!("{flag} {:?}: {e}", k.default));
        }
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
