//! Connector kinds: building a connector from its [`ConnectorConfig`] in any process.
//!
//! A reference carries its connector's config; the process that resolves it looks the config's
//! kind up here and builds the connector. The built-in kinds are registered from the start
//! (those of the enabled features); third parties add theirs with [`register_connector_kind`].

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

use crate::connector::{Connector, ConnectorConfig, file, memory, multi};
use crate::error::{Error, Result};

/// Builds a connector of one kind from its config.
pub type ConnectorBuilder = fn(&ConnectorConfig) -> Result<Arc<dyn Connector>>;

fn kinds() -> &'static RwLock<BTreeMap<String, ConnectorBuilder>> {
    static KINDS: OnceLock<RwLock<BTreeMap<String, ConnectorBuilder>>> = OnceLock::new();
    KINDS.get_or_init(|| {
        let mut m: BTreeMap<String, ConnectorBuilder> = BTreeMap::new();
        m.insert(memory::KIND.into(), memory::MemoryConnector::from_config);
        m.insert(file::KIND.into(), file::FileConnector::from_config);
        #[cfg(feature = "grpc")]
        m.insert(
            crate::connector::grpc::KIND.into(),
            crate::connector::grpc::GrpcConnector::from_config,
        );
        #[cfg(feature = "globus")]
        m.insert(
            crate::connector::globus::KIND.into(),
            crate::connector::globus::GlobusConnector::from_config,
        );
        m.insert(multi::KIND.into(), build_multi);
        #[cfg(feature = "redis")]
        m.insert(
            crate::connector::redis::KIND.into(),
            crate::connector::redis::RedisConnector::from_config,
        );
        #[cfg(feature = "s3")]
        m.insert(
            crate::connector::s3::KIND.into(),
            crate::connector::s3::S3Connector::from_config,
        );
        RwLock::new(m)
    })
}

/// A `multi` connector, its routes built by the kinds of this process.
fn build_multi(config: &ConnectorConfig) -> Result<Arc<dyn Connector>> {
    Ok(Arc::new(multi::MultiConnector::with_config(
        config.options()?,
        from_config,
    )?))
}

/// Register (or replace) the builder of a connector kind in this process, so that proxies whose
/// reference names this kind can be resolved here.
///
/// ```
/// use std::sync::Arc;
/// use proxystore::connector::{Connector, ConnectorConfig};
/// use proxystore::kinds::register_connector_kind;
/// use proxystore::connector::memory::MemoryConnector;
///
/// fn build(config: &ConnectorConfig) -> proxystore::Result<Arc<dyn Connector>> {
///     // A real third-party kind would parse `config.options` into its own settings.
///     let segment: String = config.options::<String>()?;
///     Ok(Arc::new(MemoryConnector::new(&segment)))
/// }
/// register_connector_kind("my-kind", build);
/// let c = proxystore::kinds::from_config(&ConnectorConfig::new("my-kind", "seg".into())).unwrap();
/// assert_eq!(c.kind(), "memory");
/// ```
pub fn register_connector_kind(kind: impl Into<String>, builder: ConnectorBuilder) {
    let mut kinds = kinds().write().unwrap_or_else(|e| e.into_inner());
    kinds.insert(kind.into(), builder);
}

/// Kinds that can be rebuilt in this process.
pub fn registered_connector_kinds() -> Vec<String> {
    let kinds = kinds().read().unwrap_or_else(|e| e.into_inner());
    kinds.keys().cloned().collect()
}

/// Build a connector from its config, looking its kind up among the registered kinds.
///
/// This builds whatever it is given. A config that came from elsewhere (a reference, a
/// message) should pass [`crate::ResolvePolicy::check_connector`] first, as proxies do.
///
/// # Errors
/// [`Error::UnknownConnectorKind`] when the kind is not registered (for example a feature is
/// off), or the kind's own [`Error::Config`].
pub fn from_config(config: &ConnectorConfig) -> Result<Arc<dyn Connector>> {
    let builder = {
        let kinds = kinds().read().unwrap_or_else(|e| e.into_inner());
        kinds.get(config.kind()).copied()
    };
    match builder {
        Some(build) => build(config),
        None => Err(Error::UnknownConnectorKind {
            kind: config.kind().to_owned(),
            registered: registered_connector_kinds().join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kind_is_typed() {
        let e = from_config(&ConnectorConfig::new("nope", serde_json::Value::Null)).unwrap_err();
        assert!(matches!(e, Error::UnknownConnectorKind { ref kind, .. } if kind == "nope"));
        assert!(e.to_string().contains("memory"));
    }
}
