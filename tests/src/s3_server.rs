//! An S3-compatible server on loopback: `s3s-fs` over a temporary directory, served in-process
//! with hyper on a thread and runtime of its own, so that it keeps serving while a test blocks.
//!
//! The server checks SigV4 signatures against one access key pair, can be stopped (every open
//! connection is cut at once), restarted on the same port, or made to hang (connections are
//! accepted and never answered), and can be told to fail one part of multipart uploads.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use proxystore::connector::s3::S3Config;
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use s3s_fs::FileSystem;

/// The bucket every server starts with.
pub const BUCKET: &str = "proxystore-test";
/// The region clients should sign for (the server accepts any).
pub const REGION: &str = "us-east-1";

/// Faults to inject and events to count, shared with the running server.
#[derive(Debug, Default)]
pub struct Faults {
    /// Part number whose `UploadPart` fails with a 500 (0: none).
    pub fail_upload_part: AtomicI32,
    /// `AbortMultipartUpload` calls received.
    pub aborted_uploads: AtomicU64,
    /// `CompleteMultipartUpload` calls received.
    pub completed_uploads: AtomicU64,
    /// `UploadPart` calls received.
    pub uploaded_parts: AtomicU64,
}

/// How a started server treats connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Serve,
    Hang,
}

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

/// An S3 server owned by a test; stopped when dropped.
pub struct S3Server {
    addr: SocketAddr,
    root: tempfile::TempDir,
    access_key: String,
    secret_key: String,
    faults: Arc<Faults>,
    running: Option<Running>,
}

impl std::fmt::Debug for S3Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Server")
            .field("addr", &self.addr)
            .field("root", &self.root.path())
            .field("running", &self.running.is_some())
            .finish_non_exhaustive()
    }
}

impl S3Server {
    /// Start a server on a free loopback port with the bucket [`BUCKET`] and fresh credentials.
    ///
    /// # Errors
    /// When the temporary directory or the listener cannot be made.
    pub fn start() -> Result<Self> {
        let root = tempfile::tempdir().context("temporary directory for the S3 server")?;
        std::fs::create_dir(root.path().join(BUCKET)).context("create the bucket directory")?;
        let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
        let mut s = S3Server {
            addr: listener.local_addr()?,
            root,
            access_key: format!("AKTEST{}", &uuid_like()[..10]).to_uppercase(),
            secret_key: uuid_like(),
            faults: Arc::new(Faults::default()),
            running: None,
        };
        s.running = Some(s.spawn(listener, Mode::Serve)?);
        Ok(s)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The access key id the server accepts.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret key the server accepts.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The directory holding the buckets (one subdirectory each) and upload state.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Faults to inject and counters.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// A connector config for this server: its endpoint, path-style addressing, the right
    /// credentials, [`BUCKET`], `prefix`, and short timeouts suited to loopback tests.
    pub fn config(&self, prefix: &str) -> S3Config {
        S3Config {
            prefix: prefix.to_owned(),
            region: Some(REGION.into()),
            endpoint_url: Some(self.endpoint()),
            force_path_style: true,
            access_key_id: Some(self.access_key.clone()),
            secret_access_key: Some(self.secret_key.clone()),
            connect_timeout_ms: 2_000,
            read_timeout_ms: 10_000,
            operation_timeout_ms: 60_000,
            ..S3Config::new(BUCKET)
        }
    }

    /// Stop serving and cut every open connection.
    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.stop.send(());
            let _ = r.thread.join();
        }
    }

    /// Serve again on the same port, with the same data and credentials.
    ///
    /// # Errors
    /// When the port cannot be bound again within a few seconds.
    pub fn restart(&mut self) -> Result<()> {
        self.restart_in(Mode::Serve)
    }

    /// Keep the port open but never answer: connections are accepted and left silent, as with a
    /// hung server. [`S3Server::restart`] serves again.
    ///
    /// # Errors
    /// As for [`S3Server::restart`].
    pub fn hang(&mut self) -> Result<()> {
        self.restart_in(Mode::Hang)
    }

    fn restart_in(&mut self, mode: Mode) -> Result<()> {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e).with_context(|| format!("bind {} again", self.addr)),
            }
        };
        self.running = Some(self.spawn(listener, mode)?);
        Ok(())
    }

    fn spawn(&self, listener: TcpListener, mode: Mode) -> Result<Running> {
        listener.set_nonblocking(true)?;
        let fs = FileSystem::new(self.root.path())
            .map_err(|e| anyhow::anyhow!("s3s-fs over {}: {e:?}", self.root.path().display()))?;
        let service = {
            let mut b = s3s::service::S3ServiceBuilder::new(Faulty {
                fs,
                root: self.root.path().to_path_buf(),
                faults: self.faults.clone(),
            });
            b.set_auth(s3s::auth::SimpleAuth::from_single(
                self.access_key.as_str(),
                self.secret_key.as_str(),
            ));
            b.build()
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("s3-test-server")
            .enable_all()
            .build()
            .context("runtime for the S3 server")?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("s3-test-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let http = ConnBuilder::new(TokioExecutor::new());
                    let mut held = Vec::new();
                    loop {
                        tokio::select! {
                            _ = &mut stopped => break,
                            accepted = listener.accept() => {
                                let Ok((socket, _)) = accepted else { continue };
                                let _ = socket.set_nodelay(true);
                                match mode {
                                    Mode::Serve => {
                                        let conn = http
                                            .serve_connection(TokioIo::new(socket), service.clone())
                                            .into_owned();
                                        tokio::spawn(conn);
                                    }
                                    Mode::Hang => held.push(socket),
                                }
                            }
                        }
                    }
                });
                // Cancels every connection task and closes its socket, without waiting for
                // file I/O in flight.
                runtime.shutdown_background();
            })
            .context("start the S3 server thread")?;
        Ok(Running { stop, thread })
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn uuid_like() -> String {
    proxystore::Key::random().as_str().replace('-', "")
}

/// `s3s-fs` with fault injection on multipart uploads; only the operations the connector and
/// the tests use are passed through (the rest answer NotImplemented).
///
/// s3s-fs serves object operations on a bucket that does not exist (and creates it on put);
/// this wrapper answers `NoSuchBucket` there, as S3 does.
struct Faulty {
    fs: FileSystem,
    root: std::path::PathBuf,
    faults: Arc<Faults>,
}

impl Faulty {
    fn bucket(&self, bucket: &str) -> S3Result<()> {
        if self.root.join(bucket).is_dir() {
            Ok(())
        } else {
            Err(s3_error!(NoSuchBucket))
        }
    }
}

#[async_trait::async_trait]
impl S3 for Faulty {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.fs.create_bucket(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.fs.list_objects_v2(req).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.bucket(&req.input.bucket)?;
        self.fs.put_object(req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.bucket(&req.input.bucket)?;
        self.fs.get_object(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.fs.head_object(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.bucket(&req.input.bucket)?;
        self.fs.delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.fs.delete_objects(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.bucket(&req.input.bucket)?;
        self.fs.create_multipart_upload(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.faults.uploaded_parts.fetch_add(1, Ordering::Relaxed);
        if req.input.part_number == self.faults.fail_upload_part.load(Ordering::Relaxed) {
            return Err(s3_error!(InternalError, "injected UploadPart failure"));
        }
        self.fs.upload_part(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.faults
            .completed_uploads
            .fetch_add(1, Ordering::Relaxed);
        self.fs.complete_multipart_upload(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.faults.aborted_uploads.fetch_add(1, Ordering::Relaxed);
        self.fs.abort_multipart_upload(req).await
    }
}
