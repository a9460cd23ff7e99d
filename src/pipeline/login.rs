//! A login sent home in a task of its own. A client that closes its
//! connection after sending a login, before home answers, has still made
//! home check the password (and count it toward Jellyfin's own lockout); so
//! its answer is counted toward the ban when it comes, as if the client had
//! waited, and the request is logged with nginx's 499 (client closed the
//! request). Without this, guessing passwords while never reading the
//! answers would be free.

use http::{request, Response};

use super::{Gateway, Scope};
use crate::access_log::Line;
use crate::body::Body;
use crate::error::{answer, ProxyError};
use crate::filter::{self, Exchange, Subject};
use crate::upstream::head::Visitor;

/// What the access log says of a request whose client left first.
const CLIENT_CLOSED: u16 = 499;

impl Gateway {
    /// Forwards a request on one of the site's auth routes (its body already
    /// read whole) so that it outlives its client: home's answer is counted
    /// and logged even when nobody is left to send it to.
    pub(super) async fn forward_login(
        &self,
        (parts, body): (request::Parts, Body),
        scope: Scope<'_>,
        host: String,
        line: Option<Line>,
    ) -> Response<Body> {
        let version = parts.version;
        let site = scope.site.clone();
        let client = scope.client.clone();
        let tls = scope.conn.tls;
        let path = scope.subject.path.to_string();
        let (now, connection) = (scope.subject.now, scope.subject.connection);
        let access_log = self.access_log.clone();
        let (answered, answer_here) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let visitor = Visitor {
                client: &client,
                tls,
                host: &host,
            };
            let result = site.upstream.forward(parts, body, visitor).await;
            let Err(unsent) = answered.send(result) else {
                return;
            };
            let status = match &unsent {
                Ok(response) => response.status(),
                Err(error) => error.status(),
            };
            drop(unsent);
            let subject = Subject {
                client: client.ip,
                path: &path,
                now,
                connection,
            };
            filter::count_unsent(
                &site.filters,
                Exchange {
                    subject,
                    tls,
                    status,
                },
            );
            tracing::info!(site = site.name, client.ip = %client.ip, path, status = status.as_u16(), "the client left before home answered its login; home's answer counted");
            if let Some(mut line) = line {
                line.status = CLIENT_CLOSED;
                line.bytes = 0;
                line.complete = false;
                line.duration = now.elapsed();
                access_log.write(&line);
            }
        });
        match answer_here.await {
            Ok(result) => result.unwrap_or_else(|error| answer(error, version)),
            Err(_) => answer(ProxyError::ClientGone, version),
        }
    }
}
