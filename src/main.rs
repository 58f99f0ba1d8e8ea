//! `ringlog`: clap → Config → start; nothing else.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: ringlog::alloc_guard::GuardedAllocator = ringlog::alloc_guard::GuardedAllocator;

#[derive(Parser)]
#[command(
    name = "ringlog",
    version,
    about = "A Kafka-wire-protocol broker, thread-per-core on io_uring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker.
    Serve {
        /// A Kafka-style server.properties file.
        file: Option<PathBuf>,
        /// Set a property, overriding the file (as kafka-server-start.sh --override).
        #[arg(long = "override", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Print every setting with its default and exit.
        #[arg(long)]
        help_settings: bool,
    },
    /// Report what on this host differs from tuning/README.md (changes nothing).
    Tune {
        /// Required: checking is all this command does.
        #[arg(long)]
        check: bool,
        /// The log directory whose device is checked.
        #[arg(long, default_value = "/var/lib/ringlog")]
        log_dir: PathBuf,
    },
    /// The load generator: Kafka-protocol workloads against any endpoint (JSON out).
    #[command(subcommand)]
    Perf(ringlog::perf::PerfCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Tune { check, log_dir } => {
            if !check {
                eprintln!(
                    "ringlog tune: only --check exists; tuning/README.md applies the settings"
                );
                return ExitCode::from(2);
            }
            let dir = if log_dir.exists() {
                log_dir
            } else {
                PathBuf::from(".")
            };
            if ringlog::tune::print(&ringlog::tune::checks(&dir)) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Perf(command) => match ringlog::perf::run(command) {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ringlog perf: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve {
            help_settings: true,
            ..
        } => {
            println!("| setting | default | meaning |\n|---|---|---|");
            for s in ringlog::config::SETTINGS {
                let name = if s.aliases.is_empty() {
                    format!("`{}`", s.name)
                } else {
                    format!("`{}` (alias `{}`)", s.name, s.aliases.join("`, `"))
                };
                println!("| {name} | `{}` | {} |", s.default, s.doc);
            }
            ExitCode::SUCCESS
        }
        Command::Serve {
            file, overrides, ..
        } => {
            let cpus = ringlog::runtime::available_cpus();
            let (config, warnings) =
                match ringlog::config::Config::load(file.as_deref(), &overrides, &cpus) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("ringlog: configuration error: {e}");
                        return ExitCode::from(2);
                    }
                };
            for w in warnings {
                tracing::warn!("{w}");
            }
            match ringlog::runtime::serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("ringlog: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
