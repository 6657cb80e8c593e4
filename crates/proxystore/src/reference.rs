//! The proxy reference: everything a process needs to fetch an object again.
//!
//! The wire contract is `proto/proxystore_rs/v1/proxy.proto`; [`Reference::to_bytes`] writes that
//! protobuf message, so any language can read it and an older reader skips fields it does not
//! know. The serde form mirrors the same fields for JSON and other self-describing codecs.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::connector::ConnectorConfig;
use crate::digest::{Digest, DigestAlgorithm};
use crate::error::{Error, Result};
use crate::key::Key;

/// Highest reference format version this build reads and the one it writes.
pub const FORMAT_VERSION: u32 = 1;

/// A serializable reference to one stored object.
///
/// ```
/// use proxystore::{Reference, Key, Codec, connector::ConnectorConfig};
/// let r = Reference::new(
///     "my-store",
///     ConnectorConfig::new("file", serde_json::json!({"directory": "/data/ps"})),
///     Key::random(),
/// );
/// let bytes = r.to_bytes();
/// assert!(bytes.len() < 256);
/// assert_eq!(Reference::from_bytes(&bytes).unwrap(), r);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
#[non_exhaustive]
pub struct Reference {
    /// Format version of this reference ([`FORMAT_VERSION`]).
    pub version: u32,
    /// Name of the store that holds the object.
    pub store: String,
    /// How to rebuild the store's connector in a process that does not have it.
    pub connector: ConnectorConfig,
    /// The object's key in that connector.
    pub key: Key,
    /// Size of the stored (encoded) bytes; 0 when unknown.
    #[serde(default)]
    pub size: u64,
    /// Digest of the stored bytes, checked on resolve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// How the bytes decode into the object.
    #[serde(default)]
    pub codec: Codec,
    /// Rust type name of the target (informational).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub type_name: String,
    /// Evict the object from the store once it is resolved.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub evict_on_resolve: bool,
    /// W3C `traceparent` of the span that created the proxy (empty when tracing is off).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub traceparent: String,
    /// W3C `tracestate` accompanying `traceparent`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tracestate: String,
    /// What made the object, for messages: the name it was put under
    /// ([`crate::PutOptions::name`]), such as `map/return` for the result of task `map` or
    /// `map/samples` for an argument the policy proxied. Informational, at most
    /// [`MAX_ORIGIN_BYTES`]; empty when the object was not named.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
    /// Set when the reference is a distributed future's ([`crate::future`]): the object may
    /// not exist yet, and resolving waits for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub future: Option<FutureInfo>,
}

/// How a consumer waits for a future's object (the `future` field of a [`Reference`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FutureInfo {
    /// How long a resolve waits by default, in milliseconds; 0 waits until the future
    /// completes or its producer is gone.
    #[serde(default)]
    pub timeout_ms: u64,
    /// How often the producer proves it is alive, in milliseconds; 0 when it does not (a
    /// consumer then waits for the value, an error, or its timeout).
    #[serde(default)]
    pub heartbeat_ms: u64,
    /// The key of the producer's heartbeat object, in the same store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_key: Option<Key>,
}

/// The longest [`Reference::origin`] a reference may carry, in bytes (longer names are cut
/// when a reference is made, and refused when one is read).
pub const MAX_ORIGIN_BYTES: usize = 256;

impl Reference {
    /// A reference with the current version and no size, digest or flags.
    pub fn new(store: impl Into<String>, connector: ConnectorConfig, key: Key) -> Self {
        Reference {
            version: FORMAT_VERSION,
            store: store.into(),
            connector,
            key,
            size: 0,
            digest: None,
            codec: Codec::default(),
            type_name: String::new(),
            evict_on_resolve: false,
            traceparent: String::new(),
            tracestate: String::new(),
            origin: String::new(),
            future: None,
        }
    }

    /// Set [`Reference::origin`] to `name`, cut to [`MAX_ORIGIN_BYTES`] at a character
    /// boundary.
    pub fn set_origin(&mut self, name: &str) {
        let mut end = name.len().min(MAX_ORIGIN_BYTES);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        self.origin = name[..end].to_owned();
    }

    /// Encode as the `proxystore_rs.v1.ProxyReference` protobuf message.
    pub fn to_bytes(&self) -> Bytes {
        use prost::Message;
        Bytes::from(pb::ProxyReference::from(self).encode_to_vec())
    }

    /// Decode a `proxystore_rs.v1.ProxyReference` protobuf message.
    ///
    /// # Errors
    /// [`Error::InvalidReference`] for corrupt or truncated bytes or missing fields,
    /// [`Error::UnsupportedVersion`] for a newer format.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        use prost::Message;
        let m = pb::ProxyReference::decode(bytes).map_err(|e| Error::InvalidReference {
            reason: format!("not a protobuf ProxyReference ({} bytes): {e}", bytes.len()),
        })?;
        Reference::try_from(m)
    }

    /// Encode as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Decode from JSON, checking the version.
    ///
    /// # Errors
    /// As for [`Reference::from_bytes`].
    pub fn from_json(json: &str) -> Result<Self> {
        let r: Reference = serde_json::from_str(json).map_err(|e| Error::InvalidReference {
            reason: format!("not a JSON reference: {e}"),
        })?;
        r.check()
    }

    /// Check the fields a resolve depends on.
    ///
    /// # Errors
    /// As for [`Reference::from_bytes`].
    pub fn check(self) -> Result<Self> {
        if self.version == 0 {
            return Err(Error::InvalidReference {
                reason: "format version is missing".into(),
            });
        }
        if self.version > FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                found: self.version,
                supported: FORMAT_VERSION,
            });
        }
        if self.store.is_empty() || self.connector.kind().is_empty() {
            return Err(Error::InvalidReference {
                reason: "store name or connector kind is missing".into(),
            });
        }
        if self.origin.len() > MAX_ORIGIN_BYTES {
            return Err(Error::InvalidReference {
                reason: format!(
                    "its origin is {} bytes, longer than {MAX_ORIGIN_BYTES}",
                    self.origin.len()
                ),
            });
        }
        Ok(self)
    }
}

// Readable formats (JSON) get the fields; binary formats (postcard, MessagePack, bincode) get the
// protobuf bytes, which stay readable when later versions add fields.
impl Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            Reference::serialize(self, s)
        } else {
            s.serialize_bytes(&self.to_bytes())
        }
    }
}

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let r = if d.is_human_readable() {
            Reference::deserialize(d)?
        } else {
            let b = Bytes::deserialize(d)?;
            Reference::from_bytes(&b).map_err(serde::de::Error::custom)?
        };
        r.check().map_err(serde::de::Error::custom)
    }
}

/// Protobuf messages of `proto/proxystore_rs/v1/proxy.proto`, written by hand with `prost` derives
/// so that the core needs no protoc; `proxystore-proto` checks them against the .proto file.
pub(crate) mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct ProxyReference {
        #[prost(uint32, tag = "1")]
        pub(crate) version: u32,
        #[prost(string, tag = "2")]
        pub(crate) store: String,
        #[prost(message, optional, tag = "3")]
        pub(crate) connector: Option<ConnectorConfig>,
        #[prost(string, tag = "4")]
        pub(crate) key: String,
        #[prost(uint64, tag = "5")]
        pub(crate) size: u64,
        #[prost(message, optional, tag = "6")]
        pub(crate) digest: Option<Digest>,
        #[prost(string, tag = "7")]
        pub(crate) codec: String,
        #[prost(string, tag = "8")]
        pub(crate) type_name: String,
        #[prost(bool, tag = "9")]
        pub(crate) evict_on_resolve: bool,
        #[prost(string, tag = "10")]
        pub(crate) traceparent: String,
        #[prost(string, tag = "11")]
        pub(crate) tracestate: String,
        #[prost(string, tag = "12")]
        pub(crate) origin: String,
        #[prost(message, optional, tag = "13")]
        pub(crate) future: Option<Future>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Future {
        #[prost(uint64, tag = "1")]
        pub(crate) timeout_ms: u64,
        #[prost(uint64, tag = "2")]
        pub(crate) heartbeat_ms: u64,
        #[prost(string, tag = "3")]
        pub(crate) heartbeat_key: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct ConnectorConfig {
        #[prost(string, tag = "1")]
        pub(crate) kind: String,
        #[prost(string, tag = "2")]
        pub(crate) options_json: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Digest {
        #[prost(string, tag = "1")]
        pub(crate) algorithm: String,
        #[prost(bytes = "vec", tag = "2")]
        pub(crate) value: Vec<u8>,
    }
}

impl From<&Reference> for pb::ProxyReference {
    fn from(r: &Reference) -> Self {
        pb::ProxyReference {
            version: r.version,
            store: r.store.clone(),
            connector: Some(pb::ConnectorConfig {
                kind: r.connector.kind().to_owned(),
                options_json: r.connector.options_json().to_owned(),
            }),
            key: r.key.to_string(),
            size: r.size,
            digest: r.digest.map(|d| pb::Digest {
                algorithm: d.algorithm().as_str().to_owned(),
                value: d.to_bytes(),
            }),
            codec: r.codec.as_str().to_owned(),
            type_name: r.type_name.clone(),
            evict_on_resolve: r.evict_on_resolve,
            traceparent: r.traceparent.clone(),
            tracestate: r.tracestate.clone(),
            origin: r.origin.clone(),
            future: r.future.as_ref().map(|f| pb::Future {
                timeout_ms: f.timeout_ms,
                heartbeat_ms: f.heartbeat_ms,
                heartbeat_key: f
                    .heartbeat_key
                    .as_ref()
                    .map(Key::to_string)
                    .unwrap_or_default(),
            }),
        }
    }
}

impl TryFrom<pb::ProxyReference> for Reference {
    type Error = Error;
    fn try_from(m: pb::ProxyReference) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidReference { reason };
        let connector = m
            .connector
            .ok_or_else(|| invalid("connector config is missing".into()))?;
        let connector = ConnectorConfig::from_json_options(connector.kind, &connector.options_json)
            .map_err(|e| invalid(e.to_string()))?;
        let digest = match m.digest {
            None => None,
            Some(d) => {
                let digest = d
                    .algorithm
                    .parse()
                    .and_then(|alg: DigestAlgorithm| Digest::from_parts(alg, &d.value));
                match digest {
                    Ok(d) => d,
                    Err(Error::InvalidDigest { reason }) => {
                        return Err(invalid(format!("its digest is invalid: {reason}")));
                    }
                    Err(e) => return Err(invalid(e.to_string())),
                }
            }
        };
        let codec = if m.codec.is_empty() {
            Codec::default()
        } else {
            m.codec.parse().map_err(|e: Error| invalid(e.to_string()))?
        };
        Reference {
            version: m.version,
            store: m.store,
            connector,
            key: Key::from(m.key),
            size: m.size,
            digest,
            codec,
            type_name: m.type_name,
            evict_on_resolve: m.evict_on_resolve,
            traceparent: m.traceparent,
            tracestate: m.tracestate,
            origin: m.origin,
            future: m.future.map(|f| FutureInfo {
                timeout_ms: f.timeout_ms,
                heartbeat_ms: f.heartbeat_ms,
                heartbeat_key: (!f.heartbeat_key.is_empty()).then(|| Key::from(f.heartbeat_key)),
            }),
        }
        .check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Reference {
        let mut r = Reference::new(
            "my-store",
            ConnectorConfig::new(
                "file",
                serde_json::json!({"directory": "/tmp/.tmpAbCdEf/objects"}),
            ),
            Key::from("3f1c2a9e-8d7b-4c6a-9e5f-0a1b2c3d4e5f"),
        );
        r.size = 1 << 20;
        r.digest = DigestAlgorithm::Xxh3.digest(b"x");
        r.type_name = "alloc::vec::Vec<f64>".into();
        r.set_origin("map/return");
        r
    }

    #[test]
    fn round_trips_protobuf_json_postcard_msgpack() {
        let r = sample();
        let b = r.to_bytes();
        assert!(b.len() < 256, "{} bytes", b.len());
        assert_eq!(Reference::from_bytes(&b).unwrap(), r);
        assert_eq!(Reference::from_json(&r.to_json()).unwrap(), r);
        let p = postcard::to_stdvec(&r).unwrap();
        assert_eq!(postcard::from_bytes::<Reference>(&p).unwrap(), r);
        let m = rmp_serde::to_vec_named(&r).unwrap();
        assert_eq!(rmp_serde::from_slice::<Reference>(&m).unwrap(), r);
    }

    #[test]
    fn corrupt_truncated_and_future_references_are_typed_errors() {
        let b = sample().to_bytes();
        for cut in [1, b.len() / 2, b.len() - 1] {
            assert!(matches!(
                Reference::from_bytes(&b[..cut]),
                Err(Error::InvalidReference { .. })
            ));
        }
        assert!(Reference::from_bytes(b"").is_err());
        assert!(Reference::from_bytes(&[0xff; 40]).is_err());
        let mut flipped = b.to_vec();
        flipped[3] ^= 0xff;
        let _ = Reference::from_bytes(&flipped); // any outcome but a panic
        let mut future = sample();
        future.version = FORMAT_VERSION + 1;
        assert!(matches!(
            Reference::from_bytes(&future.to_bytes()),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
        assert!(Reference::from_json("{\"version\": 1}").is_err());
    }

    #[test]
    fn a_digest_of_the_wrong_length_is_an_invalid_reference_that_says_so() {
        use prost::Message;
        let mut m = pb::ProxyReference::decode(sample().to_bytes()).unwrap();
        if let Some(d) = m.digest.as_mut() {
            d.value = vec![1, 2, 3];
        }
        let e = Reference::from_bytes(&m.encode_to_vec()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid proxy reference: its digest is invalid: a xxh3 digest of 3 bytes \
             (xxh3 digests are 8 bytes)"
        );
        let json = sample().to_json().replace("xxh3:", "xxh3:00");
        let e = Reference::from_json(&json).unwrap_err();
        assert!(matches!(&e, Error::InvalidReference { .. }), "{e:?}");
        assert!(e.to_string().contains("(xxh3 digests are 8 bytes)"), "{e}");
    }

    #[test]
    fn an_origin_is_cut_when_made_and_refused_when_too_long() {
        let mut r = sample();
        let long = "é".repeat(MAX_ORIGIN_BYTES); // 2 bytes each
        r.set_origin(&long);
        assert_eq!(r.origin.len(), MAX_ORIGIN_BYTES);
        assert_eq!(Reference::from_bytes(&r.to_bytes()).unwrap(), r);
        r.set_origin("a");
        r.origin.push_str(&long);
        let e = Reference::from_bytes(&r.to_bytes()).unwrap_err();
        assert!(e.to_string().contains("its origin is 513 bytes"), "{e}");
        assert!(Reference::from_json(&r.to_json()).is_err());
    }

    #[test]
    fn unknown_fields_are_ignored() {
        use prost::Message;
        let mut buf = sample().to_bytes().to_vec();
        // Field 99, length-delimited, as a newer writer might add.
        prost::encoding::string::encode(99, &"from the future".to_owned(), &mut buf);
        assert_eq!(Reference::from_bytes(&buf).unwrap(), sample());
        let mut json: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        json["new_field"] = serde_json::json!({"a": 1});
        assert_eq!(Reference::from_json(&json.to_string()).unwrap(), sample());
        let _ = pb::ProxyReference::default().encoded_len();
    }
}
