//! The error log as a file that can be reopened (after logrotate moved it;
//! SIGUSR1), shared by every thread that logs.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// An append-only log file, reopened on demand.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl LogFile {
    /// Opens `path` for appending, creating it.
    pub fn open(path: &Path) -> io::Result<Arc<LogFile>> {
        Ok(Arc::new(LogFile {
            path: path.to_path_buf(),
            file: Mutex::new(Self::append(path)?),
        }))
    }

    fn append(path: &Path) -> io::Result<File> {
        crate::owner::open_append(path)
    }

    /// Opens the path again: lines go to the new file from now on.
    pub fn reopen(&self) -> io::Result<()> {
        let file = Self::append(&self.path)?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = file;
        Ok(())
    }

    /// A writer for one log line (what `tracing_subscriber` asks for).
    pub fn writer(self: &Arc<Self>) -> LogWriter {
        LogWriter(self.clone())
    }
}

/// Writes to the current file of a `LogFile`.
#[derive(Debug)]
pub struct LogWriter(Arc<LogFile>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0
            .file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    #[test]
    fn after_a_move_lines_go_to_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("error.log");
        let log = super::LogFile::open(&path).unwrap();
        log.writer().write_all(b"one\n").unwrap();
        std::fs::rename(&path, dir.path().join("error.log.1")).unwrap();
        log.writer().write_all(b"two\n").unwrap();
        log.reopen().unwrap();
        log.writer().write_all(b"three\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("error.log.1")).unwrap(),
            "one\ntwo\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
    }
}
