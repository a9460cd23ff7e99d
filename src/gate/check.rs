//! Asking Jellyfin itself whether credentials are good, once per set of
//! credentials however many requests wait on them, within the client's
//! budget and the checks under way (`Gate::word`), remembering the answer: `GET /Users/Me` with
//! exactly the credential headers and parameters the request carried, sent
//! the way every request home goes (`Upstream::forward`: direct, TLS or the
//! tunnel). Jellyfin authenticates before it routes: an unknown or refused
//! token is `401` (or `403`), a user's token reaches the action (`200` and
//! the user), an API key (no user) reaches it too and gets `400`. Anything
//! else — home down, an error — is no word at all: the gate neither lets the
//! request through nor remembers anything.

use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::credentials::Credentials;
use super::memory::{Turn, Word};
use super::{Gate, Who, CHECK_WAIT};
use crate::body::{empty_body, Body};
use crate::error::ProxyError;
use crate::guard::keys::ClientKey;
use crate::upstream::head::Visitor;
use crate::upstream::Upstream;

/// Jellyfin's word on `credentials`, asked through `upstream` for the
/// client described by `visitor`; None when it gave none.
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

impl Gate {
    /// Jellyfin's word on the credentials remembered as `key`: remembered,
    /// or asked now — once, however many requests wait on it, within the
    /// client's budget and the place among the checks under way.
    pub(super) async fn word(
        &self,
        key: &str,
        credentials: impl FnOnce() -> Arc<Credentials>,
        who: Who<'_>,
        upstream: &Upstream,
    ) -> Result<Word, ProxyError> {
        // Remembered: the common case, no clock read beyond the request's
        // and no copy of the credentials.
        if let Some(word) = self.memory.word(key, who.now) {
            return Ok(word);
        }
        let credentials = credentials();
        let waited_until = who.now + upstream_wait(upstream);
        loop {
            if let Some(word) = self.memory.word(key, Instant::now()) {
                return Ok(word);
            }
            match self.memory.turn(key) {
                Turn::Ask => break,
                Turn::Wait(notify) => {
                    let notified = notify.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if self.memory.word(key, Instant::now()).is_some() {
                        continue;
                    }
                    if tokio::time::timeout_at(waited_until, notified)
                        .await
                        .is_err()
                    {
                        return Err(ProxyError::GateUnsure);
                    }
                }
            }
        }
        let asked = self.ask(key, credentials.clone(), who, upstream).await;
        let word = asked.as_ref().ok().cloned();
        let until = match &word {
            Some(Word::Good(_)) => Instant::now() + self.config.remember_good,
            Some(Word::Bad) => Instant::now() + self.config.remember_bad,
            None => Instant::now(),
        };
        self.memory
            .answered(key, credentials, word.map(|word| (word, until)));
        asked
    }

    /// Asks Jellyfin (the caller holds the key's turn).
    async fn ask(
        &self,
        key: &str,
        credentials: Arc<Credentials>,
        who: Who<'_>,
        upstream: &Upstream,
    ) -> Result<Word, ProxyError> {
        let client = ClientKey::of(who.visitor.client.ip);
        if let Err(wait) = self.budget.check(client, who.now) {
            return Err(ProxyError::TooManyRequests(wait));
        }
        let Ok(Ok(_place)) = tokio::time::timeout(CHECK_WAIT, self.checks.acquire()).await else {
            return Err(ProxyError::GateUnsure);
        };
        let word = ask(upstream, &credentials, who.visitor).await;
        self.counts.checked(match &word {
            Some(Word::Good(_)) => 0,
            Some(Word::Bad) => 1,
            None => 2,
        });
        match word {
            Some(Word::Bad) => {
                tracing::info!(site = self.site, client.ip = %who.visitor.client.ip, "gate: Jellyfin refused the credentials");
                let exempt = client.in_any(&self.exempt);
                self.guard.failed_login(
                    who.visitor.client.ip,
                    &self.site,
                    &format!("a token Jellyfin refused, at {}", who.route),
                    exempt,
                    who.now,
                    who.connection,
                );
                Ok(Word::Bad)
            }
            Some(good) => Ok(good),
            None => {
                tracing::debug!(
                    site = self.site,
                    key_len = key.len(),
                    "gate: Jellyfin gave no word on the credentials"
                );
                Err(ProxyError::GateUnsure)
            }
        }
    }
}

/// How long a request waits on another's check: the upstream's answer time.
fn upstream_wait(upstream: &Upstream) -> Duration {
    upstream.response_timeout()
}
