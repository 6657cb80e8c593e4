//! The servers the Python binding's tests need, started on free loopback ports in one process.
//!
//! Prints one JSON line with their addresses and credentials, then serves until its standard
//! input closes (the pytest session that spawned it ends or dies), and stops them all:
//!
//! ```text
//! {"redis": {"host": "127.0.0.1", "port": P, "url": "redis://127.0.0.1:P"},
//!  "s3": {"endpoint_url": ..., "bucket": ..., "region": ..., "access_key_id": ..., "secret_access_key": ...},
//!  "grpc": {"address": ...}, "grpc_auth": {"address": ..., "token": ...},
//!  "globus": {"api_url": ..., "token": ..., "token_file": ...,
//!             "collections": [{"uuid": ..., "root": ...}, {"uuid": ..., "root": ...}]}}
//! ```
//!
//! Redis is the `redis-server` binary (a missing binary is an error, not a skip); S3, both
//! gRPC servers and the fake Globus Transfer API (`proxystore_tests::globus_fake`, two
//! collections in a temporary directory, tasks ACTIVE for 20 ms) run inside this process.

use std::io::{Read, Write};
use std::time::Duration;

use proxystore_tests::globus_fake::FakeGlobus;
use proxystore_tests::grpc_server::{ServerConfig, in_process, spawn};
use proxystore_tests::redis_server::RedisServer;
use proxystore_tests::s3_server::{BUCKET, REGION, S3Server};

fn main() -> anyhow::Result<()> {
    let redis = RedisServer::start()?;
    let s3 = S3Server::start()?;
    let grpc = in_process()?;
    let token = uuid::Uuid::new_v4().simple().to_string();
    let grpc_auth = spawn(ServerConfig::default().token(token.clone()))?;
    let globus = Globus::start()?;
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
        "globus": globus.describe(),
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    drop(out);
    // Until the parent closes our standard input (or dies, which closes it too).
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop((grpc, grpc_auth, s3, redis, globus));
    Ok(())
}

/// Token the fake Globus API accepts.
const GLOBUS_TOKEN: &str = "fake-transfer-token-py";
/// The two fake collections.
const GLOBUS_COLLECTIONS: [&str; 2] = [
    "0d2c5a4e-6f1b-4c8e-9a3d-1b2c3d4e5f60",
    "7e8f9a0b-1c2d-4e3f-8a4b-5c6d7e8f9a0b",
];

/// The fake Globus Transfer API on a runtime of its own, its collections' roots and a token
/// file in one temporary directory.
struct Globus {
    fake: FakeGlobus,
    dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
}

impl Globus {
    fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let collections = GLOBUS_COLLECTIONS.map(|uuid| (uuid.to_owned(), dir.path().join(uuid)));
        for (_, root) in &collections {
            std::fs::create_dir_all(root)?;
        }
        std::fs::write(dir.path().join("token"), format!("{GLOBUS_TOKEN}\n"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let fake = runtime.block_on(FakeGlobus::start(
            GLOBUS_TOKEN,
            collections,
            Duration::from_millis(20),
        ))?;
        Ok(Globus { fake, dir, runtime })
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "api_url": self.fake.api_url(),
            "token": GLOBUS_TOKEN,
            "token_file": self.dir.path().join("token"),
            "collections": GLOBUS_COLLECTIONS.map(|uuid| serde_json::json!({
                "uuid": uuid,
                "root": self.dir.path().join(uuid),
            })),
        })
    }
}

impl Drop for Globus {
    fn drop(&mut self) {
        // Stop the server on its runtime before the runtime goes.
        self.runtime.block_on(self.fake.stop());
    }
}
