//! The library's error type: every variant names the device, file, offset or chunk involved.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::fs::ext::ExtError;
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
}

impl Error {
    /// An ext scanning error on `path`.
    pub fn ext(path: &Path, source: ExtError) -> Self {
        Self::Ext {
            path: path.to_path_buf(),
            source,
        }
    }
}
