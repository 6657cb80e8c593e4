//! Waiting for a key to be written: the OS's file notifications on the directory (inotify on
//! Linux), filtered for the object's name; objects appear by a rename into place, which is one
//! event. Where notifications cannot be had (no watcher, a file system without them), polling.
//! Waiters on one directory share one watcher.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::Notify;

use super::FileConnector;
use crate::connector::{Connector, poll_until_present};
use crate::error::Result;
use crate::key::Key;

impl FileConnector {
    /// [`Connector::wait`]: register with the directory's watcher, look, then wait for an
    /// event on the object's path or the timeout.
    pub(super) async fn wait_for_file(&self, key: &Key, timeout: Duration) -> Result<bool> {
        let path = self.path(key)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let watch = match DirWatch::of(&self.config.directory) {
            Ok(w) => w,
            Err(e) => return self.poll_instead(key, timeout, &path, e).await,
        };
        let waiter = watch.register(path);
        loop {
            let event = waiter.notify.notified();
            tokio::pin!(event);
            // Registered before the look: a rename between the look and the wait is an event.
            event.as_mut().enable();
            if self.exists(key).await? {
                return Ok(true);
            }
            if tokio::time::timeout_at(deadline, event).await.is_err() {
                // The time ran out: one last look.
                return self.exists(key).await;
            }
        }
    }

    async fn poll_instead(
        &self,
        key: &Key,
        timeout: Duration,
        path: &Path,
        e: notify::Error,
    ) -> Result<bool> {
        tracing::debug!(path = %path.display(), error = %e, "no file notifications: polling");
        poll_until_present(self, key, timeout).await
    }
}

/// One watcher per directory in the process, shared by every waiter on it (an inotify
/// instance is a scarce resource: 128 per user by default), alive while someone waits.
struct DirWatch {
    _watcher: notify::RecommendedWatcher,
    waiters: Waiters,
}

/// A waiter's registration; dropped, it gives its path up.
struct Waiter {
    watch: Arc<DirWatch>,
    path: PathBuf,
    notify: Arc<Notify>,
}

/// The waiters of each path: how many, and what wakes them.
type Waiters = Arc<Mutex<PathWaiters>>;
type PathWaiters = HashMap<PathBuf, (usize, Arc<Notify>)>;

fn lock(w: &Waiters) -> std::sync::MutexGuard<'_, PathWaiters> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

impl DirWatch {
    /// The watcher of `dir`, started when nobody watches it yet.
    fn of(dir: &Path) -> notify::Result<Arc<DirWatch>> {
        static WATCHES: OnceLock<Mutex<HashMap<PathBuf, Weak<DirWatch>>>> = OnceLock::new();
        let mut watches = WATCHES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(w) = watches.get(dir).and_then(Weak::upgrade) {
            return Ok(w);
        }
        watches.retain(|_, w| w.strong_count() > 0);
        let waiters: Waiters = Arc::default();
        let seen = waiters.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let waiters = lock(&seen);
                match event {
                    Ok(e) => {
                        for p in &e.paths {
                            if let Some((_, n)) = waiters.get(p) {
                                n.notify_waiters();
                            }
                        }
                    }
                    // An error may have lost an event: everyone looks again.
                    Err(_) => waiters.values().for_each(|(_, n)| n.notify_waiters()),
                }
            })?;
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        let w = Arc::new(DirWatch {
            _watcher: watcher,
            waiters,
        });
        watches.insert(dir.to_path_buf(), Arc::downgrade(&w));
        Ok(w)
    }

    fn register(self: &Arc<Self>, path: PathBuf) -> Waiter {
        let notify = {
            let mut waiters = lock(&self.waiters);
            let entry = waiters
                .entry(path.clone())
                .or_insert_with(|| (0, Arc::new(Notify::new())));
            entry.0 += 1;
            entry.1.clone()
        };
        Waiter {
            watch: self.clone(),
            path,
            notify,
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut waiters = lock(&self.watch.waiters);
        if let Some(entry) = waiters.get_mut(&self.path) {
            entry.0 -= 1;
            if entry.0 == 0 {
                waiters.remove(&self.path);
            }
        }
    }
}
