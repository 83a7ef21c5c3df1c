//! A saved disk directory, described and checked without restoring it (Clonezilla's "check the
//! image is restorable"): the manifest, the boot area, and every partition image against the
//! partition it is for.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::manifest::{Action, MANIFEST, Manifest, Plan};
use crate::Error;
use crate::progress::Progress;
use crate::transport::ImageSource;
use crate::{ImageInfo, VerifyReport};

/// One partition of a saved disk.
#[derive(Clone, Debug, Serialize)]
pub struct PartitionInfo {
    /// The plan (number, action, filesystem, image name).
    #[serde(flatten)]
    pub plan: Plan,
    /// Size of the partition in bytes.
    pub bytes: u64,
    /// The image, for an imaged partition whose image could be read.
    pub image: Option<ImageInfo>,
}

/// What `rimage info DIR` reports about a saved disk.
#[derive(Clone, Debug, Serialize)]
pub struct DiskInfo {
    /// The directory.
    pub dir: PathBuf,
    /// The manifest.
    pub manifest: Manifest,
    /// Per partition, in table order.
    pub partitions: Vec<PartitionInfo>,
    /// Everything that would stop a restore (missing or unreadable images, sizes).
    pub problems: Vec<String>,
}

/// Whether `dir` holds a saved disk (a directory with a manifest).
pub fn is_disk_dir(dir: &Path) -> bool {
    dir.is_dir() && dir.join(MANIFEST).is_file()
}

fn read_manifest(dir: &Path) -> Result<Manifest, Error> {
    let path = dir.join(MANIFEST);
    if !dir.join(MANIFEST).is_file() {
        return Err(Error::refused(
            dir,
            "is a directory without manifest.toml: not a disk saved by save-disk (or an incomplete save)",
        ));
    }
    Manifest::read(&path).map_err(|source| Error::Manifest { path, source })
}

/// Describes a saved disk from its manifest and the headers and indexes of its images (the
/// chunks are not read: see [`verify_dir`]).
///
/// # Errors
/// A missing or invalid manifest. Problems with images are listed in the report.
pub fn inspect_dir(dir: &Path) -> Result<DiskInfo, Error> {
    let manifest = read_manifest(dir)?;
    let mut problems = Vec::new();
    if let Some(b) = &manifest.boot_area
        && !dir.join(b).is_file()
    {
        problems.push(format!("the boot area {b} is missing"));
    }
    let mut partitions = Vec::new();
    for p in &manifest.partitions {
        let bytes = manifest.entry(p.number).map_or(0, |e| e.size_bytes());
        let image = match (p.action, &p.image) {
            (Action::Image, Some(name)) => {
                match crate::inspect_image(&ImageSource::File(dir.join(name))) {
                    Ok(info) => {
                        problems.extend(mismatch(p, bytes, &info));
                        Some(info)
                    }
                    Err(e) => {
                        problems.push(format!("partition {}: {}", p.number, e.full_message()));
                        None
                    }
                }
            }
            _ => None,
        };
        partitions.push(PartitionInfo {
            plan: p.clone(),
            bytes,
            image,
        });
    }
    Ok(DiskInfo {
        dir: dir.to_path_buf(),
        manifest,
        partitions,
        problems,
    })
}

/// Why an image does not fit the partition its plan puts it on.
fn mismatch(p: &Plan, bytes: u64, info: &ImageInfo) -> Option<String> {
    let h = &info.header;
    if h.source_size > bytes {
        return Some(format!(
            "partition {}: its image holds {} bytes, more than the partition's {bytes}",
            p.number, h.source_size
        ));
    }
    if h.source_type != p.filesystem.kind && h.source_type != crate::fs::FsType::Raw {
        return Some(format!(
            "partition {}: the manifest says {}, its image holds {}",
            p.number, p.filesystem.kind, h.source_type
        ));
    }
    None
}

/// The outcome of checking a saved disk.
#[derive(Clone, Debug, Serialize)]
pub struct DiskVerifyReport {
    /// The directory.
    pub dir: PathBuf,
    /// Whether everything holds: a restore-disk would find nothing wrong with the images.
    pub ok: bool,
    /// Each image's verification, in partition order.
    pub images: Vec<(u32, VerifyReport)>,
    /// Problems outside the images (manifest, boot area, sizes, missing images).
    pub problems: Vec<String>,
}

/// Checks a saved disk completely: the manifest, the boot area, and every image (as `verify`
/// does) against its partition.
///
/// # Errors
/// A missing or invalid manifest. Problems with images are listed in the report.
pub fn verify_dir(
    dir: &Path,
    threads: usize,
    progress: &dyn Progress,
) -> Result<DiskVerifyReport, Error> {
    let info = inspect_dir(dir)?;
    let mut problems = info.problems.clone();
    let mut images = Vec::new();
    for p in info.partitions.iter().filter(|p| p.image.is_some()) {
        let name = p.plan.image.as_deref().unwrap_or_default();
        progress.note(&format!("partition {}: verifying {name}", p.plan.number));
        match crate::verify(&ImageSource::File(dir.join(name)), threads, progress) {
            Ok(r) => images.push((p.plan.number, r)),
            Err(e) => problems.push(format!("partition {}: {}", p.plan.number, e.full_message())),
        }
    }
    let ok = problems.is_empty() && images.iter().all(|(_, r)| r.ok);
    Ok(DiskVerifyReport {
        dir: dir.to_path_buf(),
        ok,
        images,
        problems,
    })
}
