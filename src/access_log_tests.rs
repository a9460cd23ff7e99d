//! Unit tests of `access_log.rs`.

use super::{combined, json, redact, Line};
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
