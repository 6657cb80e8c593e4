//! The connectors under test, built on the servers of the run (started on loopback unless
//! given) and the raw clients of their backends.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use proxystore::Connector;
use proxystore::connector::file::FileConnector;
use proxystore::connector::grpc::{GrpcConfig, GrpcConnector};
use proxystore::connector::memory::MemoryConnector;
use proxystore::connector::redis::{RedisConfig, RedisConnector};
use proxystore::connector::s3::{S3Config, S3Connector};

use crate::baselines::{Raw, RawKind};
use crate::options::{ConnectorName, Options};
use crate::servers;

/// A connector under test.
pub(crate) struct Subject {
    /// `memory`, `file`, `redis`, `s3` or `grpc`.
    pub(crate) name: &'static str,
    pub(crate) connector: Arc<dyn Connector>,
    /// The raw client it is compared with.
    pub(crate) baseline: RawKind,
    /// Whether another process can resolve its references (not the in-process memory store).
    pub(crate) cross_process: bool,
}

/// Servers and clients of one run.
pub(crate) struct Setup {
    pub(crate) subjects: Vec<Subject>,
    pub(crate) raw: Raw,
    pub(crate) work: PathBuf,
    pub(crate) redis_port: Option<u16>,
    _redis: Option<servers::RedisServer>,
    _s3: Option<servers::S3Server>,
    _grpc: Option<servers::GrpcServer>,
    _dir: tempfile::TempDir,
}

/// Start (or connect to) the servers of `names`, and build their connectors and raw clients.
pub(crate) fn setup(
    options: &Options,
    names: &[ConnectorName],
    runtime: &tokio::runtime::Handle,
) -> Result<Setup> {
    let parent = options.dir.clone().unwrap_or_else(std::env::temp_dir);
    let (dir, work) = servers::work_dir(&parent)?;
    let filestore = work.join("filestore");
    std::fs::create_dir_all(&filestore)?;

    let wants_redis = names.contains(&ConnectorName::Redis)
        || names.contains(&ConnectorName::Grpc)
        || options.python;
    let (redis, redis_url, redis_port) = match (&options.redis_url, wants_redis) {
        (Some(url), _) => {
            let port = url
                .rsplit(':')
                .next()
                .and_then(|p| p.split('/').next())
                .and_then(|p| p.parse().ok());
            (None, Some(url.clone()), port)
        }
        (None, true) => {
            let s = servers::RedisServer::start()?;
            let port = s.port();
            (
                Some(s),
                Some(format!("redis://127.0.0.1:{port}")),
                Some(port),
            )
        }
        (None, false) => (None, None, None),
    };
    let (s3, s3_config) = if names.contains(&ConnectorName::S3) {
        match &options.s3_endpoint {
            Some(endpoint) => (
                None,
                Some(S3Config {
                    endpoint_url: Some(endpoint.clone()),
                    force_path_style: true,
                    access_key_id: std::env::var("AWS_ACCESS_KEY_ID").ok(),
                    secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY").ok(),
                    region: std::env::var("AWS_REGION")
                        .ok()
                        .or(Some("us-east-1".into())),
                    prefix: format!("bench-{}/", proxystore::Key::random()),
                    ..S3Config::new(options.s3_bucket.clone())
                }),
            ),
            None => {
                // With credentials in the environment, the server accepts those and the
                // connector finds them through the standard chain, so that references carry
                // no secret (as in a deployment); otherwise the config carries generated ones.
                let env = match (
                    std::env::var("AWS_ACCESS_KEY_ID"),
                    std::env::var("AWS_SECRET_ACCESS_KEY"),
                ) {
                    (Ok(id), Ok(secret)) => Some((id, secret)),
                    _ => None,
                };
                let s = servers::S3Server::start(&work, env)?;
                let c = s.config("bench/");
                (Some(s), Some(c))
            }
        }
    } else {
        (None, None)
    };
    let s3_config = match (&options.s3_part_size, s3_config) {
        (Some(size), Some(c)) => {
            let size = crate::format::parse_size(size)?;
            Some(S3Config {
                part_size: size,
                multipart_above: size,
                ..c
            })
        }
        (_, c) => c,
    };
    let (grpc, grpc_config) = if names.contains(&ConnectorName::Grpc) {
        match &options.grpc_url {
            Some(url) => (None, Some(GrpcConfig::new(url.clone()))),
            None => {
                let s = servers::GrpcServer::start()?;
                let c = s.config();
                (Some(s), Some(c))
            }
        }
    } else {
        (None, None)
    };

    let mut subjects = Vec::new();
    for name in names {
        let (label, connector, baseline, cross): (_, Arc<dyn Connector>, _, _) = match name {
            ConnectorName::Memory => (
                "memory",
                Arc::new(MemoryConnector::new("proxystore-bench")),
                RawKind::Memcpy,
                false,
            ),
            ConnectorName::File => (
                "file",
                Arc::new(FileConnector::new(&filestore)?),
                RawKind::Fs,
                true,
            ),
            ConnectorName::Redis => {
                let url = redis_url.clone().context("no Redis URL")?;
                (
                    "redis",
                    Arc::new(RedisConnector::with_config(RedisConfig {
                        prefix: "bench:".into(),
                        ..RedisConfig::new(url)
                    })?),
                    RawKind::Redis,
                    true,
                )
            }
            ConnectorName::S3 => (
                "s3",
                Arc::new(S3Connector::with_config(
                    s3_config.clone().context("no S3 config")?,
                )?),
                RawKind::S3,
                true,
            ),
            ConnectorName::Grpc => (
                "grpc",
                Arc::new(GrpcConnector::with_config(
                    grpc_config.clone().context("no gRPC config")?,
                )?),
                RawKind::Redis,
                true,
            ),
        };
        subjects.push(Subject {
            name: label,
            connector,
            baseline,
            cross_process: cross,
        });
    }
    let raw = runtime.block_on(Raw::new(
        filestore,
        redis_url.as_deref(),
        s3_config.as_ref(),
    ))?;
    Ok(Setup {
        subjects,
        raw,
        work,
        redis_port,
        _redis: redis,
        _s3: s3,
        _grpc: grpc,
        _dir: dir,
    })
}
