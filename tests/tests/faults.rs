//! Damaged objects in every backend: an object put through a `Store` (with its digest in the
//! reference) is then truncated or altered directly in the backend, behind the store's back:
//! the file on disk (file connector, gRPC server's file backend, the S3 server's directory) or
//! the value in Redis (a raw `SET`). Resolving it must give a typed error, never the damaged
//! bytes decoded, never a panic; and the same store works normally afterwards.
//!
//! The error is `Error::DigestMismatch` from the store's own check, except for S3: there the
//! SDK validates the CRC32 checksum S3 returns with the object (recorded at upload) and the
//! connector fails first, with `Error::Backend` carrying the SDK's checksum mismatch (retryable:
//! the SDK cannot tell corruption in transit from corruption at rest).
//!
//! Also here: Redis and S3 servers stopped in the middle of a get and restarted (their
//! mid-put cases are in `redis.rs` and `s3.rs`, the gRPC server's in the server's tests).

// Helpers outside #[test] functions fail the test the same way.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proxystore::conformance::payload;
use proxystore::connector::file::FileConnector;
use proxystore::connector::redis::{RedisConfig, RedisConnector};
use proxystore::connector::s3::{MIN_PART_SIZE, S3Config, S3Connector};
use proxystore::{Bytes, Connector, DigestAlgorithm, Error, Key, Proxy, ResolvePolicy, Store};
use proxystore_tests::grpc_server;
use proxystore_tests::redis_server::RedisServer;
use proxystore_tests::s3_server::{BUCKET, S3Server};

/// What happens to the stored bytes.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// Cut to half their length.
    Truncate,
    /// One byte in the middle changed; same length.
    Flip,
}

impl Damage {
    fn apply(self, bytes: &mut Vec<u8>) {
        assert!(bytes.len() > 2, "nothing to damage");
        match self {
            Damage::Truncate => bytes.truncate(bytes.len() / 2),
            Damage::Flip => {
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x5A;
            }
        }
    }
}

/// Damage the file at `path` in place.
fn damage_file(path: &Path, damage: Damage) {
    let mut bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    damage.apply(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

fn object(seed: u64) -> Vec<u64> {
    (0..40_000u64)
        .map(|i| i.wrapping_mul(0x9E37) ^ seed)
        .collect()
}

/// Who notices the damage.
#[derive(Clone, Copy, Debug)]
enum Detected {
    /// The store, checking the reference's digest: `Error::DigestMismatch`.
    ByDigest,
    /// The backend's client, checking a transport checksum: `Error::Backend`.
    ByChecksum,
}

impl Detected {
    fn check(self, what: &str, e: &Error) {
        match self {
            Detected::ByDigest => {
                assert!(matches!(e, Error::DigestMismatch { .. }), "{what}: {e:?}");
                assert!(!e.is_retryable(), "{what}: {e:?}");
            }
            Detected::ByChecksum => {
                assert!(matches!(e, Error::Backend { .. }), "{what}: {e:?}");
                assert!(
                    format!("{e:?}").contains("ChecksumMismatch"),
                    "{what}: {e:?}"
                );
            }
        }
    }
}

/// The checks, for a connector whose stored bytes `damage(key, how)` can reach.
async fn damaged_objects_are_refused(
    connector: Arc<dyn Connector>,
    damage: &(dyn Fn(&Key, Damage) + Sync),
    detected: Detected,
) {
    for (i, (alg, how)) in [
        (DigestAlgorithm::Xxh3, Damage::Truncate),
        (DigestAlgorithm::Xxh3, Damage::Flip),
        (DigestAlgorithm::Blake3, Damage::Truncate),
        (DigestAlgorithm::Blake3, Damage::Flip),
    ]
    .into_iter()
    .enumerate()
    {
        let what = format!("{} with {alg:?}, {how:?}", connector.kind());
        let store = Store::builder(format!("faults-{}", Key::random()), connector.clone())
            .digest(alg)
            .build();
        let obj = object(i as u64);
        let proxy: Proxy<Vec<u64>> = store.proxy(&obj).await.unwrap();
        let reference = proxy.reference().unwrap().clone();
        assert!(reference.digest.is_some(), "{what}: no digest recorded");
        damage(&reference.key, how);
        store.clear_cache();

        // Through the proxy, through a proxy rebuilt from the reference (as another process
        // would), and as verified bytes: the digest does not match.
        let e = proxy.resolve().await.unwrap_err();
        detected.check(&what, &e);
        let rebuilt: Proxy<Vec<u64>> = Proxy::from_reference(reference.clone());
        let e = rebuilt.resolve().await.unwrap_err();
        detected.check(&what, &e);
        let e = store.get_verified_bytes(&reference).await.unwrap_err();
        detected.check(&what, &e);
        if let Error::DigestMismatch { key, .. } = &e {
            assert_eq!(key, &reference.key);
        }
        // Read by key there is no digest to check; a truncated object still fails to decode.
        let by_key = store.get::<Vec<u64>>(&reference.key).await;
        match (detected, how) {
            (Detected::ByChecksum, _) => detected.check(&what, &by_key.unwrap_err()),
            (Detected::ByDigest, Damage::Truncate) => {
                assert!(
                    matches!(by_key, Err(Error::Decode { .. })),
                    "{what}: {by_key:?}"
                );
            }
            (Detected::ByDigest, Damage::Flip) => {
                assert_ne!(by_key.unwrap(), Some(obj.clone()), "{what}");
            }
        }

        // Normal service: the damaged object can be evicted, new ones resolve.
        store.evict(&reference.key).await.unwrap();
        assert!(!store.exists(&reference.key).await.unwrap(), "{what}");
        let fresh: Proxy<Vec<u64>> = store.proxy(&obj).await.unwrap();
        store.clear_cache();
        assert_eq!(**fresh.resolve().await.unwrap(), obj, "{what}");
        let rebuilt: Proxy<Vec<u64>> = Proxy::from_reference(fresh.reference().unwrap().clone());
        assert_eq!(**rebuilt.resolve().await.unwrap(), obj, "{what}");
        store.evict(fresh.key().unwrap()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_connector() {
    let dir = tempfile::tempdir().unwrap();
    let c = Arc::new(FileConnector::new(dir.path()).unwrap());
    let root = dir.path().to_path_buf();
    damaged_objects_are_refused(
        c,
        &|key, how| {
            damage_file(&root.join(key.as_str()), how);
        },
        Detected::ByDigest,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_server_file_backend() {
    let server = grpc_server::in_process_file().unwrap();
    let c = Arc::new(server.server.connector().unwrap());
    let objects = server.dir.path().join("objects");
    damaged_objects_are_refused(
        c,
        &|key, how| {
            damage_file(&objects.join(key.as_str()), how);
        },
        Detected::ByDigest,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis() {
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e:#}"));
    let prefix = format!("faults-{}:", Key::random());
    let c = Arc::new(
        RedisConnector::with_config(RedisConfig {
            prefix: prefix.clone(),
            ..RedisConfig::new(server.url())
        })
        .unwrap(),
    );
    let url = server.url();
    damaged_objects_are_refused(
        c,
        &|key, how| {
            // A raw client, outside the connector: read the value, write back a damaged one.
            let mut raw = redis::Client::open(url.as_str())
                .unwrap()
                .get_connection()
                .unwrap();
            let name = format!("{prefix}{key}");
            let mut value: Vec<u8> = redis::cmd("GET").arg(&name).query(&mut raw).unwrap();
            how.apply(&mut value);
            redis::cmd("SET")
                .arg(&name)
                .arg(value)
                .exec(&mut raw)
                .unwrap();
        },
        Detected::ByDigest,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3() {
    // The rebuilt-from-reference half needs the test bucket in the resolve policy.
    proxystore::set_resolve_policy(ResolvePolicy::default().allow_bucket(BUCKET));
    let server = S3Server::start().unwrap_or_else(|e| panic!("{e:#}"));
    let prefix = format!("faults-{}/", Key::random());
    let c = Arc::new(S3Connector::with_config(server.config(&prefix)).unwrap());
    // s3s-fs keeps each object as a file `<root>/<bucket>/<object key>`.
    let bucket: PathBuf = server.root().join(BUCKET);
    damaged_objects_are_refused(
        c,
        &|key, how| {
            damage_file(&bucket.join(format!("{prefix}{key}")), how);
        },
        Detected::ByChecksum,
    )
    .await;
}

/// S3 as served by a store that keeps no checksum for the object (s3s-fs forgets it with its
/// metadata file): nothing below the store notices, and the store's digest does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_without_stored_checksums() {
    // The rebuilt-from-reference half needs the test bucket in the resolve policy.
    proxystore::set_resolve_policy(ResolvePolicy::default().allow_bucket(BUCKET));
    let server = S3Server::start().unwrap_or_else(|e| panic!("{e:#}"));
    let prefix = format!("faults-{}/", Key::random());
    let c = Arc::new(S3Connector::with_config(server.config(&prefix)).unwrap());
    let root = server.root().to_path_buf();
    let bucket = root.join(BUCKET);
    damaged_objects_are_refused(
        c,
        &|key, how| {
            damage_file(&bucket.join(format!("{prefix}{key}")), how);
            // `.bucket-<bucket>.object-<key>.internal.json` (names in unpadded URL-safe base64)
            // holds the ETag and checksums.
            let info = root.join(format!(
                ".bucket-{}.object-{}.internal.json",
                base64url(BUCKET.as_bytes()),
                base64url(format!("{prefix}{key}").as_bytes())
            ));
            std::fs::remove_file(&info).unwrap_or_else(|e| panic!("{}: {e}", info.display()));
        },
        Detected::ByDigest,
    )
    .await;
}

/// Unpadded URL-safe base64, as s3s-fs names its metadata files.
fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for group in data.chunks(3) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=group.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// Gets `key` until one fails, checking that every get that succeeds returns all of `expected`
/// and counting them in `done`; returns the error.
async fn get_until_error(
    c: Arc<dyn Connector>,
    key: Key,
    expected: Bytes,
    done: Arc<AtomicUsize>,
) -> Error {
    loop {
        match c.get(&key).await {
            Ok(Some(b)) => {
                assert!(b == expected, "a get returned {} other bytes", b.len());
                done.fetch_add(1, Ordering::SeqCst);
            }
            Ok(None) => panic!("the object vanished while the server was up"),
            Err(e) => return e,
        }
    }
}

/// Starts gets of a large object in a loop, calls `stop` once one has completed (so the next
/// is under way), and checks that the get in flight ends with a typed, retryable error within
/// `bound`, without returning part of the object.
async fn stop_mid_get(
    c: Arc<dyn Connector>,
    key: &Key,
    data: &Bytes,
    bound: Duration,
    stop: impl FnOnce(),
) {
    let done = Arc::new(AtomicUsize::new(0));
    let reader = tokio::spawn(get_until_error(
        c.clone(),
        key.clone(),
        data.clone(),
        done.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "no get succeeded within a minute"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let stopped_at = Instant::now();
    stop();
    let e = tokio::time::timeout(bound + Duration::from_secs(20), reader)
        .await
        .expect("a get in flight when the server stopped must end, not hang")
        .expect("no panic");
    let after = stopped_at.elapsed();
    assert!(
        matches!(e, Error::Backend { .. } | Error::Timeout { .. }),
        "typed error: {e:?}"
    );
    assert!(e.is_retryable(), "{e:?}");
    assert!(
        after < bound,
        "the get ended {after:?} after the stop (bound {bound:?})"
    );
    println!(
        "{}: get in flight ended {after:?} after the stop: {e}",
        c.kind()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_get_then_restarted() {
    let mut server = RedisServer::start().unwrap_or_else(|e| panic!("{e:#}"));
    let c: Arc<dyn Connector> = Arc::new(
        RedisConnector::with_config(RedisConfig {
            prefix: format!("faults-{}:", Key::random()),
            response_timeout_ms: 3_000,
            connect_timeout_ms: 1_000,
            ..RedisConfig::new(server.url())
        })
        .unwrap(),
    );
    let data = payload(32 << 20, 21);
    let key = c.put(data.clone()).await.unwrap();
    // The connector's bound is 1 s + 3 s; the rest is slack for a loaded machine.
    stop_mid_get(c.clone(), &key, &data, Duration::from_secs(8), || {
        server.stop()
    })
    .await;

    // Same port, same connector: works again (this server keeps nothing across restarts).
    server.restart().unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), c.get(&key))
        .await
        .expect("no hang after the restart")
        .expect("the same connector works after the restart");
    assert_eq!(got, None);
    let key = c.put(data.clone()).await.unwrap();
    assert_eq!(c.get(&key).await.unwrap(), Some(data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_stopped_mid_get_then_restarted() {
    let mut server = S3Server::start().unwrap_or_else(|e| panic!("{e:#}"));
    let c: Arc<dyn Connector> = Arc::new(
        S3Connector::with_config(S3Config {
            part_size: MIN_PART_SIZE,
            multipart_above: MIN_PART_SIZE,
            operation_timeout_ms: 8_000,
            ..server.config(&format!("faults-{}/", Key::random()))
        })
        .unwrap(),
    );
    let data = payload(32 << 20, 22);
    let key = c.put(data.clone()).await.unwrap();
    stop_mid_get(c.clone(), &key, &data, Duration::from_secs(12), || {
        server.stop()
    })
    .await;

    // Same port, same connector; the object on disk survived and comes back whole.
    server.restart().unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), c.get(&key))
        .await
        .expect("no hang after the restart")
        .expect("the same connector works after the restart");
    assert!(got == Some(data), "the object did not come back whole");
}
