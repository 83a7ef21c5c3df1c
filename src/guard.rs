//! The refusals that protect data, checked before anything is written: a device that is
//! mounted while it is read (inconsistent image) or written (a corrupted filesystem); an image
//! and a device that are the same storage; a device given where an image belongs; binary data
//! to or from a terminal; a restore that would destroy a partition table or another filesystem.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::Error;
use crate::error::IoError;
use crate::progress::Progress;

/// What rimage is about to do with a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read it to save it: a read-only mount is fine; a read-write one only with `force`.
    Read {
        /// Image it anyway (and say so).
        force: bool,
    },
    /// Write it: any mount refuses.
    Write,
}

/// Refuses when `device` (a block device, or a regular file through the loop devices over it)
/// is mounted in a way `access` does not allow; notes a forced read of a mounted device.
///
/// # Errors
/// [`Error::Refused`] naming the device and mount point, and what to do.
pub fn check_not_mounted(
    device: &Path,
    access: Access,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let mounts = crate::sys::mounts_of(device)
        .map_err(|e| IoError::new(device, "look up the mounts of", None, e))?;
    let offending = mounts
        .iter()
        .find(|m| access == Access::Write || m.read_write);
    let Some(m) = offending else {
        return Ok(());
    };
    let at = m.mount_point.display();
    match access {
        Access::Write => Err(Error::refused(
            device,
            format!(
                "mounted at {at} (as {}); unmount it first. Nothing was written",
                m.device
            ),
        )),
        Access::Read { force: false } => Err(Error::refused(
            device,
            format!(
                "mounted read-write at {at}: an image of a filesystem in use would be inconsistent. Unmount it, \
                 remount it read-only (mount -o remount,ro {at}), freeze it (fsfreeze -f {at}; fsfreeze -u {at} \
                 afterwards) or image an LVM snapshot; --force images it as it is"
            ),
        )),
        Access::Read { force: true } => {
            progress.note(&format!(
                "{} is mounted read-write at {at}; imaging it anyway (--force): the image may be inconsistent. \
                 Prefer fsfreeze -f {at} or an LVM snapshot",
                device.display()
            ));
            Ok(())
        }
    }
}

/// The (device, inode) a path names, following symlinks; `None` when it does not exist.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino()))
}

/// The regular file behind a loop device (or a partition of one), from sysfs.
fn loop_backing_file(dev: &Path) -> Option<std::path::PathBuf> {
    let m = std::fs::metadata(dev).ok()?;
    if !m.file_type().is_block_device() {
        return None;
    }
    let rdev = m.rdev();
    let sys = std::path::PathBuf::from(format!(
        "/sys/dev/block/{}:{}",
        rustix::fs::major(rdev),
        rustix::fs::minor(rdev)
    ));
    // A partition's sysfs directory sits inside its disk's.
    [
        sys.join("loop/backing_file"),
        sys.join("../loop/backing_file"),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .map(|s| {
        let s = s.trim_end_matches('\n');
        s.strip_suffix(" (deleted)").unwrap_or(s).into()
    })
}

/// Whether `a` and `b` are the same storage: the same file or device (also through symlinks
/// and hard links), or a loop device (or one of its partitions) and the file behind it.
pub fn same_storage(a: &Path, b: &Path) -> bool {
    if let (Some(x), Some(y)) = (file_id(a), file_id(b))
        && x == y
    {
        return true;
    }
    let backs = |dev: &Path, file: &Path| {
        loop_backing_file(dev)
            .is_some_and(|f| file_id(&f).is_some() && file_id(&f) == file_id(file))
    };
    backs(a, b) || backs(b, a)
}

/// Refuses an operation whose image and device are the same storage (`rimage restore X X`,
/// `rimage save --overwrite X X`): it would destroy what it reads.
///
/// # Errors
/// [`Error::Refused`].
pub fn check_distinct(image: &Path, device: &Path) -> Result<(), Error> {
    if same_storage(image, device) {
        return Err(Error::refused(
            device,
            format!(
                "is the same file or device as the image {}: that would overwrite what is being read. Nothing was written",
                image.display()
            ),
        ));
    }
    Ok(())
}

/// Refuses an image path that is not a regular file (or "-"): a block or character device, a
/// directory, or a new name among the device nodes of /dev is almost always a device given
/// where an image belongs.
///
/// # Errors
/// [`Error::Refused`] asking whether the arguments were swapped.
pub fn check_image_path(image: &Path, usage: &str) -> Result<(), Error> {
    if image.as_os_str() == "-" {
        return Ok(());
    }
    let what = match std::fs::metadata(image) {
        Ok(m) if m.file_type().is_block_device() => Some("a block device"),
        Ok(m) if m.file_type().is_char_device() => Some("a character device"),
        Ok(m) if m.is_dir() => Some("a directory"),
        Ok(m) if !m.is_file() => Some("not a regular file"),
        // A new file on /dev's device filesystem is not a device: a later restore to that
        // name would write into memory and report success. (/dev/shm is an ordinary tmpfs.)
        _ if crate::sys::fs_type_of(image).as_deref() == Some("devtmpfs") => {
            Some("a path in /dev's device filesystem")
        }
        _ => None,
    };
    match what {
        Some(what) => Err(Error::refused(
            image,
            format!(
                "is {what}, but an image must be a regular file (or - for a pipe): did you swap the arguments? ({usage}). Nothing was written"
            ),
        )),
        None => Ok(()),
    }
}

/// Refuses to write binary image data to a terminal, or to wait for it from one (as zstd does).
///
/// # Errors
/// [`Error::Refused`].
pub fn check_not_terminal(stdin: bool) -> Result<(), Error> {
    use std::io::IsTerminal;
    let (is_tty, name, what) = if stdin {
        (
            std::io::stdin().is_terminal(),
            "<stdin>",
            "standard input is a terminal: pipe an image into rimage (udp-receiver ... | rimage restore - TARGET)",
        )
    } else {
        (
            std::io::stdout().is_terminal(),
            "<stdout>",
            "standard output is a terminal: an image is binary; redirect it to a file or pipe (rimage save SOURCE - | ...)",
        )
    };
    if is_tty {
        return Err(Error::refused(Path::new(name), what));
    }
    Ok(())
}

/// What a restore target holds that a restore would destroy and that is not the image's own
/// filesystem: another filesystem, a partition table, partitions, an image. `None` when it is
/// blank (nothing recognised) or holds the image's filesystem (same type and UUID).
pub fn target_contents(target: &Path, image: &crate::fs::Identity) -> Option<String> {
    let name = target.display();
    if crate::info::is_image(target) {
        return Some(format!("{name} is a rimage image"));
    }
    let dev = crate::source::Device::open(target).ok()?;
    let found = crate::fs::identify(&dev);
    if found.kind != crate::fs::FsType::Raw {
        let same = found.kind == image.kind && found.uuid == image.uuid;
        return (!same).then(|| format!("{name} holds {found}"));
    }
    if let Ok(Some(t)) = crate::disk::inspect_disk(target) {
        return Some(format!("{name} holds {}", crate::disk::describe_table(&t)));
    }
    let parts = crate::disk::kernel::partitions_of(target).unwrap_or_default();
    (!parts.is_empty()).then(|| {
        format!(
            "{name} has {} (the kernel knows them)",
            crate::plural(parts.len() as u64, "partition")
        )
    })
}
