//! restore: image → check each chunk → decompress → positional writes to the target.
//!
//! Chunks are handed to a rayon pool in image order (`par_bridge` pulls the next one when a
//! worker is free), so at most one chunk per worker is in flight and writes move roughly
//! ascending across the target. Every chunk is checked completely (CRC, extents, zstd content
//! checksum and length, and for a file image its hash in the index) before any of its blocks is
//! written; a chunk that fails is never written.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::iter::{ParallelBridge, ParallelIterator};
use serde::Serialize;

use crate::Error;
use crate::compare;
use crate::error::IoError;
use crate::fs::{Identity, Uuid, identify};
use crate::guard::{self, Access, check_not_mounted};
use crate::image::Unstored;
use crate::image::chunk::{CheckedChunk, ChunkSpan};
use crate::image::header::Header;
use crate::pool::worker_pool;
use crate::progress::Progress;
use crate::read::Image;
use crate::source::Device;
use crate::target::Target;
use crate::transport::ImageSource;

/// What to do with blocks the image does not store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FreeSpace {
    /// Leave them as they are (their old contents stay).
    #[default]
    Leave,
    /// Make them read as zeros.
    Zero,
    /// Discard them (TRIM); where the device cannot, zero them.
    Discard,
}

impl FreeSpace {
    /// What is done to an image's unstored blocks: a raw image's are zeros, whatever was asked.
    pub fn for_image(self, hdr: &Header) -> Self {
        if hdr.unstored == Unstored::Zero {
            Self::Zero
        } else {
            self
        }
    }
}

/// Which filesystem UUID the target must hold before it is overwritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectUuid {
    /// The image's own UUID (re-imaging a node from the image it was made from).
    Image,
    /// This UUID.
    Uuid(Uuid),
}

/// How to restore.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Worker threads; 0 means one per CPU.
    pub threads: usize,
    /// Treatment of free space (raw images always zero their unstored blocks).
    pub free_space: FreeSpace,
    /// Refuse (before writing) unless the target currently holds a filesystem with this UUID.
    pub expect_uuid: Option<ExpectUuid>,
    /// Restore over a partition table, partitions, another filesystem or an image on the
    /// target (refused without it).
    pub force: bool,
    /// Skip every chunk the target already holds (compared by content hash before fetching,
    /// or after decompressing for version 1 images and streams), and write nothing that is
    /// already there.
    pub delta: bool,
}

/// What a restore did.
#[derive(Clone, Debug, Serialize)]
pub struct RestoreReport {
    /// The image.
    pub image: PathBuf,
    /// The target.
    pub target: PathBuf,
    /// The image header.
    pub header: Header,
    /// Chunks in the image.
    pub chunks: u64,
    /// Chunks written to the target.
    pub chunks_written: u64,
    /// Chunks the target already held (delta): not written, and for a version 2 image read at
    /// random not even fetched.
    pub chunks_skipped: u64,
    /// Bytes of the image read (for a URL: fetched over the network).
    pub image_bytes_read: u64,
    /// Data bytes of the chunks skipped.
    pub bytes_skipped: u64,
    /// Blocks written.
    pub blocks_written: u64,
    /// Bytes written from the image.
    pub bytes_written: u64,
    /// Bytes of unstored blocks zeroed or discarded.
    pub bytes_cleared: u64,
    /// Used blocks written as zeros (unused inode tables: not stored in the image).
    pub blocks_zeroed: u64,
    /// What was done with unstored blocks.
    pub free_space: FreeSpace,
    /// What the target held before the restore.
    pub target_before: Identity,
    /// Whether this was a delta restore.
    pub delta: bool,
}

/// Restores an image onto `target`.
///
/// # Errors
/// A header or index that fails its checks, or a target that is too small or in use, stops the
/// restore before anything is written ([`Error::Refused`], or the image's error). A chunk that
/// fails its checks is never written and its error names it; the restore then stops with an
/// error, and the target holds part of the image.
pub fn restore(
    source: &ImageSource,
    target: &Path,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport, Error> {
    match source {
        ImageSource::File(p) => {
            guard::check_image_path(p, "rimage restore IMAGE TARGET")?;
            guard::check_distinct(p, target)?;
        }
        ImageSource::Stdin => guard::check_not_terminal(true)?,
        ImageSource::Url { .. } => {}
    }
    restore_image(Image::open(source)?, target, opts, progress)
}

/// Restores an opened image onto `target` (what [`restore`] does once the image is open; a
/// disk stream hands its partition images here one by one).
///
/// # Errors
/// As [`restore`].
pub fn restore_image(
    mut image: Image,
    target: &Path,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport, Error> {
    let pool = worker_pool(opts.threads, "restore")?;
    image.check_up_front()?;
    let hdr = image.header().clone();
    let free = opts.free_space.for_image(&hdr);
    let before = check_target(target, &hdr, opts, progress)?;
    let tgt = Target::open(target, hdr.source_size)?;
    let bs = u64::from(hdr.block_size);
    progress.start("restoring", image.expected_blocks() * bs);
    let total = image.random_access().map(|r| r.layout().index.len() as u64);
    let name = image.name().to_path_buf();
    let written = AtomicU64::new(0);
    let done = pool.install(|| {
        image
            .chunks()
            .par_bridge()
            .map(|pending| -> Result<_, Error> {
                crate::interrupt::check()?;
                let pending = pending?;
                let seq = pending.seq();
                let w = Writer {
                    hdr: &hdr,
                    tgt: &tgt,
                    free,
                    delta: opts.delta,
                    progress,
                };
                // Delta, version 2, at random: compare the target with the chunk's content
                // hash from its extent list alone; a chunk it holds is never fetched.
                if opts.delta
                    && let Some(content) = pending.entry().and_then(|e| e.content_hash)
                    && let Some(head) = pending.fetch_extents(&hdr)?
                    && compare::holds(&tgt, &hdr, &head.extents, content)
                        .map_err(|e| IoError::new(target, "read", None, e))?
                {
                    let head_bytes = crate::image::chunk::head_len(head.extents.len() as u32);
                    return w.skip(seq, &head, head_bytes as u64);
                }
                let chunk = pending.fetch()?;
                let fetched = chunk.record_len();
                let done = chunk.check(&hdr, |c, data| {
                    // Without a content hash to go by: compare what was decompressed.
                    if opts.delta
                        && compare::differing(&tgt, &hdr, &c.extents, data)
                            .map_err(|e| IoError::new(target, "read", None, e))?
                            .is_empty()
                    {
                        return w.skip(seq, c, fetched);
                    }
                    w.write(seq, c, data, fetched)
                })?;
                if !done.skipped {
                    written.fetch_add(1, Ordering::Relaxed);
                }
                Ok(done)
            })
            .collect::<Result<Vec<_>, Error>>()
    });
    let finished = done.and_then(|mut done| {
        progress.finish();
        done.sort_unstable_by_key(|d| d.span.seq);
        image.finish(done.iter().map(|d| d.span).collect())?;
        finish(&name, &hdr, &done, &tgt, free, opts.delta, before)
    });
    // Once blocks were written, a failure leaves the target holding part of the image: say so.
    finished.map_err(|e| match written.into_inner() {
        0 => e,
        n => Error::Incomplete {
            target: target.to_path_buf(),
            written: n,
            total,
            source: Box::new(e),
        },
    })
}

/// Refuses a mounted target; says what the target holds when that is not the image's
/// filesystem; enforces `--expect-uuid`. Nothing has been written when this returns.
fn check_target(
    target: &Path,
    hdr: &Header,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<Identity, Error> {
    let exists = target.exists();
    if exists {
        check_not_mounted(target, Access::Write, progress)?;
    }
    let before = match Device::open(target) {
        Ok(dev) => identify(&dev),
        Err(_) => Identity::unknown(),
    };
    let image = hdr.identity();
    if exists
        && !opts.force
        && opts.expect_uuid.is_none()
        && let Some(what) = guard::target_contents(target, &image)
    {
        return Err(Error::refused(
            target,
            format!(
                "{what}, which the restore would destroy (the image holds {image}); pass --force to restore over it. Nothing was written"
            ),
        ));
    }
    if exists && before.uuid != image.uuid {
        progress.note(&format!(
            "{} currently holds {before}; the image holds {image}",
            target.display()
        ));
    }
    if let Some(expect) = opts.expect_uuid {
        let want = match expect {
            ExpectUuid::Image => image.uuid.clone(),
            ExpectUuid::Uuid(u) => Some(u.to_string()),
        };
        if want.is_none() || before.uuid != want {
            let want = want.unwrap_or_else(|| "a UUID (the image has none)".to_string());
            return Err(Error::refused(
                target,
                format!(
                    "currently holds {before}, but --expect-uuid asks for {want}; nothing was written"
                ),
            ));
        }
    }
    Ok(before)
}

/// A chunk that was restored (written, or found on the target already).
#[derive(Clone, Copy, Debug)]
struct ChunkDone {
    span: ChunkSpan,
    /// Bytes cleared in the gaps between its extents.
    cleared: u64,
    /// The target held it already.
    skipped: bool,
    /// Bytes of its record read from the image.
    fetched: u64,
}

/// What a worker needs to restore one chunk.
struct Writer<'a> {
    hdr: &'a Header,
    tgt: &'a Target,
    free: FreeSpace,
    delta: bool,
    progress: &'a dyn Progress,
}

impl Writer<'_> {
    /// Clears the gaps between a chunk's extents as `free` says.
    fn clear_gaps(&self, c: &CheckedChunk) -> Result<u64, Error> {
        let mut cleared = 0;
        for pair in c.extents.windows(2) {
            cleared += clear(
                self.tgt,
                self.hdr,
                self.free,
                self.delta,
                pair[0].extent.end(),
                pair[1].extent.start,
            )?;
        }
        Ok(cleared)
    }

    /// A chunk the target already holds: nothing of it is written (its gaps are still cleared
    /// as asked, where they are not clear already).
    fn skip(&self, seq: u64, c: &CheckedChunk, fetched: u64) -> Result<ChunkDone, Error> {
        let cleared = self.clear_gaps(c)?;
        let bs = u64::from(self.hdr.block_size);
        self.progress.advance((c.blocks + c.zero_blocks) * bs);
        Ok(ChunkDone {
            span: c.span(seq),
            cleared,
            skipped: true,
            fetched,
        })
    }

    /// Writes a checked chunk's blocks (`data`: its data extents back to back), clearing the
    /// gaps between its extents.
    fn write(
        &self,
        seq: u64,
        c: &CheckedChunk,
        data: &[u8],
        fetched: u64,
    ) -> Result<ChunkDone, Error> {
        let (hdr, tgt) = (self.hdr, self.tgt);
        let bs = u64::from(hdr.block_size);
        let mut pos = 0usize;
        for ce in &c.extents {
            let e = ce.extent;
            if ce.zero {
                // Used blocks whose contents never mattered (unused inode tables): zeros.
                clear(tgt, hdr, FreeSpace::Zero, false, e.start, e.end())?;
                continue;
            }
            let len = (e.len * bs) as usize;
            let offset = e.start * bs;
            // Never write at or past the source size (a raw image's last block may be partial).
            let keep = hdr.source_size.saturating_sub(offset).min(len as u64) as usize;
            tgt.write_at(&data[pos..pos + keep], offset)?;
            pos += len;
        }
        let cleared = self.clear_gaps(c)?;
        // Start writing this chunk's span to disk now rather than all at the final fsync.
        let span = (c.end_block - c.first_block) * bs;
        crate::sys::start_writeback(tgt.file(), c.first_block * bs, span);
        self.progress.advance((c.blocks + c.zero_blocks) * bs);
        Ok(ChunkDone {
            span: c.span(seq),
            cleared,
            skipped: false,
            fetched,
        })
    }
}

/// Zeroes or discards blocks `[from, to)` as `free` (already [`FreeSpace::for_image`]) says;
/// with `delta`, only where they do not read as zeros already (nothing is written that is
/// already there).
fn clear(
    tgt: &Target,
    hdr: &Header,
    free: FreeSpace,
    delta: bool,
    from: u64,
    to: u64,
) -> Result<u64, Error> {
    if from >= to {
        return Ok(0);
    }
    let bs = u64::from(hdr.block_size);
    let offset = from * bs;
    let len = (to * bs).min(hdr.source_size).saturating_sub(offset);
    if delta && free != FreeSpace::Leave && tgt.reads_as_zeros(offset, len)? {
        return Ok(0);
    }
    match free {
        FreeSpace::Leave => return Ok(0),
        FreeSpace::Zero => tgt.zero_range(offset, len)?,
        FreeSpace::Discard => {
            if !tgt.discard_range(offset, len)? {
                tgt.zero_range(offset, len)?;
            }
        }
    }
    Ok(len)
}

/// Clears the gaps between chunks (given in order, ascending and disjoint) and after the
/// last, fsyncs, and reports.
fn finish(
    path: &Path,
    hdr: &Header,
    done: &[ChunkDone],
    tgt: &Target,
    free: FreeSpace,
    delta: bool,
    target_before: Identity,
) -> Result<RestoreReport, Error> {
    let mut cleared: u64 = done.iter().map(|d| d.cleared).sum();
    let mut prev_end = 0;
    for d in done {
        cleared += clear(tgt, hdr, free, delta, prev_end, d.span.first_block)?;
        prev_end = d.span.end_block;
    }
    cleared += clear(tgt, hdr, free, delta, prev_end, hdr.total_blocks)?;
    tgt.sync()?;
    let bs = u64::from(hdr.block_size);
    let written = || done.iter().filter(|d| !d.skipped);
    let blocks: u64 = written().map(|d| d.span.blocks).sum();
    let blocks_zeroed: u64 = written().map(|d| d.span.zero_blocks).sum();
    let skipped = || done.iter().filter(|d| d.skipped);
    Ok(RestoreReport {
        image: path.to_path_buf(),
        target: tgt.path().to_path_buf(),
        header: hdr.clone(),
        chunks: done.len() as u64,
        chunks_written: written().count() as u64,
        chunks_skipped: skipped().count() as u64,
        image_bytes_read: done.iter().map(|d| d.fetched).sum(),
        bytes_skipped: skipped().map(|d| d.span.blocks * bs).sum(),
        blocks_written: blocks,
        bytes_written: blocks * bs,
        bytes_cleared: cleared,
        blocks_zeroed,
        free_space: free,
        target_before,
        delta,
    })
}
