//! Objects moving as streams: a download's chunks ([`GetStream`]), an upload's request body
//! (cut into chunks, ended by an explicit finish, cancelled on a source error), and the
//! connector's streaming writer and reader.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use proxystore_proto::v1;
use tonic::Status;

use super::client::{protocol_error, timeout_status};
use super::{KIND, ObjectInfo};
use crate::connector::stream::{ObjectWriter, ReadChunks};
use crate::error::{Error, Result};
use crate::key::Key;

/// A streamed download: the object's bytes in chunks, read from the server as they are
/// consumed (a consumer that stops reading stops the server through flow control).
///
/// Yields an error and ends if the transfer fails part-way or stalls past the timeout.
pub struct GetStream {
    /// What the stream carries.
    pub info: ObjectInfo,
    pub(super) rx: tokio::sync::mpsc::Receiver<Result<Bytes>>,
}

impl std::fmt::Debug for GetStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetStream")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Stream for GetStream {
    type Item = Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

pub(super) async fn next_message<T>(
    stream: &mut tonic::Streaming<T>,
    t: Duration,
) -> std::result::Result<Option<T>, Status> {
    match tokio::time::timeout(t, stream.message()).await {
        Err(_) => Err(timeout_status("get", t)),
        Ok(r) => r,
    }
}

/// Progress of an upload, shared between its body stream and the call that watches it.
pub(super) struct Progress {
    start: Instant,
    last_ms: AtomicU64,
    error: Mutex<Option<Error>>,
    pub(super) failed: tokio::sync::Notify,
}

impl Progress {
    pub(super) fn new() -> Self {
        Progress {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            error: Mutex::new(None),
            failed: tokio::sync::Notify::new(),
        }
    }

    pub(super) fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub(super) fn idle(&self) -> Duration {
        self.start
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }

    pub(super) fn fail(&self, e: Error) {
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        self.failed.notify_one();
    }

    pub(super) fn take_error(&self) -> Option<Error> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The request stream of a Put: the header, then the data re-cut into chunks, then the
/// explicit end (the server stores nothing without it, whatever ends the stream). Each chunk
/// is pulled only when HTTP/2 flow control lets the transport send, so pulling is progress.
pub(super) struct PutBody {
    pub(super) header: Option<v1::PutRequest>,
    pub(super) finished: bool,
    pub(super) data: Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>,
    pub(super) rest: Bytes,
    pub(super) chunk: usize,
    pub(super) progress: Arc<Progress>,
    pub(super) failed: bool,
}

impl Stream for PutBody {
    type Item = v1::PutRequest;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(h) = this.header.take() {
            this.progress.touch();
            return Poll::Ready(Some(h));
        }
        loop {
            if this.finished {
                return Poll::Ready(None);
            }
            if this.failed {
                // Never end the stream after a source error: a clean end could commit a
                // truncated object. The watcher drops the call instead, which cancels it.
                return Poll::Pending;
            }
            if !this.rest.is_empty() {
                let n = this.chunk.min(this.rest.len());
                let c = this.rest.split_to(n);
                this.progress.touch();
                return Poll::Ready(Some(v1::PutRequest {
                    msg: Some(v1::put_request::Msg::Chunk(c)),
                }));
            }
            match this.data.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(b))) => this.rest = b,
                Poll::Ready(Some(Err(e))) => {
                    this.failed = true;
                    this.progress.fail(e);
                }
                Poll::Ready(None) => {
                    this.finished = true;
                    this.progress.touch();
                    return Poll::Ready(Some(v1::PutRequest {
                        msg: Some(v1::put_request::Msg::Finish(v1::PutFinish {})),
                    }));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// What a [`GrpcWriter`] hands its upload: the next chunk, or the end of the object.
pub(super) enum Piece {
    Chunk(Bytes),
    Finish,
}

/// A streamed put in progress: chunks go to the upload task through a small channel (its
/// backpressure is the server's flow control).
pub(super) struct GrpcWriter {
    pub(super) tx: Option<tokio::sync::mpsc::Sender<Piece>>,
    pub(super) task: Option<tokio::task::JoinHandle<Result<Key>>>,
}

impl GrpcWriter {
    /// The upload's outcome, once it has ended.
    async fn outcome(&mut self) -> Result<Key> {
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| Error::backend(KIND, "upload task", e))?,
            None => Err(Error::backend_message(KIND, "upload already ended", false)),
        }
    }
}

#[async_trait]
impl ObjectWriter for GrpcWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(Piece::Chunk(chunk)).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The upload ended early (refused, connection lost): its error says why.
        self.tx = None;
        match self.outcome().await {
            Err(e) => Err(e),
            Ok(_) => Err(Error::from(protocol_error(
                "the server committed an upload before it finished",
            ))),
        }
    }

    async fn finish(mut self: Box<Self>) -> Result<Key> {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Piece::Finish).await;
        }
        self.outcome().await
    }
}

/// A streamed get read in pieces of at most the size asked for.
pub(super) struct StreamChunks {
    pub(super) stream: GetStream,
    pub(super) rest: Bytes,
}

#[async_trait]
impl ReadChunks for StreamChunks {
    async fn read(&mut self, max: usize) -> Result<Option<Bytes>> {
        while self.rest.is_empty() {
            match self.stream.rx.recv().await {
                Some(Ok(b)) => self.rest = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(None),
            }
        }
        let n = max.max(1).min(self.rest.len());
        Ok(Some(self.rest.split_to(n)))
    }
}
