//! Logging: a `tracing` subscriber filtered by `RUST_LOG` (default `info,kube=warn`), as text or
//! JSON lines. All output goes to stderr so that commands with machine output (`crd`,
//! `store --json`) keep stdout clean. Text is coloured only when stderr is a terminal (and
//! `NO_COLOR` is unset), so `kubectl logs` and log files get plain text.

use std::io::IsTerminal;

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

/// The default filter of commands whose stdout is the product (the demo's tables): only
/// problems are logged unless `RUST_LOG` asks for more.
pub const QUIET_FILTER: &str = "warn";

/// Whether text logs get ANSI colours: only on a terminal, and never when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>).
pub fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber with `default_filter` unless `RUST_LOG` is set. Fails if
/// `RUST_LOG` does not parse.
pub fn init(args: &LogArgs, default_filter: &str) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.is_empty() => EnvFilter::try_new(s)?,
        _ => EnvFilter::new(default_filter),
    };
    let registry = tracing_subscriber::registry().with(filter);
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    match args.log_format {
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false)
                    .with_ansi(ansi),
            )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".as_ref())), "an empty NO_COLOR is unset");
        assert!(
            !colour(false, None),
            "a pipe or file (kubectl logs) gets plain text"
        );
        assert!(!colour(true, Some("1".as_ref())));
    }
}
