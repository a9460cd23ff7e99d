//! One cached response: what the memory tier holds and the disk tier
//! writes (its head as JSON beside the body).

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_cache_semantics::CachePolicy;
use serde::{Deserialize, Serialize};

/// One cached response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cached {
    /// The cache key it was stored under.
    pub key: String,
    /// RFC 9111 state: freshness, validators, Vary.
    pub policy: CachePolicy,
    /// Status of the stored response.
    #[serde(with = "http_serde::status_code")]
    pub status: StatusCode,
    /// Headers of the stored response.
    #[serde(with = "http_serde::header_map")]
    pub headers: HeaderMap,
    /// The whole body.
    #[serde(skip)]
    pub body: Bytes,
}

impl Cached {
    /// Bytes it takes, roughly.
    pub fn weight(&self) -> u64 {
        self.body.len() as u64
            + 512
            + self
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len())
                .sum::<usize>() as u64
    }
}
