//! `info`: what a save of a source would copy, or what an image holds.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::Error;
use crate::fs::ext::ScanOptions;
use crate::fs::{self, FsInfo, Scan};
use crate::image::file::ImageFile;
use crate::image::header::{HEADER_LEN, Header};
use crate::restore::map_image;
use crate::source::{Device, DeviceKind};

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
    /// For ext: used blocks according to the superblock's free count, which lags while mounted.
    pub superblock_used_blocks: Option<u64>,
}

/// Describes what a save of `path` would copy, scanning every block bitmap.
///
/// # Errors
/// When the path cannot be opened or read, or holds an ext filesystem that cannot be trusted.
pub fn inspect_source(path: &Path) -> Result<SourceInfo, Error> {
    let dev = Device::open(path)?;
    let scan = fs::probe(&dev, ScanOptions::default()).map_err(|e| Error::ext(path, e))?;
    let fs = scan.info(&dev).map_err(|e| Error::ext(path, e))?;
    let superblock_used_blocks = match &scan {
        Scan::Ext(e) => Some(e.superblock_used_blocks()),
        Scan::Raw(_) => None,
    };
    Ok(SourceInfo {
        path: path.to_path_buf(),
        device_kind: dev.kind(),
        device_bytes: dev.size_bytes(),
        fs,
        superblock_used_blocks,
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
/// When it cannot be read or its header, index or trailer is corrupt.
pub fn inspect_image(path: &Path) -> Result<ImageInfo, Error> {
    let map = map_image(path)?;
    let img = ImageFile::parse(&map[..]).map_err(|e| Error::image(path, e))?;
    let original_bytes = img.trailer.stored_blocks * u64::from(img.header.block_size);
    let image_bytes = img.len();
    Ok(ImageInfo {
        path: path.to_path_buf(),
        header: img.header.clone(),
        chunks: img.trailer.chunk_count,
        stored_blocks: img.trailer.stored_blocks,
        zero_blocks: img.trailer.zero_blocks,
        original_bytes,
        image_bytes,
        ratio: if image_bytes == 0 {
            0.0
        } else {
            original_bytes as f64 / image_bytes as f64
        },
        digest: format!("{:032x}", img.trailer.digest),
    })
}
