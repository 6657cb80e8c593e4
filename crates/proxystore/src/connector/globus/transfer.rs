//! Globus Transfer tasks: the transfer and delete documents a connector submits, what it knows
//! of each task's status, and the wait for a key's tasks within one deadline.

use std::time::Duration;

use serde_json::{Value, json};

use super::api::{ApiError, Deadline, Method};
use super::config::GlobusEndpoint;
use super::key::{GlobusKey, is_task_id};
use super::{Inner, KIND};
use crate::error::{Error, Result};

/// Task ids kept in the status cache before it is cleared.
const TASK_CACHE_LIMIT: usize = 65_536;

/// What is known of a Transfer task: its endpoints (from its document, or as submitted) and
/// status.
#[derive(Clone, Debug)]
pub(super) struct TaskInfo {
    source: Option<String>,
    destination: Option<String>,
    status: TaskStatus,
}

/// The status of a task.
#[derive(Clone, Debug, PartialEq, Eq)]
enum TaskStatus {
    /// ACTIVE, INACTIVE, or a status this client does not know (waited on like ACTIVE).
    Running(String),
    Succeeded,
    /// FAILED, with Globus' `fatal_error` code and description.
    Failed(String),
}

impl TaskStatus {
    fn is_terminal(&self) -> bool {
        !matches!(self, TaskStatus::Running(_))
    }
}

/// How waiting on a key's tasks ended.
pub(super) enum Waited {
    /// Every task that matters has SUCCEEDED (or none matters).
    Ready,
    /// A task that matters FAILED.
    Failed { task: String, detail: String },
    /// The API does not know a task of the key: not a key of this deployment.
    UnknownTask,
}

/// Which of a key's tasks an operation waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum WaitFor {
    /// Those that write into the local endpoint (reads).
    Incoming,
    /// All of them, to their end whatever it is (before deleting).
    All,
}

impl Inner {
    /// Submit a transfer or delete document; its task id.
    async fn submit(&self, path: &str, mut document: Value, what: &str) -> Result<String> {
        let mut deadline = Deadline::new(&self.config);
        let id = self
            .call_retrying(&Method::Get, "/submission_id", &mut deadline)
            .await;
        document["submission_id"] = Value::String(submission_id(id)?);
        // Resubmitting with the same submission id cannot create a second task.
        let result = self
            .call_retrying(&Method::Post(document), path, &mut deadline)
            .await;
        submitted_task(result, what)
    }

    /// Submit one transfer of `names` from the local endpoint to `dst`.
    pub(super) async fn submit_transfer(
        &self,
        dst: &GlobusEndpoint,
        names: &[String],
    ) -> Result<String> {
        let src = self.local()?;
        let items: Vec<Value> = names
            .iter()
            .map(|n| {
                json!({
                    "DATA_TYPE": "transfer_item",
                    "source_path": src.globus_path(n),
                    "destination_path": dst.globus_path(n),
                })
            })
            .collect();
        let document = json!({
            "DATA_TYPE": "transfer",
            "source_endpoint": src.uuid,
            "destination_endpoint": dst.uuid,
            "label": label("put", names),
            "notify_on_succeeded": false,
            "notify_on_failed": false,
            "notify_on_inactive": false,
            "DATA": items,
        });
        let task = self
            .submit("/transfer", document, &format!("transfer to {}", dst.uuid))
            .await?;
        self.remember(
            &task,
            TaskInfo {
                source: Some(src.uuid.clone()),
                destination: Some(dst.uuid.clone()),
                status: TaskStatus::Running("ACTIVE".into()),
            },
        );
        Ok(task)
    }

    /// Submit one delete of `names` on `ep`.
    pub(super) async fn submit_delete(
        &self,
        ep: &GlobusEndpoint,
        names: &[String],
    ) -> Result<String> {
        let items: Vec<Value> = names
            .iter()
            .map(|n| json!({"DATA_TYPE": "delete_item", "path": ep.globus_path(n)}))
            .collect();
        let document = json!({
            "DATA_TYPE": "delete",
            "endpoint": ep.uuid,
            "ignore_missing": true,
            "label": label("evict", names),
            "notify_on_succeeded": false,
            "notify_on_failed": false,
            "notify_on_inactive": false,
            "DATA": items,
        });
        self.submit("/delete", document, &format!("delete on {}", ep.uuid))
            .await
    }

    fn remember(&self, task: &str, info: TaskInfo) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if tasks.len() >= TASK_CACHE_LIMIT {
            tasks.clear();
        }
        tasks.insert(task.to_owned(), info);
    }

    fn known(&self, task: &str) -> Option<TaskInfo> {
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.get(task).cloned()
    }

    /// The task's document from the API; `None` when the API does not know the id.
    async fn fetch_task(
        &self,
        task: &str,
        deadline: &mut Deadline,
    ) -> Result<Option<TaskInfo>, ApiError> {
        let answer = self
            .call_retrying(&Method::Get, &format!("/task/{task}"), deadline)
            .await;
        let info = task_info(answer)?;
        if let Some(i) = info.as_ref().filter(|i| i.status.is_terminal()) {
            self.remember(task, i.clone());
        }
        Ok(info)
    }

    /// Wait for the key's tasks that `which` selects to end, within one deadline.
    pub(super) async fn wait(&self, key: &GlobusKey, which: WaitFor) -> Result<Waited> {
        let local = self.local()?.uuid.clone();
        let mut deadline = Deadline::new(&self.config);
        for task in &key.tasks {
            let mut info = self.known(task);
            loop {
                if let Some(i) = &info {
                    if which == WaitFor::Incoming {
                        // The local copy predates a task that leaves this endpoint, and tasks
                        // between two other endpoints do not touch it.
                        let incoming = i.destination.as_deref() == Some(local.as_str())
                            && i.source.as_deref() != Some(local.as_str());
                        if !incoming {
                            break;
                        }
                    }
                    match &i.status {
                        TaskStatus::Succeeded => break,
                        TaskStatus::Failed(detail) if which == WaitFor::Incoming => {
                            return Ok(Waited::Failed {
                                task: task.clone(),
                                detail: detail.clone(),
                            });
                        }
                        TaskStatus::Failed(_) => break,
                        TaskStatus::Running(status) => {
                            // The first look at a task needs no sleep.
                            if !deadline.backoff().await {
                                return Err(Error::Timeout {
                                    operation: format!(
                                        "waiting for Globus task {task} (still {status})"
                                    ),
                                    after: Duration::from_millis(self.config.timeout_ms),
                                });
                            }
                        }
                    }
                }
                match self.fetch_task(task, &mut deadline).await {
                    Ok(Some(i)) => info = Some(i),
                    Ok(None) => return Ok(Waited::UnknownTask),
                    Err(e) => {
                        let running = match &info {
                            Some(TaskInfo {
                                status: TaskStatus::Running(status),
                                ..
                            }) => Some(status),
                            _ => None,
                        };
                        // The deadline ran out during a status poll of a task last seen running
                        // (the poll was cut by it): the wait timed out. An API that cannot be
                        // reached stays a backend error.
                        if let (ApiError::Transient(message, Some(source)), Some(status)) =
                            (&e, running)
                            && source
                                .downcast_ref::<reqwest::Error>()
                                .is_some_and(reqwest::Error::is_timeout)
                            && deadline.remaining().is_zero()
                        {
                            return Err(Error::Timeout {
                                operation: format!(
                                    "waiting for Globus task {task} (still {status}; last poll: {message})"
                                ),
                                after: Duration::from_millis(self.config.timeout_ms),
                            });
                        }
                        return Err(e.into_error(&format!("status of task {task}")));
                    }
                }
            }
        }
        Ok(Waited::Ready)
    }
}

fn label(op: &str, names: &[String]) -> String {
    match names {
        [one] => format!("ProxyStore {op} {one}"),
        many => format!("ProxyStore {op} of {} objects", many.len()),
    }
}

/// The submission id in the answer to `GET /submission_id`.
pub(super) fn submission_id(answer: Result<Value, ApiError>) -> Result<String> {
    let doc = answer.map_err(|e| e.into_error("get a submission id"))?;
    match doc.get("value").and_then(Value::as_str) {
        Some(id) => Ok(id.to_owned()),
        None => Err(Error::Backend {
            connector: KIND.into(),
            message: "GET /submission_id answer has no `value`".into(),
            source: None,
            temporary: false,
        }),
    }
}

/// The task id in the answer to a transfer or delete submission (`what`); only ids that can
/// go into a URL path unescaped.
pub(super) fn submitted_task(answer: Result<Value, ApiError>, what: &str) -> Result<String> {
    let doc = answer.map_err(|e| e.into_error(what))?;
    match doc.get("task_id").and_then(Value::as_str) {
        Some(t) if is_task_id(t) => Ok(t.to_owned()),
        other => Err(Error::Backend {
            connector: KIND.into(),
            message: format!("{what}: answer has no usable task_id ({other:?})"),
            source: None,
            temporary: false,
        }),
    }
}

/// The task in the answer to `GET /task/{id}`; `None` when the API does not know the id.
pub(super) fn task_info(answer: Result<Value, ApiError>) -> Result<Option<TaskInfo>, ApiError> {
    let doc = match answer {
        Ok(doc) => doc,
        Err(ApiError::Rejected {
            status: 400 | 404, ..
        }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let field = |name: &str| doc.get(name).and_then(Value::as_str).map(str::to_owned);
    let status = match field("status").as_deref() {
        Some("SUCCEEDED") => TaskStatus::Succeeded,
        Some("FAILED") => {
            let fatal = doc.get("fatal_error");
            let part = |n: &str| fatal.and_then(|f| f.get(n)).and_then(Value::as_str);
            TaskStatus::Failed(match (part("code"), part("description")) {
                (Some(c), Some(d)) => format!("{c}: {d}"),
                (Some(c), None) => c.to_owned(),
                (None, Some(d)) => d.to_owned(),
                (None, None) => "no fatal_error given".into(),
            })
        }
        Some(other) => TaskStatus::Running(other.to_owned()),
        None => TaskStatus::Running("<no status>".into()),
    };
    Ok(Some(TaskInfo {
        source: field("source_endpoint_id"),
        destination: field("destination_endpoint_id"),
        status,
    }))
}

/// Not part of the API (hidden from the docs; may change at any time).
///
/// The parsers the connector applies to the Transfer API's answers are private and sit behind
/// HTTP calls; this hook runs one answer through each of them, without a network, for the
/// fuzz target `globus_responses` in `fuzz/` and its corpus replay test.
#[doc(hidden)]
pub mod __fuzzing {
    use super::{submission_id, submitted_task, task_info};
    use crate::connector::globus::api::answer;
    use crate::error::Result;

    /// What the connector makes of one answer, taken as the answer to each of its calls.
    #[derive(Debug)]
    pub struct Parsed {
        /// As the answer to `GET /submission_id`: the submission id.
        pub submission_id: Result<String>,
        /// As the answer to `POST /transfer` or `POST /delete`: the task id.
        pub task_id: Result<String>,
        /// As the answer to `GET /task/{id}`: the task as the connector sees it (its `Debug`
        /// form), `None` when the API does not know it, or the error (before retries).
        pub task: Result<Option<String>>,
    }

    /// Run the answer (HTTP `status`, `body`) through every parser.
    pub fn parse(status: u16, body: &[u8]) -> Parsed {
        Parsed {
            submission_id: submission_id(answer(status, body)),
            task_id: submitted_task(answer(status, body), "submit"),
            task: task_info(answer(status, body))
                .map(|t| t.map(|t| format!("{t:?}")))
                .map_err(|e| e.into_error("status of task")),
        }
    }
}
