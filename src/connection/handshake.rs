//! The TLS handshake, bounded in time, and the readiness the deadline layer
//! asks of a TLS stream.

use std::task::{Context, Poll};

use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use super::Shared;
use crate::config::normalise_host;
use crate::socket::deadline::Readiness;
use crate::socket::rewind::Rewind;
use crate::tls::challenges::ACME_TLS_ALPN;
use crate::tls::failures::HandshakeFailure;
use crate::tls::FIRST_CERTIFICATE_WAIT;

/// How long a banned home address's connection may take to send its
/// ClientHello (an agent sends it at once).
const BANNED_HELLO_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The TLS handshake, each half bounded by `handshake_timeout`. Between
/// them, a ClientHello for an ACME site whose first certificate is being
/// ordered waits up to `FIRST_CERTIFICATE_WAIT`; an unknown name is refused by
/// the resolver with an alert. `agent_only`: the address is banned but is
/// the household's (an agent attached from it): its ClientHello gets a short
/// wait, and what follows the handshake must be the agent's knock.
pub(super) async fn handshake(
    stream: Rewind,
    shared: &Shared,
    agent_only: bool,
) -> Option<TlsStream<Rewind>> {
    let bound = shared.limits.handshake_timeout;
    // An agent sends its ClientHello at once; a banned address gets no
    // longer than that to show it is one.
    let hello_bound = if agent_only {
        bound.min(BANNED_HELLO_WAIT)
    } else {
        bound
    };
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let start = match tokio::time::timeout(hello_bound, acceptor).await {
        Ok(Ok(start)) => start,
        Ok(Err(error)) => {
            tracing::debug!(%error, "not a TLS ClientHello");
            shared.handshake_failures.count(HandshakeFailure::NotTls);
            return None;
        }
        Err(_) => {
            tracing::debug!("TLS ClientHello not received in time");
            shared.handshake_failures.count(HandshakeFailure::TimedOut);
            return None;
        }
    };
    let hello = start.client_hello();
    // A CA validating TLS-ALPN-01 is the reason the site is pending: never make it wait.
    let validation = hello
        .alpn()
        .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN));
    if !validation {
        let name = hello.server_name().and_then(normalise_host);
        let served = name
            .as_deref()
            .is_some_and(|name| shared.gateway.routes().site(name).is_some());
        if !served {
            shared.handshake_failures.names.asked(name.as_deref());
        }
    }
    let waits = !validation;
    let config = shared.tls.for_hello(&hello);
    if let Some(sni) = hello
        .server_name()
        .and_then(normalise_host)
        .filter(|_| waits)
    {
        if shared.certificates.is_pending(&sni) {
            tracing::debug!(sni, "waiting for the first certificate of this site");
            shared
                .certificates
                .wait_for_first(&sni, FIRST_CERTIFICATE_WAIT)
                .await;
        }
    }
    match tokio::time::timeout(bound, start.into_stream(config)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(%error, "TLS handshake refused");
            shared.handshake_failures.count(HandshakeFailure::Refused);
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake not finished in time");
            shared.handshake_failures.count(HandshakeFailure::TimedOut);
            None
        }
    }
}

impl Readiness for TlsStream<Rewind> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_ref().0.poll_read_ready(cx)
    }
}
