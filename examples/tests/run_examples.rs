//! Every example runs to completion.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

#[test]
fn quickstart_runs() {
    let out = Command::new(env!("CARGO_BIN_EXE_quickstart"))
        .output()
        .expect("run quickstart");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "quickstart failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("consumer: resolved = true"), "{stdout}");
    assert!(stdout.contains("trace = 499999500"), "{stdout}");
}

#[test]
fn pipeline_runs_on_apalis_redis_and_cleans_up() {
    // Without REDIS_URL the example starts its own redis-server.
    let out = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .env_remove("REDIS_URL")
        .output()
        .expect("run pipeline");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pipeline failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("histogram: correct"), "{stdout}");
    assert!(stdout.contains("objects left in the store: 0"), "{stdout}");
    assert!(
        stdout.contains("last-week arguments never fetched: 10 of 12"),
        "{stdout}"
    );
    assert!(stdout.contains("sensor 3 drifted"), "{stdout}");
}

#[test]
fn ownership_moves_borrows_updates_and_results_across_two_processes() {
    let out = Command::new(env!("CARGO_BIN_EXE_ownership"))
        .output()
        .expect("run ownership");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ownership failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "mutable borrow refused: cannot borrow it mutably while 1 borrow of it is alive",
        "updated: first samples [0.0, 0.5, 1.0]",
        "objects after the move: 1",
        "result: 1000000 values, sum 749999250000",
        "objects left in the store: 0",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}

#[test]
fn futures_consumer_starts_before_its_producer_finishes() {
    let out = Command::new(env!("CARGO_BIN_EXE_futures"))
        .output()
        .expect("run futures");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "futures failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let at = |line: &str| {
        stdout
            .find(line)
            .unwrap_or_else(|| panic!("no {line:?} in:\n{stdout}"))
    };
    // The consumer started and set itself up before the producer set the value.
    assert!(at("consumer: set up, now using the features") < at("producer: features set"));
    assert!(
        stdout.contains("1000000 values, sum 249999750000"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "consumer: labels failed: the producer dropped its promise without setting it"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("objects left in the store: 0"), "{stdout}");
}

/// The streams example on its embedded default, then over Redis Streams and NATS JetStream
/// servers started here, with its consumers as processes of their own.
#[test]
fn streams_two_consumers_share_the_frames_on_every_broker() {
    let redis =
        proxystore_tests::redis_server::RedisServer::start().unwrap_or_else(|e| panic!("{e:#}"));
    let nats =
        proxystore_tests::nats_server::NatsServer::start().unwrap_or_else(|e| panic!("{e:#}"));
    for args in [
        vec![],
        vec!["--redis".to_owned(), redis.url()],
        vec!["--nats".to_owned(), nats.url()],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_streams"))
            .args(&args)
            .output()
            .expect("run streams");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "streams {args:?} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in [
            "frames resolved: 30 of 40 (camera 3 filtered out unresolved: 10)",
            "against 40 MiB of frames through the store",
            "objects left in the store: 0",
        ] {
            assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
        }
    }
}
