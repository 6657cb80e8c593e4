//! The replicas a connector calls ([`GrpcConfig::all_addresses`]): an endpoint per address and,
//! for each tokio runtime that calls, a lazily connected channel and session to it; the choice
//! of a replica for each call, and the marks of replicas that could not be reached.
//!
//! A channel's connection task runs on the runtime that made the channel. One channel per
//! runtime ([`PerRuntime`]) keeps a call on its caller's runtime all the way to the socket and
//! back: with one channel on the library's I/O runtime, a call from a user's runtime went
//! there and back (a spawn and two cross-thread wakes per call).
//!
//! Calls go round-robin over the replicas not marked down. A replica that a call could not
//! reach ([`status::unreachable`]) is marked down for [`DOWN_FIRST`], doubled per further
//! failure up to [`DOWN_MAX`]; any answer from it clears the mark. When every replica is
//! marked down, the one whose mark ends first is called anyway: a call is never failed
//! without being tried.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proxystore_proto::splice::SpliceRequests;
use proxystore_proto::v1::store_service_client::StoreServiceClient;
use tonic::transport::Endpoint;

use super::client::{Client, endpoint};
use super::config::{GrpcConfig, MAX_MESSAGE_SIZE, uri_of};
use super::rpc_trace::{RpcTrace, Side};
use super::session::SessionSlot;
use super::status::{self, Unreachable};
use crate::error::{Error, Result};
use crate::runtime::{self, PerRuntime};

/// How long a replica that could not be reached is skipped after its first failure.
pub(super) const DOWN_FIRST: Duration = Duration::from_secs(1);
/// The longest a replica is skipped, however often it failed.
pub(super) const DOWN_MAX: Duration = Duration::from_secs(10);
/// Low bits of a replica's state that count its consecutive failures; the high bits hold the
/// end of its down period in milliseconds since the pool was made.
const FAILURE_BITS: u32 = 8;
const FAILURE_MASK: u64 = (1 << FAILURE_BITS) - 1;

/// The replicas of one connector.
pub(super) struct Pool {
    replicas: Vec<Replica>,
    /// Round-robin position.
    next: AtomicUsize,
    /// Origin of the times in the replicas' states.
    origin: Instant,
}

struct Replica {
    address: String,
    endpoint: Endpoint,
    /// The channel and session of each runtime that calls.
    conns: PerRuntime<Arc<Conn>>,
    /// `down_until_ms << FAILURE_BITS | consecutive_failures`; 0 for a replica that never
    /// failed or answered since.
    state: AtomicU64,
}

/// A runtime's connection to a replica.
pub(super) struct Conn {
    /// The channel, its connection task on that runtime.
    pub(super) client: Client,
    /// Its `Session` stream, for small calls.
    pub(super) session: SessionSlot,
}

/// A replica chosen for a call, with its state when chosen.
///
/// The call's outcome changes the replica's state only if nothing else changed it since: calls
/// that fail together count as one failure, and a call that started before the replica was
/// marked down does not clear the mark by finishing well (as calls in flight on a server that
/// shuts down gracefully do).
#[derive(Clone, Copy, Debug)]
pub(super) struct Pick {
    index: usize,
    state: u64,
}

impl Pool {
    /// An endpoint for each of `config`'s addresses (an address given twice counts once).
    ///
    /// # Errors
    /// [`Error::Config`] for an address the endpoint refuses (see [`endpoint`]).
    pub(super) fn new(config: &GrpcConfig) -> Result<Self> {
        let mut replicas: Vec<Replica> = Vec::new();
        for address in config.all_addresses() {
            if address.is_empty() {
                return Err(Error::config("grpc connector needs an address"));
            }
            if replicas
                .iter()
                .any(|r| uri_of(&r.address) == uri_of(address))
            {
                continue;
            }
            replicas.push(Replica {
                address: address.to_owned(),
                endpoint: endpoint(config, address)?,
                conns: PerRuntime::new(),
                state: AtomicU64::new(0),
            });
        }
        Ok(Pool {
            replicas,
            next: AtomicUsize::new(0),
            origin: Instant::now(),
        })
    }

    /// The replica for the next call: the next in turn that is not marked down, or, when all
    /// are, the one whose mark ends first.
    pub(super) fn pick(&self) -> Pick {
        self.pick_other(&[]).unwrap_or(Pick { index: 0, state: 0 })
    }

    /// As [`Pool::pick`], among the replicas not in `tried`; `None` when all were tried.
    pub(super) fn pick_other(&self, tried: &[Pick]) -> Option<Pick> {
        let n = self.replicas.len();
        let start = if n > 1 {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        } else {
            0
        };
        let now = self.now_ms();
        let mut earliest: Option<(u64, Pick)> = None;
        for index in (start..n).chain(0..start) {
            if tried.iter().any(|p| p.index == index) {
                continue;
            }
            let state = self.replicas[index].state.load(Ordering::Relaxed);
            let pick = Pick { index, state };
            let until = state >> FAILURE_BITS;
            if until <= now {
                return Some(pick);
            }
            if earliest.is_none_or(|(u, _)| until < u) {
                earliest = Some((until, pick));
            }
        }
        earliest.map(|(_, p)| p)
    }

    /// The channel to the picked replica from the calling runtime.
    pub(super) fn client(&self, pick: Pick) -> Client {
        self.conn(pick).client.clone()
    }

    /// The calling runtime's channel and session to the picked replica, made on its first
    /// call from there (with its connection task there); a caller outside any tokio runtime
    /// gets the I/O runtime's.
    pub(super) fn conn(&self, pick: Pick) -> Arc<Conn> {
        let replica = &self.replicas[pick.index];
        let make = || {
            Ok::<_, std::convert::Infallible>(Arc::new(Conn {
                // A put's large chunks go out from the caller's own bytes.
                client: StoreServiceClient::new(SpliceRequests::new(RpcTrace::new(
                    replica.endpoint.connect_lazy(),
                    Side::Client,
                )))
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
                session: SessionSlot::default(),
            }))
        };
        match replica
            .conns
            .get_or_try_init_in(&runtime::current_or_io(), make)
        {
            Ok(conn) => conn,
            Err(never) => match never {},
        }
    }

    /// How many tokio runtimes have a channel to some replica now (the most of any replica).
    pub(super) fn runtimes(&self) -> usize {
        self.replicas
            .iter()
            .map(|r| r.conns.len())
            .max()
            .unwrap_or(0)
    }

    /// The address of the picked replica.
    pub(super) fn address(&self, pick: Pick) -> &str {
        &self.replicas[pick.index].address
    }

    /// Record how a call on the picked replica ended: `None` for success. An error that says
    /// the replica cannot be reached marks it down; a timeout of the call says nothing; any
    /// other error is an answer, and clears the mark as success does.
    pub(super) fn report(&self, pick: Pick, error: Option<&Error>) {
        if self.replicas.len() == 1 {
            // Nothing to choose between.
            return;
        }
        let new = match error {
            Some(e) if status::unreachable(e).is_some() => {
                let failures = ((pick.state & FAILURE_MASK) + 1).min(FAILURE_MASK);
                let down = DOWN_FIRST
                    .saturating_mul(1u32 << (failures - 1).min(16))
                    .min(DOWN_MAX);
                tracing::debug!(
                    address = self.address(pick),
                    failures,
                    ?down,
                    "grpc replica marked down"
                );
                let until = self.now_ms() + down.as_millis() as u64;
                until << FAILURE_BITS | failures
            }
            Some(Error::Timeout { .. }) => return,
            _ => 0,
        };
        if new != pick.state {
            // Lost to another outcome recorded since the pick: that one stands.
            let _ = self.replicas[pick.index].state.compare_exchange(
                pick.state,
                new,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Whether `e`, the error of a call on a replica, says nothing of the call was sent, so
    /// that it can go to another replica whatever it does.
    pub(super) fn not_sent(e: &Error) -> bool {
        status::unreachable(e) == Some(Unreachable::NotConnected)
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use tonic::Status;

    use super::*;

    fn pool(n: u16) -> Pool {
        let config =
            GrpcConfig::new("127.0.0.1:1").addresses((2..=n).map(|p| format!("127.0.0.1:{p}")));
        Pool::new(&config).unwrap()
    }

    /// The error of a call whose connection was refused.
    fn refused() -> Error {
        Error::from(Status::from_error(Box::new(tonic::ConnectError(Box::new(
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        )))))
    }

    fn failures(pool: &Pool, index: usize) -> u64 {
        pool.replicas[index].state.load(Ordering::Relaxed) & FAILURE_MASK
    }

    fn down_for(pool: &Pool, index: usize) -> Duration {
        let until = pool.replicas[index].state.load(Ordering::Relaxed) >> FAILURE_BITS;
        Duration::from_millis(until.saturating_sub(pool.now_ms()))
    }

    #[test]
    fn failures_are_classified() {
        assert_eq!(
            status::unreachable(&refused()),
            Some(Unreachable::NotConnected)
        );
        assert!(Pool::not_sent(&refused()));
        let lost = Error::from(Status::unavailable("shutting down"));
        assert_eq!(status::unreachable(&lost), Some(Unreachable::Lost));
        assert!(!Pool::not_sent(&lost));
        // The replica answered that its backend failed: it is up.
        let backend = Error::from(Status::from(Error::temporary(
            "redis",
            "get",
            std::io::Error::other("reset"),
        )));
        assert!(backend.is_retryable());
        assert_eq!(status::unreachable(&backend), None);
        assert_eq!(
            status::unreachable(&Error::not_found("s", crate::Key::from("k"))),
            None
        );
    }

    #[test]
    fn calls_go_round_robin() {
        let pool = pool(3);
        assert_eq!(pool.replicas.len(), 3);
        let picks: Vec<usize> = (0..6).map(|_| pool.pick().index).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        // An address given twice is one replica.
        let config = GrpcConfig::new("127.0.0.1:1").addresses(["http://127.0.0.1:1"]);
        assert_eq!(Pool::new(&config).unwrap().replicas.len(), 1);
    }

    #[test]
    fn a_replica_marked_down_is_skipped_until_it_answers() {
        let pool = pool(3);
        let first = pool.pick();
        assert_eq!(first.index, 0);
        pool.report(first, Some(&refused()));
        assert_eq!(failures(&pool, 0), 1);
        assert!(down_for(&pool, 0) > DOWN_FIRST / 2);
        assert!((0..10).all(|_| pool.pick().index != 0));
        // A call picked before the mark, failing or succeeding later, changes nothing.
        pool.report(first, Some(&refused()));
        pool.report(first, None);
        assert_eq!(failures(&pool, 0), 1);
        // A call on it after all (every replica down) that fails again doubles the mark.
        let again = Pick {
            index: 0,
            state: pool.replicas[0].state.load(Ordering::Relaxed),
        };
        pool.report(again, Some(&refused()));
        assert_eq!(failures(&pool, 0), 2);
        assert!(down_for(&pool, 0) > DOWN_FIRST);
        // Capped however often it fails.
        for _ in 0..20 {
            let p = Pick {
                index: 0,
                state: pool.replicas[0].state.load(Ordering::Relaxed),
            };
            pool.report(p, Some(&refused()));
        }
        assert!(down_for(&pool, 0) <= DOWN_MAX);
        // A timeout says nothing; an answer clears the mark.
        let p = Pick {
            index: 0,
            state: pool.replicas[0].state.load(Ordering::Relaxed),
        };
        let timeout = Error::Timeout {
            operation: "get".into(),
            after: Duration::from_secs(1),
        };
        pool.report(p, Some(&timeout));
        assert!(failures(&pool, 0) > 0);
        pool.report(p, Some(&Error::not_found("s", crate::Key::from("k"))));
        assert_eq!(pool.replicas[0].state.load(Ordering::Relaxed), 0);
        assert!((0..3).any(|_| pool.pick().index == 0));
    }

    #[test]
    fn with_every_replica_down_the_first_to_recover_is_called() {
        let pool = pool(3);
        for index in [2, 0, 1] {
            let p = Pick { index, state: 0 };
            pool.report(p, Some(&refused()));
            // Later marks end later.
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!((0..6).all(|_| pool.pick().index == 2));
        // Within one call, the replicas not tried yet, then none.
        let tried = [pool.pick()];
        assert_eq!(pool.pick_other(&tried).map(|p| p.index), Some(0));
        let all: Vec<Pick> = (0..3).map(|index| Pick { index, state: 0 }).collect();
        assert!(pool.pick_other(&all).is_none());
    }
}
