//! Positional reads from the thing being imaged: a block device or a regular file.
//!
//! Everything above this module sees a [`ReadAt`]: a fixed size and `read_exact_at`. That keeps
//! the filesystem scanners testable (and fuzzable) over plain byte slices.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

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

/// Something with a size that can be read at any offset.
pub trait ReadAt {
    /// Size in bytes.
    fn size(&self) -> u64;

    /// Fills `buf` from byte `offset`.
    ///
    /// # Errors
    /// Any I/O error, or `UnexpectedEof` when `offset + buf.len()` is beyond [`ReadAt::size`].
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
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
            let size = block_device_size(&file)
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
}

/// `BLKGETSIZE64`: the size in bytes of a block device (linux/fs.h: `_IOR(0x12, 114, size_t)`).
pub fn block_device_size(file: &File) -> io::Result<u64> {
    use rustix::ioctl::{Getter, ioctl, opcode};
    const BLKGETSIZE64: rustix::ioctl::Opcode = opcode::read::<u64>(0x12, 114);
    // SAFETY: BLKGETSIZE64 writes exactly one u64 through the pointer the Getter provides.
    let size = unsafe { ioctl(file, Getter::<BLKGETSIZE64, u64>::new()) }?;
    Ok(size)
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

/// Starts writeback of `len` bytes at `offset` without waiting for it
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`). Long writes kick writeback as they go so that
/// the final fsync does not stall on gigabytes of dirty pages. Errors are ignored: this is a
/// hint, and the final fsync reports any failure.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: plain syscall on an open descriptor; no memory is passed.
    unsafe { libc::sync_file_range(file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Waits until `len` bytes at `offset` are on disk and drops them from the page cache, so that
/// writing a large image does not push everything else out of memory. A hint; errors ignored.
pub fn drop_written(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: plain syscalls on an open descriptor; no memory is passed.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), off, n, flags);
        libc::posix_fadvise(file.as_raw_fd(), off, n, libc::POSIX_FADV_DONTNEED);
    }
}

/// A place where a device (or the loop device over a regular file) is mounted.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Mount {
    /// The mounted device as /proc/self/mountinfo names it.
    pub device: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Whether the filesystem is mounted read-write (its superblock options).
    pub read_write: bool,
}

/// The device numbers (`major:minor`) that stand for `path`: the device itself, or every loop
/// device backed by the regular file.
fn device_numbers(path: &Path) -> io::Result<Vec<String>> {
    let meta = std::fs::metadata(path)?;
    if meta.file_type().is_block_device() {
        let rdev = std::os::unix::fs::MetadataExt::rdev(&meta);
        return Ok(vec![format!(
            "{}:{}",
            rustix::fs::major(rdev),
            rustix::fs::minor(rdev)
        )]);
    }
    let want = std::fs::canonicalize(path)?;
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Ok(out);
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(backing) = std::fs::read_to_string(dir.join("loop/backing_file")) else {
            continue;
        };
        let backing = backing.trim_end_matches('\n');
        let backing = backing.strip_suffix(" (deleted)").unwrap_or(backing);
        if Path::new(backing) == want
            && let Ok(dev) = std::fs::read_to_string(dir.join("dev"))
        {
            out.push(dev.trim().to_string());
        }
    }
    Ok(out)
}

/// Decodes the octal escapes (`\040` for a space) of a mountinfo field.
fn unescape_mount_field(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let Some(d) = octal {
            let v = d.iter().fold(0u16, |acc, c| acc * 8 + u16::from(c - b'0'));
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

/// Where `path` (a block device, or a regular file through the loop devices over it) is
/// mounted, from /proc/self/mountinfo.
///
/// # Errors
/// When `path` cannot be examined or mountinfo cannot be read.
pub fn mounts_of(path: &Path) -> io::Result<Vec<Mount>> {
    let devs = device_numbers(path)?;
    if devs.is_empty() {
        return Ok(Vec::new());
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut out = Vec::new();
    for line in info.lines() {
        // "36 35 98:0 /root /mnt rw,noatime shared:1 - ext4 /dev/sda2 rw,errors=remount-ro"
        let (head, tail) = line.split_once(" - ").unwrap_or((line, ""));
        let fields: Vec<&str> = head.split(' ').collect();
        let (Some(devno), Some(mount_point)) = (fields.get(2), fields.get(4)) else {
            continue;
        };
        if !devs.iter().any(|d| d == devno) {
            continue;
        }
        let tail: Vec<&str> = tail.split(' ').collect();
        let device = tail.get(1).map_or_else(String::new, |s| s.to_string());
        let read_write = tail.get(2).is_some_and(|o| o.split(',').any(|x| x == "rw"));
        out.push(Mount {
            device,
            mount_point: unescape_mount_field(mount_point),
            read_write,
        });
    }
    Ok(out)
}
