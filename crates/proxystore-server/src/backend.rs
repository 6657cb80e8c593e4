//! What the server keeps objects in: any [`Connector`]. The command line offers memory, a file
//! directory, Redis, S3 and any registered kind from a config file; an embedding program
//! passes any connector (a [`proxystore::connector::multi::MultiConnector`], a third-party
//! kind).
//!
//! Over shared storage (Redis, S3), several servers serve the same objects: a put through one
//! is read through any other. What a server keeps of its own is only bookkeeping, per replica:
//! the byte limit counts what this server stored, expiry is swept by the server that took the
//! put, and the digest of a `Get` header is known for objects this server stored (a proxy
//! checks the digest its reference carries in any case).
//!
//! The service streams objects through the connector's writer and reader
//! ([`proxystore::connector::stream`]): a put becomes visible only when its writer finishes,
//! and a put cut off part-way leaves nothing. Memory per transfer is a few chunks for a
//! connector that streams (file, gRPC), the object for one that stores whole objects.

use std::sync::Arc;

use proxystore::connector::file::{FileConfig, FileConnector};
use proxystore::connector::memory::MemoryConnector;
use proxystore::connector::stream::StoredObject;
use proxystore::connector::{ConnectorConfig, PutOptions};
use proxystore::{Connector, Error, Key, Result};

/// Longest key the server accepts, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// Which backend a server uses.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum BackendConfig {
    /// Objects in the server's memory (the default): a memory connector segment of the server's
    /// own. Bound it with [`crate::ServerConfig::max_total_bytes`].
    #[default]
    Memory,
    /// One file per object in a directory (created if missing), through `proxystore`'s
    /// `FileConnector`: uploads stream to a temporary file renamed into place on completion, so
    /// server memory per upload is a few chunks, whatever the object size. Each object's expiry
    /// time and digest are kept beside it and resumed after a restart.
    File {
        /// The directory.
        directory: std::path::PathBuf,
        /// `fsync` each object before it becomes visible.
        fsync: bool,
    },
    /// Any connector (Redis, S3, ...): the server fronts it. Objects stream through the
    /// connector's writer and reader; a connector that stores whole objects has them buffered
    /// one at a time.
    Connector(Arc<dyn Connector>),
    /// A connector built when the server starts from its config (the JSON a reference carries,
    /// `{"kind": "redis", "options": {...}}`), by [`proxystore::kinds::from_config`]: any kind
    /// registered in the process (those of `proxystore`'s enabled features, third-party kinds).
    /// Over shared storage, several servers serve the same objects (see the module docs).
    Config(ConnectorConfig),
}

impl std::fmt::Debug for BackendConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendConfig::Memory => f.write_str("Memory"),
            BackendConfig::File { directory, fsync } => f
                .debug_struct("File")
                .field("directory", directory)
                .field("fsync", fsync)
                .finish(),
            BackendConfig::Connector(c) => f.debug_tuple("Connector").field(c).finish(),
            // Its Debug redacts credentials.
            BackendConfig::Config(c) => f.debug_tuple("Config").field(c).finish(),
        }
    }
}

/// The connector behind the service, with what the service needs to know of it.
pub(crate) struct Backend {
    pub(crate) connector: Arc<dyn Connector>,
    /// Whether callers may choose keys (the connector takes deferred puts).
    pub(crate) caller_keys: bool,
    /// The objects it held when the server started, for the byte limit and expiry.
    pub(crate) existing: Vec<StoredObject>,
}

impl BackendConfig {
    /// Open the backend: build its connector, clean up after a crash when the server owns the
    /// storage (its directory), and list what it already holds.
    pub(crate) async fn open(&self) -> Result<Backend> {
        let connector: Arc<dyn Connector> = match self {
            BackendConfig::Memory => Arc::new(MemoryConnector::private()),
            BackendConfig::File { directory, fsync } => {
                let c = FileConnector::with_config(FileConfig {
                    directory: directory.clone(),
                    fsync: *fsync,
                })?;
                c.clean_up().await?;
                Arc::new(c)
            }
            BackendConfig::Connector(c) => c.clone(),
            BackendConfig::Config(c) => {
                let connector = proxystore::kinds::from_config(c)?;
                // A backend built from settings may be out of reach or misconfigured: say so
                // now rather than at the first client's call.
                connector
                    .exists(&Key::from("proxystore-server-probe"))
                    .await?;
                connector
            }
        };
        let caller_keys = connector.new_key(&PutOptions::default()).await.is_ok();
        let existing = connector.inventory().await?.unwrap_or_default();
        Ok(Backend {
            connector,
            caller_keys,
            existing,
        })
    }
}

/// The checks every key passes before it reaches the connector (which applies its own rules):
/// non-empty and at most [`MAX_KEY_BYTES`].
pub(crate) fn check_key_length(kind: &str, key: &str) -> Result<()> {
    let reason = if key.is_empty() {
        "empty key"
    } else if key.len() > MAX_KEY_BYTES {
        "longer than 1024 bytes"
    } else {
        return Ok(());
    };
    Err(Error::InvalidKey {
        connector: kind.to_owned(),
        key: key.to_owned(),
        reason: reason.into(),
    })
}
