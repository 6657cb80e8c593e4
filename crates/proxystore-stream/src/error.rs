//! Errors of streams.

/// What can go wrong in a stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The message broker failed.
    #[error("{broker} broker: {message}")]
    Broker {
        /// The broker's kind (`memory`, `redis-streams`, ...).
        broker: String,
        /// What failed.
        message: String,
        /// The broker client's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
        /// Whether a later try may succeed (a lost connection, a broker restarting).
        temporary: bool,
    },
    /// The store of an object failed (put, get, evict), or a reference was refused.
    #[error(transparent)]
    Store(#[from] proxystore::Error),
    /// A topic without a store: give one with `StreamProducer::topic_store` or a default.
    #[error(
        "topic '{topic}' has no store (give one with StreamProducer::with_store or topic_store)"
    )]
    NoStore {
        /// The topic.
        topic: String,
    },
    /// `send` on a topic this producer closed.
    #[error("topic '{topic}' was closed by this producer")]
    Closed {
        /// The topic.
        topic: String,
    },
}

impl StreamError {
    /// A broker failure.
    pub fn broker(
        broker: &str,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
        temporary: bool,
    ) -> Self {
        StreamError::Broker {
            broker: broker.to_owned(),
            message: message.into(),
            source: Some(Box::new(source)),
            temporary,
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            StreamError::Broker { temporary, .. } => *temporary,
            StreamError::Store(e) => e.is_retryable(),
            StreamError::NoStore { .. } | StreamError::Closed { .. } => false,
        }
    }
}

/// Results of streams.
pub type Result<T, E = StreamError> = std::result::Result<T, E>;
