//! `cordon serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use cordon_gateway::runtime::PolicySource;
use cordon_gateway::{ServeConfig, Server};
use cordon_policy::Overrides;

use crate::DataDir;

#[derive(clap::Args)]
pub struct Args {
    /// Policy file (default: the built-in quickstart policy).
    #[arg(long, env = "CORDON_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataDir,
    /// Address to listen on.
    #[arg(long, env = "CORDON_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Threads serving requests (default: the CPUs this process may run on). `1` serves every
    /// request on one event loop: no hand-offs between threads (the fastest on one CPU), but a
    /// store's first open, or its reopen after a failure (crash recovery: seconds on a large
    /// store), then pauses every request; the multi-threaded default moves that off its workers.
    #[arg(long, env = "CORDON_WORKERS", value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,
}

/// The async runtime for `workers` request threads (None: one per CPU this process may run on,
/// multi-threaded even when that is one). An explicit 1 gets a single-threaded runtime: a
/// multi-threaded one with one worker still parks and wakes it across threads (measured in
/// `docs/PERFORMANCE.md`, "Third pass": +9% req/s and fewer context switches on one pinned
/// core), at the cost described on [`Args::workers`].
fn runtime(workers: Option<u16>) -> Result<tokio::runtime::Runtime> {
    let mut builder = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(usize::from(n));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build().context("starting the runtime")
}

/// `CORDON_GATEWAY_REGION` overrides `gateway.region`.
pub fn overrides() -> Result<Overrides> {
    let gateway_region = match std::env::var("CORDON_GATEWAY_REGION") {
        Ok(v) if !v.trim().is_empty() => Some(
            v.trim()
                .parse()
                .map_err(|e| anyhow!("CORDON_GATEWAY_REGION: {e}"))?,
        ),
        _ => None,
    };
    Ok(Overrides { gateway_region })
}

/// `CORDON_MASTER_KEY` (64 hex chars) wraps the per-subject payload keys.
pub fn master_key() -> Result<Option<[u8; 32]>> {
    let Ok(v) = std::env::var("CORDON_MASTER_KEY") else {
        return Ok(None);
    };
    let bytes = hex::decode(v.trim()).map_err(|_| anyhow!("CORDON_MASTER_KEY must be 64 hex characters"))?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow!("CORDON_MASTER_KEY must be 32 bytes (64 hex characters)"))?;
    Ok(Some(key))
}

pub fn run(a: Args) -> Result<ExitCode> {
    let source = match &a.config {
        Some(p) => PolicySource::File(p.clone()),
        None => {
            crate::dev::ensure_dev_key(&a.data.data_dir)?;
            eprintln!(
                "quickstart: built-in policy, echo provider, data in {}; mint a token with `cordon token --country DE`",
                a.data.data_dir.display()
            );
            PolicySource::Quickstart
        }
    };
    let config = ServeConfig {
        source,
        data_dir: a.data.data_dir.clone(),
        listen: a.listen,
        overrides: overrides()?,
        master_key: master_key()?,
    };
    let rt = runtime(a.workers)?;
    rt.block_on(async {
        let server = Server::bind(config).await.map_err(|e| anyhow!(e))?;
        server.run().await.map_err(|e| anyhow!(e))
    })?;
    Ok(ExitCode::SUCCESS)
}
