//! The library's error type: every variant names the device, file, offset or chunk involved.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::fs::ext::ExtError;
use crate::image::FormatError;
use crate::image::stream::StreamError;
pub use crate::source::IoError;

/// Anything that can go wrong in rimage.
#[derive(Debug, Error)]
pub enum Error {
    /// An I/O operation on a named file or device failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// An ext filesystem is present but cannot be scanned.
    #[error("{}", path.display())]
    Ext {
        /// The device or file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: ExtError,
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
    /// The operation was refused before anything was written; the message says why and what to do.
    #[error("{}: {reason}", path.display())]
    Refused {
        /// The device, file or image concerned.
        path: PathBuf,
        /// Why, and what to do about it.
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
    /// Invalid options.
    #[error("{0}")]
    Usage(String),
    /// zstd failed to compress (no valid input causes this).
    #[error("compression failed: {0}")]
    Compress(String),
}

impl Error {
    /// An ext scanning error on `path`.
    pub fn ext(path: &Path, source: ExtError) -> Self {
        Self::Ext {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A format error in the image at `path`.
    pub fn image(path: &Path, source: FormatError) -> Self {
        Self::Image {
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

    /// A refusal concerning `path`.
    pub fn refused(path: &Path, reason: impl Into<String>) -> Self {
        Self::Refused {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// Whether this error means the image failed verification (as opposed to an I/O error or
    /// a refusal): the CLI gives it its own exit status.
    pub fn is_corrupt_image(&self) -> bool {
        matches!(self, Self::Image { source, .. } if *source != FormatError::NotAnImage)
    }
}
