//! The library's own I/O runtime, and running async work from sync code.
//!
//! A proxy resolves on first `Deref`, which is synchronous and may happen anywhere: on a plain
//! thread, inside a multi-thread tokio runtime, or inside a current-thread runtime (every default
//! `#[tokio::test]`). Blocking on the caller's runtime panics or deadlocks in some of those places,
//! so the library owns a small multi-thread runtime: sync callers spawn the work there and wait
//! for it (inside `block_in_place` when that is allowed). Networked connectors drive their
//! connections either there, so that their I/O never depends on a runtime the caller may be
//! blocking (S3, Globus), or on each calling runtime, one connection per runtime
//! ([`PerRuntime`]), so that a small call makes no hop between runtimes (Redis, gRPC).

use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::runtime::{Handle, RuntimeFlavor};
use tracing::Instrument;

use crate::error::{Error, Result};

static TIMEOUT_MS: AtomicU64 = AtomicU64::new(300_000);

/// Handle to the library's I/O runtime (two worker threads, started on first use).
///
/// # Panics
/// Never in practice: if the OS refuses to start the threads, the process cannot do I/O; this is
/// the one place the library aborts with a message.
pub fn io_handle() -> &'static Handle {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        #[allow(clippy::expect_used)]
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("proxystore-io")
            .enable_all()
            .build()
            .expect("proxystore: cannot start the I/O runtime threads")
    })
    .handle()
}

/// How long a synchronous resolve waits before giving up with [`Error::Timeout`]
/// (default 300 s; `PROXYSTORE_RESOLVE_TIMEOUT_SECS` sets it at start-up).
pub fn blocking_timeout() -> Duration {
    static FROM_ENV: OnceLock<()> = OnceLock::new();
    FROM_ENV.get_or_init(|| {
        if let Some(secs) = std::env::var("PROXYSTORE_RESOLVE_TIMEOUT_SECS")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| *s > 0.0)
        {
            TIMEOUT_MS.store((secs * 1000.0) as u64, Ordering::Relaxed);
        }
    });
    Duration::from_millis(TIMEOUT_MS.load(Ordering::Relaxed))
}

/// Set the timeout of synchronous resolves in this process.
pub fn set_blocking_timeout(timeout: Duration) {
    let _ = blocking_timeout();
    TIMEOUT_MS.store(timeout.as_millis() as u64, Ordering::Relaxed);
}

/// Run `fut` to completion from synchronous code, wherever that code runs.
///
/// Outside any runtime it blocks on the I/O runtime. Inside a runtime it spawns `fut` on the I/O
/// runtime and waits for it, in `block_in_place` on a multi-thread runtime so that other tasks
/// keep running. It never panics and never deadlocks on the caller's runtime, because `fut` does
/// not run there. `fut` runs in the caller's current `tracing` span.
///
/// ```
/// let v = proxystore::runtime::block_on(async { 40 + 2 }).unwrap();
/// assert_eq!(v, 42);
/// ```
///
/// # Errors
/// [`Error::Timeout`] after [`blocking_timeout`]; `fut` is then left to finish in the background.
pub fn block_on<F>(fut: F) -> Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    block_on_within(Some(blocking_timeout()), fut)
}

/// [`block_on`] with a timeout of the caller's choosing; `None` waits as long as `fut` takes
/// (for work that bounds itself, such as waiting for a distributed future).
///
/// # Errors
/// [`Error::Timeout`] after `timeout`; `fut` is then left to finish in the background.
pub fn block_on_within<F>(timeout: Option<Duration>, fut: F) -> Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let Ok(current) = Handle::try_current() else {
        let handle = io_handle();
        return match timeout {
            Some(t) => handle
                .block_on(async { tokio::time::timeout(t, fut).await })
                .map_err(|_| timeout_error(t)),
            None => Ok(handle.block_on(fut)),
        };
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    io_handle().spawn(
        async move {
            let _ = tx.send(fut.await);
        }
        .in_current_span(),
    );
    let wait = move || match timeout {
        Some(t) => rx.recv_timeout(t).map_err(|_| timeout_error(t)),
        None => rx.recv().map_err(|_| Error::Backend {
            connector: "runtime".into(),
            message: "the I/O runtime dropped a synchronous resolve".into(),
            source: None,
            temporary: true,
        }),
    };
    match current.runtime_flavor() {
        RuntimeFlavor::MultiThread => tokio::task::block_in_place(wait),
        _ => wait(),
    }
}

fn timeout_error(after: Duration) -> Error {
    Error::Timeout {
        operation: "synchronous resolve".into(),
        after,
    }
}

/// Run `fut` on the I/O runtime and await it from any runtime.
///
/// Networked connectors wrap their operations in this, so that their connections belong to the
/// I/O runtime. `fut` runs in the caller's current `tracing` span, so that what it records
/// (and the trace context a connector sends) belongs to the caller's operation.
///
/// # Errors
/// [`Error::Backend`] if the task panicked or the runtime is shutting down.
pub async fn spawn_io<F>(fut: F) -> Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    io_handle()
        .spawn(fut.in_current_span())
        .await
        .map_err(|e| Error::backend("runtime", "I/O task failed", e))
}

/// The runtime the caller runs on, or the I/O runtime for a caller outside any tokio runtime:
/// where a client made for this caller keeps its tasks (with [`PerRuntime::get_or_try_init_in`]).
///
/// ```
/// use proxystore::runtime::{current_or_io, io_handle};
/// assert_eq!(current_or_io().id(), io_handle().id()); // outside any runtime
/// ```
pub fn current_or_io() -> Handle {
    Handle::try_current().unwrap_or_else(|_| io_handle().clone())
}

/// Whether the current task runs on the library's I/O runtime.
pub fn on_io_runtime() -> bool {
    Handle::try_current().is_ok_and(|h| h.id() == io_handle().id())
}

/// Run `fut` on the I/O runtime: in place when the caller already runs there, else spawned
/// there and awaited (as [`spawn_io`]). What [`crate::layer::IoRuntimeLayer`] does for every
/// call; connectors use it to create their clients there, once.
///
/// # Errors
/// `fut`'s error, or [`Error::Backend`] if the spawned task panicked.
pub async fn run_on_io<T, F>(fut: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    if on_io_runtime() {
        fut.await
    } else {
        spawn_io(fut).await?
    }
}

/// Run `fut` on the caller's tokio runtime, in place; from outside any tokio runtime (another
/// executor, a plain thread), spawned on the I/O runtime and awaited. Where the calls of a
/// connector with a client per runtime run ([`crate::connector::CallRuntime::CallerTokio`]).
///
/// # Errors
/// `fut`'s error, or [`Error::Backend`] if the spawned task panicked.
pub(crate) async fn run_on_tokio_or_io<T, F>(fut: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    if Handle::try_current().is_ok() {
        fut.await
    } else {
        spawn_io(fut).await?
    }
}

/// One value per tokio runtime: a client whose connection task must live on the runtime that
/// uses it, so that a call does not hop between threads (a spawn on the I/O runtime and a wake
/// back) on its way to the socket and back.
///
/// The value for the current runtime is made on first use from that runtime, inside it (so
/// that what it spawns lives there), and dropped when that runtime shuts down, or with this
/// map. Networked connectors keep their clients in one; callers outside any tokio runtime go
/// to the I/O runtime's (see [`run_on_io`]).
///
/// ```
/// # proxystore::runtime::block_on(async {
/// use proxystore::runtime::PerRuntime;
/// let clients: PerRuntime<u32> = PerRuntime::new();
/// let here = clients.get_or_try_init(|| Ok::<_, proxystore::Error>(7))?;
/// assert_eq!(here, Some(7)); // made once per runtime; `None` outside any runtime
/// assert_eq!(clients.get_or_try_init(|| Ok::<_, proxystore::Error>(8))?, Some(7));
/// # Ok::<_, proxystore::Error>(()) })??;
/// # Ok::<_, proxystore::Error>(())
/// ```
pub struct PerRuntime<T> {
    map: std::sync::Arc<std::sync::Mutex<PerRuntimeMap<T>>>,
}

/// Looked up on every call of a networked connector: hashed with foldhash (SipHash cost a
/// tenth of what the lookup adds to a 100 B Redis get, issue 18).
type PerRuntimeMap<T> = std::collections::HashMap<
    tokio::runtime::Id,
    (T, tokio::sync::oneshot::Sender<()>),
    foldhash::fast::RandomState,
>;

impl<T> Default for PerRuntime<T> {
    fn default() -> Self {
        PerRuntime {
            map: Default::default(),
        }
    }
}

impl<T> std::fmt::Debug for PerRuntime<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerRuntime")
            .field("runtimes", &self.len())
            .finish()
    }
}

impl<T> PerRuntime<T> {
    /// How many runtimes have a value now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// The map; a panic elsewhere while it was held leaves it whole (every change is one
    /// insert or remove), so a poisoned lock is taken as it is.
    fn lock(&self) -> std::sync::MutexGuard<'_, PerRuntimeMap<T>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether no runtime has a value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: Clone + Send + 'static> PerRuntime<T> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of the current runtime, made with `make` (inside this runtime) when it has
    /// none yet; `None` when the caller runs outside any tokio runtime.
    ///
    /// # Errors
    /// `make`'s.
    pub fn get_or_try_init<E>(
        &self,
        make: impl FnOnce() -> std::result::Result<T, E>,
    ) -> std::result::Result<Option<T>, E> {
        let Ok(handle) = Handle::try_current() else {
            return Ok(None);
        };
        self.get_or_try_init_in(&handle, make).map(Some)
    }

    /// The value of the runtime of `handle`, made with `make` (inside that runtime) when it
    /// has none yet: [`PerRuntime::get_or_try_init`] for a runtime the caller names, as a
    /// caller outside any runtime names the I/O runtime ([`io_handle`]).
    ///
    /// ```
    /// use proxystore::runtime::{PerRuntime, current_or_io};
    /// let clients: PerRuntime<u32> = PerRuntime::new();
    /// // Outside any runtime: the I/O runtime's value, made inside it.
    /// let v = clients.get_or_try_init_in(&current_or_io(), || Ok::<_, std::io::Error>(7))?;
    /// assert_eq!((v, clients.len()), (7, 1));
    /// # Ok::<_, std::io::Error>(())
    /// ```
    ///
    /// # Errors
    /// `make`'s.
    pub fn get_or_try_init_in<E>(
        &self,
        handle: &Handle,
        make: impl FnOnce() -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let id = handle.id();
        let (value, dropped) = {
            let mut map = self.lock();
            if let Some((value, _)) = map.get(&id) {
                return Ok(value.clone());
            }
            // Made on the first call of a runtime only: the calls after it are a lookup.
            let (alive, dropped) = tokio::sync::oneshot::channel::<()>();
            let value = {
                let _inside = handle.enter();
                make()?
            };
            map.insert(id, (value.clone(), alive));
            (value, dropped)
        };
        // A task of this runtime holds the entry's removal: the runtime drops it when it shuts
        // down. It ends on its own once the entry goes (the sender dropped with this map).
        // Spawned after the lock is released: a runtime that is shutting down drops it at once,
        // and its removal takes the lock.
        let guard = RemoveOnDrop {
            map: std::sync::Arc::downgrade(&self.map),
            id,
        };
        handle.spawn(async move {
            let _guard = guard;
            let _ = dropped.await;
        });
        Ok(value)
    }
}

struct RemoveOnDrop<T> {
    map: std::sync::Weak<std::sync::Mutex<PerRuntimeMap<T>>>,
    id: tokio::runtime::Id,
}

impl<T> Drop for RemoveOnDrop<T> {
    fn drop(&mut self) {
        if let Some(map) = self.map.upgrade() {
            // Taken out under the lock, dropped after it: dropping a client may take locks.
            let removed = map
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&self.id);
            drop(removed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_runtime_values_go_with_their_runtime() {
        let values: PerRuntime<usize> = PerRuntime::new();
        assert_eq!(values.get_or_try_init(|| Ok::<_, ()>(0)), Ok(None));
        let made = std::sync::atomic::AtomicUsize::new(0);
        let make = || Ok::<_, ()>(made.fetch_add(1, Ordering::SeqCst) + 1);
        let a = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let b = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        assert_eq!(
            a.block_on(async { values.get_or_try_init(make) }),
            Ok(Some(1))
        );
        assert_eq!(
            a.block_on(async { values.get_or_try_init(make) }),
            Ok(Some(1))
        );
        assert_eq!(
            b.block_on(async { values.get_or_try_init(make) }),
            Ok(Some(2))
        );
        assert_eq!(values.len(), 2);
        drop(a);
        assert_eq!(values.len(), 1, "a runtime's value goes when it shuts down");
        let errs: PerRuntime<usize> = PerRuntime::new();
        assert_eq!(
            b.block_on(async { errs.get_or_try_init(|| Err("no")) }),
            Err("no")
        );
        assert!(errs.is_empty());
        drop(values);
        drop(b);
    }

    #[test]
    fn works_outside_a_runtime() {
        assert_eq!(block_on(async { 1 }).unwrap(), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn works_in_current_thread_runtime() {
        assert_eq!(block_on(async { 2 }).unwrap(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn works_in_multi_thread_runtime() {
        assert_eq!(block_on(async { 3 }).unwrap(), 3);
        let v = tokio::task::spawn_blocking(|| block_on(async { 4 }).unwrap())
            .await
            .unwrap();
        assert_eq!(v, 4);
    }

    #[test]
    fn works_on_the_io_runtime_itself() {
        let v = io_handle()
            .block_on(io_handle().spawn(async { block_on(async { 5 }).unwrap() }))
            .unwrap();
        assert_eq!(v, 5);
    }
}
