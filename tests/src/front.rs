//! A loopback port of the test's own in front of a server, for tests that stop servers.
//!
//! A stopped server frees its port, and the operating system may hand that port to a server
//! that another test (a process of its own under nextest) starts at the same moment: a client
//! that still dials the old address then talks to a stranger, with other objects. A [`Front`]
//! forwards its port to the server until [`Front::stop`], then closes every connection it
//! forwarded and every one that comes after, and keeps the port until it is dropped. To the
//! client that is a server that went away; no other server can answer in its place.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use proxystore_tests::{front::Front, grpc_server};
//! let server = grpc_server::in_process()?;
//! let front = Front::start(&server.url())?;
//! let url = front.url(); // what the client dials
//! // ... later: the server "stops", for good, from the client's side.
//! front.stop();
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// A forwarding port in front of one server; see the [module](self).
#[derive(Debug)]
pub struct Front {
    url: String,
    stop: Mutex<Option<oneshot::Sender<mpsc::Sender<()>>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Front {
    /// Forward a new loopback port to the server at `target` (`http://host:port` or
    /// `host:port`), on a thread of its own (so it outlives no test runtime and needs none).
    ///
    /// # Errors
    /// When `target` is no socket address or no port can be bound.
    pub fn start(target: &str) -> anyhow::Result<Self> {
        let addr = target.strip_prefix("http://").unwrap_or(target);
        let target: SocketAddr = addr
            .trim_end_matches('/')
            .parse()
            .map_err(|e| anyhow::anyhow!("front: {target:?} is no socket address: {e}"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-front")
            .enable_io()
            .build()?;
        // Bound here, made a tokio listener on the front's runtime: a test's runtime may be
        // running on this thread, where `block_on` is refused.
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel();
        runtime.spawn(serve(listener, target, stopped));
        Ok(Front {
            url,
            stop: Mutex::new(Some(stop)),
            runtime: Some(runtime),
        })
    }

    /// The address clients dial: `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Close every connection forwarded so far, and from now on every new one as it comes;
    /// returns once the forwarded ones are closed. Idempotent.
    pub fn stop(&self) {
        let sender = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(sender) = sender {
            let (ack, acked) = mpsc::channel();
            if sender.send(ack).is_ok() {
                let _ = acked.recv_timeout(Duration::from_secs(10));
            }
        }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Allowed inside an async test, where dropping a runtime is not.
            rt.shutdown_background();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    target: SocketAddr,
    mut stop: oneshot::Receiver<mpsc::Sender<()>>,
) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    let mut forwarded = JoinSet::new();
    let ack = loop {
        tokio::select! {
            ack = &mut stop => break ack.ok(),
            accepted = listener.accept() => {
                let Ok((mut inbound, _)) = accepted else { continue };
                forwarded.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = outbound.set_nodelay(true);
                        let _ = inbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
            Some(_) = forwarded.join_next(), if !forwarded.is_empty() => {}
        }
    };
    // Aborting a forwarding task drops both of its sockets: the client sees its connection
    // closed, as when the server's process ends.
    forwarded.abort_all();
    while forwarded.join_next().await.is_some() {}
    if let Some(ack) = ack {
        let _ = ack.send(());
    }
    while let Ok((socket, _)) = listener.accept().await {
        drop(socket);
    }
}
