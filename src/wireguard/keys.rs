//! WireGuard keys: Curve25519, written as WireGuard's tools write them
//! (standard base64 of the 32 bytes), made from the system's randomness.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use gotatun::x25519::{PublicKey, StaticSecret};
use ring::rand::{SecureRandom as _, SystemRandom};

/// A private key.
pub type Secret = StaticSecret;

/// A new private key.
pub fn generate() -> StaticSecret {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's randomness is available");
    // x25519-dalek clamps the scalar when it is used.
    StaticSecret::from(bytes)
}

/// A key as `wg` prints it.
pub fn encode(bytes: &[u8; 32]) -> String {
    STANDARD.encode(bytes)
}

/// 32 bytes from `wg`'s base64; None for anything else.
pub fn decode(text: &str) -> Option<[u8; 32]> {
    STANDARD.decode(text.trim()).ok()?.try_into().ok()
}

/// The public key of `secret`, as `wg pubkey` prints it.
pub fn public_of(secret: &StaticSecret) -> String {
    encode(PublicKey::from(secret).as_bytes())
}

/// A public key read back from the register.
pub fn public(text: &str) -> Option<PublicKey> {
    decode(text).map(PublicKey::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_new_each_time_and_read_back_as_written() {
        let a = generate();
        let b = generate();
        assert_ne!(a.to_bytes(), b.to_bytes());
        let text = encode(&a.to_bytes());
        assert_eq!(text.len(), 44);
        assert_eq!(decode(&text), Some(a.to_bytes()));
        assert_eq!(decode("not a key"), None);
        assert_eq!(decode(&encode(&[7; 32])[..40]), None);
        // The public key of wg's documented example private key.
        let known =
            StaticSecret::from(decode("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=").unwrap());
        assert_eq!(
            public_of(&known),
            "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
        );
    }
}
