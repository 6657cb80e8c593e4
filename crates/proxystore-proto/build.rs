//! Generates the protobuf messages and the gRPC client and server of `proto/proxystore_rs/v1`.
//!
//! protoc comes from `protoc-bin-vendored`, so a fresh machine needs no system protoc.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest.join("../../proto");
    let protos = [
        root.join("proxystore_rs/v1/proxy.proto"),
        root.join("proxystore_rs/v1/store.proto"),
        root.join("proxystore_rs/v1/stream.proto"),
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        // Channels are built by the connector with tuned HTTP/2 settings, not by `connect`.
        .build_transport(false)
        // `bytes::Bytes` fields: chunks are sliced out of the receive buffer without copying.
        .bytes(".")
        // Requests that do not decode are INVALID_ARGUMENT, as the service documents.
        .codec_path("crate::codec::ProtoCodec")
        .file_descriptor_set_path(out.join("proxystore_v1_descriptor.bin"))
        .compile_with_config(config, &protos, &[root])?;
    Ok(())
}
