//! After restore-disk: mount the restored root (and the restored partitions its /etc/fstab
//! mounts under it, such as /boot), run the admin's command there (mkinitcpio and the like),
//! unmount.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::io;
use super::manifest::{Action, Manifest, Plan};
use super::source::DiskSource;
use crate::Error;
use crate::error::IoError;
use crate::progress::Progress;

/// A restored partition an fstab line may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// Partition number.
    pub number: u32,
    /// Filesystem UUID (or FAT volume id).
    pub uuid: Option<&'a str>,
    /// Filesystem label.
    pub label: Option<&'a str>,
    /// GPT partition GUID.
    pub partuuid: Option<&'a str>,
}

/// The lines of `fstab` that mount one of `candidates` somewhere other than `/`, as
/// (partition number, mount point), in fstab order. `UUID=`, `LABEL=` and `PARTUUID=`
/// specs are matched (UUIDs case-insensitively); comments, swap and other specs are skipped.
pub fn fstab_mounts(fstab: &str, candidates: &[Candidate<'_>]) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for line in fstab.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        let mut fields = line.split_whitespace();
        let (Some(spec), Some(point)) = (fields.next(), fields.next()) else {
            continue;
        };
        if point == "/" || !point.starts_with('/') {
            continue;
        }
        let same = |a: Option<&str>, b: &str| a.is_some_and(|a| a.eq_ignore_ascii_case(b));
        let hit = candidates.iter().find(|c| {
            if let Some(u) = spec.strip_prefix("UUID=") {
                same(c.uuid, u)
            } else if let Some(l) = spec.strip_prefix("LABEL=") {
                c.label == Some(l)
            } else if let Some(u) = spec.strip_prefix("PARTUUID=") {
                same(c.partuuid, u)
            } else {
                false
            }
        });
        if let Some(c) = hit {
            out.push((c.number, point.to_string()));
        }
    }
    out
}

/// Mounts that are undone (in reverse order) when dropped.
struct Mounts(Vec<PathBuf>);

impl Drop for Mounts {
    fn drop(&mut self) {
        for at in self.0.iter().rev() {
            crate::sys::unmount(at);
        }
    }
}

impl Mounts {
    fn mount(&mut self, node: &Path, at: &Path, fs_type: &str) -> Result<(), Error> {
        crate::sys::mount(node, at, fs_type)
            .map_err(|e| Error::Io(IoError::new(node, "mount", None, e)))?;
        self.0.push(at.to_path_buf());
        Ok(())
    }
}

/// The root partition the post-restore command runs in: `root` when given (it must be an
/// imaged ext partition), else the imaged ext partition whose filesystem has /etc/fstab.
/// Decided from the images, before anything is written.
///
/// # Errors
/// A `--root` that is not an imaged ext partition, or no image with /etc/fstab.
pub fn choose_root(m: &Manifest, src: &DiskSource, root: Option<u32>) -> Result<u32, Error> {
    let imaged: Vec<&Plan> = m
        .partitions
        .iter()
        .filter(|p| p.action == Action::Image && p.filesystem.kind.is_ext())
        .collect();
    let has_fstab = |p: &Plan| {
        let image = src.image(p.image.as_deref().unwrap_or_default());
        crate::Browser::open(&image).is_ok_and(|b| b.exists("/etc/fstab"))
    };
    match root {
        Some(n) => check_root(m, n),
        None => imaged
            .iter()
            .find(|p| has_fstab(p))
            .map(|p| p.number)
            .ok_or_else(|| {
                Error::refused(
                    src.name(),
                    "--post-restore: no imaged partition has /etc/fstab; name the root with --root N. Nothing was written",
                )
            }),
    }
}

/// Checks a `--root N`: it must be an imaged ext partition of the disk.
///
/// # Errors
/// A usage error naming the partition.
pub fn check_root(m: &Manifest, n: u32) -> Result<u32, Error> {
    let ok = m
        .partitions
        .iter()
        .any(|p| p.number == n && p.action == Action::Image && p.filesystem.kind.is_ext());
    if ok {
        Ok(n)
    } else {
        Err(Error::Usage(format!(
            "--root {n}: partition {n} is not an imaged ext2/3/4 partition of this disk"
        )))
    }
}

/// The root among the restored partitions (a disk that arrived as a stream could not be looked
/// into before): the first imaged ext partition whose filesystem has /etc/fstab.
///
/// # Errors
/// None has one (the disk is restored: the message says so).
pub fn restored_root(m: &Manifest, nodes: &BTreeMap<u32, PathBuf>) -> Result<u32, Error> {
    m.partitions
        .iter()
        .filter(|p| p.action == Action::Image && p.filesystem.kind.is_ext())
        .find(|p| {
            nodes.get(&p.number).is_some_and(|node| {
                ext4_view::Ext4::load_from_path(node)
                    .is_ok_and(|fs| fs.exists("/etc/fstab").unwrap_or(false))
            })
        })
        .map(|p| p.number)
        .ok_or_else(|| {
            Error::failed(
                Path::new("<disk>"),
                "the disk was restored, but no restored partition has /etc/fstab for --post-restore; name the root with --root N",
            )
        })
}

/// Mounts the restored root (partition `root`, see [`choose_root`]) and what its fstab mounts
/// of the restored partitions, runs `cmd` with RIMAGE_ROOT, RIMAGE_DISK, RIMAGE_ROOT_DEVICE,
/// RIMAGE_IMAGE_DIR and RIMAGE_PART_<N>, and unmounts. Returns what it did.
///
/// # Errors
/// A mount that fails, or a command that fails (the disk is restored: the message says so).
pub fn run(
    m: &Manifest,
    dir: &Path,
    disk: &Path,
    nodes: &BTreeMap<u32, PathBuf>,
    root: u32,
    cmd: &str,
    progress: &dyn Progress,
) -> Result<String, Error> {
    let root = m
        .partitions
        .iter()
        .find(|p| p.number == root)
        .expect("chosen by choose_root");
    let mnt = tempfile::Builder::new()
        .prefix("rimage-root.")
        .tempdir()
        .map_err(io(Path::new("/tmp"), "create a mount point in"))?;
    let mut mounts = Mounts(Vec::new());
    mounts.mount(
        &nodes[&root.number],
        mnt.path(),
        root.filesystem.kind.name(),
    )?;
    let fstab = std::fs::read_to_string(mnt.path().join("etc/fstab")).unwrap_or_default();
    let candidates: Vec<Candidate<'_>> = m
        .partitions
        .iter()
        .filter(|p| p.number != root.number && p.filesystem.kind.has_files())
        .map(|p| Candidate {
            number: p.number,
            uuid: p.filesystem.uuid.as_deref(),
            label: p.filesystem.label.as_deref(),
            partuuid: m.entry(p.number).and_then(|e| e.part_guid.as_deref()),
        })
        .collect();
    for (number, point) in fstab_mounts(&fstab, &candidates) {
        let at = mnt.path().join(point.trim_start_matches('/'));
        let kind = m.partitions.iter().find(|p| p.number == number);
        if let Some(p) = kind
            && at.is_dir()
        {
            mounts.mount(&nodes[&number], &at, p.filesystem.kind.name())?;
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
        return Err(Error::failed(
            disk,
            format!("the disk was restored, but the post-restore command failed ({status}): {cmd}"),
        ));
    }
    Ok(format!(
        "`{cmd}` ran with partition {} mounted as the root",
        root.number
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT: Candidate<'static> = Candidate {
        number: 1,
        uuid: Some("1234-ABCD"),
        label: Some("BOOT"),
        partuuid: Some("0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
    };
    const DATA: Candidate<'static> = Candidate {
        number: 4,
        uuid: Some("0b1c2d3e-4f50-4162-8374-95a6b7c8d9ea"),
        label: Some("data"),
        partuuid: None,
    };

    #[test]
    fn uuid_label_and_partuuid_specs_match_their_partitions() {
        let fstab = "\
# /etc/fstab
UUID=aaaaaaaa-0000-0000-0000-000000000000 / ext4 defaults 0 1
UUID=1234-abcd /boot vfat defaults 0 2
LABEL=data\t/data  ext4 noatime 0 2
PARTUUID=0fc63daf-8483-4772-8e79-3d69d8477de4 /efi vfat defaults 0 2
";
        assert_eq!(
            fstab_mounts(fstab, &[BOOT, DATA]),
            vec![
                (1, "/boot".to_string()),
                (4, "/data".to_string()),
                (1, "/efi".to_string())
            ]
        );
    }

    #[test]
    fn root_swap_comments_unknown_specs_and_short_lines_are_skipped() {
        let fstab = "\
UUID=1234-ABCD / ext4 defaults 0 1
# UUID=1234-ABCD /boot vfat defaults 0 2
UUID=0b1c2d3e-4f50-4162-8374-95a6b7c8d9ea none swap sw 0 0
/dev/sda1 /boot vfat defaults 0 2
head:/cluster /cluster nfs defaults 0 0
LABEL=Data /data ext4 defaults 0 2
LABEL=data
";
        assert!(fstab_mounts(fstab, &[BOOT, DATA]).is_empty());
    }
}
