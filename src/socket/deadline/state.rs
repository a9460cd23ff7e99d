//! What the service tells a connection's IO: requests in flight, an
//! upgrade, a head with ambiguous framing, a wish to read ahead.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// What the service tells the IO about the connection.
#[derive(Debug, Default)]
pub struct ConnState {
    pub(super) in_flight: AtomicUsize,
    /// Bumped whenever `in_flight` changes, so the IO can restart its clocks.
    pub(super) epoch: AtomicU64,
    pub(super) upgraded: AtomicBool,
    /// Woken when a request ends, so the idle clock restarts at once.
    pub(super) waker: atomic_waker::AtomicWaker,
    /// The head being read named both Content-Length and Transfer-Encoding.
    pub(super) ambiguous: AtomicBool,
    /// Bytes the socket should read at once from now on (0: as asked): set
    /// when the connection became an agent's tunnel (`rewind.rs`).
    pub(super) read_ahead: AtomicUsize,
}

impl ConnState {
    /// A request head was parsed and is being served.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Whether the last request head named both Content-Length and
    /// Transfer-Encoding (read from the raw bytes: hyper drops Content-Length
    /// in that case before the head reaches us). Clears the mark.
    pub fn take_ambiguous_framing(&self) -> bool {
        self.ambiguous.swap(false, Ordering::AcqRel)
    }

    /// The connection now carries an upgraded protocol: no deadlines any more.
    pub fn mark_upgraded(&self) {
        self.upgraded.store(true, Ordering::Release);
    }

    /// From now on the socket reads up to `size` bytes at once (a tunnel
    /// connection carries films; see `rewind.rs`).
    pub fn read_ahead(&self, size: usize) {
        self.read_ahead.store(size, Ordering::Relaxed);
    }

    /// What `read_ahead` asked for (0: nothing).
    pub fn wants_read_ahead(&self) -> usize {
        self.read_ahead.load(Ordering::Relaxed)
    }
}

/// Held while a request is in flight (until its response body is done).
#[derive(Debug)]
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.epoch.fetch_add(1, Ordering::AcqRel);
        self.0.waker.wake();
    }
}
