//! The process's own series, under the names every Prometheus exporter
//! uses (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_open_fds`, …), read from `/proc/self` at each scrape. Linux
//! only, as drawbridge is; a file that cannot be read leaves its series out.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::TypedMetric;
use prometheus_client::registry::Unit;

/// Reads `/proc/self` when scraped.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// What `/proc/self` says of the process.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reading {
    cpu_seconds: f64,
    start_time: f64,
    virtual_bytes: u64,
    resident_bytes: u64,
}

/// The kernel's clock ticks per second in `/proc` (USER_HZ).
fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |p| p as u64)
}

/// `/proc/self/stat` and `/proc/stat`'s boot time read into a `Reading`.
fn read(stat: &str, boot_time: u64, ticks: f64, page: u64) -> Option<Reading> {
    // The command name (field 2) may hold spaces: fields count from after it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime 15,
    // starttime 22, vsize 23, rss 24 (pages).
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Reading {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        start_time: boot_time as f64 + field(22)? as f64 / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page,
    })
}

fn boot_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The soft limit of open files (`Max open files` in `/proc/self/limits`).
fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

fn described(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric: &(impl EncodeMetric + TypedMetric),
) -> Result<(), std::fmt::Error> {
    let metric_encoder = encoder.encode_descriptor(name, help, unit, metric.metric_type())?;
    metric.encode(metric_encoder)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let reading = stat
            .as_deref()
            .and_then(|stat| read(stat, boot_time()?, ticks_per_second(), page_size()));
        if let Some(r) = reading {
            let e = &mut encoder;
            described(
                e,
                "process_cpu",
                "User and system CPU time spent",
                Some(&Unit::Seconds),
                &ConstCounter::new(r.cpu_seconds),
            )?;
            described(
                e,
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch",
                None,
                &ConstGauge::new(r.start_time),
            )?;
            described(
                e,
                "process_virtual_memory_bytes",
                "Virtual memory size",
                None,
                &ConstGauge::new(r.virtual_bytes as i64),
            )?;
            described(
                e,
                "process_resident_memory_bytes",
                "Resident memory size",
                None,
                &ConstGauge::new(r.resident_bytes as i64),
            )?;
        }
        if let Some(open) = open_fds() {
            described(
                &mut encoder,
                "process_open_fds",
                "Open file descriptors",
                None,
                &ConstGauge::new(open as i64),
            )?;
        }
        if let Some(max) = max_fds() {
            described(
                &mut encoder,
                "process_max_fds",
                "The most file descriptors the process may open",
                None,
                &ConstGauge::new(max as i64),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::read;

    #[test]
    fn the_stat_line_is_read_past_a_command_name_with_spaces() {
        let stat = "4242 (drawbridge (x) y) S 1 4242 4242 0 -1 4194560 2000 0 0 0 250 50 0 0 20 0 9 0 1000 123456789 3000 18446744073709551615";
        let r = read(stat, 1_700_000_000, 100.0, 4096).unwrap();
        assert_eq!(r.cpu_seconds, 3.0);
        assert_eq!(r.start_time, 1_700_000_010.0);
        assert_eq!(r.virtual_bytes, 123_456_789);
        assert_eq!(r.resident_bytes, 3000 * 4096);
        assert_eq!(read("garbage", 0, 100.0, 4096), None);
    }
}
