//! The task codec and the resolve layer over real stores.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use proxystore::connector::file::FileConnector;
use proxystore::connector::memory::MemoryConnector;
use proxystore::{Key, Proxy, Store};
use proxystore_middleware::{
    ArgumentPolicy, ArgumentPolicyConfig, BoxError, Eviction, Executor, Inline, InnerCodec,
    MiddlewareError, ResolveLayer, Rule, TaskCodec, TaskPayload,
};
use serde::{Deserialize, Serialize};
use tower::{Service, ServiceExt};

fn store() -> Store {
    let name = format!("mw-{}", Key::random());
    Store::new(name.clone(), MemoryConnector::new(&name))
}

fn codec(store: &Store, threshold: u64) -> TaskCodec {
    TaskCodec::new(ArgumentPolicy::from_parts(
        store.name().to_owned(),
        threshold,
    ))
    .with_store(store.clone())
}

fn segment_len(store: &Store) -> usize {
    // Objects left in the store's memory segment.
    MemoryConnector::new(
        store.config().connector.options_value()["segment"]
            .as_str()
            .unwrap(),
    )
    .len()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Mode {
    Fast,
    Slow { factor: f32 },
    Pair(u8, i64),
    Wrapped(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Config {
    seed: u64,
    label: Option<String>,
    mode: Mode,
    table: BTreeMap<String, Vec<u32>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Train {
    weights: Vec<f64>,
    config: Config,
    extra: Option<Vec<u8>>,
    tag: (u16, char),
    unit: (),
}

fn train(n: usize) -> Train {
    let mut table = BTreeMap::new();
    table.insert("big".to_owned(), (0..n as u32).collect());
    table.insert("small".to_owned(), vec![1, 2, 3]);
    Train {
        weights: (0..n).map(|i| i as f64 * 0.5).collect(),
        config: Config {
            seed: 7,
            label: Some("run".into()),
            mode: Mode::Slow { factor: 1.5 },
            table,
        },
        extra: Some(vec![9; n]),
        tag: (3, 'λ'),
        unit: (),
    }
}

#[test]
fn large_fields_travel_as_references_and_come_back_identical() {
    for inner in [InnerCodec::Json, InnerCodec::MessagePack] {
        let s = store();
        let c = codec(&s, 10_000).with_inner(inner);
        let t = train(100_000);
        let enc = c.encode("train", &t).unwrap();
        // weights, config/table/big and extra are above 10 kB.
        assert_eq!(enc.proxied.len(), 3, "{inner:?}");
        assert!(
            enc.bytes.len() < 3_000,
            "{inner:?}: {} bytes",
            enc.bytes.len()
        );
        let paths: Vec<_> = enc.proxied.iter().map(|r| r.type_name.clone()).collect();
        assert!(paths.iter().any(|p| p.contains("Vec<f64>")), "{paths:?}");
        let dec = c.decode::<Train>(&enc.bytes).unwrap();
        assert_eq!(dec.args, t, "{inner:?}");
        assert_eq!(dec.fetched, 3);
        assert_eq!(dec.proxied.len(), 3);
    }
}

#[test]
fn small_arguments_pass_untouched() {
    let s = store();
    let c = codec(&s, 1_000_000);
    let t = train(100);
    let enc = c.encode("train", &t).unwrap();
    assert!(enc.proxied.is_empty());
    assert_eq!(segment_len(&s), 0);
    assert_eq!(c.decode::<Train>(&enc.bytes).unwrap().args, t);
    // Variants of every shape survive the tree.
    for mode in [
        Mode::Fast,
        Mode::Pair(1, -2),
        Mode::Wrapped("w".into()),
        Mode::Slow { factor: 0.25 },
    ] {
        let mut t = train(10);
        t.config.mode = mode;
        t.extra = None;
        let enc = c.encode("train", &t).unwrap();
        assert_eq!(c.decode::<Train>(&enc.bytes).unwrap().args, t);
    }
}

#[test]
fn include_exclude_rules_and_inline_opt_out() {
    let s = store();
    let other = store();
    let policy = ArgumentPolicyConfig {
        store: s.name().to_owned(),
        threshold: 1_000,
        include: vec![],
        // config stays inline (it is descended into); extra is never proxied.
        exclude: vec!["train/extra".into(), "train/config".into()],
        rules: vec![Rule {
            pattern: "*/config/**".into(),
            store: Some(other.name().to_owned()),
            threshold: Some(100),
        }],
    }
    .compile()
    .unwrap();
    let c = TaskCodec::new(policy)
        .with_store(s.clone())
        .with_store(other.clone());
    let t = train(5_000);
    let enc = c.encode("train", &t).unwrap();
    let stores: Vec<_> = enc.proxied.iter().map(|r| r.store.clone()).collect();
    // weights to the default store; config/table to the rule's store; extra excluded.
    assert_eq!(stores.len(), 2, "{stores:?}");
    assert!(stores.contains(&s.name().to_owned()));
    assert!(stores.contains(&other.name().to_owned()));
    assert_eq!(c.decode::<Train>(&enc.bytes).unwrap().args, t);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Opt {
        big: Inline<Vec<u64>>,
        also_big: Vec<u64>,
    }
    let c = codec(&s, 100);
    let o = Opt {
        big: Inline((0..1000).collect()),
        also_big: (0..1000).collect(),
    };
    let enc = c.encode("opt", &o).unwrap();
    assert_eq!(enc.proxied.len(), 1);
    assert_eq!(c.decode::<Opt>(&enc.bytes).unwrap().args, o);
}

#[derive(Debug, Serialize, Deserialize)]
struct Lazy {
    used: Proxy<Vec<u32>>,
    unused: Proxy<Vec<u32>>,
    n: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_proxy_fields_stay_lazy_and_are_not_reproxied() {
    let s = store();
    proxystore::register_store(&s).unwrap();
    let c = codec(&s, 100);
    let task = Lazy {
        used: s.proxy(&(0..10_000).collect::<Vec<u32>>()).await.unwrap(),
        unused: s.proxy(&vec![1u32; 10_000]).await.unwrap(),
        n: 1,
    };
    let enc = c.encode("lazy", &task).unwrap();
    assert!(enc.proxied.is_empty(), "a proxy is already a reference");
    let before = s.metrics();
    let dec = c.decode::<Lazy>(&enc.bytes).unwrap();
    assert_eq!((dec.fetched, dec.lazy), (0, 2));
    assert!(!dec.args.used.is_resolved());
    assert_eq!(dec.args.used.len(), 10_000);
    let after = s.metrics();
    assert_eq!(
        after.get.count - before.get.count,
        1,
        "only the used proxy is fetched"
    );
    assert!(!dec.args.unused.is_resolved());

    // A consumer may also declare a proxied plain field as `Proxy<T>` and keep it lazy.
    #[derive(Serialize)]
    struct Plain {
        used: Vec<u32>,
        unused: Vec<u32>,
        n: u32,
    }
    let enc = c
        .encode(
            "lazy",
            &Plain {
                used: vec![5; 1000],
                unused: vec![6; 1000],
                n: 2,
            },
        )
        .unwrap();
    assert_eq!(enc.proxied.len(), 2);
    let dec = c.decode::<Lazy>(&enc.bytes).unwrap();
    assert_eq!((dec.fetched, dec.lazy), (0, 2));
    assert_eq!(dec.args.used[0], 5);
    proxystore::unregister_store(s.name());
}

#[test]
fn a_failing_store_is_a_typed_task_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::new(
        format!("mw-file-{}", Key::random()),
        FileConnector::new(dir.path()).unwrap(),
    );
    let c = codec(&s, 100);
    let enc = c.encode("t", &vec![1u64; 1000]).unwrap();
    // The object disappears (or is corrupted) before the worker runs.
    let key = &enc.proxied[0].key;
    std::fs::write(dir.path().join(key.as_str()), b"garbage").unwrap();
    let e = c.decode::<Vec<u64>>(&enc.bytes).unwrap_err();
    assert!(
        matches!(
            e,
            MiddlewareError::Store(proxystore::Error::DigestMismatch { .. })
        ),
        "{e}"
    );
    std::fs::remove_file(dir.path().join(key.as_str())).unwrap();
    let e = c.decode::<Vec<u64>>(&enc.bytes).unwrap_err();
    assert!(
        matches!(
            e,
            MiddlewareError::Store(proxystore::Error::NotFound { .. })
        ),
        "{e}"
    );
    // Garbage documents are decode errors, not panics.
    for doc in [
        &b""[..],
        b"{",
        b"[1,2]",
        b"{\"$proxystore\": 99, \"args\": 1}",
    ] {
        assert!(c.decode::<Vec<u64>>(doc).is_err());
    }
    let bad_ref = br#"{"$proxystore":1,"args":{"$proxy":{"version":1}}}"#;
    assert!(matches!(
        c.decode::<Vec<u64>>(bad_ref).unwrap_err(),
        MiddlewareError::Decode(_)
    ));
}

#[test]
fn an_unregistered_store_name_is_reported() {
    let c = TaskCodec::new(ArgumentPolicy::from_parts("no-such-store".into(), 1));
    let e = c.encode("t", &vec![1u8; 100]).unwrap_err();
    assert!(
        matches!(e, MiddlewareError::UnknownStore(ref n) if n == "no-such-store"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_cleans_up_after_success_and_after_the_last_attempt() {
    let s = store();
    let c = codec(&s, 100);
    let calls = Arc::new(AtomicU32::new(0));
    let calls2 = calls.clone();
    let mut svc = ResolveLayer::<Vec<u64>>::new(c.clone()).layer_service(tower::service_fn(
        move |v: Vec<u64>| {
            let n = calls2.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err(MiddlewareError::Decode("first attempt fails".into()))
                } else {
                    Ok(v.len())
                }
            }
        },
    ));
    let enc = c.encode("t", &vec![7u64; 1000]).unwrap();
    let payload = |attempt| TaskPayload {
        bytes: enc.bytes.clone().into(),
        attempt,
        max_attempts: 3,
    };
    assert!(svc.ready().await.unwrap().call(payload(0)).await.is_err());
    assert_eq!(segment_len(&s), 1, "a retry must still find its arguments");
    assert_eq!(
        svc.ready().await.unwrap().call(payload(1)).await.unwrap(),
        1000
    );
    assert_eq!(segment_len(&s), 0, "a finished task leaves nothing behind");
    assert_eq!(c.stats().refs_evicted, 1);

    // Final failure also cleans up.
    let enc = c.encode("t", &vec![8u64; 1000]).unwrap();
    let mut failing = ResolveLayer::<Vec<u64>>::new(c.clone()).layer_service(tower::service_fn(
        |_: Vec<u64>| async { Err::<usize, _>(MiddlewareError::Decode("always".into())) },
    ));
    let last = TaskPayload {
        bytes: enc.bytes.into(),
        attempt: 2,
        max_attempts: 3,
    };
    assert!(failing.ready().await.unwrap().call(last).await.is_err());
    assert_eq!(segment_len(&s), 0);
}

/// An executor's own request type, as a plugin would see it: an id and a document.
struct Job {
    id: u64,
    doc: bytes::Bytes,
}

/// The plugin's [`Executor`]: the service gets `(id, args)`, and the plugin evicts the objects
/// itself from the references it is handed.
#[derive(Clone, Default)]
struct Jobs {
    handed: Arc<std::sync::Mutex<Vec<(u64, usize)>>>,
}

impl Executor<Job, Vec<u64>> for Jobs {
    type Resolved = (u64, Vec<u64>);

    fn document(&self, job: &Job) -> bytes::Bytes {
        job.doc.clone()
    }

    fn attempt(&self, _: &Job) -> u32 {
        0
    }

    fn task_id(&self, job: &Job) -> Option<String> {
        Some(job.id.to_string())
    }

    fn eviction(
        &self,
        job: &Job,
        proxied: &[proxystore::Reference],
        _: &tracing::Span,
    ) -> Eviction {
        self.handed.lock().unwrap().push((job.id, proxied.len()));
        Eviction::Elsewhere
    }

    fn resolved(&self, job: Job, args: Vec<u64>) -> (u64, Vec<u64>) {
        (job.id, args)
    }

    fn resolve_failed(&self, job: &Job, error: MiddlewareError) -> BoxError {
        format!("job {}: {error}", job.id).into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_adapts_the_layer_to_its_own_requests() {
    let s = store();
    let c = codec(&s, 100);
    let jobs = Jobs::default();
    let mut svc = ResolveLayer::with_executor(c.clone(), jobs.clone()).layer_service(
        tower::service_fn(|(id, v): (u64, Vec<u64>)| async move {
            Ok::<_, std::io::Error>(id + v.iter().sum::<u64>())
        }),
    );
    let enc = c.encode("t", &vec![1u64; 1000]).unwrap();
    let refs = enc.proxied.clone();
    let job = Job {
        id: 7,
        doc: enc.bytes.into(),
    };
    assert_eq!(svc.ready().await.unwrap().call(job).await.unwrap(), 1007);
    assert_eq!(*jobs.handed.lock().unwrap(), vec![(7, 1)]);
    assert_eq!(segment_len(&s), 1, "the executor evicts, not the layer");
    c.cleanup(&refs).await.unwrap();
    assert_eq!(segment_len(&s), 0);

    // A document that is not a task fails the call with the executor's error.
    let e = svc
        .ready()
        .await
        .unwrap()
        .call(Job {
            id: 8,
            doc: bytes::Bytes::from_static(b"not a task"),
        })
        .await
        .unwrap_err();
    assert!(
        e.to_string().starts_with("job 8: cannot decode task"),
        "{e}"
    );
    assert_eq!(jobs.handed.lock().unwrap().last(), Some(&(8, 0)));
}

trait LayerExt<S> {
    fn layer_service(self, s: S) -> <Self as tower::Layer<S>>::Service
    where
        Self: tower::Layer<S> + Sized,
    {
        tower::Layer::layer(&self, s)
    }
}
impl<S, L: tower::Layer<S>> LayerExt<S> for L {}

#[test]
fn deeply_nested_messagepack_documents_are_errors_not_stack_overflows() {
    let s = store();
    let c = codec(&s, 100).with_inner(InnerCodec::MessagePack);
    let mut doc = vec![0x91u8; 100_000];
    doc.push(0xc0);
    assert!(matches!(
        c.decode::<Vec<u64>>(&doc).unwrap_err(),
        MiddlewareError::Decode(_)
    ));
}

/// A task that completes a distributed future: its downstream consumer holds the proxy.
#[derive(Serialize, Deserialize)]
struct Produce {
    input: Vec<u64>,
    out: proxystore::Promise<u64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promise_in_a_task_survives_a_failed_attempt_and_fails_with_the_last_error() {
    let s = store();
    let c = codec(&s, 100);
    let calls = Arc::new(AtomicU32::new(0));
    let calls2 = calls.clone();
    let mut svc = ResolveLayer::<Produce>::new(c.clone()).layer_service(tower::service_fn(
        move |job: Produce| {
            let n = calls2.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    // Dropped unset inside the attempt: kept for the retry.
                    return Err(MiddlewareError::Decode("first attempt fails".into()));
                }
                let sum = job.input.iter().sum::<u64>();
                job.out.set(&sum).await.map_err(MiddlewareError::from)?;
                Ok(())
            }
        },
    ));
    let (promise, proxy) = s.future::<u64>().await.unwrap();
    let enc = c
        .encode(
            "produce",
            &Produce {
                input: vec![3; 1000],
                out: promise,
            },
        )
        .unwrap();
    let payload = |attempt| TaskPayload {
        bytes: enc.bytes.clone().into(),
        attempt,
        max_attempts: 3,
    };
    assert!(svc.ready().await.unwrap().call(payload(0)).await.is_err());
    // Not failed, not set: its consumers wait on.
    let err = proxy
        .resolve_within(std::time::Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, proxystore::Error::Timeout { .. }), "{err:?}");
    svc.ready().await.unwrap().call(payload(1)).await.unwrap();
    assert_eq!(*proxy.resolve().await.unwrap(), 3000);

    // The last attempt fails: the future fails with the task's error.
    let (promise, proxy) = s.future::<u64>().await.unwrap();
    let enc = c
        .encode(
            "produce",
            &Produce {
                input: vec![1; 10],
                out: promise,
            },
        )
        .unwrap();
    let mut failing = ResolveLayer::<Produce>::new(c.clone()).layer_service(tower::service_fn(
        |_: Produce| async { Err::<(), _>(MiddlewareError::Decode("no luck".into())) },
    ));
    let last = TaskPayload {
        bytes: enc.bytes.into(),
        attempt: 2,
        max_attempts: 3,
    };
    assert!(failing.ready().await.unwrap().call(last).await.is_err());
    let err = proxy.resolve().await.unwrap_err();
    assert!(
        matches!(
            &err,
            proxystore::Error::Future {
                problem: proxystore::FutureProblem::Failed { message },
                ..
            } if message.contains("no luck")
        ),
        "{err:?}"
    );
}
