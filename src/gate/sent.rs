//! What a request sent that the gate's key is made of — its credential
//! headers, whatever their value, in the order they came, and its
//! credential parameters — read without a copy: the credentials and their
//! key when asked for (`found`), and the same bytes to compare with a later
//! request's (`bytes`, `is`: a connection's recall).

use http::{HeaderMap, Uri};

use super::credentials::{key_of, letter, params_of, tokened, Entry, Found, HEADERS};

/// A request's credential headers (any value, in the order they came) and
/// parameters, exactly as sent: everything the credentials' key is made
/// of, so the same bytes are the same key.
#[derive(Debug)]
pub struct Sent<'a> {
    /// Most requests carry one credential header: it is kept on the stack.
    pub(super) first: Option<Entry<'a>>,
    pub(super) more: Vec<Entry<'a>>,
    pub(super) headers: &'a HeaderMap,
    pub(super) uri: &'a Uri,
}

impl<'a> Sent<'a> {
    fn entries(&self) -> impl Iterator<Item = Entry<'a>> + '_ {
        self.first.into_iter().chain(self.more.iter().copied())
    }

    /// The credentials in it, with their key for `site`: None when nothing
    /// sent carries a token.
    pub fn found(&self, site: &str) -> Option<Found<'a>> {
        let mut tokened: Vec<(Entry<'a>, Option<&'a str>)> = self
            .entries()
            .filter_map(|(name, value)| tokened(name, value).map(|token| ((name, value), token)))
            .collect();
        let params: Vec<&str> = params_of(self.uri).collect();
        if tokened.is_empty() && params.is_empty() {
            return None;
        }
        // In `HEADERS` order, whatever order they came in: the same
        // credentials have the same key.
        tokened.sort_by_key(|((name, _), _)| HEADERS.iter().position(|h| *h == name.as_str()));
        Some(Found {
            key: key_of(site, &tokened, &params),
            headers: self.headers,
            uri: self.uri,
        })
    }

    /// What was sent, as bytes to compare with a later request's (`is`):
    /// each header's letter, value and a newline, then each parameter
    /// after `?` (neither a header value nor a URI holds a newline).
    pub fn bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (name, value) in self.entries() {
            bytes.push(letter(name));
            bytes.extend_from_slice(value.as_bytes());
            bytes.push(b'\n');
        }
        for param in params_of(self.uri) {
            bytes.push(b'?');
            bytes.extend_from_slice(param.as_bytes());
            bytes.push(b'\n');
        }
        bytes
    }

    /// Whether exactly what `bytes` holds was sent (`Sent::bytes`), read
    /// without a copy.
    pub fn is(&self, bytes: &[u8]) -> bool {
        let mut rest = bytes;
        let mut take = |lead: u8, piece: &[u8]| {
            let fits = rest.len() > piece.len() + 1
                && rest[0] == lead
                && rest[1..=piece.len()] == *piece
                && rest[piece.len() + 1] == b'\n';
            if fits {
                rest = &rest[piece.len() + 2..];
            }
            fits
        };
        self.entries()
            .all(|(name, value)| take(letter(name), value.as_bytes()))
            && params_of(self.uri).all(|param| take(b'?', param.as_bytes()))
            && rest.is_empty()
    }
}
