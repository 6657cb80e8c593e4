//! The ProxyStore gRPC store service.
