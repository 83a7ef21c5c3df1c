//! An image file, mapped: reads are slices of the map, and processed ranges are released from
//! this process's memory so that a large image does not grow the resident set by its size.

use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::{RandomAccess, slice_at};
use crate::Error;
use crate::error::IoError;

/// A mapped image file.
pub struct MappedFile {
    path: PathBuf,
    map: Mmap,
}

impl MappedFile {
    /// Opens and maps `path`.
    ///
    /// # Errors
    /// When it cannot be opened or mapped (a directory, a device that cannot be mapped).
    pub fn open(path: &Path) -> Result<Self, Error> {
        let file = File::open(path).map_err(|e| IoError::new(path, "open", None, e))?;
        let map = crate::sys::map_file(&file).map_err(|e| IoError::new(path, "map", None, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
        })
    }
}

impl RandomAccess for MappedFile {
    fn name(&self) -> &Path {
        &self.path
    }

    fn len(&self) -> u64 {
        self.map.len() as u64
    }

    fn read_at(&self, offset: u64, len: u64) -> Result<Cow<'_, [u8]>, Error> {
        slice_at(&self.path, &self.map, offset, len).map(Cow::Borrowed)
    }

    fn release(&self, offset: u64, len: u64) {
        if let Ok(len) = usize::try_from(len) {
            crate::sys::release_mapped(&self.map, offset, len);
        }
    }
}
