//! Large values written from their `Bytes`, not through the redis crate.
//!
//! The redis crate packs a command into a buffer of its own before it writes it: a large `SET`
//! copied its value into freshly allocated memory (twice), and faulting those pages in cost
//! more than the socket write. A profile of 100 MiB `SET`s showed 61% of the time in page
//! faults, 12% in `memmove` and 10% in the kernel's copy into the socket. The same bytes
//! written as they are took 73 ms against the crate's 237 ms, and redis-py, which also
//! sends a large value as it is, took 87 ms.
//!
//! So a write of a value of at least [`BULK_BYTES`] goes through a plain connection of its
//! own: the commands' small parts are encoded into one buffer, the value is written from its
//! `Bytes` (the kernel's copy is the only one), and the replies are read back. Connections
//! are pooled (per runtime, like the crate's), one per write in flight, up to [`MAX_CONNS`];
//! past that, writes go through the crate. TLS and cluster connections always go through the
//! crate.
//!
//! A value of [`PIECES_FROM`] bytes or more goes out in pieces of [`WRITE_PIECE`] bytes, and a
//! value the store wants a digest of ([`Arg::Hashed`]) is hashed piece by piece, each piece
//! right after it is written, while it is still in the CPU's cache: the store then needs no
//! second pass over the object.

use std::sync::Mutex;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use redis::{ConnectionAddr, ConnectionInfo, RedisError, RedisResult, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::connector::ObjectSink;
use crate::digest::{Digest, DigestAlgorithm, DigestHasher};

/// Values of at least this many bytes are written through a bulk connection.
pub(super) const BULK_BYTES: usize = 256 << 10;

/// Bulk connections per runtime, at most (writes in flight past that go through the crate).
pub(super) const MAX_CONNS: usize = 16;

/// Arguments of at least this many bytes are written from their own `Bytes`, not copied.
const INLINE_ARG_BYTES: usize = 64 << 10;

/// A value of [`PIECES_FROM`] bytes or more is written in pieces of this many bytes (each
/// piece hashed right after it is written, when asked). Measured on 2026-12-07 (100 MiB
/// `SET`s on loopback, 15 rounds, medians): written whole, 61-64 ms; in pieces of 128 or 256
/// KiB, 54-57 ms, and hashing each piece as it went out cost nothing measurable (54-55 ms),
/// where hashing the whole object beside the write, on another thread, made the put 66-74 ms
/// (xxh3 reads 100 MiB from memory at about 8 GB/s here, and in the cache at 45 GB/s). Pieces
/// of 64 KiB, 512 KiB and 1 MiB gave 57-65 ms.
pub(super) const WRITE_PIECE: usize = 256 << 10;

/// Values of at least this many bytes are written in pieces ([`WRITE_PIECE`]), and hashed as
/// they are written when a store asks for their digest; smaller ones are written whole (one
/// write call), and a store hashes them beside the write. In the bench's alternated runs
/// (2026-12-07), a 1 MiB put through a store took 256-294 us written whole and hashed beside
/// (on the other core, free for an object of that size), 390 us in pieces hashed as written;
/// at 10 MiB, 5.0-5.2 ms against 3.6-4.0 ms; at 100 MiB, 64-66 ms against 51-52 ms.
pub(super) const PIECES_FROM: usize = 8 << 20;

/// Where bulk connections go, and how they log in.
#[derive(Clone, Debug)]
pub(super) struct Target {
    addr: Addr,
    username: Option<String>,
    password: Option<String>,
    db: i64,
    connect_timeout: Duration,
    response_timeout: Duration,
}

#[derive(Clone, Debug)]
enum Addr {
    Tcp(String, u16),
    #[cfg(unix)]
    Unix(std::path::PathBuf),
}

impl Target {
    /// The target of `info`; `None` for a server the crate must speak to (TLS).
    pub(super) fn of(
        info: &ConnectionInfo,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Option<Self> {
        let addr = match info.addr() {
            ConnectionAddr::Tcp(host, port) => Addr::Tcp(host.clone(), *port),
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => Addr::Unix(path.clone()),
            _ => return None,
        };
        let settings = info.redis_settings();
        Some(Target {
            addr,
            username: settings.username().map(str::to_owned),
            password: settings.password().map(str::to_owned),
            db: settings.db(),
            connect_timeout,
            response_timeout,
        })
    }
}

/// A command to write: its arguments, the large ones kept as they are.
#[derive(Default)]
pub(super) struct Commands {
    parts: Vec<Bytes>,
    buf: BytesMut,
    count: usize,
    /// The part to hash as it is written, and with what.
    hashed: Option<(usize, DigestAlgorithm)>,
}

impl Commands {
    /// Add a command of `args`.
    pub(super) fn push<'a>(&mut self, args: impl IntoIterator<Item = Arg<'a>>) -> &mut Self {
        let args: Vec<Arg<'a>> = args.into_iter().collect();
        self.buf
            .put_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            let bytes: &[u8] = match &arg {
                Arg::Slice(s) => s,
                Arg::Bytes(b) | Arg::Hashed(b, _) => b,
            };
            self.buf
                .put_slice(format!("${}\r\n", bytes.len()).as_bytes());
            match arg {
                Arg::Bytes(b) if b.len() >= INLINE_ARG_BYTES => {
                    self.parts.push(self.buf.split().freeze());
                    self.parts.push(b);
                }
                Arg::Hashed(b, algorithm) => {
                    self.parts.push(self.buf.split().freeze());
                    self.hashed = Some((self.parts.len(), algorithm));
                    self.parts.push(b);
                }
                _ => self.buf.put_slice(bytes),
            }
            self.buf.put_slice(b"\r\n");
        }
        self.count += 1;
        self
    }

    fn finish(mut self) -> Encoded {
        if !self.buf.is_empty() {
            self.parts.push(self.buf.split().freeze());
        }
        Encoded {
            parts: self.parts,
            count: self.count,
            hashed: self.hashed,
        }
    }
}

/// Commands ready to write, how many replies they get, and the part to hash as it is written.
struct Encoded {
    parts: Vec<Bytes>,
    count: usize,
    hashed: Option<(usize, DigestAlgorithm)>,
}

/// An argument of a command.
pub(super) enum Arg<'a> {
    Slice(&'a [u8]),
    Bytes(Bytes),
    /// A value written from its own `Bytes` and hashed with the algorithm as it is written (at
    /// most one per [`Commands`]): its digest comes back with the replies.
    Hashed(Bytes, DigestAlgorithm),
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(s: &'a [u8]) -> Self {
        Arg::Slice(s)
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(s: &'a str) -> Self {
        Arg::Slice(s.as_bytes())
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One connection, logged in and on its database.
struct Conn {
    io: Box<dyn Io>,
}

impl Conn {
    async fn connect(target: &Target) -> RedisResult<Self> {
        let io: Box<dyn Io> = match &target.addr {
            Addr::Tcp(host, port) => {
                let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                s.set_nodelay(true)?;
                Box::new(s)
            }
            #[cfg(unix)]
            Addr::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
        };
        let mut conn = Conn { io };
        let mut hello = Commands::default();
        if let Some(password) = &target.password {
            match &target.username {
                Some(user) => hello.push([
                    "AUTH".into(),
                    user.as_str().into(),
                    password.as_str().into(),
                ]),
                None => hello.push(["AUTH".into(), password.as_str().into()]),
            };
        }
        let db = target.db.to_string();
        if target.db != 0 {
            hello.push(["SELECT".into(), db.as_str().into()]);
        }
        if hello.count > 0 {
            for reply in conn.exchange(&hello.finish()).await?.replies {
                reply.extract_error()?;
            }
        }
        Ok(conn)
    }

    /// Write `commands` and read a reply to each (every command written here has a one-line
    /// reply: a status, an integer, an error or a nil); with the digest of the part to hash.
    async fn exchange(&mut self, commands: &Encoded) -> RedisResult<Written> {
        let count = commands.count;
        let mut digest = None;
        for (i, part) in commands.parts.iter().enumerate() {
            let mut hasher = match commands.hashed {
                Some((at, algorithm)) if at == i => DigestHasher::new(algorithm),
                _ => None,
            };
            let piece_len = if part.len() >= PIECES_FROM {
                WRITE_PIECE
            } else {
                part.len().max(1)
            };
            for piece in part.chunks(piece_len) {
                self.io.write_all(piece).await?;
                if let Some(h) = &mut hasher {
                    h.update(piece);
                }
            }
            if let Some(h) = hasher {
                digest = Some(h.finish());
            }
        }
        self.io.flush().await?;
        let mut buf = Vec::with_capacity(64);
        let mut replies = Vec::with_capacity(count);
        let mut start = 0;
        while replies.len() < count {
            match buf[start..].windows(2).position(|w| w == b"\r\n") {
                Some(end) => {
                    let line = &buf[start..start + end + 2];
                    replies.push(redis::parse_redis_value(line)?);
                    start += end + 2;
                }
                None => {
                    let mut chunk = [0u8; 256];
                    let n = self.io.read(&mut chunk).await?;
                    if n == 0 {
                        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
        if start != buf.len() {
            return Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "redis bulk connection: more reply bytes than commands",
            )));
        }
        Ok(Written { replies, digest })
    }
}

/// What [`Pool::run`] got back: a reply per command (server errors among them, as values), and
/// the digest of the value marked [`Arg::Hashed`], if any.
pub(super) struct Written {
    pub(super) replies: Vec<Value>,
    pub(super) digest: Option<Digest>,
}

/// Why a [`Pool::get_into`] failed: the connection or the server, or the caller's memory.
pub(super) enum GetError {
    Redis(RedisError),
    Sink(crate::Error),
}

impl From<RedisError> for GetError {
    fn from(e: RedisError) -> Self {
        GetError::Redis(e)
    }
}

impl From<std::io::Error> for GetError {
    fn from(e: std::io::Error) -> Self {
        GetError::Redis(e.into())
    }
}

/// Longest reply line read before the value: `$` and a length, or an error message.
const MAX_LINE: usize = 64 << 10;

fn protocol_error(what: String) -> GetError {
    GetError::Redis(RedisError::from(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("redis bulk connection: {what}"),
    )))
}

impl Conn {
    /// `GET key`, the value read off the socket straight into `sink` (its room made once the
    /// reply's header gives the size); `false` for a nil reply (no such key).
    async fn get_into(&mut self, key: &[u8], sink: &mut ObjectSink<'_>) -> Result<bool, GetError> {
        let mut get = Commands::default();
        get.push(["GET".into(), Arg::from(key)]);
        for part in &get.finish().parts {
            self.io.write_all(part).await?;
        }
        self.io.flush().await?;
        // The reply's first line, and what came with it.
        let mut buf = Vec::with_capacity(256);
        // Where the search for the CRLF goes on (a CR at the end may start one).
        let mut scanned = 0;
        let line_end = loop {
            if let Some(end) = buf[scanned..].windows(2).position(|w| w == b"\r\n") {
                break scanned + end;
            }
            scanned = buf.len().saturating_sub(1);
            if buf.len() > MAX_LINE {
                return Err(protocol_error(format!(
                    "a reply line longer than {MAX_LINE} bytes"
                )));
            }
            let mut chunk = [0u8; 256];
            let n = self.io.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let (line, rest) = buf.split_at(line_end + 2);
        let len = match line.first() {
            Some(b'$') => std::str::from_utf8(&line[1..line_end])
                .ok()
                .and_then(|n| n.parse::<i64>().ok())
                .ok_or_else(|| {
                    protocol_error(format!(
                        "a bulk reply of length {:?}",
                        String::from_utf8_lossy(&line[1..line_end])
                    ))
                })?,
            Some(b'-') => {
                redis::parse_redis_value(line)?.extract_error()?;
                return Err(protocol_error("an error reply that is no error".into()));
            }
            _ => {
                return Err(protocol_error(format!(
                    "GET answered {:?}",
                    String::from_utf8_lossy(line)
                )));
            }
        };
        let Ok(len) = u64::try_from(len) else {
            // `$-1`: nil, no such key; nothing may follow it.
            if len != -1 || !rest.is_empty() {
                return Err(protocol_error(format!("a bulk reply of length {len}")));
            }
            return Ok(false);
        };
        sink.start(len).map_err(GetError::Sink)?;
        let first = rest.len().min(usize::try_from(len).unwrap_or(usize::MAX));
        sink.put_slice(&rest[..first]).map_err(GetError::Sink)?;
        while sink.remaining() > 0 {
            if sink.read_from(&mut self.io).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
        // The value's closing CRLF, part of which may have come with the header.
        let got = &rest[first..];
        let mut tail = [0u8; 2];
        if got.len() > 2 {
            return Err(protocol_error("more reply bytes than one value".into()));
        }
        tail[..got.len()].copy_from_slice(got);
        self.io.read_exact(&mut tail[got.len()..]).await?;
        if &tail != b"\r\n" {
            return Err(protocol_error("a value not closed by CRLF".into()));
        }
        Ok(true)
    }
}

/// The bulk connections of one runtime.
pub(super) struct Pool {
    target: Target,
    /// Idle connections, and how many there are in all.
    state: Mutex<(Vec<Conn>, usize)>,
}

impl Pool {
    pub(super) fn new(target: Target) -> Self {
        Pool {
            target,
            state: Mutex::new((Vec::new(), 0)),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, (Vec<Conn>, usize)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Write `commands` on a connection of the pool and read their replies (server errors
    /// among them, as values); `None` when [`MAX_CONNS`] are busy. A connection that failed
    /// (I/O, timeout, the call cancelled) is dropped with the idle ones, and a write that failed
    /// on a connection that had been idle (the server may have restarted since) is written
    /// again at once on a new one, as the crate's connection manager reconnects: the commands
    /// written here (`SET`, `PUBLISH`, `WAIT`) can be repeated.
    pub(super) async fn run(&self, commands: Commands) -> Option<RedisResult<Written>> {
        let commands = commands.finish();
        let mut lease = self.lease()?;
        let reused = lease.conn.is_some();
        let first = self.attempt(&mut lease, &commands).await;
        drop(lease);
        Some(match first {
            Err(e) if reused && e.is_io_error() && !e.is_timeout() => {
                let mut lease = self.lease()?;
                self.attempt(&mut lease, &commands).await
            }
            done => done,
        })
    }

    /// An idle connection, or room for a new one; `None` when [`MAX_CONNS`] are busy.
    fn lease(&self) -> Option<Lease<'_>> {
        let mut s = self.state();
        let conn = match s.0.pop() {
            Some(c) => Some(c),
            None if s.1 < MAX_CONNS => {
                s.1 += 1;
                None
            }
            None => return None,
        };
        Some(Lease {
            pool: self,
            conn,
            healthy: false,
        })
    }

    /// `lease`'s connection, made first if it has none.
    async fn connection<'l>(&self, lease: &'l mut Lease<'_>) -> RedisResult<&'l mut Conn> {
        let target = &self.target;
        let conn = match lease.conn.take() {
            Some(c) => c,
            None => tokio::time::timeout(target.connect_timeout, Conn::connect(target))
                .await
                .map_err(|_| timed_out("connect"))??,
        };
        Ok(lease.conn.insert(conn))
    }

    /// `commands` on `lease`'s connection, made first if it has none.
    async fn attempt(&self, lease: &mut Lease<'_>, commands: &Encoded) -> RedisResult<Written> {
        let response_timeout = self.target.response_timeout;
        let conn = self.connection(lease).await?;
        let replies = tokio::time::timeout(response_timeout, conn.exchange(commands))
            .await
            .map_err(|_| timed_out("reply"))??;
        lease.healthy = true;
        Ok(replies)
    }

    /// `GET key` on a connection of the pool, the value read into `sink` ([`Conn::get_into`]);
    /// `None` when [`MAX_CONNS`] are busy. A connection that had been idle and fails with an
    /// I/O error is replaced and the `GET` sent again at once (the sink starts over), as
    /// [`Pool::run`] does; a connection whose reply was not read to its end is dropped.
    pub(super) async fn get_into(
        &self,
        key: &[u8],
        sink: &mut ObjectSink<'_>,
    ) -> Option<Result<bool, GetError>> {
        let mut lease = self.lease()?;
        let reused = lease.conn.is_some();
        let first = self.get_attempt(&mut lease, key, sink).await;
        drop(lease);
        Some(match first {
            Err(GetError::Redis(e)) if reused && e.is_io_error() && !e.is_timeout() => {
                let mut lease = self.lease()?;
                self.get_attempt(&mut lease, key, sink).await
            }
            done => done,
        })
    }

    async fn get_attempt(
        &self,
        lease: &mut Lease<'_>,
        key: &[u8],
        sink: &mut ObjectSink<'_>,
    ) -> Result<bool, GetError> {
        let response_timeout = self.target.response_timeout;
        let conn = self.connection(lease).await?;
        let found = tokio::time::timeout(response_timeout, conn.get_into(key, sink))
            .await
            .map_err(|_| timed_out("reply"))??;
        lease.healthy = true;
        Ok(found)
    }
}

/// One of a pool's connections while a write uses it: back to the pool when the write went
/// through, dropped (and uncounted) otherwise.
struct Lease<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
    healthy: bool,
}

impl Drop for Lease<'_> {
    /// A failed connection takes the idle ones with it: the server likely went away (a
    /// restart), and each would fail its next write in turn.
    fn drop(&mut self) {
        let mut s = self.pool.state();
        match self.conn.take() {
            Some(c) if self.healthy => s.0.push(c),
            _ => {
                let idle = s.0.len();
                s.0.clear();
                s.1 -= 1 + idle;
            }
        }
    }
}

fn timed_out(what: &str) -> RedisError {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("redis bulk connection: {what} timed out"),
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_keep_large_values_as_they_are() {
        let value = Bytes::from(vec![7u8; INLINE_ARG_BYTES]);
        let mut c = Commands::default();
        c.push(["SET".into(), "k".into(), Arg::Bytes(value.clone())]);
        c.push(["PUBLISH".into(), "ch".into(), "1".into()]);
        let Encoded { parts, count, .. } = c.finish();
        assert_eq!(count, 2);
        assert_eq!(parts.len(), 3);
        assert_eq!(
            &parts[0][..],
            format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n", value.len()).as_bytes()
        );
        assert_eq!(
            parts[1].as_ptr(),
            value.as_ptr(),
            "the value itself, not a copy"
        );
        assert_eq!(
            &parts[2][..],
            b"\r\n*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$1\r\n1\r\n"
        );
    }

    /// Memory for a test read.
    #[derive(Default)]
    struct Room(Vec<std::mem::MaybeUninit<u8>>);

    impl crate::connector::ObjectMemory for Room {
        fn allocate(&mut self, len: usize) -> crate::Result<()> {
            self.0 = vec![std::mem::MaybeUninit::new(0); len];
            Ok(())
        }
        fn room(&mut self) -> &mut [std::mem::MaybeUninit<u8>] {
            &mut self.0
        }
    }

    /// `reply` answered to a GET one byte per read (a CRLF split across reads among them):
    /// whether it found a value, and the digest and length of what it wrote.
    async fn get_one_byte_at_a_time(
        reply: &'static [u8],
    ) -> (Result<bool, GetError>, Option<crate::Digest>, u64) {
        let (client, mut server) = tokio::io::duplex(1);
        let answer = tokio::spawn(async move {
            // The command first (`*2 $3 GET $1 k`), then the reply.
            let mut command = [0u8; 20];
            server.read_exact(&mut command).await.unwrap();
            server.write_all(reply).await.unwrap();
            server
        });
        let mut conn = Conn {
            io: Box::new(client),
        };
        let mut room = Room::default();
        let mut sink = ObjectSink::new(&mut room).hashing(crate::DigestAlgorithm::Xxh3);
        let found = conn.get_into(b"k", &mut sink).await;
        let _server = answer.await.unwrap();
        (found, sink.digest(), sink.filled())
    }

    #[tokio::test]
    async fn a_reply_read_one_byte_at_a_time_is_whole() {
        let (found, digest, len) = get_one_byte_at_a_time(b"$5\r\nhello\r\n").await;
        assert!(matches!(found, Ok(true)));
        assert_eq!(len, 5);
        assert_eq!(digest, crate::DigestAlgorithm::Xxh3.digest(b"hello"));
        let (found, _, len) = get_one_byte_at_a_time(b"$-1\r\n").await;
        assert!(matches!(found, Ok(false)));
        assert_eq!(len, 0);
        let (found, _, _) = get_one_byte_at_a_time(b"$5\r\nhello\n\n").await;
        assert!(found.is_err(), "a value not closed by CRLF");
    }

    /// A value of many pieces and a ragged end, marked to hash: the server reads exactly the
    /// command (the value's bytes in order), and the digest is the whole value's.
    #[tokio::test]
    async fn a_hashed_value_goes_out_whole_in_pieces_with_its_digest() {
        let value: Bytes = (0..PIECES_FROM + 12_345)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        for algorithm in [DigestAlgorithm::Xxh3, DigestAlgorithm::Blake3] {
            let mut c = Commands::default();
            c.push([
                "SET".into(),
                "k".into(),
                Arg::Hashed(value.clone(), algorithm),
            ]);
            let encoded = c.finish();
            let expected: Vec<u8> = encoded.parts.iter().flat_map(|p| p.to_vec()).collect();
            let (client, mut server) = tokio::io::duplex(64 << 10);
            let len = expected.len();
            let answer = tokio::spawn(async move {
                let mut got = vec![0u8; len];
                server.read_exact(&mut got).await.unwrap();
                server.write_all(b"+OK\r\n").await.unwrap();
                (got, server)
            });
            let mut conn = Conn {
                io: Box::new(client),
            };
            let written = conn.exchange(&encoded).await.unwrap();
            let (got, _server) = answer.await.unwrap();
            assert!(got == expected, "the bytes written are the command's");
            assert_eq!(written.replies, vec![Value::Okay]);
            assert_eq!(written.digest, algorithm.digest(&value));
        }
    }
}
