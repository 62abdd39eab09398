//! `switchboard`: parses the command line, sets up logging, runs.

use clap::Parser;
use switchboard::cli::{Cli, run};
use tracing_subscriber::EnvFilter;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // One TLS stack for the whole process: rustls on ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let filter =
        EnvFilter::try_from_env("SWITCHBOARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // Before anything opens a database, and before any thread starts.
    #[cfg(feature = "jemalloc")]
    if let Err(e) = switchboard_walvfs::alloc::route_sqlite_to_jemalloc() {
        tracing::warn!(error = %e, "SQLite keeps the C library's allocator");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cli))
}
