//! rimage: a partition imager that copies only the blocks a filesystem uses.
//!
//! The data path, one module per step:
//! [`source`] (device or file) → [`fs`] (which blocks are used) → chunks → image → restore target.
//!
//! The library never prints; the `rimage` binary presents what it returns.

pub mod error;
pub mod fs;
pub mod source;

use std::path::Path;

use serde::Serialize;

pub use error::Error;
use fs::ext::ScanOptions;
use fs::{FsInfo, Scan};
use source::{Device, DeviceKind};

/// What `rimage info` reports about a device or filesystem image file.
#[derive(Clone, Debug, Serialize)]
pub struct SourceInfo {
    /// The path given.
    pub path: std::path::PathBuf,
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
