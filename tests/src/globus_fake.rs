//! A local fake of the Globus Transfer API v0.10 calls the Globus connector makes.
//!
//! It serves `GET /submission_id`, `POST /transfer`, `POST /delete` and `GET /task/{task_id}`
//! under `/v0.10` on a free 127.0.0.1 port, with the request and response documents of
//! <https://docs.globus.org/api/transfer/task_submit/> and
//! <https://docs.globus.org/api/transfer/task/>. Each collection (endpoint UUID) is a local
//! directory standing for the collection's root: the Globus path `/x/y` (or `/~/x/y`) on it is
//! `<root>/x/y`. Like the service, it checks the bearer token, hands out submission ids and
//! treats a resubmission with the same id as a duplicate, validates the documents, keeps tasks,
//! and runs them in the background: a task stays ACTIVE for the configured delay, then copies or
//! deletes the files and becomes SUCCEEDED, or FAILED with a `fatal_error`.
//!
//! Test hooks: [`FakeGlobus::set_delay`], [`FakeGlobus::fail_next_tasks`] (the next tasks end
//! FAILED), [`FakeGlobus::set_reject_all`] (every request gets 401), [`FakeGlobus::stop`] and
//! [`FakeGlobus::restart`] (same port, same tasks).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::Json;
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The status of a fake task, as the API reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FakeStatus {
    /// Still running (or waiting for its delay).
    Active,
    /// Done.
    Succeeded,
    /// Ended with a fatal error (code, description).
    Failed(String, String),
}

impl FakeStatus {
    fn as_str(&self) -> &'static str {
        match self {
            FakeStatus::Active => "ACTIVE",
            FakeStatus::Succeeded => "SUCCEEDED",
            FakeStatus::Failed(..) => "FAILED",
        }
    }
}

#[derive(Clone, Debug)]
enum Work {
    Transfer {
        source: String,
        destination: String,
        items: Vec<(String, String)>,
    },
    Delete {
        endpoint: String,
        paths: Vec<String>,
        ignore_missing: bool,
    },
}

#[derive(Clone, Debug)]
struct Task {
    work: Work,
    label: Option<String>,
    status: FakeStatus,
}

#[derive(Default)]
struct Tasks {
    by_id: HashMap<String, Task>,
    /// Submission ids handed out, and the task each one created.
    submissions: HashMap<String, Option<String>>,
}

struct Shared {
    token: String,
    collections: HashMap<String, PathBuf>,
    delay_ms: AtomicU64,
    fail_next: AtomicUsize,
    reject_all: AtomicBool,
    requests: AtomicU64,
    tasks: Mutex<Tasks>,
}

/// A running fake Transfer API. Stops when dropped.
pub struct FakeGlobus {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl FakeGlobus {
    /// Serve collections `(uuid, root directory)` to clients presenting `token`; tasks stay
    /// ACTIVE for `delay`. Must be called inside a tokio runtime, which runs the server and
    /// the tasks.
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start(
        token: &str,
        collections: impl IntoIterator<Item = (String, PathBuf)>,
        delay: Duration,
    ) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            token: token.to_owned(),
            collections: collections.into_iter().collect(),
            delay_ms: AtomicU64::new(delay.as_millis() as u64),
            fail_next: AtomicUsize::new(0),
            reject_all: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            tasks: Mutex::new(Tasks::default()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the fake Globus API to a loopback port")?;
        let addr = listener.local_addr()?;
        let mut fake = FakeGlobus {
            addr,
            shared,
            shutdown: None,
            server: None,
        };
        fake.serve(listener);
        Ok(fake)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .route("/v0.10/submission_id", get(submission_id))
            .route("/v0.10/transfer", post(submit_transfer))
            .route("/v0.10/delete", post(submit_delete))
            .route("/v0.10/task/{task_id}", get(get_task))
            .with_state(self.shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        self.shutdown = Some(tx);
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        }));
    }

    /// The API base URL to give the connector (`http://127.0.0.1:PORT/v0.10`).
    pub fn api_url(&self) -> String {
        format!("http://{}/v0.10", self.addr)
    }

    /// How long new tasks stay ACTIVE before they run.
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Make the next `n` submitted tasks end FAILED without doing their work.
    pub fn fail_next_tasks(&self, n: usize) {
        self.shared.fail_next.store(n, Ordering::SeqCst);
    }

    /// Answer every request with 401, whatever its token.
    pub fn set_reject_all(&self, reject: bool) {
        self.shared.reject_all.store(reject, Ordering::SeqCst);
    }

    /// Requests served so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Tasks created so far.
    pub fn task_count(&self) -> usize {
        lock(&self.shared.tasks).by_id.len()
    }

    /// The status of a task, if it exists.
    pub fn task_status(&self, task_id: &str) -> Option<FakeStatus> {
        lock(&self.shared.tasks)
            .by_id
            .get(task_id)
            .map(|t| t.status.clone())
    }

    /// The label of a task, if it exists and has one.
    pub fn task_label(&self, task_id: &str) -> Option<String> {
        lock(&self.shared.tasks)
            .by_id
            .get(task_id)
            .and_then(|t| t.label.clone())
    }

    /// Stop serving: the port is closed and open connections end. Tasks keep running.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(mut server) = self.server.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut server)
                .await
                .is_err()
        {
            server.abort();
        }
    }

    /// Serve again on the same port, with the same tasks and collections.
    ///
    /// # Errors
    /// When the port cannot be bound again.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .with_context(|| format!("rebind the fake Globus API to {}", self.addr))?;
        self.serve(listener);
        Ok(())
    }
}

impl Drop for FakeGlobus {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A refusal, answered as an error document the way the Transfer API writes them.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        code,
        message: message.into(),
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({
            "code": self.code,
            "message": self.message,
            "request_id": request_id(),
            "resource": "",
        });
        (self.status, Json(body)).into_response()
    }
}

fn request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..9].to_owned()
}

fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), Refusal> {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    if shared.reject_all.load(Ordering::SeqCst) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            "Token is not active",
        ));
    }
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(t) if t == shared.token => Ok(()),
        Some(_) => Err(error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            "Token is not active",
        )),
        None => Err(error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            "No Authorization header found",
        )),
    }
}

async fn submission_id(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&shared, &headers) {
        return r.into_response();
    }
    let id = uuid::Uuid::new_v4().to_string();
    lock(&shared.tasks).submissions.insert(id.clone(), None);
    Json(json!({"DATA_TYPE": "submission_id", "value": id})).into_response()
}

fn str_field<'a>(doc: &'a Value, name: &str) -> Result<&'a str, Refusal> {
    doc.get(name).and_then(Value::as_str).ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            "ClientError.BadRequest",
            format!("'{name}' is required and must be a string"),
        )
    })
}

fn items(doc: &Value, item_type: &str) -> Result<Vec<Value>, Refusal> {
    let items = doc
        .get("DATA")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if items.is_empty() {
        let what = if item_type == "transfer_item" {
            (
                "ClientError.BadRequest.NoTransferItems",
                "A transfer requires at least one item",
            )
        } else {
            (
                "ClientError.BadRequest.NoDeleteItems",
                "A delete requires at least one item",
            )
        };
        return Err(error(StatusCode::BAD_REQUEST, what.0, what.1));
    }
    for item in &items {
        if item.get("DATA_TYPE").and_then(Value::as_str) != Some(item_type) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "ClientError.BadRequest",
                format!("DATA items must have DATA_TYPE '{item_type}'"),
            ));
        }
    }
    Ok(items)
}

fn check_endpoint(shared: &Shared, uuid: &str) -> Result<(), Refusal> {
    if shared.collections.contains_key(uuid) {
        Ok(())
    } else {
        Err(error(
            StatusCode::NOT_FOUND,
            "EndpointNotFound",
            format!("No such endpoint with id '{uuid}'"),
        ))
    }
}

fn check_path(path: &str) -> Result<(), Refusal> {
    if path.starts_with('/') && !path.split('/').any(|c| c == "..") && !path.contains('\0') {
        Ok(())
    } else {
        Err(error(
            StatusCode::BAD_REQUEST,
            "ClientError.BadRequest",
            format!("Invalid path '{path}'"),
        ))
    }
}

/// Where a Globus path of a collection lives on this machine.
fn local_path(root: &Path, globus_path: &str) -> Option<PathBuf> {
    let rel = globus_path
        .strip_prefix("/~/")
        .unwrap_or_else(|| globus_path.trim_start_matches('/'));
    let rel = Path::new(rel);
    rel.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| root.join(rel))
}

/// Check the submission id and register the task; the answer document.
fn accept(shared: &Arc<Shared>, doc: &Value, work: Work, kind: &str) -> Response {
    let submission = match str_field(doc, "submission_id") {
        Ok(s) => s.to_owned(),
        Err(r) => return r.into_response(),
    };
    let label = doc.get("label").and_then(Value::as_str).map(str::to_owned);
    let mut tasks = lock(&shared.tasks);
    let (task_id, code) = match tasks.submissions.get(&submission) {
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "ClientError.BadRequest",
                "Invalid submission id",
            )
            .into_response();
        }
        Some(Some(existing)) => (existing.clone(), "Duplicate"),
        Some(None) => {
            let id = uuid::Uuid::new_v4().to_string();
            let fail = shared
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            tasks.by_id.insert(
                id.clone(),
                Task {
                    work,
                    label,
                    status: FakeStatus::Active,
                },
            );
            tasks
                .submissions
                .insert(submission.clone(), Some(id.clone()));
            tokio::spawn(run_task(shared.clone(), id.clone(), fail));
            (id, "Accepted")
        }
    };
    let body = json!({
        "DATA_TYPE": format!("{kind}_result"),
        "code": code,
        "message": format!(
            "The {kind} has been accepted and a task has been created and queued for execution"
        ),
        "request_id": request_id(),
        "resource": format!("/v0.10/{kind}"),
        "submission_id": submission,
        "task_id": task_id,
        "task_link": {
            "DATA_TYPE": "link",
            "href": format!("/v0.10/task/{task_id}?format=json"),
            "rel": "related",
            "resource": "task",
            "title": "related task",
        },
    });
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

async fn submit_transfer(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(doc): Json<Value>,
) -> Response {
    let parsed = (|| {
        authorize(&shared, &headers)?;
        if str_field(&doc, "DATA_TYPE")? != "transfer" {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "ClientError.BadRequest",
                "DATA_TYPE must be 'transfer'",
            ));
        }
        let source = str_field(&doc, "source_endpoint")?.to_owned();
        let destination = str_field(&doc, "destination_endpoint")?.to_owned();
        check_endpoint(&shared, &source)?;
        check_endpoint(&shared, &destination)?;
        let mut pairs = Vec::new();
        for item in items(&doc, "transfer_item")? {
            let s = str_field(&item, "source_path")?.to_owned();
            let d = str_field(&item, "destination_path")?.to_owned();
            check_path(&s)?;
            check_path(&d)?;
            pairs.push((s, d));
        }
        Ok(Work::Transfer {
            source,
            destination,
            items: pairs,
        })
    })();
    match parsed {
        Ok(work) => accept(&shared, &doc, work, "transfer"),
        Err(r) => r.into_response(),
    }
}

async fn submit_delete(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(doc): Json<Value>,
) -> Response {
    let parsed = (|| {
        authorize(&shared, &headers)?;
        if str_field(&doc, "DATA_TYPE")? != "delete" {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "ClientError.BadRequest",
                "DATA_TYPE must be 'delete'",
            ));
        }
        let endpoint = str_field(&doc, "endpoint")?.to_owned();
        check_endpoint(&shared, &endpoint)?;
        let mut paths = Vec::new();
        for item in items(&doc, "delete_item")? {
            let p = str_field(&item, "path")?.to_owned();
            check_path(&p)?;
            paths.push(p);
        }
        let ignore_missing = doc
            .get("ignore_missing")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(Work::Delete {
            endpoint,
            paths,
            ignore_missing,
        })
    })();
    match parsed {
        Ok(work) => accept(&shared, &doc, work, "delete"),
        Err(r) => r.into_response(),
    }
}

async fn get_task(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    UrlPath(task_id): UrlPath<String>,
) -> Response {
    if let Err(r) = authorize(&shared, &headers) {
        return r.into_response();
    }
    let Some(task) = lock(&shared.tasks).by_id.get(&task_id).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            "TaskNotFound",
            format!("Task {task_id} not found"),
        )
        .into_response();
    };
    let (kind, source, destination, files) = match &task.work {
        Work::Transfer {
            source,
            destination,
            items,
        } => (
            "TRANSFER",
            source.clone(),
            Some(destination.clone()),
            items.len(),
        ),
        Work::Delete {
            endpoint, paths, ..
        } => ("DELETE", endpoint.clone(), None, paths.len()),
    };
    let fatal_error = match &task.status {
        FakeStatus::Failed(code, description) => json!({"code": code, "description": description}),
        _ => Value::Null,
    };
    Json(json!({
        "DATA_TYPE": "task",
        "task_id": task_id,
        "type": kind,
        "status": task.status.as_str(),
        "label": task.label,
        "source_endpoint_id": source,
        "destination_endpoint_id": destination,
        "files": files,
        "fatal_error": fatal_error,
        "is_ok": !matches!(task.status, FakeStatus::Failed(..)),
        "nice_status": match task.status {
            FakeStatus::Active => Value::from("Queued"),
            _ => Value::Null,
        },
    }))
    .into_response()
}

/// Wait the delay, then do the work (or fail) and record the outcome.
async fn run_task(shared: Arc<Shared>, task_id: String, fail: bool) {
    let delay = Duration::from_millis(shared.delay_ms.load(Ordering::SeqCst));
    tokio::time::sleep(delay).await;
    let work = match lock(&shared.tasks).by_id.get(&task_id) {
        Some(t) => t.work.clone(),
        None => return,
    };
    let outcome = if fail {
        FakeStatus::Failed(
            "PERMISSION_DENIED".into(),
            "injected failure: permission denied on the destination".into(),
        )
    } else {
        let shared2 = shared.clone();
        tokio::task::spawn_blocking(move || perform(&shared2, &work))
            .await
            .unwrap_or_else(|e| FakeStatus::Failed("INTERNAL".into(), e.to_string()))
    };
    if let Some(t) = lock(&shared.tasks).by_id.get_mut(&task_id) {
        t.status = outcome;
    }
}

fn perform(shared: &Shared, work: &Work) -> FakeStatus {
    let resolve = |endpoint: &str, path: &str| {
        shared
            .collections
            .get(endpoint)
            .and_then(|root| local_path(root, path))
            .ok_or_else(|| FakeStatus::Failed("ENDPOINT_ERROR".into(), format!("bad path {path}")))
    };
    let run = || -> Result<(), FakeStatus> {
        match work {
            Work::Transfer {
                source,
                destination,
                items,
            } => {
                for (s, d) in items {
                    let from = resolve(source, s)?;
                    let to = resolve(destination, d)?;
                    copy(&from, &to).map_err(|e| {
                        let code = if e.kind() == std::io::ErrorKind::NotFound {
                            "FILE_NOT_FOUND"
                        } else {
                            "ENDPOINT_ERROR"
                        };
                        FakeStatus::Failed(code.into(), format!("{s}: {e}"))
                    })?;
                }
            }
            Work::Delete {
                endpoint,
                paths,
                ignore_missing,
            } => {
                for p in paths {
                    match std::fs::remove_file(resolve(endpoint, p)?) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound && *ignore_missing => {}
                        Err(e) => {
                            return Err(FakeStatus::Failed(
                                "FILE_NOT_FOUND".into(),
                                format!("{p}: {e}"),
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    };
    match run() {
        Ok(()) => FakeStatus::Succeeded,
        Err(failed) => failed,
    }
}

/// Copy into a new file, creating parent directories as Globus does. The copy appears under its
/// name only when whole (kinder than Globus, but the connector waits for the task anyway).
fn copy(from: &Path, to: &Path) -> std::io::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = to.with_extension(format!("globus-fake-{}", uuid::Uuid::new_v4().simple()));
    let result = std::fs::copy(from, &tmp).and_then(|_| std::fs::rename(&tmp, to));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
