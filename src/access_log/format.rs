//! How an access-log line reads: nginx's `combined` or JSON, secrets
//! redacted and unprintable bytes escaped.

use std::borrow::Cow;
use std::cell::RefCell;

use time::OffsetDateTime;

use super::Line;

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
mod tests {
    use super::{combined, json, redact};
    use crate::access_log::Line;
    use std::time::Duration;

    fn entry(target: &str) -> Line {
        Line {
            client: "203.0.113.9".parse().unwrap(),
            time: time::macros::datetime!(2026-11-26 19:24:55 UTC),
            method: "GET".into(),
            target: target.into(),
            version: "HTTP/1.1",
            site: "jelly.test".into(),
            status: 200,
            bytes: 512,
            complete: true,
            referer: Some("https://jelly.test/web/?ApiKey=abc".into()),
            user_agent: Some("Mozilla \"X\"".into()),
            duration: Duration::from_millis(12),
        }
    }

    #[test]
    fn tokens_are_redacted_in_any_case() {
        assert_eq!(
            redact("/Videos/1/stream?api_key=s3cret&Static=true"),
            "/Videos/1/stream?api_key=REDACTED&Static=true"
        );
        assert_eq!(
            redact("/socket?ApiKey=s3cret&deviceId=x"),
            "/socket?ApiKey=REDACTED&deviceId=x"
        );
        assert_eq!(
            redact("/Users/1/Authenticate?pw=hunter2"),
            "/Users/1/Authenticate?pw=REDACTED"
        );
        assert_eq!(redact("/web/index.html?x=1"), "/web/index.html?x=1");
        assert_eq!(
            redact("/Videos/1/stream?api%5Fkey=s3cret"),
            "/Videos/1/stream?api%5Fkey=REDACTED"
        );
    }

    #[test]
    fn combined_matches_nginx() {
        let line = combined(&entry("/Items/1/Images/Primary?api_key=s3cret"));
        assert_eq!(
            line,
            "203.0.113.9 - - [26/Nov/2026:19:24:55 +0000] \"GET /Items/1/Images/Primary?api_key=REDACTED HTTP/1.1\" 200 512 \"https://jelly.test/web/?ApiKey=REDACTED\" \"Mozilla \\x22X\\x22\""
        );
    }

    #[test]
    fn each_line_has_its_own_time_numbers_and_client() {
        // The time text is kept per second: a later second, a return to an
        // earlier one and another offset each get theirs.
        let at = |time| Line { time, ..entry("/") };
        for (time, text) in [
            (
                time::macros::datetime!(2026-11-26 19:24:55 UTC),
                "[26/Nov/2026:19:24:55 +0000]",
            ),
            (
                time::macros::datetime!(2026-11-26 19:24:56 UTC),
                "[26/Nov/2026:19:24:56 +0000]",
            ),
            (
                time::macros::datetime!(2026-11-26 19:24:55 UTC),
                "[26/Nov/2026:19:24:55 +0000]",
            ),
            (
                time::macros::datetime!(2026-11-26 19:24:55 -5),
                "[26/Nov/2026:19:24:55 -0500]",
            ),
            (
                time::macros::datetime!(2027-01-01 00:00:00 UTC),
                "[01/Jan/2027:00:00:00 +0000]",
            ),
        ] {
            let line = combined(&at(time));
            assert!(line.contains(text), "{line} lacks {text}");
        }
        let line = combined(&Line {
            client: "2001:db8::7".parse().unwrap(),
            status: 404,
            bytes: 0,
            referer: None,
            user_agent: None,
            ..entry("/x")
        });
        assert_eq!(
            line,
            "2001:db8::7 - - [26/Nov/2026:19:24:55 +0000] \"GET /x HTTP/1.1\" 404 0 \"-\" \"-\""
        );
        let line = combined(&Line {
            client: "10.0.0.255".parse().unwrap(),
            status: 206,
            bytes: u64::MAX,
            ..entry("/x")
        });
        assert!(
            line.starts_with("10.0.0.255 - - ") && line.contains("\" 206 18446744073709551615 \""),
            "{line}"
        );
    }

    #[test]
    fn json_lines_parse_and_hold_no_token() {
        let line = json(&entry("/a?api_key=s3cret"));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["status"], 200);
        assert_eq!(value["target"], "/a?api_key=REDACTED");
        assert!(!line.contains("s3cret") && !line.contains("abc"));
    }
}
