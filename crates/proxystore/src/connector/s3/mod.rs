//! The S3 connector: one object per key in a bucket of Amazon S3 or an S3-compatible server.
//!
//! Objects are stored under `prefix + key`, where `key` is a random UUID chosen by the connector.
//! Objects above [`S3Config::multipart_above`] (100 MiB) go up as multipart uploads of
//! [`S3Config::part_size`] parts, several at a time; a
//! multipart upload that fails (or whose operation is cancelled) is aborted, so no partial object
//! or orphaned parts remain. Ranged reads use the HTTP `Range` header.
//!
//! The client is built lazily on the library's I/O runtime (where a store runs every call) from
//! aws-config's standard chain (environment variables, shared config and credentials files with
//! `credential_process`, web identity, ECS and EC2 metadata; SSO profiles are not built in), with
//! the region, endpoint and credentials of the config taking precedence. Every
//! request runs on that runtime, and no operation takes longer than
//! [`S3Config::operation_timeout_ms`]: it ends with [`Error::Timeout`].
//!
//! When neither the config nor the environment names a region or credentials, the standard chain
//! asks the EC2 instance metadata service; set them (or `AWS_EC2_METADATA_DISABLED=true`) where
//! that service does not exist.

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::{CallConfig, CallRuntime, Connector, ConnectorConfig, PutOptions, Resource};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::runtime::io_handle;

/// Kind name of this connector.
pub const KIND: &str = "s3";

mod config;

pub use config::{DEFAULT_MULTIPART_ABOVE, DEFAULT_PART_SIZE, MIN_PART_SIZE, S3Config};

/// Longest object key S3 accepts, in bytes.
const MAX_KEY_BYTES: usize = 1024;
/// Keys per `DeleteObjects` request (the S3 maximum).
const DELETE_CHUNK: usize = 1000;
/// Objects fetched or put at once by the batch operations.
const BATCH_CONCURRENCY: usize = 8;

/// Objects in an S3 bucket.
///
/// ```no_run
/// # proxystore::runtime::block_on(async {
/// use proxystore::connector::{Connector, s3::{S3Config, S3Connector}};
/// let c = S3Connector::with_config(S3Config {
///     prefix: "proxystore/".into(),
///     region: Some("eu-west-1".into()),
///     ..S3Config::new("my-bucket")
/// })?;
/// let key = c.put(bytes::Bytes::from_static(b"data")).await?; // s3://my-bucket/proxystore/<key>
/// let head = c.get_range(&key, 0..2).await?;
/// assert_eq!(head.as_deref(), Some(&b"da"[..]));
/// # Ok::<_, proxystore::Error>(()) })??;
/// # Ok::<_, proxystore::Error>(())
/// ```
#[derive(Clone)]
pub struct S3Connector {
    inner: Arc<Inner>,
}

struct Inner {
    config: S3Config,
    client: tokio::sync::OnceCell<Client>,
}

impl fmt::Debug for S3Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Connector")
            .field("config", &self.inner.config)
            .field("client_built", &self.inner.client.initialized())
            .finish()
    }
}

impl S3Connector {
    /// A connector from `config` (see [`S3Config`]). Does not contact the server: the first
    /// operation does.
    ///
    /// # Errors
    /// [`Error::Config`] for a missing bucket, a part size below 5 MiB, zero timeouts, or half of
    /// a key pair.
    pub fn with_config(config: S3Config) -> Result<Self> {
        config.validate()?;
        Ok(S3Connector {
            inner: Arc::new(Inner {
                config,
                client: tokio::sync::OnceCell::new(),
            }),
        })
    }

    /// Build from a [`ConnectorConfig`] of kind `s3`.
    ///
    /// # Errors
    /// As for [`S3Connector::with_config`].
    pub fn from_config(config: &ConnectorConfig) -> Result<Arc<dyn Connector>> {
        Ok(Arc::new(Self::with_config(config.options()?)?))
    }

    /// What a connector built from `config` would touch, for the resolve policy: the bucket,
    /// and the endpoint's host when it is not AWS.
    pub(crate) fn resources(config: &ConnectorConfig) -> Result<Vec<Resource>> {
        let config: S3Config = config.options()?;
        let mut out = vec![Resource::Bucket(config.bucket)];
        if let Some(endpoint) = &config.endpoint_url {
            let bad = |why: &str| Error::config(format!("s3 endpoint_url {endpoint:?}: {why}"));
            let url = url::Url::parse(endpoint).map_err(|e| bad(&e.to_string()))?;
            // The SDK parses the endpoint with its own parser; refusing user info and
            // characters that URL parsers disagree on leaves no room between the two.
            if !url.username().is_empty()
                || url.password().is_some()
                || endpoint.contains(['\\', '@'])
                || endpoint
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(bad(
                    "user info, backslashes and white space are not accepted",
                ));
            }
            let host = match url.host() {
                Some(url::Host::Domain(d)) => d.to_owned(),
                Some(url::Host::Ipv4(ip)) => ip.to_string(),
                Some(url::Host::Ipv6(ip)) => ip.to_string(),
                None => return Err(bad("no host")),
            };
            out.push(Resource::Host {
                what: "s3 endpoint",
                host,
                port: url.port_or_known_default(),
            });
        }
        Ok(out)
    }

    /// The configuration.
    pub fn s3_config(&self) -> &S3Config {
        &self.inner.config
    }

    /// The object key of `key`, after checking that S3 and S3-compatible servers take it
    /// literally.
    ///
    /// Servers that keep objects as files (s3s-fs, MinIO) resolve `.` and `..` segments and
    /// fold empty ones, so such keys are refused rather than left to alias other objects.
    fn object_key(&self, key: &Key) -> Result<String> {
        let k = key.as_str();
        let full = format!("{}{k}", self.inner.config.prefix);
        let reason = if k.is_empty() {
            Some("empty key")
        } else if k.chars().any(char::is_control) {
            Some("contains a control character")
        } else if full.len() > MAX_KEY_BYTES {
            Some("longer than 1024 bytes with the prefix")
        } else if full
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            Some("has an empty, `.` or `..` path segment")
        } else {
            None
        };
        match reason {
            Some(r) => Err(Error::InvalidKey {
                connector: KIND.into(),
                key: k.to_owned(),
                reason: r.into(),
            }),
            None => Ok(full),
        }
    }

    /// Run `f` with the client. The store's layers run it on the I/O runtime within
    /// [`S3Config::operation_timeout_ms`] (see [`Connector::call_config`]); the SDK retries
    /// each request.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Arc<Inner>, Client) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let client = self.inner.client().await?;
        f(self.inner.clone(), client).await
    }
}

impl Inner {
    async fn client(&self) -> Result<Client> {
        self.client
            .get_or_init(|| async {
                let c = &self.config;
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .timeout_config(
                        aws_config::timeout::TimeoutConfig::builder()
                            .connect_timeout(Duration::from_millis(c.connect_timeout_ms))
                            .read_timeout(Duration::from_millis(c.read_timeout_ms))
                            .build(),
                    )
                    .retry_config(
                        aws_config::retry::RetryConfig::standard()
                            .with_max_attempts(c.max_attempts),
                    );
                if let Some(region) = &c.region {
                    loader = loader.region(aws_config::Region::new(region.clone()));
                }
                if let Some(endpoint) = &c.endpoint_url {
                    loader = loader.endpoint_url(endpoint);
                }
                if let Some(profile) = &c.profile {
                    loader = loader.profile_name(profile);
                }
                if let (Some(id), Some(secret)) = (&c.access_key_id, &c.secret_access_key) {
                    loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                        id,
                        secret,
                        c.session_token.clone(),
                        None,
                        "proxystore-config",
                    ));
                }
                let shared = loader.load().await;
                let s3 = aws_sdk_s3::config::Builder::from(&shared)
                    .force_path_style(c.force_path_style)
                    .build();
                Client::from_conf(s3)
            })
            .await;
        self.client
            .get()
            .cloned()
            .ok_or_else(|| Error::config("s3 client was not built"))
    }

    /// Map an SDK error: 404s are handled by the callers; credentials problems become
    /// [`Error::Unauthorized`], timeouts [`Error::Timeout`], the rest [`Error::Backend`]:
    /// temporary for throttling, 5xx and requests that never got an answer, permanent for
    /// the other refusals.
    fn error<E>(&self, op: &str, e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let code = e.code().map(str::to_owned);
        let message = format!("{op}: {}", DisplayErrorContext(&e));
        match &e {
            SdkError::TimeoutError(_) => {
                return Error::Timeout {
                    operation: format!("s3 {op}"),
                    after: Duration::from_millis(self.config.read_timeout_ms),
                };
            }
            SdkError::DispatchFailure(d) if d.is_timeout() => {
                return Error::Timeout {
                    operation: format!("s3 {op}"),
                    after: Duration::from_millis(self.config.connect_timeout_ms),
                };
            }
            _ => {}
        }
        match (status, code.as_deref()) {
            (Some(401 | 403), _)
            | (
                _,
                Some(
                    "AccessDenied"
                    | "InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "ExpiredToken"
                    | "InvalidToken",
                ),
            ) => Error::Unauthorized {
                message: format!("s3 {message}"),
            },
            (_, Some("NoSuchBucket")) => Error::config(format!(
                "s3 bucket {:?} does not exist ({message})",
                self.config.bucket
            )),
            (Some(413), _) | (_, Some("EntityTooLarge")) => Error::LimitExceeded {
                message: format!("s3 {message}"),
            },
            (Some(429 | 500..=599), _)
            | (_, Some("SlowDown" | "Throttling" | "RequestTimeout" | "InternalError")) => {
                Error::temporary(KIND, message, e)
            }
            (None, _) if matches!(e, SdkError::DispatchFailure(_) | SdkError::ResponseError(_)) => {
                Error::temporary(KIND, message, e)
            }
            _ => Error::backend(KIND, message, e),
        }
    }

    /// `GetObject`, sent again once when its body broke off or failed its checksum: the SDK
    /// retries a request only until its response headers arrive, and a body cut or corrupted
    /// in transit is worth one more read before failing the caller.
    async fn get(
        &self,
        client: &Client,
        key: String,
        range: Option<String>,
    ) -> Result<Option<Bytes>> {
        match self.get_once(client, key.clone(), range.clone()).await? {
            Ok(got) => Ok(got),
            Err(body_error) => {
                tracing::debug!(key, error = %body_error, "S3 body failed; reading it again");
                self.get_once(client, key, range).await?
            }
        }
    }

    /// One `GetObject`: the request's error outside, the body's inside.
    async fn get_once(
        &self,
        client: &Client,
        key: String,
        range: Option<String>,
    ) -> Result<Result<Option<Bytes>>> {
        let op = if range.is_some() {
            "GetObject (range)"
        } else {
            "GetObject"
        };
        let out = client
            .get_object()
            .bucket(&self.config.bucket)
            .key(&key)
            .set_range(range)
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) if is_not_found(&e) => return Ok(Ok(None)),
            // A range starting at or past the end of an existing object.
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) => {
                return Ok(Ok(Some(Bytes::new())));
            }
            Err(e) => return Err(self.error(op, e)),
        };
        // Into one buffer of the announced length: collecting the chunks and joining them
        // would hold the object twice (2.7x its size at peak for 1 GiB).
        let mut body = out.body;
        let expected = out
            .content_length
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0);
        let mut buf = Vec::new();
        // A length the allocator refuses (a hostile server) falls back to growing as it comes.
        let _ = buf.try_reserve_exact(expected);
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => buf.extend_from_slice(&chunk),
                Err(e) => {
                    return Ok(Err(Error::temporary(
                        KIND,
                        format!("{op}: reading the body"),
                        e,
                    )));
                }
            }
        }
        Ok(Ok(Some(Bytes::from(buf))))
    }

    async fn exists(&self, client: &Client, key: String) -> Result<bool> {
        match client
            .head_object()
            .bucket(&self.config.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(self.error("HeadObject", e)),
        }
    }

    async fn put(self: &Arc<Self>, client: &Client, key: String, data: Bytes) -> Result<()> {
        if data.len() as u64 <= self.config.multipart_above {
            client
                .put_object()
                .bucket(&self.config.bucket)
                .key(key)
                .content_length(data.len() as i64)
                .body(ByteStream::from(data))
                .send()
                .await
                .map_err(|e| self.error("PutObject", e))?;
            return Ok(());
        }
        let created = client
            .create_multipart_upload()
            .bucket(&self.config.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| self.error("CreateMultipartUpload", e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| {
                Error::backend_message(KIND, "CreateMultipartUpload returned no upload id", false)
            })?
            .to_owned();
        let mut guard = AbortGuard {
            inner: self.clone(),
            client: client.clone(),
            key: key.clone(),
            upload_id: Some(upload_id.clone()),
        };
        let result = self.upload_parts(client, &key, &upload_id, data).await;
        match result {
            Ok(()) => {
                guard.upload_id = None;
                Ok(())
            }
            Err(e) => {
                guard.abort().await;
                Err(e)
            }
        }
    }

    async fn upload_parts(
        &self,
        client: &Client,
        key: &str,
        upload_id: &str,
        data: Bytes,
    ) -> Result<()> {
        let part_size = self.config.part_size as usize;
        let parts = (0..data.len().div_ceil(part_size)).map(|i| {
            let part = data.slice(i * part_size..((i + 1) * part_size).min(data.len()));
            let number = i as i32 + 1;
            async move {
                let out = client
                    .upload_part()
                    .bucket(&self.config.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .content_length(part.len() as i64)
                    .body(ByteStream::from(part))
                    .send()
                    .await
                    .map_err(|e| self.error("UploadPart", e))?;
                Ok::<_, Error>(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_owned))
                        .set_checksum_crc32(out.checksum_crc32().map(str::to_owned))
                        .build(),
                )
            }
        });
        let completed: Vec<CompletedPart> = futures::stream::iter(parts)
            .buffered(self.config.upload_concurrency)
            .try_collect()
            .await?;
        client
            .complete_multipart_upload()
            .bucket(&self.config.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.error("CompleteMultipartUpload", e))?;
        Ok(())
    }
}

/// Aborts a multipart upload that did not complete, also when the put is cancelled.
struct AbortGuard {
    inner: Arc<Inner>,
    client: Client,
    key: String,
    upload_id: Option<String>,
}

impl AbortGuard {
    fn request(&mut self) -> Option<impl Future<Output = ()> + Send + 'static> {
        let upload_id = self.upload_id.take()?;
        let client = self.client.clone();
        let bucket = self.inner.config.bucket.clone();
        let key = self.key.clone();
        Some(async move {
            if let Err(e) = client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(&key)
                .upload_id(upload_id)
                .send()
                .await
            {
                tracing::warn!(key, error = %DisplayErrorContext(&e), "s3: cannot abort multipart upload");
            }
        })
    }

    async fn abort(&mut self) {
        if let Some(fut) = self.request() {
            fut.await;
        }
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if let Some(fut) = self.request() {
            io_handle().spawn(fut);
        }
    }
}

fn is_not_found<E: ProvideErrorMetadata>(
    e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    e.raw_response().is_some_and(|r| r.status().as_u16() == 404)
        && !matches!(e.code(), Some("NoSuchBucket"))
}

#[async_trait]
impl Connector for S3Connector {
    fn kind(&self) -> &str {
        KIND
    }

    /// On the I/O runtime, each operation bounded by [`S3Config::operation_timeout_ms`]. The
    /// SDK retries each request ([`S3Config::max_attempts`]), so that a multipart upload
    /// re-sends a failed part, not the whole object; the layer adds no retries of its own.
    fn call_config(&self) -> CallConfig {
        CallConfig {
            runtime: CallRuntime::Io,
            timeout: Some(self.inner.config.operation_timeout()),
            retry: None,
        }
    }

    async fn put_opts(&self, data: Bytes, _options: &PutOptions) -> Result<Key> {
        let key = Key::random();
        self.set(&key, data).await?;
        Ok(key)
    }

    async fn get(&self, key: &Key) -> Result<Option<Bytes>> {
        let k = self.object_key(key)?;
        self.run(move |inner, client| async move { inner.get(&client, k, None).await })
            .await
    }

    async fn exists(&self, key: &Key) -> Result<bool> {
        let k = self.object_key(key)?;
        self.run(move |inner, client| async move { inner.exists(&client, k).await })
            .await
    }

    async fn evict(&self, key: &Key) -> Result<()> {
        let k = self.object_key(key)?;
        self.run(move |inner, client| async move {
            client
                .delete_object()
                .bucket(&inner.config.bucket)
                .key(k)
                .send()
                .await
                .map_err(|e| inner.error("DeleteObject", e))?;
            Ok(())
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
        let keys: Vec<Key> = data.iter().map(|_| Key::random()).collect();
        let items: Vec<(String, Bytes)> = keys
            .iter()
            .map(|k| self.object_key(k))
            .zip(data)
            .map(|(k, d)| k.map(|k| (k, d)))
            .collect::<Result<_>>()?;
        self.run(move |inner, client| async move {
            futures::stream::iter(items)
                .map(|(k, d)| {
                    let inner = inner.clone();
                    let client = client.clone();
                    async move { inner.put(&client, k, d).await }
                })
                .buffer_unordered(BATCH_CONCURRENCY)
                .try_collect::<()>()
                .await
        })
        .await?;
        Ok(keys)
    }

    async fn get_batch(&self, keys: &[Key]) -> Result<Vec<Option<Bytes>>> {
        let ks: Vec<String> = keys
            .iter()
            .map(|k| self.object_key(k))
            .collect::<Result<_>>()?;
        self.run(move |inner, client| async move {
            futures::stream::iter(ks)
                .map(|k| {
                    let inner = inner.clone();
                    let client = client.clone();
                    async move { inner.get(&client, k, None).await }
                })
                .buffered(BATCH_CONCURRENCY)
                .try_collect()
                .await
        })
        .await
    }

    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Option<Bytes>> {
        let k = self.object_key(key)?;
        self.run(move |inner, client| async move {
            if range.start >= range.end {
                let exists = inner.exists(&client, k).await?;
                return Ok(exists.then(Bytes::new));
            }
            // HTTP ranges are inclusive; S3 clamps the end to the object.
            let header = format!("bytes={}-{}", range.start, range.end - 1);
            inner.get(&client, k, Some(header)).await
        })
        .await
    }

    async fn evict_batch(&self, keys: &[Key]) -> Result<()> {
        let ks: Vec<String> = keys
            .iter()
            .map(|k| self.object_key(k))
            .collect::<Result<_>>()?;
        self.run(move |inner, client| async move {
            for chunk in ks.chunks(DELETE_CHUNK) {
                let objects = chunk
                    .iter()
                    .map(|k| ObjectIdentifier::builder().key(k).build())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| Error::backend(KIND, "DeleteObjects request", e))?;
                let delete = Delete::builder()
                    .set_objects(Some(objects))
                    .quiet(true)
                    .build()
                    .map_err(|e| Error::backend(KIND, "DeleteObjects request", e))?;
                let out = client
                    .delete_objects()
                    .bucket(&inner.config.bucket)
                    .delete(delete)
                    .send()
                    .await
                    .map_err(|e| inner.error("DeleteObjects", e))?;
                if let Some(err) = out.errors().first() {
                    let code = err.code().unwrap_or_default();
                    return Err(Error::backend_message(
                        KIND,
                        format!(
                            "DeleteObjects: {} of {} keys failed, first {:?}: {} {}",
                            out.errors().len(),
                            chunk.len(),
                            err.key().unwrap_or_default(),
                            code,
                            err.message().unwrap_or_default()
                        ),
                        matches!(code, "InternalError" | "SlowDown" | "ServiceUnavailable"),
                    ));
                }
            }
            Ok(())
        })
        .await
    }

    async fn new_key(&self, _options: &PutOptions) -> Result<Key> {
        Ok(Key::random())
    }

    async fn set(&self, key: &Key, data: Bytes) -> Result<()> {
        let k = self.object_key(key)?;
        self.run(move |inner, client| async move { inner.put(&client, k, data).await })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validates_round_trips_and_redacts() {
        let c = S3Connector::with_config(S3Config {
            access_key_id: Some("AKIA".into()),
            secret_access_key: Some("hunter2".into()),
            session_token: Some("tok3n".into()),
            region: Some("us-east-1".into()),
            ..S3Config::new("b")
        })
        .unwrap();
        let config = c.config();
        let again = S3Connector::from_config(&config).unwrap();
        assert_eq!(again.config(), config);
        for dbg in [format!("{c:?}"), format!("{config:?}")] {
            assert!(!dbg.contains("hunter2") && !dbg.contains("tok3n"), "{dbg}");
        }
        for bad in [
            S3Config::default(),
            S3Config {
                part_size: 1 << 20,
                ..S3Config::new("b")
            },
            S3Config {
                access_key_id: Some("a".into()),
                ..S3Config::new("b")
            },
            S3Config {
                operation_timeout_ms: 0,
                ..S3Config::new("b")
            },
        ] {
            let e = S3Connector::with_config(bad).unwrap_err();
            assert!(matches!(e, Error::Config { .. }), "{e}");
        }
    }

    #[test]
    fn keys_that_would_alias_are_invalid() {
        let c = S3Connector::with_config(S3Config {
            prefix: "p/".into(),
            ..S3Config::new("b")
        })
        .unwrap();
        assert_eq!(c.object_key(&Key::from("k")).unwrap(), "p/k");
        assert_eq!(
            c.object_key(&Key::from("ключ ✓ *?")).unwrap(),
            "p/ключ ✓ *?"
        );
        for k in ["", ".", "..", "../x", "/etc/passwd", "a//b", "a/", "nul\0"] {
            assert!(
                matches!(c.object_key(&Key::from(k)), Err(Error::InvalidKey { .. })),
                "{k:?}"
            );
        }
        assert!(c.object_key(&Key::from("k".repeat(1023).as_str())).is_err());
    }
}
