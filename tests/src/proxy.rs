//! A TCP proxy the stack can put in front of Redis, the broker or
//! PostgreSQL, to make a link slow rather than dead.
//!
//! Requests always pass at once; only *replies* are held back. That is the
//! fault the windows of "every 202 is kept" live in: the server has done the
//! work (run the script, stored the message) and the client does not learn
//! it in time. On command the proxy
//! - [`delay`](FaultProxy::delay)s every reply by a fixed time, in order;
//! - [`stall`](FaultProxy::stall)s replies until told to [`pass`](FaultProxy::pass);
//! - [`cut`](FaultProxy::cut)s every open connection and refuses new ones.
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Pass,
    Delay(Duration),
    Stall,
    Cut,
}

/// One listening port forwarding to one upstream address.
pub struct FaultProxy {
    /// Where clients connect.
    pub port: u16,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1 (bound here, so no other process
    /// can take it first) and forwards to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap_or_else(|e| panic!("fault proxy cannot listen: {e}"));
        let port = listener.local_addr().expect("bound address").port();
        let (mode, _) = watch::channel(Mode::Pass);
        let modes = mode.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *modes.borrow() == Mode::Cut {
                    continue; // dropped: refused
                }
                let (upstream, modes) = (upstream.clone(), modes.subscribe());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        connection(client, server, modes).await;
                    }
                });
            }
        });
        Self { port, mode, task }
    }

    /// Replies flow as they come.
    pub fn pass(&self) {
        self.mode.send_replace(Mode::Pass);
    }

    /// Every reply reaches the client `by` after the server sent it.
    pub fn delay(&self, by: Duration) {
        self.mode.send_replace(Mode::Delay(by));
    }

    /// Replies are held (requests still reach the server) until [`Self::pass`].
    pub fn stall(&self) {
        self.mode.send_replace(Mode::Stall);
    }

    /// Closes every connection and refuses new ones until [`Self::pass`].
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.mode.send_replace(Mode::Cut);
        self.task.abort();
    }
}

/// Pumps one connection both ways until either side closes or the proxy cuts.
async fn connection(client: TcpStream, server: TcpStream, mut modes: watch::Receiver<Mode>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let (replies, mut held) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();

    let requests = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let read_replies = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if replies.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    };
    let mut write_modes = modes.clone();
    let write_replies = async {
        while let Some((arrived, bytes)) = held.recv().await {
            loop {
                let mode = *write_modes.borrow_and_update();
                match mode {
                    Mode::Pass => break,
                    Mode::Cut => return,
                    Mode::Delay(by) => {
                        tokio::select! {
                            _ = tokio::time::sleep_until(arrived + by) => break,
                            changed = write_modes.changed() => if changed.is_err() { return },
                        }
                    }
                    Mode::Stall => {
                        if write_modes.changed().await.is_err() {
                            return;
                        }
                    }
                }
            }
            if client_write.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    let cut = async {
        loop {
            if *modes.borrow_and_update() == Mode::Cut || modes.changed().await.is_err() {
                return;
            }
        }
    };
    // Replies are written while requests and replies are read; once either
    // side closes (or the proxy cuts), the reader's sender is dropped and
    // the writer ends after the replies it still holds.
    let forward = async move {
        tokio::select! {
            _ = requests => {}
            _ = read_replies => {}
            _ = cut => {}
        }
    };
    tokio::join!(forward, write_replies);
}
