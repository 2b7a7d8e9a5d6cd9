//! Policy hot reload: on SIGHUP and when the file's content changes (polled once a second, so it
//! works on every filesystem and through config-map symlink swaps). The new policy is compiled
//! aside and swapped in atomically; an invalid one is rejected and the old one keeps serving.

use std::sync::Arc;
use std::time::Duration;

use cordon_policy::Overrides;

use crate::metrics::ResultLabels;
use crate::runtime::{self, PolicySource};
use crate::state::AppState;

/// Reloads run one at a time: each reads the file and swaps under this lock, so a SIGHUP and a
/// file-change reload racing each other cannot end with the slower one's older read swapped in
/// last (the watcher, whose fingerprint already matches the new file, would never fix that).
static RELOADING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Try to reload now. Returns the new policy version, or why the old one stays.
pub async fn reload(
    state: &AppState,
    source: &PolicySource,
    overrides: &Overrides,
) -> Result<String, String> {
    let _one_at_a_time = RELOADING.lock().await;
    let result = match runtime::load(source, &state.data_dir, overrides) {
        Ok(rt) => state.audit.open_configured(&rt.policy).await.map(|()| rt),
        Err(e) => Err(e),
    };
    match result {
        Ok(mut rt) => {
            // Keep the identity provider's last good keys across the reload, and load new ones
            // before the swap, not on the first request.
            let previous = state.runtime.load_full();
            rt.verifier.inherit_keys(&previous.verifier);
            rt.verifier.prefetch().await;
            runtime::inherit_health(&rt, &previous);
            let version = rt.policy.version.clone();
            for w in &rt.policy.warnings {
                tracing::warn!("{w}");
            }
            state.runtime.store(Arc::new(rt));
            state
                .metrics
                .reloads
                .get_or_create(&ResultLabels { result: "ok".into() })
                .inc();
            tracing::info!(policy_version = %version, "policy reloaded");
            Ok(version)
        }
        Err(e) => {
            state
                .metrics
                .reloads
                .get_or_create(&ResultLabels {
                    result: "rejected".into(),
                })
                .inc();
            tracing::error!(source = %source.describe(), "policy reload rejected, the previous policy keeps serving: {e}");
            Err(e)
        }
    }
}

fn fingerprint(source: &PolicySource) -> Option<Vec<u8>> {
    match source {
        PolicySource::Quickstart => None,
        PolicySource::File(p) => std::fs::read(p).ok().map(|b| {
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &b)
                .as_ref()
                .to_vec()
        }),
    }
}

/// Spawn the SIGHUP handler and the file watcher.
pub fn spawn_watchers(state: Arc<AppState>, source: PolicySource, overrides: Overrides) {
    #[cfg(unix)]
    {
        let (state, source, overrides) = (state.clone(), source.clone(), overrides.clone());
        tokio::spawn(async move {
            let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
                tracing::warn!("cannot install the SIGHUP handler; reload on file change only");
                return;
            };
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading policy");
                let _ = reload(&state, &source, &overrides).await;
            }
        });
    }
    if matches!(source, PolicySource::File(_)) {
        tokio::spawn(async move {
            let mut last = fingerprint(&source);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let now = fingerprint(&source);
                if now.is_some() && now != last {
                    last = now;
                    tracing::info!("policy file changed: reloading");
                    let _ = reload(&state, &source, &overrides).await;
                }
            }
        });
    }
}
