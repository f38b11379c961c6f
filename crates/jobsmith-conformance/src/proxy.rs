//! [`Proxy`]: a TCP proxy in front of a broker that can cut the connection
//! or freeze it.
//!
//! Cutting ([`Proxy::sever`]) is a broker that went away: every connection
//! closes and new ones are refused, so a client finds out at once. Freezing
//! ([`Proxy::freeze`]) is a broker that hangs (a stopped process, a full
//! disk, a network that drops packets): connections stay open and new ones
//! are accepted, but no byte goes either way until [`Proxy::thaw`], when
//! what was held goes on, as after a `SIGCONT`. Only a client's own time
//! limits end its calls in between.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A TCP proxy on a free loopback port, forwarding to one upstream address.
/// Dropping it stops it and closes its connections.
#[derive(Debug)]
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    severed: Arc<AtomicBool>,
    /// Bumped on each sever; every connection closes when it changes.
    cut: watch::Sender<u64>,
    /// Whether bytes are held rather than forwarded.
    frozen: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// `url` with its host and port replaced by `addr` (credentials, path and
/// query kept): the same backend URL, through a [`Proxy`].
pub fn url_through(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (creds, hostpart) = match rest.rsplit_once('@') {
        Some((c, h)) => (format!("{c}@"), h),
        None => (String::new(), rest),
    };
    let tail_at = hostpart.find(['/', '?', '#']).unwrap_or(hostpart.len());
    format!("{scheme}://{creds}{addr}{}", &hostpart[tail_at..])
}

/// `host:port` of `url`, with `port` when it names none: what a [`Proxy`]
/// forwards to.
pub fn url_host_port(url: &str, port: u16) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostpart = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let end = hostpart.find(['/', '?', '#']).unwrap_or(hostpart.len());
    let hp = &hostpart[..end];
    if hp.contains(':') {
        hp.to_owned()
    } else {
        format!("{hp}:{port}")
    }
}

impl Proxy {
    /// Starts a proxy to `upstream` (`host:port`).
    pub async fn start(upstream: impl Into<String>) -> Self {
        let upstream = upstream.into();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let severed = Arc::new(AtomicBool::new(false));
        let (cut, _) = watch::channel(0u64);
        let (frozen, _) = watch::channel(false);
        let (flag, cuts, freezes) = (Arc::clone(&severed), cut.clone(), frozen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                if flag.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let (mut cut, frozen) = (cuts.subscribe(), freezes.subscribe());
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    tokio::select! {
                        () = pump(in_read, out_write, frozen.clone()) => {}
                        () = pump(out_read, in_write, frozen) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            addr,
            severed,
            cut,
            frozen,
            task,
        }
    }

    /// `http://` and the proxy's address, for an HTTP endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every connection and refuses new ones until [`Proxy::restore`].
    pub fn sever(&self) {
        self.severed.store(true, Ordering::SeqCst);
        self.cut.send_modify(|g| *g += 1);
    }

    /// Accepts connections again after [`Proxy::sever`].
    pub fn restore(&self) {
        self.severed.store(false, Ordering::SeqCst);
    }

    /// Stops forwarding: connections stay open and new ones are accepted,
    /// but every byte either way is held until [`Proxy::thaw`].
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Forwards again, starting with the bytes held while frozen.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut.send_modify(|g| *g += 1);
    }
}

/// Copies `from` to `to` until either ends, holding each chunk read while
/// the proxy is frozen.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
