//! The restore target: a block device opened exclusively, or a regular file created or extended
//! and written sparse. Positional writes, and the ways to make a range read as zeros (or to
//! discard it) that each kind supports.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::Error;
use crate::error::IoError;
use crate::source::DeviceKind;
use crate::sys::block_device_size;

/// An opened restore target.
#[derive(Debug)]
pub struct Target {
    file: File,
    path: PathBuf,
    kind: DeviceKind,
    /// Created by this restore: every range not written is a hole, already zero.
    fresh: bool,
    size: u64,
}

impl Target {
    /// Opens `path` for a restore of `need` bytes, refusing before any write when it cannot
    /// hold them. A block device is opened with `O_EXCL`, which the kernel refuses while it is
    /// mounted or otherwise in use. A regular file is created, or extended to `need` bytes.
    ///
    /// # Errors
    /// [`Error::Refused`] for a device in use or too small; I/O errors otherwise.
    pub fn open(path: &Path, need: u64) -> Result<Self, Error> {
        let meta = std::fs::metadata(path);
        let is_block = meta
            .as_ref()
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()));
        if is_block {
            let file = open_exclusive(path)?;
            let size = block_device_size(&file)
                .map_err(|e| IoError::new(path, "BLKGETSIZE64", None, e))?;
            if size < need {
                return Err(Error::refused(
                    path,
                    format!(
                        "the device holds {size} bytes but the image needs {need}; nothing was written"
                    ),
                ));
            }
            return Ok(Self {
                file,
                path: path.to_path_buf(),
                kind: DeviceKind::Block,
                fresh: false,
                size,
            });
        }
        match meta {
            Ok(m) if !m.is_file() => Err(Error::refused(
                path,
                "neither a block device nor a regular file",
            )),
            Ok(m) => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(|e| IoError::new(path, "open for writing", None, e))?;
                if m.len() < need {
                    file.set_len(need)
                        .map_err(|e| IoError::new(path, "extend", None, e))?;
                }
                Ok(Self {
                    file,
                    path: path.to_path_buf(),
                    kind: DeviceKind::File,
                    fresh: false,
                    size: m.len().max(need),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(path)
                    .map_err(|e| IoError::new(path, "create", None, e))?;
                file.set_len(need)
                    .map_err(|e| IoError::new(path, "set the size of", None, e))?;
                Ok(Self {
                    file,
                    path: path.to_path_buf(),
                    kind: DeviceKind::File,
                    fresh: true,
                    size: need,
                })
            }
            Err(e) => Err(Error::Io(IoError::new(path, "stat", None, e))),
        }
    }

    /// The target's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Block device or file.
    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Writes `buf` at `offset`.
    ///
    /// # Errors
    /// The I/O error, naming the target and offset.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), IoError> {
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| IoError::new(&self.path, "write", Some(offset), e))
    }

    /// Makes `len` bytes at `offset` read as zeros: nothing for a fresh file (holes), a punched
    /// hole for an existing file, `BLKZEROOUT` for a device; zeros written where those fail.
    ///
    /// # Errors
    /// The I/O error of the fallback write.
    pub fn zero_range(&self, offset: u64, len: u64) -> Result<(), IoError> {
        if len == 0 || self.fresh {
            return Ok(());
        }
        let done = match self.kind {
            DeviceKind::File => punch_hole(&self.file, offset, len).is_ok(),
            DeviceKind::Block => crate::sys::zero_out(&self.file, offset, len).is_ok(),
        };
        if done {
            Ok(())
        } else {
            self.write_zeros(offset, len)
        }
    }

    /// Discards `len` bytes at `offset` (`BLKDISCARD`, or a punched hole for a file). Returns
    /// whether the device supported it.
    ///
    /// # Errors
    /// Never for an unsupported discard (that returns `Ok(false)`).
    pub fn discard_range(&self, offset: u64, len: u64) -> Result<bool, IoError> {
        if len == 0 || self.fresh {
            return Ok(true);
        }
        Ok(match self.kind {
            DeviceKind::File => punch_hole(&self.file, offset, len).is_ok(),
            DeviceKind::Block => crate::sys::discard(&self.file, offset, len).is_ok(),
        })
    }

    fn write_zeros(&self, offset: u64, len: u64) -> Result<(), IoError> {
        let zeros = vec![0u8; (1 << 20).min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            self.write_at(&zeros[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Whether `len` bytes at `offset` read as zeros (a hole of a file counts without reading).
    ///
    /// # Errors
    /// A read error.
    pub fn reads_as_zeros(&self, offset: u64, len: u64) -> Result<bool, IoError> {
        if self.kind == DeviceKind::File && crate::sys::is_hole(&self.file, offset, len) {
            return Ok(true);
        }
        let mut buf = vec![0u8; (1 << 20).min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            self.file
                .read_exact_at(&mut buf[..n], offset + done)
                .map_err(|e| IoError::new(&self.path, "read", Some(offset + done), e))?;
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            done += n as u64;
        }
        Ok(true)
    }

    /// fsync.
    ///
    /// # Errors
    /// The I/O error.
    pub fn sync(&self) -> Result<(), IoError> {
        self.file
            .sync_all()
            .map_err(|e| IoError::new(&self.path, "fsync", None, e))
    }
}

/// Opens a block device read-write with `O_EXCL`, which the kernel refuses (EBUSY) while the
/// device, or a partition of it, is mounted or held by another exclusive opener.
///
/// # Errors
/// [`Error::Refused`] when it is in use, naming it; I/O errors otherwise.
pub fn open_exclusive(path: &Path) -> Result<File, Error> {
    OpenOptions::new().read(true).write(true).custom_flags(rustix::fs::OFlags::EXCL.bits() as i32).open(path).map_err(|e| {
        if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) {
            Error::refused(path, "the device is mounted or in use (the kernel refused exclusive access); unmount it first. Nothing was written")
        } else {
            Error::Io(IoError::new(path, "open for writing", None, e))
        }
    })
}

fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use rustix::fs::{FallocateFlags, fallocate};
    fallocate(
        file,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        offset,
        len,
    )?;
    Ok(())
}

impl crate::source::ReadAt for Target {
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
        self.file.read_exact_at(buf, offset)
    }
}
