//! Positional reads from the thing being imaged: a block device or a regular file.
//!
//! Everything above this module sees a [`ReadAt`]: a fixed size and `read_exact_at`. That keeps
//! the filesystem scanners testable (and fuzzable) over plain byte slices.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

use crate::error::IoError;

/// Something with a size that can be read at any offset.
pub trait ReadAt {
    /// Size in bytes.
    fn size(&self) -> u64;

    /// Fills `buf` from byte `offset`.
    ///
    /// # Errors
    /// Any I/O error, or `UnexpectedEof` when `offset + buf.len()` is beyond [`ReadAt::size`].
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Whether `len` bytes at `offset` are known to read as zeros without reading them (a hole
    /// in a sparse file). `false` means "read them to find out".
    fn known_zero(&self, _offset: u64, _len: u64) -> bool {
        false
    }
}

impl ReadAt for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        let src = self.get(start..end).ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl ReadAt for Vec<u8> {
    fn size(&self) -> u64 {
        self.as_slice().size()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }
}

/// Whether a path is a block device or a regular file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// A block device (`/dev/sda2`, `/dev/loop0p1`).
    Block,
    /// A regular file holding a filesystem image.
    File,
}

/// An opened source: a block device or regular file, read-only.
#[derive(Debug)]
pub struct Device {
    file: File,
    path: PathBuf,
    /// Where this device's byte 0 is in the file (non-zero for a partition read through its disk).
    base: u64,
    size: u64,
    kind: DeviceKind,
}

impl Device {
    /// Opens `path` read-only and finds its size (`BLKGETSIZE64` for block devices).
    ///
    /// # Errors
    /// When the path cannot be opened, is neither a block device nor a regular file, or its size
    /// cannot be read.
    pub fn open(path: &Path) -> Result<Self, IoError> {
        let file = File::open(path).map_err(|e| IoError::new(path, "open", None, e))?;
        Self::from_file(file, path)
    }

    /// Wraps an already opened file (read-only or read-write).
    ///
    /// # Errors
    /// As [`Device::open`].
    pub fn from_file(file: File, path: &Path) -> Result<Self, IoError> {
        let meta = file
            .metadata()
            .map_err(|e| IoError::new(path, "stat", None, e))?;
        let ft = meta.file_type();
        let (kind, size) = if ft.is_block_device() {
            let size = crate::sys::block_device_size(&file)
                .map_err(|e| IoError::new(path, "BLKGETSIZE64", None, e))?;
            (DeviceKind::Block, size)
        } else if ft.is_file() {
            (DeviceKind::File, meta.len())
        } else {
            return Err(IoError::new(
                path,
                "open",
                None,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "neither a block device nor a regular file",
                ),
            ));
        };
        Ok(Self {
            file,
            base: 0,
            path: path.to_path_buf(),
            size,
            kind,
        })
    }

    /// A view of `len` bytes at `offset` of this device, named `name` in messages: a partition
    /// read through its whole disk, without needing the kernel's partition device.
    ///
    /// # Errors
    /// When the range is not inside the device, or the file cannot be duplicated.
    pub fn window(&self, offset: u64, len: u64, name: PathBuf) -> Result<Self, IoError> {
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            let e = io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{len} bytes at offset {offset} are not inside its {} bytes",
                    self.size
                ),
            );
            return Err(IoError::new(&self.path, "view", Some(offset), e));
        }
        let file = self
            .file
            .try_clone()
            .map_err(|e| IoError::new(&self.path, "dup", None, e))?;
        Ok(Self {
            file,
            path: name,
            base: self.base + offset,
            size: len,
            kind: self.kind,
        })
    }

    /// The path this device was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Block device or regular file.
    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Reads exactly `buf.len()` bytes at `offset`, naming the device and offset on failure.
    ///
    /// # Errors
    /// Any I/O error, including a short read at the end of the device.
    pub fn read_at_checked(&self, buf: &mut [u8], offset: u64) -> Result<(), IoError> {
        ReadAt::read_exact_at(self, buf, offset)
            .map_err(|e| IoError::new(&self.path, "read", Some(offset), e))
    }
}

impl ReadAt for Device {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.size)
        {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.file.read_exact_at(buf, self.base + offset)
    }

    fn known_zero(&self, offset: u64, len: u64) -> bool {
        self.kind == DeviceKind::File
            && offset
                .checked_add(self.base)
                .is_some_and(|at| crate::sys::is_hole(&self.file, at, len))
    }
}

/// A standard stream (stdin, stdout) as a plain `File` on a duplicate of its descriptor: it can
/// move between threads, and large reads and writes bypass std's line buffering and locks.
///
/// # Errors
/// When the descriptor cannot be duplicated.
pub fn stdio_file(fd: std::os::fd::BorrowedFd<'_>, name: &Path) -> Result<File, IoError> {
    let owned = fd
        .try_clone_to_owned()
        .map_err(|e| IoError::new(name, "dup", None, e))?;
    Ok(File::from(owned))
}
