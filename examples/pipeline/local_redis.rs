//! Redis plumbing of the example, not part of using the plugin: a throwaway `redis-server` for
//! machines without a Redis of their own, and a look at what the queue stored.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apalis_redis::ConnectionManager;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A `redis-server` on a free loopback port that keeps nothing on disk, killed when dropped.
pub(crate) struct LocalRedis {
    child: Child,
    port: u16,
    /// The server's working directory, removed after the server is killed.
    _dir: tempfile::TempDir,
}

impl LocalRedis {
    /// Start `redis-server` (found on `PATH`) and wait until it answers.
    pub(crate) fn start() -> Result<Self, BoxError> {
        // Another process may take the port between picking and binding it: try a few.
        let mut last = None;
        for _ in 0..5 {
            match Self::try_start() {
                Ok(server) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| "redis-server did not start".into()))
    }

    fn try_start() -> Result<Self, BoxError> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = tempfile::tempdir()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server (run scripts/install-deps): {e}"))?;
        let mut server = LocalRedis {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !server.ping() {
            if let Some(status) = server.child.try_wait()? {
                return Err(format!("redis-server exited with {status}").into());
            }
            if Instant::now() > deadline {
                return Err("redis-server did not answer within 15 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 16];
        s.write_all(b"PING\r\n").is_ok()
            && matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    /// `redis://127.0.0.1:PORT/`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The size in bytes of the largest job in an apalis-redis data hash.
pub(crate) async fn largest_job(
    conn: &mut ConnectionManager,
    data_hash: &str,
) -> Result<u64, redis::RedisError> {
    let ids: Vec<String> = redis::cmd("HKEYS").arg(data_hash).query_async(conn).await?;
    let mut largest = 0;
    for id in ids {
        let len: u64 = redis::cmd("HSTRLEN")
            .arg(data_hash)
            .arg(&id)
            .query_async(conn)
            .await?;
        largest = largest.max(len);
    }
    Ok(largest)
}

/// Delete every key of an apalis-redis queue (`{queue}:*`).
pub(crate) async fn delete_queue(
    conn: &mut ConnectionManager,
    queue: &str,
) -> Result<(), redis::RedisError> {
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{queue}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            redis::cmd("DEL").arg(&keys).query_async::<()>(conn).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}
