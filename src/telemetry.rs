//! Logging: a `tracing` subscriber filtered by `RUST_LOG` (default `info,kube=warn`), as text or
//! JSON lines. All output goes to stderr so that commands with machine output (`crd`,
//! `store --json`) keep stdout clean.

use clap::{Args, ValueEnum};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// The default filter when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,kube=warn,hyper=warn,reqwest=warn";

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// Global logging flags.
#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "AUTOPILOT_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// Installs the global subscriber. Fails if `RUST_LOG` does not parse.
pub fn init(args: &LogArgs) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.is_empty() => EnvFilter::try_new(s)?,
        _ => EnvFilter::new(DEFAULT_FILTER),
    };
    let registry = tracing_subscriber::registry().with(filter);
    match args.log_format {
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr).with_target(false))
            .try_init()?,
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init()?,
    }
    Ok(())
}
