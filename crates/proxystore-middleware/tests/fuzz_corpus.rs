//! Replays every file of the `task_envelope` fuzz corpus (`fuzz/corpus/task_envelope/`) through
//! the same decode function as the fuzz target.
//!
//! The seed files are real task documents; `PROXYSTORE_WRITE_FUZZ_SEEDS=1` rewrites them from
//! the current code (`cargo nextest run -p proxystore-middleware --test fuzz_corpus`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../fuzz/src/middleware_harness.rs"]
#[allow(unreachable_pub, dead_code)]
mod harness;

use std::path::{Path, PathBuf};

use harness::{Job, Part};
use proxystore::Proxy;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/task_envelope")
}

fn jobs() -> Vec<(&'static str, Job)> {
    let small = Job {
        name: "small".into(),
        count: 1,
        data: vec![1, 2, 3],
        values: vec![-1, 0, 1],
        weights: Proxy::from_value(vec![0.25]),
        parts: None,
    };
    let large = Job {
        name: "large".into(),
        count: u32::MAX,
        data: vec![0xab; 4096],
        values: (0..512).collect(),
        weights: Proxy::from_value(vec![1.5; 256]),
        parts: Some(vec![
            Part {
                id: 7,
                text: "ünïcode 🙂".repeat(20),
            },
            Part {
                id: 0,
                text: String::new(),
            },
        ]),
    };
    vec![("small", small), ("large", large)]
}

#[test]
fn task_envelope_corpus() {
    let (_, codecs) = harness::codecs();
    if std::env::var_os("PROXYSTORE_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(corpus()).unwrap();
        for (name, job) in jobs() {
            for codec in codecs {
                let enc = codec.encode("fuzz", &job).unwrap();
                let file = format!("seed-{name}-{:?}", codec.inner()).to_lowercase();
                std::fs::write(corpus().join(file), &enc.bytes).unwrap();
            }
        }
    }
    let files: Vec<PathBuf> = std::fs::read_dir(corpus())
        .expect("fuzz/corpus/task_envelope is missing")
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files.len() >= 4, "corpus has {} files", files.len());
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let result = std::panic::catch_unwind(|| harness::task_envelope(&data));
        assert!(result.is_ok(), "task_envelope panicked on {}", f.display());
    }
    eprintln!("task_envelope: {} inputs replayed", files.len());
}

#[test]
fn seed_documents_decode_into_their_tasks() {
    let (_, codecs) = harness::codecs();
    for (name, job) in jobs() {
        for codec in codecs {
            let enc = codec.encode("fuzz", &job).unwrap();
            let dec = codec.decode::<Job>(&enc.bytes).unwrap();
            assert_eq!(dec.args.data, job.data, "{name}");
            assert_eq!(dec.args.values, job.values, "{name}");
            assert_eq!(*dec.args.weights, *job.weights, "{name}");
            harness::task_envelope(&enc.bytes);
        }
    }
}
