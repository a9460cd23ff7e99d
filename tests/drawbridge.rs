//! drawbridge's behaviour through real sockets on 127.0.0.1, real TLS and real
//! clients. One test binary; one module per behaviour or threat.

mod support;

mod access_log;
mod acme;
mod ban_store;
mod cache;
mod client_ip;
mod config_check;
mod container;
mod dashboard;
mod dns;
mod doctor;
mod early_answers;
mod guard;
mod h2_abuse;
mod host_routing;
mod household;
mod http2_records;
mod http3;
mod kernel_bans;
mod metrics;
mod packaging;
mod parking;
mod path_spelling;
mod port80;
mod protocol;
mod proxy;
mod real_clients;
mod reload;
mod request_limits;
mod service;
mod shutdown;
mod side_doors;
mod slow_clients;
mod smuggling;
mod stalled_uploads;
mod streaming;
mod tls_handshake;
mod trailers;
mod tunnel;
mod upstream_faults;
mod upstream_flood;
mod upstream_tls;
mod websocket;
mod wireguard;
