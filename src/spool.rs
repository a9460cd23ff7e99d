//! Request buffering: a request's body is read whole at the edge before the
//! request takes a connection home (nginx's `proxy_request_buffering on`).
//! An upload that stalls or trickles then holds nothing at home — only the
//! edge's own limits (`body_timeout`, `body_min_rate`, `max_body`) apply to
//! it — and home's connections carry only complete bodies, which it reads at
//! once. Through the tunnel alike: an over-long body is refused (413) at the
//! edge before a stream is opened.
//!
//! The first `body_memory` bytes of a body stay in memory (most bodies — a
//! login, a progress report — are far smaller), while the process holds
//! less than `MEMORY_TOTAL` such bytes in all; the rest goes to a file under
//! `state_dir/spool`, unlinked as soon as it is made (a crash leaves nothing
//! behind; files left by a crash in between are removed at start), and the
//! files together hold at most `body_spool` bytes — beyond, 503 with
//! `Retry-After`. WebSocket upgrades never come here (they carry no body).

use std::collections::VecDeque;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::body::{full_body, Body};
use crate::body::{BodyError, BoxError};
use crate::error::ProxyError;

/// Body bytes held in memory by every request together; past it, bodies go
/// to the spool from their first byte.
const MEMORY_TOTAL: u64 = 64 * 1024 * 1024;

/// How much of a spooled body is read from its file at a time.
const READ_CHUNK: usize = 64 * 1024;

/// The process's request buffering: where bodies are spooled and how much
/// memory and disk they hold now.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    memory_per_body: u64,
    disk_total: u64,
    memory: Arc<AtomicU64>,
    disk: Arc<AtomicU64>,
    next: AtomicU64,
}

/// Bytes counted against a total until dropped.
#[derive(Debug)]
struct Held {
    total: Arc<AtomicU64>,
    bytes: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.total.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl Held {
    /// `more` bytes added to `total`, unless that would pass `max`.
    fn add(&mut self, more: u64, max: u64) -> bool {
        let added = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                now.checked_add(more).filter(|sum| *sum <= max)
            });
        if added.is_ok() {
            self.bytes += more;
        }
        added.is_ok()
    }
}

/// A body read whole: its bytes in memory, then in its spool file.
#[derive(Debug)]
pub struct Buffered {
    memory: Vec<Bytes>,
    file: Option<tokio::fs::File>,
    /// The body's length.
    pub len: u64,
    held: [Held; 2],
}

impl Spool {
    /// The spool under `state_dir/spool`, emptied of what a crash left.
    /// The folder is made when the first body needs it.
    pub fn new(state_dir: &Path, memory_per_body: u64, disk_total: u64) -> Arc<Spool> {
        let dir = state_dir.join("spool");
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Arc::new(Spool {
            dir,
            memory_per_body,
            disk_total,
            memory: Arc::default(),
            disk: Arc::default(),
            next: AtomicU64::new(0),
        })
    }

    /// Body bytes held now (memory, spool files), for the metrics.
    pub fn held(&self) -> (u64, u64) {
        (
            self.memory.load(Ordering::Acquire),
            self.disk.load(Ordering::Acquire),
        )
    }

    /// Reads `body` (a guarded client body) to its end. Its limits' errors
    /// become their answers (413, 408); a client that went away, 400 (never
    /// sent); no room in memory or the spool, 503.
    pub async fn read(&self, mut body: Body) -> Result<Buffered, ProxyError> {
        let mut buffered = Buffered {
            memory: Vec::new(),
            file: None,
            len: 0,
            held: [
                Held {
                    total: self.memory.clone(),
                    bytes: 0,
                },
                Held {
                    total: self.disk.clone(),
                    bytes: 0,
                },
            ],
        };
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| body_error(&error))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let size = data.len() as u64;
            buffered.len += size;
            let in_memory = buffered.file.is_none()
                && buffered.held[0].bytes + size <= self.memory_per_body
                && buffered.held[0].add(size, MEMORY_TOTAL);
            if in_memory {
                buffered.memory.push(data);
                continue;
            }
            if !buffered.held[1].add(size, self.disk_total) {
                return Err(ProxyError::SpoolFull("body_spool is full"));
            }
            let file = match &mut buffered.file {
                Some(file) => file,
                None => buffered.file.insert(self.open().await?),
            };
            file.write_all(&data).await.map_err(|error| {
                tracing::warn!(dir = %self.dir.display(), %error, "cannot spool a request body");
                ProxyError::SpoolFull("the spool folder cannot be written")
            })?;
        }
        if let Some(file) = &mut buffered.file {
            let rewound = file.flush().await.and(file.seek(SeekFrom::Start(0)).await);
            rewound.map_err(|_| ProxyError::SpoolFull("the spool file cannot be read back"))?;
        }
        Ok(buffered)
    }

    /// A new spool file, already unlinked.
    async fn open(&self) -> Result<tokio::fs::File, ProxyError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{}-{n}", std::process::id()));
        let dir = self.dir.clone();
        let opened = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)?;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            std::fs::remove_file(&path)?;
            Ok::<_, std::io::Error>(file)
        })
        .await;
        match opened {
            Ok(Ok(file)) => Ok(tokio::fs::File::from_std(file)),
            Ok(Err(error)) => {
                tracing::warn!(dir = %self.dir.display(), %error, "cannot make a spool file for a request body");
                Err(ProxyError::SpoolFull("the spool folder cannot be written"))
            }
            Err(_) => Err(ProxyError::SpoolFull("the spool folder cannot be written")),
        }
    }
}

impl Buffered {
    /// The body to send home: the memory part, then the file's, its exact
    /// length known (hyper sends it with `Content-Length`); what it holds is
    /// given back when it is dropped.
    pub fn into_body(self) -> Body {
        if self.file.is_none() && self.memory.len() <= 1 {
            // One chunk or none: no replay needed.
            let bytes = self.memory.into_iter().next().unwrap_or_default();
            return full_body(bytes);
        }
        Replay {
            left: self.len,
            memory: self.memory.into(),
            file: self.file,
            buf: BytesMut::new(),
            _held: self.held,
        }
        .boxed()
    }
}

/// A buffered body on its way home.
struct Replay {
    memory: VecDeque<Bytes>,
    file: Option<tokio::fs::File>,
    left: u64,
    buf: BytesMut,
    _held: [Held; 2],
}

impl HttpBody for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(chunk) = this.memory.pop_front() {
            this.left -= chunk.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        let Some(file) = this.file.as_mut().filter(|_| this.left > 0) else {
            return Poll::Ready(None);
        };
        this.buf.reserve(READ_CHUNK);
        match tokio_util::io::poll_read_buf(Pin::new(file), cx, &mut this.buf) {
            Poll::Ready(Ok(0)) => Poll::Ready(Some(Err("the spool file ended early".into()))),
            Poll::Ready(Ok(read)) => {
                let read = (read as u64).min(this.left);
                this.left -= read;
                let chunk = this.buf.split().freeze();
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Some(Err(error.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

/// A guarded body's error as its answer.
fn body_error(error: &BoxError) -> ProxyError {
    match error.downcast_ref::<BodyError>() {
        Some(BodyError::TooLarge { .. }) => ProxyError::PayloadTooLarge,
        Some(BodyError::TooSlow) => ProxyError::BodyTooSlow,
        _ => ProxyError::ClientGone,
    }
}

#[cfg(test)]
mod tests {
    use super::Spool;
    use crate::body::full_body;
    use bytes::Bytes;
    use http_body::Body as _;
    use http_body_util::BodyExt;

    /// A body of `count` chunks of `size` bytes, chunk `i` all `i`.
    fn chunks(count: usize, size: usize) -> crate::body::Body {
        let frames = (0..count).map(move |i| {
            Ok::<_, crate::body::BoxError>(http_body::Frame::data(Bytes::from(vec![i as u8; size])))
        });
        http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed()
    }

    #[tokio::test]
    async fn small_bodies_stay_in_memory_large_ones_go_to_an_unlinked_file() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), 1024, 1 << 20);
        let small = spool.read(full_body("login")).await.unwrap();
        assert_eq!(small.len, 5);
        assert!(small.file.is_none());
        assert_eq!(spool.held(), (5, 0));
        drop(small);
        assert_eq!(spool.held(), (0, 0));

        let large = spool.read(chunks(10, 1000)).await.unwrap();
        assert_eq!(large.len, 10_000);
        assert_eq!(spool.held(), (1000, 9000), "the first chunk in memory");
        // The file is unlinked: nothing in the folder.
        assert_eq!(
            std::fs::read_dir(dir.path().join("spool")).unwrap().count(),
            0
        );
        let body = large.into_body();
        assert_eq!(body.size_hint().exact(), Some(10_000));
        let bytes = body.collect().await.unwrap().to_bytes();
        let want: Vec<u8> = (0..10).flat_map(|i| vec![i as u8; 1000]).collect();
        assert_eq!(bytes, want);
        assert_eq!(spool.held(), (0, 0), "given back when sent");
    }

    #[tokio::test]
    async fn the_spool_is_bounded_and_leftovers_are_removed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("spool")).unwrap();
        std::fs::write(dir.path().join("spool/123-0"), "left by a crash").unwrap();
        let spool = Spool::new(dir.path(), 100, 5000);
        assert_eq!(
            std::fs::read_dir(dir.path().join("spool")).unwrap().count(),
            0
        );
        let held = spool.read(chunks(4, 1000)).await.unwrap();
        let refused = spool.read(chunks(4, 1000)).await.unwrap_err();
        assert!(matches!(refused, crate::error::ProxyError::SpoolFull(_)));
        assert_eq!(spool.held().1, 4000, "the refused body gave its part back");
        drop(held);
        assert!(spool.read(chunks(4, 1000)).await.is_ok());
    }
}
