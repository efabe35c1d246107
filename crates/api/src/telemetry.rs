//! Logs: readable lines in development, JSON lines in production.

use tracing_subscriber::EnvFilter;

use crate::config::{Env, LogFormat, Settings};

/// Installs the global subscriber; `RUST_LOG` overrides the configured filter.
pub fn init(settings: &Settings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.log.filter));
    let json = match settings.log.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => settings.env == Env::Production,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
}
