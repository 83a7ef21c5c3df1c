//! What the kernel knows about a disk's partitions, and how to make it learn a new table:
//! `BLKRRPART` (re-read), and `BLKPG` (add or delete one partition) where re-reading does not
//! work (loop devices without partition scanning, a disk that is in use).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A partition the kernel has a device for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelPartition {
    /// Partition number (1-based).
    pub number: u32,
    /// Its device node, e.g. /dev/sdb2 or /dev/loop0p2.
    pub node: PathBuf,
    /// First byte on the disk.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
}

/// The sysfs directory of a block device (resolving /dev symlinks).
fn sysfs_dir(disk: &Path) -> io::Result<PathBuf> {
    let real = std::fs::canonicalize(disk)?;
    let name = real
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no device name"))?;
    Ok(Path::new("/sys/class/block").join(name))
}

fn read_u64(path: &Path) -> io::Result<u64> {
    std::fs::read_to_string(path)?.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not a number", path.display()),
        )
    })
}

/// The partitions of `disk` the kernel currently knows (empty for a regular file).
///
/// # Errors
/// When sysfs cannot be read.
pub fn partitions_of(disk: &Path) -> io::Result<Vec<KernelPartition>> {
    if !std::fs::metadata(disk)
        .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()))
    {
        return Ok(Vec::new());
    }
    let dir = sysfs_dir(disk)?;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir)?.flatten() {
        let p = entry.path();
        let Ok(number) = read_u64(&p.join("partition")) else {
            continue;
        };
        // sysfs sizes and starts are in 512-byte sectors whatever the logical block size.
        let start = read_u64(&p.join("start"))? * 512;
        let size = read_u64(&p.join("size"))? * 512;
        let node = Path::new("/dev").join(entry.file_name());
        out.push(KernelPartition {
            number: u32::try_from(number).unwrap_or(u32::MAX),
            node,
            start,
            size,
        });
    }
    out.sort_by_key(|p| p.number);
    Ok(out)
}

/// Makes the kernel's view of `disk`'s partitions equal `wanted` ((number, start, size) in
/// bytes): `BLKRRPART` first, and where that fails, `BLKPG` deletes the partitions it knows and
/// adds the wanted ones. Returns how it was done.
///
/// # Errors
/// When neither works.
pub fn publish(
    disk: &File,
    disk_path: &Path,
    wanted: &[(u32, u64, u64)],
) -> io::Result<&'static str> {
    let same = |k: &KernelPartition, &(n, s, l): &(u32, u64, u64)| {
        k.number == n && k.start == s && k.size == l
    };
    let matches = |known: &[KernelPartition]| {
        known.len() == wanted.len() && known.iter().zip(wanted).all(|(k, w)| same(k, w))
    };
    if matches(&partitions_of(disk_path)?) {
        // Nothing to change (and partitions held open elsewhere stay usable).
        return Ok("the kernel already knows these partitions");
    }
    if crate::sys::reread_partitions(disk).is_ok() && matches(&partitions_of(disk_path)?) {
        return Ok("the kernel re-read the partition table (BLKRRPART)");
    }
    // Only what differs: a partition in use that is already right is left alone.
    let known = partitions_of(disk_path)?;
    for k in known.iter().filter(|k| !wanted.iter().any(|w| same(k, w))) {
        crate::sys::delete_partition(disk, k.number)?;
    }
    for w in wanted.iter().filter(|w| !known.iter().any(|k| same(k, w))) {
        crate::sys::add_partition(disk, w.0, w.1, w.2)?;
    }
    if matches(&partitions_of(disk_path)?) {
        Ok("partitions added with BLKPG (the kernel did not re-read the table)")
    } else {
        Err(io::Error::other(
            "the kernel's partitions still differ from the table after BLKPG",
        ))
    }
}

/// Waits (up to `timeout`) for the device node of partition `number` of `disk`.
///
/// # Errors
/// When it does not appear.
pub fn wait_for_node(disk: &Path, number: u32, timeout: Duration) -> io::Result<PathBuf> {
    let until = Instant::now() + timeout;
    loop {
        if let Some(p) = partitions_of(disk)?
            .into_iter()
            .find(|p| p.number == number)
            && p.node.exists()
        {
            return Ok(p.node);
        }
        if Instant::now() >= until {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no device node for partition {number} appeared"),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
