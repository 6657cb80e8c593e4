//! Scale-out: three `proxystore serve` processes over one shared backend, an S3 server (the
//! test S3 server, by `--backend s3` flags) or a Redis Cluster (six `redis-server
//! --cluster-enabled yes` processes, by `--backend-config` file). 64 clients, each with a
//! connector listing all three services, spread their calls over them: every object put
//! through one service reads back through each, byte for byte. Then one service is killed
//! (SIGKILL) mid-load: clients fail over to the others, every failure on the way is a
//! temporary (retryable) error, and no acknowledged object is lost.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use proxystore::connector::ConnectorConfig;
use proxystore::connector::grpc::{GrpcConfig, GrpcConnector};
use proxystore::connector::redis::RedisConfig;
use proxystore::{Bytes, Codec, Connector, Key, PutOptions, Store};
use proxystore_tests::grpc_server::Replicas;
use proxystore_tests::object;
use proxystore_tests::redis_cluster::RedisCluster;
use proxystore_tests::s3_server::{BUCKET, REGION, S3Server};

const REPLICAS: usize = 3;
const CLIENTS: usize = 64;
/// Objects each client puts before the kill, one of each size.
const SIZES: [usize; 4] = [100, 4 << 10, (64 << 10) + 3, (1 << 20) + 7];
/// Sizes of the objects of the load during which a service is killed.
const LOAD_SIZES: [usize; 3] = [100, 2 << 10, 32 << 10];
/// The load runs at least this long after the kill, and on until every client has stored an
/// object since (at most [`RECOVERY_LIMIT`]).
const LOAD_AFTER_KILL: Duration = Duration::from_millis(2500);
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);
/// The service killed mid-load.
const VICTIM: usize = 1;

/// An object the clients put, as acknowledged.
#[derive(Clone, Debug)]
struct Acked {
    key: Key,
    id: u64,
    size: usize,
}

/// A client's store: a gRPC connector listing every service, starting at service `i % n` so
/// that the clients begin spread.
fn client_store(urls: &[String], i: usize, test: &str) -> Store {
    let n = urls.len();
    let config = GrpcConfig::new(urls[i % n].clone())
        .addresses((1..n).map(|d| urls[(i + d) % n].clone()))
        .timeout(Duration::from_secs(20));
    Store::builder(
        format!("scale-out-{test}-{i}"),
        GrpcConnector::with_config(config).unwrap(),
    )
    .build()
}

async fn put(store: &Store, id: u64, size: usize) -> proxystore::Result<Acked> {
    let data = Bytes::from(object(id, size));
    let r = store
        .put_encoded(data, Codec::Raw, "bytes", &PutOptions::default())
        .await?;
    Ok(Acked {
        key: r.key,
        id,
        size,
    })
}

/// Read every object through the service at `url` alone, byte for byte.
async fn check_all_through(url: &str, objects: &[Acked]) {
    let conn = Arc::new(GrpcConnector::new(url).unwrap());
    let missing = futures::stream::iter(objects.iter().cloned())
        .map(|o| {
            let conn = conn.clone();
            async move {
                let got = conn
                    .get(&o.key)
                    .await
                    .unwrap_or_else(|e| panic!("get {} through {url}: {e}", o.key));
                match got {
                    Some(b) if b[..] == object(o.id, o.size)[..] => None,
                    Some(b) => panic!(
                        "{} through {url}: {} bytes differ from the {} put",
                        o.key,
                        b.len(),
                        o.size
                    ),
                    None => Some(o.key),
                }
            }
        })
        .buffer_unordered(16)
        .filter_map(futures::future::ready)
        .collect::<Vec<_>>()
        .await;
    assert!(
        missing.is_empty(),
        "{} acknowledged objects missing through {url}: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Per-client figures of the load.
#[derive(Default)]
struct Load {
    acked: Vec<Acked>,
    failures: Vec<String>,
    after_kill: u64,
}

/// What the clients of the load tell the test as they go.
#[derive(Default)]
struct Progress {
    /// Objects acknowledged so far, by every client.
    acked: AtomicUsize,
    /// Set once the victim is killed.
    killed: AtomicBool,
    /// Clients that stored an object they began after the kill.
    recovered: AtomicUsize,
    stop: AtomicBool,
}

/// One client's load until `stop`: put an object, read it back, again; failures must be
/// temporary, and are counted.
async fn client_load(store: Store, client: u64, progress: Arc<Progress>) -> Load {
    let mut load = Load::default();
    let mut n = 0u64;
    while !progress.stop.load(Ordering::Relaxed) {
        let id = (client << 32) | n;
        let size = LOAD_SIZES[(n % LOAD_SIZES.len() as u64) as usize];
        n += 1;
        let after_kill = progress.killed.load(Ordering::Relaxed);
        match put(&store, id, size).await {
            Ok(a) => {
                match store.get_bytes(&a.key).await {
                    Ok(Some(b)) => assert_eq!(b[..], object(id, size)[..], "{}", a.key),
                    Ok(None) => panic!("{} acknowledged, then not found", a.key),
                    Err(e) => {
                        assert!(e.is_retryable(), "get {}: {e} is not temporary", a.key);
                        load.failures.push(format!("get: {e}"));
                    }
                }
                load.acked.push(a);
                progress.acked.fetch_add(1, Ordering::Relaxed);
                if after_kill {
                    load.after_kill += 1;
                    if load.after_kill == 1 {
                        progress.recovered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err(e) => {
                assert!(e.is_retryable(), "put: {e} is not temporary");
                load.failures.push(format!("put: {e}"));
            }
        }
    }
    load
}

/// Wait until `done`, at most [`RECOVERY_LIMIT`]; then go on (the assertions after say what
/// did not happen).
async fn wait_until(done: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + RECOVERY_LIMIT;
    while !done() {
        if Instant::now() > deadline {
            eprintln!("gave up waiting for {what} after {RECOVERY_LIMIT:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn scale_out(test: &str, mut replicas: Replicas) {
    let urls = replicas.urls();
    assert_eq!(urls.len(), REPLICAS);
    let stores: Vec<Store> = (0..CLIENTS).map(|i| client_store(&urls, i, test)).collect();

    // Every object, put through whichever service a client's turn picks, reads through each.
    let started = Instant::now();
    let puts = stores.iter().enumerate().map(|(i, store)| async move {
        let mut out = Vec::new();
        for (j, size) in SIZES.into_iter().enumerate() {
            let id = (i * SIZES.len() + j) as u64;
            out.push(
                put(store, id, size)
                    .await
                    .unwrap_or_else(|e| panic!("put {id}: {e}")),
            );
        }
        out
    });
    let objects: Vec<Acked> = futures::future::join_all(puts).await.concat();
    let bytes: usize = objects.iter().map(|o| o.size).sum();
    eprintln!(
        "{test}: {} objects ({bytes} bytes) put by {CLIENTS} clients over {REPLICAS} services in {:?}",
        objects.len(),
        started.elapsed()
    );
    for url in &urls {
        check_all_through(url, &objects).await;
    }
    // Each service took some of the puts (their accounting is per service).
    for url in &urls {
        let stat = GrpcConnector::new(url.as_str())
            .unwrap()
            .stat()
            .await
            .unwrap();
        assert!(stat.object_count > 0, "{url} took none of the puts");
    }

    // A service killed mid-load: once the load is under way (every client's first object
    // acknowledged, in number), and kept up until every client has recovered.
    let progress = Arc::new(Progress::default());
    let tasks: Vec<_> = stores
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, store)| tokio::spawn(client_load(store, i as u64, progress.clone())))
        .collect();
    wait_until(
        || progress.acked.load(Ordering::Relaxed) >= CLIENTS,
        "the load to start",
    )
    .await;
    replicas.kill(VICTIM);
    progress.killed.store(true, Ordering::Relaxed);
    let killed_at = Instant::now();
    tokio::time::sleep(LOAD_AFTER_KILL).await;
    wait_until(
        || progress.recovered.load(Ordering::Relaxed) == CLIENTS,
        "every client to store again after the kill",
    )
    .await;
    eprintln!(
        "{test}: every client stored again within {:?} of the kill",
        killed_at.elapsed()
    );
    progress.stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut failures = Vec::new();
    let mut idle = 0;
    for t in tasks {
        let load = t.await.unwrap();
        if load.after_kill == 0 {
            idle += 1;
        }
        acked.extend(load.acked);
        failures.extend(load.failures);
    }
    eprintln!(
        "{test}: {} objects acknowledged during the load, {} temporary failures around the kill \
         (e.g. {:?})",
        acked.len(),
        failures.len(),
        failures.first()
    );
    assert_eq!(
        idle, 0,
        "clients that stored nothing after the kill: they did not fail over"
    );
    // Nothing acknowledged is lost, through either service left.
    for (i, url) in urls.iter().enumerate().filter(|(i, _)| *i != VICTIM) {
        check_all_through(url, &objects).await;
        check_all_through(url, &acked).await;
        eprintln!("{test}: every acknowledged object reads back through service {i}");
    }

    // Evicted through one service, gone through the other.
    let all: Vec<Key> = objects
        .iter()
        .chain(&acked)
        .map(|o| o.key.clone())
        .collect();
    let first = GrpcConnector::new(urls[0].as_str()).unwrap();
    for keys in all.chunks(256) {
        first.evict_batch(keys).await.unwrap();
    }
    let last = GrpcConnector::new(urls[2].as_str()).unwrap();
    for key in all.iter().step_by(7) {
        assert!(!last.exists(key).await.unwrap(), "{key} still there");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_services_over_one_s3_bucket() {
    let s3 = S3Server::start().unwrap();
    let args: Vec<String> = [
        "--backend",
        "s3",
        "--bucket",
        BUCKET,
        "--s3-endpoint",
        &s3.endpoint(),
        "--s3-region",
        REGION,
        "--prefix",
        "scale-out/",
    ]
    .map(String::from)
    .to_vec();
    let env = vec![
        ("AWS_ACCESS_KEY_ID".to_owned(), s3.access_key().to_owned()),
        (
            "AWS_SECRET_ACCESS_KEY".to_owned(),
            s3.secret_key().to_owned(),
        ),
        // No instance metadata on loopback: don't look for it.
        ("AWS_EC2_METADATA_DISABLED".to_owned(), "true".to_owned()),
    ];
    let replicas = Replicas::start(REPLICAS, &args, &env).unwrap_or_else(|e| panic!("{e:#}"));
    scale_out("s3", replicas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_services_over_one_redis_cluster() {
    let cluster = RedisCluster::start().unwrap_or_else(|e| panic!("{e:#}"));
    let redis = RedisConfig {
        prefix: "scale-out:".into(),
        ..RedisConfig::cluster(cluster.urls())
    };
    let config = ConnectorConfig::new("redis", serde_json::to_value(&redis).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backend.json");
    std::fs::write(&file, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let args = vec![
        "--backend-config".to_owned(),
        file.to_string_lossy().into_owned(),
    ];
    let replicas = Replicas::start(REPLICAS, &args, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    scale_out("redis-cluster", replicas).await;
}

/// The server crate builds the redis and s3 backends' configs as JSON without those kinds
/// compiled in: every flag must land in a field of `RedisConfig` or `S3Config` (a misspelt
/// field would be dropped without a word).
#[test]
fn serve_flags_become_the_backends_connector_configs() {
    use clap::Parser;
    use proxystore::connector::s3::S3Config;
    use proxystore_server::{BackendConfig, ServeArgs};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }
    fn connector_config(args: &[&str]) -> ConnectorConfig {
        let cli = Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        match cli.serve.into_config().unwrap().backend {
            BackendConfig::Config(c) => c,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    let c = connector_config(&[
        "--backend",
        "redis",
        "--redis-url",
        "redis://a:1",
        "--prefix",
        "p/",
    ]);
    let redis: RedisConfig = c.options().unwrap();
    assert_eq!(c.kind(), "redis");
    assert_eq!(
        (redis.url.as_str(), redis.prefix.as_str()),
        ("redis://a:1", "p/")
    );
    assert!(!redis.cluster && redis.nodes.is_empty());

    let c = connector_config(&[
        "--backend",
        "redis",
        "--redis-url",
        "redis://a:1,redis://b:2",
    ]);
    let redis: RedisConfig = c.options().unwrap();
    assert!(redis.cluster);
    assert_eq!(
        (redis.url.as_str(), &redis.nodes[..]),
        ("redis://a:1", &["redis://b:2".to_owned()][..])
    );
    let c = connector_config(&[
        "--backend",
        "redis",
        "--redis-url",
        "redis://a:1",
        "--redis-cluster",
    ]);
    assert!(c.options::<RedisConfig>().unwrap().cluster);

    let c = connector_config(&[
        "--backend",
        "s3",
        "--bucket",
        "b",
        "--s3-endpoint",
        "http://e:9",
        "--s3-region",
        "r",
        "--prefix",
        "p/",
    ]);
    let s3: S3Config = c.options().unwrap();
    assert_eq!(c.kind(), "s3");
    assert_eq!(
        (
            s3.bucket.as_str(),
            s3.prefix.as_str(),
            s3.endpoint_url.as_deref(),
            s3.region.as_deref()
        ),
        ("b", "p/", Some("http://e:9"), Some("r"))
    );
    assert!(s3.force_path_style);
    let s3: S3Config = connector_config(&["--backend", "s3", "--bucket", "b"])
        .options()
        .unwrap();
    assert!(s3.endpoint_url.is_none() && s3.region.is_none() && !s3.force_path_style);
}
