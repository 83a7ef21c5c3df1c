//! The library's error type: every variant names the device, file, offset or chunk involved,
//! and says whether anything was written.

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::disk::manifest::ManifestError;
use crate::disk::table::TableError;
use crate::fs::ScanError;
use crate::image::FormatError;
use crate::image::stream::StreamError;
use crate::import::ImportError;

/// An I/O failure that names the file or device and, where there is one, the byte offset.
#[derive(Debug, Error)]
#[error("{}: {op}{}", path.display(), offset.map(|o| format!(" at byte offset {o}")).unwrap_or_default())]
pub struct IoError {
    /// The device or file.
    pub path: PathBuf,
    /// What was being done ("read", "open", "write", ...).
    pub op: &'static str,
    /// Byte offset of the failed operation, when it was positional.
    pub offset: Option<u64>,
    /// The operating system's error.
    #[source]
    pub source: io::Error,
}

impl IoError {
    /// Wraps `source` with the path and operation that failed.
    pub fn new(path: &Path, op: &'static str, offset: Option<u64>, source: io::Error) -> Self {
        Self {
            path: path.to_path_buf(),
            op,
            offset,
            source,
        }
    }
}

/// Anything that can go wrong in rimage.
#[derive(Debug, Error)]
pub enum Error {
    /// An I/O operation on a named file or device failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// A filesystem is present but cannot be scanned.
    #[error("{}", path.display())]
    Scan {
        /// The device or file.
        path: PathBuf,
        /// What is wrong with it (the message says how to repair it).
        #[source]
        source: ScanError,
    },
    /// Fetching image bytes from a server failed (after retries), or the image on the server
    /// changed while it was read.
    #[error(
        "{}: fetching byte offset {offset}{}: {reason}",
        url.display(),
        chunk.map(|c| format!(" (chunk {c})")).unwrap_or_default()
    )]
    Fetch {
        /// The URL.
        url: PathBuf,
        /// Where in the image the transfer stopped.
        offset: u64,
        /// The chunk being fetched, when known.
        chunk: Option<u64>,
        /// What went wrong.
        reason: String,
    },
    /// An image's bytes are wrong (corrupt, truncated, not an image).
    #[error("{}", path.display())]
    Image {
        /// The image.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: FormatError,
    },
    /// A partition table cannot be read or written.
    #[error("{}", path.display())]
    Table {
        /// The disk (or manifest) concerned.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: TableError,
    },
    /// A disk manifest cannot be read or does not hold together.
    #[error("{}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: ManifestError,
    },
    /// An image made by another imager (partclone) is corrupt or not understood.
    #[error("{}", path.display())]
    Import {
        /// The imported file.
        path: PathBuf,
        /// What is wrong, with the byte offset or block.
        #[source]
        source: ImportError,
    },
    /// The operation was refused before anything was written; the message says why and what to do.
    #[error("{}: {reason}", path.display())]
    Refused {
        /// The device, file or image concerned.
        path: PathBuf,
        /// Why, and what to do about it.
        reason: String,
    },
    /// The operation stopped after it had started writing: the target is incomplete. The
    /// message says what state it is in.
    #[error("{}: {reason}", path.display())]
    Failed {
        /// The device or file that was being written.
        path: PathBuf,
        /// What failed, and what state the target is in.
        reason: String,
    },
    /// A file inside an image cannot be read.
    #[error("{}: {message}", image.display())]
    Browse {
        /// The image.
        image: PathBuf,
        /// What went wrong, naming the path inside the image.
        message: String,
    },
    /// A signal (Ctrl-C, SIGTERM, SIGHUP) stopped the work; anything temporary was removed.
    #[error("interrupted by {}", crate::interrupt::signal_name(*signal))]
    Interrupted {
        /// The signal number.
        signal: i32,
    },
    /// A restore stopped part-way: the target holds part of the image. The source says why.
    #[error(
        "{}: the restore stopped after {}; the target holds part of the image and is not usable until a restore completes",
        target.display(),
        written_text(*written, *total)
    )]
    Incomplete {
        /// The target.
        target: PathBuf,
        /// Chunks written.
        written: u64,
        /// Chunks in the image, when known (a stream's count is known at its end).
        total: Option<u64>,
        /// Why it stopped.
        #[source]
        source: Box<Error>,
    },
    /// A restore-disk stopped at a partition: the message says which partitions are complete.
    #[error(
        "{}: restore-disk stopped at partition {failed}; {}",
        disk.display(),
        disk_progress(completed, remaining)
    )]
    DiskIncomplete {
        /// The disk.
        disk: PathBuf,
        /// The partition that failed.
        failed: u32,
        /// Partitions restored completely before it.
        completed: Vec<u32>,
        /// Partitions not reached.
        remaining: Vec<u32>,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// Invalid options.
    #[error("{0}")]
    Usage(String),
    /// A fault inside rimage or a library it uses (a worker pool that cannot start, a
    /// compressor that fails): not caused by the input, and not the user's mistake.
    #[error("internal error: {0}")]
    Internal(String),
}

fn disk_progress(completed: &[u32], remaining: &[u32]) -> String {
    let list = |v: &[u32]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
        }
    };
    format!(
        "partitions restored completely: {}; not restored: {} (the disk is not usable until a restore completes)",
        list(completed),
        list(remaining)
    )
}

fn written_text(written: u64, total: Option<u64>) -> String {
    match total {
        Some(t) => format!("{written} of {t} chunks were written"),
        None => format!("{} written", crate::plural(written, "chunk")),
    }
}

impl Error {
    /// A scanning error on `path`.
    pub fn scan(path: &Path, source: impl Into<ScanError>) -> Self {
        Self::Scan {
            path: path.to_path_buf(),
            source: source.into(),
        }
    }

    /// A format error in the image at `path`.
    pub fn image(path: &Path, source: FormatError) -> Self {
        Self::Image {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A partition-table error concerning `path`.
    pub fn table(path: &Path, source: TableError) -> Self {
        Self::Table {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A stream reading error in the image at `path`.
    pub fn stream(path: &Path, e: StreamError) -> Self {
        match e {
            StreamError::Format(source) => Self::image(path, source),
            StreamError::Io { offset, source } => {
                Self::Io(IoError::new(path, "read", Some(offset), source))
            }
        }
    }

    /// A refusal concerning `path`: nothing was written.
    pub fn refused(path: &Path, reason: impl Into<String>) -> Self {
        Self::Refused {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// A failure after writing to `path` began.
    pub fn failed(path: &Path, reason: impl Into<String>) -> Self {
        Self::Failed {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// Whether this error means the image failed verification (as opposed to an I/O error or
    /// a refusal): the CLI gives it its own exit status.
    pub fn is_corrupt_image(&self) -> bool {
        match self {
            Self::Image { source, .. } => *source != FormatError::NotAnImage,
            Self::Import { source, .. } => !matches!(
                source,
                ImportError::NotPartclone | ImportError::Io { .. } | ImportError::Backwards { .. }
            ),
            Self::Incomplete { source, .. } | Self::DiskIncomplete { source, .. } => {
                source.is_corrupt_image()
            }
            _ => false,
        }
    }

    /// The error with the chunk it concerns, when it is a fetch that does not say yet.
    pub fn in_chunk(self, seq: u64) -> Self {
        match self {
            Self::Fetch {
                url,
                offset,
                chunk: None,
                reason,
            } => Self::Fetch {
                url,
                offset,
                chunk: Some(seq),
                reason,
            },
            other => other,
        }
    }

    /// The message with every cause, "a: b: c", as the command line prints it.
    pub fn full_message(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            text.push_str(&format!(": {c}"));
            cause = c.source();
        }
        text
    }

    /// The signal that interrupted the work, if a signal did.
    pub fn interrupted_by(&self) -> Option<i32> {
        match self {
            Self::Interrupted { signal } => Some(*signal),
            Self::Incomplete { source, .. } | Self::DiskIncomplete { source, .. } => {
                source.interrupted_by()
            }
            _ => None,
        }
    }

    /// A short name for the kind of failure (for JSON error reports).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Io(_) => "io",
            Self::Fetch { .. } => "fetch",
            Self::Scan { .. } => "filesystem",
            Self::Image { .. } => "image",
            Self::Table { .. } => "partition-table",
            Self::Manifest { .. } => "manifest",
            Self::Import { .. } => "import",
            Self::Refused { .. } => "refused",
            Self::Failed { .. } => "failed",
            Self::Browse { .. } => "browse",
            Self::Interrupted { .. } => "interrupted",
            Self::Incomplete { .. } | Self::DiskIncomplete { .. } => "incomplete",
            Self::Usage(_) => "usage",
            Self::Internal(_) => "internal",
        }
    }

    /// The device, file or image the error is about, when it names one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Io(e) => Some(&e.path),
            Self::Fetch { url, .. } => Some(url),
            Self::Scan { path, .. }
            | Self::Image { path, .. }
            | Self::Table { path, .. }
            | Self::Manifest { path, .. }
            | Self::Import { path, .. }
            | Self::Refused { path, .. }
            | Self::Failed { path, .. } => Some(path),
            Self::Browse { image, .. } => Some(image),
            Self::Incomplete { target, .. } => Some(target),
            Self::DiskIncomplete { disk, .. } => Some(disk),
            Self::Interrupted { .. } | Self::Usage(_) | Self::Internal(_) => None,
        }
    }
}
