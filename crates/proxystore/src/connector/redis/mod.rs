//! The Redis connector: one Redis string value per object.
//!
//! Objects are stored under `prefix + key`, where `key` is a random UUID chosen by the connector.
//! Keys handed back by users are only ever used as Redis keys, which are binary-safe, so a hostile
//! key can name nothing but another Redis key under the same prefix.
//!
//! With [`RedisConfig::cluster`] the connector speaks to a Redis Cluster through the redis
//! crate's cluster client: keys spread over the slots, `MOVED` and `ASK` are followed, batches
//! are split by slot, and a large object's pieces share its slot through a hash tag. A master
//! that fails is replaced by its replica; meanwhile calls fail with temporary errors, and
//! [`RedisConfig::min_replicas`] keeps acknowledged writes from going down with it.
//!
//! The connection is a [`redis::aio::ConnectionManager`] (a cluster connection in cluster
//! mode), one per tokio runtime that calls
//! ([`crate::runtime::PerRuntime`]), made inside that runtime so that its task runs beside its
//! callers (callers outside any tokio runtime use the I/O runtime's). Like any tokio network
//! client it needs the runtime's I/O and time drivers (`enable_all`, as `#[tokio::main]` and
//! `#[tokio::test]` have). The manager reconnects after the
//! connection drops, and an operation that failed with a temporary error (a dropped connection)
//! is tried once more, at once, on the new connection, so a connector outlives a server
//! restart. No command waits longer than `response_timeout` for its reply, nor a connection
//! attempt longer than `connect_timeout`: either ends with [`Error::Timeout`].
//!
//! A value of 256 KiB or more, to a single server without TLS, is written past the crate, on a
//! connection of its own from a small pool per runtime: the command's head, then the value
//! from its `Bytes`, so the kernel's copy into the socket is the only one (the crate copied the
//! value into buffers of its own, which made a 100 MiB put 3x slower than the socket write;
//! see `bulk.rs`). Logins, database, TTL, the notice to waiters and `min_replicas` are the
//! same on both paths. [`Connector::get_into`] goes the same way the other direction: one
//! `GET` on such a connection, its reply read off the socket straight into the caller's memory
//! (the crate decodes a reply into buffers of its own, about 650 MB/s for 100 MiB).

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{ConnectionInfo, IntoConnectionInfo, RedisError, RedisResult};

use super::{
    CallConfig, CallRuntime, Connector, ConnectorConfig, ObjectSink, PutOptions, Resource,
    get_into_whole, put_hashing_beside,
};
use crate::digest::{Digest, DigestAlgorithm};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::retry::RetryConfig;
use crate::runtime::{PerRuntime, run_on_io, spawn_io};

/// Kind name of this connector.
pub const KIND: &str = "redis";

mod bulk;
mod config;
mod wait;

use config::redact_url;
pub use config::{
    DEFAULT_CHUNK_BYTES, DEFAULT_CHUNKED_ABOVE_BYTES, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_RESPONSE_TIMEOUT, DEFAULT_URL, RedisConfig,
};

/// How long the temporary key of a chunked write outlives a writer that died mid-way.
const CHUNKED_WRITE_TTL_MS: u64 = 60 * 60 * 1000;

/// Keys per `DEL` or `MGET` command in batch operations, to bound the size of one command.
const BATCH_CHUNK: usize = 1000;
/// Reconnection attempts the manager makes before it reports the failure (then the next
/// operation starts a new round).
const RECONNECT_RETRIES: usize = 2;
/// Retries of one request by the cluster client (redirections, a node lost).
const CLUSTER_RETRIES: u32 = 4;

/// The connection of one runtime: to one server, or to a cluster.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Objects in a Redis server.
///
/// ```no_run
/// # proxystore::runtime::block_on(async {
/// use proxystore::connector::{Connector, redis::{RedisConfig, RedisConnector}};
/// let c = RedisConnector::with_config(RedisConfig {
///     prefix: "my-app:".into(),
///     ..RedisConfig::new("redis://127.0.0.1:6379/0")
/// })?;
/// let key = c.put(bytes::Bytes::from_static(b"data")).await?; // stored as my-app:<key>
/// assert_eq!(c.get(&key).await?.as_deref(), Some(&b"data"[..]));
/// # Ok::<_, proxystore::Error>(()) })??;
/// # Ok::<_, proxystore::Error>(())
/// ```
#[derive(Clone)]
pub struct RedisConnector {
    inner: Arc<Inner>,
}

struct Inner {
    config: RedisConfig,
    info: ConnectionInfo,
    /// Contents of `tls_ca_file`.
    tls_roots: Option<Vec<u8>>,
    /// Infos of the further seed nodes of a cluster.
    nodes: Vec<ConnectionInfo>,
    /// A connection per tokio runtime that calls, its task living there (see [`PerRuntime`]).
    managers: PerRuntime<Conn>,
    /// Where large values are written past the crate ([`bulk`]); `None` over TLS and in a
    /// cluster.
    bulk_target: Option<bulk::Target>,
    /// The bulk connections of each runtime that calls.
    bulk: PerRuntime<Arc<bulk::Pool>>,
    /// The pub/sub connection waiters share (made on the first wait; again after a loss).
    subscriber: tokio::sync::Mutex<Option<Arc<wait::Subscriber>>>,
}

impl fmt::Debug for RedisConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnector")
            .field("config", &self.inner.config)
            .field("runtimes", &self.inner.managers.len())
            .finish()
    }
}

impl RedisConnector {
    /// A connector for the server at `url` (no prefix, no TTL, default timeouts). Does not
    /// connect: the first operation does.
    ///
    /// # Errors
    /// [`Error::Config`] for a URL that is not a Redis URL.
    pub fn new(url: &str) -> Result<Self> {
        Self::with_config(RedisConfig::new(url))
    }

    /// A connector from `config` (see [`RedisConfig`]). Does not connect: the first operation
    /// does.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid URL, override or timeout, or an unreadable
    /// `tls_ca_file`.
    pub fn with_config(config: RedisConfig) -> Result<Self> {
        let config = config.normalized()?;
        let info =
            config.url.as_str().into_connection_info().map_err(|e| {
                Error::config(format!("redis URL {}: {e}", redact_url(&config.url)))
            })?;
        let info = match &config.password {
            Some(p) => {
                let settings = info.redis_settings().clone().set_password(p);
                info.set_redis_settings(settings)
            }
            None => info,
        };
        if config.url.starts_with("rediss:") {
            install_crypto_provider();
        }
        let tls_roots = match &config.tls_ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                Error::config(format!("redis tls_ca_file {}: {e}", path.display()))
            })?),
            None => None,
        };
        let nodes = config
            .nodes
            .iter()
            .map(|n| {
                let node = n.as_str().into_connection_info().map_err(|e| {
                    Error::config(format!("redis cluster node {}: {e}", redact_url(n)))
                })?;
                let settings = info.redis_settings().clone();
                Ok(node.set_redis_settings(settings))
            })
            .collect::<Result<Vec<_>>>()?;
        let bulk_target = if config.cluster {
            None
        } else {
            bulk::Target::of(&info, config.connect_timeout(), config.response_timeout())
        };
        Ok(RedisConnector {
            inner: Arc::new(Inner {
                config,
                info,
                nodes,
                tls_roots,
                managers: PerRuntime::new(),
                bulk_target,
                bulk: PerRuntime::new(),
                subscriber: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// Build from a [`ConnectorConfig`] of kind `redis`.
    ///
    /// # Errors
    /// As for [`RedisConnector::with_config`].
    pub fn from_config(config: &ConnectorConfig) -> Result<Arc<dyn Connector>> {
        Ok(Arc::new(Self::with_config(config.options()?)?))
    }

    /// What a connector built from `config` would touch, for the resolve policy: the address
    /// as the redis client itself reads it from the normalised URL, and the CA file.
    pub(crate) fn resources(config: &ConnectorConfig) -> Result<Vec<Resource>> {
        let config = config.options::<RedisConfig>()?.normalized()?;
        let info =
            config.url.as_str().into_connection_info().map_err(|e| {
                Error::config(format!("redis URL {}: {e}", redact_url(&config.url)))
            })?;
        let mut out = vec![match info.addr() {
            redis::ConnectionAddr::Tcp(host, port)
            | redis::ConnectionAddr::TcpTls { host, port, .. } => Resource::Host {
                what: "redis",
                host: host.clone(),
                port: Some(*port),
            },
            redis::ConnectionAddr::Unix(path) => Resource::Path {
                what: "redis socket",
                path: path.clone(),
            },
            #[allow(unreachable_patterns)]
            _ => {
                return Err(Error::config(format!(
                    "redis URL {}: unsupported address",
                    redact_url(&config.url)
                )));
            }
        }];
        for node in &config.nodes {
            let url = url::Url::parse(node).map_err(|e| {
                Error::config(format!("redis cluster node {}: {e}", redact_url(node)))
            })?;
            out.push(Resource::Host {
                what: "redis",
                host: url.host_str().unwrap_or_default().to_owned(),
                port: Some(url.port().unwrap_or(6379)),
            });
        }
        if let Some(path) = config.tls_ca_file {
            out.push(Resource::Path {
                what: "redis tls_ca_file",
                path,
            });
        }
        Ok(out)
    }

    /// The normalised configuration (password included; its `Debug` redacts it).
    pub fn redis_config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// The Redis key of `key`: `prefix + key`, or in a cluster `prefix + "{" + key + "}"`, a
    /// hash tag that keeps the temporary key of a large object's pieces (the key plus a
    /// suffix) on the object's slot.
    fn redis_key(&self, key: &Key) -> Vec<u8> {
        let prefix = self.inner.config.prefix.as_bytes();
        let mut k = Vec::with_capacity(prefix.len() + key.as_str().len() + 2);
        k.extend_from_slice(prefix);
        if self.inner.config.cluster {
            k.push(b'{');
            k.extend_from_slice(key.as_str().as_bytes());
            k.push(b'}');
        } else {
            k.extend_from_slice(key.as_str().as_bytes());
        }
        k
    }

    /// `WAIT` for [`RedisConfig::min_replicas`], to end a pipeline of writes with; `None`
    /// when no replica is asked for.
    fn wait_cmd(&self) -> Option<redis::Cmd> {
        self.wait_args().map(|(n, ms)| {
            let mut cmd = redis::cmd("WAIT");
            cmd.arg(n).arg(ms);
            cmd
        })
    }

    /// The replicas and milliseconds of `WAIT` for [`RedisConfig::min_replicas`] (half the
    /// response timeout, so that the server answers before the client gives up); `None` when
    /// no replica is asked for.
    fn wait_args(&self) -> Option<(u32, u64)> {
        let config = &self.inner.config;
        (config.min_replicas > 0)
            .then(|| (config.min_replicas, (config.response_timeout_ms / 2).max(1)))
    }

    /// The error of a write that `acked` replicas took, when fewer than asked for.
    fn check_replicas(&self, op: &'static str, acked: i64) -> Result<()> {
        let wanted = i64::from(self.inner.config.min_replicas);
        if acked >= wanted {
            return Ok(());
        }
        Err(Error::backend_message(
            KIND,
            format!(
                "{op}: written, but {acked} of the {wanted} replicas asked for took it in time (min_replicas)"
            ),
            true,
        ))
    }

    /// Run a pipeline of writes (its replies ignored) ended by [`Self::wait_cmd`], and check
    /// the replicas.
    async fn write(&self, op: &'static str, mut pipe: redis::Pipeline) -> Result<()> {
        let Some(wait) = self.wait_cmd() else {
            return self
                .run(op, move |mut con| async move {
                    pipe.query_async::<()>(&mut con).await
                })
                .await;
        };
        pipe.add_command(wait);
        let (acked,): (i64,) = self
            .run(op, move |mut con| async move {
                pipe.query_async(&mut con).await
            })
            .await?;
        self.check_replicas(op, acked)
    }

    /// `WAIT` on its own for the writes made to the node of the Redis key `k` (after a
    /// transaction, which cannot hold it).
    async fn wait_replicas(&self, op: &'static str, k: &[u8]) -> Result<()> {
        let Some(wait) = self.wait_cmd() else {
            return Ok(());
        };
        let route = redis::cluster_routing::RoutingInfo::SingleNode(
            redis::cluster_routing::SingleNodeRoutingInfo::SpecificNode(
                redis::cluster_routing::Route::with_key(
                    k,
                    redis::cluster_routing::SlotAddr::Master,
                ),
            ),
        );
        let acked: i64 = self
            .run(op, move |con| {
                let (wait, route) = (wait.clone(), route.clone());
                async move {
                    match con {
                        Conn::Single(mut c) => wait.query_async(&mut c).await,
                        Conn::Cluster(mut c) => redis::FromRedisValue::from_redis_value(
                            c.route_command(wait, route).await?,
                        )
                        .map_err(Into::into),
                    }
                }
            })
            .await?;
        self.check_replicas(op, acked)
    }

    /// The bulk connections of this runtime ([`bulk`]); `None` over TLS, in a cluster, or
    /// outside any tokio runtime.
    fn bulk_pool(&self) -> Option<Arc<bulk::Pool>> {
        let target = self.inner.bulk_target.as_ref()?;
        self.inner
            .bulk
            .get_or_try_init(|| Ok::<_, Error>(Arc::new(bulk::Pool::new(target.clone()))))
            .ok()?
    }

    /// `SET` (with its `PX`), `PUBLISH` when `announce`, and `WAIT`, as
    /// [`Self::write_object`] writes them, through a bulk connection of this runtime
    /// ([`bulk`]): the value is written from `data`, not copied, and hashed with `algorithm`
    /// as it goes out; the digest comes back. `None` when there is no connection at hand
    /// (TLS, a cluster, outside any tokio runtime, all busy): the caller goes through the
    /// crate.
    async fn bulk_set(
        &self,
        k: &[u8],
        data: Bytes,
        announce: bool,
        algorithm: DigestAlgorithm,
    ) -> Option<Result<Option<Digest>>> {
        use bulk::Arg;
        let pool = self.bulk_pool()?;
        let config = &self.inner.config;
        let ttl = config.ttl_ms.map(|t| t.to_string());
        let channel = wait::channel(k);
        let mut commands = bulk::Commands::default();
        let value = match algorithm {
            DigestAlgorithm::None => Arg::Bytes(data),
            algorithm => Arg::Hashed(data, algorithm),
        };
        let mut set = vec![Arg::from("SET"), Arg::from(k), value];
        if let Some(ttl) = &ttl {
            set.extend([Arg::from("PX"), Arg::from(ttl.as_str())]);
        }
        commands.push(set);
        if announce {
            commands.push(["PUBLISH".into(), Arg::from(channel.as_slice()), "1".into()]);
        }
        let wait = self
            .wait_args()
            .map(|(n, ms)| (n.to_string(), ms.to_string()));
        if let Some((n, ms)) = &wait {
            commands.push(["WAIT".into(), n.as_str().into(), ms.as_str().into()]);
        }
        let bulk::Written { replies, digest } = match pool.run(commands).await? {
            Ok(written) => written,
            Err(e) => return Some(Err(self.inner.error("SET", e))),
        };
        // With `WAIT`, the last integer is its reply (`PUBLISH`'s comes before it).
        let mut acked = None;
        for reply in replies {
            match reply.extract_error() {
                Ok(redis::Value::Int(n)) => acked = Some(n),
                Ok(_) => {}
                Err(e) => return Some(Err(self.inner.error("SET", e))),
            }
        }
        Some(match (&wait, acked) {
            (Some(_), Some(n)) => self.check_replicas("SET", n).map(|()| digest),
            _ => Ok(digest),
        })
    }

    fn set_cmd(&self, key: Vec<u8>, data: &Bytes) -> redis::Cmd {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(data.as_ref());
        if let Some(ttl) = self.inner.config.ttl_ms {
            cmd.arg("PX").arg(ttl);
        }
        cmd
    }

    /// Run `f` with the connection of the calling runtime and map its error. A caller outside
    /// any tokio runtime runs it on the I/O runtime. The store's layers retry a lost connection
    /// once (see [`Connector::call_config`]).
    async fn run<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T>
    where
        F: FnOnce(Conn) -> Fut + Send + 'static,
        Fut: Future<Output = RedisResult<T>> + Send + 'static,
        T: Send + 'static,
    {
        if let Some(con) = self.inner.manager()? {
            return f(con).await.map_err(|e| self.inner.error(op, e));
        }
        let this = self.clone();
        spawn_io(async move {
            let con = this.inner.manager()?.ok_or_else(|| {
                Error::backend_message(KIND, "the I/O runtime is not a tokio runtime", false)
            })?;
            f(con).await.map_err(|e| this.inner.error(op, e))
        })
        .await?
    }
}

impl RedisConnector {
    /// Write the object under `key`; with `announce`, announce it on the key's channel in the
    /// same round trip (see [`Connector::wait`]). Returns its digest with `algorithm`: hashed
    /// as it is written on a bulk connection, else beside the write
    /// ([`crate::digest::digest_one_beside`]).
    async fn write_object(
        &self,
        key: &Key,
        data: Bytes,
        announce: bool,
        algorithm: DigestAlgorithm,
    ) -> Result<Option<Digest>> {
        let k = self.redis_key(key);
        let chunked = data.len() as u64 > self.inner.config.chunked_above_bytes;
        if !chunked
            && data.len() >= bulk::BULK_BYTES
            && let Some(done) = self.bulk_set(&k, data.clone(), announce, algorithm).await
        {
            return done;
        }
        let ((), digest) = crate::digest::digest_one_beside(algorithm, data, |data| {
            self.write_unhashed(key, &k, data, announce, chunked)
        })
        .await?;
        Ok(digest)
    }

    /// [`Self::write_object`] in pieces (`chunked`) or through the crate.
    async fn write_unhashed(
        &self,
        key: &Key,
        k: &[u8],
        data: Bytes,
        announce: bool,
        chunked: bool,
    ) -> Result<()> {
        if chunked {
            self.set_chunked(key, data).await?;
            return if announce {
                self.announce(k).await
            } else {
                Ok(())
            };
        }
        let set = self.set_cmd(k.to_vec(), &data);
        if !announce && self.wait_args().is_none() {
            // A lone command: a pipeline of one costs its encoding and its reply's assembly
            // on top (a sixth of the connector's work on a 100 B put, issue 18).
            return self
                .run("SET", move |mut con| async move {
                    set.query_async::<()>(&mut con).await
                })
                .await;
        }
        let mut pipe = redis::pipe();
        pipe.add_command(set).ignore();
        if announce {
            pipe.cmd("PUBLISH").arg(wait::channel(k)).arg(1).ignore();
        }
        self.write("SET", pipe).await
    }

    /// Write a large object in pieces into a temporary key, then rename it over `key`: readers
    /// never see a partial object, and a writer that dies leaves a key that expires.
    async fn set_chunked(&self, key: &Key, data: Bytes) -> Result<()> {
        let target = self.redis_key(key);
        let mut tmp = target.clone();
        tmp.extend_from_slice(format!(".tmp-{}", Key::random()).as_bytes());
        let result = self.write_pieces(&tmp, &target, data).await;
        if result.is_err() {
            let _ = self
                .run("DEL", move |mut con| {
                    let tmp = tmp.clone();
                    async move { redis::cmd("DEL").arg(tmp).query_async::<()>(&mut con).await }
                })
                .await;
        }
        result
    }

    /// GETRANGE of `k` over `range` (end exclusive, not empty); an absent key reads as empty.
    async fn getrange(&self, k: &[u8], range: Range<u64>) -> Result<Bytes> {
        let k = k.to_vec();
        self.run("GETRANGE", move |mut con| async move {
            redis::cmd("GETRANGE")
                .arg(k)
                .arg(range.start)
                .arg(range.end - 1)
                .query_async(&mut con)
                .await
        })
        .await
    }

    /// The rest of a large object whose first `first.len()` bytes have been read.
    async fn get_rest(&self, k: &[u8], first: Bytes) -> Result<Bytes> {
        // Read again, the object is whole (or absent): temporary.
        let changed = || {
            Error::backend_message(
                KIND,
                "GET: the object changed or was evicted while it was read in pieces",
                true,
            )
        };
        let kk = k.to_vec();
        let total: u64 = self
            .run("STRLEN", move |mut con| {
                let k = kk.clone();
                async move { redis::cmd("STRLEN").arg(k).query_async(&mut con).await }
            })
            .await?;
        let size = usize::try_from(total).map_err(|_| Error::LimitExceeded {
            message: format!("redis GET: an object of {total} bytes does not fit in memory"),
        })?;
        if size < first.len() {
            return Err(changed());
        }
        let mut buf = crate::buffer::with_capacity(size).ok_or_else(|| Error::LimitExceeded {
            message: format!("redis GET: cannot allocate {size} bytes"),
        })?;
        buf.extend_from_slice(&first);
        drop(first);
        while (buf.len() as u64) < total {
            let start = buf.len() as u64;
            let end = total.min(start.saturating_add(self.inner.config.chunk_bytes));
            let part = self.getrange(k, start..end).await?;
            if part.len() as u64 != end - start {
                return Err(changed());
            }
            buf.extend_from_slice(&part);
        }
        Ok(Bytes::from(buf))
    }

    async fn write_pieces(&self, tmp: &[u8], target: &[u8], data: Bytes) -> Result<()> {
        let len = data.len();
        let piece = usize::try_from(self.inner.config.chunk_bytes).unwrap_or(usize::MAX);
        // Writing the last byte first makes the server allocate the whole string once, instead
        // of growing (and copying) it with every piece.
        let t = tmp.to_vec();
        self.run("SETRANGE", move |mut con| {
            let t = t.clone();
            async move {
                redis::pipe()
                    .atomic()
                    .cmd("SETRANGE")
                    .arg(&t)
                    .arg(len - 1)
                    .arg(&b"\0"[..])
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&t)
                    .arg(CHUNKED_WRITE_TTL_MS)
                    .ignore()
                    .query_async::<()>(&mut con)
                    .await
            }
        })
        .await?;
        for offset in (0..len).step_by(piece) {
            let part = data.slice(offset..len.min(offset.saturating_add(piece)));
            let t = tmp.to_vec();
            // SETRANGE is idempotent: a retry after a lost connection writes the same bytes.
            self.run("SETRANGE", move |mut con| {
                let (t, part) = (t.clone(), part.clone());
                async move {
                    redis::cmd("SETRANGE")
                        .arg(t)
                        .arg(offset)
                        .arg(part.as_ref())
                        .query_async::<()>(&mut con)
                        .await
                }
            })
            .await?;
        }
        let (t, k) = (tmp.to_vec(), target.to_vec());
        let ttl = self.inner.config.ttl_ms;
        let renamed = self
            .run("RENAME", move |mut con| {
                let (t, k) = (t.clone(), k.clone());
                async move {
                    let mut p = redis::pipe();
                    p.atomic().cmd("RENAME").arg(&t).arg(&k).ignore();
                    match ttl {
                        Some(ms) => p.cmd("PEXPIRE").arg(&k).arg(ms).ignore(),
                        None => p.cmd("PERSIST").arg(&k).ignore(),
                    };
                    p.query_async::<()>(&mut con).await
                }
            })
            .await;
        if renamed.is_err() {
            // A rename that succeeded before its reply was lost finds no temporary key when
            // retried: the object is in place.
            let k = target.to_vec();
            let present: bool = self
                .run("EXISTS", move |mut con| {
                    let k = k.clone();
                    async move { redis::cmd("EXISTS").arg(k).query_async(&mut con).await }
                })
                .await
                .unwrap_or(false);
            if !present {
                return renamed;
            }
        }
        self.wait_replicas("RENAME", target).await
    }
}

impl Inner {
    /// A client for the server (with the TLS roots of the config).
    fn client(&self) -> Result<redis::Client> {
        self.client_of(self.info.clone())
    }

    /// A client for the server of `info` (with the TLS roots of the config).
    fn client_of(&self, info: ConnectionInfo) -> Result<redis::Client> {
        match &self.tls_roots {
            Some(roots) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(roots.clone()),
                },
            ),
            None => redis::Client::open(info),
        }
        .map_err(|e| Error::config(format!("redis client: {e}")))
    }

    /// Clients of the seed nodes: the URL's, then those of [`RedisConfig::nodes`].
    fn seed_clients(&self) -> Result<Vec<redis::Client>> {
        std::iter::once(&self.info)
            .chain(&self.nodes)
            .map(|info| self.client_of(info.clone()))
            .collect()
    }

    /// The connection of the calling runtime, made lazily (it connects on first use) the first
    /// time this runtime calls, so that its task lives here and a call does not hop between
    /// threads. `None` outside any tokio runtime.
    fn manager(&self) -> Result<Option<Conn>> {
        self.managers.get_or_try_init(|| {
            if self.config.cluster {
                return self.cluster_connection().map(Conn::Cluster);
            }
            let client = self.client()?;
            let config = ConnectionManagerConfig::new()
                .set_response_timeout(Some(self.config.response_timeout()))
                .set_connection_timeout(Some(self.config.connect_timeout()))
                .set_number_of_retries(RECONNECT_RETRIES)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_secs(1));
            ConnectionManager::new_lazy_with_config(client, config)
                .map(Conn::Single)
                .map_err(|e| Error::config(format!("redis connection manager: {e}")))
        })
    }

    /// A cluster connection (it connects on first use), seeded with every node of the config.
    /// A request is retried by the cluster client a few times (50 ms to 500 ms apart) after a
    /// redirection or a lost node, while it learns the new slots; past that, a failover still
    /// in progress reaches the caller as a temporary error.
    fn cluster_connection(&self) -> Result<ClusterConnection> {
        let mut builder = redis::cluster::ClusterClientBuilder::new(
            std::iter::once(&self.info).chain(&self.nodes).cloned(),
        )
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(50)
        .max_retry_wait(500)
        .connection_timeout(self.config.connect_timeout())
        .response_timeout(self.config.response_timeout());
        if let Some(p) = &self.config.password {
            builder = builder.password(p);
        }
        if let Some(user) = self.info.redis_settings().username() {
            builder = builder.username(user);
        }
        if let Some(roots) = &self.tls_roots {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(roots.clone()),
            });
        }
        let client = builder
            .build()
            .map_err(|e| Error::config(format!("redis cluster client: {e}")))?;
        Ok(client.get_pending_async_connection_with_config(
            redis::cluster::ClusterConfig::new()
                .set_connection_timeout(self.config.connect_timeout())
                .set_response_timeout(self.config.response_timeout()),
        ))
    }

    fn error(&self, op: &str, e: RedisError) -> Error {
        let code = server_code(&e);
        if e.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(code.as_deref(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
        {
            return Error::Unauthorized {
                message: format!("redis {op}: {e}"),
            };
        }
        if e.is_timeout() {
            return Error::Timeout {
                operation: format!("redis {op}"),
                after: self.config.response_timeout(),
            };
        }
        if code.as_deref() == Some("OOM") {
            return Error::LimitExceeded {
                message: format!("redis {op}: {e}"),
            };
        }
        if is_temporary(&e) {
            Error::temporary(KIND, op, e)
        } else {
            Error::backend(KIND, op, e)
        }
    }
}

/// The server's error code (`NOAUTH`, `OOM`, ...), also when the error came back for a command of
/// a pipeline: the redis crate reports those as one pipeline failure whose own `code()` is
/// `None` unless the code is one it knows, so a `SET`+`PUBLISH` refused for want of a password
/// would otherwise not be told from any other failure.
fn server_code(e: &RedisError) -> Option<String> {
    if let Some(code) = e.code() {
        return Some(code.to_owned());
    }
    e.clone()
        .into_server_errors()
        .and_then(|errors| errors.first().map(|(_, err)| err.code().to_owned()))
}

/// Whether the operation may succeed later: the connection broke or was refused, or the
/// server said so (loading its data set, a cluster reconfiguring, `TRYAGAIN`). Error replies
/// such as `WRONGTYPE` or a script error repeat.
fn is_temporary(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || !matches!(e.retry_method(), redis::RetryMethod::NoRetry)
        || moving(e)
}

/// Whether a command of a pipeline or transaction was refused for a reason that passes: its
/// slot moved or is moving (`MOVED`, `ASK`, a node that became a replica: `READONLY`), the
/// cluster or a master is down for a while, the server is loading. The redis crate follows
/// these for single commands, not inside a pipeline's replies.
fn moving(e: &RedisError) -> bool {
    e.clone().into_server_errors().is_some_and(|errors| {
        errors.iter().any(|(_, err)| {
            matches!(
                err.code(),
                "MOVED"
                    | "ASK"
                    | "TRYAGAIN"
                    | "CLUSTERDOWN"
                    | "LOADING"
                    | "MASTERDOWN"
                    | "READONLY"
                    | "NOREPLICAS"
            )
        })
    })
}

/// rustls needs a process-wide crypto provider; install ours unless one is there already.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

#[async_trait]
impl Connector for RedisConnector {
    fn kind(&self) -> &str {
        KIND
    }

    /// On the calling runtime's own connection (no hop to the I/O runtime: see
    /// [`PerRuntime`]); one immediate retry of a temporary failure (the manager has reconnected
    /// by then), puts included: a failed put leaves no readable object. Commands are bounded by
    /// the client's own response and connect timeouts.
    fn call_config(&self) -> CallConfig {
        CallConfig {
            runtime: CallRuntime::Caller,
            ..CallConfig::networked(
                None,
                RetryConfig::default()
                    .max_retries(1)
                    .initial_backoff(Duration::ZERO)
                    .retry_puts(true),
            )
        }
    }

    /// A `SET` under a new random key, not announced: nobody can wait for a key before it is
    /// returned (an announcement would cost the server a `PUBLISH` per put).
    async fn put_opts(&self, data: Bytes, _options: &PutOptions) -> Result<Key> {
        let key = Key::random();
        self.write_object(&key, data, false, DigestAlgorithm::None)
            .await?;
        Ok(key)
    }

    /// As `put_opts`. A value of `bulk::PIECES_FROM` (8 MiB) or more written on a bulk
    /// connection (plain TCP, not a cluster) is hashed piece by piece as it goes out, each
    /// piece while it is still in the CPU's cache, instead of beside the write: a 100 MiB put
    /// through a `Store` then takes what the connector's write alone takes. A smaller one is
    /// hashed beside the write (on another thread from 1 MiB), which costs less there.
    async fn put_hashing(
        &self,
        data: Bytes,
        options: &PutOptions,
        algorithm: DigestAlgorithm,
    ) -> Result<(Key, Option<Digest>)> {
        if data.len() < bulk::PIECES_FROM {
            return put_hashing_beside(self, data, options, algorithm).await;
        }
        let key = Key::random();
        let digest = self.write_object(&key, data, false, algorithm).await?;
        Ok((key, digest))
    }

    async fn get(&self, key: &Key) -> Result<Option<Bytes>> {
        // At most `chunked_above_bytes` in one reply (whose decoding holds two copies of it);
        // a larger object is read in pieces into one buffer.
        let k = self.redis_key(key);
        let limit = self.inner.config.chunked_above_bytes;
        let first = self.getrange(&k, 0..limit).await?;
        let first = if first.is_empty() {
            // GETRANGE reads an absent key as empty: ask again with EXISTS in the same
            // transaction (the object may also have been written since).
            match self.get_range(key, 0..limit).await? {
                Some(first) => first,
                None => return Ok(None),
            }
        } else {
            first
        };
        if (first.len() as u64) < limit {
            return Ok(Some(first));
        }
        self.get_rest(&k, first).await.map(Some)
    }

    /// One `GET` on a bulk connection of this runtime (a plain socket of the connector's own),
    /// its value read off the socket straight into the sink (so a 100 MiB object is copied
    /// once, by the kernel, and hashed as it arrives when asked). An object the caller knows
    /// to be smaller than a bulk write (256 KiB, as for puts) stays on the shared connection,
    /// as does any where there is no bulk connection at hand (TLS, a cluster, all busy): it is
    /// read as [`Connector::get`] reads it and handed over.
    async fn get_into(&self, key: &Key, sink: &mut ObjectSink<'_>) -> Result<bool> {
        let small = sink
            .expected_size()
            .is_some_and(|n| n < bulk::BULK_BYTES as u64);
        if !small && let Some(pool) = self.bulk_pool() {
            let k = self.redis_key(key);
            match pool.get_into(&k, sink).await {
                Some(Ok(found)) => return Ok(found),
                Some(Err(bulk::GetError::Redis(e))) => return Err(self.inner.error("GET", e)),
                Some(Err(bulk::GetError::Sink(e))) => return Err(e),
                None => {}
            }
        }
        get_into_whole(self, key, sink).await
    }

    async fn exists(&self, key: &Key) -> Result<bool> {
        let k = self.redis_key(key);
        self.run("EXISTS", move |mut con| {
            let k = k.clone();
            async move { redis::cmd("EXISTS").arg(k).query_async(&mut con).await }
        })
        .await
    }

    async fn evict(&self, key: &Key) -> Result<()> {
        let k = self.redis_key(key);
        self.run("DEL", move |mut con| {
            let k = k.clone();
            async move { redis::cmd("DEL").arg(k).query_async(&mut con).await }
        })
        .await
    }

    fn config(&self) -> ConnectorConfig {
        ConnectorConfig::new(
            KIND,
            serde_json::to_value(&self.inner.config).unwrap_or_default(),
        )
    }

    async fn put_batch(&self, data: Vec<Bytes>, _options: &PutOptions) -> Result<Vec<Key>> {
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Key> = data.iter().map(|_| Key::random()).collect();
        if !self.inner.config.cluster {
            let mut pipe = redis::pipe();
            for (k, d) in keys.iter().zip(&data) {
                pipe.add_command(self.set_cmd(self.redis_key(k), d))
                    .ignore();
            }
            self.write("SET (pipeline)", pipe).await?;
            return Ok(keys);
        }
        // A pipeline goes to one node, so a batch is split by slot: a pipeline per slot, all
        // in flight at once (the cluster connection pipelines those of one node).
        let mut by_slot: std::collections::HashMap<redis::cluster_routing::Slot, redis::Pipeline> =
            std::collections::HashMap::new();
        for (k, d) in keys.iter().zip(&data) {
            let rk = self.redis_key(k);
            by_slot
                .entry(redis::cluster_routing::Slot::for_key(&rk))
                .or_insert_with(redis::pipe)
                .add_command(self.set_cmd(rk, d))
                .ignore();
        }
        futures::future::try_join_all(
            by_slot
                .into_values()
                .map(|pipe| self.write("SET (pipeline)", pipe)),
        )
        .await?;
        Ok(keys)
    }

    async fn get_batch(&self, keys: &[Key]) -> Result<Vec<Option<Bytes>>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH_CHUNK) {
            let ks: Vec<Vec<u8>> = chunk.iter().map(|k| self.redis_key(k)).collect();
            let got: Vec<Option<Bytes>> = self
                .run("MGET", move |mut con| {
                    let ks = ks.clone();
                    async move { redis::cmd("MGET").arg(ks).query_async(&mut con).await }
                })
                .await?;
            if got.len() != chunk.len() {
                return Err(Error::backend_message(
                    KIND,
                    format!("MGET of {} keys gave {} values", chunk.len(), got.len()),
                    false,
                ));
            }
            out.extend(got);
        }
        Ok(out)
    }

    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Option<Bytes>> {
        let k = self.redis_key(key);
        // GETRANGE reads an absent key as empty, so EXISTS in the same transaction tells the two
        // apart. Its end index is inclusive.
        let start = range.start.min(i64::MAX as u64) as i64;
        let end = range.end.min(i64::MAX as u64) as i64;
        let (exists, data): (bool, Bytes) = if start >= end {
            let exists = self.exists(key).await?;
            (exists, Bytes::new())
        } else {
            self.run("GETRANGE", move |mut con| {
                let k = k.clone();
                async move {
                    redis::pipe()
                        .atomic()
                        .cmd("EXISTS")
                        .arg(&k)
                        .cmd("GETRANGE")
                        .arg(&k)
                        .arg(start)
                        .arg(end - 1)
                        .query_async(&mut con)
                        .await
                }
            })
            .await?
        };
        Ok(exists.then_some(data))
    }

    async fn evict_batch(&self, keys: &[Key]) -> Result<()> {
        for chunk in keys.chunks(BATCH_CHUNK) {
            let ks: Vec<Vec<u8>> = chunk.iter().map(|k| self.redis_key(k)).collect();
            self.run("DEL", move |mut con| {
                let ks = ks.clone();
                async move { redis::cmd("DEL").arg(ks).query_async::<()>(&mut con).await }
            })
            .await?;
        }
        Ok(())
    }

    async fn new_key(&self, _options: &PutOptions) -> Result<Key> {
        Ok(Key::random())
    }

    /// Writes the object, then announces it on the key's channel (see [`Connector::wait`]),
    /// in one round trip.
    async fn set(&self, key: &Key, data: Bytes) -> Result<()> {
        self.write_object(key, data, true, DigestAlgorithm::None)
            .await
            .map(drop)
    }

    /// `SET NX` and `PUBLISH` in one round trip (objects written in pieces: look, then write).
    async fn set_once(&self, key: &Key, data: Bytes) -> Result<bool> {
        let k = self.redis_key(key);
        if data.len() as u64 > self.inner.config.chunked_above_bytes {
            if self.exists(key).await? {
                return Ok(false);
            }
            self.set_chunked(key, data).await?;
            self.announce(&k).await?;
            return Ok(true);
        }
        let mut set = self.set_cmd(k.clone(), &data);
        set.arg("NX");
        let mut pipe = redis::pipe();
        pipe.add_command(set)
            .cmd("PUBLISH")
            .arg(wait::channel(&k))
            .arg(1)
            .ignore();
        let Some(wait) = self.wait_cmd() else {
            let pipe = Arc::new(pipe);
            let (written,): (Option<String>,) = self
                .run("SET NX", move |mut con| {
                    let pipe = Arc::clone(&pipe);
                    async move { pipe.query_async(&mut con).await }
                })
                .await?;
            return Ok(written.is_some());
        };
        pipe.add_command(wait);
        let pipe = Arc::new(pipe);
        let (written, acked): (Option<String>, i64) = self
            .run("SET NX", move |mut con| {
                let pipe = Arc::clone(&pipe);
                async move { pipe.query_async(&mut con).await }
            })
            .await?;
        if written.is_some() {
            self.check_replicas("SET NX", acked)?;
        }
        Ok(written.is_some())
    }

    fn set_once_is_atomic(&self) -> bool {
        true
    }

    /// Subscribes to the key's channel, where [`Connector::set`] announces a write, on the
    /// pub/sub connection the connector's waiters share (unsubscribed when its last waiter
    /// returns or is dropped).
    ///
    /// On the I/O runtime, where the subscriber that every waiter of this connector shares
    /// lives (whatever runtime the waiters come from).
    async fn wait(&self, key: &Key, timeout: Duration) -> Result<bool> {
        let (this, key) = (self.clone(), key.clone());
        run_on_io(async move { this.wait_on_channel(&key, timeout).await }).await
    }

    fn wait_mechanism(&self) -> &'static str {
        "pub/sub (SET then PUBLISH)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_normalised_and_redacted() {
        let c = RedisConnector::with_config(RedisConfig {
            url: "redis://alice:s%40cret@example.org:7000/3".into(),
            prefix: "p:".into(),
            ..RedisConfig::default()
        })
        .unwrap();
        let rc = c.redis_config();
        assert_eq!(rc.password.as_deref(), Some("s@cret"));
        assert!(!rc.url.contains("cret"), "{}", rc.url);
        assert_eq!(rc.url, "redis://alice@example.org:7000/3");
        let info = &c.inner.info;
        assert_eq!(info.redis_settings().password(), Some("s@cret"));
        assert_eq!(info.redis_settings().db(), 3);
        assert!(!format!("{c:?}").contains("cret"));
        assert!(!format!("{:?}", c.config()).contains("cret"));
        let again = RedisConnector::from_config(&c.config()).unwrap();
        assert_eq!(again.config(), c.config());
    }

    #[test]
    fn fields_override_the_url() {
        let c = RedisConnector::with_config(RedisConfig {
            url: "redis://:old@h1:1/1".into(),
            host: Some("h2".into()),
            port: Some(2),
            db: Some(5),
            username: Some("bob".into()),
            password: Some("new".into()),
            ..RedisConfig::default()
        })
        .unwrap();
        assert_eq!(c.redis_config().url, "redis://bob@h2:2/5");
        assert_eq!(c.redis_config().password.as_deref(), Some("new"));
        assert_eq!(c.inner.info.addr().to_string(), "h2:2");
    }

    #[test]
    fn bad_configs_are_config_errors() {
        for cfg in [
            RedisConfig::new("http://x"),
            RedisConfig::new("not a url"),
            RedisConfig {
                response_timeout_ms: 0,
                ..RedisConfig::default()
            },
            RedisConfig {
                ttl_ms: Some(0),
                ..RedisConfig::default()
            },
            RedisConfig {
                tls_ca_file: Some("/no/such/ca.pem".into()),
                ..RedisConfig::new("rediss://localhost")
            },
            RedisConfig {
                tls_ca_file: Some("/etc/hostname".into()),
                ..RedisConfig::new("redis://localhost")
            },
            // Seed nodes without cluster mode, a database in a cluster, mixed schemes.
            RedisConfig {
                nodes: vec!["redis://h2:7000".into()],
                ..RedisConfig::new("redis://h1:7000")
            },
            RedisConfig::cluster(["redis://h1:7000/3"]),
            RedisConfig::cluster(["redis://h1:7000", "rediss://h2:7000"]),
            RedisConfig::cluster(["redis+unix:///tmp/redis.sock"]),
        ] {
            let e = RedisConnector::with_config(cfg).unwrap_err();
            assert!(matches!(e, Error::Config { .. }), "{e}");
        }
    }

    #[test]
    fn a_cluster_config_keeps_its_seeds_without_passwords_and_tags_keys() {
        let c = RedisConnector::with_config(RedisConfig {
            password: Some("pw".into()),
            prefix: "p:".into(),
            ..RedisConfig::cluster(["redis://h1:7000", "redis://:other@h2:7001"])
        })
        .unwrap();
        let rc = c.redis_config();
        assert!(rc.cluster);
        assert_eq!(rc.nodes, ["redis://h2:7001"]);
        assert_eq!(c.inner.nodes[0].redis_settings().password(), Some("pw"));
        let again = RedisConnector::from_config(&c.config()).unwrap();
        assert_eq!(again.config(), c.config());
        let key = Key::from("abc");
        assert_eq!(c.redis_key(&key), b"p:{abc}");
        let resources = RedisConnector::resources(&c.config()).unwrap();
        assert_eq!(resources.len(), 2, "{resources:?}");
    }

    #[test]
    fn tls_urls_are_accepted() {
        let c = RedisConnector::new("rediss://example.org:6380").unwrap();
        assert!(matches!(
            c.inner.info.addr(),
            redis::ConnectionAddr::TcpTls { .. }
        ));
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
