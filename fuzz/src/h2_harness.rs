//! The server as a client's HTTP/2 connection reaches it: the input is everything a client
//! writes after the connection preface, fed through an in-memory pipe into the real server
//! stack (`proxystore_server::fuzzing::serve_connection`: hyper and h2 with the server's
//! window, frame-size and keepalive settings, tonic's router, health, reflection and the store
//! service with its token check and limits), so that hostile framing, header blocks and
//! request headers are fuzzed, not only request bodies.
//!
//! Each input gets a fresh store holding one object ([`FIXTURE_KEY`]) on a current-thread
//! runtime whose clock is paused (it jumps ahead whenever every task waits on a timer, so
//! timeouts cost nothing). The client writes the preface and the input, leaves its side open
//! for [`HOLD`] (longer than the store's idle timeout, shorter than the keepalive interval),
//! then closes it, reading everything the server sends until the server closes too.
//!
//! Checks besides "no panic" (in any task, not only the harness's own):
//! - the server closes the connection within [`BOUND`] of the client's preface, and the tasks
//!   serving it end within [`BOUND`] after that;
//! - the server's bytes are whole HTTP/2 frames: the first a SETTINGS frame, each no longer
//!   than the largest frame the client allowed (16 KiB, or a larger
//!   `SETTINGS_MAX_FRAME_SIZE` the input sent), of a type a server sends, on stream 0 when the
//!   type is a connection's, and otherwise on a stream the input's frames named: DATA, HEADERS
//!   and CONTINUATION only on a client's (odd) stream. (RST_STREAM may name an even one: h2
//!   resets the stream of a malformed header block or a self-dependent PRIORITY frame before it
//!   checks that the client could open it; see `crash-rst-even-stream` in the corpus.)
//! - afterwards no upload bytes stay reserved and the total limit holds.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body as _, Frame as BodyFrame};
use prost::Message;
use proxystore_proto::v1;
use proxystore_server::fuzzing::serve_connection;
use proxystore_server::{ServerConfig, StoreService, store_service};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tonic::codegen::{Service, http};
use tonic::transport::server::Connected;

/// The client connection preface (RFC 9113, section 3.4) the harness writes before the input.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The token the server requires.
pub const TOKEN: &str = "fuzz-token";
/// Largest object the server accepts.
pub const MAX_OBJECT: u64 = 48 << 10;
/// Most bytes the server stores at once.
pub const MAX_TOTAL: u64 = 96 << 10;
/// Largest gRPC message the server decodes or encodes.
pub const MAX_MESSAGE: usize = 64 << 10;
/// Chunk size of the server's downloads (and of the recorded clients' uploads).
pub const CHUNK: usize = 4 << 10;
/// How long a Put stream may stall before the server abandons it.
pub const IDLE: Duration = Duration::from_secs(1);
/// How long the client keeps its side open after writing the input.
pub const HOLD: Duration = Duration::from_secs(5);
/// How long (on the paused clock) the server may keep the connection open, and then its tasks
/// alive: well past the keepalive interval and timeout (20 s + 10 s), which close a
/// connection whose client does not answer pings.
pub const BOUND: Duration = Duration::from_secs(120);
/// Key of the object in the store at the start of every input.
pub const FIXTURE_KEY: &str = "fixture";
/// The default `SETTINGS_MAX_FRAME_SIZE` (RFC 9113, section 6.5.2).
pub const DEFAULT_MAX_FRAME: usize = 16 << 10;

/// The contents of [`FIXTURE_KEY`]: 20 KiB, five download chunks.
pub fn fixture() -> Vec<u8> {
    (0..20u32 << 10).map(|i| (i % 251) as u8).collect()
}

/// The settings of the fuzzed server (memory backend).
pub fn config() -> ServerConfig {
    let mut config = ServerConfig::default()
        .max_object_bytes(MAX_OBJECT)
        .max_total_bytes(MAX_TOTAL)
        .token(TOKEN)
        .idle_timeout(Some(IDLE));
    config.max_message_bytes = MAX_MESSAGE;
    config.chunk_size = CHUNK;
    config.sweep_interval = Duration::from_secs(5);
    config
}

/// A fresh store service of [`config`] holding the fixture object. Must run in a tokio runtime.
pub async fn store() -> StoreService {
    let store = match store_service(&config()).await {
        Ok(s) => s,
        Err(e) => unreachable!("the fuzzing service builds: {e}"),
    };
    let header = v1::PutRequest {
        msg: Some(v1::put_request::Msg::Header(v1::PutHeader {
            key: FIXTURE_KEY.into(),
            size: Some(fixture().len() as u64),
            ..Default::default()
        })),
    };
    let chunk = v1::PutRequest {
        msg: Some(v1::put_request::Msg::Chunk(Bytes::from(fixture()))),
    };
    let (code, _) = call(&store, "Put", &[&header, &chunk]).await;
    assert_eq!(code, 0, "fixture put");
    store
}

/// The store's figures (`Stat`, called in-process).
pub async fn stat(store: &StoreService) -> v1::StatResponse {
    let (code, messages) = call(store, "Stat", &[&v1::StatRequest {}]).await;
    assert_eq!(code, 0, "stat");
    match messages.as_slice() {
        [m] => match v1::StatResponse::decode(m.clone()) {
            Ok(s) => s,
            Err(e) => unreachable!("the service's own message decodes: {e}"),
        },
        other => unreachable!("one Stat message expected: {other:?}"),
    }
}

/// One frame the server sent.
#[derive(Debug)]
pub struct Frame {
    /// The frame type (0 DATA, 1 HEADERS, 3 RST_STREAM, 4 SETTINGS, ...).
    pub kind: u8,
    /// The flags.
    pub flags: u8,
    /// The stream identifier.
    pub stream: u32,
    /// The payload.
    pub payload: Bytes,
}

/// What a connection did.
#[derive(Debug)]
pub struct Outcome {
    /// The server's frames, in order.
    pub frames: Vec<Frame>,
    /// The store's figures once the connection and its tasks ended.
    pub stat: v1::StatResponse,
}

impl Outcome {
    /// The gRPC messages the server sent on `stream` (its DATA payloads, unframed).
    pub fn messages(&self, stream: u32) -> Vec<Bytes> {
        let mut data = BytesMut::new();
        for f in self
            .frames
            .iter()
            .filter(|f| f.kind == 0 && f.stream == stream)
        {
            data.extend_from_slice(&f.payload);
        }
        let mut data = data.freeze();
        let mut out = Vec::new();
        while data.len() >= 5 {
            data.advance(1);
            let len = (data.get_u32() as usize).min(data.len());
            out.push(data.split_to(len));
        }
        out
    }

    /// The streams the server answered on, in order of their first frame.
    pub fn streams(&self) -> Vec<u32> {
        let mut out = Vec::new();
        for f in &self.frames {
            if f.stream != 0 && !out.contains(&f.stream) {
                out.push(f.stream);
            }
        }
        out
    }
}

/// The fuzz target: never panics on any input, and checks the invariants in the module docs.
pub fn h2_connection(data: &[u8]) {
    run(data);
}

/// Serve `data` as a client connection (after the preface), check the invariants in the
/// module docs, and return what happened (for the replay tests).
pub fn run(data: &[u8]) -> Outcome {
    install_panic_flag();
    PANICKED.set(false);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => unreachable!("a current-thread runtime always builds: {e}"),
    };
    let outcome = runtime.block_on(connection(data));
    drop(runtime);
    assert!(
        !PANICKED.get(),
        "a task panicked while serving the connection"
    );
    outcome
}

async fn connection(data: &[u8]) -> Outcome {
    let store = store().await;
    let metrics = tokio::runtime::Handle::current().metrics();
    // The store's sweeper.
    let tasks_before = metrics.num_alive_tasks();
    let (client_io, server_io) = tokio::io::duplex(64 << 10);
    if let Err(e) = serve_connection(&config(), store.clone(), Conn(server_io)).await {
        unreachable!("serving a connection starts: {e}");
    }
    let (mut rd, mut wr) = tokio::io::split(client_io);
    let write = async {
        // A server that has closed the connection refuses the rest of the input: nothing
        // more to do then.
        if wr.write_all(PREFACE).await.is_ok() && wr.write_all(data).await.is_ok() {
            tokio::time::sleep(HOLD).await;
        }
        let _ = wr.shutdown().await;
    };
    let read = async {
        let mut out = Vec::new();
        let _ = rd.read_to_end(&mut out).await;
        out
    };
    let output = match tokio::time::timeout(BOUND, async { tokio::join!(write, read).1 }).await {
        Ok(o) => o,
        Err(_) => unreachable!("the server kept the connection open for {BOUND:?}"),
    };
    let deadline = tokio::time::Instant::now() + BOUND;
    while metrics.num_alive_tasks() > tasks_before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} tasks still alive {BOUND:?} after the connection closed",
            metrics.num_alive_tasks() - tasks_before
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let frames = frames(&output, &client(data));
    let stat = stat(&store).await;
    assert_eq!(stat.bytes_in_flight, 0, "reservation left: {stat:?}");
    assert!(
        stat.bytes_used <= MAX_TOTAL,
        "total limit exceeded: {stat:?}"
    );
    Outcome { frames, stat }
}

/// What the server may know of the client from its frames.
#[derive(Debug)]
pub struct Client {
    /// The largest frame the server may send: the largest `SETTINGS_MAX_FRAME_SIZE` the
    /// client's SETTINGS frames carry (in its valid range), or the default.
    pub max_frame: usize,
    /// The stream identifiers the client's frames carry.
    pub streams: BTreeSet<u32>,
}

/// What the whole frames at the start of `input` tell the server (it reads no further).
pub fn client(mut input: &[u8]) -> Client {
    let mut client = Client {
        max_frame: DEFAULT_MAX_FRAME,
        streams: BTreeSet::new(),
    };
    while input.len() >= 9 {
        let len = usize::from(input[0]) << 16 | usize::from(input[1]) << 8 | usize::from(input[2]);
        let (kind, flags) = (input[3], input[4]);
        let stream = u32::from_be_bytes([input[5], input[6], input[7], input[8]]) & 0x7fff_ffff;
        let Some(payload) = input.get(9..9 + len) else {
            break;
        };
        client.streams.insert(stream);
        if kind == 4 && flags & 1 == 0 && stream == 0 && len % 6 == 0 {
            for setting in payload.chunks_exact(6) {
                let id = u16::from_be_bytes([setting[0], setting[1]]);
                let value =
                    u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]) as usize;
                if id == 5 && (DEFAULT_MAX_FRAME..1 << 24).contains(&value) {
                    client.max_frame = client.max_frame.max(value);
                }
            }
        }
        input = &input[9 + len..];
    }
    client
}

/// The server's bytes as frames, checked as the module docs say against what `client` sent.
pub fn frames(output: &[u8], client: &Client) -> Vec<Frame> {
    let max_frame = client.max_frame;
    let mut rest = Bytes::copy_from_slice(output);
    let mut out: Vec<Frame> = Vec::new();
    while !rest.is_empty() {
        assert!(
            rest.len() >= 9,
            "the server's output ends in a frame header"
        );
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let (kind, flags) = (rest[3], rest[4]);
        let id = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
        rest.advance(9);
        assert!(len <= max_frame, "a {len}-byte frame (limit {max_frame})");
        assert!(
            rest.len() >= len,
            "the server's output ends in a frame ({} of {len} bytes)",
            rest.len()
        );
        assert_eq!(id >> 31, 0, "reserved bit set");
        let frame = Frame {
            kind,
            flags,
            stream: id,
            payload: rest.split_to(len),
        };
        match kind {
            // SETTINGS, PING, GOAWAY
            4 | 6 | 7 => assert_eq!(frame.stream, 0, "{frame:?}"),
            // DATA, HEADERS, CONTINUATION: answers on streams the client opened.
            0 | 1 | 9 => assert!(
                frame.stream % 2 == 1 && client.streams.contains(&frame.stream),
                "{frame:?}"
            ),
            // RST_STREAM: a stream the client named.
            3 => assert!(
                frame.stream != 0 && client.streams.contains(&frame.stream),
                "{frame:?}"
            ),
            // WINDOW_UPDATE: the connection's or a stream the client named.
            8 => assert!(
                frame.stream == 0 || client.streams.contains(&frame.stream),
                "{frame:?}"
            ),
            _ => unreachable!("the server sent a frame of type {kind}"),
        }
        if out.is_empty() {
            assert!(
                frame.kind == 4 && frame.flags & 1 == 0,
                "the server's first frame is not its SETTINGS: {frame:?}"
            );
        }
        out.push(frame);
    }
    out
}

/// A connection as tonic's server takes it: `T` with (empty) connection info.
#[derive(Debug)]
pub struct Conn<T>(pub T);

impl<T> Connected for Conn<T> {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl<T: AsyncRead + Unpin> AsyncRead for Conn<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Conn<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

thread_local! {
    /// Whether a panic happened on this thread (where the current-thread runtime runs every
    /// task) since the last reset; tokio catches a task's panic, so the harness asks here.
    static PANICKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Make every panic also set [`PANICKED`] (then run the hook there was: libFuzzer's aborts).
fn install_panic_flag() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.set(true);
            previous(info);
        }));
    });
}

/// Call `method` of the store service in-process with `messages` and the right token; its
/// gRPC status and response messages.
async fn call(
    store: &StoreService,
    method: &str,
    messages: &[&(dyn Encode + Sync)],
) -> (i32, Vec<Bytes>) {
    let mut body = Vec::new();
    for m in messages {
        let payload = m.encoded();
        body.push(0);
        body.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        body.extend_from_slice(&payload);
    }
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!(
            "http://fuzz/proxystore_rs.v1.StoreService/{method}"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Whole(Some(Bytes::from(body))));
    let request = match request {
        Ok(r) => r,
        Err(e) => unreachable!("a fixed request builds: {e}"),
    };
    let response = match store.clone().call(request).await {
        Ok(r) => r,
        Err(e) => match e {},
    };
    let (parts, mut body) = response.into_parts();
    let mut code = grpc_status(&parts.headers);
    let mut data = BytesMut::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = match frame {
            Ok(f) => f,
            Err(status) => {
                code = Some(status.code() as i32);
                break;
            }
        };
        match frame.into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(frame) => {
                if let Some(t) = frame.trailers_ref() {
                    code = code.or(grpc_status(t));
                }
            }
        }
    }
    let mut data = data.freeze();
    let mut out = Vec::new();
    while data.len() >= 5 {
        data.advance(1);
        let len = (data.get_u32() as usize).min(data.len());
        out.push(data.split_to(len));
    }
    (code.unwrap_or(-1), out)
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// A protobuf message as bytes (object-safe, for [`call`]).
trait Encode {
    fn encoded(&self) -> Vec<u8>;
}

impl<M: Message> Encode for M {
    fn encoded(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

/// A request body in one piece.
struct Whole(Option<Bytes>);

impl http_body::Body for Whole {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.take().map(|b| Ok(BodyFrame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
}
