//! Accepting TCP connections: one loop per listener, a span per connection,
//! each served in the process's task tracker until shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::connection::{self, ListenerKind, Shared};

/// Accepts on `listener` until `shutdown`; each connection is served with
/// `drain` as its own shutdown signal.
pub(super) async fn accept_loop(
    listener: TcpListener,
    kind: ListenerKind,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    drain: CancellationToken,
) {
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(listener = %local, tls = kind.tls, proxy_protocol = kind.proxy_protocol, "listening");
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Debug level, like each request's span: it is entered at every poll
        // (cost in docs/performance.md). Warnings name the client themselves.
        let span = tracing::debug_span!("conn", client.addr = %peer, listener = %local, tls.sni = tracing::field::Empty);
        tracker.spawn(
            connection::serve(stream, peer, kind, shared.clone(), drain.clone()).instrument(span),
        );
    }
}
