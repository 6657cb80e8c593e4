//! A thread per core: where a server's connections are served.
//!
//! A connection's work (its HTTP/2 task, the calls' tasks, a session's task, the answers)
//! hands itself from task to task many times per call. On a multi-thread runtime those
//! hand-offs cross threads: measured per 100 B put+get pair over one connection, about 24
//! context switches and 2 CPU migrations, against Redis's 16 and 0.15 (docs/benchmarks.md).
//! So a server runs [`ServerConfig::threads`](crate::ServerConfig::threads) threads, each a
//! current-thread tokio runtime serving the connections given to it, and a connection lives
//! on its thread from accept to close. The accept loop (in [`crate::Server::run_until`])
//! gives each new connection to the thread with the fewest open connections.
//!
//! Stopping: closing a thread's queue of connections is tonic's graceful shutdown for that
//! thread (no new connections; GOAWAY to the open ones, which finish their calls). Once its
//! connections are closed, a thread reports it is done and keeps running only to drain the
//! lingering closes (see `linger`, at most its timeout). Aborting a thread (the grace period
//! ran out, or the [`Workers`] were dropped) drops its runtime and with it every connection.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use tonic::transport::server::Router;

use crate::ServerError;
use crate::linger::{LINGER, LingeringStream};

/// What a serving thread counts of its connections.
#[derive(Debug, Default)]
pub(crate) struct Load {
    /// Connections open on the thread (given to it and not yet closed by hyper).
    open: AtomicUsize,
    /// Closed connections still draining their peer's last bytes.
    draining: AtomicUsize,
    drained: Notify,
}

impl Load {
    /// A connection opens.
    pub(crate) fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection counted by [`Load::opened`] never reached hyper (its thread had ended, or
    /// it could not be registered): uncount it.
    fn not_served(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// A connection closes; it drains until [`Load::drain_done`].
    pub(crate) fn closed(&self) {
        self.draining.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// A closed connection has drained.
    pub(crate) fn drain_done(&self) {
        if self.draining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drained.notify_waiters();
        }
    }

    async fn all_drained(&self) {
        loop {
            let notified = self.drained.notified();
            if self.draining.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One serving thread, as the accept loop sees it.
struct Worker {
    /// Its queue of new connections; dropped to stop it gracefully.
    queue: Option<mpsc::UnboundedSender<std::net::TcpStream>>,
    load: Arc<Load>,
    /// Dropped (or sent) to abort it.
    abort: Option<oneshot::Sender<()>>,
    /// Its result, once its connections are closed.
    done: Option<oneshot::Receiver<Result<(), ServerError>>>,
}

/// The serving threads of a server (see the module docs). Dropping them aborts them.
pub(crate) struct Workers {
    workers: Vec<Worker>,
    /// Where the search for the least loaded thread starts (so ties go round).
    next: usize,
}

impl Workers {
    /// Start `threads` threads serving `router` (named `proxystore-server-N`).
    ///
    /// # Errors
    /// [`ServerError::Task`] when a thread or its runtime cannot start.
    pub(crate) fn start(threads: NonZeroUsize, router: &Router) -> Result<Self, ServerError> {
        let mut workers = Vec::with_capacity(threads.get());
        for index in 0..threads.get() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| ServerError::Task(format!("runtime of serving thread: {e}")))?;
            let (queue, connections) = mpsc::unbounded_channel();
            let (abort, aborted) = oneshot::channel();
            let (report, done) = oneshot::channel();
            let load = Arc::new(Load::default());
            let serve = serve(router.clone(), connections, load.clone());
            let drain = load.clone();
            std::thread::Builder::new()
                .name(format!("proxystore-server-{index}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        let result = tokio::select! {
                            r = serve => r,
                            _ = aborted => return,
                        };
                        let _ = report.send(result);
                        // Let the closed connections drain (bounded by their own timeout).
                        let _ = tokio::time::timeout(LINGER * 2, drain.all_drained()).await;
                    });
                })
                .map_err(|e| ServerError::Task(format!("serving thread: {e}")))?;
            workers.push(Worker {
                queue: Some(queue),
                load,
                abort: Some(abort),
                done: Some(done),
            });
        }
        Ok(Workers { workers, next: 0 })
    }

    /// Give `stream` to the thread with the fewest open connections; false when no thread
    /// serves any more (each one's serving ended with an error, which [`Workers::finished`]
    /// returns), and the connection is dropped.
    pub(crate) fn dispatch(&mut self, mut stream: std::net::TcpStream) -> bool {
        let n = self.workers.len();
        loop {
            let start = self.next;
            let Some((chosen, worker, queue)) = (0..n)
                .map(|i| (start + i) % n)
                .filter_map(|i| {
                    let w = &self.workers[i];
                    w.queue.as_ref().map(|q| (i, w, q))
                })
                .min_by_key(|(_, w, _)| w.load.open.load(Ordering::Relaxed))
            else {
                return false;
            };
            worker.load.opened();
            let Err(mpsc::error::SendError(back)) = queue.send(stream) else {
                self.next = (chosen + 1) % n;
                return true;
            };
            // That thread has ended: take it out, and try the others.
            worker.load.not_served();
            self.workers[chosen].queue = None;
            tracing::warn!(thread = chosen, "serving thread ended");
            stream = back;
        }
    }

    /// Stop taking connections: each thread finishes its calls and closes its connections.
    pub(crate) fn close(&mut self) {
        for w in &mut self.workers {
            w.queue = None;
        }
    }

    /// Wait until every thread has closed its connections; the first error of any.
    pub(crate) async fn finished(&mut self) -> Result<(), ServerError> {
        let mut first = Ok(());
        for w in &mut self.workers {
            let Some(done) = w.done.take() else { continue };
            let r = done
                .await
                .unwrap_or_else(|_| Err(ServerError::Task("serving thread ended".into())));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    /// Close every connection now.
    pub(crate) fn abort(&mut self) {
        for w in &mut self.workers {
            if let Some(abort) = w.abort.take() {
                let _ = abort.send(());
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Serve the connections that arrive on `connections` until that queue closes and the
/// connections have closed.
async fn serve(
    router: Router,
    connections: mpsc::UnboundedReceiver<std::net::TcpStream>,
    load: Arc<Load>,
) -> Result<(), ServerError> {
    let incoming = futures::stream::unfold(connections, move |mut connections| {
        let load = load.clone();
        async move {
            let stream = connections.recv().await?;
            Some((open(stream, load), connections))
        }
    });
    // A signal that never fires still makes tonic's shutdown graceful when the incoming
    // stream ends.
    router
        .serve_with_incoming_shutdown(incoming, std::future::pending::<()>())
        .await?;
    Ok(())
}

/// Register `stream` with this thread's runtime, with TCP_NODELAY and a lingering close.
fn open(stream: std::net::TcpStream, load: Arc<Load>) -> std::io::Result<LingeringStream> {
    let opened = tokio::net::TcpStream::from_std(stream).and_then(|s| {
        s.set_nodelay(true)?;
        Ok(s)
    });
    match opened {
        Ok(s) => Ok(LingeringStream::new(s, load)),
        Err(e) => {
            load.not_served();
            Err(e)
        }
    }
}

/// The number of serving threads when none is configured: one per core.
pub(crate) fn default_threads() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// Accept errors other than a connection's own are the process's (out of file
/// descriptors): wait a little before accepting again instead of spinning.
pub(crate) fn accept_backoff(e: &std::io::Error) -> Option<Duration> {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
    match e.kind() {
        ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted => None,
        _ => Some(Duration::from_millis(50)),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::time::Instant;

    use super::*;

    fn loads(w: &Workers) -> Vec<usize> {
        w.workers
            .iter()
            .map(|w| w.load.open.load(Ordering::Relaxed))
            .collect()
    }

    /// Wait (a few seconds at most) until `w`'s open connections are `want`.
    fn wait_for(w: &Workers, want: &[usize]) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while loads(w) != want {
            assert!(
                Instant::now() < deadline,
                "loads {:?}, want {want:?}",
                loads(w)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn connections_go_to_the_least_loaded_thread_and_close_there() {
        let (_reporter, health) = tonic_health::server::health_reporter();
        let router = tonic::transport::Server::builder().add_service(health);
        let mut w = Workers::start(NonZeroUsize::new(2).unwrap(), &router).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut clients = Vec::new();
        let connect = |w: &mut Workers, clients: &mut Vec<TcpStream>| {
            clients.push(TcpStream::connect(listener.local_addr().unwrap()).unwrap());
            let (stream, _) = listener.accept().unwrap();
            stream.set_nonblocking(true).unwrap();
            w.dispatch(stream);
        };
        connect(&mut w, &mut clients);
        connect(&mut w, &mut clients);
        assert_eq!(loads(&w), [1, 1], "one each");
        connect(&mut w, &mut clients);
        assert_eq!(loads(&w), [2, 1], "ties go round from the first");
        // The client of the second connection (on the second thread) hangs up.
        drop(clients.remove(1));
        wait_for(&w, &[2, 0]);
        connect(&mut w, &mut clients);
        assert_eq!(loads(&w), [2, 1], "the emptier thread takes the next one");

        // Stopping: the threads stop taking connections and wait for the open ones to close
        // (a graceful shutdown of connections that never spoke HTTP/2 waits for their
        // clients), then report done.
        w.close();
        drop(clients);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), w.finished()).await })
            .expect("threads done in time")
            .unwrap();
        assert_eq!(loads(&w), [0, 0]);
    }
}
