//! The node workflow: a whole disk saved as a directory (manifest, partition images, boot
//! area), and restored onto another disk: table, partitions, swap with its old UUID, empty
//! filesystems re-created with their old UUIDs, a check of the result, and a command run in the
//! restored root (mkinitcpio and the like).

pub mod identify;
pub mod kernel;
pub mod manifest;
pub mod swap;
pub mod table;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use crate::Error;
use crate::progress::Progress;
use crate::restore::{ImageSource, RestoreOptions};
use crate::save::{Destination, SaveOptions, save_device};
use crate::source::{Device, IoError, block_device_size, mounts_of};
use identify::{Detected, FsKind, detect};
use manifest::{Action, MANIFEST, Manifest, Plan};
use table::{SECTOR, Table, TableKind};

/// Largest boot area kept (bytes before the first partition).
const MAX_BOOT_AREA: u64 = 16 << 20;
/// File name of the boot area in a disk directory.
const BOOT_AREA: &str = "boot-area.bin";

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

/// What save-disk or restore-disk did to one partition.
#[derive(Clone, Debug, Serialize)]
pub struct PartitionReport {
    /// Partition number.
    pub number: u32,
    /// What was done.
    pub action: Action,
    /// What it holds.
    pub filesystem: Detected,
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

/// Writes `bytes` to `dir/name` under a temporary name, fsyncs and renames it.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), Error> {
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(io(dir, "create a temporary file in"))?;
    tmp.write_all(bytes).map_err(io(tmp.path(), "write"))?;
    tmp.as_file().sync_all().map_err(io(dir, "fsync"))?;
    tmp.persist(dir.join(name))
        .map_err(|e| Error::Io(IoError::new(&dir.join(name), "rename to", None, e.error)))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "fsync directory"))
}

/// Refuses when a partition of `disk` (or the disk) is mounted: read-write at all for a
/// restore, read-write without `force` for a save.
fn check_disk_mounts(disk: &Path, restoring: bool, force: bool) -> Result<(), Error> {
    let mut nodes = vec![disk.to_path_buf()];
    nodes.extend(
        kernel::partitions_of(disk)
            .map_err(io(disk, "list the partitions of"))?
            .into_iter()
            .map(|p| p.node),
    );
    for node in nodes {
        let mounts = mounts_of(&node).map_err(io(&node, "look up the mounts of"))?;
        if let Some(m) = mounts.iter().find(|m| restoring || m.read_write) {
            let at = m.mount_point.display();
            let reason = if restoring {
                format!(
                    "{} is mounted at {at}; unmount every partition of the disk first. Nothing was written",
                    node.display()
                )
            } else if force {
                continue;
            } else {
                format!(
                    "{} is mounted read-write at {at}: its image would be inconsistent. Unmount it (or remount it read-only, or fsfreeze -f {at}), or pass --force",
                    node.display()
                )
            };
            return Err(Error::refused(disk, reason));
        }
    }
    Ok(())
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
        .map_err(|e| Error::refused(disk, format!("cannot read the partition table: {e}")))?
        .ok_or_else(|| Error::refused(disk, "no partition table (neither GPT nor MBR); save a partition with `rimage save` instead"))?;
    check_disk_mounts(disk, false, opts.save.force)?;
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
        let fs = detect(&part);
        let wanted = opts.only.is_empty() || opts.only.contains(&e.number);
        let action = if opts.skip.contains(&e.number) || !wanted {
            Action::Skip
        } else if opts.reformat.contains(&e.number) {
            if !fs.kind.is_ext() {
                return Err(Error::Usage(format!(
                    "{}: holds {}; --reformat re-creates ext2/3/4 filesystems only",
                    name.display(),
                    fs.kind.name()
                )));
            }
            Action::Reformat
        } else if fs.kind == FsKind::Swap {
            Action::Swap
        } else {
            Action::Image
        };
        let image = (action == Action::Image).then(|| format!("part{}.rimg", e.number));
        if let Some(img) = &image {
            progress.note(&format!(
                "partition {}: {} → {img}",
                e.number,
                describe(&fs)
            ));
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
    write_atomic(dir, BOOT_AREA, &boot)?;

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
    write_atomic(
        dir,
        MANIFEST,
        manifest.to_toml().map_err(Error::Usage)?.as_bytes(),
    )?;
    Ok(DiskReport {
        manifest: dir.join(MANIFEST),
        disk: disk.to_path_buf(),
        table: table_name(&table),
        table_action: None,
        partitions: reports,
        post_restore: None,
    })
}

fn describe(d: &Detected) -> String {
    let mut s = d.kind.name().to_string();
    if let Some(l) = &d.label {
        s.push_str(&format!(" \"{l}\""));
    }
    if let Some(u) = &d.uuid {
        s.push_str(&format!(" UUID {u}"));
    }
    s
}

/// How to restore a disk.
#[derive(Clone, Debug, Default)]
pub struct RestoreDiskOptions {
    /// How each partition image is restored.
    pub restore: RestoreOptions,
    /// A shell command run with the restored root mounted (RIMAGE_ROOT), then unmounted.
    pub post_restore: Option<String>,
    /// The root partition for `post_restore`; default: the imaged partition whose filesystem
    /// has /etc/fstab.
    pub root: Option<u32>,
}

/// Whether `tool` is on PATH (or in /sbin, /usr/sbin).
fn have_tool(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/sbin"), PathBuf::from("/usr/sbin")])
        .any(|d| d.join(tool).is_file())
}

/// Two tables describe the same partitions (a GPT's last usable sector follows the disk size).
fn same_table(a: &Table, b: &Table, same_size: bool) -> bool {
    let norm = |t: &Table| {
        let mut t = t.clone();
        if let TableKind::Gpt {
            last_usable_lba, ..
        } = &mut t.kind
            && !same_size
        {
            *last_usable_lba = 0;
        }
        t
    };
    norm(a) == norm(b)
}

/// Restores the disk saved in `dir` onto `disk` (a block device).
///
/// # Errors
/// Before anything is written: a bad manifest, a missing image or tool (mke2fs for reformat
/// partitions), a disk that is not a block device, is mounted, in use or too small. After:
/// the failing step, naming the partition.
pub fn restore_disk(
    dir: &Path,
    disk: &Path,
    opts: &RestoreDiskOptions,
    progress: &dyn Progress,
) -> Result<DiskReport, Error> {
    let manifest_path = dir.join(MANIFEST);
    let m = Manifest::read(&manifest_path).map_err(|e| Error::refused(dir, e))?;
    // Everything that can be checked is checked before the disk is touched.
    let reformats = m
        .partitions
        .iter()
        .filter(|p| p.action == Action::Reformat)
        .count();
    if reformats > 0 && !have_tool("mke2fs") {
        return Err(Error::refused(
            dir,
            "partitions are to be re-created as empty ext filesystems, but mke2fs (e2fsprogs) is not installed. Nothing was written",
        ));
    }
    let entry = |n: u32| {
        m.table
            .partitions
            .iter()
            .find(|e| e.number == n)
            .expect("checked by Manifest::read")
    };
    for p in m.partitions.iter().filter(|p| p.action == Action::Image) {
        let img = dir.join(p.image.as_deref().unwrap_or_default());
        let info = crate::inspect_image(&img)?;
        if info.header.source_size > entry(p.number).size_bytes() {
            return Err(Error::refused(
                &img,
                format!(
                    "holds {} bytes, more than partition {} ({} bytes)",
                    info.header.source_size,
                    p.number,
                    entry(p.number).size_bytes()
                ),
            ));
        }
    }
    let boot = match &m.boot_area {
        Some(name) => Some(std::fs::read(dir.join(name)).map_err(io(&dir.join(name), "read"))?),
        None => None,
    };
    let is_block = std::fs::metadata(disk)
        .is_ok_and(|md| std::os::unix::fs::FileTypeExt::is_block_device(&md.file_type()));
    if !is_block {
        return Err(Error::refused(
            disk,
            "restore-disk writes a block device (attach a disk image file with `losetup -f --show FILE`)",
        ));
    }
    check_disk_mounts(disk, true, false)?;

    // The table: written through the whole disk, opened exclusively.
    let table_action = {
        let mut file = crate::target::open_exclusive(disk)?;
        let size = block_device_size(&file).map_err(io(disk, "BLKGETSIZE64"))?;
        let last = m
            .table
            .partitions
            .iter()
            .map(|e| e.start_lba + e.sectors)
            .max()
            .unwrap_or(0);
        let need = match m.table.kind {
            // The backup GPT (entries and header) follows the last usable sector.
            TableKind::Gpt {
                entries,
                entry_size,
                ..
            } => (last + u64::from(entries * entry_size).div_ceil(SECTOR) + 1) * SECTOR,
            TableKind::Dos { .. } => last * SECTOR,
        };
        if size < need {
            return Err(Error::refused(
                disk,
                format!(
                    "holds {size} bytes, but the saved table needs {need}; nothing was written"
                ),
            ));
        }
        let current = table::read_table(&mut file, size).ok().flatten();
        let action = if current
            .as_ref()
            .is_some_and(|t| same_table(t, &m.table, size == m.disk_bytes))
        {
            "kept the identical partition table already on the disk"
        } else {
            let mut code = [0u8; 440];
            if let Some(b) = &boot {
                let n = b.len().min(440);
                code[..n].copy_from_slice(&b[..n]);
            }
            table::write_table(&mut file, &m.table, size, &code).map_err(|e| {
                Error::refused(disk, format!("writing the partition table failed: {e}"))
            })?;
            "wrote the partition table"
        };
        // The boot loader's area between the table and the first partition (MBR disks).
        if let (Some(b), TableKind::Dos { .. }) = (&boot, &m.table.kind)
            && b.len() as u64 > SECTOR
        {
            file.write_all_at(&b[SECTOR as usize..], SECTOR)
                .map_err(io(disk, "write the boot area of"))?;
        }
        file.sync_all().map_err(io(disk, "fsync"))?;
        let wanted: Vec<(u32, u64, u64)> = m
            .table
            .partitions
            .iter()
            .map(|e| {
                (
                    e.number,
                    e.start_bytes(),
                    if e.is_extended() {
                        SECTOR * 2
                    } else {
                        e.size_bytes()
                    },
                )
            })
            .collect();
        let how = kernel::publish(&file, disk, &wanted).map_err(|e| {
            Error::refused(
                disk,
                format!("the kernel does not show the new partitions: {e}"),
            )
        })?;
        progress.note(&format!("{}: {action}; {how}", disk.display()));
        format!("{action}; {how}")
    };

    let mut reports = Vec::new();
    let mut nodes = BTreeMap::new();
    for p in &m.partitions {
        let e = entry(p.number);
        let node = kernel::wait_for_node(disk, p.number, Duration::from_secs(10))
            .map_err(io(disk, "find the partition device of"))?;
        nodes.insert(p.number, node.clone());
        match p.action {
            Action::Image => {
                let img = dir.join(p.image.as_deref().unwrap_or_default());
                progress.note(&format!(
                    "partition {}: restoring {} onto {}",
                    p.number,
                    img.display(),
                    node.display()
                ));
                crate::restore(&ImageSource::File(img), &node, &opts.restore, progress)?;
            }
            Action::Swap => {
                let uuid = p
                    .filesystem
                    .uuid
                    .as_deref()
                    .map(str::parse)
                    .transpose()
                    .map_err(Error::Usage)?
                    .unwrap_or_default();
                let header = swap::swap_header(
                    e.size_bytes(),
                    p.filesystem.page_size.unwrap_or(4096),
                    uuid,
                    p.filesystem.label.as_deref(),
                )
                .map_err(|why| Error::refused(&node, why))?;
                let tgt = crate::target::Target::open(&node, header.len() as u64)?;
                tgt.write_at(&header, 0)?;
                tgt.sync()?;
            }
            Action::Reformat => {
                let fs = &p.filesystem;
                let mut cmd = Command::new("mke2fs");
                cmd.args(["-q", "-F", "-t", fs.kind.name()]);
                if let Some(u) = &fs.uuid {
                    cmd.args(["-U", u]);
                }
                if let Some(l) = &fs.label {
                    cmd.args(["-L", l]);
                }
                if let Some(bs) = fs.block_size {
                    cmd.args(["-b", &bs.to_string()]);
                }
                let out = cmd
                    .arg(&node)
                    .output()
                    .map_err(io(Path::new("mke2fs"), "run"))?;
                if !out.status.success() {
                    return Err(Error::refused(
                        &node,
                        format!(
                            "mke2fs failed: {}",
                            String::from_utf8_lossy(&out.stderr).trim()
                        ),
                    ));
                }
            }
            Action::Skip => {}
        }
        reports.push(PartitionReport {
            number: p.number,
            action: p.action,
            filesystem: p.filesystem.clone(),
            image: p.image.clone(),
            device: Some(node),
        });
    }

    // The result, as blkid would see it.
    let mut wrong = Vec::new();
    for p in m.partitions.iter().filter(|p| p.action != Action::Skip) {
        let node = &nodes[&p.number];
        let found = detect(&Device::open(node)?);
        let want = &p.filesystem;
        if found.kind != want.kind || found.uuid != want.uuid || found.label != want.label {
            wrong.push(format!(
                "partition {} ({}): holds {}, expected {}",
                p.number,
                node.display(),
                describe(&found),
                describe(want)
            ));
        }
    }
    if !wrong.is_empty() {
        return Err(Error::refused(
            disk,
            format!(
                "the restored disk is not what was saved: {}",
                wrong.join("; ")
            ),
        ));
    }

    let post_restore = match &opts.post_restore {
        Some(cmd) => Some(post_restore(
            &m, dir, disk, &nodes, opts.root, cmd, progress,
        )?),
        None => None,
    };
    Ok(DiskReport {
        manifest: manifest_path,
        disk: disk.to_path_buf(),
        table: table_name(&m.table),
        table_action: Some(table_action),
        partitions: reports,
        post_restore,
    })
}

/// Mounts that are undone (in reverse order) when dropped.
struct Mounts(Vec<PathBuf>);

impl Drop for Mounts {
    fn drop(&mut self) {
        for at in self.0.iter().rev() {
            let _ = rustix::mount::unmount(at, rustix::mount::UnmountFlags::empty());
        }
    }
}

fn mount(node: &Path, at: &Path, kind: FsKind) -> Result<(), Error> {
    rustix::mount::mount(
        node,
        at,
        kind.name(),
        rustix::mount::MountFlags::empty(),
        None::<&std::ffi::CStr>,
    )
    .map_err(|e| Error::Io(IoError::new(node, "mount", None, e.into())))
}

/// Mounts the restored root (and the restored partitions its /etc/fstab mounts under it, such
/// as /boot), runs `cmd` there, unmounts.
fn post_restore(
    m: &Manifest,
    dir: &Path,
    disk: &Path,
    nodes: &BTreeMap<u32, PathBuf>,
    root: Option<u32>,
    cmd: &str,
    progress: &dyn Progress,
) -> Result<String, Error> {
    let imaged: Vec<&Plan> = m
        .partitions
        .iter()
        .filter(|p| p.action == Action::Image && p.filesystem.kind.is_ext())
        .collect();
    let root = match root {
        Some(n) => *imaged.iter().find(|p| p.number == n).ok_or_else(|| Error::Usage(format!("--root {n}: not a restored ext partition")))?,
        None => *imaged
            .iter()
            .find(|p| crate::Browser::open(&dir.join(p.image.as_deref().unwrap_or_default())).is_ok_and(|b| b.fs().exists("/etc/fstab").unwrap_or(false)))
            .ok_or_else(|| Error::Usage("--post-restore: no restored partition has /etc/fstab; name the root with --root".into()))?,
    };
    let mnt = tempfile::Builder::new()
        .prefix("rimage-root.")
        .tempdir()
        .map_err(io(Path::new("/tmp"), "create a mount point in"))?;
    let mut mounts = Mounts(Vec::new());
    mount(&nodes[&root.number], mnt.path(), root.filesystem.kind)?;
    mounts.0.push(mnt.path().to_path_buf());
    // fstab entries that name another restored partition: mount them where the root expects.
    let fstab = std::fs::read_to_string(mnt.path().join("etc/fstab")).unwrap_or_default();
    for line in fstab.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(spec), Some(point)) = (f.first(), f.get(1)) else {
            continue;
        };
        if *point == "/" || !point.starts_with('/') {
            continue;
        }
        let entry = |n: u32| m.table.partitions.iter().find(|e| e.number == n);
        let hit = m
            .partitions
            .iter()
            .filter(|p| {
                p.number != root.number
                    && (p.filesystem.kind.is_ext() || p.filesystem.kind == FsKind::Vfat)
            })
            .find(|p| {
                let fs = &p.filesystem;
                let partuuid = entry(p.number)
                    .and_then(|e| e.part_guid.clone())
                    .map(|g| g.to_lowercase());
                spec.strip_prefix("UUID=").is_some_and(|u| {
                    fs.uuid
                        .as_deref()
                        .is_some_and(|v| v.eq_ignore_ascii_case(u))
                }) || spec
                    .strip_prefix("LABEL=")
                    .is_some_and(|l| fs.label.as_deref() == Some(l))
                    || spec
                        .strip_prefix("PARTUUID=")
                        .is_some_and(|u| partuuid.as_deref() == Some(&u.to_lowercase()))
            });
        let at = mnt.path().join(point.trim_start_matches('/'));
        if let Some(p) = hit
            && at.is_dir()
        {
            mount(&nodes[&p.number], &at, p.filesystem.kind)?;
            mounts.0.push(at);
        }
    }
    progress.note(&format!(
        "running the post-restore command in {} (partition {} mounted at {})",
        disk.display(),
        root.number,
        mnt.path().display()
    ));
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(cmd)
        .env("RIMAGE_ROOT", mnt.path())
        .env("RIMAGE_DISK", disk)
        .env("RIMAGE_ROOT_DEVICE", &nodes[&root.number])
        .env("RIMAGE_IMAGE_DIR", dir);
    for (n, node) in nodes {
        command.env(format!("RIMAGE_PART_{n}"), node);
    }
    let status = command.status().map_err(io(Path::new("sh"), "run"))?;
    drop(mounts);
    if !status.success() {
        return Err(Error::refused(
            disk,
            format!("the post-restore command failed ({status}): {cmd}"),
        ));
    }
    Ok(format!(
        "`{cmd}` ran with partition {} mounted as the root",
        root.number
    ))
}
