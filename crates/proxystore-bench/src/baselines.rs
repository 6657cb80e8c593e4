//! The raw client of each backend that its connector is compared with (memcpy, `std::fs`, the
//! redis crate or a plain connection for large values, aws-sdk-s3).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use proxystore::connector::s3::S3Config;
use tokio::net::TcpStream;

/// Values of at least this many bytes are `SET` on a plain connection in the Redis baseline.
pub(crate) const PLAIN_SET_BYTES: usize = 256 << 10;

/// The plain `SET` writes a value of [`PLAIN_SET_PIECES_FROM`] bytes or more in pieces of this
/// many bytes, as the Redis connector does: a 100 MiB value written whole took 61-64 ms on
/// loopback, in pieces of 256 KiB 54-57 ms (2026-12-07), so the anchor is the faster of the
/// two. A smaller one goes in one write call, which was the faster at 1 MiB.
const PLAIN_SET_PIECE: usize = 256 << 10;
/// See [`PLAIN_SET_PIECE`].
const PLAIN_SET_PIECES_FROM: usize = 8 << 20;

/// A raw backend client used as a baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum RawKind {
    /// A copy of the bytes into a buffer allocated beforehand.
    Memcpy,
    /// `std::fs::write` of a new file / `std::fs::read`, in the file connector's directory.
    Fs,
    /// The fastest Redis client measured: `SET` / `GET` with the redis crate on a multiplexed
    /// connection, except a `SET` of [`PLAIN_SET_BYTES`] and more, whose head and value are
    /// written as they are on a plain connection (the crate copies the value into buffers of
    /// its own and was 3x slower at 100 MiB; redis-py, which does not, was within 20% of it).
    Redis,
    /// aws-sdk-s3: `put_object` / `get_object`, body collected.
    S3,
}

impl RawKind {
    /// Names of the write and read operations, as they appear in the results.
    pub(crate) fn ops(self) -> (&'static str, &'static str) {
        match self {
            RawKind::Memcpy => ("memcpy", "memcpy"),
            RawKind::Fs => ("fs_write", "fs_read"),
            RawKind::Redis => ("redis_set", "redis_get"),
            RawKind::S3 => ("s3_put_object", "s3_get_object"),
        }
    }

    /// Name of this baseline in the small-object results.
    pub(crate) fn small_name(self) -> &'static str {
        match self {
            RawKind::Memcpy => "raw_memcpy",
            RawKind::Fs => "raw_fs",
            RawKind::Redis => "raw_redis",
            RawKind::S3 => "raw_s3",
        }
    }
}

/// The raw clients, shared by every measurement of a run.
#[derive(Clone)]
pub(crate) struct Raw {
    pub(crate) fs_dir: PathBuf,
    pub(crate) redis: Option<redis::aio::MultiplexedConnection>,
    /// The plain connection of large `SET`s, made on first use.
    redis_plain: Option<PlainRedis>,
    pub(crate) s3: Option<(aws_sdk_s3::Client, String, String)>,
}

/// The plain connection of large `SET`s: host, port, and the connection once made.
type PlainRedis = (
    String,
    u16,
    std::sync::Arc<tokio::sync::Mutex<Option<TcpStream>>>,
);

/// The handle of one object written by a raw client.
pub(crate) enum RawKey {
    Path(PathBuf),
    Name(String),
}

impl Raw {
    /// Host and port of the run's Redis when it is plain TCP without login on database 0
    /// (where `redis-benchmark` and the plain `SET` can go).
    pub(crate) fn redis_plain_addr(&self) -> Option<(&str, u16)> {
        self.redis_plain.as_ref().map(|(h, p, _)| (h.as_str(), *p))
    }

    /// Raw clients for the backends of this run.
    ///
    /// # Errors
    /// When the Redis connection cannot be made.
    pub(crate) async fn new(
        fs_dir: PathBuf,
        redis_url: Option<&str>,
        s3: Option<&S3Config>,
    ) -> Result<Self> {
        let redis_plain = match redis_url {
            Some(url) => {
                use redis::IntoConnectionInfo as _;
                let info = url.into_connection_info().context("redis URL")?;
                match (info.addr(), info.redis_settings().password()) {
                    (redis::ConnectionAddr::Tcp(host, port), None)
                        if info.redis_settings().db() == 0 =>
                    {
                        Some((host.clone(), *port, Default::default()))
                    }
                    _ => None,
                }
            }
            None => None,
        };
        let redis = match redis_url {
            Some(url) => {
                let client = redis::Client::open(url).context("redis URL")?;
                let config = redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(Duration::from_secs(120)))
                    .set_connection_timeout(Some(Duration::from_secs(5)));
                Some(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                        .with_context(|| format!("connect to {url}"))?,
                )
            }
            None => None,
        };
        let s3 = s3.map(|c| {
            let mut b = aws_sdk_s3::Config::builder()
                .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                .region(aws_sdk_s3::config::Region::new(
                    c.region.clone().unwrap_or_else(|| "us-east-1".into()),
                ))
                .force_path_style(c.force_path_style);
            if let Some(e) = &c.endpoint_url {
                b = b.endpoint_url(e);
            }
            // As the connector: the config's keys, else the environment's.
            let env = |k: &str| std::env::var(k).ok();
            let id = c.access_key_id.clone().or_else(|| env("AWS_ACCESS_KEY_ID"));
            let secret = c
                .secret_access_key
                .clone()
                .or_else(|| env("AWS_SECRET_ACCESS_KEY"));
            if let (Some(id), Some(secret)) = (id, secret) {
                b = b.credentials_provider(aws_sdk_s3::config::Credentials::new(
                    id,
                    secret,
                    c.session_token.clone().or_else(|| env("AWS_SESSION_TOKEN")),
                    None,
                    "proxystore-bench",
                ));
            }
            (
                aws_sdk_s3::Client::from_conf(b.build()),
                c.bucket.clone(),
                format!("{}raw/", c.prefix),
            )
        });
        Ok(Raw {
            fs_dir,
            redis,
            redis_plain,
            s3,
        })
    }

    fn redis(&self) -> Result<redis::aio::MultiplexedConnection> {
        match &self.redis {
            Some(c) => Ok(c.clone()),
            None => bail!("no Redis server in this run"),
        }
    }

    fn s3(&self) -> Result<&(aws_sdk_s3::Client, String, String)> {
        match &self.s3 {
            Some(c) => Ok(c),
            None => bail!("no S3 server in this run"),
        }
    }

    /// Write `data` as a new object; returns the time of the write alone and the handle.
    pub(crate) async fn write(&self, kind: RawKind, data: &Bytes) -> Result<(Duration, RawKey)> {
        match kind {
            RawKind::Memcpy => bail!("memcpy keeps no objects"),
            RawKind::Fs => {
                let path = self
                    .fs_dir
                    .join(format!("raw-{}", proxystore::Key::random()));
                let start = Instant::now();
                std::fs::write(&path, data).with_context(|| format!("write {}", path.display()))?;
                Ok((start.elapsed(), RawKey::Path(path)))
            }
            RawKind::Redis if data.len() >= PLAIN_SET_BYTES && self.redis_plain.is_some() => {
                let key = format!("bench-raw-{}", proxystore::Key::random());
                let start = Instant::now();
                self.plain_set(&key, data).await?;
                Ok((start.elapsed(), RawKey::Name(key)))
            }
            RawKind::Redis => {
                let mut con = self.redis()?;
                let key = format!("bench-raw-{}", proxystore::Key::random());
                let start = Instant::now();
                redis::cmd("SET")
                    .arg(&key)
                    .arg(data.as_ref())
                    .query_async::<()>(&mut con)
                    .await
                    .context("redis SET")?;
                Ok((start.elapsed(), RawKey::Name(key)))
            }
            RawKind::S3 => {
                let (client, bucket, prefix) = self.s3()?;
                let key = format!("{prefix}{}", proxystore::Key::random());
                let start = Instant::now();
                client
                    .put_object()
                    .bucket(bucket)
                    .key(&key)
                    .body(ByteStream::from(data.clone()))
                    .send()
                    .await
                    .context("s3 put_object")?;
                Ok((start.elapsed(), RawKey::Name(key)))
            }
        }
    }

    /// `SET key data` on the plain connection: the head, then the value from its `Bytes` (in
    /// pieces of [`PLAIN_SET_PIECE`] from [`PLAIN_SET_PIECES_FROM`]; the kernel's copy into the
    /// socket is the only one), then the `+OK` read back.
    async fn plain_set(&self, key: &str, data: &Bytes) -> Result<()> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let Some((host, port, con)) = &self.redis_plain else {
            bail!("no Redis server in this run");
        };
        let mut con = con.lock().await;
        let stream = match &mut *con {
            Some(s) => s,
            None => {
                let s = TcpStream::connect((host.as_str(), *port))
                    .await
                    .context("connect the plain Redis connection")?;
                s.set_nodelay(true)?;
                con.insert(s)
            }
        };
        let head = format!(
            "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n",
            key.len(),
            data.len()
        );
        let written = async {
            stream.write_all(head.as_bytes()).await?;
            let piece = if data.len() >= PLAIN_SET_PIECES_FROM {
                PLAIN_SET_PIECE
            } else {
                data.len().max(1)
            };
            for piece in data.chunks(piece) {
                stream.write_all(piece).await?;
            }
            stream.write_all(b"\r\n").await?;
            let mut ok = [0u8; 5];
            stream.read_exact(&mut ok).await?;
            Ok::<_, std::io::Error>(ok)
        }
        .await;
        match written {
            Ok(ok) if &ok == b"+OK\r\n" => Ok(()),
            Ok(other) => {
                *con = None;
                bail!("redis SET (plain): {:?}", String::from_utf8_lossy(&other))
            }
            Err(e) => {
                *con = None;
                Err(e).context("redis SET (plain)")
            }
        }
    }

    /// Read the object back; returns the time and the number of bytes read.
    pub(crate) async fn read(&self, kind: RawKind, key: &RawKey) -> Result<(Duration, usize)> {
        match (kind, key) {
            (RawKind::Fs, RawKey::Path(path)) => {
                let start = Instant::now();
                let v = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
                Ok((start.elapsed(), std::hint::black_box(v).len()))
            }
            (RawKind::Redis, RawKey::Name(key)) => {
                let mut con = self.redis()?;
                let start = Instant::now();
                let v: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut con)
                    .await
                    .context("redis GET")?;
                let dt = start.elapsed();
                Ok((dt, v.map_or(0, |v| v.len())))
            }
            (RawKind::S3, RawKey::Name(key)) => {
                let (client, bucket, _) = self.s3()?;
                let start = Instant::now();
                let out = client
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .context("s3 get_object")?;
                let body = out
                    .body
                    .collect()
                    .await
                    .context("s3 get_object body")?
                    .into_bytes();
                Ok((start.elapsed(), body.len()))
            }
            _ => bail!("raw read with a key of another backend"),
        }
    }

    /// Remove the object (untimed).
    pub(crate) async fn delete(&self, kind: RawKind, key: RawKey) -> Result<()> {
        match (kind, key) {
            (RawKind::Fs, RawKey::Path(p)) => {
                std::fs::remove_file(&p).with_context(|| format!("remove {}", p.display()))
            }
            (RawKind::Redis, RawKey::Name(k)) => {
                let mut con = self.redis()?;
                redis::cmd("DEL")
                    .arg(k)
                    .query_async::<()>(&mut con)
                    .await
                    .context("redis DEL")
            }
            (RawKind::S3, RawKey::Name(k)) => {
                let (client, bucket, _) = self.s3()?;
                client
                    .delete_object()
                    .bucket(bucket)
                    .key(k)
                    .send()
                    .await
                    .context("s3 delete_object")?;
                Ok(())
            }
            _ => bail!("raw delete with a key of another backend"),
        }
    }
}

/// Baseline kinds by connector name.
pub(crate) fn baselines() -> BTreeMap<&'static str, RawKind> {
    BTreeMap::from([
        ("memory", RawKind::Memcpy),
        ("file", RawKind::Fs),
        ("redis", RawKind::Redis),
        ("s3", RawKind::S3),
        ("grpc", RawKind::Redis),
    ])
}
