//! The error log's setup: `[log] level` as the filter, lines as text or JSON
//! (`[log] error_format`), to standard error or a file that SIGUSR1 reopens.
//! Under systemd (standard error is the journal's stream, `JOURNAL_STREAM`)
//! every line starts with its syslog priority (`<4>` for a warning), which
//! journald takes as the entry's priority: `journalctl -p warning -u
//! drawbridge` shows the warnings and errors alone. The journal stamps each
//! entry itself, so such lines carry no time of their own.

use std::fmt;
use std::sync::Arc;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{ErrorFormat, Log, LogTarget};
use crate::log_file::LogFile;

/// Why the error log could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ErrorLogError {
    /// `[log] level` was refused by the filter.
    #[error("[log] level: {0}")]
    Level(#[from] tracing_subscriber::filter::ParseError),
    /// The file could not be opened.
    #[error("cannot open the error log {}: {source}", path.display())]
    Open {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The syslog priority of a level, as journald reads it from `<N>`.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// A line format with the journal's `<N>` priority in front.
struct Prioritised<F>(F);

impl<S, N, F> FormatEvent<S, N> for Prioritised<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Whether standard error is the journal's stream: systemd sets
/// `JOURNAL_STREAM` to its device and inode (a child that redirected
/// standard error elsewhere keeps the variable, hence the comparison).
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((device, inode)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    device.parse() == Ok(stderr.dev()) && inode.parse() == Ok(stderr.ino())
}

/// Starts the error log as `log` says; the file, when there is one, to
/// reopen on SIGUSR1.
pub fn init(log: &Log) -> Result<Option<Arc<LogFile>>, ErrorLogError> {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level)?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let journal = matches!(log.error, LogTarget::Stderr) && stderr_is_journal();
    let file = match &log.error {
        LogTarget::Stderr => None,
        LogTarget::File(path) => {
            Some(LogFile::open(path).map_err(|source| ErrorLogError::Open {
                path: path.clone(),
                source,
            })?)
        }
    };
    let ansi = file.is_none() && !journal && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let writer = file.clone();
    let make_writer = move || -> Box<dyn std::io::Write> {
        match &writer {
            Some(file) => Box::new(file.writer()),
            None => Box::new(std::io::stderr()),
        }
    };
    let builder = builder.with_ansi(ansi).with_writer(make_writer);
    // `try_init`: a second start in one process (tests) keeps the first.
    let _ = match (log.error_format, journal) {
        (ErrorFormat::Text, false) => builder.try_init(),
        (ErrorFormat::Text, true) => builder
            .event_format(Prioritised(
                tracing_subscriber::fmt::format().without_time(),
            ))
            .try_init(),
        (ErrorFormat::Json, false) => builder.json().try_init(),
        (ErrorFormat::Json, true) => builder
            .event_format(Prioritised(
                tracing_subscriber::fmt::format().json().without_time(),
            ))
            .try_init(),
    };
    Ok(file)
}
