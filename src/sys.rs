//! The system calls rimage makes beyond plain reads and writes, in one place: block-device
//! ioctls, writeback and page-cache hints, memory maps, and the mount table. Every `unsafe`
//! block of the crate is here, each with the reason it is sound.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rustix::ioctl::{Getter, NoArg, Opcode, Setter, ioctl, opcode};

/// `BLKGETSIZE64`: size in bytes (linux/fs.h `_IOR(0x12, 114, size_t)`).
const BLKGETSIZE64: Opcode = opcode::read::<u64>(0x12, 114);
/// `BLKRRPART`: re-read the partition table (linux/fs.h `_IO(0x12, 95)`).
const BLKRRPART: Opcode = opcode::none(0x12, 95);
/// `BLKZEROOUT`: zero a byte range (linux/fs.h `_IO(0x12, 127)`).
const BLKZEROOUT: Opcode = opcode::none(0x12, 127);
/// `BLKDISCARD`: discard a byte range (linux/fs.h `_IO(0x12, 119)`).
const BLKDISCARD: Opcode = opcode::none(0x12, 119);
/// `BLKPG`: add or delete one partition (linux/fs.h `_IO(0x12, 105)`).
const BLKPG: Opcode = opcode::none(0x12, 105);
const BLKPG_ADD_PARTITION: i32 = 1;
const BLKPG_DEL_PARTITION: i32 = 2;

/// The size in bytes of a block device.
///
/// # Errors
/// The ioctl's error (ENOTTY for anything but a block device).
pub fn block_device_size(file: &File) -> io::Result<u64> {
    // SAFETY: BLKGETSIZE64 writes exactly one u64 through the pointer the Getter provides.
    Ok(unsafe { ioctl(file, Getter::<BLKGETSIZE64, u64>::new()) }?)
}

/// Asks the kernel to re-read a disk's partition table.
///
/// # Errors
/// The ioctl's error (EBUSY while a partition is in use, EINVAL on a loop device without
/// partition scanning).
pub fn reread_partitions(disk: &File) -> io::Result<()> {
    // SAFETY: BLKRRPART takes no argument.
    unsafe { ioctl(disk, NoArg::<BLKRRPART>::new()) }?;
    Ok(())
}

/// Zeroes `len` bytes at `offset` of a block device.
///
/// # Errors
/// The ioctl's error (the caller falls back to writing zeros).
pub fn zero_out(dev: &File, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: BLKZEROOUT reads a `u64[2]` {start, length} through the pointer.
    unsafe { ioctl(dev, Setter::<BLKZEROOUT, [u64; 2]>::new([offset, len])) }?;
    Ok(())
}

/// Discards `len` bytes at `offset` of a block device.
///
/// # Errors
/// The ioctl's error (EOPNOTSUPP on devices without discard).
pub fn discard(dev: &File, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: BLKDISCARD reads a `u64[2]` {start, length} through the pointer.
    unsafe { ioctl(dev, Setter::<BLKDISCARD, [u64; 2]>::new([offset, len])) }?;
    Ok(())
}

/// `struct blkpg_partition` (linux/blkpg.h).
#[repr(C)]
struct BlkpgPartition {
    start: i64,
    length: i64,
    pno: i32,
    devname: [u8; 64],
    volname: [u8; 64],
}

/// `struct blkpg_ioctl_arg` (linux/blkpg.h).
#[repr(C)]
struct BlkpgIoctlArg {
    op: i32,
    flags: i32,
    datalen: i32,
    data: *mut BlkpgPartition,
}

fn blkpg(disk: &File, op: i32, number: u32, start: u64, length: u64) -> io::Result<()> {
    let invalid = |_| io::Error::from(io::ErrorKind::InvalidInput);
    let mut part = BlkpgPartition {
        start: i64::try_from(start).map_err(invalid)?,
        length: i64::try_from(length).map_err(invalid)?,
        pno: i32::try_from(number).map_err(invalid)?,
        devname: [0; 64],
        volname: [0; 64],
    };
    let mut arg = BlkpgIoctlArg {
        op,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as i32,
        data: &raw mut part,
    };
    // SAFETY: BLKPG reads a blkpg_ioctl_arg whose data points at a blkpg_partition of datalen
    // bytes; both live on this stack frame for the duration of the call. (rustix's opcode
    // type also builds for musl, where libc's ioctl takes an int request.)
    unsafe {
        ioctl(
            disk,
            rustix::ioctl::Updater::<BLKPG, BlkpgIoctlArg>::new(&mut arg),
        )
    }?;
    Ok(())
}

/// Adds partition `number` (`length` bytes at byte `start`) to the kernel's view of a disk.
///
/// # Errors
/// The ioctl's error (EBUSY when it overlaps a partition the kernel knows).
pub fn add_partition(disk: &File, number: u32, start: u64, length: u64) -> io::Result<()> {
    blkpg(disk, BLKPG_ADD_PARTITION, number, start, length)
}

/// Removes partition `number` from the kernel's view of a disk.
///
/// # Errors
/// The ioctl's error (EBUSY while it is in use).
pub fn delete_partition(disk: &File, number: u32) -> io::Result<()> {
    blkpg(disk, BLKPG_DEL_PARTITION, number, 0, 0)
}

/// Starts writeback of `len` bytes at `offset` without waiting for it. Long writes kick
/// writeback as they go so that the final fsync does not stall on gigabytes of dirty pages.
/// A hint: errors are ignored, and the final fsync reports any failure.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    sync_range(file, offset, len, libc::SYNC_FILE_RANGE_WRITE);
}

fn sync_range(file: &File, offset: u64, len: u64, flags: libc::c_uint) {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a plain syscall on an open descriptor; no memory is passed.
    unsafe { libc::sync_file_range(file.as_raw_fd(), off, n, flags) };
}

/// Waits until `len` bytes at `offset` are on disk and drops them from the page cache, so that
/// writing a large image does not push everything else out of memory. A hint; errors ignored.
pub fn drop_written(file: &File, offset: u64, len: u64) {
    use rustix::fs::{Advice, fadvise};
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    sync_range(file, offset, len, flags);
    let _ = fadvise(
        file,
        offset,
        std::num::NonZeroU64::new(len),
        Advice::DontNeed,
    );
}

/// Whether the `len` bytes of `file` at `offset` are a hole (read as zeros, no data stored):
/// the next data at or after `offset` starts at or past `offset + len`. `false` when the
/// filesystem cannot tell.
pub fn is_hole(file: &File, offset: u64, len: u64) -> bool {
    match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(offset)) {
        Ok(next) => next >= offset.saturating_add(len),
        // ENXIO: no data after offset at all.
        Err(e) => e == rustix::io::Errno::NXIO,
    }
}

/// Maps a whole file read-only, for sequential reading.
///
/// # Errors
/// mmap's error.
pub fn map_file(file: &File) -> io::Result<Mmap> {
    // SAFETY: the map is read-only. If another process truncates the file while it is mapped,
    // reads of the lost pages fault (SIGBUS); images are written once under a temporary name
    // and renamed, so a finished image is not modified in place.
    let map = unsafe { Mmap::map(file) }?;
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(map)
}

/// Drops a processed part of a mapped file from this process's memory (the page cache keeps
/// it), so that reading a large image does not grow the resident set by its size.
pub fn release_mapped(map: &Mmap, offset: u64, len: usize) {
    let Ok(offset) = usize::try_from(offset) else {
        return;
    };
    // SAFETY: the map is a read-only shared file mapping: after MADV_DONTNEED, a later access
    // reads the same bytes back from the file; nothing in it is private or anonymous.
    let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len) };
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
    Ok(loop_devices_of(&want)
        .into_iter()
        .map(|(_, dev)| dev)
        .collect())
}

/// The loop devices backed by the file at `canonical` (a canonical path), as (sysfs name, `major:minor`).
pub fn loop_devices_of(canonical: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return out;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(backing) = std::fs::read_to_string(dir.join("loop/backing_file")) else {
            continue;
        };
        let backing = backing.trim_end_matches('\n');
        let backing = backing.strip_suffix(" (deleted)").unwrap_or(backing);
        if Path::new(backing) == canonical
            && let Ok(dev) = std::fs::read_to_string(dir.join("dev"))
        {
            out.push((
                entry.file_name().to_string_lossy().into_owned(),
                dev.trim().to_string(),
            ));
        }
    }
    out
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

/// The mounts of the devices `devs` (`major:minor`) listed in mountinfo text.
fn parse_mountinfo(info: &str, devs: &[String]) -> Vec<Mount> {
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
    out
}

/// The filesystem type of the mount that holds `path` (which need not exist: its nearest
/// existing ancestor is looked up), from /proc/self/mountinfo: the mount with the longest
/// mount point that contains it.
pub fn fs_type_of(path: &Path) -> Option<String> {
    let mut at = path;
    let real = loop {
        if let Ok(real) = std::fs::canonicalize(at) {
            break real;
        }
        at = at.parent()?;
    };
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .filter_map(|line| {
            let (head, tail) = line.split_once(" - ")?;
            let point = unescape_mount_field(head.split(' ').nth(4)?);
            let fstype = tail.split(' ').next()?;
            real.starts_with(&point)
                .then(|| (point.as_os_str().len(), fstype.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, t)| t)
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
    Ok(parse_mountinfo(&info, &devs))
}

/// Mounts `node` (a filesystem of type `fs_type`) at `at`.
///
/// # Errors
/// mount's error.
pub fn mount(node: &Path, at: &Path, fs_type: &str) -> io::Result<()> {
    rustix::mount::mount(
        node,
        at,
        fs_type,
        rustix::mount::MountFlags::empty(),
        None::<&std::ffi::CStr>,
    )?;
    Ok(())
}

/// Unmounts `at`. Errors are ignored: this undoes a mount during cleanup.
pub fn unmount(at: &Path) {
    let _ = rustix::mount::unmount(at, rustix::mount::UnmountFlags::empty());
}

/// `MODULE_INIT_COMPRESSED_FILE` (linux/module.h): the kernel decompresses the module itself.
const MODULE_INIT_COMPRESSED_FILE: i32 = 4;

/// Loads a kernel module from an open file (finit_module(2)); `compressed` for a `.ko.xz`
/// the kernel decompresses itself.
///
/// # Errors
/// The system call's error (EEXIST when already loaded, ENOEXEC for a module of another
/// kernel, EOPNOTSUPP for a compressed module the kernel cannot decompress).
pub fn load_module(file: &File, compressed: bool) -> io::Result<()> {
    let flags = if compressed {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    rustix::system::finit_module(file, c"", flags)?;
    Ok(())
}

/// Mounts a kernel filesystem (proc, sysfs, devtmpfs) with no device behind it.
///
/// # Errors
/// mount's error (EBUSY when already mounted there).
pub fn mount_kernel_fs(fs_type: &str, at: &Path) -> io::Result<()> {
    rustix::mount::mount(
        fs_type,
        at,
        fs_type,
        rustix::mount::MountFlags::NOSUID,
        None::<&std::ffi::CStr>,
    )?;
    Ok(())
}

/// Flushes every filesystem's dirty data (sync(2)).
pub fn sync_all() {
    rustix::fs::sync();
}

/// How PID 1 ends the boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerAction {
    /// Restart the machine.
    Reboot,
    /// Stop, leaving the console as it is.
    Halt,
}

/// Syncs, then restarts or halts the machine (reboot(2)); returns only when the kernel refuses
/// (not PID 1 and not privileged).
///
/// # Errors
/// reboot's error.
pub fn power(action: PowerAction) -> io::Result<()> {
    sync_all();
    let cmd = match action {
        PowerAction::Reboot => rustix::system::RebootCommand::Restart,
        PowerAction::Halt => rustix::system::RebootCommand::Halt,
    };
    rustix::system::reboot(cmd)?;
    Ok(())
}

/// Sets an environment variable. Only for the start of `main` (the netboot init), before any
/// thread exists.
pub fn set_env_before_threads(key: &str, value: &str) {
    // SAFETY: set_var is unsound only when another thread reads the environment at the same
    // time; callers run before any thread is spawned.
    unsafe { std::env::set_var(key, value) };
}

/// Whether this process is PID 1.
pub fn is_pid1() -> bool {
    rustix::process::getpid().is_init()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_are_matched_by_device_number() {
        let info = "36 35 7:1 / /mnt/a\\040b rw,noatime shared:1 - ext4 /dev/loop1 rw,errors=remount-ro\n\
                    37 35 7:2 / /mnt/c ro - ext4 /dev/loop2 ro\n\
                    38 35 7:1 /sub /mnt/d rw - ext4 /dev/loop1 ro\n";
        let m = parse_mountinfo(info, &["7:1".to_string()]);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt/a b"));
        assert!(m[0].read_write);
        assert_eq!(m[0].device, "/dev/loop1");
        assert!(!m[1].read_write, "superblock options decide read-write");
    }
}
