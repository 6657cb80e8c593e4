//! Hostile references: a reference whose connector config points outside the process's resolve
//! policy is refused before anything is built, read or contacted, and references cannot take
//! over a store name from the application or from each other.
//!
//! No test here installs a process-wide policy: the ones that resolve through `Proxy` run under
//! the default, the others pass a policy to `store_for_reference`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use proxystore::connector::file::FileConnector;
use proxystore::connector::memory::MemoryConnector;
use proxystore::connector::{Connector, ConnectorConfig};
use proxystore::{
    Codec, Error, Key, Proxy, RESOLVE_POLICY_ENV, Reference, ResolvePolicy, Store, get_store,
    register_store, resolve_policy, store_for_reference, unregister_store,
};
use serde_json::json;

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", Key::random())
}

fn reference(store: &str, kind: &str, options: serde_json::Value, key: &str) -> Reference {
    Reference::new(store, ConnectorConfig::new(kind, options), Key::from(key))
}

fn file_ref(store: &str, dir: &Path, key: &str) -> Reference {
    reference(store, "file", json!({ "directory": dir }), key)
}

#[track_caller]
fn assert_refused(result: Result<impl std::fmt::Debug, Error>, needle: &str) -> String {
    match result {
        Err(e @ Error::Refused { .. }) => {
            assert!(!e.is_retryable());
            let message = e.to_string();
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
            message
        }
        other => panic!("expected Error::Refused ({needle}), got {other:?}"),
    }
}

/// Resolve `r` as a proxy would in a process that did not make it.
async fn resolve(r: Reference) -> Result<(), Error> {
    Proxy::<Vec<u8>>::from_reference(r)
        .resolve()
        .await
        .map(|_| ())
}

/// A policy accepting files in `dir` only.
fn files_in(dir: &Path) -> ResolvePolicy {
    ResolvePolicy::deny_all()
        .allow_kind("file")
        .allow_directory(dir)
}

#[tokio::test]
async fn a_file_reference_outside_the_allowed_directories_is_refused_without_reading() {
    let allowed = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    // A real object that would decode: only the policy stands between the reference and it.
    let producer = Store::new(
        unique("outside"),
        FileConnector::new(outside.path()).unwrap(),
    );
    let proxy = producer.proxy(&vec![42u64; 10]).await.unwrap();
    let r = proxy.reference().unwrap().clone();

    let policy = files_in(allowed.path());
    let message = assert_refused(store_for_reference(&r, &policy), "outside the allowed");
    assert!(
        message.contains(&r.store) && message.contains("allow_directory"),
        "{message}"
    );
    // The same reference under a policy that allows it reads the object: it was not refused
    // for any other reason.
    let store = store_for_reference(&r, &files_in(outside.path())).unwrap();
    assert_eq!(
        *store.get_by_reference::<Vec<u64>>(&r).await.unwrap(),
        vec![42u64; 10]
    );

    // Nothing is created either: a file connector would make its directory.
    let fresh = outside.path().join("never-created");
    let r = file_ref(&unique("fresh"), &fresh, "k");
    assert_refused(store_for_reference(&r, &policy), "outside the allowed");
    assert!(!fresh.exists());
}

#[tokio::test]
async fn a_reference_into_etc_is_refused_by_the_default_policy() {
    let mut r = file_ref(&unique("etc"), Path::new("/etc"), "passwd");
    r.codec = Codec::Raw;
    assert_refused(resolve(r.clone()).await, "directory /etc is outside");
    assert_refused(store_for_reference(&r, &ResolvePolicy::default()), "/etc");
    // `..` out of an allowed directory, and a relative directory.
    let tmp = std::env::temp_dir();
    let dotdot = file_ref(&unique("dotdot"), &tmp.join("a/../../etc"), "passwd");
    assert_refused(resolve(dotdot).await, "'..'");
    let relative = file_ref(&unique("rel"), Path::new("objects"), "k");
    assert_refused(resolve(relative).await, "not an absolute path");
}

#[cfg(unix)]
#[tokio::test]
async fn a_symbolic_link_out_of_an_allowed_directory_is_refused() {
    let allowed = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let producer = Store::new(unique("link"), FileConnector::new(outside.path()).unwrap());
    let proxy = producer.proxy(&"secret".to_string()).await.unwrap();
    let link = allowed.path().join("link");
    std::os::unix::fs::symlink(outside.path(), &link).unwrap();

    let mut r = proxy.reference().unwrap().clone();
    r.connector = ConnectorConfig::new("file", json!({ "directory": link }));
    assert_refused(
        store_for_reference(&r, &files_in(allowed.path())),
        "resolves to",
    );
    // A link that stays inside is fine.
    let inner = allowed.path().join("inner");
    std::fs::create_dir(&inner).unwrap();
    std::os::unix::fs::symlink(&inner, allowed.path().join("inner-link")).unwrap();
    let ok = file_ref(&r.store, &allowed.path().join("inner-link"), "k");
    store_for_reference(&ok, &files_in(allowed.path())).unwrap();
}

#[cfg(all(
    feature = "redis",
    feature = "grpc",
    feature = "s3",
    feature = "globus"
))]
#[tokio::test]
async fn network_references_to_unlisted_hosts_are_refused_before_connecting() {
    use std::time::{Duration, Instant};

    // 10.255.255.1 drops packets: a connection attempt would take the connect timeout (5 s).
    let cases = [
        (
            "redis",
            json!({ "url": "redis://10.255.255.1:6379" }),
            "redis host 10.255.255.1:6379",
        ),
        (
            "redis",
            json!({ "url": "redis://127.0.0.1:6379", "host": "10.255.255.1" }),
            "10.255.255.1:6379",
        ),
        (
            "redis",
            json!({ "url": "redis+unix:///var/run/docker.sock" }),
            "redis socket /var/run/docker.sock",
        ),
        (
            "grpc",
            json!({ "address": "http://10.255.255.1:50051" }),
            "grpc host 10.255.255.1:50051",
        ),
        (
            "grpc",
            json!({ "address": "evil.example.org:50051" }),
            "evil.example.org:50051",
        ),
        (
            // A loopback address the default allows, and a replica it does not.
            "grpc",
            json!({
                "address": "http://127.0.0.1:50051",
                "addresses": ["http://127.0.0.1:50052", "http://10.255.255.1:50051"],
            }),
            "grpc host 10.255.255.1:50051",
        ),
        (
            "grpc",
            json!({ "address": "http://127.0.0.1:50051@10.255.255.1:80" }),
            "10.255.255.1:80",
        ),
        (
            "grpc",
            json!({ "address": "http://127.0.0.1:1", "tls_ca_file": "/etc/shadow" }),
            "grpc tls_ca_file /etc/shadow",
        ),
        (
            "s3",
            json!({ "bucket": "their-bucket" }),
            "S3 bucket 'their-bucket'",
        ),
    ];
    for (kind, options, needle) in cases {
        let r = reference(&unique(kind), kind, options, "k");
        let started = Instant::now();
        let result = resolve(r).await;
        assert_refused(result, needle);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{kind}: {:?}",
            started.elapsed()
        );
    }
    // A listed bucket on an unlisted endpoint is still refused.
    let policy = ResolvePolicy::default().allow_bucket("ours");
    let r = reference(
        "s3-endpoint",
        "s3",
        json!({ "bucket": "ours", "endpoint_url": "http://10.255.255.1:9000" }),
        "k",
    );
    assert_refused(
        store_for_reference(&r, &policy),
        "s3 endpoint host 10.255.255.1:9000",
    );
    // Globus: the public API host is not listed by default.
    let globus = reference(
        "globus",
        "globus",
        json!({ "endpoints": [
            { "uuid": "8ef3c4a6-0e5f-4b0b-9f35-3b8a7c2a0001", "endpoint_path": "/a", "local_path": "/tmp/a", "host_patterns": ["*"] },
            { "uuid": "8ef3c4a6-0e5f-4b0b-9f35-3b8a7c2a0002", "endpoint_path": "/b", "local_path": "/tmp/b" }
        ] }),
        "k",
    );
    assert_refused(
        store_for_reference(&globus, &ResolvePolicy::default()),
        "globus api_url host transfer.api.globus.org:443",
    );
}

#[cfg(all(
    feature = "redis",
    feature = "grpc",
    feature = "s3",
    feature = "globus"
))]
#[tokio::test]
async fn the_default_accepts_loopback_and_temporary_directories() {
    let policy = ResolvePolicy::default();
    let ok = [
        ("memory", json!({ "segment": "s" })),
        (
            "file",
            json!({ "directory": std::env::temp_dir().join("proxystore-policy-test") }),
        ),
        ("redis", json!({ "url": "redis://127.0.0.1:6379/0" })),
        ("redis", json!({ "url": "redis://localhost" })),
        ("redis", json!({ "url": "redis://[::1]:6380" })),
        ("grpc", json!({ "address": "127.0.0.1:50051" })),
        ("grpc", json!({ "address": "http://localhost:50051" })),
        ("grpc", json!({ "address": "http://[::1]:50051" })),
        (
            "s3",
            json!({ "bucket": "b", "endpoint_url": "http://127.0.0.1:9000" }),
        ),
    ];
    for (kind, options) in ok {
        let r = reference("ok", kind, options.clone(), "k");
        let result = if kind == "s3" {
            policy.clone().allow_bucket("b").check(&r)
        } else {
            policy.check(&r)
        };
        assert!(result.is_ok(), "{kind} {options}: {result:?}");
    }
    #[cfg(unix)]
    policy
        .check(&file_ref("quickstart", Path::new("/tmp/proxystore"), "k"))
        .unwrap();
}

static BUILT: AtomicUsize = AtomicUsize::new(0);

fn count_builds(config: &ConnectorConfig) -> proxystore::Result<std::sync::Arc<dyn Connector>> {
    BUILT.fetch_add(1, Ordering::SeqCst);
    MemoryConnector::from_config(&ConnectorConfig::new(
        "memory",
        config.options_value().clone(),
    ))
}

#[tokio::test]
async fn unknown_and_unlisted_kinds_are_refused() {
    let r = reference(&unique("nope"), "nope", json!({}), "k");
    assert_refused(resolve(r).await, "connector kind 'nope' is not allowed");
    // Registering a kind says how to build it, not that references may ask for it.
    proxystore::kinds::register_connector_kind("policy-test-kind", count_builds);
    let r = reference(&unique("third"), "policy-test-kind", json!({}), "k");
    assert_refused(
        store_for_reference(&r, &ResolvePolicy::default()),
        "'policy-test-kind' is not allowed",
    );
    assert_eq!(BUILT.load(Ordering::SeqCst), 0);
    let listed = ResolvePolicy::default().allow_kind("policy-test-kind");
    store_for_reference(&r, &listed).unwrap();
    assert_eq!(BUILT.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_multi_reference_is_refused_when_any_inner_connector_is() {
    let good = json!({ "kind": "memory", "options": { "segment": "fine" } });
    let bad = json!({ "kind": "file", "options": { "directory": "/etc" } });
    let multi = |routes: serde_json::Value| {
        reference(&unique("multi"), "multi", json!({ "routes": routes }), "k")
    };
    let r = multi(json!([
        { "label": "good", "connector": good },
        { "label": "bad", "connector": bad },
    ]));
    assert_refused(
        store_for_reference(&r, &ResolvePolicy::default()),
        "route 'bad': directory /etc",
    );
    // Nested multis are checked all the way down.
    let inner = json!({ "kind": "multi", "options": { "routes": [{ "label": "deep", "connector": bad }] } });
    let r = multi(json!([{ "label": "outer", "connector": inner }]));
    assert_refused(
        store_for_reference(&r, &ResolvePolicy::default()),
        "route 'outer': route 'deep': directory /etc",
    );
    let ok = multi(json!([{ "label": "good", "connector": good }]));
    store_for_reference(&ok, &ResolvePolicy::default()).unwrap();
}

#[tokio::test]
async fn a_reference_cannot_take_a_store_name_from_the_application() {
    let name = unique("app-store");
    let planted = tempfile::tempdir().unwrap();
    // A reference arrives first, naming the store the application is about to register, over
    // a directory the policy allows.
    let attacker = Store::new(name.clone(), FileConnector::new(planted.path()).unwrap());
    let planted_proxy = attacker.proxy(&"planted".to_string()).await.unwrap();
    let r = planted_proxy.reference().unwrap().clone();
    let early: Proxy<String> = Proxy::from_reference(r.clone());
    assert_eq!(*early.resolve().await.unwrap(), "planted");
    assert!(
        get_store(&name).is_none(),
        "a rebuilt store is not registered"
    );

    // The application registers its own store under that name: it succeeds and wins.
    let app = Store::new(name.clone(), MemoryConnector::new(&name));
    register_store(&app).unwrap();
    assert!(get_store(&name).unwrap().ptr_eq(&app));
    let ours = app.proxy(&"ours".to_string()).await.unwrap();
    let q: Proxy<String> = Proxy::from_reference(ours.reference().unwrap().clone());
    assert_eq!(*q.resolve().await.unwrap(), "ours");

    // The planted reference now goes to the application's store, not to its own config: the
    // object is simply not there.
    let late: Proxy<String> = Proxy::from_reference(r.clone());
    assert!(late.factory().unwrap().store().unwrap().ptr_eq(&app));
    assert!(late.resolve().await.unwrap_err().is_not_found());
    // Even under a policy that refuses everything: registered stores are the application's.
    assert!(
        store_for_reference(&r, &ResolvePolicy::deny_all())
            .unwrap()
            .ptr_eq(&app)
    );
    unregister_store(&name);
}

#[tokio::test]
async fn a_refused_reference_leaves_no_trace_in_the_registry() {
    let name = unique("later");
    let r = file_ref(&name, Path::new("/etc"), "shadow");
    assert_refused(resolve(r).await, "/etc");
    assert!(get_store(&name).is_none());
    let app = Store::new(name.clone(), MemoryConnector::new(&name));
    register_store(&app).unwrap();
    assert!(get_store(&name).unwrap().ptr_eq(&app));
    unregister_store(&name);
}

#[tokio::test]
async fn references_with_one_name_and_different_configs_reach_their_own_stores() {
    let name = unique("shared-name");
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pa = Store::new(name.clone(), FileConnector::new(a.path()).unwrap())
        .proxy(&"from a".to_string())
        .await
        .unwrap();
    let pb = Store::new(name.clone(), FileConnector::new(b.path()).unwrap())
        .proxy(&"from b".to_string())
        .await
        .unwrap();
    let ra: Proxy<String> = Proxy::from_reference(pa.reference().unwrap().clone());
    let rb: Proxy<String> = Proxy::from_reference(pb.reference().unwrap().clone());
    assert_eq!(*ra.resolve().await.unwrap(), "from a");
    assert_eq!(*rb.resolve().await.unwrap(), "from b");
    let (sa, sb) = (
        ra.factory().unwrap().store().unwrap(),
        rb.factory().unwrap().store().unwrap(),
    );
    assert!(!sa.ptr_eq(&sb));
    // One name and one config share one store (connector, cache, metrics).
    let again: Proxy<String> = Proxy::from_reference(pa.reference().unwrap().clone());
    assert!(again.factory().unwrap().store().unwrap().ptr_eq(&sa));
    assert_eq!(*again.resolve().await.unwrap(), "from a");
    let m = sa.metrics();
    assert_eq!(
        (m.get.count, m.cache_hits),
        (1, 1),
        "the second resolve hit the cache"
    );
    assert!(get_store(&name).is_none());
}

#[test]
fn policies_parse_from_json() {
    let p = ResolvePolicy::from_json(
        r#"{"hosts": ["redis.internal:6379", "10.0.0.0/8"], "directories": ["/mnt/shared"], "buckets": ["ml"], "kinds": ["mine"]}"#,
    )
    .unwrap();
    let expected = ResolvePolicy::default()
        .allow_host("redis.internal:6379")
        .unwrap()
        .allow_host("10.0.0.0/8")
        .unwrap()
        .allow_directory("/mnt/shared")
        .allow_bucket("ml")
        .allow_kind("mine");
    assert_eq!(p, expected);
    let r = reference("s", "redis", json!({ "url": "redis://10.1.2.3:7000" }), "k");
    p.check(&r).unwrap();
    assert!(
        ResolvePolicy::from_json(r#"{"base": "all"}"#)
            .unwrap()
            .allows_all()
    );
    let none = ResolvePolicy::from_json(r#"{"base": "none"}"#).unwrap();
    assert_eq!(none, ResolvePolicy::deny_all());
    assert!(
        none.check(&reference("s", "memory", json!(null), "k"))
            .is_err()
    );
    let e = ResolvePolicy::from_json(r#"{"hosts": ["bad host"]}"#).unwrap_err();
    assert!(
        matches!(e, Error::Config { .. }) && e.to_string().contains("bad host"),
        "{e}"
    );
}

/// Run this test binary's `policy_from_env_child` with `value` in the environment.
fn child(value: &str, expect: &str) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["policy_from_env_child", "--exact", "--nocapture"])
        .env(RESOLVE_POLICY_ENV, value)
        .env("POLICY_CHILD_EXPECT", expect)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{value}: {text}");
    assert!(text.contains("1 passed"), "{value}: {text}");
}

#[test]
fn the_environment_sets_the_policy_of_a_process() {
    child(r#"{"base": "none", "kinds": ["memory"]}"#, "memory-only");
    child(r#"{"hosts": ["not a host"]}"#, "invalid");
}

/// Runs in a child process started by `the_environment_sets_the_policy_of_a_process` (setting
/// the environment in-process needs `unsafe`); a no-op otherwise.
#[tokio::test]
async fn policy_from_env_child() {
    let Ok(expect) = std::env::var("POLICY_CHILD_EXPECT") else {
        return;
    };
    let tmp_file = file_ref(&unique("env"), &std::env::temp_dir(), "k");
    match expect.as_str() {
        "memory-only" => {
            let p = ResolvePolicy::from_env().unwrap();
            assert_eq!(p, ResolvePolicy::deny_all().allow_kind("memory"));
            assert_eq!(resolve_policy().unwrap(), p);
            assert_refused(
                resolve(tmp_file).await,
                "connector kind 'file' is not allowed",
            );
        }
        "invalid" => {
            let e = ResolvePolicy::from_env().unwrap_err();
            assert!(e.to_string().contains(RESOLVE_POLICY_ENV), "{e}");
            // Fail closed: nothing is rebuilt while the variable is invalid...
            let e = resolve(tmp_file).await.unwrap_err();
            assert!(matches!(e, Error::Config { .. }), "{e:?}");
            // ...but registered stores work, and an installed policy replaces it.
            let name = unique("env-registered");
            let store = Store::new(name.clone(), MemoryConnector::new(&name));
            register_store(&store).unwrap();
            let p = store.proxy(&vec![1u8, 2]).await.unwrap();
            let q: Proxy<Vec<u8>> = Proxy::from_reference(p.reference().unwrap().clone());
            assert_eq!(*q.resolve().await.unwrap(), vec![1u8, 2]);
            proxystore::set_resolve_policy(ResolvePolicy::default());
            assert_eq!(resolve_policy().unwrap(), ResolvePolicy::default());
        }
        other => panic!("unknown expectation {other}"),
    }
}
