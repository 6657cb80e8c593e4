//! A worker refuses task arguments whose references point outside its resolve policy, installed
//! through the codec. Its own binary: the policy is process-wide.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proxystore::connector::file::FileConnector;
use proxystore::{Key, Proxy, ResolvePolicy, Store};
use proxystore_middleware::{ArgumentPolicy, MiddlewareError, TaskCodec};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Job {
    data: Vec<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct LazyJob {
    data: Proxy<Vec<u64>>,
}

#[test]
fn the_codec_installs_the_policy_and_refused_arguments_fail_the_task_for_good() {
    let (allowed, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // The producer's store is not registered in this (the worker's) process: the worker
    // rebuilds it from the references in the task.
    let producer = Store::new(
        format!("mw-policy-{}", Key::random()),
        FileConnector::new(other.path()).unwrap(),
    );
    let encoder = TaskCodec::new(ArgumentPolicy::from_parts(producer.name().to_owned(), 100))
        .with_store(producer.clone());
    let enc = encoder
        .encode(
            "job",
            &Job {
                data: vec![7; 1000],
            },
        )
        .unwrap();
    assert_eq!(enc.proxied.len(), 1);

    // Under the default policy (temporary directories) the argument resolves.
    let worker = TaskCodec::new(ArgumentPolicy::with_store("unused"));
    assert_eq!(
        worker.decode::<Job>(&enc.bytes).unwrap().args.data,
        vec![7; 1000]
    );

    // A worker that accepts files in `allowed` only refuses it: eagerly decoded fields...
    let worker = worker.with_resolve_policy(
        ResolvePolicy::deny_all()
            .allow_kind("file")
            .allow_directory(allowed.path()),
    );
    let e = worker.decode::<Job>(&enc.bytes).unwrap_err();
    assert!(
        matches!(
            &e,
            MiddlewareError::Store(proxystore::Error::Refused { .. })
        ),
        "{e:?}"
    );
    assert!(!e.is_retryable());
    // ...and lazy `Proxy<T>` fields, which resolve later through the process-wide policy.
    let lazy = worker.decode::<LazyJob>(&enc.bytes).unwrap().args;
    assert!(matches!(
        lazy.data.try_get(),
        Err(proxystore::Error::Refused { .. })
    ));
}
