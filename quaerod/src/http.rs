//! The HTTP accept loop (in place of `warp::serve`, which has none of the three guards
//! below): it serves the warp filter over hyper with
//!
//! - a **header-read timeout**: a connection that has not sent a complete request head
//!   within [`HEADER_READ_TIMEOUT`] (a half-sent request, or a keep-alive connection idle
//!   that long) is closed;
//! - a **connection budget** below the process's file-descriptor limit: when it is
//!   reached, the connection idle the longest (no request in progress) is closed to make
//!   room, so idle or half-sent connections can never take the descriptors that requests,
//!   the store and running jobs need. Without these, 200 half-sent requests under a
//!   128-descriptor limit stopped the daemon from answering anyone;
//! - a **lingering close**: when a connection ends, its write side is shut at once and
//!   what the client still sends is read and dropped until the client closes its side,
//!   for up to [`LINGER`]. Closing with unread bytes makes the kernel answer with a reset,
//!   and a client still writing a refused body (a 413 goes out as soon as the head is
//!   read) then fails with "broken pipe" instead of reading the 413. At most
//!   [`MAX_LINGERING`] sockets linger at once (their descriptors are kept out of the
//!   budget); past that, and for connections shed to make room, the socket closes at once.
//!
//! WebSocket connections stay in the budget once upgraded: `/ws` gets the upgrade with the
//! connection's place in the budget ([`WsUpgrade`]), and a WebSocket idle the longest
//! (nothing sent to it) is shed like any idle connection; its client reconnects.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use warp::Filter;

/// A connection must send a complete request head within this long of being accepted or
/// of its previous response.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing connection keeps reading (and dropping) what its client still sends.
pub const LINGER: Duration = Duration::from_secs(5);
/// At most this many sockets linger at once (their descriptors are kept out of the
/// budget); past it a connection closes at once.
const MAX_LINGERING: usize = 32;
static LINGERING: AtomicUsize = AtomicUsize::new(0);
/// Descriptors kept out of the connection budget: the store's files, job pipes, the
/// daemon's own (WebSocket clients are in the budget).
const FD_RESERVE: u64 = 64;
const MIN_CONNECTIONS: usize = 8;
const MAX_CONNECTIONS: usize = 16_384;

/// How many HTTP connections may be open, from the current descriptor limit (read at each
/// accept: it can change under a running daemon, e.g. with `prlimit`).
fn budget() -> usize {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit(2) writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return MAX_CONNECTIONS;
    }
    (lim.rlim_cur.saturating_sub(FD_RESERVE + MAX_LINGERING as u64) as usize).clamp(MIN_CONNECTIONS, MAX_CONNECTIONS)
}

/// The soft descriptor limit the daemon was started with, before [`raise_fd_limit`]:
/// commands get it back (programs that `select()` or close every descriptor up to the
/// limit expect a usual one).
pub static ORIGINAL_FD_LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Raises the soft descriptor limit to the hard one (systemd and shells often start
/// services at a soft 1024 under a far higher hard limit); returns the soft limit now.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: get/setrlimit(2) on our own process with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        let _ = ORIGINAL_FD_LIMIT.set(lim.rlim_cur);
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
    }
    lim.rlim_cur
}

/// One open connection, as the budget sees it.
struct Conn {
    /// Requests in progress on it.
    busy: AtomicUsize,
    /// When it last had none (accept time at first).
    idle_since: Mutex<Instant>,
    close: CancellationToken,
}

#[derive(Default)]
struct Conns {
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
}

impl Conns {
    fn add(self: &Arc<Self>) -> (Arc<Conn>, Registered) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            busy: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            close: CancellationToken::new(),
        });
        self.open.lock().expect("conns").insert(id, conn.clone());
        (conn, Registered { conns: self.clone(), id })
    }

    /// Closes the connection idle the longest; false if every one has a request running.
    fn shed_one(&self) -> bool {
        let mut open = self.open.lock().expect("conns");
        let oldest = open
            .iter()
            .filter(|(_, c)| c.busy.load(Ordering::Acquire) == 0)
            .min_by_key(|(_, c)| *c.idle_since.lock().expect("idle"))
            .map(|(id, _)| *id);
        match oldest.and_then(|id| open.remove(&id)) {
            Some(c) => {
                c.close.cancel();
                crate::metrics::METRICS.http_connections_shed.inc();
                true
            }
            None => false,
        }
    }

    fn len(&self) -> usize {
        self.open.lock().expect("conns").len()
    }
}

/// Removes its connection from the budget when the connection's task ends.
struct Registered {
    conns: Arc<Conns>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.conns.open.lock().expect("conns").remove(&self.id);
    }
}

/// What `/ws` needs to take over its connection: hyper's upgrade (taken out of the request
/// here, so that the WebSocket is made with our buffer sizes, not warp's defaults) and the
/// connection's place in the budget, kept for as long as the WebSocket lives.
#[derive(Clone)]
pub struct WsUpgrade {
    upgrade: Arc<Mutex<Option<hyper::upgrade::OnUpgrade>>>,
    conn: Arc<Conn>,
    registered: Arc<Registered>,
}

impl WsUpgrade {
    /// The upgrade (once), and the budget entry to hold while the WebSocket lives.
    pub fn take(&self) -> Option<(hyper::upgrade::OnUpgrade, WsPlace)> {
        let on = self.upgrade.lock().expect("upgrade").take()?;
        Some((on, WsPlace { conn: self.conn.clone(), _registered: self.registered.clone() }))
    }
}

/// A WebSocket's place in the connection budget.
pub struct WsPlace {
    conn: Arc<Conn>,
    _registered: Arc<Registered>,
}

impl WsPlace {
    /// Something was sent to the client: it is not idle.
    pub fn active(&self) {
        *self.conn.idle_since.lock().expect("idle") = Instant::now();
    }

    /// Resolves when the budget sheds this connection to make room.
    pub async fn shed(&self) {
        self.conn.close.cancelled().await
    }
}

/// Marks a request in progress on its connection for as long as it lives.
struct Busy(Arc<Conn>);

impl Busy {
    fn new(c: &Arc<Conn>) -> Busy {
        c.busy.fetch_add(1, Ordering::AcqRel);
        Busy(c.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.0.idle_since.lock().expect("idle") = Instant::now();
        }
    }
}

/// The warp service, counting requests in progress on its connection until their response
/// body is written (so a connection is never shed in the middle of a response).
struct Tracked<S, B> {
    inner: S,
    conn: Arc<Conn>,
    registered: Arc<Registered>,
    body: std::marker::PhantomData<fn() -> B>,
}

impl<S: Clone, B> Clone for Tracked<S, B> {
    fn clone(&self) -> Self {
        Tracked {
            inner: self.inner.clone(),
            conn: self.conn.clone(),
            registered: self.registered.clone(),
            body: std::marker::PhantomData,
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> hyper::service::Service<warp::http::Request<hyper::body::Incoming>> for Tracked<S, B>
where
    S: hyper::service::Service<warp::http::Request<hyper::body::Incoming>, Response = warp::http::Response<B>>,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
{
    type Response = warp::http::Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn call(&self, mut req: warp::http::Request<hyper::body::Incoming>) -> Self::Future {
        // `/ws/` routes to `/ws` too.
        if req.uri().path().trim_end_matches('/') == "/ws"
            && let Some(on) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>()
        {
            let up = WsUpgrade {
                upgrade: Arc::new(Mutex::new(Some(on))),
                conn: self.conn.clone(),
                registered: self.registered.clone(),
            };
            req.extensions_mut().insert(up);
        }
        let busy = Busy::new(&self.conn);
        let fut = self.inner.call(req);
        Box::pin(async move { Ok(fut.await?.map(|body| TrackedBody { inner: Box::pin(body), _busy: busy })) })
    }
}

/// A response body that keeps its request counted as in progress until it is dropped
/// (written out, or abandoned with the connection).
struct TrackedBody<B> {
    inner: Pin<Box<B>>,
    _busy: Busy,
}

impl<B: hyper::body::Body> hyper::body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        self.inner.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's socket, closed with a linger (see the module's doc) when hyper drops
/// it, unless the connection was shed to free its descriptor.
struct Lingering {
    stream: Option<TcpStream>,
    shed: CancellationToken,
}

impl Lingering {
    fn get(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(self.stream.as_mut().expect("stream is taken only on drop"))
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.get_mut().get().poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.get_mut().get().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.get_mut().get().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        self.get_mut().get().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        self.get_mut().get().poll_shutdown(cx)
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else { return };
        if self.shed.is_cancelled() {
            return; // its descriptor is needed now
        }
        // The end of the response goes out now, not when a busy runtime gets to the task.
        // SAFETY: shutdown(2) on the descriptor `stream` owns; no memory involved.
        unsafe { libc::shutdown(std::os::fd::AsRawFd::as_raw_fd(&stream), libc::SHUT_WR) };
        // What already arrived is dropped here (a few reads at most, so that a client
        // sending fast cannot keep this runtime thread); if the client has closed its
        // side too, there is nothing to wait for.
        let mut buf = [0u8; 4096];
        for _ in 0..16 {
            match stream.try_read(&mut buf) {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return,
            }
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let Some(slot) = LingerSlot::take() else { return };
        rt.spawn(async move {
            let _slot = slot;
            drain(stream).await;
        });
    }
}

/// One of the [`MAX_LINGERING`] places, given back when its task ends or is dropped.
struct LingerSlot;

impl LingerSlot {
    /// A free place, or `None` when [`MAX_LINGERING`] sockets linger already.
    fn take() -> Option<LingerSlot> {
        LINGERING
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_LINGERING).then_some(n + 1))
            .ok()
            .map(|_| LingerSlot)
    }
}

impl Drop for LingerSlot {
    fn drop(&mut self) {
        LINGERING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads and drops what the client still sends until it closes its side or [`LINGER`]
/// has passed (the write side is already shut).
async fn drain(mut stream: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Serves `filter` on `listener` until `stop`, then lets open requests finish.
pub async fn serve<F>(listener: TcpListener, filter: F, stop: CancellationToken)
where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let graceful = GracefulShutdown::new();
    let conns = Arc::new(Conns::default());
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) despite the budget, or a connection
                // that died in the queue: make room if we can, then try again shortly.
                if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)) {
                    tracing::warn!(error = %e, connections = conns.len(), "accept failed: out of descriptors");
                    conns.shed_one();
                    // Give the shed connection's task the moment it needs to close it.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                } else if !matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::Interrupted
                ) {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            }
        };
        // A status change and the `finished` trigger right after it are two small writes:
        // Nagle plus delayed ACKs would hold the second one ~40 ms.
        let _ = stream.set_nodelay(true);
        let limit = budget();
        while conns.len() >= limit && conns.shed_one() {}
        let (conn, registered) = conns.add();
        let registered = Arc::new(registered);
        let svc = TowerToHyperService::new(warp::service(filter.clone()));
        let svc =
            Tracked { inner: svc, conn: conn.clone(), registered: registered.clone(), body: std::marker::PhantomData };
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _registered = registered;
            // hyper's header timer starts only once the first bytes arrived (the auto
            // builder reads them to tell HTTP/1 from HTTP/2): a connection that sends
            // nothing at all is bounded here.
            let mut byte = [0u8; 1];
            let first = tokio::select! {
                r = tokio::time::timeout(HEADER_READ_TIMEOUT, stream.peek(&mut byte)) => r,
                _ = conn.close.cancelled() => return,
            };
            if !matches!(first, Ok(Ok(n)) if n > 0) {
                return;
            }
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
            let io = Lingering { stream: Some(stream), shed: conn.close.clone() };
            let served = watcher.watch(builder.serve_connection_with_upgrades(TokioIo::new(io), svc));
            tokio::select! {
                r = served => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                _ = conn.close.cancelled() => tracing::debug!("idle connection closed to make room"),
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheds_the_longest_idle_and_never_a_busy_connection() {
        let conns = Arc::new(Conns::default());
        let (a, _ra) = conns.add();
        std::thread::sleep(Duration::from_millis(2));
        let (b, _rb) = conns.add();
        std::thread::sleep(Duration::from_millis(2));
        let (c, _rc) = conns.add();
        let busy_a = Busy::new(&a);
        assert!(conns.shed_one());
        assert!(b.close.is_cancelled() && !a.close.is_cancelled() && !c.close.is_cancelled());
        drop(busy_a); // a is idle again, since now: c has been idle longer
        assert!(conns.shed_one());
        assert!(c.close.is_cancelled() && !a.close.is_cancelled());
        let _busy = Busy::new(&a);
        assert!(!conns.shed_one(), "a busy connection is never shed");
        assert_eq!(conns.len(), 1);
    }
}
