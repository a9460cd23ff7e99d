//! Human-written sizes ("20MiB") and durations ("75s") in the config.
//!
//! Owns only the parsing of these two units; where a value is allowed is the
//! validator's business.

use std::time::Duration;

/// Parses a byte size: a whole number with an optional unit.
///
/// Binary units (`KiB`, `MiB`, `GiB`, and nginx's `k`, `m`, `g`) count in 1024s;
/// decimal units (`KB`, `MB`, `GB`) in 1000s; no unit or `B` means bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = split(text).ok_or_else(|| {
        format!("`{text}` is not a size; write a whole number and a unit, like \"20MiB\"")
    })?;
    let factor: u64 = match unit {
        "" | "B" => 1,
        "KiB" | "k" | "K" => 1 << 10,
        "MiB" | "m" | "M" => 1 << 20,
        "GiB" | "g" | "G" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other if other.starts_with(['.', ',']) => {
            return Err(format!(
                "`{text}`: whole numbers only; write a smaller unit instead (\"1536MiB\", not \"1.5GiB\")"
            ))
        }
        other => {
            return Err(format!(
                "unknown size unit `{other}`; valid units are B, KiB, MiB, GiB, KB, MB, GB"
            ))
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses a duration: a whole number with a unit (`ms`, `s`, `m`, `h`, `d`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = split(text).ok_or_else(|| {
        format!("`{text}` is not a duration; write a whole number and a unit, like \"75s\"")
    })?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => {
            return Err(format!(
                "`{text}` has no unit; write for example \"{number}s\""
            ))
        }
        other if other.starts_with(['.', ',']) => {
            return Err(format!(
                "`{text}`: whole numbers only; write a smaller unit instead (\"90s\", not \"1.5m\")"
            ))
        }
        other => {
            return Err(format!(
                "unknown duration unit `{other}`; valid units are ms, s, m, h, d"
            ))
        }
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long"))
}

/// The leading whole number of `text` and the (trimmed) unit after it.
fn split(text: &str) -> Option<(u64, &str)> {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    Some((number.parse().ok()?, unit.trim()))
}

#[cfg(test)]
mod tests {
    use super::{parse_duration, parse_size};
    use std::time::Duration;

    #[test]
    fn sizes_in_binary_and_decimal_units() {
        assert_eq!(parse_size("20MiB"), Ok(20 * 1024 * 1024));
        assert_eq!(parse_size("20M"), Ok(20 * 1024 * 1024));
        assert_eq!(parse_size("8KiB"), Ok(8192));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size(" 3 KiB "), Ok(3072));
    }

    #[test]
    fn bad_sizes_say_what_is_valid() {
        assert!(parse_size("20 parsecs").unwrap_err().contains("KiB"));
        assert!(parse_size("MiB").unwrap_err().contains("whole number"));
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999GiB")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("75s"), Ok(Duration::from_secs(75)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(parse_duration("10 fortnights")
            .unwrap_err()
            .contains("valid units"));
    }
}
