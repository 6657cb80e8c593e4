//! Lingering close of client connections.
//!
//! When hyper has sent the last frame of a connection it closes the socket at once. If the
//! client's last frames (HTTP/2 window updates, pings) are still unread in the socket's receive
//! buffer at that moment, the kernel answers with a TCP reset instead of a FIN, and a reset makes
//! the client's kernel throw away response data the client has received but not yet read: a
//! `Get` that the server completed during a graceful shutdown would then fail at the client with
//! "connection reset". Like nginx's `lingering_close`, the server therefore shuts down its
//! sending side and reads (and discards) what the client still sends, for a bounded time, before
//! it closes the socket.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::workers::Load;

/// How long a closed connection keeps draining what the client still sends.
pub(crate) const LINGER: Duration = Duration::from_secs(2);

/// A TCP connection that drains its peer's last bytes before it closes (see the module docs).
pub(crate) struct LingeringStream {
    /// Taken only by `drop`.
    inner: Option<TcpStream>,
    info: TcpConnectInfo,
    /// The connection count of the thread serving it.
    load: Arc<Load>,
}

impl LingeringStream {
    /// `stream`, counted as open in `load` (which [`crate::workers::Workers::dispatch`]
    /// did) until it closes, then as draining until it has drained.
    pub(crate) fn new(stream: TcpStream, load: Arc<Load>) -> Self {
        Self {
            info: stream.connect_info(),
            inner: Some(stream),
            load,
        }
    }

    fn with<T>(
        self: Pin<&mut Self>,
        f: impl FnOnce(Pin<&mut TcpStream>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match self.get_mut().inner.as_mut() {
            Some(s) => f(Pin::new(s)),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl Drop for LingeringStream {
    fn drop(&mut self) {
        let Some(mut stream) = self.inner.take() else {
            return;
        };
        self.load.closed();
        let load = self.load.clone();
        // Without a runtime (process exit) the socket simply closes.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = stream.shutdown().await;
                let mut buf = [0u8; 4096];
                let _ = tokio::time::timeout(LINGER, async {
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
                load.drain_done();
            });
        } else {
            load.drain_done();
        }
    }
}

impl Connected for LingeringStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for LingeringStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.with(|s| s.poll_read(cx, buf))
    }
}

impl AsyncWrite for LingeringStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.with(|s| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.with(|s| s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(TcpStream::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with(|s| s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with(|s| s.poll_shutdown(cx))
    }
}
