//! What each cipher suite the agent may negotiate costs per GiB
//! (`docs/performance.md`, issue 33): the agent is the tunnel's TLS client
//! and encrypts a film on its way to the edge, which decrypts it. For each
//! TLS 1.3 suite of drawbridge's provider (the edge's order prefers
//! AES-128-GCM unless the client puts ChaCha20 first), one connection in
//! memory, 1 GiB written by the client in 16 KiB writes: the time spent
//! encrypting (the client's part) and decrypting (the server's), on one
//! core, nothing else in the way. The rest of the agent's CPU per GiB
//! (tokio, hyper, h2) is the same whatever the suite.
//!
//!     cargo run --release --example cipher_cost

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::ring::{cipher_suite as cs, default_provider};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
};
use tokio::time::Instant;

/// Moves what `from` has to send into `to`.
fn pump(from: &mut Connection, to: &mut Connection) {
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire).expect("into memory");
    }
    let mut read = &wire[..];
    while !read.is_empty() {
        to.read_tls(&mut read).expect("from memory");
        to.process_new_packets().expect("a good record");
    }
}

fn main() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["edge.test".to_string()]).expect("a certificate");
    let der = certified.cert.der().clone();
    let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der()).expect("a key");
    const TOTAL: usize = 1 << 30;
    // Twice: the first round pays for the process's first touch of its
    // buffers; the second is printed.
    for round in 0..2 {
        for (name, suite) in [
            ("TLS13_AES_128_GCM_SHA256", cs::TLS13_AES_128_GCM_SHA256),
            ("TLS13_AES_256_GCM_SHA384", cs::TLS13_AES_256_GCM_SHA384),
            (
                "TLS13_CHACHA20_POLY1305_SHA256",
                cs::TLS13_CHACHA20_POLY1305_SHA256,
            ),
        ] {
            let provider = Arc::new(CryptoProvider {
                cipher_suites: vec![suite],
                ..default_provider()
            });
            let server = ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("TLS 1.3")
                .with_no_client_auth()
                .with_single_cert(vec![der.clone()], key.clone_key())
                .expect("the certificate");
            let mut roots = RootCertStore::empty();
            roots.add(der.clone()).expect("a root");
            let client = ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("TLS 1.3")
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name_of = ServerName::try_from("edge.test").expect("a name");
            let mut agent = Connection::Client(
                ClientConnection::new(Arc::new(client), name_of).expect("a client"),
            );
            let mut edge =
                Connection::Server(ServerConnection::new(Arc::new(server)).expect("a server"));
            agent.set_buffer_limit(None);
            edge.set_buffer_limit(None);
            while agent.is_handshaking() || edge.is_handshaking() {
                pump(&mut agent, &mut edge);
                pump(&mut edge, &mut agent);
            }
            let chunk = vec![7u8; 16 * 1024];
            let mut sink = vec![0u8; 1 << 20];
            let mut wire = Vec::with_capacity(2 << 20);
            let (mut encrypting, mut decrypting) = (Duration::ZERO, Duration::ZERO);
            let mut sent = 0;
            while sent < TOTAL {
                let started = Instant::now();
                for _ in 0..64 {
                    agent.writer().write_all(&chunk).expect("into memory");
                }
                wire.clear();
                while agent.wants_write() {
                    agent.write_tls(&mut wire).expect("into memory");
                }
                encrypting += started.elapsed();
                let started = Instant::now();
                let mut read = &wire[..];
                while !read.is_empty() {
                    edge.read_tls(&mut read).expect("from memory");
                    edge.process_new_packets().expect("a good record");
                    while let Ok(n) = edge.reader().read(&mut sink) {
                        if n == 0 {
                            break;
                        }
                    }
                }
                decrypting += started.elapsed();
                sent += 64 * chunk.len();
            }
            let per_gib = |d: Duration| d.as_secs_f64() * (1 << 30) as f64 / sent as f64;
            if round == 0 {
                continue;
            }
            println!(
                "{name}: the agent encrypts a GiB in {:.2} s, the edge decrypts it in {:.2} s",
                per_gib(encrypting),
                per_gib(decrypting)
            );
        }
    }
}
