//! The node workflow: a whole disk saved as a directory (manifest, partition images, boot
//! area), and restored onto another disk: table, partitions, swap with its old UUID, empty
//! filesystems re-created with their old UUIDs, a check of the result, and a command run in the
//! restored root (mkinitcpio and the like).
//!
//! [`table`] reads and writes partition tables, [`manifest`] describes a saved disk,
//! [`kernel`] tells the kernel about new partitions; [`save`](save_disk),
//! [`restore`](restore_disk) and [`post_restore`] are the three steps.

pub mod check;
pub mod kernel;
pub mod manifest;
pub mod post_restore;
pub mod receive;
mod restore;
mod save;
pub mod send;
pub mod source;
pub mod stream;
pub mod table;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use check::{DiskInfo, DiskVerifyReport, inspect_dir, is_disk_dir, verify_dir};
pub use restore::{RestoreDiskOptions, restore_disk};
pub use save::{DiskDest, SaveDiskOptions, save_disk, save_disk_to};
pub use source::DiskSource;

use crate::Error;
use crate::error::IoError;
use crate::fs::Identity;
use crate::guard::{Access, check_not_mounted};
use crate::progress::Progress;
use manifest::Action;
use table::{Table, TableKind};

/// Largest boot area kept (bytes before the first partition).
const MAX_BOOT_AREA: u64 = 16 << 20;
/// File name of the boot area in a disk directory.
const BOOT_AREA: &str = "boot-area.bin";

/// What save-disk or restore-disk did to one partition.
#[derive(Clone, Debug, Serialize)]
pub struct PartitionReport {
    /// Partition number.
    pub number: u32,
    /// What was done.
    pub action: Action,
    /// What it holds.
    pub filesystem: Identity,
    /// Its image (save-disk, restore-disk of an imaged partition).
    pub image: Option<String>,
    /// The device written (restore-disk).
    pub device: Option<PathBuf>,
}

/// What save-disk or restore-disk did.
#[derive(Clone, Debug, Serialize)]
pub struct DiskReport {
    /// The manifest.
    pub manifest: PathBuf,
    /// The disk read or written.
    pub disk: PathBuf,
    /// "gpt" or "dos".
    pub table: &'static str,
    /// How the partition table was handled (restore-disk).
    pub table_action: Option<String>,
    /// Per partition.
    pub partitions: Vec<PartitionReport>,
    /// The post-restore command's outcome (restore-disk).
    pub post_restore: Option<String>,
}

fn table_name(t: &Table) -> &'static str {
    match t.kind {
        TableKind::Gpt { .. } => "gpt",
        TableKind::Dos { .. } => "dos",
    }
}

fn io<'a>(path: &'a Path, op: &'static str) -> impl Fn(std::io::Error) -> Error + 'a {
    move |e| Error::Io(IoError::new(path, op, None, e))
}

/// Refuses when the disk or a partition of it is mounted in a way `access` does not allow.
fn check_disk_mounts(disk: &Path, access: Access, progress: &dyn Progress) -> Result<(), Error> {
    check_not_mounted(disk, access, progress)?;
    for p in kernel::partitions_of(disk).map_err(io(disk, "list the partitions of"))? {
        check_not_mounted(&p.node, access, progress)?;
    }
    Ok(())
}

/// The partition table of `path`, when it is a whole disk (or disk image file) with one and
/// holds no filesystem of its own.
///
/// # Errors
/// When it cannot be opened.
pub fn inspect_disk(path: &Path) -> Result<Option<Table>, Error> {
    let dev = crate::source::Device::open(path)?;
    if crate::fs::identify(&dev).kind != crate::fs::FsType::Raw {
        return Ok(None);
    }
    let mut file = std::fs::File::open(path).map_err(io(path, "open"))?;
    // A table that does not parse is no table: the device is described as raw instead.
    Ok(table::read_table(&mut file, dev.size_bytes())
        .ok()
        .flatten())
}

/// "a GPT with 3 partitions", "an MBR partition table with 1 partition".
pub fn describe_table(t: &Table) -> String {
    let n = t.partitions.iter().filter(|p| !p.is_extended()).count() as u64;
    let kind = match t.kind {
        TableKind::Gpt { .. } => "a GPT",
        TableKind::Dos { .. } => "an MBR partition table",
    };
    format!("{kind} with {}", crate::plural(n, "partition"))
}
