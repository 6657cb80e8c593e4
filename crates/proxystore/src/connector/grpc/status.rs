//! The one conversion between [`Error`] and [`tonic::Status`], each way.
//!
//! They live here, in the core behind feature `grpc`, because the orphan rule allows a
//! `From` between two foreign types only in the crate that defines one of them: `Error` is
//! the core's. The server (which enables this feature) answers with `Status::from(error)`, and
//! the client turns every status it receives back with `Error::from(status)`, so an error
//! crosses the wire as the same variant, with its key and details in metadata.

use std::borrow::Cow;
use std::time::Duration;

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

use crate::error::Error;
use crate::key::Key;

use super::KIND;

/// Metadata entry carrying the key an error concerns (binary, so any UTF-8 key fits).
pub const KEY_METADATA: &str = "x-proxystore-key-bin";
/// Metadata entry carrying machine-readable details: the store of a `NotFound`, the reason of
/// an `InvalidKey`, the milliseconds of a `Timeout`, `expected actual` of a digest mismatch,
/// `refused:<kind>` of a reference refused by the resolve policy.
pub const DETAIL_METADATA: &str = "x-proxystore-detail";
/// Metadata entry carrying the connector an error names on the sending side (the server's
/// backend kind of an `InvalidKey`, `Backend` or `Unsupported`; the store of a
/// `DigestMismatch`, which the service names after its backend), so the receiving side names
/// it too instead of its own `grpc`.
pub(crate) const CONNECTOR_METADATA: &str = "x-proxystore-connector";

/// Prefix of the detail of a `PERMISSION_DENIED` that is a refused reference (followed by the
/// connector kind), telling it from an authorization failure.
const REFUSED_DETAIL: &str = "refused:";

/// Longest status message and key sent, so that trailers stay well under header size limits.
const MAX_TEXT: usize = 1024;
/// Longest key written into a status message: the reason after it must fit in [`MAX_TEXT`].
/// The whole key (up to [`MAX_TEXT`]) travels in [`KEY_METADATA`].
const MAX_KEY_IN_TEXT: usize = 64;

/// `s` cut to at most [`MAX_TEXT`] bytes, on a character boundary, ending in `…` when cut.
fn truncate(s: &str) -> Cow<'_, str> {
    if s.len() <= MAX_TEXT {
        return Cow::Borrowed(s);
    }
    Cow::Owned(format!("{}…", prefix(s, MAX_TEXT - '…'.len_utf8())))
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn prefix(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A key as written in a status message: long keys are shortened to their start and length.
fn key_for_text(key: &str) -> String {
    if key.len() <= MAX_KEY_IN_TEXT {
        key.to_owned()
    } else {
        format!("{}…({} bytes)", prefix(key, MAX_KEY_IN_TEXT), key.len())
    }
}

/// The status message of `e`: its own text, with a long key shortened so that the reason
/// after it is never cut off.
fn status_message(e: &Error) -> String {
    match e {
        Error::NotFound { store, key, .. } if key.as_str().len() > MAX_KEY_IN_TEXT => {
            Error::not_found(store.clone(), Key::from(key_for_text(key.as_str()))).to_string()
        }
        Error::InvalidKey {
            connector,
            key,
            reason,
        } if key.len() > MAX_KEY_IN_TEXT => Error::InvalidKey {
            connector: connector.clone(),
            key: key_for_text(key),
            reason: reason.clone(),
        }
        .to_string(),
        Error::DigestMismatch {
            store,
            key,
            expected,
            actual,
        } if key.as_str().len() > MAX_KEY_IN_TEXT => Error::DigestMismatch {
            store: store.clone(),
            key: Key::from(key_for_text(key.as_str())),
            expected: expected.clone(),
            actual: actual.clone(),
        }
        .to_string(),
        e => e.to_string(),
    }
}

/// Insert `value` as ASCII metadata when it can be (metadata values must be visible ASCII);
/// what cannot is still in the message.
fn insert_ascii(md: &mut MetadataMap, name: &'static str, value: Option<&str>) {
    if let Some(v) = value
        .map(truncate)
        .filter(|v| v.is_ascii())
        .and_then(|v| MetadataValue::try_from(v.as_ref()).ok())
    {
        md.insert(name, v);
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::NotFound { .. } => Code::NotFound,
            Error::Unauthorized { .. } => Code::Unauthenticated,
            Error::LimitExceeded { .. } => Code::ResourceExhausted,
            Error::Timeout { .. } => Code::DeadlineExceeded,
            Error::InvalidKey { .. }
            | Error::InvalidDigest { .. }
            | Error::InvalidReference { .. }
            | Error::UnsupportedVersion { .. }
            | Error::Config { .. } => Code::InvalidArgument,
            Error::UnknownConnectorKind { .. } => Code::FailedPrecondition,
            Error::DigestMismatch { .. } => Code::DataLoss,
            Error::Unsupported { .. } => Code::Unimplemented,
            Error::StoreExists { .. } => Code::AlreadyExists,
            // The process's own rule says no, whoever asks: not a question of credentials
            // (UNAUTHENTICATED), and no change of the system's state will make it pass
            // (FAILED_PRECONDITION); only widening the policy does.
            Error::Refused { .. } => Code::PermissionDenied,
            // Only a temporary backend failure (a lost connection, a server restarting) is
            // UNAVAILABLE, the code clients retry; a permanent one (a disk error, a file that
            // is not a regular file) would fail the same way again.
            Error::Backend {
                temporary: true, ..
            } => Code::Unavailable,
            _ => Code::Internal,
        };
        let mut md = MetadataMap::new();
        let key = match &e {
            Error::NotFound { key, .. } | Error::DigestMismatch { key, .. } => Some(key.as_str()),
            Error::InvalidKey { key, .. } => Some(key.as_str()),
            _ => None,
        };
        // Over-long keys are cut: the receiver still learns which variant it got.
        if let Some(k) = key {
            md.insert_bin(
                KEY_METADATA,
                MetadataValue::from_bytes(truncate(k).as_bytes()),
            );
        }
        let detail = match &e {
            Error::NotFound { store, .. } => Some(store.clone()),
            Error::InvalidKey { reason, .. } => Some(reason.clone()),
            Error::DigestMismatch {
                expected, actual, ..
            } => Some(format!("{expected} {actual}")),
            Error::Timeout { after, .. } => Some(after.as_millis().to_string()),
            Error::Refused { kind, .. } => Some(format!("{REFUSED_DETAIL}{kind}")),
            _ => None,
        };
        insert_ascii(&mut md, DETAIL_METADATA, detail.as_deref());
        let connector = match &e {
            Error::InvalidKey { connector, .. }
            | Error::Backend { connector, .. }
            | Error::Unsupported { connector, .. }
            | Error::DigestMismatch {
                store: connector, ..
            } => Some(connector.as_str()),
            _ => None,
        };
        insert_ascii(&mut md, CONNECTOR_METADATA, connector);
        Status::with_metadata(code, truncate(&status_message(&e)), md)
    }
}

/// `s` without `prefix`, or all of it when it does not start so: a message sent by
/// `From<Error> for Status` loses the text its variant's `Display` adds again, and a message
/// from elsewhere is kept whole.
fn strip<'a>(s: &'a str, prefix: &str) -> &'a str {
    s.strip_prefix(prefix).unwrap_or(s)
}

/// Whether tonic made this status on this side from a failed connection (a reset, a broken
/// pipe, a protocol error of the transport) rather than receiving it from a server.
fn from_transport(s: &Status) -> bool {
    let mut cause = std::error::Error::source(s);
    while let Some(e) = cause {
        // An HTTP/2 error is this side's view of the connection (a server's answers are
        // statuses): a replica killed mid-reply shows as "h2 protocol error: error reading a
        // body from connection", with the code UNKNOWN.
        if e.is::<tonic::transport::Error>() || e.is::<std::io::Error>() || e.is::<h2::Error>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// What a failed call says about the replica it went to (see [`super::pool`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Unreachable {
    /// The connection could not be established (refused, timed out, TLS failed): nothing of
    /// the call was sent.
    NotConnected,
    /// The replica answered `UNAVAILABLE` or `ABORTED` itself, or the connection broke
    /// during the call.
    Lost,
}

/// Whether `e`, the error of a call, says that its replica cannot be reached: a temporary
/// failure as `From<Status> for Error` marks them, except one the replica reported about its
/// backend (the status names the backend's connector). That replica is up, and with a backend
/// shared by every replica, no other would do better.
pub(super) fn unreachable(e: &Error) -> Option<Unreachable> {
    let Error::Backend {
        temporary: true,
        source: Some(source),
        ..
    } = e
    else {
        return None;
    };
    let status = source.downcast_ref::<Status>()?;
    if status.metadata().contains_key(CONNECTOR_METADATA) {
        return None;
    }
    let mut cause = std::error::Error::source(status);
    while let Some(c) = cause {
        if c.is::<tonic::ConnectError>() {
            return Some(Unreachable::NotConnected);
        }
        cause = c.source();
    }
    Some(Unreachable::Lost)
}

impl From<Status> for Error {
    fn from(s: Status) -> Self {
        let text = |name: &str| {
            s.metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let key = s
            .metadata()
            .get_bin(KEY_METADATA)
            .and_then(|v| v.to_bytes().ok())
            .and_then(|b| String::from_utf8(b.to_vec()).ok());
        let detail = text(DETAIL_METADATA);
        let connector = text(CONNECTOR_METADATA);
        let label = connector.clone().unwrap_or_else(|| KIND.to_owned());
        let message = s.message();
        match s.code() {
            Code::NotFound => Error::not_found(
                detail.unwrap_or_else(|| KIND.to_owned()),
                Key::from(key.unwrap_or_default()),
            ),
            Code::PermissionDenied
                if detail
                    .as_deref()
                    .is_some_and(|d| d.starts_with(REFUSED_DETAIL)) =>
            {
                Error::Refused {
                    store: KIND.to_owned(),
                    kind: detail
                        .as_deref()
                        .and_then(|d| d.strip_prefix(REFUSED_DETAIL))
                        .unwrap_or_default()
                        .to_owned(),
                    // The text its `Display` adds again comes off, as for the other variants.
                    reason: message
                        .split_once("from a reference: ")
                        .map_or(message, |(_, r)| r)
                        .trim_end_matches(
                            " (see proxystore::ResolvePolicy, or set PROXYSTORE_RESOLVE_POLICY)",
                        )
                        .to_owned(),
                }
            }
            Code::Unauthenticated | Code::PermissionDenied => Error::Unauthorized {
                message: strip(message, "unauthorized: ").to_owned(),
            },
            Code::ResourceExhausted => Error::LimitExceeded {
                message: strip(message, "limit exceeded: ").to_owned(),
            },
            Code::DeadlineExceeded => {
                let after = detail
                    .and_then(|d| d.parse().ok())
                    .map(Duration::from_millis);
                let operation = match (after, message.rfind(" timed out after ")) {
                    (Some(_), Some(at)) => message[..at].to_owned(),
                    _ => format!("{KIND} call ({message})"),
                };
                Error::Timeout {
                    operation,
                    after: after.unwrap_or_default(),
                }
            }
            Code::Unimplemented => Error::Unsupported {
                operation: strip(message, &format!("{label} connector does not support "))
                    .to_owned(),
                connector: label,
            },
            Code::InvalidArgument if key.is_some() => {
                let reason = match detail {
                    Some(d) => d,
                    // A reason that is not ASCII is only in the message, after the key.
                    None => {
                        let marker = format!(" for {label} connector: ");
                        message
                            .find(&marker)
                            .map_or(message, |at| &message[at + marker.len()..])
                            .to_owned()
                    }
                };
                Error::InvalidKey {
                    connector: label,
                    key: key.unwrap_or_default(),
                    reason,
                }
            }
            Code::DataLoss if detail.is_some() => {
                let detail = detail.unwrap_or_default();
                let (expected, actual) = detail.split_once(' ').unwrap_or((&detail, ""));
                Error::DigestMismatch {
                    store: label,
                    key: Key::from(key.unwrap_or_default()),
                    expected: expected.to_owned(),
                    actual: actual.to_owned(),
                }
            }
            Code::AlreadyExists => {
                let name = strip(message, "a different store named '");
                Error::StoreExists {
                    name: name
                        .strip_suffix("' is already registered")
                        .unwrap_or(name)
                        .to_owned(),
                }
            }
            code => {
                // A backend error the other side converted names its connector; any other
                // status is wrapped once, with its code.
                let own = connector
                    .as_deref()
                    .and_then(|c| message.strip_prefix(&format!("{c} connector: ")));
                let message = own.map_or_else(|| format!("{code:?}: {message}"), str::to_owned);
                // The codes a server sends for what may pass on a later try, and any status
                // tonic made here from a broken connection (it carries the transport error).
                let temporary =
                    matches!(code, Code::Unavailable | Code::Aborted) || from_transport(&s);
                Error::Backend {
                    connector: label,
                    message,
                    source: Some(Box::new(s)),
                    temporary,
                }
            }
        }
    }
}

/// A failed call of a `Session` stream as it travels: the status the call would have ended
/// with on a stream of its own, its metadata in fields. The server answers with it.
pub fn session_error(s: &Status) -> proxystore_proto::v1::SessionError {
    let text = |name: &str| {
        s.metadata()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    proxystore_proto::v1::SessionError {
        code: s.code() as i32,
        message: truncate(s.message()).into_owned(),
        key: s
            .metadata()
            .get_bin(KEY_METADATA)
            .and_then(|v| v.to_bytes().ok()),
        detail: text(DETAIL_METADATA),
        connector: text(CONNECTOR_METADATA),
    }
}

/// The status a [`session_error`] stands for, with its metadata back, so that
/// `Error::from(status)` gives the same error as the call on a stream of its own. Hostile
/// input gives a status still: an unknown code is `UNKNOWN`, metadata that cannot be metadata
/// is left out.
pub fn session_status(e: proxystore_proto::v1::SessionError) -> Status {
    let mut md = MetadataMap::new();
    if let Some(key) = &e.key {
        let key = &key[..key.len().min(MAX_TEXT)];
        md.insert_bin(KEY_METADATA, MetadataValue::from_bytes(key));
    }
    let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    insert_ascii(&mut md, DETAIL_METADATA, some(&e.detail).as_deref());
    insert_ascii(&mut md, CONNECTOR_METADATA, some(&e.connector).as_deref());
    Status::with_metadata(Code::from_i32(e.code), truncate(&e.message), md)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(e: Error) -> Error {
        Error::from(Status::from(e))
    }

    #[test]
    fn errors_cross_the_wire_as_the_same_variant() {
        let e = round_trip(Error::not_found("memory", Key::from("ключ")));
        assert!(
            matches!(&e, Error::NotFound { store, key, .. } if store == "memory" && key.as_str() == "ключ"),
            "{e:?}"
        );

        let e = round_trip(Error::Unauthorized {
            message: "bad token".into(),
        });
        assert!(matches!(&e, Error::Unauthorized { message } if message.contains("bad token")));

        let e = round_trip(Error::LimitExceeded {
            message: "max 10 bytes".into(),
        });
        assert!(matches!(&e, Error::LimitExceeded { message } if message.contains("max 10")));

        let e = round_trip(Error::Timeout {
            operation: "get".into(),
            after: Duration::from_millis(1500),
        });
        assert!(
            matches!(&e, Error::Timeout { after, .. } if *after == Duration::from_millis(1500))
        );

        let e = round_trip(Error::InvalidKey {
            connector: "file".into(),
            key: "../x".into(),
            reason: "contains a path separator".into(),
        });
        assert!(
            matches!(&e, Error::InvalidKey { key, reason, .. } if key == "../x" && reason.contains("separator")),
            "{e:?}"
        );

        let e = round_trip(Error::DigestMismatch {
            store: "s".into(),
            key: Key::from("k"),
            expected: "xxh3:00".into(),
            actual: "xxh3:01".into(),
        });
        assert!(
            matches!(&e, Error::DigestMismatch { expected, actual, .. } if expected == "xxh3:00" && actual == "xxh3:01")
        );

        let e = round_trip(Error::Unsupported {
            connector: "redis".into(),
            operation: "set".into(),
        });
        assert!(matches!(e, Error::Unsupported { .. }));

        // The temporary mark crosses the wire: UNAVAILABLE for a temporary failure, INTERNAL
        // for a permanent one, and each comes back as it went.
        let temporary = Error::temporary("redis", "get", std::io::Error::other("reset"));
        assert_eq!(Status::from(temporary).code(), Code::Unavailable);
        let e = round_trip(Error::temporary(
            "redis",
            "get",
            std::io::Error::other("reset"),
        ));
        assert!(matches!(e, Error::Backend { .. }) && e.is_retryable());
        let permanent = || Error::backend("file", "read", std::io::Error::other("bad sector"));
        assert_eq!(Status::from(permanent()).code(), Code::Internal);
        let e = round_trip(permanent());
        assert!(
            matches!(e, Error::Backend { .. }) && !e.is_retryable(),
            "{e:?}"
        );
        // A status tonic made on this side from a broken connection is temporary, whatever
        // its code: the server never answered.
        let broken = Status::from_error(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert_eq!(broken.code(), Code::Unknown);
        assert!(Error::from(broken).is_retryable());
        // So is one from an HTTP/2 error: the connection broke mid-reply.
        let cut = Status::from_error(Box::new(h2::Error::from(h2::Reason::INTERNAL_ERROR)));
        assert!(Error::from(cut).is_retryable(), "an h2 error is temporary");

        let refused = || Error::Refused {
            store: "s".into(),
            kind: "file".into(),
            reason: "directory /etc is outside the allowed directories".into(),
        };
        assert_eq!(Status::from(refused()).code(), Code::PermissionDenied);
        let e = round_trip(refused());
        assert!(
            matches!(&e, Error::Refused { kind, reason, .. } if kind == "file" && reason.contains("/etc")),
            "{e:?}"
        );
        assert!(!e.is_retryable());
    }

    #[test]
    fn statuses_map_to_semantic_variants() {
        assert!(matches!(
            Error::from(Status::unavailable("down")),
            Error::Backend { .. }
        ));
        assert!(Error::from(Status::unavailable("down")).is_retryable());
        assert!(matches!(
            Error::from(Status::permission_denied("no")),
            Error::Unauthorized { .. }
        ));
        assert!(Error::from(Status::not_found("gone")).is_not_found());
        assert!(matches!(
            Error::from(Status::deadline_exceeded("slow")),
            Error::Timeout { .. }
        ));
        assert!(matches!(
            Error::from(Status::internal("boom")),
            Error::Backend { .. }
        ));
        assert!(!Error::from(Status::internal("boom")).is_retryable());
        assert!(!Error::from(Status::failed_precondition("no such kind")).is_retryable());
        assert!(Error::from(Status::aborted("conflict")).is_retryable());
    }

    /// One error of every variant, as a server or a client may build it.
    fn every_variant() -> Vec<Error> {
        vec![
            Error::not_found("memory", Key::from("k1")),
            Error::backend("file", "write", std::io::Error::other("disk full")),
            Error::Backend {
                connector: "redis".into(),
                message: "Unavailable: connection reset".into(),
                source: None,
                temporary: true,
            },
            Error::Encode {
                type_name: "T".into(),
                codec: "json".into(),
                source: "bad map key".into(),
            },
            Error::Decode {
                store: "s".into(),
                key: Key::from("k2"),
                type_name: "T".into(),
                codec: "json".into(),
                source: "eof".into(),
            },
            Error::DigestMismatch {
                store: "memory".into(),
                key: Key::from("k3"),
                expected: "xxh3:0011223344556677".into(),
                actual: "xxh3:8899aabbccddeeff".into(),
            },
            Error::DigestMismatch {
                store: "memory".into(),
                key: Key::from(""),
                expected: "xxh3:0011223344556677".into(),
                actual: "xxh3:8899aabbccddeeff".into(),
            },
            Error::InvalidDigest {
                reason: "a xxh3 digest of 3 bytes (xxh3 digests are 8 bytes)".into(),
            },
            Error::InvalidReference {
                reason: "format version is missing".into(),
            },
            Error::UnsupportedVersion {
                found: 9,
                supported: 1,
            },
            Error::UnknownConnectorKind {
                kind: "ftp".into(),
                registered: "file, memory".into(),
            },
            Error::config("chunk_size must be positive"),
            Error::InvalidKey {
                connector: "file".into(),
                key: "../x".into(),
                reason: "contains a path separator".into(),
            },
            Error::Unauthorized {
                message: "wrong bearer token".into(),
            },
            Error::Unauthorized {
                message: "unauthorized: wrong bearer token".into(),
            },
            Error::LimitExceeded {
                message: "object of 11 bytes exceeds 10".into(),
            },
            Error::Timeout {
                operation: "get".into(),
                after: Duration::from_millis(1500),
            },
            Error::Unsupported {
                connector: "memory".into(),
                operation: "caller-chosen keys".into(),
            },
            Error::StoreExists { name: "s".into() },
        ]
    }

    /// Variants with no status code of their own: they arrive as a backend error that names
    /// the code once.
    fn arrives_as_backend(e: &Error) -> bool {
        matches!(
            e,
            Error::Encode { .. }
                | Error::Decode { .. }
                | Error::InvalidDigest { .. }
                | Error::InvalidReference { .. }
                | Error::UnsupportedVersion { .. }
                | Error::UnknownConnectorKind { .. }
                | Error::Config { .. }
        )
    }

    #[test]
    fn every_variant_keeps_its_text_across_the_wire_without_doubled_prefixes() {
        for original in every_variant() {
            let text = original.to_string();
            let as_backend = arrives_as_backend(&original);
            let status = Status::from(original);
            let code = status.code();
            let once = Error::from(status);
            let expected = if as_backend {
                assert!(matches!(once, Error::Backend { .. }), "{once:?}");
                format!("grpc connector: {code:?}: {text}")
            } else {
                text.clone()
            };
            assert_eq!(once.to_string(), expected, "{once:?}");
            // A second crossing (a client passing the error on) changes nothing.
            let twice = Error::from(Status::from(Error::from(Status::from(once))));
            assert_eq!(twice.to_string(), expected, "{twice:?}");
        }
    }

    #[test]
    fn errors_name_the_connector_of_the_side_that_sent_them() {
        let e = round_trip(Error::InvalidKey {
            connector: "file".into(),
            key: "".into(),
            reason: "empty key".into(),
        });
        assert_eq!(
            e.to_string(),
            "invalid key \"\" for file connector: empty key"
        );
        let e = round_trip(Error::DigestMismatch {
            store: "memory".into(),
            key: Key::from("k"),
            expected: "xxh3:00".into(),
            actual: "xxh3:01".into(),
        });
        assert!(
            matches!(&e, Error::DigestMismatch { store, key, .. } if store == "memory" && key.as_str() == "k"),
            "{e:?}"
        );
        // A status without the entry (an older server) is named after this connector.
        let mut s = Status::from(Error::InvalidKey {
            connector: "file".into(),
            key: "k".into(),
            reason: "r".into(),
        });
        s.metadata_mut().remove(CONNECTOR_METADATA);
        assert!(matches!(Error::from(s), Error::InvalidKey { connector, .. } if connector == KIND));
        let e = Error::from(Status::unavailable("tcp connect error"));
        assert_eq!(
            e.to_string(),
            "grpc connector: Unavailable: tcp connect error"
        );
    }

    #[test]
    fn a_long_key_never_hides_the_reason() {
        for len in [1000, 4000] {
            let long = "k".repeat(len);
            let cases = [
                (
                    Error::InvalidKey {
                        connector: "file".into(),
                        key: long.clone(),
                        reason: "longer than 1024 bytes".into(),
                    },
                    "for file connector: longer than 1024 bytes",
                ),
                (
                    Error::not_found("memory", Key::from(long.as_str())),
                    "not found in store 'memory'",
                ),
                (
                    Error::DigestMismatch {
                        store: "memory".into(),
                        key: Key::from(long.as_str()),
                        expected: "xxh3:00".into(),
                        actual: "xxh3:01".into(),
                    },
                    "of store 'memory': expected xxh3:00, got xxh3:01",
                ),
            ];
            for (e, reason) in cases {
                let s = Status::from(e);
                assert!(s.message().len() <= MAX_TEXT, "{len}");
                assert!(s.message().contains(reason), "{len}: {}", s.message());
                let shown = format!("{}…({len} bytes)", &long[..MAX_KEY_IN_TEXT]);
                assert!(s.message().contains(&shown), "{}", s.message());
                let key = s
                    .metadata()
                    .get_bin(KEY_METADATA)
                    .unwrap()
                    .to_bytes()
                    .unwrap();
                assert_eq!(key.len(), len.min(MAX_TEXT));
                let back = Error::from(s).to_string();
                assert!(back.contains(reason), "{back}");
            }
        }
        // A reason that cannot travel as metadata is read back from the message.
        let e = round_trip(Error::InvalidKey {
            connector: "file".into(),
            key: "k".repeat(4000),
            reason: "clé refusée".into(),
        });
        assert!(
            matches!(&e, Error::InvalidKey { reason, connector, .. } if reason == "clé refusée" && connector == "file"),
            "{e:?}"
        );
    }

    #[test]
    fn long_and_non_ascii_texts_stay_bounded() {
        let long = "é".repeat(5000);
        let s = Status::from(Error::InvalidKey {
            connector: "file".into(),
            key: long.clone(),
            reason: long,
        });
        assert!(s.message().len() <= MAX_TEXT);
        let key = s
            .metadata()
            .get_bin(KEY_METADATA)
            .unwrap()
            .to_bytes()
            .unwrap();
        assert!(key.len() <= MAX_TEXT);
        assert!(matches!(Error::from(s.clone()), Error::InvalidKey { .. }));
        assert!(s.metadata().get(DETAIL_METADATA).is_none());
    }
}
