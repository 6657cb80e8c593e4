//! The options of an S3 connector.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Smallest part S3 accepts in a multipart upload (all parts but the last).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// Default part size of multipart uploads.
pub const DEFAULT_PART_SIZE: u64 = 8 << 20;
/// Default size above which a put becomes a multipart upload: 100 MiB, where AWS advises
/// considering multipart uploads.
pub const DEFAULT_MULTIPART_ABOVE: u64 = 100 << 20;

fn is_default_multipart_above(n: &u64) -> bool {
    *n == DEFAULT_MULTIPART_ABOVE
}

/// Options of an [`S3Connector`](super::S3Connector).
///
/// Only `bucket` is required. Explicit credentials travel in every proxy reference made with
/// this connector (the `Debug` of the config redacts them); prefer the standard chain
/// (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, ...) where it is available.
///
/// ```
/// use proxystore::connector::s3::S3Config;
/// let c = S3Config {
///     prefix: "runs/42/".into(),
///     region: Some("us-east-1".into()),
///     endpoint_url: Some("http://127.0.0.1:9000".into()),
///     force_path_style: true,
///     secret_access_key: Some("hunter2".into()),
///     ..S3Config::new("my-bucket")
/// };
/// assert!(!format!("{c:?}").contains("hunter2"));
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct S3Config {
    /// The bucket (must exist).
    pub bucket: String,
    /// Prefix of every object key this connector writes (default none).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// Region; default from the standard chain (`AWS_REGION`, profile, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Endpoint of an S3-compatible server, e.g. `http://127.0.0.1:9000`; default AWS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// Address buckets as `endpoint/bucket/key` instead of `bucket.endpoint/key`; most
    /// S3-compatible servers need this.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub force_path_style: bool,
    /// Shared config profile to read; default `AWS_PROFILE` or `default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Access key id; with `secret_access_key`, replaces the standard credential chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// Secret access key (see `access_key_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
    /// Part size of multipart uploads in bytes, at least 5 MiB (default 8 MiB).
    pub part_size: u64,
    /// Objects larger than this many bytes go up as multipart uploads (in `part_size` parts,
    /// `upload_concurrency` at a time); others in one PUT. Default
    /// [`DEFAULT_MULTIPART_ABOVE`] (100 MiB). Parts in parallel fill links one stream cannot;
    /// but a server that assembles an upload by copying its parts (s3s-fs reads, hashes and
    /// copies every part at `CompleteMultipartUpload`) makes them cost more than they save:
    /// there a 100 MiB put in 8 MiB parts took 1.4x one PUT.
    #[serde(skip_serializing_if = "is_default_multipart_above")]
    pub multipart_above: u64,
    /// Parts of one multipart upload in flight at once (default 4).
    pub upload_concurrency: usize,
    /// How long to wait for a connection, in milliseconds (default 5 000).
    pub connect_timeout_ms: u64,
    /// How long to wait for the first byte of a reply, in milliseconds (default 30 000).
    pub read_timeout_ms: u64,
    /// Bound on one whole connector operation, retries and transfer included, in milliseconds
    /// (default 600 000).
    pub operation_timeout_ms: u64,
    /// Attempts per request, first included, for throttling and server errors (default 3).
    pub max_attempts: u32,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            prefix: String::new(),
            region: None,
            endpoint_url: None,
            force_path_style: false,
            profile: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            part_size: DEFAULT_PART_SIZE,
            multipart_above: DEFAULT_MULTIPART_ABOVE,
            upload_concurrency: 4,
            connect_timeout_ms: 5_000,
            read_timeout_ms: 30_000,
            operation_timeout_ms: 600_000,
            max_attempts: 3,
        }
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("force_path_style", &self.force_path_style)
            .field("profile", &self.profile)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("session_token", &redacted(&self.session_token))
            .field("part_size", &self.part_size)
            .field("multipart_above", &self.multipart_above)
            .field("upload_concurrency", &self.upload_concurrency)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("read_timeout_ms", &self.read_timeout_ms)
            .field("operation_timeout_ms", &self.operation_timeout_ms)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

impl S3Config {
    /// A config for `bucket` with defaults for everything else.
    pub fn new(bucket: impl Into<String>) -> Self {
        S3Config {
            bucket: bucket.into(),
            ..S3Config::default()
        }
    }

    /// The bound on one operation as a duration.
    pub fn operation_timeout(&self) -> Duration {
        Duration::from_millis(self.operation_timeout_ms)
    }

    pub(super) fn validate(&self) -> Result<()> {
        let problem = if self.bucket.is_empty() {
            Some("bucket is required".to_owned())
        } else if self.part_size < MIN_PART_SIZE {
            Some(format!(
                "part_size {} is below S3's minimum of {MIN_PART_SIZE}",
                self.part_size
            ))
        } else if self.upload_concurrency == 0 || self.max_attempts == 0 {
            Some("upload_concurrency and max_attempts must be above zero".into())
        } else if self.connect_timeout_ms == 0
            || self.read_timeout_ms == 0
            || self.operation_timeout_ms == 0
        {
            Some("timeouts must be above zero".into())
        } else if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            Some("access_key_id and secret_access_key go together".into())
        } else {
            None
        };
        match problem {
            Some(p) => Err(Error::config(format!("s3 connector: {p}"))),
            None => Ok(()),
        }
    }
}
