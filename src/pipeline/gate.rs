//! The gate's step (`gate/`): between the request's checks and the forward
//! phase, so nothing past it — the edge cache included — serves a request
//! the gate would not let reach home; and its part in the answer (the
//! cookie, a logout's end).

use http::{Request, Response};
use tokio::time::Instant;

use super::head::raw_host;
use super::{Gateway, Scope};
use crate::body::{Body, ClientBody};
use crate::error::answer;
use crate::gate::{Admitted, Who};
use crate::metrics::streams;
use crate::upstream::head::Visitor;

impl Gateway {
    /// The gate's word on `request`, then, if it passes, the forward phase.
    pub(super) async fn gate_then_forward(
        &self,
        request: Request<ClientBody>,
        scope: Scope<'_>,
    ) -> Response<Body> {
        let Scope {
            conn, client, site, ..
        } = scope;
        let who = Who {
            visitor: Visitor {
                client,
                tls: conn.tls,
                host: raw_host(&request),
            },
            connection: conn.id,
            now: scope.subject.now,
            recall: &conn.recall,
            route: "",
        };
        match site.gate.admit(&request, who, &site.upstream).await {
            Admitted::Pass(ticket) => {
                let mut response = self.forward(request, scope).await;
                let user = site.gate.on_response(ticket, &mut response, Instant::now());
                // A film or a song: marked once here, listed by `handle`.
                if streams::is_stream(&response) {
                    response.extensions_mut().insert(streams::Stream { user });
                }
                response
            }
            Admitted::Answer(answered) => {
                answered.unwrap_or_else(|error| answer(error, request.version()))
            }
        }
    }
}
