//! The download cache `$PAR_HOME/downloads/<sha256>.apkg` kept to what agents
//! use: periodically, the files that are neither an agent's current, previous
//! or rolling-to package nor fetched within `PAR_PACKAGE_KEEP_UNUSED` are
//! removed (a cache hit marks its file used). Temp files of downloads in
//! progress are never touched.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::control::Control;

/// The shas the agents run, ran last, or are rolling to.
fn in_use(control: &Control) -> HashSet<String> {
    let mut keep = HashSet::new();
    for p in control.processes().iter() {
        let records = [&p.current_package, &p.previous_package];
        keep.extend(
            records
                .into_iter()
                .flatten()
                .filter_map(|r| r.sha256.clone()),
        );
        keep.extend(p.sha256.clone());
        keep.extend(p.rollout.as_ref().and_then(|r| r.to_sha256.clone()));
    }
    keep
}

/// Removes `<sha256>.apkg` files not in `keep` and not used within
/// `older_than`; answers the names removed and the bytes freed.
pub fn sweep(dir: &Path, keep: &HashSet<String>, older_than: Duration) -> (Vec<String>, u64) {
    let (mut removed, mut freed) = (Vec::new(), 0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (removed, freed);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(sha) = name.strip_suffix(".apkg") else {
            continue;
        };
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) || keep.contains(sha) {
            continue;
        }
        let Ok(meta) = e.metadata() else { continue };
        let unused = meta
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= older_than);
        if meta.is_file() && unused && std::fs::remove_file(e.path()).is_ok() {
            removed.push(sha.to_string());
            freed += meta.len();
        }
    }
    (removed, freed)
}

/// Sweeps `dir` every quarter of `keep_unused`, for as long as the runtime runs.
pub fn spawn(control: Control, dir: PathBuf, keep_unused: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(keep_unused / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let keep = in_use(&control);
            let dir = dir.clone();
            let swept = tokio::task::spawn_blocking(move || sweep(&dir, &keep, keep_unused)).await;
            if let Ok((removed, freed_bytes)) = swept {
                if !removed.is_empty() {
                    tracing::info!(?removed, freed_bytes, "download cache swept");
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unkept_unused_downloads_go() {
        let dir = tempfile::tempdir().unwrap();
        let name = |c: char| format!("{}.apkg", c.to_string().repeat(64));
        for c in ['a', 'b', 'c'] {
            std::fs::write(dir.path().join(name(c)), b"zip").unwrap();
        }
        std::fs::write(dir.path().join(".tmp-download"), b"partial").unwrap();
        std::fs::write(dir.path().join("notes.apkg"), b"x").unwrap();
        let keep: HashSet<String> = ["a".repeat(64)].into_iter().collect();
        // Used within the last hour: nothing goes.
        assert_eq!(
            sweep(dir.path(), &keep, Duration::from_secs(3600)).0.len(),
            0
        );
        let (mut removed, freed) = sweep(dir.path(), &keep, Duration::ZERO);
        removed.sort();
        assert_eq!(removed, ["b".repeat(64), "c".repeat(64)]);
        assert_eq!(freed, 6);
        for kept in [name('a'), ".tmp-download".into(), "notes.apkg".into()] {
            assert!(dir.path().join(kept).exists());
        }
    }
}
