//! The failure a task gets when its arguments cannot be resolved.

/// A task's arguments could not be resolved in the worker.
///
/// apalis records its message as the task's result. A [`proxystore_middleware::MiddlewareError::Store`]
/// cause (store unreachable, object missing or corrupt) fails the attempt, and apalis runs the
/// task again later; any other cause (a document that cannot be decoded, a reference refused by
/// the resolve policy) kills the task.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve the arguments of task {}: {source}", .task_id.as_deref().unwrap_or("(no id)"))]
pub struct ResolveError {
    task_id: Option<String>,
    #[source]
    source: proxystore_middleware::MiddlewareError,
}

impl ResolveError {
    /// A failure of task `task_id`.
    pub fn new(task_id: Option<String>, source: proxystore_middleware::MiddlewareError) -> Self {
        ResolveError { task_id, source }
    }

    /// The task's id, when the backend gave it one.
    pub fn task_id(&self) -> Option<&str> {
        self.task_id.as_deref()
    }

    /// What went wrong.
    pub fn cause(&self) -> &proxystore_middleware::MiddlewareError {
        &self.source
    }

    /// Whether another attempt may succeed: the store failed, not the document. A reference
    /// refused by the resolve policy is refused again on every attempt.
    pub fn is_retryable(&self) -> bool {
        matches!(
            &self.source,
            proxystore_middleware::MiddlewareError::Store(e) if !matches!(e, proxystore::Error::Refused { .. })
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_references_are_not_retried() {
        let store = |e| ResolveError::new(None, proxystore_middleware::MiddlewareError::Store(e));
        assert!(
            store(proxystore::Error::not_found(
                "s",
                proxystore::Key::from("k")
            ))
            .is_retryable()
        );
        assert!(
            !store(proxystore::Error::Refused {
                store: "s".into(),
                kind: "file".into(),
                reason: "directory /etc is outside the allowed directories".into(),
            })
            .is_retryable()
        );
    }
}
