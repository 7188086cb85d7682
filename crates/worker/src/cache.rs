//! The package cache while a worker runs: it keeps its own package's folder
//! marked as used (a lease renewed several times per `PAR_PACKAGE_KEEP_UNUSED`)
//! and sweeps the folders no worker has used for that long, which are the
//! packages of versions rolled away from, removed agents and earlier runs.
//! Every worker sharing the cache renews its own lease, so none removes a
//! package another one runs.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

/// The lease is renewed this many times within the keep time.
const RENEWALS: u32 = 4;

/// Renews the lease on `root` (this worker's package folder under
/// `home/packages`) and sweeps the cache, at once and then periodically,
/// until the runtime ends.
pub fn keep_and_sweep(home: PathBuf, root: PathBuf, sha256: String, keep_unused: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(keep_unused / RENEWALS);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let keep: HashSet<String> = [sha256].into_iter().collect();
        loop {
            tick.tick().await;
            let (home, root, keep) = (home.clone(), root.clone(), keep.clone());
            let report = tokio::task::spawn_blocking(move || {
                par_package::mark_used(&root);
                par_package::sweep_packages(&home, &keep, keep_unused)
            })
            .await;
            let Ok(report) = report else { continue };
            if !report.removed.is_empty() || report.leftovers_removed > 0 {
                tracing::info!(
                    removed = ?report.removed,
                    leftovers = report.leftovers_removed,
                    freed_bytes = report.freed_bytes,
                    "package cache swept"
                );
            }
            for e in &report.errors {
                tracing::warn!("package cache sweep: {e}");
            }
        }
    });
}
