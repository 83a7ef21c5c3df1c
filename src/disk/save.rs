//! save-disk: the partition table, an image of every partition (through windows of the disk,
//! so no partition devices are needed), swap described, the boot area, and the manifest last.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::manifest::{self, Action, MANIFEST, Manifest, Plan};
use super::table::{self, SECTOR};
use super::{
    BOOT_AREA, DiskReport, MAX_BOOT_AREA, PartitionReport, check_disk_mounts, io, table_name,
};
use crate::Error;
use crate::fs::{FsType, identify};
use crate::guard::Access;
use crate::progress::Progress;
use crate::save::{Destination, SaveOptions, save_device};
use crate::source::Device;

/// How to save a disk.
#[derive(Clone, Debug, Default)]
pub struct SaveDiskOptions {
    /// How each partition image is saved (level, threads, force, overwrite...).
    pub save: SaveOptions,
    /// Partitions to record as "re-create empty with the same UUID and label".
    pub reformat: Vec<u32>,
    /// Only these partitions are imaged (the others are skipped); empty means all.
    pub only: Vec<u32>,
    /// These partitions are skipped.
    pub skip: Vec<u32>,
}

/// Saves every partition of `disk` into `dir` (created if missing), with a manifest.
///
/// # Errors
/// No partition table, a mounted partition, a partition that cannot be saved (its error names
/// it), or a write failure in `dir`. Images already written stay; the manifest is written last,
/// so a directory without one is an incomplete save.
pub fn save_disk(
    disk: &Path,
    dir: &Path,
    opts: &SaveDiskOptions,
    progress: &dyn Progress,
) -> Result<DiskReport, Error> {
    let dev = Device::open(disk)?;
    let mut file = File::open(disk).map_err(io(disk, "open"))?;
    let table = table::read_table(&mut file, dev.size_bytes())
        .map_err(|e| Error::table(disk, e))?
        .ok_or_else(|| Error::refused(disk, "no partition table (neither GPT nor MBR); save a partition with `rimage save` instead"))?;
    check_disk_mounts(
        disk,
        Access::Read {
            force: opts.save.force,
        },
        progress,
    )?;
    for &n in opts.reformat.iter().chain(&opts.only).chain(&opts.skip) {
        if !table.partitions.iter().any(|e| e.number == n) {
            return Err(Error::Usage(format!(
                "{}: has no partition {n}",
                disk.display()
            )));
        }
    }
    std::fs::create_dir_all(dir).map_err(io(dir, "create directory"))?;
    if dir.join(MANIFEST).exists() && !opts.save.overwrite {
        return Err(Error::refused(
            dir,
            "already holds a saved disk (manifest.toml); pass --overwrite to replace it",
        ));
    }

    let mut plans = Vec::new();
    let mut reports = Vec::new();
    for e in table.partitions.iter().filter(|e| !e.is_extended()) {
        let name = PathBuf::from(format!("{} partition {}", disk.display(), e.number));
        let part = dev.window(e.start_bytes(), e.size_bytes(), name.clone())?;
        let fs = identify(&part);
        let wanted = opts.only.is_empty() || opts.only.contains(&e.number);
        let action = if opts.skip.contains(&e.number) || !wanted {
            Action::Skip
        } else if opts.reformat.contains(&e.number) {
            if !fs.kind.is_ext() {
                return Err(Error::Usage(format!(
                    "{}: holds {}; --reformat re-creates ext2/3/4 filesystems only",
                    name.display(),
                    fs.kind
                )));
            }
            Action::Reformat
        } else if fs.kind == FsType::Swap {
            Action::Swap
        } else {
            Action::Image
        };
        let image = (action == Action::Image).then(|| format!("part{}.rimg", e.number));
        if let Some(img) = &image {
            progress.note(&format!("partition {}: {fs} → {img}", e.number));
            save_device(
                &part,
                &Destination::File(dir.join(img)),
                &opts.save,
                progress,
            )?;
        }
        reports.push(PartitionReport {
            number: e.number,
            action,
            filesystem: fs.clone(),
            image: image.clone(),
            device: None,
        });
        plans.push(Plan {
            number: e.number,
            action,
            filesystem: fs,
            image,
        });
    }

    // Boot code and (on MBR disks) the boot loader's area before the first partition.
    let first = table
        .partitions
        .iter()
        .map(|e| e.start_bytes())
        .min()
        .unwrap_or(SECTOR)
        .clamp(SECTOR, MAX_BOOT_AREA);
    let mut boot = vec![0u8; first as usize];
    dev.read_at_checked(&mut boot, 0)?;
    crate::atomic::write_file(&dir.join(BOOT_AREA), &boot)?;

    let manifest = Manifest {
        format: manifest::FORMAT.into(),
        version: manifest::Version::V1,
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        writer: concat!("rimage ", env!("CARGO_PKG_VERSION")).into(),
        source: disk.display().to_string(),
        disk_bytes: dev.size_bytes(),
        boot_area: Some(BOOT_AREA.into()),
        table: table.clone(),
        partitions: plans,
    };
    let text = manifest
        .to_toml()
        .map_err(|e| Error::Internal(format!("the manifest cannot be written as TOML: {e}")))?;
    crate::atomic::write_file(&dir.join(MANIFEST), text.as_bytes())?;
    Ok(DiskReport {
        manifest: dir.join(MANIFEST),
        disk: disk.to_path_buf(),
        table: table_name(&table),
        table_action: None,
        partitions: reports,
        post_restore: None,
    })
}
