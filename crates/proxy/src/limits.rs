//! Bounds on client connections (SPEC §8 "Bounds against clients"): a total cap, a cap per
//! remote peer, and a deadline for a connection's first request.
//!
//! - **Total**: at most `max_connections` client connections are open. When the proxy is
//!   full, a new connection takes the place of the one silent longest among those with
//!   no request in flight that have sent nothing while the proxy waited to read: for
//!   [`EVICT_SILENT_AFTER`] when no request came on it yet (a slow head, a client that
//!   sends nothing), for [`EVICT_IDLE_AFTER`] when it is a keep-alive connection idle
//!   between requests (which HTTP lets a server close, though a request the client sends
//!   at that moment fails). A connection with
//!   bytes the proxy has not read yet (it is busy) is never taken for one. When there is
//!   none, the proxy stops accepting until a connection closes or goes silent, and new
//!   connections wait in the kernel's queue. So 1,100 connections that never finish their
//!   head cannot lock a real client out, and 1,000 real clients are served in turn, never
//!   with a `Too many open files`.
//! - **Per peer**: a remote (non-loopback) address holds at most `max_connections_per_peer`
//!   of them; more are closed at once. Loopback peers are the machine's own users, bounded
//!   by the total alone.
//! - **First head**: a connection must complete a request that passes the access check
//!   within [`FIRST_HEAD_DEADLINE`] of being accepted, or it is closed.
//!
//! The default cap follows the open-file limit: each client connection may hold one
//! connection to a gateway and, for a moment, a second one being opened or closed, so it
//! is a third of what the limit leaves after a reserve. Websockets are counted until
//! their upgrade, not after.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

/// How long a connection may take to complete its first accepted request.
pub const FIRST_HEAD_DEADLINE: Duration = Duration::from_secs(10);

/// How long a connection that has not sent a request yet may stay silent (while the proxy
/// waits to read from it) and keep its place when the proxy is full and another waits.
pub const EVICT_SILENT_AFTER: Duration = Duration::from_millis(500);

/// The same for a keep-alive connection idle between requests: longer, since closing one
/// races with the client reusing it (a request sent at that moment fails).
pub const EVICT_IDLE_AFTER: Duration = Duration::from_secs(5);

/// The most client connections by default, whatever the open-file limit.
pub const MAX_CONNECTIONS_CEILING: usize = 8192;

/// The most bytes hyper buffers for one connection, each way (its default is about
/// 400 KiB): with hundreds of uploads in flight, buffers this size keep the proxy's memory
/// within its bound (at 64 KiB, 200 stalled uploads peaked anywhere from 143 to 199 MiB,
/// over the 192 MiB bound). It also bounds a request head: a larger one gets 431.
pub(crate) const CONNECTION_BUFFER_BYTES: usize = 16 * 1024;

/// File descriptors kept for everything but client connections and their upstream ones
/// (the listener, the store, token commands, logs, connections closing), besides the idle
/// upstream pool.
const RESERVED_FDS: u64 = 128;

/// How often a full proxy looks again for a silent connection to close.
const RECHECK_WHEN_FULL: Duration = Duration::from_millis(100);

/// Raises the soft open-file limit to the hard one (Linux and macOS allow it without
/// privileges), and returns the soft limit now in force, if it can be read.
pub fn raise_open_file_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    // macOS refuses a soft limit over OPEN_MAX (10240) even when the hard one is unlimited.
    let wanted = if cfg!(target_os = "macos") {
        hard.min(10_240)
    } else {
        hard
    };
    if wanted > soft && setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).is_ok() {
        return Some(wanted);
    }
    Some(soft)
}

/// The default total cap for `providers` providers under the current open-file limit.
pub(crate) fn default_max_connections(providers: usize, idle_per_provider: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    let idle = u64::try_from(providers.saturating_mul(idle_per_provider)).unwrap_or(u64::MAX);
    let left = soft.saturating_sub(RESERVED_FDS.saturating_add(idle)) / 3;
    usize::try_from(left)
        .unwrap_or(usize::MAX)
        .clamp(16, MAX_CONNECTIONS_CEILING)
}

/// The open client connections.
#[derive(Debug)]
pub(crate) struct Slots {
    max: usize,
    max_per_peer: usize,
    first_request_deadline: Duration,
    state: Mutex<State>,
    /// A connection closed.
    freed: Notify,
}

#[derive(Debug, Default)]
struct State {
    open: usize,
    /// Open connections of each remote (non-loopback) peer.
    per_peer: HashMap<IpAddr, usize>,
    /// Every open connection, oldest first.
    open_conns: BTreeMap<u64, Open>,
    next_id: u64,
}

#[derive(Debug)]
struct Open {
    activity: Arc<Activity>,
    evict: oneshot::Sender<()>,
}

/// What a connection's reads say about it.
#[derive(Debug)]
pub(crate) struct Activity {
    /// When it last sent a byte (or was accepted), in ms since [`epoch`].
    last_byte_ms: AtomicU64,
    /// The proxy's last read found nothing to read: it waits on the client.
    waiting: AtomicBool,
    /// Requests whose answer has not ended.
    in_flight: AtomicUsize,
    /// A request has come on it.
    had_request: AtomicBool,
    /// The socket, to look for bytes not read yet.
    fd: RawFd,
}

/// The start of the proxy's millisecond clock ([`Activity`], upload progress).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub(crate) fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Activity {
    fn new(fd: RawFd) -> Self {
        Self {
            last_byte_ms: AtomicU64::new(now_ms()),
            waiting: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            had_request: AtomicBool::new(false),
            fd,
        }
    }

    /// How long it has been silent with no request in flight while the proxy waited to
    /// read, if it has, and how long it may be before it can give its place up.
    fn silent_for(&self, now_ms: u64) -> Option<(u64, Duration)> {
        let idle =
            self.waiting.load(Ordering::Relaxed) && self.in_flight.load(Ordering::Relaxed) == 0;
        let bound = if self.had_request.load(Ordering::Relaxed) {
            EVICT_IDLE_AFTER
        } else {
            EVICT_SILENT_AFTER
        };
        idle.then(|| {
            let silent = now_ms.saturating_sub(self.last_byte_ms.load(Ordering::Relaxed));
            (silent, bound)
        })
    }

    /// Whether the client sent bytes the proxy has not read yet (a look, not a read).
    fn has_unread_bytes(&self) -> bool {
        use nix::sys::socket::{MsgFlags, recv};
        let mut byte = [0u8; 1];
        matches!(
            recv(self.fd, &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT),
            Ok(n) if n > 0
        )
    }
}

impl Slots {
    pub(crate) fn new(
        max: usize,
        max_per_peer: usize,
        first_request_deadline: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            max_per_peer: max_per_peer.max(1),
            first_request_deadline,
            state: Mutex::default(),
            freed: Notify::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent under every panic-free path; a poisoned lock is taken.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until a new connection may be accepted: a place is free, or a connection with
    /// no request in flight has been silent while the proxy waited on it for
    /// [`EVICT_SILENT_AFTER`] (no request yet) or [`EVICT_IDLE_AFTER`] (idle between
    /// requests); the one silent longest is closed.
    pub(crate) async fn room(&self) {
        loop {
            let freed = self.freed.notified();
            {
                let mut state = self.state();
                if state.open < self.max {
                    return;
                }
                let now = now_ms();
                let mut silent: Vec<(u64, u64)> = state
                    .open_conns
                    .iter()
                    .filter_map(|(id, o)| {
                        let (silent, bound) = o.activity.silent_for(now)?;
                        let bound = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
                        (silent >= bound).then_some((silent, *id))
                    })
                    .collect();
                // The one silent longest, unless it has sent what the proxy has not read.
                silent.sort_unstable_by(|a, b| b.cmp(a));
                let chosen = silent.into_iter().map(|(_, id)| id).find(|id| {
                    state
                        .open_conns
                        .get(id)
                        .is_some_and(|o| !o.activity.has_unread_bytes())
                });
                if let Some(id) = chosen
                    && let Some(evicted) = state.open_conns.remove(&id)
                {
                    let _ = evicted.evict.send(());
                    // Its place is taken now: the closing task does not give it back.
                    state.open = state.open.saturating_sub(1);
                    return;
                }
            }
            tokio::select! {
                () = freed => {}
                () = tokio::time::sleep(RECHECK_WHEN_FULL) => {}
            }
        }
    }

    /// Takes a place for a connection from `peer`; `None` when that peer holds its share.
    pub(crate) fn take(self: &Arc<Self>, peer: IpAddr, fd: RawFd) -> Option<Slot> {
        let (evict_tx, evicted) = oneshot::channel();
        let activity = Arc::new(Activity::new(fd));
        let mut state = self.state();
        let remote = !peer.is_loopback();
        if remote {
            let held = state.per_peer.entry(peer).or_default();
            if *held >= self.max_per_peer {
                return None;
            }
            *held += 1;
        }
        state.open += 1;
        let id = state.next_id;
        state.next_id += 1;
        state.open_conns.insert(
            id,
            Open {
                activity: activity.clone(),
                evict: evict_tx,
            },
        );
        Some(Slot {
            slots: self.clone(),
            id,
            peer: remote.then_some(peer),
            evicted,
            was_evicted: false,
            proven: Arc::new(AtomicBool::new(false)),
            activity,
        })
    }

    /// The open connections.
    pub(crate) fn open(&self) -> usize {
        self.state().open
    }

    /// The most connections open at once.
    pub(crate) fn max(&self) -> usize {
        self.max
    }
}

/// One client connection's place; given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<Slots>,
    id: u64,
    /// The remote peer whose share it counts in.
    peer: Option<IpAddr>,
    evicted: oneshot::Receiver<()>,
    /// It was evicted (its place already handed over).
    was_evicted: bool,
    proven: Arc<AtomicBool>,
    activity: Arc<Activity>,
}

impl Slot {
    /// The connection's socket, its reads watched for [`Slots::room`].
    pub(crate) fn watch<T>(&self, io: T) -> Watched<T> {
        Watched {
            io,
            activity: self.activity.clone(),
        }
    }

    /// What the request handler marks when a request passed the access check.
    pub(crate) fn proof(&self) -> Proof {
        Proof {
            proven: self.proven.clone(),
            activity: self.activity.clone(),
        }
    }

    /// Resolves when the connection must close: its place went to a waiting one, or no
    /// request passed the access check within [`FIRST_HEAD_DEADLINE`] (or the configured
    /// deadline).
    pub(crate) async fn must_close(&mut self) {
        let deadline = tokio::time::sleep(self.slots.first_request_deadline);
        let mut deadline = std::pin::pin!(deadline);
        let mut armed = true;
        loop {
            tokio::select! {
                evicted = &mut self.evicted => {
                    self.was_evicted = evicted.is_ok();
                    return;
                }
                () = &mut deadline, if armed => {
                    if !self.proven.load(Ordering::Acquire) {
                        return;
                    }
                    armed = false;
                }
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let evicted = self.was_evicted || self.evicted.try_recv().is_ok();
        let mut state = self.slots.state();
        state.open_conns.remove(&self.id);
        // An evicted connection's place was handed over when it was evicted.
        if !evicted {
            state.open = state.open.saturating_sub(1);
        }
        if let Some(peer) = self.peer
            && let Some(held) = state.per_peer.get_mut(&peer)
        {
            *held = held.saturating_sub(1);
            if *held == 0 {
                state.per_peer.remove(&peer);
            }
        }
        drop(state);
        self.slots.freed.notify_one();
    }
}

/// What a connection's requests report: one passed the access check, one is in flight.
#[derive(Debug, Clone)]
pub(crate) struct Proof {
    proven: Arc<AtomicBool>,
    activity: Arc<Activity>,
}

impl Proof {
    /// A request passed the access check: the first-head deadline no longer applies.
    pub(crate) fn mark(&self) {
        self.proven.store(true, Ordering::Release);
    }

    /// A request is in flight until the returned guard is dropped (with its answer's body).
    pub(crate) fn in_flight(&self) -> InFlight {
        self.activity.in_flight.fetch_add(1, Ordering::Relaxed);
        self.activity.had_request.store(true, Ordering::Relaxed);
        InFlight(self.activity.clone())
    }
}

/// A request in flight on a connection (see [`Proof::in_flight`]).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One more in a count (answers of a provider in flight), one less when the last clone is
/// dropped. Rides in an answer's extensions to the server's body wrapper.
#[derive(Clone)]
pub(crate) struct Counted {
    _count: Arc<CountedInner>,
}

struct CountedInner(Arc<AtomicU64>);

impl Counted {
    pub(crate) fn new(count: Arc<AtomicU64>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self {
            _count: Arc::new(CountedInner(count)),
        }
    }
}

impl Drop for CountedInner {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An answer's body that keeps its request counted in flight until it ends, on its
/// connection and, for a provider's answer, for the provider.
pub(crate) struct Tracked {
    body: crate::body::Body,
    _in_flight: InFlight,
    _provider: Option<Counted>,
}

impl Tracked {
    pub(crate) fn new(
        body: crate::body::Body,
        in_flight: InFlight,
        provider: Option<Counted>,
    ) -> Self {
        Self {
            body,
            _in_flight: in_flight,
            _provider: provider,
        }
    }
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A client socket whose reads are recorded in its [`Activity`].
#[derive(Debug)]
pub(crate) struct Watched<T> {
    io: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        match &polled {
            Poll::Pending => self.activity.waiting.store(true, Ordering::Relaxed),
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                self.activity
                    .last_byte_ms
                    .store(now_ms(), Ordering::Relaxed);
                self.activity.waiting.store(false, Ordering::Relaxed);
            }
            Poll::Ready(_) => {}
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
