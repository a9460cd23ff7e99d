//! The I/O layers stacked under hyper, from the socket up:
//!
//! ```text
//! TcpStream
//!   └ rewind::Rewind           the PROXY header read off (proxy_protocol, only
//!                              on listeners that ask), or nothing; first, so
//!                              the guard sees the real client before any TLS
//!                              work; reads ahead on agent connections
//!     └ TLS (tokio-rustls)     the handshake in `connection/handshake.rs`
//!       └ coalesce::Coalesce   HTTP/2 only: answers gathered into full TLS
//!                              records; above TLS, because records are what it
//!                              fills
//!         └ deadline::Parked   head and idle deadlines, requests in flight,
//!           / Watched          and parking of quiet HTTP/1.1 connections; on
//!                              top, because it must see hyper's reads as
//!                              hyper makes them (`head_scan` reads the raw
//!                              head bytes through it)
//!           └ hyper
//! ```
//!
//! Each layer owns one thing about the bytes and knows nothing of requests;
//! `connection/` puts them together.

pub mod coalesce;
pub mod deadline;
pub mod head_scan;
pub mod proxy_protocol;
pub mod rewind;
