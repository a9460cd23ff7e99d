//! The access log: one line per request, in nginx's `combined` format (what
//! GoAccess and fail2ban read) or JSON, written when the response body ends.
//! Access tokens never reach it: `api_key`, `ApiKey` and other secret query
//! values are replaced by `REDACTED` in the target and the referer, and no
//! header that carries credentials is written at all. How a line reads is
//! `format.rs`'s.

mod format;

pub use format::{combined, json, redact};

use std::fs::File;
use std::io::{self, LineWriter, Write};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Response;
use http_body_util::BodyExt;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::body::{Body, Tail};
use crate::config::{AccessFormat, Log, LogTarget};
use crate::metrics::Sending;

/// One finished request.
#[derive(Debug, Clone)]
pub struct Line {
    /// The client's address.
    pub client: IpAddr,
    /// When the request arrived.
    pub time: OffsetDateTime,
    /// Method.
    pub method: String,
    /// Request target as sent (redacted before writing).
    pub target: String,
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub version: &'static str,
    /// Site name.
    pub site: String,
    /// Response status.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// Whether the body was sent whole.
    pub complete: bool,
    /// Referer header (redacted before writing).
    pub referer: Option<String>,
    /// User-Agent header.
    pub user_agent: Option<String>,
    /// From request to the end of the response body.
    pub duration: Duration,
}

impl Line {
    /// The entry of `request` by `client` on `site`, before its status is known.
    pub fn start<B>(request: &http::Request<B>, client: IpAddr, site: &str) -> Line {
        let header = |name: http::header::HeaderName| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Line {
            client,
            time: OffsetDateTime::now_utc(),
            method: request.method().to_string(),
            target: request
                .uri()
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .to_string(),
            version: match request.version() {
                http::Version::HTTP_2 => "HTTP/2.0",
                http::Version::HTTP_3 => "HTTP/3.0",
                http::Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            site: site.to_string(),
            status: 0,
            bytes: 0,
            complete: false,
            referer: header(http::header::REFERER),
            user_agent: header(http::header::USER_AGENT),
            duration: std::time::Duration::ZERO,
        }
    }
}

/// Where access-log lines go.
pub struct AccessLog {
    target: Option<LogTarget>,
    format: AccessFormat,
    file: Mutex<Option<LineWriter<File>>>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("target", &self.target)
            .finish()
    }
}

impl AccessLog {
    /// Opens the access log `log` names (or none, when it is off).
    pub fn open(log: &Log) -> io::Result<AccessLog> {
        let access = AccessLog {
            target: log.access.clone(),
            format: log.format,
            file: Mutex::new(None),
        };
        access.reopen()?;
        Ok(access)
    }

    /// Reopens the file (after logrotate moved it; SIGUSR1).
    pub fn reopen(&self) -> io::Result<()> {
        if let Some(LogTarget::File(path)) = &self.target {
            let file = crate::owner::open_append(path)?;
            *self.file.lock().expect("access log lock") = Some(LineWriter::new(file));
        }
        Ok(())
    }

    /// Whether lines are written at all.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// `response` followed to its body's end (one wrapper for both): the
    /// bytes counted into the site's metrics, and `entry`, when the request
    /// is logged, written with status now, bytes, completeness and duration
    /// (from `started`) then.
    pub fn follow(
        self: &Arc<Self>,
        entry: Option<Line>,
        sending: Sending,
        watched: Option<crate::metrics::streams::Watched>,
        response: Response<Body>,
        started: Instant,
    ) -> Response<Body> {
        let access_log = self.clone();
        let mut entry = entry;
        if let Some(entry) = entry.as_mut() {
            entry.status = response.status().as_u16();
        }
        let sent = sending.counter();
        response.map(|body| {
            Tail::new(body, move |bytes, complete| {
                // In flight until the body ends.
                drop(sending);
                if let Some(mut entry) = entry {
                    entry.bytes = bytes;
                    entry.complete = complete;
                    entry.duration = started.elapsed();
                    access_log.write(&entry);
                }
            })
            .counting(sent)
            .watched(watched)
            .boxed()
        })
    }

    /// Writes one line for `entry`.
    pub fn write(&self, entry: &Line) {
        let mut line = match self.format {
            AccessFormat::Combined => combined(entry),
            AccessFormat::Json => json(entry),
        };
        line.push('\n');
        let result = match &self.target {
            None => Ok(()),
            Some(LogTarget::Stderr) => io::stderr().lock().write_all(line.as_bytes()),
            Some(LogTarget::File(_)) => match self.file.lock().expect("access log lock").as_mut() {
                Some(file) => file.write_all(line.as_bytes()),
                None => Ok(()),
            },
        };
        if let Err(error) = result {
            tracing::warn!(%error, "cannot write the access log");
        }
    }
}
