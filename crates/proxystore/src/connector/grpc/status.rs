//! The one conversion between [`Error`] and [`tonic::Status`], each way.
//!
//! They live here, in the core behind feature `grpc`, because the orphan rule allows a
//! `From` between two foreign types only in the crate that defines one of them: `Error` is
//! the core's. The server (which enables this feature) answers with `Status::from(error)`, and
//! the client turns every status it receives back with `Error::from(status)`, so an error
//! crosses the wire as the same variant, with its key and details in metadata.

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

/// Prefix of the detail of a `PERMISSION_DENIED` that is a refused reference (followed by the
/// connector kind), telling it from an authorization failure.
const REFUSED_DETAIL: &str = "refused:";

/// Longest status message and key sent, so that trailers stay well under header size limits.
const MAX_TEXT: usize = 1024;

fn truncate(s: &str) -> &str {
    if s.len() <= MAX_TEXT {
        return s;
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::NotFound { .. } => Code::NotFound,
            Error::Unauthorized { .. } => Code::Unauthenticated,
            Error::LimitExceeded { .. } => Code::ResourceExhausted,
            Error::Timeout { .. } => Code::DeadlineExceeded,
            Error::InvalidKey { .. }
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
            // A backend failure (lost connection, I/O error) may pass: clients retry it.
            Error::Backend { .. } => Code::Unavailable,
            _ => Code::Internal,
        };
        let mut md = MetadataMap::new();
        // Over-long keys are cut: the receiver still learns which variant it got.
        let mut key = |k: &Key| {
            md.insert_bin(
                KEY_METADATA,
                MetadataValue::from_bytes(truncate(k.as_str()).as_bytes()),
            );
        };
        let detail = match &e {
            Error::NotFound { store, key: k } => {
                key(k);
                Some(store.clone())
            }
            Error::InvalidKey { key: k, reason, .. } => {
                key(&Key::from(k.as_str()));
                Some(reason.clone())
            }
            Error::DigestMismatch {
                key: k,
                expected,
                actual,
                ..
            } => {
                key(k);
                Some(format!("{expected} {actual}"))
            }
            Error::Timeout { after, .. } => Some(after.as_millis().to_string()),
            Error::Refused { kind, .. } => Some(format!("{REFUSED_DETAIL}{kind}")),
            _ => None,
        };
        // Metadata values must be visible ASCII; details that are not are left to the message.
        if let Some(v) = detail
            .as_deref()
            .map(truncate)
            .filter(|d| d.is_ascii())
            .and_then(|d| MetadataValue::try_from(d).ok())
        {
            md.insert(DETAIL_METADATA, v);
        }
        Status::with_metadata(code, truncate(&e.to_string()), md)
    }
}

impl From<Status> for Error {
    fn from(s: Status) -> Self {
        let key = s
            .metadata()
            .get_bin(KEY_METADATA)
            .and_then(|v| v.to_bytes().ok())
            .and_then(|b| String::from_utf8(b.to_vec()).ok());
        let detail = s
            .metadata()
            .get(DETAIL_METADATA)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let message = s.message().to_owned();
        match s.code() {
            Code::NotFound => Error::NotFound {
                store: detail.unwrap_or_else(|| KIND.to_owned()),
                key: Key::from(key.unwrap_or_default()),
            },
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
                    reason: message,
                }
            }
            Code::Unauthenticated | Code::PermissionDenied => Error::Unauthorized { message },
            Code::ResourceExhausted => Error::LimitExceeded { message },
            Code::DeadlineExceeded => Error::Timeout {
                operation: format!("{KIND} call ({message})"),
                after: Duration::from_millis(
                    detail.and_then(|d| d.parse().ok()).unwrap_or_default(),
                ),
            },
            Code::Unimplemented => Error::Unsupported {
                connector: KIND.to_owned(),
                operation: message,
            },
            Code::InvalidArgument if key.is_some() => Error::InvalidKey {
                connector: KIND.to_owned(),
                key: key.unwrap_or_default(),
                reason: detail.unwrap_or(message),
            },
            Code::DataLoss if detail.is_some() => {
                let detail = detail.unwrap_or_default();
                let (expected, actual) = detail.split_once(' ').unwrap_or((&detail, ""));
                Error::DigestMismatch {
                    store: KIND.to_owned(),
                    key: Key::from(key.unwrap_or_default()),
                    expected: expected.to_owned(),
                    actual: actual.to_owned(),
                }
            }
            Code::AlreadyExists => Error::StoreExists { name: message },
            code => Error::Backend {
                connector: KIND.to_owned(),
                message: format!("{code:?}: {message}"),
                source: Some(Box::new(s)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(e: Error) -> Error {
        Error::from(Status::from(e))
    }

    #[test]
    fn errors_cross_the_wire_as_the_same_variant() {
        let e = round_trip(Error::NotFound {
            store: "memory".into(),
            key: Key::from("ключ"),
        });
        assert!(
            matches!(&e, Error::NotFound { store, key } if store == "memory" && key.as_str() == "ключ"),
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

        let e = round_trip(Error::backend(
            "redis",
            "get",
            std::io::Error::other("reset"),
        ));
        assert!(matches!(e, Error::Backend { .. }) && e.is_retryable());

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
