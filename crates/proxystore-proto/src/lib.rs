//! Protobuf messages and gRPC stubs generated from `proto/proxystore_rs/v1`.
//!
//! - [`v1`]: `proxystore_rs.v1`: the store service ([`v1::store_service_client`],
//!   [`v1::store_service_server`]) and its messages, and the language-neutral proxy reference
//!   ([`v1::ProxyReference`]).
//! - the messages of streams of proxies ([`v1::StreamMessage`]), published on message brokers.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for server reflection.
//! - [`codec`]: the codec of the generated client and server, and [`splice`]: the HTTP body
//!   that sends the large chunks of `Get` answers and `Put` requests from their own bytes.
//!
//! Byte fields are [`bytes::Bytes`], so chunks move from the socket to the caller without
//! copying. This crate depends only on `prost` and `tonic` (and `http-body`, which tonic
//! builds on); the ProxyStore core builds on it (feature `grpc`), never the other way round.

pub mod codec;
pub mod splice;

/// Package `proxystore_rs.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/proxystore_rs.v1.rs"));
}

/// The encoded `FileDescriptorSet` of `proxystore_rs/v1/*.proto`, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/proxystore_v1_descriptor.bin"));

/// Fully qualified name of the store service, as used by health checks and reflection.
pub const STORE_SERVICE_NAME: &str = "proxystore_rs.v1.StoreService";
