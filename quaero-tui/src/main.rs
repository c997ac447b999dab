//! `quaero-tui`: the interactive dashboard, or with `--job`/`--run` the scripted tail.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{ArgAction, CommandFactory, Parser, ValueEnum};
use quaero_shared::{DEFAULT_PORT, ExecuteRequest, Level, ParamValue};
use quaero_tui::client::Client;
use quaero_tui::tail::{self, Exit, TailOptions, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Debug, Parser)]
#[command(version, about = "Terminal dashboard and scripted tail for quaerod")]
struct Args {
    /// Base URL of the daemon.
    #[arg(long, env = "QUAERO_SERVER", default_value_t = format!("http://127.0.0.1:{DEFAULT_PORT}"))]
    server: String,
    /// Bearer token, when the daemon has `auth_token` set.
    #[arg(long, env = "QUAERO_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print a job's events (manager, step or child id) and follow until it is terminal.
    #[arg(long, value_name = "ID", conflicts_with = "run")]
    job: Option<String>,
    /// Execute a definition, print the new manager id to stderr, and tail it.
    #[arg(long, value_name = "DEFINITION")]
    run: Option<String>,
    /// With --run: a value for one of the definition's parameters (repeat for more).
    #[arg(long = "param", value_name = "NAME=VALUE", requires = "run", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// With --run: start the run after this long (e.g. 10m); the tail waits for it.
    #[arg(long, value_name = "DUR", requires = "run")]
    delay: Option<String>,
    /// Start from the last N events (max 5000) instead of the first.
    #[arg(long, value_name = "N")]
    tail: Option<u32>,
    /// Print what exists and exit 0.
    #[arg(long, action = ArgAction::SetTrue)]
    no_follow: bool,
    /// Only events at this level or above (debug, info, warn, error).
    #[arg(long, value_parser = parse_level)]
    level: Option<Level>,
    /// One event JSON object per line, in the API's event shape.
    #[arg(long)]
    json: bool,
    /// Prefix plain lines with HH:MM:SS.mmm.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    timestamps: OnOff,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) and exit.
    #[arg(long, value_name = "SHELL")]
    completions: Option<clap_complete::Shell>,
    /// Print the man page (roff) and exit.
    #[arg(long)]
    man: bool,
}

fn parse_level(s: &str) -> Result<Level, String> {
    s.parse()
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(shell) = args.completions {
        clap_complete::generate(shell, &mut Args::command(), "quaero-tui", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    if args.man {
        if let Err(e) = clap_mangen::Man::new(Args::command()).render(&mut std::io::stdout()) {
            eprintln!("quaero-tui: {e}");
            return ExitCode::FAILURE;
        }
        return ExitCode::SUCCESS;
    }
    let tail_only = args.tail.is_some() || args.no_follow || args.level.is_some() || args.json;
    let target = match (args.job.clone(), args.run.clone()) {
        (Some(id), _) => Some(Target::Job(id)),
        (None, Some(def)) => Some(Target::Run(def)),
        (None, None) if tail_only => {
            eprintln!("quaero-tui: --tail, --no-follow, --level and --json need --job or --run");
            return ExitCode::from(Exit::Usage as u8);
        }
        (None, None) => None,
    };
    let client = match Client::new(&args.server, args.token.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("quaero-tui: {e}");
            return ExitCode::from(Exit::Usage as u8);
        }
    };
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("quaero-tui: {e}");
            return ExitCode::FAILURE;
        }
    };
    match target {
        Some(target) => {
            let execute = ExecuteRequest {
                params: args.params.iter().map(|(k, v)| (k.clone(), ParamValue::Text(v.clone()))).collect(),
                delay: args.delay.clone(),
                run_at: None,
            };
            let opts = TailOptions {
                target,
                execute,
                tail: args.tail,
                follow: !args.no_follow,
                level: args.level,
                json: args.json,
                timestamps: args.timestamps == OnOff::On,
                color: !no_color && std::io::stdout().is_terminal(),
            };
            let stdout = std::io::stdout().lock();
            let exit = rt.block_on(tail::run(client, opts, std::io::BufWriter::new(stdout)));
            ExitCode::from(exit as u8)
        }
        None => match rt.block_on(quaero_tui::term::run(client, !no_color)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("quaero-tui: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
