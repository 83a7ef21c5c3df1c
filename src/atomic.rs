//! Files that appear complete or not at all: written under a temporary name in the destination
//! directory, fsynced, renamed, and the directory fsynced. A failed or interrupted write leaves
//! nothing under the final name; the temporary file is removed on error.

use std::fs::File;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::Error;
use crate::error::IoError;

/// Suffix of temporary files, so that a leftover one (after a crash) is recognisable.
pub const PARTIAL_SUFFIX: &str = ".rimage-partial";

/// A file being written under a temporary name.
pub struct AtomicFile {
    tmp: NamedTempFile,
    path: PathBuf,
    dir: PathBuf,
    overwrite: bool,
}

impl AtomicFile {
    /// Starts writing `path`. Without `overwrite`, an existing file is refused now (and again,
    /// atomically, at the rename).
    ///
    /// # Errors
    /// [`Error::Refused`] for an existing file; [`Error::Usage`] for a path without a file
    /// name; I/O errors creating the temporary file.
    pub fn create(path: &Path, overwrite: bool) -> Result<Self, Error> {
        let name = path
            .file_name()
            .ok_or_else(|| Error::Usage(format!("{}: not a file name", path.display())))?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(Error::refused(
                path,
                format!(
                    "directory {} does not exist; create it first (mkdir -p {})",
                    dir.display(),
                    dir.display()
                ),
            ));
        }
        if !overwrite && path.exists() {
            return Err(Error::refused(
                path,
                "an image already exists under this name; pass --overwrite to replace it",
            ));
        }
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(PARTIAL_SUFFIX)
            // Like any new file (0666 less the umask), not tempfile's private 0600: images are
            // shared from the head node.
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .tempfile_in(&dir)
            .map_err(|e| IoError::new(&dir, "create a temporary file in", None, e))?;
        Ok(Self {
            tmp,
            path: path.to_path_buf(),
            dir,
            overwrite,
        })
    }

    /// The open temporary file.
    pub fn file(&self) -> &File {
        self.tmp.as_file()
    }

    /// The temporary file's path (for messages about writes to it).
    pub fn temp_path(&self) -> &Path {
        self.tmp.path()
    }

    /// fsync, rename to the final name, fsync the directory.
    ///
    /// # Errors
    /// The failing step; the temporary file is removed.
    pub fn commit(self) -> Result<(), Error> {
        self.tmp
            .as_file()
            .sync_all()
            .map_err(|e| IoError::new(self.tmp.path(), "fsync", None, e))?;
        let persisted = if self.overwrite {
            self.tmp.persist(&self.path)
        } else {
            self.tmp.persist_noclobber(&self.path)
        };
        persisted
            .map_err(|e| IoError::new(&self.path, "rename the finished file to", None, e.error))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| IoError::new(&self.dir, "fsync directory", None, e))?;
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically, replacing what is there.
///
/// # Errors
/// As [`AtomicFile::create`] and [`AtomicFile::commit`].
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let f = AtomicFile::create(path, true)?;
    f.file()
        .write_all(bytes)
        .map_err(|e| IoError::new(f.temp_path(), "write", None, e))?;
    f.commit()
}
