//! Reloading when the configuration's files change (`watch: true`), for folders that something
//! else updates, such as a Kubernetes ConfigMap volume.
//!
//! The files are polled, not followed with inotify: a ConfigMap update swaps a `..data` symlink
//! over the folder, which leaves the watched names in place while everything under them changes,
//! and the files are read through their links anyway. Each poll stats `gateway.yaml`, what the
//! running configuration's `include` patterns match now (so routes files added or removed count
//! as changes) and the TLS files it names, each through its links: device, inode, size, mtime
//! and ctime. A change is applied
//! once the files have settled (unchanged for [`Timing::settle`]), so a save in several steps or
//! a file still being written gives one reload, through [`Reloader::reload`] as SIGHUP does.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::Reloader;
use crate::snapshot::Current;

/// How many of the changed files a log line names.
const SHOWN: usize = 5;

/// How often the files are looked at, and how long a change must rest before it is applied.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Between two looks while nothing is changing.
    pub poll: Duration,
    /// Between two looks while a change settles.
    pub settling_poll: Duration,
    /// How long the files must stay as they are before they are read.
    pub settle: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            poll: Duration::from_secs(1),
            settling_poll: Duration::from_millis(100),
            settle: Duration::from_millis(500),
        }
    }
}

/// What a file looks like from outside, through its links: another file swapped in (a new
/// inode, a new device) or the same file written (size, mtime, ctime) both show.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    device: u64,
    inode: u64,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

/// The files of a configuration and the stamp of each (`None`: it cannot be looked at now, as
/// while a link points at nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint(BTreeMap<PathBuf, Option<Stamp>>);

impl Fingerprint {
    /// Looks at each file now.
    pub fn of(files: impl IntoIterator<Item = PathBuf>) -> Fingerprint {
        Fingerprint(
            files
                .into_iter()
                .map(|path| {
                    let stamp = std::fs::metadata(&path).ok().map(|m| Stamp {
                        device: m.dev(),
                        inode: m.ino(),
                        size: m.size(),
                        modified: (m.mtime(), m.mtime_nsec()),
                        changed: (m.ctime(), m.ctime_nsec()),
                    });
                    (path, stamp)
                })
                .collect(),
        )
    }

    /// The files that differ between the two: changed, added or removed.
    pub fn differences(&self, other: &Fingerprint) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = self
            .0
            .iter()
            .filter(|(path, stamp)| other.0.get(*path) != Some(stamp))
            .map(|(path, _)| path.clone())
            .collect();
        paths.extend(
            other
                .0
                .keys()
                .filter(|path| !self.0.contains_key(*path))
                .cloned(),
        );
        paths
    }
}

/// What to do after a look at the files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The files are as they were last read.
    Quiet,
    /// They changed, and have not rested long enough yet.
    Settling,
    /// They changed and have rested: read them. The files that differ from those read last.
    Reload(Vec<PathBuf>),
}

/// Turns a series of looks into reloads: one per change that has rested for `settle`.
#[derive(Debug)]
pub struct Debounce {
    /// The files as last read (or as last given to a reload that failed: a broken file is not
    /// read again until it changes).
    applied: Fingerprint,
    /// The files at the last look, and since when they have looked so.
    seen: Fingerprint,
    since: Option<Instant>,
    settle: Duration,
}

impl Debounce {
    pub fn new(applied: Fingerprint, settle: Duration) -> Debounce {
        Debounce {
            seen: applied.clone(),
            applied,
            since: None,
            settle,
        }
    }

    /// Takes the files as they look at `now`.
    pub fn observe(&mut self, now: Instant, files: Fingerprint) -> Step {
        if files != self.seen {
            self.seen = files;
            self.since = Some(now);
        }
        if self.seen == self.applied {
            // Changed and changed back before it settled: nothing to read.
            self.since = None;
            return Step::Quiet;
        }
        let since = *self.since.get_or_insert(now);
        if now.saturating_duration_since(since) < self.settle {
            return Step::Settling;
        }
        let before = std::mem::replace(&mut self.applied, self.seen.clone());
        self.since = None;
        Step::Reload(before.differences(&self.applied))
    }

    /// The files applied now, as after a reload by another trigger that changed which files
    /// make the configuration.
    pub fn rebase(&mut self, files: Fingerprint) {
        self.seen = files.clone();
        self.applied = files;
        self.since = None;
    }

    pub fn applied(&self) -> &Fingerprint {
        &self.applied
    }
}

/// The background service: looks at the files of the running configuration and reloads it
/// with the trigger `watch` when they change.
pub struct WatchFiles {
    reloader: Arc<Reloader>,
    current: Current,
    timing: Timing,
    /// The files as they were when the gateway started serving them.
    started_with: Fingerprint,
}

impl WatchFiles {
    /// Looks at the files now, so a change made while the server starts is a change.
    pub fn new(reloader: Arc<Reloader>, current: Current, timing: Timing) -> WatchFiles {
        let started_with = Fingerprint::of(current.load().config.files());
        WatchFiles {
            reloader,
            current,
            timing,
            started_with,
        }
    }
}

#[async_trait]
impl BackgroundService for WatchFiles {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut debounce = Debounce::new(self.started_with.clone(), self.timing.settle);
        let mut patterns = self.current.load().config.include.clone();
        tracing::info!(
            files = debounce.applied().0.len(),
            "watching the configuration's files; a change is applied once it has settled"
        );
        let mut step = Step::Quiet;
        loop {
            let wait = if step == Step::Settling {
                self.timing.settling_poll
            } else {
                self.timing.poll
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                () = tokio::time::sleep(wait) => {}
            }
            let running = self.current.load_full();
            let files = Fingerprint::of(running.config.files());
            if running.config.include != patterns {
                // A reload (this one's or another trigger's) changed the patterns: the files
                // they match now are the ones it read, not a change.
                patterns.clone_from(&running.config.include);
                debounce.rebase(files);
                step = Step::Quiet;
                continue;
            }
            step = debounce.observe(Instant::now(), files);
            if let Step::Reload(changed) = &step {
                let shown: Vec<String> = changed
                    .iter()
                    .take(SHOWN)
                    .map(|path| path.display().to_string())
                    .collect();
                tracing::info!(
                    changed = changed.len(),
                    files = %shown.join(", "),
                    "configuration files changed; reloading"
                );
                let _ = self.reloader.reload("watch").await;
            }
        }
    }
}

#[cfg(test)]
mod tests;
