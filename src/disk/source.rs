//! Where a saved disk is read from: a directory, or the same layout under a URL (any web
//! server exporting the image directory). Its small files (manifest, boot area) are read whole;
//! its partition images are ordinary image sources.

use std::path::{Path, PathBuf};

use crate::Error;
use crate::error::IoError;
use crate::transport::ImageSource;
use crate::transport::http::{self, HttpOptions};

/// Largest manifest accepted.
const MAX_MANIFEST: u64 = 16 << 20;

/// A saved disk's location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskSource {
    /// A directory written by save-disk.
    Dir(PathBuf),
    /// Its URL (the directory exported by a web server).
    Url {
        /// The URL of the directory, ending in `/`.
        base: String,
        /// Retries and timeouts.
        opts: HttpOptions,
    },
    /// A disk stream on standard input (`save-disk DISK -`, `rimage send`, udp-receiver).
    Stdin,
}

impl DiskSource {
    /// The saved disk a command-line argument names: a URL or a directory.
    pub fn from_arg(arg: &Path, opts: HttpOptions) -> Self {
        match arg.to_str() {
            Some("-") => Self::Stdin,
            Some(s) if http::is_url(s) => {
                let base = if s.ends_with('/') {
                    s.to_string()
                } else {
                    format!("{s}/")
                };
                Self::Url { base, opts }
            }
            _ => Self::Dir(arg.to_path_buf()),
        }
    }

    /// The name for messages.
    pub fn name(&self) -> &Path {
        match self {
            Self::Dir(d) => d,
            Self::Url { base, .. } => Path::new(base),
            Self::Stdin => Path::new("<stdin>"),
        }
    }

    /// The name of the file `name` in it (a path or a URL), for messages.
    pub fn file_name(&self, name: &str) -> PathBuf {
        match self {
            Self::Dir(d) => d.join(name),
            Self::Url { base, .. } => PathBuf::from(format!("{base}{name}")),
            Self::Stdin => PathBuf::from(format!("<stdin>: {name}")),
        }
    }

    /// Reads the small file `name` whole (a manifest, a boot area), refusing one larger than
    /// `limit` bytes.
    ///
    /// # Errors
    /// When it cannot be read.
    pub fn read_file(&self, name: &str, limit: u64) -> Result<Vec<u8>, Error> {
        match self {
            Self::Dir(d) => {
                let path = d.join(name);
                let len = std::fs::metadata(&path)
                    .map_err(|e| IoError::new(&path, "stat", None, e))?
                    .len();
                if len > limit {
                    return Err(Error::refused(
                        &path,
                        format!("holds {len} bytes, more than such a file may have ({limit})"),
                    ));
                }
                std::fs::read(&path).map_err(|e| Error::Io(IoError::new(&path, "read", None, e)))
            }
            Self::Url { base, opts } => http::fetch_small(&format!("{base}{name}"), *opts, limit),
            Self::Stdin => Err(Error::Internal(
                "a disk stream's files are read as its records arrive".into(),
            )),
        }
    }

    /// Reads and checks the manifest.
    ///
    /// # Errors
    /// When it cannot be read or is not a valid manifest.
    pub fn manifest(&self) -> Result<super::manifest::Manifest, Error> {
        let path = self.file_name(super::manifest::MANIFEST);
        let bytes = self.read_file(super::manifest::MANIFEST, MAX_MANIFEST)?;
        let text = String::from_utf8(bytes).map_err(|_| Error::Manifest {
            path: path.clone(),
            source: super::manifest::ManifestError::Syntax("not UTF-8 text".into()),
        })?;
        super::manifest::Manifest::parse(&text).map_err(|source| Error::Manifest { path, source })
    }

    /// The partition image `name` in it.
    pub fn image(&self, name: &str) -> ImageSource {
        match self {
            Self::Dir(d) => ImageSource::File(d.join(name)),
            Self::Url { base, opts } => ImageSource::Url {
                url: format!("{base}{name}"),
                opts: *opts,
            },
            Self::Stdin => ImageSource::Stdin,
        }
    }
}
