//! The drift check (`verify IMAGE --against DEVICE`): does a device still hold every block an
//! image stores? Admins run it across nodes to find the ones that drifted from the golden image.
//! The device is only read. Each chunk is compared with the device at its own extents (by
//! content hash from the extent list alone when the image has them, else decompressed); the
//! blocks that differ are listed, with the files of the image they belong to.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::iter::{ParallelBridge, ParallelIterator};
use serde::Serialize;

use crate::Error;
use crate::compare;
use crate::error::IoError;
use crate::fs::Extent;
use crate::pool::worker_pool;
use crate::progress::Progress;
use crate::read::Image;
use crate::source::Device;
use crate::transport::ImageSource;

/// Most differing ranges and files listed (the counts are always complete).
pub const MAX_LISTED: usize = 1000;

/// What the drift check found.
#[derive(Clone, Debug, Serialize)]
pub struct DriftReport {
    /// The image.
    pub image: PathBuf,
    /// The device compared with it.
    pub device: PathBuf,
    /// Whether the device holds every block the image stores.
    pub identical: bool,
    /// Chunks compared.
    pub chunks: u64,
    /// Chunks with at least one differing block.
    pub chunks_differing: u64,
    /// Blocks that differ.
    pub blocks_differing: u64,
    /// Block size of the ranges.
    pub block_size: u32,
    /// Differing block ranges `[start, end)`, ascending (at most [`MAX_LISTED`]).
    pub ranges: Vec<(u64, u64)>,
    /// Files of the image that own differing blocks (ext images; at most [`MAX_LISTED`]).
    pub files: Vec<String>,
    /// Why files are not listed, when they are not.
    pub files_note: Option<String>,
}

/// Compares `device` with the image `source`.
///
/// # Errors
/// The image cannot be read or fails its checks, or the device cannot be read.
pub fn drift(
    source: &ImageSource,
    device: &Path,
    threads: usize,
    progress: &dyn Progress,
) -> Result<DriftReport, Error> {
    let pool = worker_pool(threads, "drift")?;
    let mut image = Image::open(source)?;
    image.check_up_front()?;
    let hdr = image.header().clone();
    let dev = Device::open(device)?;
    if dev.size_bytes() < hdr.source_size {
        return Err(Error::refused(
            device,
            format!(
                "holds {} bytes, less than the image's {}: not the device this image is of",
                dev.size_bytes(),
                hdr.source_size
            ),
        ));
    }
    let bs = u64::from(hdr.block_size);
    let read_err = |e| Error::Io(IoError::new(device, "read", None, e));
    progress.start("comparing", image.expected_blocks() * bs);
    let found: Mutex<(Vec<Extent>, u64, u64)> = Mutex::new((Vec::new(), 0, 0));
    let result = pool.install(|| {
        image
            .chunks()
            .par_bridge()
            .try_for_each(|pending| -> Result<(), Error> {
                crate::interrupt::check()?;
                let pending = pending?;
                let (diff, blocks) = match (
                    pending.entry().and_then(|e| e.content_hash),
                    pending.fetch_extents(&hdr)?,
                ) {
                    (Some(content), Some(head))
                        if compare::holds(&dev, &hdr, &head.extents, content)
                            .map_err(read_err)? =>
                    {
                        (Vec::new(), head.blocks + head.zero_blocks)
                    }
                    _ => pending.fetch()?.check(&hdr, |c, data| {
                        let d =
                            compare::differing(&dev, &hdr, &c.extents, data).map_err(read_err)?;
                        Ok((d, c.blocks + c.zero_blocks))
                    })?,
                };
                progress.advance(blocks * bs);
                let mut f = found.lock().expect("drift lock");
                f.1 += 1;
                if !diff.is_empty() {
                    f.2 += 1;
                    f.0.extend(diff);
                }
                Ok(())
            })
    });
    result?;
    progress.finish();
    let (mut ranges, chunks, chunks_differing) = found.into_inner().expect("lock");
    ranges.sort_unstable_by_key(|e| e.start);
    let blocks_differing = ranges.iter().map(|e| e.len).sum();
    let (files, files_note) = if ranges.is_empty() {
        (Vec::new(), None)
    } else {
        owners(image, &ranges)
    };
    Ok(DriftReport {
        image: source.path().to_path_buf(),
        device: device.to_path_buf(),
        identical: ranges.is_empty(),
        chunks,
        chunks_differing,
        blocks_differing,
        block_size: hdr.block_size,
        ranges: ranges
            .iter()
            .take(MAX_LISTED)
            .map(|e| (e.start, e.end()))
            .collect(),
        files,
        files_note,
    })
}

/// The paths, in the image's filesystem, of the files that own blocks of `ranges`.
fn owners(image: Image, ranges: &[Extent]) -> (Vec<String>, Option<String>) {
    if !image.header().source_type.is_ext() {
        return (
            Vec::new(),
            Some(format!(
                "a {} image: which files own the blocks is known for ext2/3/4 images only",
                image.header().source_type
            )),
        );
    }
    let blocks = match crate::read::blocks::ImageBlocks::new(image) {
        Ok(b) => crate::read::blocks::BlocksReadAt::new(b),
        Err(e) => return (Vec::new(), Some(e.full_message())),
    };
    let fs = match crate::fs::ext::ExtFs::open(&blocks, crate::fs::ScanOptions::lenient()) {
        Ok(fs) => fs,
        Err(e) => return (Vec::new(), Some(format!("the image's filesystem: {e}"))),
    };
    match fs.paths_of_blocks(&blocks, ranges) {
        Ok(mut paths) => {
            paths.truncate(MAX_LISTED);
            (paths, None)
        }
        Err(e) => (Vec::new(), Some(format!("the image's files: {e}"))),
    }
}
