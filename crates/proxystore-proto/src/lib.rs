//! Protobuf and gRPC code generated from `proto/proxystore/v1`.
