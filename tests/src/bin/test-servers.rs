//! The servers the Python binding's tests need, started on free loopback ports in one process.
//!
//! Prints one JSON line with their addresses and credentials, then serves until its standard
//! input closes (the pytest session that spawned it ends or dies), and stops them all:
//!
//! ```text
//! {"redis": {"host": "127.0.0.1", "port": P, "url": "redis://127.0.0.1:P"},
//!  "s3": {"endpoint_url": ..., "bucket": ..., "region": ..., "access_key_id": ..., "secret_access_key": ...},
//!  "grpc": {"address": ...}, "grpc_auth": {"address": ..., "token": ...}}
//! ```
//!
//! Redis is the `redis-server` binary (a missing binary is an error, not a skip); S3 and both
//! gRPC servers run inside this process.

use std::io::{Read, Write};

use proxystore_tests::grpc_server::{ServerConfig, in_process, spawn};
use proxystore_tests::redis_server::RedisServer;
use proxystore_tests::s3_server::{BUCKET, REGION, S3Server};

fn main() -> anyhow::Result<()> {
    let redis = RedisServer::start()?;
    let s3 = S3Server::start()?;
    let grpc = in_process()?;
    let token = uuid::Uuid::new_v4().simple().to_string();
    let grpc_auth = spawn(ServerConfig::default().token(token.clone()))?;
    let line = serde_json::json!({
        "redis": {"host": "127.0.0.1", "port": redis.port(), "url": redis.url()},
        "s3": {
            "endpoint_url": s3.endpoint(),
            "bucket": BUCKET,
            "region": REGION,
            "access_key_id": s3.access_key(),
            "secret_access_key": s3.secret_key(),
        },
        "grpc": {"address": grpc.url()},
        "grpc_auth": {"address": grpc_auth.url(), "token": token},
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    drop(out);
    // Until the parent closes our standard input (or dies, which closes it too).
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop((grpc, grpc_auth, s3, redis));
    Ok(())
}
