//! The tunnel's door at the edge: on a client's own HTTPS connection, an
//! agent's knock (`protocol.rs`) told apart from a client's request by the
//! proof it carries, bound to that connection. An enrolled key's knock is
//! answered `101` and the connection becomes a link of the hub; an
//! enrolment is answered with its outcome; everything else — a client, a
//! scanner who knows the protocol but no key — goes on as a client's
//! request and meets the site. The door is there only while a site uses
//! the tunnel (`set_open`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::hub::Hub;
use super::identity::{Identity, IdentityError};
use super::protocol::{self, EnrollReply, Knock, Proof};
use super::register::{Register, RegisterError};
use crate::body::{empty_body, full_body, Body};

/// The edge's tunnel: its key, the door's state and the hub.
pub struct Edge {
    /// The connections up and the agents enrolled.
    pub hub: Arc<Hub>,
    /// The pin agents check the edge by.
    pub pin: String,
    identity: Identity,
    /// Whether any site uses the tunnel: no door otherwise.
    open: AtomicBool,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge").field("pin", &self.pin).finish()
    }
}

/// Why the edge's tunnel could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The tunnel key.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// What the door made of a request.
pub enum Answered {
    /// Not an agent's: the request goes on as a client's, as it came.
    Visitor(Request<Incoming>),
    /// An answer for an agent.
    Agent {
        /// The answer to send.
        response: Response<Body>,
        /// Set when it switches to the tunnel: the link to attach once the
        /// `101` has gone out.
        link: Option<NewLink>,
        /// A failed enrolment, which counts toward the address's ban like
        /// a failed login.
        failed: bool,
    },
}

/// A tunnel connection the door let in, to attach once upgraded.
pub struct NewLink {
    /// The connection after the `101`.
    pub upgrade: hyper::upgrade::OnUpgrade,
    /// The agent's name.
    pub name: String,
    /// Its key's pin.
    pub pin: String,
}

impl Edge {
    /// The edge's tunnel from the register under `state_dir`, its key made on first use.
    pub fn open(state_dir: &std::path::Path) -> Result<Edge, EdgeError> {
        let register = Register::new(state_dir);
        let identity = Identity::load_or_create(&register.edge_key_path())?;
        Ok(Edge {
            pin: identity.pin(),
            hub: Hub::new(register),
            identity,
            open: AtomicBool::new(false),
        })
    }

    /// Opens or closes the door: open while a site uses the tunnel.
    pub fn set_open(&self, open: bool) {
        self.open.store(open, Ordering::Relaxed);
    }

    /// Whether the door is there at all.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// What a request on an HTTPS connection is, whose exporter gave
    /// `exported` (None: not a connection the door is on), from `from`.
    pub async fn answer(
        &self,
        mut request: Request<Incoming>,
        exported: Option<&[u8; 32]>,
        from: SocketAddr,
    ) -> Answered {
        let (Some(exported), true) = (exported, self.is_open()) else {
            return Answered::Visitor(request);
        };
        let Some(knock) = Knock::of(&request) else {
            return Answered::Visitor(request);
        };
        match knock {
            Knock::Tunnel(proof) => {
                let Some(pin) = proof.verify(protocol::AGENT_SIGNS, exported) else {
                    return Answered::Visitor(request);
                };
                if let Some(name) = self.hub.name_of(&pin) {
                    let link = NewLink {
                        upgrade: hyper::upgrade::on(&mut request),
                        name,
                        pin,
                    };
                    let mut response =
                        self.signed(StatusCode::SWITCHING_PROTOCOLS, exported, empty_body());
                    let headers = response.headers_mut();
                    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                    headers.insert(header::UPGRADE, HeaderValue::from_static(protocol::UPGRADE));
                    return Answered::Agent {
                        response,
                        link: Some(link),
                        failed: false,
                    };
                }
                if self.hub.register().was_removed(&pin) {
                    // Only the removed key's holder can get here: the
                    // proof is its signature on this connection.
                    tracing::info!(%from, "a removed agent knocked; told so");
                    let mut response = self.signed(StatusCode::FORBIDDEN, exported, empty_body());
                    response.headers_mut().insert(
                        protocol::REFUSED_BY_EDGE,
                        HeaderValue::from_static(protocol::REMOVED),
                    );
                    return Answered::Agent {
                        response,
                        link: None,
                        failed: false,
                    };
                }
                // A key this edge never enrolled: a client.
                Answered::Visitor(request)
            }
            Knock::Enroll {
                proof,
                id,
                secret_proof,
            } => {
                self.enroll(request, &proof, id, secret_proof, exported, from)
                    .await
            }
        }
    }

    async fn enroll(
        &self,
        request: Request<Incoming>,
        proof: &Proof,
        id: String,
        secret_proof: String,
        exported: &[u8; 32],
        from: SocketAddr,
    ) -> Answered {
        let Some(pin) = proof.verify(protocol::AGENT_SIGNS, exported) else {
            return Answered::Visitor(request);
        };
        let register = self.hub.register().clone();
        if !register.knows_token(&id) {
            // A token id is 8 random bytes: only its holder knows one.
            return Answered::Visitor(request);
        }
        let exported_owned = *exported;
        let redeemed = tokio::task::spawn_blocking(move || {
            register.redeem(&id, &secret_proof, &exported_owned, &pin)
        })
        .await
        .unwrap_or(Err(RegisterError::Unknown));
        let (status, reply) = match &redeemed {
            Ok(name) => {
                tracing::info!(agent = name, %from, "agent enrolled");
                self.hub.reload();
                (StatusCode::OK, EnrollReply::Enrolled(name.clone()))
            }
            Err(error) => {
                tracing::warn!(%from, %error, "enrollment refused");
                (
                    StatusCode::FORBIDDEN,
                    EnrollReply::Refused(error.for_the_agent()),
                )
            }
        };
        let body = serde_json::to_string(&reply).unwrap_or_default();
        let length = HeaderValue::from(body.len());
        let mut response = self.signed(status, exported, full_body(body));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // Said, not left to the framing: the agent reads exactly this much.
        headers.insert(header::CONTENT_LENGTH, length);
        Answered::Agent {
            response,
            link: None,
            failed: redeemed.is_err(),
        }
    }

    /// An answer with `status` and `body` carrying the edge's proof for the
    /// connection whose exporter gave `exported`.
    fn signed(&self, status: StatusCode, exported: &[u8; 32], body: Body) -> Response<Body> {
        let proof = Proof::make(&self.identity, protocol::EDGE_SIGNS, exported);
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        for (name, value) in [
            (protocol::EDGE, proof.cert),
            (protocol::EDGE_PROOF, proof.signature),
        ] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        response
    }
}
