//! save-disk: the partition table, an image of every partition (through windows of the disk,
//! so no partition devices are needed), swap described, the boot area, and the manifest last.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::manifest::{self, Action, MANIFEST, Manifest, Plan};
use super::stream::DiskStreamWriter;
use super::table::{self, SECTOR};
use super::{
    BOOT_AREA, DiskReport, MAX_BOOT_AREA, PartitionReport, check_disk_mounts, io, table_name,
};
use crate::Error;
use crate::fs::{FsType, identify};
use crate::guard::Access;
use crate::progress::Progress;
use crate::save::{Destination, SaveOptions, prepare, save_device, save_prepared_to};
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

/// Where a saved disk goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskDest {
    /// A directory: manifest.toml, boot-area.bin and partN.rimg.
    Dir(PathBuf),
    /// One disk stream on standard output (docs/FORMAT.md, "Disk stream").
    Stdout,
}

impl DiskDest {
    /// The destination a command-line argument names: "-" is standard output.
    pub fn from_arg(arg: &Path) -> Self {
        if arg.as_os_str() == "-" {
            Self::Stdout
        } else {
            Self::Dir(arg.to_path_buf())
        }
    }
}

/// Saves every partition of `disk` into a directory (created if missing), with a manifest, or
/// as one disk stream on standard output.
///
/// # Errors
/// No partition table, a mounted partition, a partition that cannot be saved (its error names
/// it), or a write failure. In a directory, images already written stay; the manifest is
/// written last, so a directory without one is an incomplete save.
pub fn save_disk(
    disk: &Path,
    dest: &DiskDest,
    opts: &SaveDiskOptions,
    progress: &dyn Progress,
) -> Result<DiskReport, Error> {
    match dest {
        DiskDest::Dir(dir) => save_disk_impl(disk, Out::Dir(dir), opts, progress),
        DiskDest::Stdout => {
            crate::guard::check_not_terminal(false)?;
            let stdout = Path::new("<stdout>");
            let mut out = std::io::BufWriter::with_capacity(
                1 << 20,
                crate::source::stdio_file(rustix::stdio::stdout(), stdout)?,
            );
            save_disk_impl(disk, Out::Writer(&mut out, stdout), opts, progress)
        }
    }
}

/// Saves every partition of `disk` as one disk stream written to `out` (an HTTP upload, a
/// pipe); `name` names `out` in messages. As [`save_disk`] with [`DiskDest::Stdout`].
///
/// # Errors
/// As [`save_disk`]; a failed write names `name`.
pub fn save_disk_to(
    disk: &Path,
    out: &mut (dyn Write + Send),
    name: &Path,
    opts: &SaveDiskOptions,
    progress: &dyn Progress,
) -> Result<DiskReport, Error> {
    save_disk_impl(disk, Out::Writer(out, name), opts, progress)
}

/// Where [`save_disk_impl`] writes.
enum Out<'a> {
    Dir(&'a Path),
    Writer(&'a mut (dyn Write + Send), &'a Path),
}

fn save_disk_impl(
    disk: &Path,
    mut dest: Out<'_>,
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
    if let Out::Dir(dir) = &dest {
        std::fs::create_dir_all(dir).map_err(io(dir, "create directory"))?;
        if dir.join(MANIFEST).exists() && !opts.save.overwrite {
            return Err(Error::refused(
                dir,
                "already holds a saved disk (manifest.toml); pass --overwrite to replace it",
            ));
        }
    }

    // What each partition holds and what restore-disk will do with it.
    let mut plans = Vec::new();
    let mut parts = Vec::new();
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
        plans.push(Plan {
            number: e.number,
            action,
            filesystem: fs,
            image,
            image_bytes: None,
        });
        parts.push(part);
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
    let mut manifest = Manifest {
        format: manifest::FORMAT.into(),
        version: manifest::Version::V1,
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        writer: crate::WRITER.into(),
        source: disk.display().to_string(),
        disk_bytes: dev.size_bytes(),
        boot_area: Some(BOOT_AREA.into()),
        table: table.clone(),
        partitions: plans,
    };
    let manifest_path = match &mut dest {
        Out::Dir(dir) => {
            for (plan, part) in manifest.partitions.iter_mut().zip(&parts) {
                let Some(img) = &plan.image else { continue };
                progress.note(&format!(
                    "partition {}: {} → {img}",
                    plan.number, plan.filesystem
                ));
                let r = save_device(
                    part,
                    &Destination::File(dir.join(img)),
                    &opts.save,
                    progress,
                )?;
                plan.image_bytes = Some(r.header.source_size);
            }
            crate::atomic::write_file(&dir.join(BOOT_AREA), &boot)?;
            let text = manifest_text(&manifest)?;
            crate::atomic::write_file(&dir.join(MANIFEST), text.as_bytes())?;
            dir.join(MANIFEST)
        }
        Out::Writer(out, stdout) => {
            // Every image is scanned and checked first: the manifest, which leads the stream,
            // carries each image's size.
            let mut prepared = Vec::new();
            for (plan, part) in manifest.partitions.iter_mut().zip(&parts) {
                if plan.image.is_some() {
                    let p = prepare(part, &opts.save, progress)?;
                    plan.image_bytes = Some(p.header.source_size);
                    prepared.push((plan.number, p));
                }
            }
            let stdout: &Path = stdout;
            let fail = |e| Error::Io(crate::error::IoError::new(stdout, "write", None, e));
            let mut w = DiskStreamWriter::start(&mut **out).map_err(fail)?;
            w.manifest(manifest_text(&manifest)?.as_bytes())
                .map_err(fail)?;
            w.boot_area(&boot).map_err(fail)?;
            for (n, p) in &prepared {
                progress.note(&format!("partition {n}: streaming its image"));
                w.image(*n).map_err(fail)?;
                save_prepared_to(p, &mut *w.inner(), stdout, &opts.save, progress)?;
            }
            w.end().map_err(fail)?;
            stdout.to_path_buf()
        }
    };
    let reports = manifest
        .partitions
        .iter()
        .map(|p| PartitionReport {
            number: p.number,
            action: p.action,
            filesystem: p.filesystem.clone(),
            image: p.image.clone(),
            device: None,
        })
        .collect();
    Ok(DiskReport {
        manifest: manifest_path,
        disk: disk.to_path_buf(),
        table: table_name(&table),
        table_action: None,
        partitions: reports,
        post_restore: None,
    })
}

fn manifest_text(m: &Manifest) -> Result<String, Error> {
    m.to_toml()
        .map_err(|e| Error::Internal(format!("the manifest cannot be written as TOML: {e}")))
}
