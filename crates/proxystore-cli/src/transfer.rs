//! `proxystore put` and `proxystore get`: streamed transfers in constant memory.

use std::fs::File;
use std::io::{Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use clap::{ArgGroup, Args, ValueEnum};
use futures::StreamExt as _;
use proxystore::connector::grpc::{DEFAULT_CHUNK_SIZE, UploadOptions};
use proxystore::digest::DigestHasher;
use proxystore::{Codec, Digest, DigestAlgorithm, Key, Reference};

use crate::client::ClientArgs;
use crate::exit::{self, Coded};
use crate::util::{Progress, parse_duration, parse_range, print, to_hex};

/// Chunks read from the input and in flight to the server at once (each
/// [`DEFAULT_CHUNK_SIZE`]): the whole memory a put needs, whatever the object's size.
const CHUNKS_IN_FLIGHT: usize = 4;

/// How `put --reference` writes the reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum RefEncoding {
    /// Base64 of the protobuf bytes (`proxy.proto`), one line.
    Base64,
    /// Hexadecimal of the protobuf bytes, one line.
    Hex,
    /// The reference's fields as JSON, one line.
    Json,
}

/// Options of `proxystore put`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("as_reference").args(["reference", "json"]).multiple(false)))]
pub(crate) struct PutArgs {
    /// The file to upload, or `-` for standard input.
    #[arg(value_name = "FILE|-")]
    input: PathBuf,

    /// Store the object under this key (replacing any object there) instead of a key the
    /// server chooses.
    #[arg(long)]
    key: Option<String>,

    /// Evict the object after this long (e.g. 90s, 10m, 1h); default: kept until evicted.
    #[arg(long, value_parser = parse_duration)]
    ttl: Option<Duration>,

    /// Print a serialized proxy reference instead of the key, in ENCODING: base64 (the
    /// default), hex or json. Any process that can reach the server resolves it, e.g. a Rust
    /// program with `Proxy::<Vec<u8>>::from_reference(Reference::from_bytes(..)?)`.
    #[arg(
        long,
        value_enum,
        value_name = "ENCODING",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "base64"
    )]
    reference: Option<RefEncoding>,

    /// Print the reference as JSON (same as --reference=json).
    #[arg(long)]
    json: bool,

    /// Store name written into the reference (default: the server URL). A process that has a
    /// store of this name registered resolves through it; otherwise it builds one from the
    /// reference.
    #[arg(long, value_name = "NAME", requires = "as_reference")]
    store: Option<String>,

    /// Mark the reference evict-on-resolve: the object is evicted once a proxy resolves it.
    #[arg(long, requires = "as_reference")]
    evict_on_resolve: bool,

    /// Type name written into the reference (informational, e.g. `alloc::vec::Vec<u8>`).
    #[arg(long, value_name = "NAME", requires = "as_reference")]
    type_name: Option<String>,

    /// Never show a progress bar (one is shown on a terminal for transfers above 4 MiB).
    #[arg(long)]
    no_progress: bool,

    #[command(flatten)]
    client: ClientArgs,
}

impl PutArgs {
    fn encoding(&self) -> Option<RefEncoding> {
        if self.json {
            Some(RefEncoding::Json)
        } else {
            self.reference
        }
    }
}

/// What was read from the input.
struct ReadSummary {
    bytes: u64,
    digest: Option<Digest>,
}

pub(crate) async fn put(args: PutArgs) -> anyhow::Result<u8> {
    let connector = args.client.connector()?;
    let url = args.client.url.clone();
    let (reader, size, label): (Box<dyn Read + Send>, Option<u64>, String) =
        if args.input.as_os_str() == "-" {
            (
                Box::new(std::io::stdin()),
                None,
                "standard input".to_owned(),
            )
        } else {
            let path = &args.input;
            let file =
                File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            let meta = file
                .metadata()
                .with_context(|| format!("cannot read {}", path.display()))?;
            if meta.is_dir() {
                return Err(
                    Coded::new(exit::USAGE, format!("{} is a directory", path.display())).into(),
                );
            }
            // Pipes and devices report no useful length.
            let size = meta.is_file().then_some(meta.len());
            (Box::new(file), size, path.display().to_string())
        };
    let encoding = args.encoding();
    let progress = Progress::new(size, "put", args.no_progress);
    let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
    // A plain thread does the blocking reads: the upload itself runs on the library's I/O
    // runtime, which must not block on a slow pipe or disk.
    let input = Arc::new(InputClock::new(args.client.timeout()));
    let reader_thread = std::thread::Builder::new()
        .name("proxystore-put-reader".into())
        .spawn({
            let progress = progress.clone();
            let label = label.clone();
            let hash = encoding.is_some();
            let input = input.clone();
            move || read_chunks(reader, &label, &tx, &progress, hash, &input)
        })
        .context("cannot start the reader thread")?;
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let options = UploadOptions {
        key: args.key.clone().map(Key::from),
        size,
        ttl: args.ttl,
        ..UploadOptions::default()
    };
    let result = connector.put_stream(stream, options).await;
    progress.finish();
    // On failure the reader may be blocked on input that never ends: leave it, we exit.
    let timeout = args.client.timeout();
    if let Err(proxystore::Error::Timeout { .. }) = &result
        && input.silent_for() >= timeout
    {
        return Err(Coded::new(
            exit::UNREACHABLE,
            format!(
                "put {label} to {url}: {label} sent nothing for {timeout:?}, so the upload \
                 was cancelled; nothing was stored"
            ),
        )
        .with_hint(
            "the input was silent, not the server: raise --timeout (PROXYSTORE_TIMEOUT) for a \
             producer that pauses longer",
        )
        .into());
    }
    let key = result.with_context(|| format!("put {label} to {url}"))?;
    let summary = reader_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the reader thread failed"))?
        .context("the input ended abnormally")?;

    match encoding {
        None => print(&format!("{key}\n"))?,
        Some(encoding) => {
            let mut r = Reference::new(
                args.store.clone().unwrap_or_else(|| url.clone()),
                args.client.reference_config()?,
                key,
            );
            r.size = summary.bytes;
            r.digest = summary.digest;
            r.codec = Codec::Raw;
            r.type_name = args.type_name.clone().unwrap_or_default();
            r.evict_on_resolve = args.evict_on_resolve;
            let text = match encoding {
                RefEncoding::Base64 => {
                    base64::engine::general_purpose::STANDARD.encode(r.to_bytes())
                }
                RefEncoding::Hex => to_hex(&r.to_bytes()),
                RefEncoding::Json => r.to_json(),
            };
            print(&format!("{text}\n"))?;
        }
    }
    Ok(exit::OK)
}

/// When the input last gave bytes (or ended), so that a timeout can be told apart: a silent
/// input or a silent server.
///
/// It also says how long a partly filled chunk may wait for more input before it is sent as it
/// is: a slow producer's bytes keep the upload moving, so the timeout measures silence, not a
/// slow trickle.
struct InputClock {
    start: Instant,
    last_ms: AtomicU64,
    flush_after: Duration,
}

impl InputClock {
    fn new(timeout: Duration) -> Self {
        InputClock {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            flush_after: (timeout / 4).min(Duration::from_secs(1)),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis().min(u128::from(u64::MAX)) as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        self.start
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Read `reader` in chunks into `tx` until end of input; a read error goes into `tx` too, so
/// that the upload is cancelled rather than committed short.
fn read_chunks(
    mut reader: Box<dyn Read + Send>,
    label: &str,
    tx: &tokio::sync::mpsc::Sender<proxystore::Result<Bytes>>,
    progress: &Progress,
    hash: bool,
    input: &InputClock,
) -> Option<ReadSummary> {
    let mut hasher = hash
        .then(|| DigestHasher::new(DigestAlgorithm::Xxh3))
        .flatten();
    let mut total = 0u64;
    loop {
        let mut buf = BytesMut::zeroed(DEFAULT_CHUNK_SIZE);
        let (n, ended) = match read_full(&mut reader, &mut buf, input, input.flush_after) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Err(proxystore::Error::backend(
                    "cli",
                    format!("cannot read {label}"),
                    e,
                )));
                return None;
            }
        };
        if n == 0 {
            break;
        }
        buf.truncate(n);
        if let Some(h) = hasher.as_mut() {
            h.update(&buf);
        }
        total += n as u64;
        progress.inc(n as u64);
        if tx.blocking_send(Ok(buf.freeze())).is_err() {
            // The upload ended (failed); nothing more to read for.
            return None;
        }
        if ended {
            break;
        }
    }
    Some(ReadSummary {
        bytes: total,
        digest: hasher.map(|h| h.finish()),
    })
}

/// Fill `buf` unless the input ends first, or has been trickling in for `flush_after`; the
/// number of bytes read and whether the input ended.
fn read_full(
    reader: &mut impl Read,
    buf: &mut [u8],
    input: &InputClock,
    flush_after: Duration,
) -> std::io::Result<(usize, bool)> {
    let started = Instant::now();
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => {
                input.touch();
                return Ok((filled, true));
            }
            Ok(n) => {
                input.touch();
                filled += n;
                if started.elapsed() >= flush_after {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((filled, false))
}

/// Options of `proxystore get`.
#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// Key of the object (as printed by `proxystore put`).
    key: String,

    /// Write to FILE instead of standard output (`-`: standard output). The file appears only
    /// once the whole object has arrived and matched its digest.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// Fetch only bytes START..END (end exclusive, clamped to the object): e.g. 0..1024,
    /// 1MiB.., ..4KiB.
    #[arg(long, value_name = "START..END", value_parser = parse_range)]
    range: Option<Range<u64>>,

    /// Never show a progress bar (one is shown on a terminal for transfers above 4 MiB).
    #[arg(long)]
    no_progress: bool,

    #[command(flatten)]
    client: ClientArgs,
}

/// Where `get` writes.
enum Sink {
    Stdout(std::io::StdoutLock<'static>),
    File {
        tmp: tempfile::NamedTempFile,
        path: PathBuf,
    },
}

impl Sink {
    fn open(output: Option<&Path>) -> anyhow::Result<Self> {
        match output {
            None => Ok(Sink::Stdout(std::io::stdout().lock())),
            Some(p) if p.as_os_str() == "-" => Ok(Sink::Stdout(std::io::stdout().lock())),
            Some(p) => {
                let dir = match p.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                // Written beside the target and renamed at the end, so a failed transfer
                // leaves no partial file under the target's name.
                let tmp = tempfile::Builder::new()
                    .prefix(".proxystore-get-")
                    .tempfile_in(dir)
                    .with_context(|| format!("cannot write in {}", dir.display()))?;
                Ok(Sink::File {
                    tmp,
                    path: p.to_owned(),
                })
            }
        }
    }

    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout(o) => o.write_all(b),
            Sink::File { tmp, .. } => tmp.write_all(b),
        }
    }

    fn commit(self) -> anyhow::Result<()> {
        match self {
            Sink::Stdout(mut o) => o.flush().map_err(exit::output_error),
            Sink::File { tmp, path } => {
                tmp.persist(&path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                Ok(())
            }
        }
    }
}

pub(crate) async fn get(args: GetArgs) -> anyhow::Result<u8> {
    let connector = args.client.connector()?;
    let url = &args.client.url;
    let key = Key::from(args.key.as_str());
    let stream = connector
        .get_stream(&key, args.range.clone())
        .await
        .with_context(|| format!("get {key} from {url}"))?;
    let Some(mut stream) = stream else {
        return Err(Coded::new(exit::NOT_FOUND, format!("no object {key} on {url}")).into());
    };
    let info = stream.info.clone();
    // A digest covers the whole object: only a full download can be checked against it.
    let whole = info.offset == 0 && info.size == info.object_size;
    let mut hasher = info
        .digest
        .as_ref()
        .filter(|_| whole)
        .and_then(|d| DigestHasher::new(d.algorithm()));
    let mut sink = Sink::open(args.output.as_deref())?;
    let to_file = matches!(sink, Sink::File { .. });
    let progress = Progress::new(Some(info.size), "get", args.no_progress);
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                progress.finish();
                return Err(anyhow::Error::new(e).context(format!(
                    "get {key} from {url}: the transfer broke off after {} of {} bytes",
                    progress.position(),
                    info.size
                )));
            }
        };
        if let Some(h) = hasher.as_mut() {
            h.update(&chunk);
        }
        if let Err(e) = sink.write_all(&chunk) {
            progress.finish();
            return Err(match sink {
                Sink::Stdout(_) => exit::output_error(e),
                Sink::File { path, .. } => {
                    anyhow::Error::new(e).context(format!("cannot write {}", path.display()))
                }
            });
        }
        progress.inc(chunk.len() as u64);
    }
    progress.finish();
    if let (Some(h), Some(expected)) = (hasher, info.digest) {
        let actual = h.finish();
        if actual != expected {
            return Err(anyhow::Error::new(proxystore::Error::DigestMismatch {
                store: url.clone(),
                key,
                expected: expected.to_string(),
                actual: actual.to_string(),
            })
            .context(if to_file {
                "the downloaded bytes are corrupt; the output file was not written"
            } else {
                "the downloaded bytes are corrupt"
            }));
        }
    }
    sink.commit()?;
    Ok(exit::OK)
}
