//! restore: image → check each chunk → decompress → positional writes to the target.
//!
//! Chunks are handed to a rayon pool in image order (`par_bridge` pulls the next one when a
//! worker is free), so at most one chunk per worker is in flight and writes move roughly
//! ascending across the target. Every chunk is checked completely (CRC, extents, zstd content
//! checksum and length, and for a file image its hash in the index) before any of its blocks is
//! written; a chunk that fails is never written.

use std::cell::RefCell;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rayon::iter::{ParallelBridge, ParallelIterator};
use serde::Serialize;

use crate::Error;
use crate::fs::{FsType, Identity, Uuid, identify};
use crate::image::chunk::{CheckedChunk, ChunkRecord};
use crate::image::digest::chunk_hash;
use crate::image::file::ImageFile;
use crate::image::header::Header;
use crate::image::stream::StreamReader;
use crate::image::{FormatError, IndexEntry, Unstored};
use crate::progress::Progress;
use crate::save::worker_pool;
use crate::source::{Device, IoError, mounts_of, stdio_file};
use crate::target::Target;

/// Where an image is read from.
#[derive(Clone, Debug)]
pub enum ImageSource {
    /// A file: mapped, its index read first.
    File(PathBuf),
    /// Standard input, read sequentially.
    Stdin,
}

impl ImageSource {
    /// The path for messages ("<stdin>" for standard input).
    pub fn path(&self) -> &Path {
        match self {
            Self::File(p) => p,
            Self::Stdin => Path::new("<stdin>"),
        }
    }
}

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
    /// Chunks written.
    pub chunks: u64,
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
}

thread_local! {
    /// One zstd decompression context and output buffer per worker, kept across chunks.
    static DCTX: RefCell<Option<(zstd::bulk::Decompressor<'static>, Vec<u8>)>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's decompressor and output buffer.
pub(crate) fn with_decompressor<T>(
    f: impl FnOnce(&mut zstd::bulk::Decompressor<'static>, &mut Vec<u8>) -> T,
) -> T {
    DCTX.with(|cell| {
        let mut slot = cell.borrow_mut();
        let (dctx, out) = slot.get_or_insert_with(|| {
            (
                zstd::bulk::Decompressor::new().expect("zstd context"),
                Vec::new(),
            )
        });
        f(dctx, out)
    })
}

/// Every check a chunk must pass before it is used: CRC, extents, the hash the index expects
/// (when there is an index), then decompression into `out` with zstd's content checksum.
pub(crate) fn check_chunk(
    rec: &ChunkRecord<'_>,
    hdr: &Header,
    expected: Option<&IndexEntry>,
    dctx: &mut zstd::bulk::Decompressor<'static>,
    out: &mut Vec<u8>,
) -> Result<CheckedChunk, FormatError> {
    rec.check_crc()?;
    let c = rec.check_extents(hdr)?;
    let span = (c.first_block, c.end_block);
    if let Some(e) = expected {
        if (e.first_block, e.end_block) != span {
            return Err(FormatError::BadChunk {
                chunk: rec.id(Some(span)),
                reason: "block span differs from its index entry".into(),
            });
        }
        if chunk_hash(rec.bytes()) != e.hash {
            return Err(FormatError::BadChunk {
                chunk: rec.id(Some(span)),
                reason: "hash differs from its index entry".into(),
            });
        }
    }
    rec.decompress(dctx, out, span)?;
    Ok(c)
}

/// Opens an image file and maps it.
pub(crate) fn map_image(path: &Path) -> Result<Mmap, Error> {
    let file = File::open(path).map_err(|e| IoError::new(path, "open", None, e))?;
    // SAFETY: the map is read-only. If another process truncates the image while it is
    // mapped, reads of the lost pages fault (SIGBUS); images are written once under a
    // temporary name and renamed, so a finished image is not modified in place.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| IoError::new(path, "map", None, e))?;
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(map)
}

/// Drops a processed part of a mapped image from this process's memory (the page cache keeps
/// it), so that restoring or verifying a large image does not grow the resident set by the
/// size of the image.
pub(crate) fn release(map: &Mmap, offset: u64, len: usize) {
    // SAFETY: the map is a read-only shared file mapping: after MADV_DONTNEED, a later access
    // reads the same bytes back from the file; nothing in it is private or anonymous.
    let _ = unsafe {
        map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset as usize, len)
    };
}

/// Standard input, buffered, as a plain file that can move between threads.
pub(crate) fn stdin_reader() -> Result<BufReader<File>, Error> {
    let file = stdio_file(rustix::stdio::stdin(), Path::new("<stdin>"))?;
    Ok(BufReader::with_capacity(1 << 20, file))
}

/// Restores an image onto `target`.
///
/// # Errors
/// A header or index that fails its checks, or a target that is too small or in use, stops the
/// restore before anything is written. A chunk that fails its checks is never written and its
/// error names it; the restore then stops with an error.
pub fn restore(
    image: &ImageSource,
    target: &Path,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport, Error> {
    let pool = worker_pool(opts.threads, "restore")?;
    let path = image.path();
    match image {
        ImageSource::File(p) => {
            let map = map_image(p)?;
            let img = ImageFile::parse(&map[..]).map_err(|e| Error::image(path, e))?;
            let computed = img.index_digest();
            if computed != img.trailer.digest {
                return Err(Error::image(
                    path,
                    FormatError::Digest {
                        stored: img.trailer.digest,
                        computed,
                    },
                ));
            }
            let hdr = img.header.clone();
            let free = opts.free_space.for_image(&hdr);
            let before = check_target(target, &hdr, opts, progress)?;
            let tgt = Target::open(target, hdr.source_size)?;
            let blocks = img.trailer.stored_blocks + img.trailer.zero_blocks;
            progress.start("restoring", blocks * u64::from(hdr.block_size));
            let spans = pool.install(|| {
                (0..img.index.len())
                    .par_bridge()
                    .map(|i| -> Result<_, Error> {
                        let rec = img.record(i).map_err(|e| Error::image(path, e))?;
                        let entry = Some(&img.index[i]);
                        let done = write_chunk(&rec, &hdr, entry, &tgt, free, path, progress);
                        release(&map, rec.offset, rec.bytes().len());
                        done
                    })
                    .collect::<Result<Vec<_>, Error>>()
            })?;
            progress.finish();
            // The index guarantees ascending, disjoint spans, and each chunk matched its entry.
            finish(path, &hdr, in_order(spans), &tgt, free, before)
        }
        ImageSource::Stdin => {
            let mut reader =
                StreamReader::new(stdin_reader()?).map_err(|e| Error::stream(path, e))?;
            let hdr = reader.header().clone();
            let free = opts.free_space.for_image(&hdr);
            let before = check_target(target, &hdr, opts, progress)?;
            let tgt = Target::open(target, hdr.source_size)?;
            progress.start("restoring", hdr.used_blocks * u64::from(hdr.block_size));
            let spans = pool.install(|| {
                reader
                    .records()
                    .par_bridge()
                    .map(|item| -> Result<_, Error> {
                        let (buf, offset) = item.map_err(|e| Error::stream(path, e))?;
                        let rec = ChunkRecord::new(&buf, offset, hdr.block_size)
                            .map_err(|e| Error::image(path, e))?;
                        write_chunk(&rec, &hdr, None, &tgt, free, path, progress)
                    })
                    .collect::<Result<Vec<_>, Error>>()
            })?;
            progress.finish();
            // The index and digest were checked against the records when the stream ended;
            // the order of the chunks and their spans in the index are checked here.
            let end = reader.finish().ok_or_else(|| {
                Error::image(
                    path,
                    FormatError::Truncated {
                        what: "index",
                        offset: 0,
                    },
                )
            })?;
            let spans = in_order(spans);
            let pairs: Vec<(u64, u64)> =
                spans.iter().map(|s| (s.first_block, s.end_block)).collect();
            end.check_spans(&pairs).map_err(|e| Error::image(path, e))?;
            finish(path, &hdr, spans, &tgt, free, before)
        }
    }
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
        let mounts = mounts_of(target)
            .map_err(|e| IoError::new(target, "look up the mounts of", None, e))?;
        if let Some(m) = mounts.first() {
            return Err(Error::refused(
                target,
                format!(
                    "mounted at {} (as {}); unmount it first. Nothing was written",
                    m.mount_point.display(),
                    m.device
                ),
            ));
        }
    }
    let before = match Device::open(target) {
        Ok(dev) => identify(&dev),
        Err(_) => Identity {
            fs_type: FsType::Raw,
            label: String::new(),
            uuid: None,
        },
    };
    let image = Identity {
        fs_type: hdr.source_type.fs_type(),
        label: hdr.label.clone(),
        uuid: (hdr.uuid != Uuid::default()).then_some(hdr.uuid),
    };
    if exists && before.uuid != image.uuid {
        progress.note(&format!(
            "{} currently holds {before}; the image holds {image}",
            target.display()
        ));
    }
    if let Some(expect) = opts.expect_uuid {
        let want = match expect {
            ExpectUuid::Image => image.uuid,
            ExpectUuid::Uuid(u) => Some(u),
        };
        if want.is_none() || before.uuid != want {
            let want = want.map_or_else(
                || "a UUID (the image has none)".to_string(),
                |u| u.to_string(),
            );
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

/// A chunk that was written.
#[derive(Clone, Copy, Debug)]
struct ChunkDone {
    seq: u64,
    first_block: u64,
    end_block: u64,
    blocks: u64,
    zero_blocks: u64,
    /// Bytes cleared in the gaps between its extents.
    cleared: u64,
}

/// Checks one chunk and writes its blocks (clearing the gaps between its extents).
fn write_chunk(
    rec: &ChunkRecord<'_>,
    hdr: &Header,
    expected: Option<&IndexEntry>,
    tgt: &Target,
    free: FreeSpace,
    path: &Path,
    progress: &dyn Progress,
) -> Result<ChunkDone, Error> {
    with_decompressor(|dctx, out| {
        let c = check_chunk(rec, hdr, expected, dctx, out).map_err(|e| Error::image(path, e))?;
        let bs = u64::from(hdr.block_size);
        let mut pos = 0usize;
        let mut prev_end: Option<u64> = None;
        let mut cleared = 0;
        for ce in &c.extents {
            let e = ce.extent;
            if let Some(p) = prev_end {
                cleared += clear(tgt, hdr, free, p, e.start)?;
            }
            prev_end = Some(e.end());
            if ce.zero {
                // Used blocks whose contents never mattered (unused inode tables): zeros.
                clear(tgt, hdr, FreeSpace::Zero, e.start, e.end())?;
                continue;
            }
            let len = (e.len * bs) as usize;
            let offset = e.start * bs;
            // Never write at or past the source size (a raw image's last block may be partial).
            let keep = hdr.source_size.saturating_sub(offset).min(len as u64) as usize;
            tgt.write_at(&out[pos..pos + keep], offset)?;
            pos += len;
        }
        // Start writing this chunk's span to disk now rather than all at the final fsync.
        let span = (c.end_block - c.first_block) * bs;
        crate::source::start_writeback(tgt.file(), c.first_block * bs, span);
        progress.advance((c.blocks + c.zero_blocks) * bs);
        Ok(ChunkDone {
            seq: rec.header.seq,
            first_block: c.first_block,
            end_block: c.end_block,
            blocks: c.blocks,
            zero_blocks: c.zero_blocks,
            cleared,
        })
    })
}

/// Zeroes or discards blocks `[from, to)` as `free` (already [`FreeSpace::for_image`]) says.
fn clear(tgt: &Target, hdr: &Header, free: FreeSpace, from: u64, to: u64) -> Result<u64, Error> {
    if from >= to {
        return Ok(0);
    }
    let bs = u64::from(hdr.block_size);
    let offset = from * bs;
    let len = (to * bs).min(hdr.source_size).saturating_sub(offset);
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

/// The written chunks in sequence order (workers finish them in any order).
fn in_order(mut spans: Vec<ChunkDone>) -> Vec<ChunkDone> {
    spans.sort_unstable_by_key(|s| s.seq);
    spans
}

/// Clears the gaps between chunks (given in order, ascending and disjoint) and after the
/// last, fsyncs, and reports.
fn finish(
    path: &Path,
    hdr: &Header,
    spans: Vec<ChunkDone>,
    tgt: &Target,
    free: FreeSpace,
    target_before: Identity,
) -> Result<RestoreReport, Error> {
    let mut cleared: u64 = spans.iter().map(|s| s.cleared).sum();
    let mut prev_end = 0;
    for s in &spans {
        cleared += clear(tgt, hdr, free, prev_end, s.first_block)?;
        prev_end = s.end_block;
    }
    cleared += clear(tgt, hdr, free, prev_end, hdr.total_blocks)?;
    tgt.sync()?;
    let blocks: u64 = spans.iter().map(|s| s.blocks).sum();
    let blocks_zeroed: u64 = spans.iter().map(|s| s.zero_blocks).sum();
    Ok(RestoreReport {
        image: path.to_path_buf(),
        target: tgt.path().to_path_buf(),
        header: hdr.clone(),
        chunks: spans.len() as u64,
        blocks_written: blocks,
        bytes_written: blocks * u64::from(hdr.block_size),
        bytes_cleared: cleared,
        blocks_zeroed,
        free_space: free,
        target_before,
    })
}
