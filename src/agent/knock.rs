//! The way to the edge: TLS to one of its sites like any browser, the
//! channel's exporter, and the HTTP/1.1 Upgrade knock whose answer carries
//! the edge's proof, checked against the pin the token gave.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::AgentError;
use crate::socket::rewind::Rewind;
use crate::tunnel::protocol::{self, Knock, Proof};
use crate::tunnel::trust::PinnedServer;

/// TLS 1.3 to the edge as any browser dials it (`http/1.1`); the edge's key
/// is checked inside the connection (`knock`), not by its certificate.
pub(super) fn client_config() -> Result<Arc<ClientConfig>, AgentError> {
    let provider = suites_for(crate::tls::provider(), aes_in_hardware());
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServer::proven_inside()))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `provider` with ChaCha20-Poly1305 first when the CPU has no AES
/// instructions (a small ARM board at home): the edge then chooses it,
/// cheaper there than AES in software; otherwise as it is (AES-GCM first,
/// the cheaper with AES instructions: `docs/performance.md`).
fn suites_for(
    mut provider: rustls::crypto::CryptoProvider,
    aes: bool,
) -> rustls::crypto::CryptoProvider {
    if !aes {
        let chacha = |suite: &rustls::SupportedCipherSuite| {
            suite.suite() == rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        };
        provider.cipher_suites.sort_by_key(|suite| !chacha(suite));
    }
    provider
}

/// Whether this CPU does AES-GCM in hardware.
fn aes_in_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// TCP to `edge` (`host:port`) with TLS on top for the site `name`.
pub(super) async fn dial(
    edge: &str,
    name: &str,
    config: Arc<ClientConfig>,
) -> Result<TlsStream<Rewind>, String> {
    let name = ServerName::try_from(name.to_string())
        .map_err(|_| format!("`{name}` is not a host name"))?;
    let stream = TcpStream::connect(edge).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10));
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    TlsConnector::from(config)
        .connect(name, Rewind::new(stream))
        .await
        .map_err(|e| format!("TLS: {e} (is the token's site name one of the edge's sites?)"))
}

/// The connection's 32 exporter bytes the proofs are bound to.
pub(super) fn exporter(stream: &TlsStream<Rewind>) -> Result<[u8; 32], String> {
    let mut exported = [0u8; 32];
    stream
        .get_ref()
        .1
        .export_keying_material(&mut exported, protocol::EXPORTER_LABEL, None)
        .map_err(|e| e.to_string())?;
    Ok(exported)
}

/// The edge's answer to a knock: its status, headers and body (read only
/// when it says how long it is, for an enrolment).
pub(super) struct EdgeAnswer {
    pub(super) status: u16,
    pub(super) headers: http::HeaderMap,
    pub(super) body: Vec<u8>,
}

/// Sends `knock` on `stream` and reads the edge's answer, whose proof must
/// be the key pinned as `edge_pin` on this connection.
pub(super) async fn knock(
    stream: &mut TlsStream<Rewind>,
    knock: &Knock,
    host: &str,
    edge_pin: &str,
    exported: &[u8; 32],
) -> Result<EdgeAnswer, String> {
    stream
        .write_all(knock.request_head(host).as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    // Byte by byte up to the blank line: whatever follows is the link's
    // (the edge's HTTP/2 preface), not the answer's.
    let mut head = Vec::with_capacity(1024);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err("an answer head over 16 KiB".to_string());
        }
        match stream.read_u8().await {
            Ok(byte) => head.push(byte),
            Err(error) => return Err(format!("no answer to the knock: {error}")),
        }
    }
    let mut parsed_headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut parsed_headers);
    if !matches!(parsed.parse(&head), Ok(httparse::Status::Complete(_))) {
        return Err("an answer that is not HTTP".to_string());
    }
    let mut headers = http::HeaderMap::new();
    for h in parsed.headers.iter() {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(h.name.as_bytes()),
            http::HeaderValue::from_bytes(h.value),
        ) {
            headers.append(name, value);
        }
    }
    let status = parsed.code.unwrap_or(0);
    let proven = Proof::from_headers(&headers, protocol::EDGE, protocol::EDGE_PROOF)
        .and_then(|proof| proof.verify(protocol::EDGE_SIGNS, exported));
    if proven.as_deref() != Some(edge_pin) {
        return Err(format!(
            "it answered {status} without the pinned key's proof: not this agent's edge (an impostor, or another edge), or its tunnel is off (no site uses it), or it does not know this agent"
        ));
    }
    let length = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(0)
        .min(64 * 1024);
    let mut body = vec![0u8; length];
    stream
        .read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    Ok(EdgeAnswer {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::suites_for;
    use rustls::CipherSuite;

    #[test]
    fn without_aes_in_hardware_the_agent_asks_for_chacha20_first() {
        let first = |aes| suites_for(crate::tls::provider(), aes).cipher_suites[0].suite();
        assert_eq!(first(false), CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
        assert_eq!(first(true), CipherSuite::TLS13_AES_128_GCM_SHA256);
        let all = |aes| suites_for(crate::tls::provider(), aes).cipher_suites.len();
        assert_eq!(all(false), all(true), "the same suites, in another order");
    }
}
