//! File-system watches: each event says "something changed" on a channel, and the paths it names
//! are collected in a [`SeenChanges`] the main loop hands to the mirror cache, so a reconcile
//! after one policy file changed looks at that file only (everything else is re-read as before).
//!
//! Raw notify events are used and debounced by the main loop (wait for a quiet period, then
//! reconcile once): a per-path debouncer that pairs creates with removes can swallow the removal
//! of a file it saw created, which would leave a removed policy applied until the next resync.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use notify::event::ModifyKind;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::adapters::policy_scan::SeenChanges;

/// A set of non-recursive watches that can grow as watched directories appear.
pub struct Watches {
    watcher: RecommendedWatcher,
    /// Watched directories and their identity (inode and birth time: a directory removed and
    /// created again may get the same inode number back, but not the same birth time), whose
    /// watch must be set up again when it changes.
    watched: BTreeMap<PathBuf, (u64, Option<std::time::SystemTime>)>,
    /// The paths the events named since [`Watches::take_seen`] was last called.
    seen: Arc<Mutex<SeenChanges>>,
}

/// Record what one notify event says about the watched paths.
fn record(seen: &Mutex<SeenChanges>, res: &notify::Result<notify::Event>) {
    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    match res {
        Ok(e) if e.need_rescan() => seen.merge(SeenChanges::everything()),
        Ok(e) => match e.kind {
            EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Metadata(_)) => {
                e.paths.iter().for_each(|p| seen.contents(p))
            }
            EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Name(_) | ModifyKind::Any | ModifyKind::Other) => {
                e.paths.iter().for_each(|p| seen.entry(p))
            }
            _ => seen.merge(SeenChanges::everything()),
        },
        Err(_) => seen.merge(SeenChanges::everything()),
    }
}

/// The nearest existing directory at or above `p` (a missing policy directory is watched through
/// its parent, so its creation is noticed).
fn existing_dir(p: &Path) -> Option<PathBuf> {
    let mut cur = Some(p);
    while let Some(c) = cur {
        if c.is_dir() {
            return Some(c.to_path_buf());
        }
        cur = c.parent();
    }
    None
}

impl Watches {
    /// Start a watcher that sends `()` on `tx` for every change (reads are not changes).
    pub fn new(tx: mpsc::Sender<()>) -> notify::Result<Watches> {
        // Until the first take, anything may have changed.
        let seen = Arc::new(Mutex::new(SeenChanges::everything()));
        let seen_by_events = Arc::clone(&seen);
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Reads (our own included) are not changes: reacting to them would loop.
            if matches!(&res, Ok(e) if matches!(e.kind, EventKind::Access(_))) {
                return;
            }
            if let Err(e) = &res {
                tracing::warn!(error = %e, "file watch error");
            }
            // Recorded before the signal: the reconcile it causes takes the paths.
            record(&seen_by_events, &res);
            // A full channel already holds a pending "changed": nothing is lost.
            let _ = tx.try_send(());
        })?;
        Ok(Watches {
            watcher,
            watched: BTreeMap::new(),
            seen,
        })
    }

    /// What the events said since the last call (and "everything" when a watch was added since:
    /// a change in the gap before it may have been missed).
    pub fn take_seen(&self) -> SeenChanges {
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Make sure every path in `wanted` (or its nearest existing ancestor) is watched. Returns true
    /// when a new watch was set up: a change in the gap before it may have been missed, so the
    /// caller reconciles once more.
    pub fn ensure(&mut self, wanted: &[PathBuf]) -> bool {
        let mut added = false;
        for p in wanted {
            let Some(dir) = existing_dir(p) else { continue };
            if dir != *p {
                // The directory itself is gone: forget its (dead) watch.
                if self.watched.remove(p).is_some() {
                    let _ = self.watcher.unwatch(p);
                }
            }
            let Ok(ino) = std::fs::metadata(&dir).map(|m| (m.ino(), m.created().ok())) else {
                continue;
            };
            if self.watched.get(&dir) == Some(&ino) {
                continue;
            }
            if self.watched.remove(&dir).is_some() {
                let _ = self.watcher.unwatch(&dir);
            }
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::debug!(path = %dir.display(), "watching");
                    self.watched.insert(dir, ino);
                    added = true;
                    self.seen
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .merge(SeenChanges::everything());
                }
                Err(e) => tracing::warn!(path = %dir.display(), error = %e, "cannot watch"),
            }
        }
        added
    }
}
