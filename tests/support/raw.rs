//! Requests exactly as written: a target that reqwest (through the `url`
//! crate) would respell — dot segments, backslashes, escapes — sent over
//! HTTP/1.1 as raw bytes or over HTTP/2 as a raw `:path`, from a chosen
//! loopback address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{exchange, TestGateway};

/// Which protocol a raw request goes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1, the request line written by hand.
    H1,
    /// HTTP/2, the `:path` set by hand.
    H2,
}

/// What came back.
#[derive(Debug)]
pub enum Answer {
    /// A response.
    Response {
        status: u16,
        headers: HeaderMap,
        body: Vec<u8>,
    },
    /// The connection was refused or closed without a response.
    Closed,
}

impl Answer {
    /// The status, or 0 for a connection closed without one.
    pub fn status(&self) -> u16 {
        match self {
            Answer::Response { status, .. } => *status,
            Answer::Closed => 0,
        }
    }

    /// A response header's value, if any.
    pub fn header(&self, name: &str) -> Option<String> {
        match self {
            Answer::Response { headers, .. } => headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            Answer::Closed => None,
        }
    }

    /// The body as text.
    pub fn text(&self) -> String {
        match self {
            Answer::Response { body, .. } => String::from_utf8_lossy(body).into_owned(),
            Answer::Closed => String::new(),
        }
    }
}

/// One request, its pieces as they go on the wire.
#[derive(Debug, Clone, Copy)]
pub struct Raw<'a> {
    pub proto: Proto,
    /// The local address to connect from (stands for one person).
    pub from: &'a str,
    pub host: &'a str,
    pub method: &'a str,
    /// The request target, sent exactly as given.
    pub target: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

impl Raw<'_> {
    /// A GET of `target` on `host` from 127.0.0.1 over `proto`.
    pub fn get<'a>(proto: Proto, host: &'a str, target: &'a str) -> Raw<'a> {
        Raw {
            proto,
            from: "127.0.0.1",
            host,
            method: "GET",
            target,
            headers: &[],
            body: b"",
        }
    }
}

/// A TCP connection to `to` from the loopback address `from`.
pub async fn tcp_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    socket.connect(to).await
}

/// A TLS connection to the gateway from `from`, for `host`, offering `proto`.
pub async fn tls(
    gw: &TestGateway,
    from: &str,
    host: &str,
    proto: Proto,
) -> std::io::Result<TlsStream<TcpStream>> {
    let alpn: &[&[u8]] = match proto {
        Proto::H1 => &[b"http/1.1"],
        Proto::H2 => &[b"h2"],
    };
    let tcp = tcp_from(from, gw.https).await?;
    let name = ServerName::try_from(host.to_string()).unwrap();
    TlsConnector::from(Arc::new((*gw.tls_client(alpn)).clone()))
        .connect(name, tcp)
        .await
}

/// Sends `raw` on a new TLS connection to the gateway and returns the answer.
pub async fn send(gw: &TestGateway, raw: Raw<'_>) -> Answer {
    let Ok(mut stream) = tls(gw, raw.from, raw.host, raw.proto).await else {
        return Answer::Closed;
    };
    match raw.proto {
        Proto::H1 => {
            let mut head = format!(
                "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
                raw.method, raw.target, raw.host
            );
            for (name, value) in raw.headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            if !raw.body.is_empty() {
                head.push_str(&format!("Content-Length: {}\r\n", raw.body.len()));
            }
            head.push_str("\r\n");
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(raw.body);
            let (received, _) = exchange(&mut stream, &bytes, Duration::from_secs(10)).await;
            parse_h1(&received)
        }
        Proto::H2 => {
            let Ok((mut sender, connection)) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
            else {
                return Answer::Closed;
            };
            tokio::spawn(connection);
            let uri = Uri::builder()
                .scheme("https")
                .authority(raw.host)
                .path_and_query(raw.target)
                .build()
                .expect("a target http::Uri accepts");
            let mut request = Request::builder().method(raw.method).uri(uri);
            for (name, value) in raw.headers {
                request = request.header(*name, *value);
            }
            let request = request
                .body(Full::new(Bytes::copy_from_slice(raw.body)))
                .unwrap();
            let Ok(response) = sender.send_request(request).await else {
                return Answer::Closed;
            };
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            Answer::Response {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            }
        }
    }
}

/// An HTTP/1.1 response with a Content-Length body (or none), or `Closed`.
fn parse_h1(received: &[u8]) -> Answer {
    let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Answer::Closed;
    };
    let head = String::from_utf8_lossy(&received[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| StatusCode::from_u16(*s).is_ok());
    let Some(status) = status else {
        return Answer::Closed;
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.trim().as_bytes()),
                http::HeaderValue::from_str(value.trim()),
            ) {
                headers.append(name, value);
            }
        }
    }
    Answer::Response {
        status,
        headers,
        body: received[end + 4..].to_vec(),
    }
}
