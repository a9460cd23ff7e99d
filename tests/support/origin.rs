//! A fake Jellyfin origin that behaves like the real one where a proxy can
//! tell: status codes, Range, ETag/304, WebSocket keep-alive messages, plus an
//! echo of the request as it arrived, a trickle, an upload counter, and
//! misbehaving routes (hang before headers, die mid-body).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Body = BoxBody<Bytes, std::io::Error>;

/// Size of the generated video.
pub const VIDEO_LEN: usize = 4 * 1024 * 1024;

/// Byte `i` of the generated video.
pub fn video_byte(i: usize) -> u8 {
    ((i * 31 + 7) % 251) as u8
}

/// Whether `bytes` are the generated video's from byte `at` on.
pub fn is_video_at(bytes: &[u8], at: usize) -> bool {
    bytes
        .iter()
        .enumerate()
        .all(|(i, b)| *b == video_byte(at + i))
}

/// What the origin saw.
#[derive(Default)]
pub struct Seen {
    hits: Mutex<HashMap<String, usize>>,
    /// Upload bytes received, across all uploads.
    pub upload_bytes: AtomicU64,
    /// Uploads whose body arrived whole.
    pub uploads_completed: AtomicU64,
    /// Releases the trickle's second chunk.
    pub trickle: Notify,
    /// Connections open now.
    pub open: AtomicU64,
    /// The most connections ever open at once.
    pub most_open: AtomicU64,
    /// Jellyfin's Known proxies, as `/System/Configuration/network` shows
    /// them to a request with the API key `TEST_API_KEY`.
    pub known_proxies: Mutex<Vec<String>>,
    /// Jellyfin's sessions, mode (10.11 or 12), library and side doors.
    pub jellyfin: super::jellyfin::Jellyfin,
}

/// The API key the fake Jellyfin accepts.
pub const TEST_API_KEY: &str = "0123456789abcdef0123456789abcdef";

impl Seen {
    /// Requests Kestrel would route to `path` (see `kestrel_route`).
    pub fn hits(&self, path: &str) -> usize {
        *self
            .hits
            .lock()
            .unwrap()
            .get(&kestrel_route(path))
            .unwrap_or(&0)
    }

    /// All requests.
    pub fn total(&self) -> usize {
        self.hits.lock().unwrap().values().sum()
    }
}

/// A running fake origin.
pub struct Origin {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    stop: tokio_util::sync::CancellationToken,
}

impl Origin {
    /// Stops accepting and closes every open connection, as a home going offline.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Origin {
    /// Starts the origin on 127.0.0.1, port 0.
    pub async fn start() -> Origin {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts the origin on `addr`.
    pub async fn start_on(addr: SocketAddr) -> Origin {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let shared = seen.clone();
        let stop = tokio_util::sync::CancellationToken::new();
        let stopping = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stopping.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((stream, _)) = accepted else { return };
                let seen = shared.clone();
                let stopping = stopping.clone();
                let now = seen.open.fetch_add(1, Ordering::SeqCst) + 1;
                seen.most_open.fetch_max(now, Ordering::SeqCst);
                tokio::spawn(async move {
                    let counted = seen.clone();
                    let service = hyper::service::service_fn(move |req| route(req, seen.clone()));
                    let mut builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    builder.http1().keep_alive(true);
                    let builder = builder.http1_only();
                    let serving =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = serving => {}
                        () = stopping.cancelled() => {}
                    }
                    counted.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Origin { addr, seen, stop }
    }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
}

/// The route Jellyfin's server sees for a request path, written apart from
/// drawbridge's own normalisation so the two can be held against each other.
/// Kestrel decodes every percent-escape except `%2F` (an escape that does not
/// decode to UTF-8 stays as written), then removes `.` and `..` segments by
/// RFC 3986 §5.2.4 (a `..` above the root stays at the root); ASP.NET Core's
/// router then ignores case and a trailing `/`. `//` stays an empty segment.
pub fn kestrel_route(raw: &str) -> String {
    let path = kestrel_path(raw).to_ascii_lowercase();
    match path.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => trimmed.to_string(),
        _ => path,
    }
}

/// The path Kestrel hands the application: escapes decoded (but `%2F`), dot
/// segments removed, case and a trailing `/` kept.
pub fn kestrel_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| {
            bytes
                .get(at)
                .and_then(|&b| (b as char).to_digit(16))
                .map(|d| d as u8)
        };
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) if h * 16 + l != b'/' => {
                decoded.push(h * 16 + l);
                i += 3;
            }
            (b, _, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    let text = String::from_utf8(decoded).unwrap_or_else(|_| raw.to_string());
    // RFC 3986 §5.2.4 on an absolute path.
    let mut input = text.as_str();
    let mut output: Vec<&str> = Vec::new();
    let mut trailing = false;
    while let Some(rest) = input.strip_prefix('/') {
        let (segment, after) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        trailing = after.is_empty();
        match segment {
            "." => {}
            ".." => {
                output.pop();
            }
            _ => {
                output.push(segment);
                trailing = false;
            }
        }
        input = after;
    }
    let mut path = String::new();
    for segment in &output {
        path.push('/');
        path.push_str(segment);
    }
    if trailing || path.is_empty() {
        path.push('/');
    }
    path
}

async fn route(request: Request<Incoming>, seen: Arc<Seen>) -> Result<Response<Body>, Infallible> {
    let path = kestrel_route(request.uri().path());
    *seen.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let request = match super::jellyfin::answer_for(&path, request, &seen.jellyfin).await {
        Ok(mut response) => {
            response
                .headers_mut()
                .insert(header::SERVER, "Kestrel".parse().unwrap());
            return Ok(response);
        }
        Err(request) => request,
    };
    let mut response = match path.as_str() {
        "/system/info/public" => full(
            StatusCode::OK,
            r#"{"LocalAddress":"","ServerName":"fake","Version":"10.11.0","ProductName":"Jellyfin Server","OperatingSystem":"","Id":"f00","StartupWizardCompleted":true}"#,
        ),
        // Jellyfin's network settings: an administrator's API key only,
        // given as `Authorization: MediaBrowser Token="…"`.
        "/system/configuration/network" => {
            let token = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split("Token=\"").nth(1))
                .and_then(|v| v.split('"').next());
            if token != Some(TEST_API_KEY) {
                full(StatusCode::UNAUTHORIZED, "")
            } else {
                let known = seen.known_proxies.lock().unwrap().clone();
                full(
                    StatusCode::OK,
                    serde_json::json!({ "KnownProxies": known, "EnableHttps": false, "InternalHttpPort": 8096 })
                        .to_string(),
                )
            }
        }
        "/socket" => return Ok(socket(request, &seen.jellyfin)),
        "/echo" => echo(&request),
        "/trickle" => trickle(seen.clone()),
        "/upload" => upload(request, &seen).await,
        "/trailers" => trailers(request).await,
        "/hang" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            full(StatusCode::OK, "")
        }
        "/die" => die(),
        "/web/index.html" => {
            let etag = "\"web1\"";
            let mut r = if none_match(request.headers(), etag) {
                full(StatusCode::NOT_MODIFIED, "")
            } else {
                full(StatusCode::OK, "<html>jellyfin web</html>")
            };
            r.headers_mut().insert(header::ETAG, etag.parse().unwrap());
            r.headers_mut()
                .insert(header::CACHE_CONTROL, "no-cache".parse().unwrap());
            r
        }
        "/videos/x/master.m3u8" => {
            let mut r = full(StatusCode::OK, "#EXTM3U\n");
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                "public, max-age=600".parse().unwrap(),
            );
            r
        }
        "/private/x" => {
            let mut r = full(StatusCode::OK, "private");
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                "public, max-age=600".parse().unwrap(),
            );
            r
        }
        p if p.starts_with("/items/big/images/") => {
            let mut r = full(StatusCode::OK, vec![b'b'; 64 * 1024]);
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                "public, max-age=600".parse().unwrap(),
            );
            r
        }
        p if p.starts_with("/items/die/images/") => {
            let mut r = die();
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                "public, max-age=600".parse().unwrap(),
            );
            r
        }
        p if p.starts_with("/items/slow/images/") => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut r = full(StatusCode::OK, vec![b's'; 1024]);
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                "public, max-age=600".parse().unwrap(),
            );
            r
        }
        p if p.starts_with("/items/short/images/") => {
            let mut r = full(StatusCode::OK, vec![b'p'; 1024]);
            r.headers_mut()
                .insert(header::CACHE_CONTROL, "public, max-age=1".parse().unwrap());
            r
        }
        "/refusal" => {
            // A service whose answer carries the agent's refusal mark (a
            // header it was made to reflect): only the agent may set it.
            let mut r = full(StatusCode::OK, "fine");
            r.headers_mut()
                .insert("drawbridge-agent-refused", "unreachable".parse().unwrap());
            r
        }
        "/hop" => {
            let mut r = full(StatusCode::OK, "hop");
            let h = r.headers_mut();
            h.insert(header::CONNECTION, "X-Hop".parse().unwrap());
            h.insert("x-hop", "1".parse().unwrap());
            h.insert("keep-alive", "timeout=5".parse().unwrap());
            h.insert("x-kept", "1".parse().unwrap());
            r
        }
        p if p.starts_with("/videos/") && p.ends_with("/stream") => video(&request),
        p if p.starts_with("/bulk/") => bulk(p.trim_start_matches("/bulk/").parse().unwrap_or(1)),
        p if p.starts_with("/items/") && p.contains("/images/") => image(&request),
        p if p.starts_with("/status/") => {
            let code = p.trim_start_matches("/status/").parse().unwrap_or(500);
            full(
                StatusCode::from_u16(code).unwrap(),
                format!("origin {code}"),
            )
        }
        _ => full(StatusCode::NOT_FOUND, "not found"),
    };
    response
        .headers_mut()
        .insert(header::SERVER, "Kestrel".parse().unwrap());
    Ok(response)
}

/// The values of header `name` in an `/echo` answer, in the order they arrived.
pub fn seen(echo: &serde_json::Value, name: &str) -> Vec<String> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == name)
        .map(|h| h[1].as_str().unwrap().to_string())
        .collect()
}

/// The request as it arrived: method, target, version, headers in order.
fn echo<B>(request: &Request<B>) -> Response<Body> {
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = serde_json::json!({
        "method": request.method().as_str(),
        "target": request.uri().to_string(),
        "version": format!("{:?}", request.version()),
        "headers": headers,
    });
    let mut response = full(StatusCode::OK, body.to_string());
    response
        .headers_mut()
        .insert("x-frame-options", "ALLOWALL".parse().unwrap());
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    response
}

fn trickle(seen: Arc<Seen>) -> Response<Body> {
    let stream = async_stream(seen);
    Response::new(BodyExt::boxed(StreamBody::new(stream)))
}

fn async_stream(
    seen: Arc<Seen>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send + Sync + 'static
{
    futures_util::stream::unfold(0u8, move |step| {
        let seen = seen.clone();
        async move {
            match step {
                0 => Some((Ok(Frame::data(Bytes::from_static(b"first\n"))), 1)),
                1 => {
                    seen.trickle.notified().await;
                    Some((Ok(Frame::data(Bytes::from_static(b"second\n"))), 2))
                }
                _ => None,
            }
        }
    })
}

async fn upload(request: Request<Incoming>, seen: &Seen) -> Response<Body> {
    let framing = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .map_or("chunked", |_| "length");
    let mut body = request.into_body();
    let mut total = 0u64;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    total += data.len() as u64;
                    digest.update(data);
                    seen.upload_bytes
                        .fetch_add(data.len() as u64, Ordering::SeqCst);
                }
            }
            Err(_) => return full(StatusCode::BAD_REQUEST, "body broke"),
        }
    }
    seen.uploads_completed.fetch_add(1, Ordering::SeqCst);
    let mut response = full(StatusCode::OK, total.to_string());
    let sha: String = digest
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let headers = response.headers_mut();
    headers.insert("x-body-sha256", sha.parse().unwrap());
    headers.insert("x-body-framing", framing.parse().unwrap());
    response
}

/// A service that ends its answer with a trailer, as gRPC-style services
/// behind an agent do (Kestrel sends none over HTTP/1.1, so Jellyfin never
/// does): two chunks, then `x-checksum`, which hyper's HTTP/1.1 server sends
/// only when the request said `TE: trailers`. The answer's head tells what
/// arrived: `x-te`, the request's TE, and `x-request-trailers`, the names of
/// the request's own trailers.
async fn trailers(request: Request<Incoming>) -> Response<Body> {
    let te = request.headers().get(header::TE).cloned();
    let received = match request.into_body().collect().await {
        Ok(collected) => collected.trailers().cloned().unwrap_or_default(),
        Err(_) => return full(StatusCode::BAD_REQUEST, "body broke"),
    };
    let names: Vec<&str> = received.keys().map(|name| name.as_str()).collect();
    let mut trailer = http::HeaderMap::new();
    trailer.insert("x-checksum", "sum-42".parse().unwrap());
    let frames = [
        Frame::data(Bytes::from_static(b"part one\n")),
        Frame::data(Bytes::from_static(b"part two\n")),
        Frame::trailers(trailer),
    ];
    let stream = futures_util::stream::iter(frames.into_iter().map(Ok));
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    let headers = response.headers_mut();
    headers.insert(header::TRAILER, "x-checksum".parse().unwrap());
    if let Some(te) = te {
        headers.insert("x-te", te);
    }
    headers.insert("x-request-trailers", names.join(",").parse().unwrap());
    response
}

/// Headers and 100 of the 1000 promised bytes go out; then the origin dies.
/// `mebibytes` MiB of `video_byte`s, streamed in 64 KiB frames as the
/// reader takes them.
fn bulk(mebibytes: usize) -> Response<Body> {
    const FRAME: usize = 64 * 1024;
    let total = mebibytes * 1024 * 1024;
    let stream = futures_util::stream::unfold(0usize, move |at| async move {
        if at >= total {
            return None;
        }
        let len = FRAME.min(total - at);
        let chunk: Vec<u8> = (at..at + len).map(video_byte).collect();
        Some((Ok(Frame::data(Bytes::from(chunk))), at + len))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, total.into());
    response
}

fn die() -> Response<Body> {
    let stream = futures_util::stream::unfold(0u8, |step| async move {
        match step {
            0 => Some((Ok(Frame::data(Bytes::from(vec![b'x'; 100]))), 1)),
            1 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some((Err(std::io::Error::other("origin died")), 2))
            }
            _ => None,
        }
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, "1000".parse().unwrap());
    response
}

fn video<B>(request: &Request<B>) -> Response<Body> {
    let etag = "\"v1\"";
    let range = request
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    let if_range_ok = request
        .headers()
        .get(header::IF_RANGE)
        .is_none_or(|v| v == etag);
    let (status, start, end) = match range
        .filter(|_| if_range_ok)
        .and_then(|r| r.strip_prefix("bytes="))
    {
        None => (StatusCode::OK, 0, VIDEO_LEN - 1),
        Some(spec) => {
            let (a, b) = spec.split_once('-').unwrap_or(("", ""));
            let (start, end) = match (a.parse::<usize>().ok(), b.parse::<usize>().ok()) {
                (Some(a), Some(b)) => (a, b.min(VIDEO_LEN - 1)),
                (Some(a), None) => (a, VIDEO_LEN - 1),
                (None, Some(n)) => (VIDEO_LEN.saturating_sub(n), VIDEO_LEN - 1),
                (None, None) => (VIDEO_LEN, 0),
            };
            if start >= VIDEO_LEN || start > end {
                let mut r = full(StatusCode::RANGE_NOT_SATISFIABLE, "");
                r.headers_mut().insert(
                    header::CONTENT_RANGE,
                    format!("bytes */{VIDEO_LEN}").parse().unwrap(),
                );
                return r;
            }
            (StatusCode::PARTIAL_CONTENT, start, end)
        }
    };
    let length = end + 1 - start;
    let body: Body = if request.method() == http::Method::HEAD {
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed()
    } else {
        // Generated in 64 KiB pieces, as a file would be read.
        let pieces = (start..=end).step_by(65536).map(move |from| {
            let to = (from + 65536).min(end + 1);
            Ok(Frame::data(Bytes::from(
                (from..to).map(video_byte).collect::<Vec<u8>>(),
            )))
        });
        BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
            pieces.collect::<Vec<_>>(),
        )))
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_LENGTH, length.into());
    h.insert(header::ACCEPT_RANGES, "bytes".parse().unwrap());
    h.insert(header::ETAG, etag.parse().unwrap());
    h.insert(header::CONTENT_TYPE, "video/mp4".parse().unwrap());
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            format!("bytes {start}-{end}/{VIDEO_LEN}").parse().unwrap(),
        );
    }
    response
}

fn image<B>(request: &Request<B>) -> Response<Body> {
    let etag = "\"img1\"";
    let mut response = if none_match(request.headers(), etag) {
        full(StatusCode::NOT_MODIFIED, "")
    } else {
        full(StatusCode::OK, vec![0xffu8; 2048])
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, etag.parse().unwrap());
    h.insert(
        header::CACHE_CONTROL,
        "public, max-age=31536000, immutable".parse().unwrap(),
    );
    h.insert(header::CONTENT_TYPE, "image/jpeg".parse().unwrap());
    response
}

/// Jellyfin's /socket: credentials Jellyfin accepts are required (an
/// unknown token is 403); then ForceKeepAlive, and KeepAlive answered with
/// KeepAlive.
fn socket(mut request: Request<Incoming>, jellyfin: &super::jellyfin::Jellyfin) -> Response<Body> {
    if jellyfin
        .authenticate(request.headers(), request.uri())
        .is_none()
    {
        return full(StatusCode::FORBIDDEN, "Forbidden");
    }
    let Some(key) = request.headers().get("sec-websocket-key").cloned() else {
        return full(StatusCode::BAD_REQUEST, "not a WebSocket");
    };
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let hello = r#"{"MessageType":"ForceKeepAlive","Data":60}"#;
        if ws.send(Message::text(hello)).await.is_err() {
            return;
        }
        while let Some(Ok(message)) = ws.next().await {
            match message {
                Message::Text(text) if text.contains("KeepAlive") => {
                    let _ = ws
                        .send(Message::text(r#"{"MessageType":"KeepAlive"}"#))
                        .await;
                }
                Message::Text(text) => {
                    let _ = ws.send(Message::text(format!("echo:{text}"))).await;
                }
                Message::Close(_) => return,
                _ => {}
            }
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut response = full(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = response.headers_mut();
    h.insert(header::CONNECTION, "Upgrade".parse().unwrap());
    h.insert(header::UPGRADE, "websocket".parse().unwrap());
    h.insert("sec-websocket-accept", accept.parse().unwrap());
    response
}

/// Whether If-None-Match names `etag` as ASP.NET Core reads it: `*`, or a
/// comma-separated list of tags any of which matches, weakly compared (a
/// cache revalidating sends the client's tags and its own together).
fn none_match(headers: &http::HeaderMap, etag: &str) -> bool {
    let bare = |tag: &str| tag.trim().trim_start_matches("W/").to_string();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == "*" || bare(tag) == bare(etag))
}
