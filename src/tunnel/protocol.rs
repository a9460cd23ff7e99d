//! The tunnel's protocol, in the one place both ends read it: how an agent
//! knocks, how each end proves its key, what the edge answers, the agent's
//! refusals, and the HTTP/2 settings of a link.
//!
//! An agent dials the edge's HTTPS listener like any browser — TLS to a site's
//! own name, ALPN `http/1.1`, the site's own certificate shown — and sends an
//! HTTP/1.1 request to upgrade to the tunnel (as a WebSocket would):
//!
//! ```text
//! GET / HTTP/1.1
//! Host: jelly.example.com
//! Connection: Upgrade
//! Upgrade: drawbridge-tunnel/2
//! Drawbridge-Agent: <base64 certificate of the agent's key>
//! Drawbridge-Agent-Proof: <base64 ECDSA signature over AGENT_SIGNS ‖ exporter>
//! Drawbridge-Enroll: <token id> <HMAC of the exporter under the token's secret>   (enrolling only)
//! ```
//!
//! The exporter is the TLS connection's own (RFC 8446 §7.5, `EXPORTER_LABEL`),
//! so a proof made on one connection is worth nothing on another: a relay
//! between agent and edge has two connections and cannot pass it on. The edge
//! answers a proof from an enrolled key with `101 Switching Protocols` and its
//! own proof (`Drawbridge-Edge`, `Drawbridge-Edge-Proof`, over `EDGE_SIGNS ‖
//! exporter`), which the agent checks against the edge's pin; from then on the
//! connection is HTTP/2 with the roles reversed — the edge asks, the agent
//! answers. A proof from a key that was removed gets `403` with
//! `Drawbridge-Refused: removed`, signed the same way, so the agent can say so.
//! Anything else — no proof, a wrong one, a key the edge never enrolled — is
//! not an agent: the request goes on as any client's would, and what a
//! scanner sees is the site. Nothing on the wire, certificate or answer, says
//! drawbridge or a tunnel is there.

use base64::Engine as _;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::identity::{pin_of, Identity};

/// The `Upgrade` token of the tunnel.
pub const UPGRADE: &str = "drawbridge-tunnel/2";
/// The agent's certificate (base64 DER).
pub const AGENT: &str = "drawbridge-agent";
/// The agent's signature over `AGENT_SIGNS` and the exporter (base64).
pub const AGENT_PROOF: &str = "drawbridge-agent-proof";
/// An enrolment: the token's id and its proof, one space apart.
pub const ENROLL: &str = "drawbridge-enroll";
/// The edge's certificate (base64 DER), on its answers to agents.
pub const EDGE: &str = "drawbridge-edge";
/// The edge's signature over `EDGE_SIGNS` and the exporter (base64).
pub const EDGE_PROOF: &str = "drawbridge-edge-proof";
/// Why the edge turned an agent away (`removed`).
pub const REFUSED_BY_EDGE: &str = "drawbridge-refused";
/// The edge's word for a key it removed (`tunnel remove`).
pub const REMOVED: &str = "removed";
/// The service an agent answers itself, at once and with nothing (204):
/// the edge times it for the link's round trip (the dashboard's RTT). No
/// agent config may name a service so.
pub const PING_SERVICE: &str = "drawbridge-ping";

/// The exporter label both ends derive a connection's 32 bytes with.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-drawbridge-tunnel-2";
/// What an agent's signature covers, before the exporter.
pub const AGENT_SIGNS: &[u8] = b"drawbridge tunnel 2: agent\0";
/// What the edge's signature covers, before the exporter.
pub const EDGE_SIGNS: &[u8] = b"drawbridge tunnel 2: edge\0";

/// What each end reads from its socket at once on a tunnel connection
/// (`socket::rewind`): a film crosses it in TLS records of 16 KiB, one system
/// call each without it (docs/performance.md, "The home leg").
pub const READ_AHEAD: usize = 256 * 1024;

/// The largest HTTP/2 frame either end accepts: a stream's DATA in frames of
/// this size rather than 16 KiB ones, fewer to frame, wake and forward.
pub const MAX_FRAME: u32 = 256 * 1024;

/// How often each end PINGs a link, and how long an answer may take before
/// the link is given up (a dead edge is noticed from home, a dead agent at
/// the edge).
pub const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(15);
/// See `PING_EVERY`.
pub const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Flow-control credit the edge gives each stream (hyper's adaptive window
/// starts at 64 KiB and grows too slowly over a long path:
/// docs/performance.md, "The home leg"): 4 MiB over 80 ms is 400 Mbit/s.
pub const EDGE_STREAM_WINDOW: u32 = 4 * 1024 * 1024;
/// Credit the agent gives each stream (uploads home).
pub const AGENT_STREAM_WINDOW: u32 = 2 * 1024 * 1024;
/// A link's connection credit, at both ends: HTTP/2's largest, so it never
/// binds. Data a paused client has not taken holds connection credit too,
/// so any smaller window lets a few paused films freeze every stream on the
/// link; what the edge holds stays bounded by the streams.
pub const CONNECTION_WINDOW: u32 = (1 << 31) - 1;

/// The edge's HTTP/2 client settings for a link.
pub fn edge_link(builder: &mut hyper::client::conn::http2::Builder<hyper_util::rt::TokioExecutor>) {
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .initial_stream_window_size(EDGE_STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .keep_alive_interval(PING_EVERY)
        .keep_alive_timeout(PING_TIMEOUT)
        .keep_alive_while_idle(true);
}

/// The agent's HTTP/2 server settings for a link.
pub fn agent_link(
    builder: &mut hyper::server::conn::http2::Builder<hyper_util::rt::TokioExecutor>,
) {
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .enable_connect_protocol()
        .keep_alive_interval(PING_EVERY)
        .keep_alive_timeout(PING_TIMEOUT)
        .max_concurrent_streams(512)
        .initial_stream_window_size(AGENT_STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        // Room for a few frames of an answer while the socket is busy
        // (hyper's default, 400 KiB, is under two).
        .max_send_buf_size(4 * MAX_FRAME as usize);
}

/// One end's proof of its key for a connection: its certificate and its
/// signature over what its role signs and the connection's exporter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The certificate, base64 DER, as sent.
    pub cert: String,
    /// The signature, base64, as sent.
    pub signature: String,
}

impl Proof {
    /// `identity`'s proof, for the role that signs `role`, on the connection
    /// whose exporter gave `exported`.
    pub fn make(identity: &Identity, role: &[u8], exported: &[u8; 32]) -> Proof {
        let b64 = base64::engine::general_purpose::STANDARD;
        Proof {
            cert: b64.encode(identity.cert.as_ref()),
            signature: b64.encode(identity.sign(&[role, exported].concat())),
        }
    }

    /// The pin of the key that made this proof, if the signature is that
    /// key's, for `role` on the connection whose exporter gave `exported`.
    pub fn verify(&self, role: &[u8], exported: &[u8; 32]) -> Option<String> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let cert = CertificateDer::from(b64.decode(&self.cert).ok()?);
        let signature = b64.decode(&self.signature).ok()?;
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
        let point = &parsed.tbs_certificate.subject_pki.subject_public_key.data;
        let key = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            point.as_ref(),
        );
        key.verify(&[role, exported].concat(), &signature).ok()?;
        pin_of(&cert)
    }

    /// The proof in `headers` under `cert` and `signature`.
    pub fn from_headers(headers: &http::HeaderMap, cert: &str, signature: &str) -> Option<Proof> {
        let text = |name: &str| Some(headers.get(name)?.to_str().ok()?.to_string());
        Some(Proof {
            cert: text(cert)?,
            signature: text(signature)?,
        })
    }
}

/// What an agent's knock asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Knock {
    /// A tunnel connection.
    Tunnel(Proof),
    /// An enrolment with a token: its id and the proof of its secret.
    Enroll {
        /// The agent's key.
        proof: Proof,
        /// The token's id.
        id: String,
        /// HMAC-SHA256 of the exporter under the token's secret (hex).
        secret_proof: String,
    },
}

impl Knock {
    /// Whether `request` asks for the tunnel's upgrade at all (an agent's
    /// knock, or a scanner's copy of one): HTTP/1.1 with `Upgrade:
    /// drawbridge-tunnel/2`.
    pub fn asks<B>(request: &http::Request<B>) -> bool {
        request.version() == http::Version::HTTP_11
            && request
                .headers()
                .get(http::header::UPGRADE)
                .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(UPGRADE.as_bytes()))
    }

    /// The knock a request carries, if it asks for the tunnel's upgrade at
    /// all: HTTP/1.1 with `Upgrade: drawbridge-tunnel/2` and an agent's
    /// proof. Cheap for a client's request (one header looked at).
    pub fn of<B>(request: &http::Request<B>) -> Option<Knock> {
        if !Knock::asks(request) {
            return None;
        }
        let proof = Proof::from_headers(request.headers(), AGENT, AGENT_PROOF)?;
        match request.headers().get(ENROLL) {
            None => Some(Knock::Tunnel(proof)),
            Some(enroll) => {
                let (id, secret_proof) = enroll.to_str().ok()?.split_once(' ')?;
                Some(Knock::Enroll {
                    proof,
                    id: id.to_string(),
                    secret_proof: secret_proof.to_string(),
                })
            }
        }
    }

    /// The request head an agent sends, with the `Host` it dials.
    pub fn request_head(&self, host: &str) -> String {
        let (proof, enroll) = match self {
            Knock::Tunnel(proof) => (proof, String::new()),
            Knock::Enroll {
                proof,
                id,
                secret_proof,
            } => (proof, format!("{ENROLL}: {id} {secret_proof}\r\n")),
        };
        format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: {UPGRADE}\r\n{AGENT}: {}\r\n{AGENT_PROOF}: {}\r\n{enroll}Content-Length: 0\r\n\r\n",
            proof.cert, proof.signature
        )
    }
}

/// What the edge answers an enrolment (the body of its answer, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrollReply {
    /// Enrolled under this name.
    Enrolled(String),
    /// Refused; the sentence says why.
    Refused(String),
}

/// The header the agent marks its own refusals with, so the edge shows its
/// own error page and logs the reason (the agent removes it from its
/// services' answers: only the agent may set it).
pub const REFUSED: &str = "drawbridge-agent-refused";

/// Why an agent refused a stream instead of answering it from a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The stream named a service the agent's config does not name.
    NotExposed,
    /// The service could not be connected to: nothing of the request
    /// reached it, so the edge may send it to another agent.
    Unreachable,
    /// The service broke off its answer.
    Failed,
    /// The stream's target was not a path.
    BadTarget,
}

impl Refusal {
    const ALL: [Refusal; 4] = [
        Refusal::NotExposed,
        Refusal::Unreachable,
        Refusal::Failed,
        Refusal::BadTarget,
    ];

    /// The word in the `REFUSED` header.
    pub fn word(self) -> &'static str {
        match self {
            Refusal::NotExposed => "not-exposed",
            Refusal::Unreachable => "unreachable",
            Refusal::Failed => "failed",
            Refusal::BadTarget => "bad-target",
        }
    }

    /// The status the agent answers it with.
    pub fn status(self) -> http::StatusCode {
        match self {
            Refusal::NotExposed => http::StatusCode::NOT_FOUND,
            Refusal::BadTarget => http::StatusCode::BAD_REQUEST,
            Refusal::Unreachable | Refusal::Failed => http::StatusCode::BAD_GATEWAY,
        }
    }

    /// Marks `headers` as this refusal.
    pub fn mark(self, headers: &mut http::HeaderMap) {
        headers.insert(REFUSED, http::HeaderValue::from_static(self.word()));
    }

    /// The refusal an answer's head carries, if it is one (`Err` with the
    /// word for one this edge does not know).
    pub fn read(headers: &http::HeaderMap) -> Option<Result<Refusal, String>> {
        let word = headers.get(REFUSED)?;
        Some(
            Refusal::ALL
                .into_iter()
                .find(|r| r.word().as_bytes() == word.as_bytes())
                .ok_or_else(|| String::from_utf8_lossy(word.as_bytes()).into_owned()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{Knock, Proof, Refusal, AGENT_SIGNS, EDGE_SIGNS};
    use crate::tunnel::identity::Identity;

    #[test]
    fn a_proof_holds_for_its_key_role_and_connection_only() {
        let dir = tempfile::tempdir().unwrap();
        let agent = Identity::load_or_create(&dir.path().join("a.pem")).unwrap();
        let other = Identity::load_or_create(&dir.path().join("b.pem")).unwrap();
        let here = [1u8; 32];
        let proof = Proof::make(&agent, AGENT_SIGNS, &here);
        assert_eq!(proof.verify(AGENT_SIGNS, &here), Some(agent.pin()));
        assert_eq!(
            proof.verify(AGENT_SIGNS, &[2u8; 32]),
            None,
            "another connection"
        );
        assert_eq!(proof.verify(EDGE_SIGNS, &here), None, "the other role");
        let borrowed = Proof {
            cert: Proof::make(&other, AGENT_SIGNS, &here).cert,
            signature: proof.signature.clone(),
        };
        assert_eq!(
            borrowed.verify(AGENT_SIGNS, &here),
            None,
            "another key's certificate"
        );
        let garbage = Proof {
            cert: "AAAA".into(),
            signature: proof.signature,
        };
        assert_eq!(garbage.verify(AGENT_SIGNS, &here), None);
    }

    #[test]
    fn a_knock_is_read_from_the_head_the_agent_writes() {
        let dir = tempfile::tempdir().unwrap();
        let agent = Identity::load_or_create(&dir.path().join("a.pem")).unwrap();
        let proof = Proof::make(&agent, AGENT_SIGNS, &[3u8; 32]);
        for knock in [
            Knock::Tunnel(proof.clone()),
            Knock::Enroll {
                proof,
                id: "abcd".into(),
                secret_proof: "ff00".into(),
            },
        ] {
            let head = knock.request_head("jelly.test");
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut parsed = httparse::Request::new(&mut headers);
            assert!(parsed.parse(head.as_bytes()).unwrap().is_complete());
            let mut request = http::Request::builder().uri("/");
            for h in parsed.headers.iter() {
                request = request.header(h.name, h.value);
            }
            assert_eq!(Knock::of(&request.body(()).unwrap()), Some(knock));
        }
        let visitor = http::Request::builder()
            .uri("/")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert_eq!(Knock::of(&visitor), None);
    }

    #[test]
    fn refusals_are_read_back_as_marked() {
        for refusal in Refusal::ALL {
            let mut headers = http::HeaderMap::new();
            refusal.mark(&mut headers);
            assert_eq!(Refusal::read(&headers), Some(Ok(refusal)));
        }
        let mut odd = http::HeaderMap::new();
        odd.insert(super::REFUSED, "later".parse().unwrap());
        assert_eq!(Refusal::read(&odd), Some(Err("later".into())));
        assert_eq!(Refusal::read(&http::HeaderMap::new()), None);
    }
}
