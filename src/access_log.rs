//! The access log: one line per request, in nginx's `combined` format (what
//! GoAccess and fail2ban read) or JSON, written when the response body ends.
//! Access tokens never reach it: `api_key`, `ApiKey` and other secret query
//! values are replaced by `REDACTED` in the target and the referer, and no
//! header that carries credentials is written at all.

use std::borrow::Cow;
use std::cell::RefCell;
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

/// Query parameters whose values are secrets (Jellyfin sends tokens and, on an
/// obsolete route, passwords in URLs). Matched without regard to case.
const SECRET_PARAMS: [&str; 6] = [
    "api_key",
    "apikey",
    "token",
    "access_token",
    "pw",
    "password",
];

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
        response: Response<Body>,
        started: Instant,
    ) -> Response<Body> {
        let access_log = self.clone();
        let mut entry = entry;
        if let Some(entry) = entry.as_mut() {
            entry.status = response.status().as_u16();
        }
        response.map(|body| {
            Tail::new(body, move |bytes, complete| {
                sending.done(bytes);
                if let Some(mut entry) = entry {
                    entry.bytes = bytes;
                    entry.complete = complete;
                    entry.duration = started.elapsed();
                    access_log.write(&entry);
                }
            })
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

/// nginx `combined`: `$remote_addr - $remote_user [$time_local] "$request"
/// $status $body_bytes_sent "$http_referer" "$http_user_agent"`. Built by
/// appending, not with `format!`: the log is on by default and written for
/// every request (what `format!` cost is in docs/performance.md).
pub fn combined(e: &Line) -> String {
    let redacted = redact(&e.target);
    let target = escape(&redacted);
    let referer_redacted = e.referer.as_deref().map(redact);
    let referer = referer_redacted.as_deref().map(escape);
    let user_agent = e.user_agent.as_deref().map(escape);
    let mut line = String::with_capacity(
        96 + target.len()
            + referer.as_ref().map_or(1, |r| r.len())
            + user_agent.as_ref().map_or(1, |ua| ua.len()),
    );
    crate::client_ip::push_ip(&mut line, e.client);
    line.push_str(" - - [");
    push_time_local(&mut line, e.time);
    line.push_str("] \"");
    line.push_str(&e.method);
    line.push(' ');
    line.push_str(&target);
    line.push(' ');
    line.push_str(e.version);
    line.push_str("\" ");
    push_decimal(&mut line, e.status.into());
    line.push(' ');
    push_decimal(&mut line, e.bytes);
    line.push_str(" \"");
    line.push_str(referer.as_deref().unwrap_or("-"));
    line.push_str("\" \"");
    line.push_str(user_agent.as_deref().unwrap_or("-"));
    line.push('"');
    line
}

thread_local! {
    /// The `$time_local` text of the last second logged on this thread, with
    /// that second and offset: lines in the same second reuse it (nginx keeps
    /// its time strings the same way).
    static TIME_LOCAL: RefCell<(i64, i32, String)> = const { RefCell::new((i64::MIN, 0, String::new())) };
}

/// Appends `time` as nginx's `$time_local`: `26/Nov/2026:19:24:55 +0000`.
fn push_time_local(out: &mut String, time: OffsetDateTime) {
    let second = time.unix_timestamp();
    let offset = time.offset().whole_seconds();
    TIME_LOCAL.with_borrow_mut(|(at, at_offset, text)| {
        if (*at, *at_offset) != (second, offset) {
            *text = time
                .format(&time::macros::format_description!(
                    "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] [offset_hour sign:mandatory][offset_minute]"
                ))
                .unwrap_or_default();
            (*at, *at_offset) = (second, offset);
        }
        out.push_str(text);
    });
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// One JSON object per line.
pub fn json(e: &Line) -> String {
    let time = e
        .time
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    serde_json::json!({
        "time": time,
        "client": e.client.to_string(),
        "site": e.site,
        "method": e.method,
        "target": redact(&e.target),
        "version": e.version,
        "status": e.status,
        "bytes": e.bytes,
        "complete": e.complete,
        "referer": e.referer.as_deref().map(redact),
        "user_agent": e.user_agent,
        "duration_ms": e.duration.as_millis() as u64,
    })
    .to_string()
}

/// Replaces the values of secret query parameters with `REDACTED`.
pub fn redact(target: &str) -> Cow<'_, str> {
    let Some((before, query)) = target.split_once('?') else {
        return Cow::Borrowed(target);
    };
    let secret = |pair: &str| {
        let name = pair.split('=').next().unwrap_or("");
        crate::canonical::param_is(name, &SECRET_PARAMS)
    };
    if !query.split('&').any(secret) {
        return Cow::Borrowed(target);
    }
    let pairs: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if secret(pair) => Cow::Owned(format!("{name}=REDACTED")),
            _ => Cow::Borrowed(pair),
        })
        .collect();
    Cow::Owned(format!("{before}?{}", pairs.join("&")))
}

/// Escapes `"`, `\` and bytes outside printable ASCII as nginx does (`\xHH`).
fn escape(text: &str) -> Cow<'_, str> {
    if text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
#[path = "access_log_tests.rs"]
mod tests;
