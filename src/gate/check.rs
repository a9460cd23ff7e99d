//! Asking Jellyfin itself whether credentials are good: `GET /Users/Me` with
//! exactly the credential headers and parameters the request carried, sent
//! the way every request home goes (`Upstream::forward`: direct, TLS or the
//! tunnel). Jellyfin authenticates before it routes: an unknown or refused
//! token is `401` (or `403`), a user's token reaches the action (`200` and
//! the user), an API key (no user) reaches it too and gets `400`. Anything
//! else — home down, an error — is no word at all: the gate neither lets the
//! request through nor remembers anything.

use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;

use crate::body::Body;

use super::credentials::Credentials;
use super::memory::Word;
use crate::body::empty_body;
use crate::forwarding::Visitor;
use crate::upstream::Upstream;

/// Jellyfin's word on `credentials`, asked through `upstream` for the
/// visitor `visitor`; None when it gave none.
pub async fn ask(
    upstream: &Upstream,
    credentials: &Credentials,
    visitor: Visitor<'_>,
) -> Option<Word> {
    let target = if credentials.params.is_empty() {
        "/Users/Me".to_string()
    } else {
        format!("/Users/Me?{}", credentials.params.join("&"))
    };
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(target)
        .header(header::ACCEPT, HeaderValue::from_static("application/json"));
    if let Ok(host) = HeaderValue::from_str(visitor.host) {
        request = request.header(header::HOST, host);
    }
    for (name, value) in &credentials.headers {
        request = request.header(name, value);
    }
    let (parts, ()) = request.body(()).ok()?.into_parts();
    let response = upstream.forward(parts, empty_body(), visitor).await.ok()?;
    match response.status() {
        StatusCode::OK => Some(Word::Good(user_name(response.into_body()).await)),
        // Authenticated, but no user behind it: an API key.
        StatusCode::BAD_REQUEST => Some(Word::Good(None)),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Some(Word::Bad),
        _ => None,
    }
}

/// The user's name in `/Users/Me`'s answer (read up to 64 KiB).
async fn user_name(mut body: Body) -> Option<Arc<str>> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.ok()?.into_data() {
            bytes.extend_from_slice(&data);
            if bytes.len() > 64 * 1024 {
                return None;
            }
        }
    }
    let user: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    user["Name"].as_str().map(Arc::from)
}
