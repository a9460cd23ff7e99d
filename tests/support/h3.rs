//! A real HTTP/3 client for the tests: quinn with the `h3` crate (the
//! stack drawbridge serves with), from a chosen loopback address.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{Request, Response};

use super::{client_config, TestGateway};

/// One HTTP/3 connection to the gateway.
pub struct H3 {
    pub send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    pub endpoint: quinn::Endpoint,
}

pub async fn connect(gw: &TestGateway, from: &str, sni: &str) -> Result<H3, String> {
    let quic = gw.quic.expect("HTTP/3 is on by default");
    connect_to(gw.ca_pem.as_deref().unwrap(), quic, from, sni).await
}

/// One HTTP/3 connection to `quic`, trusting `ca_pem`, from the loopback
/// address `from`.
pub async fn connect_to(
    ca_pem: &[u8],
    quic: SocketAddr,
    from: &str,
    sni: &str,
) -> Result<H3, String> {
    let tls = client_config(ca_pem, &[b"h3"]);
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let bind: SocketAddr = format!("{from}:0").parse().unwrap();
    let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let connecting = endpoint.connect(quic, sni).map_err(|e| e.to_string())?;
    let connection = tokio::time::timeout(std::time::Duration::from_secs(5), connecting)
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(connection))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    Ok(H3 { send, endpoint })
}

impl H3 {
    /// One request: its answer's head and whole body.
    pub async fn send(
        &mut self,
        request: Request<()>,
        body: Option<Bytes>,
    ) -> Result<(Response<()>, Bytes), String> {
        let mut stream = self
            .send
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(body) = body {
            stream.send_data(body).await.map_err(|e| e.to_string())?;
        }
        stream.finish().await.map_err(|e| e.to_string())?;
        let response = stream.recv_response().await.map_err(|e| e.to_string())?;
        let mut body = BytesMut::new();
        while let Some(mut chunk) = stream.recv_data().await.map_err(|e| e.to_string())? {
            body.put(chunk.copy_to_bytes(chunk.remaining()));
        }
        Ok((response, body.freeze()))
    }

    pub async fn get(
        &mut self,
        authority: &str,
        path: &str,
    ) -> Result<(Response<()>, Bytes), String> {
        let request = Request::get(format!("https://{authority}{path}"))
            .body(())
            .unwrap();
        self.send(request, None).await
    }
}
