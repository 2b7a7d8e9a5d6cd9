//! Starting the gateway: load the policy, open keys and audit stores, bind, serve until SIGINT or
//! SIGTERM. Prints one `cordon listening on http://ADDR` line to stdout once it accepts requests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use cordon_audit::{Keystore, Pseudonymizer, load_or_create_master_key};
use cordon_policy::Overrides;

use crate::audit_set::AuditSet;
use crate::metrics::Metrics;
use crate::runtime::{self, PolicySource};
use crate::state::AppState;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub source: PolicySource,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub overrides: Overrides,
    /// 32-byte master key wrapping the per-subject payload keys; `None`: `<data dir>/keys/master.key`
    /// (created on first start: development only).
    pub master_key: Option<[u8; 32]>,
}

pub struct Server {
    pub state: Arc<AppState>,
    pub local_addr: SocketAddr,
    listener: tokio::net::TcpListener,
    config: ServeConfig,
}

impl Server {
    /// Load everything and bind; errors are messages for the operator.
    pub async fn bind(config: ServeConfig) -> Result<Server, String> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| format!("cannot create data dir {}: {e}", config.data_dir.display()))?;
        let rt = runtime::load(&config.source, &config.data_dir, &config.overrides)?;
        let keys = config.data_dir.join("keys");
        let pseudonyms = Pseudonymizer::open(&keys).map_err(|e| format!("pseudonym keys: {e}"))?;
        let master = match config.master_key {
            Some(k) => k,
            None => {
                load_or_create_master_key(&keys.join("master.key")).map_err(|e| format!("master key: {e}"))?
            }
        };
        let keystore = Arc::new(Keystore::open(&keys, master).map_err(|e| format!("keystore: {e}"))?);
        let audit = AuditSet::new(&config.data_dir);
        audit.open_configured(&rt.policy).await?;
        for w in rt.policy.warnings.iter() {
            tracing::warn!("{w}");
        }
        rt.verifier.prefetch().await;
        tracing::info!(policy = %config.source.describe(), policy_version = %rt.policy.version, "policy loaded");
        let state = Arc::new(AppState {
            runtime: ArcSwap::from_pointee(rt),
            audit,
            pseudonyms,
            keystore,
            metrics: Metrics::new(),
            data_dir: config.data_dir.clone(),
        });
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        let local_addr = listener.local_addr().map_err(|e| e.to_string())?;
        Ok(Server {
            state,
            local_addr,
            listener,
            config,
        })
    }

    /// Serve until SIGINT/SIGTERM.
    pub async fn run(self) -> Result<(), String> {
        crate::reload::spawn_watchers(
            self.state.clone(),
            self.config.source.clone(),
            self.config.overrides.clone(),
        );
        let app = crate::routes::router(self.state.clone());
        let stop = shutdown_signal();
        println!("cordon listening on http://{}", self.local_addr);
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(stop)
            .await
            .map_err(|e| format!("server error: {e}"));
        // Before the runtime stops: the PostgreSQL chains' last records get a checkpoint.
        self.state.audit.shutdown(std::time::Duration::from_secs(5)).await;
        served
    }
}

/// SIGINT or SIGTERM. The handlers are installed here, before the caller says it is listening:
/// a signal that arrives before they are would take the default action (the process dies without
/// its shutdown path, and the audit stores' close markers are never written).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (mut term, mut int) = signals;
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! { _ = wait(term.take()) => {}, _ = wait(int.take()) => {} }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down");
    }
}
