//! The failure a task gets when its arguments cannot be resolved.

/// A task's arguments could not be resolved in the worker.
///
/// apalis records its message as the task's result. A [`proxystore_middleware::Error::Store`]
/// cause (store unreachable, object missing or corrupt) fails the attempt, and apalis runs the
/// task again later; any other cause (a document that cannot be decoded) kills the task.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve the arguments of task {}: {source}", .task_id.as_deref().unwrap_or("(no id)"))]
pub struct ResolveError {
    task_id: Option<String>,
    #[source]
    source: proxystore_middleware::Error,
}

impl ResolveError {
    /// A failure of task `task_id`.
    pub fn new(task_id: Option<String>, source: proxystore_middleware::Error) -> Self {
        ResolveError { task_id, source }
    }

    /// The task's id, when the backend gave it one.
    pub fn task_id(&self) -> Option<&str> {
        self.task_id.as_deref()
    }

    /// What went wrong.
    pub fn cause(&self) -> &proxystore_middleware::Error {
        &self.source
    }

    /// Whether another attempt may succeed: the store failed, not the document.
    pub fn is_retryable(&self) -> bool {
        matches!(self.source, proxystore_middleware::Error::Store(_))
    }
}
