//! A stand-in app on 127.0.0.1 for `--app-check`: its `/healthz` answers 200, 500, or never, as
//! the test switches it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How the stand-in answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// 200.
    Healthy = 0,
    /// 500.
    Failing = 1,
    /// No answer for a minute.
    Hanging = 2,
}

/// A running stand-in app; stops when dropped.
#[derive(Debug)]
pub struct StandInApp {
    /// Where it listens.
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    task: tokio::task::JoinHandle<()>,
}

impl StandInApp {
    /// Listen on 127.0.0.1 (a free port), answering as `health`.
    pub async fn start(health: Health) -> std::io::Result<StandInApp> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mode = Arc::new(AtomicU8::new(health as u8));
        let m = mode.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let m = m.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let reply = match m.load(Ordering::SeqCst) {
                        0 => "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        1 => "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        _ => {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            return;
                        }
                    };
                    let _ = s.write_all(reply.as_bytes()).await;
                });
            }
        });
        Ok(StandInApp { addr, mode, task })
    }

    /// Answer as `health` from now on.
    pub fn set(&self, health: Health) {
        self.mode.store(health as u8, Ordering::SeqCst);
    }

    /// `http://ADDR/healthz`, for `--app-check`.
    pub fn url(&self) -> String {
        format!("http://{}/healthz", self.addr)
    }
}

impl Drop for StandInApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}
