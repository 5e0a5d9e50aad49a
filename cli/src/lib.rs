//! What the binaries share.

/// Logs to stderr: debug lines with `--debug`, else the level in
/// `HERMETIC_LOG` (default `warn`).
pub fn init_logging(debug: bool) {
    let filter = if debug {
        "debug".to_owned()
    } else {
        std::env::var("HERMETIC_LOG").unwrap_or_else(|_| "warn".to_owned())
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .without_time()
        .init();
}
