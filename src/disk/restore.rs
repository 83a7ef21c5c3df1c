//! restore-disk: everything checked first (manifest, images, sizes, tools, mounts); then the
//! table (kept when identical), the partitions, swap headers, re-created filesystems, a check
//! of every identity, and the post-restore command.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use std::fs::File;
use std::io::BufReader;

use super::manifest::{Action, MANIFEST, Manifest, Plan};
use super::source::DiskSource;
use super::stream::{DiskStreamReader, Record};
use super::table::Entry;
use super::table::{self, SECTOR, Table, TableKind};
use super::{DiskReport, PartitionReport, check_disk_mounts, io, kernel, post_restore, table_name};
use crate::Error;
use crate::fs::{Uuid, identify, swap};
use crate::guard::Access;
use crate::progress::Progress;
use crate::restore::RestoreOptions;
use crate::source::Device;

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
    /// On a disk larger than the one saved, grow the last partition to fill it (and its ext
    /// filesystem, with resize2fs).
    pub grow: bool,
}

/// Restores one partition as its plan says; returns its device node.
#[allow(clippy::too_many_arguments)]
fn restore_partition(
    p: &Plan,
    e: &Entry,
    disk: &Path,
    src: &DiskSource,
    stream: Option<&mut DiskStreamReader<BufReader<File>>>,
    opts: &RestoreDiskOptions,
    grow: bool,
    progress: &dyn Progress,
) -> Result<PathBuf, Error> {
    let node = kernel::wait_for_node(disk, p.number, Duration::from_secs(10))
        .map_err(io(disk, "find the partition device of"))?;
    match p.action {
        Action::Image => {
            let name = p.image.as_deref().unwrap_or_default();
            let img = src.file_name(name);
            progress.note(&format!(
                "partition {}: restoring {} onto {}",
                p.number,
                img.display(),
                node.display()
            ));
            // The disk as a whole was checked above; what the new partition held before
            // is being replaced on purpose.
            let part_opts = RestoreOptions {
                force: true,
                ..opts.restore.clone()
            };
            match stream {
                Some(r) => {
                    let dir = src.name();
                    match r.next_record().map_err(|e| stream_error(dir, e))? {
                        Some(Record::Image(n)) if n == p.number => {}
                        other => {
                            return Err(Error::image(
                                dir,
                                crate::image::FormatError::BadIndex(format!(
                                    "the disk stream brings {other:?} where partition {}'s image belongs",
                                    p.number
                                )),
                            ));
                        }
                    }
                    let image =
                        crate::read::Image::stream_embedded(&img, Box::new(r.image_reader()))?;
                    crate::restore::restore_image(image, &node, &part_opts, progress)?;
                }
                None => {
                    crate::restore(&src.image(name), &node, &part_opts, progress)?;
                }
            }
            if grow {
                grow_filesystem(&node, p.filesystem.kind, e.size_bytes(), progress)?;
            }
        }
        Action::Swap => {
            let uuid = p
                .filesystem
                .uuid
                .as_deref()
                .map(str::parse::<Uuid>)
                .transpose()
                .map_err(|e| Error::failed(&node, format!("swap UUID in the manifest: {e}")))?
                .unwrap_or_default();
            let header = swap::swap_header(
                e.size_bytes(),
                p.filesystem.page_size.unwrap_or(4096),
                uuid,
                p.filesystem.label.as_deref(),
            )
            .map_err(|why| Error::failed(&node, why))?;
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
                return Err(Error::failed(
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
    Ok(node)
}

/// The manifest and boot area at the head of a disk stream.
pub(super) fn stream_head<R: std::io::Read>(
    r: &mut DiskStreamReader<R>,
    name: &Path,
) -> Result<(Manifest, Option<Vec<u8>>), Error> {
    let text = match r.next_record().map_err(|e| stream_error(name, e))? {
        Some(Record::Manifest(bytes)) => bytes,
        other => {
            return Err(Error::refused(
                name,
                format!("the disk stream does not start with a manifest ({other:?})"),
            ));
        }
    };
    let path = name.join(MANIFEST);
    let text = String::from_utf8(text).map_err(|_| Error::Manifest {
        path: path.clone(),
        source: super::manifest::ManifestError::Syntax("not UTF-8 text".into()),
    })?;
    let m = Manifest::parse(&text).map_err(|source| Error::Manifest { path, source })?;
    let boot = match m.boot_area {
        None => None,
        Some(_) => match r.next_record().map_err(|e| stream_error(name, e))? {
            Some(Record::BootArea(bytes)) => Some(bytes),
            other => {
                return Err(Error::refused(
                    name,
                    format!("the disk stream has no boot area after its manifest ({other:?})"),
                ));
            }
        },
    };
    Ok((m, boot))
}

pub(super) fn stream_error(name: &Path, e: super::stream::DiskStreamError) -> Error {
    Error::Failed {
        path: name.to_path_buf(),
        reason: format!("disk stream: {e}"),
    }
}

/// Grows the filesystem restored on `node` to fill its (grown) partition of `bytes` bytes:
/// resize2fs for ext, then a check that it now spans the partition. Other filesystems are
/// left at their size, with a note.
fn grow_filesystem(
    node: &Path,
    kind: crate::fs::FsType,
    bytes: u64,
    progress: &dyn Progress,
) -> Result<(), Error> {
    if !kind.is_ext() {
        progress.note(&format!(
            "{}: the partition was grown, but its {kind} filesystem keeps its size (only ext2/3/4 are grown)",
            node.display()
        ));
        return Ok(());
    }
    // -f: the filesystem was just restored from a clean image, so resize2fs's demand for a
    // fresh e2fsck run is met; without it resize2fs refuses.
    let out = Command::new("resize2fs")
        .arg("-f")
        .arg(node)
        .output()
        .map_err(io(Path::new("resize2fs"), "run"))?;
    if !out.status.success() {
        return Err(Error::failed(
            node,
            format!(
                "the disk was restored, but resize2fs could not grow the filesystem: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    let dev = Device::open(node)?;
    let fs = crate::fs::ext::ExtFs::open(&dev, crate::fs::ScanOptions::default())
        .map_err(|e| Error::scan(node, e))?;
    let bs = u64::from(crate::fs::UsedBlocks::block_size(&fs));
    // resize2fs rounds the size down to whole pages (4 KiB).
    let want = bytes / bs;
    let slack = (4096 / bs).max(1);
    if fs.blocks_count() > want || fs.blocks_count() + slack <= want {
        return Err(Error::failed(
            node,
            format!(
                "resize2fs left the filesystem at {} blocks; the partition holds {want}",
                fs.blocks_count(),
            ),
        ));
    }
    progress.note(&format!(
        "{}: filesystem grown to {} blocks of {bs} bytes (the whole partition)",
        node.display(),
        fs.blocks_count()
    ));
    Ok(())
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
    src: &DiskSource,
    disk: &Path,
    opts: &RestoreDiskOptions,
    progress: &dyn Progress,
) -> Result<DiskReport, Error> {
    let dir = src.name();
    let manifest_path = src.file_name(MANIFEST);
    // A stream brings the manifest and boot area first, then the images in order.
    let mut stream = match src {
        DiskSource::Stdin => {
            crate::guard::check_not_terminal(true)?;
            Some(
                DiskStreamReader::new(crate::transport::stdin::reader()?)
                    .map_err(|e| stream_error(dir, e))?,
            )
        }
        _ => None,
    };
    let (m, boot) = match &mut stream {
        Some(r) => stream_head(r, dir)?,
        None => {
            let m = src.manifest()?;
            let boot = match &m.boot_area {
                Some(name) => Some(src.read_file(name, super::MAX_BOOT_AREA)?),
                None => None,
            };
            (m, boot)
        }
    };
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
    let entry = |n: u32| m.entry(n).expect("checked by Manifest::read");
    if opts.grow && !have_tool("resize2fs") {
        return Err(Error::refused(
            dir,
            "--grow enlarges the last filesystem with resize2fs (e2fsprogs), which is not installed. Nothing was written",
        ));
    }
    for p in m.partitions.iter().filter(|p| p.action == Action::Image) {
        let name = p.image.as_deref().unwrap_or_default();
        let img = src.file_name(name);
        // A stream's images arrive later: the manifest says how big they are.
        let bytes = match (&stream, p.image_bytes) {
            (Some(_), Some(b)) => b,
            (Some(_), None) => {
                return Err(Error::refused(
                    dir,
                    format!(
                        "the stream's manifest does not say how big partition {}'s image is; nothing was written",
                        p.number
                    ),
                ));
            }
            (None, _) => crate::inspect_image(&src.image(name))?.header.source_size,
        };
        if bytes > entry(p.number).size_bytes() {
            return Err(Error::refused(
                &img,
                format!(
                    "holds {bytes} bytes, more than partition {} ({} bytes)",
                    p.number,
                    entry(p.number).size_bytes()
                ),
            ));
        }
    }
    // The root for the post-restore command: from the images (browsed) before anything is
    // written; from a stream, a --root is checked now and the root otherwise found once it is
    // restored.
    let root = match (&opts.post_restore, &stream) {
        (Some(_), None) => Some(post_restore::choose_root(&m, src, opts.root)?),
        (Some(_), Some(_)) => opts
            .root
            .map(|n| post_restore::check_root(&m, n))
            .transpose()?,
        (None, _) => None,
    };
    let is_block = std::fs::metadata(disk)
        .is_ok_and(|md| std::os::unix::fs::FileTypeExt::is_block_device(&md.file_type()));
    if !is_block {
        return Err(Error::refused(
            disk,
            "restore-disk writes a block device (attach a disk image file with `losetup -f --show FILE`)",
        ));
    }
    check_disk_mounts(disk, Access::Write, progress)?;

    // The table: written through the whole disk, opened exclusively.
    let mut grew = None;
    let (table, table_action) = {
        let mut file = crate::target::open_exclusive(disk)?;
        let size = crate::sys::block_device_size(&file).map_err(io(disk, "BLKGETSIZE64"))?;
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
        let mut target_table = m.table.clone();
        if opts.grow {
            if let Some((t, n)) = table::grown(&m.table, size).map_err(|e| Error::table(disk, e))? {
                target_table = t;
                grew = Some(n);
            }
        } else if size > m.disk_bytes.saturating_add(1 << 20) {
            progress.note(&format!(
                "{} is {} larger than the saved disk; that space is left unused (--grow gives it to the last partition)",
                disk.display(),
                crate::human_bytes(size - m.disk_bytes)
            ));
        }
        let current = table::read_table(&mut file, size).ok().flatten();
        let action = if current
            .as_ref()
            .is_some_and(|t| same_table(t, &target_table, size == m.disk_bytes))
        {
            "kept the identical partition table already on the disk"
        } else {
            let mut code = [0u8; 440];
            if let Some(b) = &boot {
                let n = b.len().min(440);
                code[..n].copy_from_slice(&b[..n]);
            }
            table::write_table(&mut file, &target_table, size, &code)
                .map_err(|e| Error::table(disk, e))?;
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
        let wanted: Vec<(u32, u64, u64)> = target_table
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
            Error::failed(
                disk,
                format!(
                    "the partition table was written, but the kernel does not show the new partitions: {e}"
                ),
            )
        })?;
        let grown = grew.map_or_else(String::new, |n| {
            format!("; partition {n} grown to the end of the disk")
        });
        progress.note(&format!("{}: {action}{grown}; {how}", disk.display()));
        (target_table, format!("{action}{grown}; {how}"))
    };
    let entry = |n: u32| {
        table
            .partitions
            .iter()
            .find(|e| e.number == n)
            .expect("the same partitions as the manifest")
    };

    let mut reports = Vec::new();
    let mut nodes = BTreeMap::new();
    let mut completed = Vec::new();
    for (k, p) in m.partitions.iter().enumerate() {
        let result = restore_partition(
            p,
            entry(p.number),
            disk,
            src,
            stream.as_mut(),
            opts,
            grew == Some(p.number),
            progress,
        );
        let node = match result {
            Ok(node) => node,
            Err(e) => {
                return Err(Error::DiskIncomplete {
                    disk: disk.to_path_buf(),
                    failed: p.number,
                    completed,
                    remaining: m.partitions[k + 1..].iter().map(|p| p.number).collect(),
                    source: Box::new(e),
                });
            }
        };
        completed.push(p.number);
        nodes.insert(p.number, node.clone());
        reports.push(PartitionReport {
            number: p.number,
            action: p.action,
            filesystem: p.filesystem.clone(),
            image: p.image.clone(),
            device: Some(node),
        });
    }
    if let Some(r) = &mut stream {
        match r.next_record().map_err(|e| stream_error(dir, e))? {
            Some(Record::End(_)) => {}
            other => {
                return Err(Error::failed(
                    disk,
                    format!(
                        "every partition was restored, but the stream goes on where it should end ({other:?})"
                    ),
                ));
            }
        }
    }
    let root = match (&opts.post_restore, root) {
        (Some(_), None) => Some(post_restore::restored_root(&m, &nodes)?),
        (_, r) => r,
    };

    // The result, as blkid would see it.
    let mut wrong = Vec::new();
    for p in m.partitions.iter().filter(|p| p.action != Action::Skip) {
        let node = &nodes[&p.number];
        let found = identify(&Device::open(node)?);
        let want = &p.filesystem;
        if !found.same_filesystem(want) {
            wrong.push(format!(
                "partition {} ({}): holds {found}, expected {want}",
                p.number,
                node.display(),
            ));
        }
    }
    if !wrong.is_empty() {
        return Err(Error::failed(
            disk,
            format!(
                "the restored disk is not what was saved: {}",
                wrong.join("; ")
            ),
        ));
    }

    let post_restore = match (&opts.post_restore, root) {
        (Some(cmd), Some(root)) => Some(post_restore::run(
            &m, dir, disk, &nodes, root, cmd, progress,
        )?),
        _ => None,
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
