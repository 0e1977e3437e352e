//! Admission and idle limits for the TCP listeners (metrics HTTP, gRPC TCP).
//!
//! Idle connections used to pile up on these listeners until the daemon ran
//! out of descriptors, and then the supervisor could not spawn, the control
//! socket stopped answering, and crashed processes stayed down. Now:
//!
//! - **Admission** ([`Admission`]): at most `max_per_client` connections
//!   per client address (Nomad's `http_max_conns_per_client`, default 100)
//!   and `max_total` in all. `max_total` is also held under a quarter of the
//!   daemon's descriptor limit, so the supervisor's own descriptors (pipes,
//!   pidfds, the store, the control socket) always have the rest. A
//!   connection over a cap is closed as soon as it is accepted.
//! - **Idle timeout** ([`Guarded`]): a connection that neither sends nor
//!   receives a byte for `idle_timeout` is closed, whether it never sent a
//!   request (held before any authentication) or went quiet after one. The
//!   gRPC listener pings its clients more often than that, so a quiet
//!   `events -f` stream stays up.
//!
//! The Unix socket is not limited: only the daemon's user can reach it.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Most connections from one client address.
    pub max_per_client: usize,
    /// Most connections in all.
    pub max_total: usize,
    /// A connection quiet for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_per_client: 100,
            max_total: 512,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

struct Inner {
    limits: ConnLimits,
    /// `limits.max_total`, held under a quarter of the descriptor limit.
    total_cap: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    refused: AtomicU64,
}

/// Who may hold a connection; see the module documentation.
#[derive(Clone)]
pub struct Admission(Arc<Inner>);

impl Admission {
    /// Admission under `limits` (the total also under a quarter of this
    /// process's descriptor limit).
    pub fn new(limits: ConnLimits) -> Admission {
        let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        let quarter = usize::try_from(nofile / 4).unwrap_or(usize::MAX).max(1);
        Admission(Arc::new(Inner {
            limits,
            total_cap: limits.max_total.min(quarter).max(1),
            open: Mutex::new((0, HashMap::new())),
            refused: AtomicU64::new(0),
        }))
    }

    /// The idle timeout connections get.
    pub fn idle_timeout(&self) -> Duration {
        self.0.limits.idle_timeout
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.0.refused.load(Ordering::Relaxed)
    }

    /// Connections held now.
    pub fn open(&self) -> usize {
        self.0.open.lock().map(|o| o.0).unwrap_or(0)
    }

    /// A ticket for a connection from `ip`, or none when a cap is reached.
    pub fn admit(&self, ip: IpAddr) -> Option<Ticket> {
        let mut o = self.0.open.lock().unwrap_or_else(|p| p.into_inner());
        let per = o.1.get(&ip).copied().unwrap_or(0);
        if o.0 >= self.0.total_cap || per >= self.0.limits.max_per_client {
            drop(o);
            let n = self.0.refused.fetch_add(1, Ordering::Relaxed);
            // Said once per thousand, not once per connection of a flood.
            if n % 1000 == 0 {
                tracing::warn!(
                    client = %ip,
                    refused = n + 1,
                    max_per_client = self.0.limits.max_per_client,
                    max_total = self.0.total_cap,
                    "connection refused: over the connection limits"
                );
            }
            return None;
        }
        o.0 += 1;
        *o.1.entry(ip).or_insert(0) += 1;
        Some(Ticket {
            adm: self.clone(),
            ip,
        })
    }

    /// Accept the next connection this admission lets in; the others are
    /// closed at once. Errors of accept (the descriptor limit, say) are
    /// waited out, not spun on.
    pub async fn accept(&self, l: &TcpListener) -> (Guarded<TcpStream>, SocketAddr) {
        loop {
            match l.accept().await {
                Ok((s, addr)) => {
                    // Replies and stream frames are written whole: Nagle's
                    // algorithm would hold a frame back until the client's
                    // (delayed, up to 40 ms) ACK of the one before.
                    let _ = s.set_nodelay(true);
                    if let Some(t) = self.admit(addr.ip()) {
                        return (Guarded::new(s, t, self.idle_timeout()), addr);
                    }
                }
                Err(e) => {
                    tracing::debug!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// One admitted connection's place, given back when it is dropped.
pub struct Ticket {
    adm: Admission,
    ip: IpAddr,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut o = self.adm.0.open.lock().unwrap_or_else(|p| p.into_inner());
        o.0 = o.0.saturating_sub(1);
        if let Some(n) = o.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                o.1.remove(&self.ip);
            }
        }
    }
}

/// A connection that holds its admission ticket and ends when idle.
pub struct Guarded<S> {
    inner: S,
    _ticket: Ticket,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> Guarded<S> {
    fn new(inner: S, ticket: Ticket, idle: Duration) -> Self {
        Guarded {
            inner,
            _ticket: ticket,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn active(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }

    /// Ready with an error once the connection has been idle too long.
    fn expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle past its timeout",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.active();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.expired(cx).map(Err),
        }
    }
}

impl<S> Guarded<S> {
    /// A write's outcome, as activity (bytes went out) or, while it waits
    /// on a client that stopped reading, against the idle timeout.
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.active();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.expired(cx).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Guarded<TcpStream> {
    type ConnectInfo = <TcpStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// A TCP listener behind an [`Admission`], for axum.
pub struct Limited {
    listener: TcpListener,
    admission: Admission,
}

impl Limited {
    /// `listener` behind `admission`.
    pub fn new(listener: TcpListener, admission: Admission) -> Limited {
        Limited {
            listener,
            admission,
        }
    }
}

impl axum::serve::Listener for Limited {
    type Io = Guarded<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.admission.accept(&self.listener).await
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every admitted connection has Nagle's algorithm off: stream frames
    /// (GraphQL subscriptions, followed events) leave when written, not when
    /// the client's delayed ACK of the one before arrives.
    #[tokio::test]
    async fn admitted_connections_send_without_delay() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let adm = Admission::new(ConnLimits {
            max_per_client: 2,
            max_total: 2,
            idle_timeout: Duration::from_secs(5),
        });
        let client = tokio::spawn(async move { TcpStream::connect(addr).await });
        let (g, _) = adm.accept(&l).await;
        assert!(g.inner.nodelay().expect("nodelay"));
        drop(client.await);
    }

    /// The caps count per address and in all, and a dropped ticket gives
    /// its place back.
    #[test]
    fn caps_per_client_and_in_all() {
        let adm = Admission::new(ConnLimits {
            max_per_client: 2,
            max_total: 3,
            idle_timeout: Duration::from_secs(1),
        });
        let a: IpAddr = "127.0.0.1".parse().expect("ip");
        let b: IpAddr = "127.0.0.2".parse().expect("ip");
        let t1 = adm.admit(a).expect("first");
        let _t2 = adm.admit(a).expect("second");
        assert!(adm.admit(a).is_none(), "a third from one client");
        let _t3 = adm.admit(b).expect("another client");
        assert!(adm.admit(b).is_none(), "over the total");
        drop(t1);
        assert!(adm.admit(a).is_some(), "a place came back");
        assert_eq!(adm.refused(), 2);
    }
}
