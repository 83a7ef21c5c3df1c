//! `info`: what a save of a source would copy, or what an image holds.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::Error;
use crate::fs::{self, FsInfo, ScanOptions};
use crate::image::header::{HEADER_LEN, Header};
use crate::read::Image;
use crate::source::{Device, DeviceKind};
use crate::transport::ImageSource;

/// What `rimage info` reports about a device or filesystem image file.
#[derive(Clone, Debug, Serialize)]
pub struct SourceInfo {
    /// The path given.
    pub path: PathBuf,
    /// Block device or regular file.
    pub device_kind: DeviceKind,
    /// Size of the device or file in bytes.
    pub device_bytes: u64,
    /// The filesystem, with the used count a save would copy.
    pub fs: FsInfo,
    /// Used blocks according to the filesystem's own counters (ext: the superblock's free
    /// count, which lags while mounted), when it keeps them.
    pub superblock_used_blocks: Option<u64>,
    /// What the scan found worth telling (a journal needing recovery, ...).
    pub notes: Vec<String>,
}

/// Describes what a save of `path` would copy, scanning every allocation map. Damage that a
/// save with `--force` tolerates (checksum mismatches, wrong counters) is described in the
/// notes, not refused.
///
/// # Errors
/// When the path cannot be opened or read, or holds a filesystem whose allocation maps cannot
/// be read at all (the message suggests `--raw`).
pub fn inspect_source(path: &Path) -> Result<SourceInfo, Error> {
    let dev = Device::open(path)?;
    let unreadable = |e: fs::ScanError| {
        if e.is_io() {
            Error::scan(path, e)
        } else {
            Error::refused(
                path,
                format!(
                    "{e}: rimage cannot read its allocation maps; `rimage save --raw` images it block by block"
                ),
            )
        }
    };
    let scan = fs::probe(&dev, ScanOptions::lenient()).map_err(unreadable)?;
    let fs = scan.info(&dev).map_err(unreadable)?;
    Ok(SourceInfo {
        path: path.to_path_buf(),
        device_kind: dev.kind(),
        device_bytes: dev.size_bytes(),
        fs,
        superblock_used_blocks: scan.recorded_used_blocks(),
        notes: scan.notes(),
    })
}

/// What `rimage info IMAGE` reports.
#[derive(Clone, Debug, Serialize)]
pub struct ImageInfo {
    /// The image.
    pub path: PathBuf,
    /// Its header.
    pub header: Header,
    /// Number of chunks.
    pub chunks: u64,
    /// Blocks stored.
    pub stored_blocks: u64,
    /// Used blocks recorded as zeros (unused inode tables), not stored.
    pub zero_blocks: u64,
    /// Uncompressed size of the stored blocks.
    pub original_bytes: u64,
    /// Size of the image file.
    pub image_bytes: u64,
    /// original / image.
    pub ratio: f64,
    /// Whole-image digest, hex.
    pub digest: String,
}

/// Whether the file at `path` starts with the image magic.
pub fn is_image(path: &Path) -> bool {
    let mut first = [0u8; HEADER_LEN];
    std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut first))
        .is_ok_and(|n| Header::sniff(&first[..n]))
}

/// Describes an image from its header, index and trailer (chunks are not read: see verify).
///
/// # Errors
/// When it cannot be read, cannot be read at random (a stream), or its header, index or
/// trailer is corrupt.
pub fn inspect_image(source: &ImageSource) -> Result<ImageInfo, Error> {
    let image = Image::open(source)?;
    let layout = image
        .random_access()
        .ok_or_else(|| {
            Error::refused(
                source.path(),
                "info reads the index at the end of an image, which a stream cannot give; save the stream to a file, or use verify",
            )
        })?
        .layout();
    let original_bytes = layout.trailer.stored_blocks * u64::from(layout.header.block_size);
    let image_bytes = image.bytes_read();
    Ok(ImageInfo {
        path: source.path().to_path_buf(),
        header: layout.header.clone(),
        chunks: layout.trailer.chunk_count,
        stored_blocks: layout.trailer.stored_blocks,
        zero_blocks: layout.trailer.zero_blocks,
        original_bytes,
        image_bytes,
        ratio: if image_bytes == 0 {
            0.0
        } else {
            original_bytes as f64 / image_bytes as f64
        },
        digest: format!("{:032x}", layout.trailer.digest),
    })
}
