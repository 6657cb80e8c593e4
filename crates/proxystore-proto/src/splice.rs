//! Large chunks of a `Get` answer (server) or a `Put` request (client) sent from the object's
//! own [`Bytes`], not copied into tonic's encode buffer.
//!
//! tonic encodes every message into one `BytesMut` through prost's `BufMut` encoding: a 1 MiB
//! chunk of an object the server holds in memory is copied once more before the transport
//! writes it (about 4% of the CPU of a 1 MiB get on loopback, client and server together), and
//! so is every chunk a client puts.
//! `BufMut` cannot take a `Bytes` by reference, so the copy is avoided around the encoder
//! rather than in it:
//!
//! 1. [`SplicedBody`] wraps the HTTP body of a response (the server mounts it on `Get`) or of
//!    a request ([`SpliceRequests`], on a client's `Put`). While it polls the body it wraps, it
//!    opens a *recorder* on its thread.
//! 2. The encoder of [`crate::codec::ProtoCodec`], called inside that poll, finds the recorder
//!    open. For a [`v1::GetResponse`] or [`v1::PutRequest`] chunk of at least
//!    [`SPLICE_MIN_BYTES`] it writes only the field's key and length, and hands the chunk's
//!    `Bytes` to the recorder. Every other message it encodes as usual, and records that it
//!    did.
//! 3. tonic frames the shortened message (5-byte gRPC header) as it frames any other.
//!    `SplicedBody` then reads the frames of each chunk of bytes it gets: where the recorder
//!    holds a chunk for a message, it rewrites the header's length and sends the chunk's
//!    `Bytes` right after the shortened message, as a body frame of its own.
//!
//! The bytes on the wire are exactly those tonic would have sent (a test checks them byte for
//! byte). A message is spliced only under a `SplicedBody` that is polling: elsewhere (a client,
//! a server without the wrapper) the encoder encodes as prost does. Compressed messages are
//! never wrapped ([`spliced_unless_compressed`]): the compressor needs the whole message.
//!
//! The encoder also asks tonic to yield each of these messages as soon as it is encoded (a
//! yield threshold of one byte). Otherwise tonic would keep pulling chunks from the object's
//! reader until 32 KiB of (shortened) messages had gathered, reading far ahead of the peer.
//!
//! Each rewrite is checked: the shortened message must end in the very key and length the
//! encoder wrote for its chunk. Bytes out of step with the recorder end the call with an
//! error instead of going out wrong.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tonic::codec::HEADER_SIZE;

use tonic::codegen::{Service, http};

use crate::codec::chunk_field_head;
#[cfg(doc)]
use crate::v1;

/// The path of `StoreService/Put`, whose requests [`SpliceRequests`] sends.
pub const PUT_PATH: &str = "/proxystore_rs.v1.StoreService/Put";

/// The path of `StoreService/Get`, whose answers a server sends through a [`SplicedBody`].
pub const GET_PATH: &str = "/proxystore_rs.v1.StoreService/Get";

/// The smallest chunk sent from its own `Bytes`: below it, the copy costs less than the
/// extra body frame.
pub const SPLICE_MIN_BYTES: usize = 64 * 1024;

thread_local! {
    /// What the encoders called inside a [`SplicedBody`]'s poll on this thread record: per
    /// message encoded, in order, the chunk left out of it (`None`: encoded whole). `None`
    /// outside such a poll.
    static RECORDER: RefCell<Option<VecDeque<Option<Bytes>>>> = const { RefCell::new(None) };
}

/// Whether a [`SplicedBody`] is polling on this thread (its recorder is open).
pub(crate) fn recording() -> bool {
    RECORDER.with(|r| r.borrow().is_some())
}

/// Record one message encoded inside a [`SplicedBody`]'s poll: `Some(chunk)` when `chunk` was
/// left out of it. Does nothing outside such a poll.
pub(crate) fn record(left_out: Option<Bytes>) {
    RECORDER.with(|r| {
        if let Some(marks) = r.borrow_mut().as_mut() {
            marks.push_back(left_out);
        }
    });
}

/// Puts the wrapper's marks back into its recorder slot when the poll ends (also on a panic
/// inside the inner body, so the thread's recorder never stays open).
struct Open<'a> {
    marks: &'a mut VecDeque<Option<Bytes>>,
}

impl<'a> Open<'a> {
    fn new(marks: &'a mut VecDeque<Option<Bytes>>) -> Self {
        let taken = std::mem::take(marks);
        RECORDER.with(|r| *r.borrow_mut() = Some(taken));
        Open { marks }
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        if let Some(back) = RECORDER.with(|r| r.borrow_mut().take()) {
            *self.marks = back;
        }
    }
}

/// The HTTP body of a gRPC response or request whose large chunks (of `Get` answers, of `Put`
/// requests) are sent from their own `Bytes`; see the [module](self). Made by
/// [`spliced_unless_compressed`], which wraps uncompressed messages only.
#[derive(Debug)]
pub struct SplicedBody<B> {
    inner: B,
    /// Per message encoded and not yet seen in the bytes: the chunk left out of it.
    marks: VecDeque<Option<Bytes>>,
    /// Body frames ready to go, in order.
    ready: VecDeque<Bytes>,
}

impl<B> SplicedBody<B> {
    /// Wrap `inner`, the body of gRPC messages that are not compressed.
    fn new(inner: B) -> Self {
        SplicedBody {
            inner,
            marks: VecDeque::new(),
            ready: VecDeque::new(),
        }
    }

    /// Split `data` (whole gRPC messages, as tonic yields them) into the frames to send: a
    /// message recorded with a chunk left out gets its length rewritten and the chunk right
    /// after it. Bytes that do not parse as whole messages go out as they are.
    fn splice(&mut self, data: Bytes) -> Result<(), tonic::Status> {
        let mut at = 0;
        let mut sent = 0;
        while data.len() - at >= HEADER_SIZE {
            let len = u32::from_be_bytes([data[at + 1], data[at + 2], data[at + 3], data[at + 4]]);
            let end = at + HEADER_SIZE + len as usize;
            if end > data.len() {
                break;
            }
            if let Some(chunk) = self.marks.pop_front().flatten() {
                let body = &data[at + HEADER_SIZE..end];
                let (head, n) = chunk_field_head(chunk.len());
                if data[at] != 0 || !body.ends_with(&head[..n]) {
                    return Err(tonic::Status::internal(
                        "message framing out of step with the chunks left out of it",
                    ));
                }
                let whole = u32::try_from(len as usize + chunk.len()).map_err(|_| {
                    tonic::Status::internal("a chunk does not fit in a gRPC message")
                })?;
                if at > sent {
                    self.ready.push_back(data.slice(sent..at));
                }
                let mut head = BytesMut::with_capacity(HEADER_SIZE + len as usize);
                head.put_u8(data[at]);
                head.put_u32(whole);
                head.put_slice(body);
                self.ready.push_back(head.freeze());
                self.ready.push_back(chunk);
                sent = end;
            }
            at = end;
        }
        if sent < data.len() {
            self.ready.push_back(data.slice(sent..));
        }
        Ok(())
    }
}

impl<B> Body for SplicedBody<B>
where
    B: Body<Data = Bytes, Error = tonic::Status> + Unpin,
{
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = &mut *self;
        loop {
            if let Some(next) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(next))));
            }
            let polled = {
                let _open = Open::new(&mut this.marks);
                Pin::new(&mut this.inner).poll_frame(cx)
            };
            let frame = match polled {
                Poll::Ready(Some(Ok(frame))) => frame,
                other => return other,
            };
            match frame.into_data() {
                // Nothing left out so far: the bytes go as they came.
                Ok(data) if this.marks.iter().all(Option::is_none) => {
                    this.marks.clear();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(data) => {
                    if let Err(status) = this.splice(data) {
                        return Poll::Ready(Some(Err(status)));
                    }
                }
                Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // The inner body's hint does not count the chunks put back.
        SizeHint::default()
    }
}

/// `body`, the messages of a `Get` answer or a `Put` request whose HTTP headers are
/// `headers`, as tonic's body type: in a [`SplicedBody`], unless the messages are compressed
/// (`grpc-encoding`), which leaves them as they are (the compressor needs whole messages).
pub fn spliced_unless_compressed<B>(headers: &http::HeaderMap, body: B) -> tonic::body::Body
where
    B: Body<Data = Bytes, Error = tonic::Status> + Unpin + Send + 'static,
{
    if headers.contains_key("grpc-encoding") {
        tonic::body::Body::new(body)
    } else {
        tonic::body::Body::new(SplicedBody::new(body))
    }
}

/// A client's transport with the `Put` requests' large chunks sent from their own bytes: it
/// wraps the body of each uncompressed `Put` request in a [`SplicedBody`] and passes every
/// request on to `S`.
///
/// ```
/// use proxystore_proto::splice::SpliceRequests;
/// use proxystore_proto::v1::store_service_client::StoreServiceClient;
///
/// use tonic::codegen::{Body, Bytes, Service, StdError, http};
///
/// /// A store client over `transport` (a tonic `Channel`, say) whose puts send their chunks
/// /// as they are.
/// fn client<T, B>(transport: T) -> StoreServiceClient<SpliceRequests<T>>
/// where
///     T: Service<http::Request<tonic::body::Body>, Response = http::Response<B>>,
///     T::Error: Into<StdError>,
///     B: Body<Data = Bytes> + Send + 'static,
///     B::Error: Into<StdError> + Send,
/// {
///     StoreServiceClient::new(SpliceRequests::new(transport))
/// }
/// ```
#[derive(Debug, Clone)]
pub struct SpliceRequests<S> {
    inner: S,
}

impl<S> SpliceRequests<S> {
    /// Wrap the transport `inner`.
    pub fn new(inner: S) -> Self {
        SpliceRequests { inner }
    }
}

impl<S> Service<http::Request<tonic::body::Body>> for SpliceRequests<S>
where
    S: Service<http::Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> S::Future {
        let request = if request.uri().path() == PUT_PATH {
            let (parts, body) = request.into_parts();
            let body = spliced_unless_compressed(&parts.headers, body);
            http::Request::from_parts(parts, body)
        } else {
            request
        };
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Waker;

    use tonic::Status;
    use tonic::codec::{Codec, EncodeBody, SingleMessageCompressionOverride};
    use tonic_prost::ProstCodec;

    use super::*;
    use crate::codec::ProtoCodec;
    use crate::v1::{GetHeader, GetResponse, get_response::Msg};

    fn chunk(len: usize, seed: u8) -> Bytes {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>()
            .into()
    }

    fn answers(chunks: &[Bytes]) -> Vec<GetResponse> {
        let total: usize = chunks.iter().map(Bytes::len).sum();
        std::iter::once(GetResponse {
            msg: Some(Msg::Header(GetHeader {
                size: total as u64,
                object_size: total as u64,
                offset: 0,
                digest: None,
            })),
        })
        .chain(chunks.iter().map(|c| GetResponse {
            msg: Some(Msg::Chunk(c.clone())),
        }))
        .collect()
    }

    /// Every frame of `body`, polled to its end (the sources below are always ready).
    fn frames<B: Body<Data = Bytes, Error = Status> + Unpin>(mut body: B) -> Vec<Frame<Bytes>> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Vec::new();
        loop {
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Ready(Some(frame)) => out.push(frame.unwrap()),
                Poll::Ready(None) => return out,
                Poll::Pending => panic!("an always-ready source left the body pending"),
            }
        }
    }

    fn data(frames: &[Frame<Bytes>]) -> Vec<u8> {
        frames
            .iter()
            .filter_map(Frame::data_ref)
            .flat_map(|d| d.iter().copied())
            .collect()
    }

    fn source(
        messages: Vec<GetResponse>,
        pulled: Arc<AtomicUsize>,
    ) -> impl futures::Stream<Item = Result<GetResponse, Status>> + Unpin {
        futures::stream::iter(messages.into_iter().map(move |m| {
            pulled.fetch_add(1, Ordering::SeqCst);
            Ok(m)
        }))
    }

    /// tonic's body of `messages` with prost's own encoder: the bytes to match.
    fn tonic_bytes(messages: Vec<GetResponse>) -> Vec<u8> {
        let encoder = ProstCodec::<GetResponse, GetResponse>::default().encoder();
        let body = EncodeBody::new_server(
            encoder,
            source(messages, Arc::default()),
            None,
            SingleMessageCompressionOverride::default(),
            None,
        );
        data(&frames(Box::pin(body)))
    }

    fn ours(
        messages: Vec<GetResponse>,
        pulled: Arc<AtomicUsize>,
    ) -> SplicedBody<impl Body<Data = Bytes, Error = Status> + Unpin> {
        let encoder = ProtoCodec::<GetResponse, GetResponse>::default().encoder();
        SplicedBody::new(Box::pin(EncodeBody::new_server(
            encoder,
            source(messages, pulled),
            None,
            SingleMessageCompressionOverride::default(),
            None,
        )))
    }

    #[test]
    fn the_bytes_sent_are_tonics_and_large_chunks_are_not_copied() {
        let chunks = vec![
            chunk(1 << 20, 1),
            chunk(100, 2),
            chunk(300 << 10, 3),
            chunk(SPLICE_MIN_BYTES, 4),
            chunk(SPLICE_MIN_BYTES - 1, 5),
            chunk(0, 6),
        ];
        let expected = tonic_bytes(answers(&chunks));
        let frames = frames(ours(answers(&chunks), Arc::default()));
        assert_eq!(data(&frames), expected);
        // The large chunks went out as the very bytes they were, the smaller ones inside
        // tonic's buffer.
        let sent_as_is = |c: &Bytes| {
            frames
                .iter()
                .filter_map(Frame::data_ref)
                .any(|d| d.as_ptr() == c.as_ptr() && d.len() == c.len())
        };
        for c in &chunks {
            assert_eq!(
                sent_as_is(c),
                c.len() >= SPLICE_MIN_BYTES,
                "{} bytes",
                c.len()
            );
        }
        // The server's trailers close the body.
        assert!(frames.last().unwrap().is_trailers());
    }

    #[test]
    fn a_clients_put_chunks_go_out_as_they_are() {
        use crate::v1::{PutHeader, PutRequest, put_request};
        let chunks = [chunk(1 << 20, 11), chunk(1000, 12), chunk(256 << 10, 13)];
        let requests = || {
            std::iter::once(PutRequest {
                msg: Some(put_request::Msg::Header(PutHeader::default())),
            })
            .chain(chunks.iter().map(|c| PutRequest {
                msg: Some(put_request::Msg::Chunk(c.clone())),
            }))
            .map(Ok::<_, Status>)
            .collect::<Vec<_>>()
        };
        let plain = EncodeBody::new_client(
            ProstCodec::<PutRequest, PutRequest>::default().encoder(),
            futures::stream::iter(requests()),
            None,
            None,
        );
        let spliced = SplicedBody::new(Box::pin(EncodeBody::new_client(
            ProtoCodec::<PutRequest, PutRequest>::default().encoder(),
            futures::stream::iter(requests()),
            None,
            None,
        )));
        let frames = frames(spliced);
        assert_eq!(data(&frames), data(&self::frames(Box::pin(plain))));
        for c in &chunks {
            let as_is = frames
                .iter()
                .filter_map(Frame::data_ref)
                .any(|d| d.as_ptr() == c.as_ptr());
            assert_eq!(as_is, c.len() >= SPLICE_MIN_BYTES, "{} bytes", c.len());
        }
    }

    #[test]
    fn chunks_are_pulled_one_answer_at_a_time() {
        let chunks: Vec<Bytes> = (0..8).map(|i| chunk(SPLICE_MIN_BYTES, i)).collect();
        let pulled = Arc::new(AtomicUsize::new(0));
        let mut body = ours(answers(&chunks), pulled.clone());
        let mut cx = Context::from_waker(Waker::noop());
        let mut seen = 0;
        while seen < chunks.len() {
            let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) else {
                panic!("the body ended early");
            };
            if frame
                .data_ref()
                .is_some_and(|d| d.as_ptr() == chunks[seen].as_ptr())
            {
                seen += 1;
                // The header and the chunks so far: nothing read ahead.
                assert_eq!(pulled.load(Ordering::SeqCst), seen + 1);
            }
        }
    }

    #[test]
    fn outside_a_spliced_body_the_encoder_is_prosts() {
        let chunks = vec![chunk(1 << 20, 7)];
        let encoder = ProtoCodec::<GetResponse, GetResponse>::default().encoder();
        let body = EncodeBody::new_server(
            encoder,
            source(answers(&chunks), Arc::default()),
            None,
            SingleMessageCompressionOverride::default(),
            None,
        );
        let frames = frames(Box::pin(body));
        assert_eq!(data(&frames), tonic_bytes(answers(&chunks)));
        assert!(!recording());
    }

    #[test]
    fn bytes_out_of_step_with_the_recorder_end_the_call() {
        let mut body = SplicedBody::new(http_body_util_empty());
        let left = chunk(SPLICE_MIN_BYTES, 9);
        body.marks.push_back(Some(left));
        // A message that does not end in that key and length.
        let mut frame = vec![0u8, 0, 0, 0, 3];
        frame.extend_from_slice(&[0x0a, 0x01, 0x00]);
        let err = body.splice(Bytes::from(frame)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
    }

    /// An empty body (the splice itself does not poll it).
    fn http_body_util_empty() -> impl Body<Data = Bytes, Error = Status> + Unpin {
        Box::pin(EncodeBody::new_server(
            ProstCodec::<GetResponse, GetResponse>::default().encoder(),
            futures::stream::iter(Vec::<Result<GetResponse, Status>>::new()),
            None,
            SingleMessageCompressionOverride::default(),
            None,
        ))
    }
}
