//! The one tracing setup of borgmaster, borgscheduler and borglet: `--log-format
//! text|json` on stderr, filtered by `RUST_LOG` (default `info`).

/// How log lines are written on stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colours only on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields`
    /// (the event's, with `message`), `span` (the innermost) and `spans` (all
    /// enclosing spans, outermost first, each with its fields).
    Json,
}

/// The `--log-format` flag, to `#[command(flatten)]` into a component's Config.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct LogArgs {
    /// Format of the log lines on stderr: `text` or `json` (one object per line).
    #[arg(long, env = "BORG_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,
}

/// Install the process's tracing subscriber. Does nothing when one is already
/// installed (a test, or an embedding process, keeps its own).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}
