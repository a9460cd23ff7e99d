//! Port 80: open HTTP-01 challenges answered from memory, then
//! `/.well-known/acme-challenge/<token>` served from a site's `acme_webroot`
//! folder (certbot's webroot mode), then the 308 redirect to https. Only
//! token-shaped names are served and only from inside the folder: `..`,
//! encoded slashes and symlinks out are refused.

use std::path::Path;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use crate::body::{empty_body, full_body, Body};
use crate::error::ProxyError;
use crate::tls::challenges::Challenges;

/// The path prefix of HTTP-01 challenges.
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Challenge files are tiny; anything larger is not one.
const MAX_FILE: u64 = 64 * 1024;

/// What port 80 does for one site.
#[derive(Debug, Clone, Copy)]
pub struct Port80<'a> {
    /// HTTP-01 answers of open orders.
    pub challenges: &'a Challenges,
    /// The site's `acme_webroot`.
    pub webroot: Option<&'a Path>,
    /// Redirect everything else to https (else: serve it).
    pub https_redirect: bool,
    /// The https port named in redirects (None or 443: none named).
    pub https_port: Option<u16>,
}

impl Port80<'_> {
    /// The answer port 80 gives `request` for `host` itself, or None when
    /// the request is to be served as on https.
    pub async fn answer<B>(
        &self,
        request: &Request<B>,
        host: &str,
    ) -> Option<Result<Response<Body>, ProxyError>> {
        let path = request.uri().path();
        if let Some(token) = path.strip_prefix(CHALLENGE_PREFIX) {
            if let Some(key_authorization) = self.challenges.http_answer(token) {
                let mut response = Response::new(full_body(key_authorization));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                return Some(Ok(response));
            }
        }
        if let Some(root) = self.webroot {
            if path.starts_with(CHALLENGE_PREFIX) {
                return Some(serve(root, request.method(), path).await);
            }
        }
        if !self.https_redirect {
            return None;
        }
        let port = match self.https_port {
            Some(443) | None => String::new(),
            Some(port) => format!(":{port}"),
        };
        let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let location = HeaderValue::from_str(&format!("https://{host}{port}{target}")).ok()?;
        let mut response = Response::new(empty_body());
        *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
        response.headers_mut().insert(header::LOCATION, location);
        Some(Ok(response))
    }
}

/// Serves the challenge file named by `path` (which starts with `CHALLENGE_PREFIX`).
pub async fn serve(
    webroot: &Path,
    method: &Method,
    path: &str,
) -> Result<Response<Body>, ProxyError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(ProxyError::MethodNotAllowed("GET, HEAD"));
    }
    let token = path
        .strip_prefix(CHALLENGE_PREFIX)
        .ok_or(ProxyError::NotFound)?;
    if !is_token(token) {
        return Err(ProxyError::NotFound);
    }
    let folder = webroot.join(".well-known/acme-challenge");
    let (Ok(root), Ok(file)) = (
        tokio::fs::canonicalize(webroot).await,
        tokio::fs::canonicalize(folder.join(token)).await,
    ) else {
        return Err(ProxyError::NotFound);
    };
    // A symlink may point anywhere; only files really inside the webroot count.
    if !file.starts_with(&root) {
        return Err(ProxyError::NotFound);
    }
    let meta = tokio::fs::metadata(&file)
        .await
        .map_err(|_| ProxyError::NotFound)?;
    if !meta.is_file() || meta.len() > MAX_FILE {
        return Err(ProxyError::NotFound);
    }
    let bytes = tokio::fs::read(&file)
        .await
        .map_err(|_| ProxyError::NotFound)?;
    let length = bytes.len();
    let body = if method == Method::HEAD {
        empty_body()
    } else {
        full_body(bytes)
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    Ok(response)
}

/// ACME tokens are base64url: letters, digits, `-` and `_`.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::is_token;

    #[test]
    fn only_token_shaped_names() {
        assert!(is_token("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"));
        for bad in [
            "", "..", "a/b", "a%2Fb", "a%2e%2e", ".hidden", "a b", "a\\b",
        ] {
            assert!(!is_token(bad), "{bad:?} must be refused");
        }
    }
}
