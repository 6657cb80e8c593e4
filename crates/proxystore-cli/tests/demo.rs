//! The README's main job runs and leaves nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

#[test]
fn demo_runs_on_the_embedded_default() {
    let out = Command::new(env!("CARGO_BIN_EXE_proxystore"))
        .args([
            "demo",
            "--tasks",
            "12",
            "--mib",
            "1",
            "--workers",
            "3",
            "--quiet",
        ])
        .output()
        .expect("run proxystore demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("tasks run:                   12"),
        "{stdout}"
    );
    assert!(
        stdout.contains("arguments proxied:           12"),
        "{stdout}"
    );
    assert!(
        stdout.contains("results proxied:             12"),
        "{stdout}"
    );
    assert!(
        stdout.contains("objects left in the store:   0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("proxies never resolved:      9 of 12"),
        "{stdout}"
    );
}

#[test]
fn demo_runs_on_apalis_redis() {
    let redis = proxystore_tests::redis_server::RedisServer::start().expect("start redis-server");
    let out = Command::new(env!("CARGO_BIN_EXE_proxystore"))
        .args([
            "demo",
            "--tasks",
            "6",
            "--mib",
            "1",
            "--workers",
            "2",
            "--quiet",
        ])
        .args(["--redis", &redis.url()])
        .output()
        .expect("run proxystore demo --redis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("apalis-redis"), "{stdout}");
}
