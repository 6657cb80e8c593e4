//! Evictions started by a destructor (a scope, a lease or an owned proxy dropped) run in the
//! background on the library's I/O runtime; this module makes them finish before the process
//! exits, and ends the process-lifetime scopes ([`process_scope`]) then.
//!
//! The first background eviction installs a hook that runs when the process exits normally
//! (`main` returns or `std::process::exit` is called): it evicts what the process-lifetime
//! scopes own and waits for every background eviction, for at most [`EXIT_WAIT`]. A process
//! killed by a signal runs no hook: a [`super::Lease`] held elsewhere is the backstop for that.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use super::Scope;
use crate::key::Key;
use crate::runtime;
use crate::store::Store;

/// Longest time the exit hook waits for background evictions.
pub const EXIT_WAIT: Duration = Duration::from_secs(5);

/// Background evictions in flight.
struct Pending {
    count: Mutex<usize>,
    done: Condvar,
}

fn pending() -> &'static Pending {
    static PENDING: Pending = Pending {
        count: Mutex::new(0),
        done: Condvar::new(),
    };
    &PENDING
}

/// Evict `keys` of `store` in the background; `what` names the owner in a failure's log line.
pub(crate) fn spawn_eviction(store: Store, keys: Vec<Key>, what: &'static str) {
    if keys.is_empty() {
        return;
    }
    spawn_cleanup(async move {
        if let Err(e) = store.evict_batch(&keys).await {
            tracing::warn!(store = store.name(), keys = keys.len(), error = %e, "{what}: eviction failed");
        }
    });
}

/// Run `work` (cleanup a destructor started) on the I/O runtime; the process waits for it
/// at exit, as for evictions.
pub(crate) fn spawn_cleanup(work: impl std::future::Future<Output = ()> + Send + 'static) {
    install_exit_hook();
    let p = pending();
    *p.count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    runtime::io_handle().spawn(async move {
        work.await;
        let mut n = p.count.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        p.done.notify_all();
    });
}

/// Wait until every background eviction started so far has finished, for at most `timeout`;
/// whether they all did. Blocks the calling thread (from async code, call it through
/// `tokio::task::spawn_blocking`). The process does this by itself when it exits.
///
/// ```
/// # proxystore::runtime::block_on(async {
/// use proxystore::{Store, connector::memory::MemoryConnector, lifetime};
/// let store = Store::new("exit-doc", MemoryConnector::new("exit-doc"));
/// let owned = store.owned_proxy(&vec![1u8; 64]).await?;
/// let key = owned.key().unwrap().clone();
/// drop(owned); // evicted in the background
/// assert!(lifetime::wait_for_evictions(std::time::Duration::from_secs(5)));
/// assert!(!store.exists(&key).await?);
/// # Ok::<_, proxystore::Error>(()) })??;
/// # Ok::<_, proxystore::Error>(())
/// ```
pub fn wait_for_evictions(timeout: Duration) -> bool {
    let p = pending();
    let deadline = Instant::now() + timeout;
    let mut n = p.count.lock().unwrap_or_else(|e| e.into_inner());
    while *n > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        n = p
            .done
            .wait_timeout(n, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    true
}

/// The scopes of [`process_scope`], by store name.
fn process_scopes() -> &'static Mutex<HashMap<String, &'static Scope>> {
    static SCOPES: OnceLock<Mutex<HashMap<String, &'static Scope>>> = OnceLock::new();
    SCOPES.get_or_init(Default::default)
}

/// The scope of `store` that lives as long as the process (Python ProxyStore's
/// `StaticLifetime`): what it owns is evicted when the process exits normally. One per store
/// name; every call for that name returns the same scope.
///
/// ```
/// # proxystore::runtime::block_on(async {
/// use proxystore::{Store, connector::memory::MemoryConnector, lifetime};
/// let store = Store::new("process-doc", MemoryConnector::new("process-doc"));
/// let config = lifetime::process_scope(&store).proxy(&"read by every task".to_string()).await?;
/// assert_eq!(config.len(), 18);
/// # Ok::<_, proxystore::Error>(()) })??;
/// # Ok::<_, proxystore::Error>(())
/// ```
pub fn process_scope(store: &Store) -> &'static Scope {
    install_exit_hook();
    let mut scopes = process_scopes().lock().unwrap_or_else(|e| e.into_inner());
    scopes
        .entry(store.name().to_owned())
        .or_insert_with(|| Box::leak(Box::new(Scope::new(store))))
}

fn install_exit_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        // SAFETY: `at_exit` is an `extern "C" fn()` that does not unwind (it catches panics)
        // and touches only statics that live for the whole process.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::atexit(at_exit) };
        if rc != 0 {
            tracing::warn!(
                "cannot install the exit hook: background evictions may be lost at exit"
            );
        }
    });
}

extern "C" fn at_exit() {
    let _ = std::panic::catch_unwind(|| {
        let scopes: Vec<&'static Scope> = process_scopes()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .copied()
            .collect();
        for scope in scopes {
            scope.end_in_background();
        }
        if !wait_for_evictions(EXIT_WAIT) {
            eprintln!(
                "proxystore: background evictions still running after {EXIT_WAIT:?} at exit; \
                 their objects may be left in their stores"
            );
        }
    });
}
