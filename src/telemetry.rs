//! Logging: `tracing` to stdout, text or JSON (`TALLY_LOG_FORMAT`), filtered by `RUST_LOG`.
//! Every line inside a request carries the request's span, and so its `request_id`.
//! Colour codes only when stdout is a terminal (and `NO_COLOR` is unset or empty): a log
//! piped to a file or a collector is plain text. JSON never has them.

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = fmt().with_env_filter(filter).with_target(false).with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
