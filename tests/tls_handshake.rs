//! The TLS door: unknown or absent SNI gets no certificate; known names
//! negotiate h2 and http/1.1; only TLS 1.2 and 1.3.

use std::sync::Arc;
use std::time::Duration;

use crate::support::{exchange, status_of, tls_connect, TestGateway};

const SITE: &str = r#"
[[site]]
hosts = ["jelly.test", "*.media.test"]
upstream = "http://127.0.0.1:9"
tls = "internal"
"#;

#[tokio::test]
async fn unknown_sni_is_refused_without_a_certificate() {
    let gw = TestGateway::start(SITE).await;
    let err = gw
        .tls_connect(Some("other.test"), &[b"h2"])
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("alert") || text.contains("HandshakeFailure"),
        "refused with an alert: {text}"
    );
}

#[tokio::test]
async fn missing_sni_is_refused() {
    let gw = TestGateway::start(SITE).await;
    let err = gw.tls_connect(None, &[b"h2"]).await.unwrap_err();
    assert!(err.to_string().contains("alert"), "{err}");
}

#[tokio::test]
async fn known_names_negotiate_h2_or_http11() {
    let gw = TestGateway::start(SITE).await;
    let h2 = gw
        .tls_connect(Some("jelly.test"), &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let h1 = gw
        .tls_connect(Some("JELLY.test"), &[b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(h1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let wildcard = gw
        .tls_connect(Some("films.media.test"), &[b"h2"])
        .await
        .unwrap();
    assert_eq!(wildcard.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let too_deep = gw.tls_connect(Some("a.films.media.test"), &[b"h2"]).await;
    assert!(too_deep.is_err(), "a wildcard covers one label only");
}

#[tokio::test]
async fn the_local_ca_sends_the_leaf_without_its_root() {
    let gw = TestGateway::start(SITE).await;
    let tls = gw.tls_connect(Some("jelly.test"), &[b"h2"]).await.unwrap();
    let chain = tls.get_ref().1.peer_certificates().unwrap();
    assert_eq!(
        chain.len(),
        1,
        "the root is the client's to trust, not to be sent"
    );
    use rustls::pki_types::pem::PemObject;
    let root =
        rustls::pki_types::CertificateDer::from_pem_slice(gw.ca_pem.as_ref().unwrap()).unwrap();
    assert_ne!(chain[0], root);
}

#[tokio::test]
async fn tls_below_1_2_is_refused() {
    // rustls cannot speak TLS 1.1, so offer a hand-made TLS 1.1 ClientHello and
    // expect an alert (content type 21) rather than a ServerHello (22).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = TestGateway::start(SITE).await;
    let mut tcp = tokio::net::TcpStream::connect(gw.https).await.unwrap();
    let name = b"jelly.test";
    let mut sni = vec![0x00, 0x00];
    let list_len = (name.len() + 3) as u16;
    sni.extend_from_slice(&(list_len + 2).to_be_bytes());
    sni.extend_from_slice(&list_len.to_be_bytes());
    sni.push(0);
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0);
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]);
    body.extend_from_slice(&[0x01, 0x00]);
    body.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    body.extend_from_slice(&sni);
    let mut hello = vec![0x01, 0x00];
    hello.extend_from_slice(&(body.len() as u16).to_be_bytes());
    hello.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hello.len() as u16).to_be_bytes());
    record.extend_from_slice(&hello);
    tcp.write_all(&record).await.unwrap();
    let mut answer = [0u8; 7];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(
        answer[0], 21,
        "an alert record, not a ServerHello: {answer:?}"
    );
}

/// A client trusting the gateway's CA that offers `offered`, in that order,
/// over `version`; its one session store is shared by every connection made
/// with it.
fn client_with(
    gw: &TestGateway,
    offered: &[rustls::SupportedCipherSuite],
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(gw.ca_pem.as_deref().unwrap()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: offered.to_vec(),
        ..rustls::crypto::ring::default_provider()
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// The suite negotiated when a client offers `offered`, in that order, over `version`.
async fn negotiated(
    gw: &TestGateway,
    offered: &[rustls::SupportedCipherSuite],
    version: &'static rustls::SupportedProtocolVersion,
) -> rustls::CipherSuite {
    let stream = tls_connect(
        gw.https,
        client_with(gw, offered, version),
        Some("jelly.test"),
    )
    .await
    .unwrap();
    stream
        .get_ref()
        .1
        .negotiated_cipher_suite()
        .unwrap()
        .suite()
}

#[tokio::test]
async fn a_returning_client_resumes_its_session_over_tls_1_3_and_1_2() {
    // An app or browser coming back resumes: no certificate sent or checked,
    // no signature made (and over TLS 1.2 one round trip less).
    use rustls::version::{TLS12, TLS13};
    use rustls::HandshakeKind;
    let gw = TestGateway::start(SITE).await;
    let suites = rustls::crypto::ring::default_provider().cipher_suites;
    for version in [&TLS13, &TLS12] {
        let client = client_with(&gw, &suites, version);
        let mut first = tls_connect(gw.https, client.clone(), Some("jelly.test"))
            .await
            .unwrap();
        assert_eq!(
            first.get_ref().1.handshake_kind(),
            Some(HandshakeKind::Full),
            "{version:?}"
        );
        // TLS 1.3 tickets come after the handshake: reading the answer takes them in.
        let request = b"GET / HTTP/1.1\r\nHost: jelly.test\r\nConnection: close\r\n\r\n";
        let (answer, closed) = exchange(&mut first, request, Duration::from_secs(5)).await;
        assert!(closed);
        assert_eq!(status_of(&answer), 502, "no upstream behind the site");
        let again = tls_connect(gw.https, client, Some("jelly.test"))
            .await
            .unwrap();
        assert_eq!(
            again.get_ref().1.handshake_kind(),
            Some(HandshakeKind::Resumed),
            "{version:?}"
        );
    }
}

#[tokio::test]
async fn aes_128_first_unless_the_client_prefers_chacha20() {
    use rustls::crypto::ring::cipher_suite as cs;
    use rustls::version::{TLS12, TLS13};
    use rustls::CipherSuite as Suite;
    let gw = TestGateway::start(SITE).await;
    // OpenSSL's order (AES-256 first): ours wins.
    let openssl = [
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS13_AES_128_GCM_SHA256,
    ];
    assert_eq!(
        negotiated(&gw, &openssl, &TLS13).await,
        Suite::TLS13_AES_128_GCM_SHA256
    );
    // A client without AES hardware asks for ChaCha20 first and gets it.
    let phone = [
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_AES_128_GCM_SHA256,
    ];
    assert_eq!(
        negotiated(&gw, &phone, &TLS13).await,
        Suite::TLS13_CHACHA20_POLY1305_SHA256
    );
    // Only AES-256 offered: still served.
    assert_eq!(
        negotiated(&gw, &[cs::TLS13_AES_256_GCM_SHA384], &TLS13).await,
        Suite::TLS13_AES_256_GCM_SHA384
    );
    // TLS 1.2 the same way.
    let tls12 = [
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ];
    assert_eq!(
        negotiated(&gw, &tls12, &TLS12).await,
        Suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    );
}
