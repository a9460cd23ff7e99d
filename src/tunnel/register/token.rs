//! What `tunnel add` prints and the edge keeps until it is spent: the
//! token, its proof over the TLS channel's exporter, and the pending entry
//! in `tokens.json`.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// A token not yet expired: unspent, or spent by the agent whose key's pin
/// `spent_by` holds (which may use it again until it expires, should its
/// first answer have been lost or its config not written).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct PendingToken {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) secret: String,
    pub(super) expires: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) spent_by: Option<String>,
}

/// What a token tells the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// The edge's address, `host:port`.
    pub edge: String,
    /// The name the agent asks the edge's TLS for: one of its sites.
    pub name: String,
    /// The pin of the edge's tunnel key.
    pub pin: String,
    /// Which pending enrollment it is.
    pub id: String,
    /// The one-time secret (hex).
    pub secret: String,
    /// Unix seconds after which the edge refuses it.
    pub expires: u64,
}

impl Token {
    /// The text to paste.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    /// Reads a pasted token.
    pub fn decode(text: &str) -> Option<Token> {
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim())
            .ok()?;
        serde_json::from_slice(&json).ok()
    }

    /// The proof of the secret for a channel whose exporter gave `exported`.
    pub fn proof(&self, exported: &[u8]) -> String {
        proof(&self.secret, exported)
    }
}

fn proof(secret: &str, exported: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    hex(ring::hmac::sign(&key, exported).as_ref())
}

/// Whether `given` (hex) is `secret`'s proof for the channel that exported
/// `exported`, compared in constant time.
pub(super) fn proof_matches(secret: &str, given: &str, exported: &[u8]) -> bool {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let given = (0..given.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(given.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
        .unwrap_or_default();
    ring::hmac::verify(&key, exported, &given).is_ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn random_hex(len: usize) -> String {
    use ring::rand::SecureRandom;
    let mut bytes = vec![0u8; len];
    // The system RNG does not fail on Linux.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    hex(&bytes)
}
