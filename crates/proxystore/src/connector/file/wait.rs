//! Waiting for a key to be written: the OS's file notifications on the directory (inotify on
//! Linux), filtered for the object's name; objects appear by a rename into place, which is one
//! event. Where notifications cannot be had (no watcher, a file system without them), polling.

use std::path::Path;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};

use super::FileConnector;
use crate::connector::{Connector, poll_until_present};
use crate::error::Result;
use crate::key::Key;

impl FileConnector {
    /// [`Connector::wait`]: watch the directory, look, then wait for an event on the object's
    /// path or the timeout.
    pub(super) async fn wait_for_file(&self, key: &Key, timeout: Duration) -> Result<bool> {
        let path = self.path(key)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let target = path.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Any event on the path (or an error, which may have lost one) is a reason to look.
            if event.map_or(true, |e| e.paths.iter().any(|p| p == &target)) {
                let _ = tx.send(());
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => return self.poll_instead(key, timeout, &path, e).await,
        };
        if let Err(e) = watcher.watch(&self.config.directory, RecursiveMode::NonRecursive) {
            return self.poll_instead(key, timeout, &path, e).await;
        }
        loop {
            // Watching before looking: a rename between the look and the wait is an event.
            if self.exists(key).await? {
                return Ok(true);
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(())) => {}
                // The watcher stopped, or the time ran out: one last look.
                Ok(None) | Err(_) => return self.exists(key).await,
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
