//! An HTTP/3 load generator for `bench/run --http3` (Debian's h2load is
//! built without QUIC): `connections` QUIC connections, each keeping
//! `streams` GET requests in flight for `seconds`, on one thread. Prints
//! one line: `requests failures seconds`.
//!
//!     h3load ADDRESS SERVER_NAME PATH CA_FILE CONNECTIONS STREAMS SECONDS
//!
//! Built on the same quinn + h3 as drawbridge's server, so it measures
//! drawbridge and Caddy alike with one client.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Buf;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, name, path, ca, connections, streams, seconds] = &args[..] else {
        eprintln!("usage: h3load ADDRESS SERVER_NAME PATH CA_FILE CONNECTIONS STREAMS SECONDS");
        std::process::exit(2);
    };
    let address: SocketAddr = address.parse().expect("an address:port");
    let connections: usize = connections.parse().expect("a number of connections");
    let streams: usize = streams.parse().expect("a number of streams");
    let seconds: f64 = seconds.parse().expect("a number of seconds");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (done, failed, took) = runtime.block_on(run(
        address,
        name.clone(),
        path.clone(),
        ca,
        connections,
        streams,
        Duration::from_secs_f64(seconds),
    ));
    println!("{done} {failed} {took:.3}");
}

async fn run(
    address: SocketAddr,
    name: String,
    path: String,
    ca: &str,
    connections: usize,
    streams: usize,
    length: Duration,
) -> (u64, u64, f64) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("the CA file") {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));

    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for _ in 0..connections {
        let connection = endpoint
            .connect(address, &name)
            .unwrap()
            .await
            .expect("the handshake");
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(connection))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        senders.push(send);
    }
    let started = Instant::now();
    let until = started + length;
    let mut tasks = tokio::task::JoinSet::new();
    for send in &senders {
        for _ in 0..streams {
            let mut send = send.clone();
            let uri = format!("https://{name}{path}");
            let (done, failed) = (done.clone(), failed.clone());
            tasks.spawn(async move {
                while Instant::now() < until {
                    let request = http::Request::get(&uri).body(()).unwrap();
                    match one(&mut send, request).await {
                        Ok(true) => done.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
    }
    while tasks.join_next().await.is_some() {}
    let took = started.elapsed().as_secs_f64();
    (
        done.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        took,
    )
}

/// One request; `true` when it was answered 2xx with its whole body.
async fn one(
    send: &mut h3::client::SendRequest<h3_quinn::OpenStreams, bytes::Bytes>,
    request: http::Request<()>,
) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    let mut stream = send.send_request(request).await?;
    stream.finish().await?;
    let response = stream.recv_response().await?;
    while let Some(mut chunk) = stream.recv_data().await? {
        chunk.advance(chunk.remaining());
    }
    Ok(response.status().is_success())
}
