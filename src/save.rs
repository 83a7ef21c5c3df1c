//! save: source → used extents → chunks → parallel compression → ordered write → finalize.
//!
//! One thread reads the source in extent order and forms chunks; a rayon pool compresses them
//! (one reusable zstd context per worker); one thread writes them in sequence order. A bounded
//! channel between reader and writer keeps a few chunks per thread in flight, whatever the size
//! of the source. A file destination is written under a temporary name, fsynced and renamed, so
//! nothing ever appears under the final name unless it is complete.

use std::cell::RefCell;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::Error;
use crate::atomic::AtomicFile;
use crate::error::IoError;
use crate::fs::raw::RawLayout;
use crate::fs::{
    self, CrossCheck, Extent, ExtentIter, FsInfo, FsType, ScanError, ScanOptions, UsedBlocks,
};
use crate::guard::{self, Access, check_not_mounted};
use crate::image::chunk::{ChunkExtent, EncodedChunk, ZERO_EXTENT, compressor, encode_chunk};
use crate::image::header::{FLAG_FORCED_UNCLEAN, Header};
use crate::image::writer::{ImageWriter, WriteSummary};
use crate::image::{
    Compression, MAX_CHUNK_EXTENTS, MAX_CHUNK_RAW, MIN_CHUNK_TARGET, Unstored, Version,
};
use crate::pool::{resolve_threads, worker_pool};
use crate::progress::Progress;
use crate::source::{Device, ReadAt, stdio_file};

/// How to save.
#[derive(Clone, Debug)]
pub struct SaveOptions {
    /// zstd level (1..=22).
    pub level: i32,
    /// Compression threads; 0 means one per CPU.
    pub threads: usize,
    /// Target uncompressed chunk size in bytes (rounded up to whole blocks).
    pub chunk_size: u32,
    /// Image an unclean filesystem anyway (and tolerate metadata checksum errors).
    pub force: bool,
    /// Image raw even when the source is ext2/3/4.
    pub raw: bool,
    /// Replace an existing image file.
    pub overwrite: bool,
    /// Check the allocation maps against the files even when the filesystem is clean (always
    /// done when it is not, and with `force`), and copy what they miss.
    pub thorough: bool,
}

impl Default for SaveOptions {
    fn default() -> Self {
        Self {
            level: 3,
            threads: 0,
            chunk_size: 4 << 20,
            force: false,
            raw: false,
            overwrite: false,
            thorough: false,
        }
    }
}

/// Where the image goes.
#[derive(Clone, Debug)]
pub enum Destination {
    /// A file, written atomically (temporary name, fsync, rename, fsync of the directory).
    File(PathBuf),
    /// Standard output.
    Stdout,
}

/// What a save did.
#[derive(Clone, Debug, Serialize)]
pub struct SaveReport {
    /// The source.
    pub source: PathBuf,
    /// The image path, or "-".
    pub image: String,
    /// The image header.
    pub header: Header,
    /// Chunks written.
    pub chunks: u64,
    /// Blocks stored.
    pub stored_blocks: u64,
    /// Used blocks not stored because their contents never mattered (unused inode tables);
    /// restore writes zeros there.
    pub zero_blocks: u64,
    /// Uncompressed bytes stored.
    pub stored_bytes: u64,
    /// Bytes read from the source.
    pub read_bytes: u64,
    /// Size of the image.
    pub image_bytes: u64,
    /// Whole-image digest, hex.
    pub digest: String,
    /// What the scan added or could not read (e.g. blocks a pending journal marks used).
    pub notes: Vec<String>,
}

/// Saves `source` into an image.
///
/// # Errors
/// Refusals (unclean filesystem without `--force`, existing image without `--overwrite`), ext
/// scanning errors, read errors naming the source offset, write errors naming the image.
/// On error a file destination is removed; nothing is left under its name.
pub fn save(
    source: &Path,
    dest: &Destination,
    opts: &SaveOptions,
    progress: &dyn Progress,
) -> Result<SaveReport, Error> {
    match dest {
        Destination::File(image) => {
            guard::check_image_path(image, "rimage save SOURCE IMAGE")?;
            guard::check_distinct(image, source)?;
        }
        Destination::Stdout => guard::check_not_terminal(false)?,
    }
    let dev = Device::open(source)?;
    check_not_mounted(source, Access::Read { force: opts.force }, progress)?;
    save_device(&dev, dest, opts, progress)
}

/// Saves an opened device (or a window of one: a partition read through its disk). The caller
/// has checked that it is not mounted read-write.
///
/// # Errors
/// As [`save`].
pub fn save_device(
    dev: &Device,
    dest: &Destination,
    opts: &SaveOptions,
    progress: &dyn Progress,
) -> Result<SaveReport, Error> {
    let prepared = prepare(dev, opts, progress)?;
    write_image(&prepared, dest, opts, progress, |_| Ok(()))
}

/// Writes the image of `prepared` to `dest`. `before_commit` runs once every chunk is written
/// and the image is complete (with the temporary file's path, for a file destination), before
/// it appears under its name: an error there leaves nothing behind.
///
/// # Errors
/// As [`save`], and whatever `before_commit` returns.
pub(crate) fn write_image(
    prepared: &Prepared<'_>,
    dest: &Destination,
    opts: &SaveOptions,
    progress: &dyn Progress,
    before_commit: impl FnOnce(Option<&Path>) -> Result<(), Error>,
) -> Result<SaveReport, Error> {
    match dest {
        Destination::File(path) => {
            let summary = write_file(
                path,
                &prepared.header,
                opts.overwrite,
                |w| pipeline(prepared, opts, w, path, progress),
                before_commit,
            )?;
            Ok(prepared.report(summary, path.display().to_string()))
        }
        Destination::Stdout => {
            let stdout = Path::new("<stdout>");
            let out =
                BufWriter::with_capacity(1 << 20, stdio_file(rustix::stdio::stdout(), stdout)?);
            let (_, report) = save_prepared_to(prepared, out, stdout, opts, progress)?;
            before_commit(None)?;
            Ok(report)
        }
    }
}

/// A source scanned and checked, with the header its image will have: what a save knows
/// before it writes anything (a disk stream puts every image's size in its manifest first).
/// A device scanned by `fs::probe` is one; an imported partclone image is another (its blocks
/// arrive as a stream, its used set from the imported bitmap).
pub struct Prepared<'a> {
    /// Where blocks are read by position (ascending, for a stream).
    pub(crate) src: &'a dyn ReadAt,
    /// The source's name in messages and the report.
    pub(crate) name: &'a Path,
    /// The used blocks.
    pub(crate) scan: Box<dyn UsedBlocks + 'a>,
    /// The image header.
    pub header: Header,
    /// What the scan noted.
    pub notes: Vec<String>,
}

impl Prepared<'_> {
    fn report(&self, summary: WriteSummary, image: String) -> SaveReport {
        let bs = u64::from(self.header.block_size);
        SaveReport {
            source: self.name.to_path_buf(),
            image,
            chunks: summary.chunks,
            stored_blocks: summary.stored_blocks,
            zero_blocks: summary.zero_blocks,
            stored_bytes: summary.stored_blocks * bs,
            // Zero extents (unused inode tables) are not read.
            read_bytes: (self.header.used_blocks - summary.zero_blocks) * bs,
            image_bytes: summary.image_bytes,
            digest: format!("{:032x}", summary.digest),
            header: self.header.clone(),
            notes: self.notes.clone(),
        }
    }
}

/// Checks the options, scans the source and checks its state.
///
/// # Errors
/// As [`save`], before anything is written.
pub fn prepare<'a>(
    dev: &'a Device,
    opts: &SaveOptions,
    progress: &dyn Progress,
) -> Result<Prepared<'a>, Error> {
    if !(1..=22).contains(&opts.level) {
        return Err(Error::Usage(format!(
            "zstd level {} is out of range (1 to 22)",
            opts.level
        )));
    }
    if !(MIN_CHUNK_TARGET..=MAX_CHUNK_RAW).contains(&opts.chunk_size) {
        return Err(Error::Usage(format!(
            "chunk size {} is out of range (64 KiB to 64 MiB)",
            opts.chunk_size
        )));
    }
    let source = dev.path();
    let scan: Box<dyn UsedBlocks> = if opts.raw {
        Box::new(RawLayout::new(dev.size_bytes()))
    } else {
        let scan_opts = ScanOptions {
            verify_checksums: !opts.force,
            cross_check: if opts.force || opts.thorough {
                CrossCheck::Always
            } else {
                CrossCheck::IfUnclean
            },
        };
        fs::probe(dev, scan_opts).map_err(|e| {
            if e.is_io() {
                return Error::scan(source, e);
            }
            let hint = if opts.force {
                "even --force cannot read its allocation maps; --raw images it block by block"
            } else {
                "repair it, or pass --force to image what can be read (checksum errors tolerated), or --raw to image it block by block"
            };
            Error::refused(source, format!("{e}: {hint}"))
        })?
    };
    progress.start("scanning", 0);
    let info = scan.info(dev).map_err(|e| Error::scan(source, e))?;
    progress.finish();
    let notes = scan.notes();
    let flags = check_state(source, &info, opts.force, progress)?;
    let header = make_header(&info, dev, opts, flags);
    Ok(Prepared {
        src: dev,
        name: dev.path(),
        scan,
        header,
        notes,
    })
}

/// Writes the image of a prepared source to `w` (a pipe, a disk stream), named `name` in
/// messages; returns the writer and the report.
///
/// # Errors
/// As [`save`].
pub fn save_prepared_to<W: Write + Send>(
    prepared: &Prepared<'_>,
    w: W,
    name: &Path,
    opts: &SaveOptions,
    progress: &dyn Progress,
) -> Result<(W, SaveReport), Error> {
    let w = ImageWriter::new(w, &prepared.header)
        .map_err(|e| IoError::new(name, "write", Some(0), e))?;
    let (w, summary) = pipeline(prepared, opts, w, name, progress)?;
    Ok((w, prepared.report(summary, "-".to_string())))
}

/// Refuses a filesystem that is not clean unless forced; returns the header flags.
fn check_state(
    source: &Path,
    info: &FsInfo,
    force: bool,
    progress: &dyn Progress,
) -> Result<u32, Error> {
    if info.fs_type == FsType::Raw {
        return Ok(0);
    }
    let why = info.state.problems();
    if why.is_empty() {
        return Ok(0);
    }
    let why = why.join(", ");
    if !force {
        let repair = info
            .fs_type
            .repair_command(source)
            .map_or_else(String::new, |c| format!(" and run `{c}`"));
        return Err(Error::refused(
            source,
            format!(
                "the filesystem {why}. Unmount it{repair}, or pass --force to image it as it is"
            ),
        ));
    }
    progress.note(&format!(
        "{}: the filesystem {why}; imaging it anyway (--force)",
        source.display()
    ));
    Ok(FLAG_FORCED_UNCLEAN)
}

fn make_header(info: &FsInfo, dev: &Device, opts: &SaveOptions, flags: u32) -> Header {
    let bs = info.block_size;
    Header {
        version: Version::CURRENT,
        source_type: info.fs_type,
        compression: Compression::Zstd,
        unstored: if info.fs_type == FsType::Raw {
            Unstored::Zero
        } else {
            Unstored::Free
        },
        block_size: bs,
        chunk_target: opts.chunk_size.div_ceil(bs) * bs,
        total_blocks: info.total_blocks,
        used_blocks: info.used_blocks,
        // An ext filesystem may be smaller than its partition; only its blocks are the source.
        source_size: if info.fs_type == FsType::Raw {
            dev.size_bytes()
        } else {
            info.total_blocks * u64::from(bs)
        },
        uuid: info.uuid.unwrap_or_default(),
        label: info.label.clone(),
        created: crate::image::header::now(),
        level: opts.level,
        flags,
        writer: crate::WRITER.to_string(),
    }
}

/// Writes an image file atomically (see [`AtomicFile`]).
fn write_file(
    path: &Path,
    header: &Header,
    overwrite: bool,
    body: impl FnOnce(
        ImageWriter<BufWriter<StreamedFile<'_>>>,
    ) -> Result<(BufWriter<StreamedFile<'_>>, WriteSummary), Error>,
    before_commit: impl FnOnce(Option<&Path>) -> Result<(), Error>,
) -> Result<WriteSummary, Error> {
    let out = AtomicFile::create(path, overwrite)?;
    let tmp_path = out.temp_path().to_path_buf();
    let summary = {
        let file = BufWriter::with_capacity(
            1 << 20,
            StreamedFile {
                file: out.file(),
                pos: 0,
                kicked: 0,
                dropped: 0,
            },
        );
        let w = ImageWriter::new(file, header)
            .map_err(|e| IoError::new(&tmp_path, "write", Some(0), e))?;
        let (file, summary) = body(w)?;
        file.into_inner()
            .map_err(|e| IoError::new(&tmp_path, "write", None, e.into_error()))?;
        summary
    };
    before_commit(Some(&tmp_path))?;
    out.commit()?;
    Ok(summary)
}

/// How much is written between writeback kicks.
const WRITEBACK_WINDOW: u64 = 64 << 20;

/// The image file as the writer sees it: every [`WRITEBACK_WINDOW`] bytes it starts writeback
/// of what was just written and drops the window before that from the page cache once it is on
/// disk. A long save then neither stalls at the final fsync nor fills memory with the image.
struct StreamedFile<'a> {
    file: &'a File,
    pos: u64,
    /// Writeback was started for everything before this.
    kicked: u64,
    /// Everything before this is on disk and out of the page cache.
    dropped: u64,
}

impl Write for StreamedFile<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = (&mut &*self.file).write(buf)?;
        self.pos += n as u64;
        if self.pos - self.kicked >= WRITEBACK_WINDOW {
            crate::sys::start_writeback(self.file, self.kicked, self.pos - self.kicked);
            crate::sys::drop_written(self.file, self.dropped, self.kicked - self.dropped);
            self.dropped = self.kicked;
            self.kicked = self.pos;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Buffers handed back and forth between stages instead of being reallocated per chunk.
#[derive(Default)]
struct BufferPool(Mutex<Vec<Vec<u8>>>);

impl BufferPool {
    fn get(&self) -> Vec<u8> {
        self.0.lock().expect("pool lock").pop().unwrap_or_default()
    }

    fn put(&self, buf: Vec<u8>) {
        self.0.lock().expect("pool lock").push(buf);
    }
}

/// Uncompressed blocks of one chunk.
struct RawChunk {
    seq: u64,
    extents: Vec<ChunkExtent>,
    data: Vec<u8>,
    filled: usize,
}

/// Used extents cut into data pieces and zero pieces (the blocks the scan says must read as
/// zeros but need not be copied: unused inode tables), in block order.
struct Pieces<'a> {
    extents: ExtentIter<'a>,
    /// Sorted, disjoint; consumed from the front.
    zeros: &'a [Extent],
    pending: Option<Extent>,
}

impl Iterator for Pieces<'_> {
    type Item = Result<ChunkExtent, ScanError>;

    fn next(&mut self) -> Option<Self::Item> {
        let ext = match self.pending.take() {
            Some(e) => e,
            None => match self.extents.next()? {
                Ok(e) => e,
                Err(e) => return Some(Err(e)),
            },
        };
        while self.zeros.first().is_some_and(|z| z.end() <= ext.start) {
            self.zeros = &self.zeros[1..];
        }
        let (len, zero) = match self.zeros.first() {
            Some(z) if z.start <= ext.start => (z.end().min(ext.end()) - ext.start, true),
            Some(z) if z.start < ext.end() => (z.start - ext.start, false),
            _ => (ext.len, false),
        };
        // Extent lengths in a record are below 2^31 blocks.
        let len = len.min(u64::from(ZERO_EXTENT - 1));
        if len < ext.len {
            self.pending = Some(Extent {
                start: ext.start + len,
                len: ext.len - len,
            });
        }
        Some(Ok(ChunkExtent {
            extent: Extent {
                start: ext.start,
                len,
            },
            zero,
        }))
    }
}

/// Reads used extents into chunks of about the target size, in block order.
struct Chunker<'a> {
    src: &'a dyn ReadAt,
    /// The source's name in messages.
    name: &'a Path,
    pieces: Pieces<'a>,
    pending: Option<ChunkExtent>,
    bs: u64,
    target: usize,
    zero_skip: bool,
    source_size: u64,
    seq: u64,
    pool: Arc<BufferPool>,
    /// Most extents per chunk ([`MAX_CHUNK_EXTENTS`]; smaller in tests).
    max_extents: usize,
    /// Where blocks that should read as zeros are read to be checked.
    scratch: Vec<u8>,
}

/// Bytes of blocks that should read as zeros checked at a time.
const ZERO_CHECK_WINDOW: usize = 1 << 20;

fn data_extent(start: u64, len: u64) -> ChunkExtent {
    ChunkExtent {
        extent: Extent { start, len },
        zero: false,
    }
}

fn zero_extent(start: u64, len: u64) -> ChunkExtent {
    ChunkExtent {
        extent: Extent { start, len },
        zero: true,
    }
}

impl Chunker<'_> {
    fn next_chunk(&mut self, progress: &dyn Progress) -> Result<Option<RawChunk>, Error> {
        crate::interrupt::check()?;
        let bs = self.bs as usize;
        let mut data = self.pool.get();
        data.resize(self.target, 0);
        let mut filled = 0usize;
        let mut extents: Vec<ChunkExtent> = Vec::new();
        while filled < self.target && extents.len() < self.max_extents {
            let piece = match self.pending.take() {
                Some(p) => p,
                None => match self.pieces.next() {
                    Some(p) => p.map_err(|e| Error::scan(self.name, e))?,
                    None => break,
                },
            };
            let ext = piece.extent;
            // Blocks that should read as zeros are read and checked: a zero block becomes a
            // zero extent, any other is stored (a descriptor that wrongly calls inodes unused
            // must not cost their contents).
            let handled = if piece.zero {
                self.check_zeros(ext, &mut data, &mut filled, &mut extents)?
            } else {
                let room = ((self.target - filled) / bs) as u64;
                let mut n = ext.len.min(room);
                if self.zero_skip {
                    // Each kept block can start an extent.
                    n = n.min((self.max_extents - extents.len()) as u64);
                }
                let buf = &mut data[filled..filled + n as usize * bs];
                self.read_blocks(ext.start, buf)?;
                if self.zero_skip {
                    let mut kept = 0usize;
                    for i in 0..n as usize {
                        let block = i * bs;
                        if is_zero(&buf[block..block + bs]) {
                            continue;
                        }
                        if kept != i {
                            buf.copy_within(block..block + bs, kept * bs);
                        }
                        kept += 1;
                        push_merged(&mut extents, data_extent(ext.start + i as u64, 1));
                    }
                    filled += kept * bs;
                } else {
                    push_merged(&mut extents, data_extent(ext.start, n));
                    filled += buf.len();
                }
                n
            };
            progress.advance(handled * self.bs);
            if handled < ext.len {
                self.pending = Some(ChunkExtent {
                    extent: Extent {
                        start: ext.start + handled,
                        len: ext.len - handled,
                    },
                    zero: piece.zero,
                });
            }
        }
        if extents.is_empty() {
            self.pool.put(data);
            return Ok(None);
        }
        let seq = self.seq;
        self.seq += 1;
        Ok(Some(RawChunk {
            seq,
            extents,
            data,
            filled,
        }))
    }

    /// Handles the start of `ext`, blocks that should read as zeros: a window of them is read
    /// (unless the source knows it is a hole), zero blocks become zero extents and the others
    /// data, while the chunk has room. Returns how many blocks were handled.
    fn check_zeros(
        &mut self,
        ext: Extent,
        data: &mut [u8],
        filled: &mut usize,
        extents: &mut Vec<ChunkExtent>,
    ) -> Result<u64, Error> {
        let bs = self.bs as usize;
        // Each block can start an extent; one more may be needed to end a run.
        let room_extents = (self.max_extents - extents.len()).saturating_sub(1).max(1);
        let n = ext
            .len
            .min((ZERO_CHECK_WINDOW / bs) as u64)
            .min(room_extents as u64);
        if self.src.known_zero(ext.start * self.bs, n * self.bs) {
            push_merged(extents, zero_extent(ext.start, n));
            return Ok(n);
        }
        let mut window = std::mem::take(&mut self.scratch);
        window.resize(n as usize * bs, 0);
        let read = self.read_blocks(ext.start, &mut window);
        let mut handled = 0;
        if read.is_ok() {
            for (i, block) in window.chunks_exact(bs).enumerate() {
                let at = ext.start + i as u64;
                if is_zero(block) {
                    push_merged(extents, zero_extent(at, 1));
                } else if *filled + bs <= data.len() {
                    data[*filled..*filled + bs].copy_from_slice(block);
                    *filled += bs;
                    push_merged(extents, data_extent(at, 1));
                } else {
                    break;
                }
                handled += 1;
            }
        }
        self.scratch = window;
        read.map(|()| handled)
    }

    /// Reads whole blocks from `start`; a last partial block past the source size reads as zeros.
    /// A failed read is retried block by block so that the error names the first bad block.
    fn read_blocks(&self, start: u64, buf: &mut [u8]) -> Result<(), Error> {
        let offset = start * self.bs;
        let avail = self
            .source_size
            .saturating_sub(offset)
            .min(buf.len() as u64) as usize;
        let read = |buf: &mut [u8], at: u64| {
            self.src
                .read_exact_at(buf, at)
                .map_err(|e| IoError::new(self.name, "read", Some(at), e))
        };
        if let Err(e) = read(&mut buf[..avail], offset) {
            let bs = self.bs as usize;
            for (i, block) in buf[..avail].chunks_mut(bs).enumerate() {
                read(block, offset + (i * bs) as u64)?;
            }
            // The whole read failed but no single block does: report the whole read.
            return Err(e.into());
        }
        buf[avail..].fill(0);
        Ok(())
    }
}

/// Appends `e`, extending the last extent instead when it is of the same kind, adjacent, and
/// the sum stays below the record's length limit.
fn push_merged(extents: &mut Vec<ChunkExtent>, e: ChunkExtent) {
    match extents.last_mut() {
        Some(last)
            if last.zero == e.zero
                && last.extent.end() == e.extent.start
                && last.extent.len + e.extent.len < u64::from(ZERO_EXTENT) =>
        {
            last.extent.len += e.extent.len
        }
        _ => extents.push(e),
    }
}

/// Whether a block is all zeros (64 bytes at a time, which the compiler vectorises).
fn is_zero(block: &[u8]) -> bool {
    block
        .chunks(64)
        .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

thread_local! {
    /// One zstd context per compression worker, kept across chunks (and saves at the same level).
    static CCTX: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

fn compress(
    raw: &RawChunk,
    level: i32,
    block_size: u32,
    payloads: &BufferPool,
) -> Result<EncodedChunk, Error> {
    CCTX.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((
                level,
                compressor(level).map_err(|e| Error::Internal(format!("zstd: {e}")))?,
            ));
        }
        let (_, cctx) = slot.as_mut().expect("just set");
        encode_chunk(
            raw.seq,
            &raw.extents,
            &raw.data[..raw.filled],
            block_size,
            cctx,
            payloads.get(),
        )
        .map_err(|e| Error::Internal(format!("zstd: {e}")))
    })
}

/// Reads, compresses in parallel, writes in order.
fn pipeline<W: Write + Send>(
    prepared: &Prepared<'_>,
    opts: &SaveOptions,
    writer: ImageWriter<W>,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<(W, WriteSummary), Error> {
    let (dev, scan, header) = (prepared.src, prepared.scan.as_ref(), &prepared.header);
    let threads = resolve_threads(opts.threads);
    let pool = worker_pool(threads, "zstd")?;
    let raw_buffers = Arc::new(BufferPool::default());
    let payloads = Arc::new(BufferPool::default());
    let bs = u64::from(header.block_size);
    let mut chunker = Chunker {
        src: dev,
        name: prepared.name,
        pieces: Pieces {
            extents: scan.extents(dev),
            zeros: scan.zero_extents(),
            pending: None,
        },
        pending: None,
        bs,
        target: header.chunk_target as usize,
        zero_skip: header.unstored == Unstored::Zero,
        source_size: header.source_size,
        seq: 0,
        pool: Arc::clone(&raw_buffers),
        max_extents: MAX_CHUNK_EXTENTS as usize,
        scratch: Vec::new(),
    };
    // A few chunks per thread in flight: enough to keep every worker busy while the writer
    // waits for the oldest, bounded whatever the source size.
    let window = threads * 2 + 2;
    let (order_tx, order_rx) = sync_channel::<Receiver<Result<EncodedChunk, Error>>>(window);
    progress.start("saving", header.used_blocks * bs);

    let (read_result, writer) = std::thread::scope(|s| {
        let writer_payloads = Arc::clone(&payloads);
        let writer_thread = s.spawn(move || -> Result<ImageWriter<W>, Error> {
            let mut writer = writer;
            for rx in order_rx {
                let chunk = rx
                    .recv()
                    .map_err(|_| Error::Internal("a compression worker stopped".into()))??;
                let at = writer.position();
                writer
                    .write_chunk(&chunk)
                    .map_err(|e| IoError::new(dest, "write", Some(at), e))?;
                writer_payloads.put(chunk.payload);
            }
            Ok(writer)
        });
        let read_result = (|| -> Result<(), Error> {
            while let Some(raw) = chunker.next_chunk(progress)? {
                let (tx, rx) = sync_channel(1);
                if order_tx.send(rx).is_err() {
                    // The writer stopped; its error is the one to report.
                    return Ok(());
                }
                let level = opts.level;
                let block_size = header.block_size;
                let (raw_buffers, payloads) = (Arc::clone(&raw_buffers), Arc::clone(&payloads));
                pool.spawn(move || {
                    let result = compress(&raw, level, block_size, &payloads);
                    raw_buffers.put(raw.data);
                    let _ = tx.send(result);
                });
            }
            Ok(())
        })();
        drop(order_tx);
        (
            read_result,
            writer_thread.join().expect("writer thread panicked"),
        )
    });
    let writer = writer?;
    read_result?;
    progress.finish();
    let at = writer.position();
    writer
        .finish()
        .map_err(|e| Error::Io(IoError::new(dest, "write", Some(at), e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;

    fn ext(start: u64, len: u64) -> Extent {
        Extent { start, len }
    }

    fn pieces(extents: Vec<Extent>, zeros: &[Extent]) -> Vec<(u64, u64, bool)> {
        Pieces {
            extents: Box::new(extents.into_iter().map(Ok)),
            zeros,
            pending: None,
        }
        .map(|p| {
            let p = p.unwrap();
            (p.extent.start, p.extent.len, p.zero)
        })
        .collect()
    }

    #[test]
    fn zero_extents_split_the_used_extents_they_fall_in() {
        let zeros = [ext(10, 10), ext(50, 10), ext(95, 20), ext(200, 5)];
        assert_eq!(
            pieces(vec![ext(0, 100), ext(120, 10)], &zeros),
            vec![
                (0, 10, false),
                (10, 10, true),
                (20, 30, false),
                (50, 10, true),
                (60, 35, false),
                (95, 5, true),
                (120, 10, false),
            ]
        );
        // A zero extent covering a whole used extent, and one starting before it.
        assert_eq!(
            pieces(vec![ext(10, 5), ext(30, 10)], &[ext(5, 15), ext(25, 8)]),
            vec![(10, 5, true), (30, 3, true), (33, 7, false)]
        );
        assert_eq!(pieces(vec![ext(0, 8)], &[]), vec![(0, 8, false)]);
    }

    /// Chunks of `src` (blocks of `bs` bytes) as (extents, data).
    #[allow(clippy::ptr_arg)] // a Vec is a sized ReadAt
    fn chunks(
        src: &Vec<u8>,
        bs: u64,
        extents: Vec<Extent>,
        zeros: &[Extent],
        target: usize,
        zero_skip: bool,
        max_extents: usize,
    ) -> Vec<(Vec<ChunkExtent>, Vec<u8>)> {
        let mut c = Chunker {
            src,
            name: Path::new("test"),
            pieces: Pieces {
                extents: Box::new(extents.into_iter().map(Ok)),
                zeros,
                pending: None,
            },
            pending: None,
            bs,
            target,
            zero_skip,
            source_size: src.len() as u64,
            seq: 0,
            pool: Arc::default(),
            max_extents,
            scratch: Vec::new(),
        };
        let mut out = Vec::new();
        while let Some(raw) = c.next_chunk(&NoProgress).unwrap() {
            assert_eq!(raw.seq, out.len() as u64);
            out.push((raw.extents, raw.data[..raw.filled].to_vec()));
        }
        out
    }

    /// Every data block of every chunk equals the source block it names.
    fn check_data(src: &[u8], bs: usize, chunks: &[(Vec<ChunkExtent>, Vec<u8>)]) {
        for (extents, data) in chunks {
            let mut at = 0;
            for e in extents.iter().filter(|e| !e.zero) {
                let n = e.extent.len as usize * bs;
                let from = e.extent.start as usize * bs;
                assert_eq!(&data[at..at + n], &src[from..from + n]);
                at += n;
            }
            assert_eq!(at, data.len(), "data holds exactly the data extents");
        }
    }

    #[test]
    fn chunks_fill_to_the_target_and_keep_zero_extents_unread() {
        let bs = 512u64;
        let mut src: Vec<u8> = (0..64 * 512).map(|i| (i / 512 + 1) as u8).collect();
        // The blocks expected to read as zeros do.
        src[4 * 512..8 * 512].fill(0);
        let got = chunks(
            &src,
            bs,
            vec![ext(0, 40), ext(50, 10)],
            &[ext(4, 4)],
            8 * 512,
            false,
            MAX_CHUNK_EXTENTS as usize,
        );
        check_data(&src, 512, &got);
        let data_blocks: Vec<u64> = got
            .iter()
            .map(|(e, _)| e.iter().filter(|e| !e.zero).map(|e| e.extent.len).sum())
            .collect();
        // 36 + 10 data blocks in chunks of at most 8; the zero extent costs no data.
        assert_eq!(data_blocks, vec![8, 8, 8, 8, 8, 6]);
        assert_eq!(
            got[0].0,
            vec![
                ChunkExtent {
                    extent: ext(0, 4),
                    zero: false
                },
                ChunkExtent {
                    extent: ext(4, 4),
                    zero: true
                },
                ChunkExtent {
                    extent: ext(8, 4),
                    zero: false
                },
            ]
        );
        // The chunk that crosses the gap holds both extents.
        assert_eq!(got[4].0.len(), 2);
    }

    #[test]
    fn blocks_expected_to_be_zero_are_stored_when_they_are_not() {
        let bs = 512usize;
        let mut src = vec![0u8; 64 * bs];
        // An "unused" inode table of 20 blocks whose blocks 3 and 11..13 hold data (a
        // descriptor that undercounts its inodes).
        for b in [3usize, 11, 12, 13] {
            src[(20 + b) * bs..(21 + b) * bs].fill(0xEE);
        }
        src[..20 * bs].fill(1);
        let got = chunks(
            &src,
            512,
            vec![ext(0, 40)],
            &[ext(20, 20)],
            1 << 20,
            false,
            1000,
        );
        check_data(&src, bs, &got);
        let all: Vec<(u64, u64, bool)> = got
            .iter()
            .flat_map(|(e, _)| e.iter().map(|e| (e.extent.start, e.extent.len, e.zero)))
            .collect();
        assert_eq!(
            all,
            vec![
                (0, 20, false),
                (20, 3, true),
                (23, 1, false),
                (24, 7, true),
                (31, 3, false),
                (34, 6, true),
            ]
        );
        // With a small chunk the data still all arrives, in several chunks.
        let small = chunks(
            &src,
            512,
            vec![ext(0, 40)],
            &[ext(20, 20)],
            4 * bs,
            false,
            1000,
        );
        check_data(&src, bs, &small);
        let data: u64 = small
            .iter()
            .flat_map(|(e, _)| e.iter().filter(|e| !e.zero).map(|e| e.extent.len))
            .sum();
        let zero: u64 = small
            .iter()
            .flat_map(|(e, _)| e.iter().filter(|e| e.zero).map(|e| e.extent.len))
            .sum();
        assert_eq!((data, zero), (24, 16));
    }

    #[test]
    fn raw_mode_skips_zero_blocks_and_respects_the_extent_limit() {
        let bs = 512usize;
        // Every other block is zero: each kept block is an extent of its own.
        let mut src = vec![0u8; 100 * bs];
        for b in (0..100).step_by(2) {
            src[b * bs..(b + 1) * bs].fill(0xA5);
        }
        let got = chunks(&src, 512, vec![ext(0, 100)], &[], 1 << 20, true, 7);
        check_data(&src, bs, &got);
        assert!(got.iter().all(|(e, _)| e.len() <= 7), "extent limit held");
        let kept: u64 = got
            .iter()
            .flat_map(|(e, _)| e.iter().map(|e| e.extent.len))
            .sum();
        assert_eq!(kept, 50, "every non-zero block and no zero block");
        assert_eq!(got.len(), 50usize.div_ceil(7));
    }

    #[test]
    fn a_partial_last_block_reads_as_zeros_past_the_source() {
        let mut src = vec![7u8; 4096 + 100];
        src[4096..].fill(9);
        let got = chunks(&src, 4096, vec![ext(0, 2)], &[], 1 << 20, true, 64);
        assert_eq!(got.len(), 1);
        let (_, data) = &got[0];
        assert_eq!(data.len(), 2 * 4096);
        assert!(data[4096..4196].iter().all(|&b| b == 9));
        assert!(data[4196..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_read_error_names_the_first_bad_block() {
        struct Bad;
        impl ReadAt for Bad {
            fn size(&self) -> u64 {
                16 * 512
            }
            fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
                let bad = 5 * 512;
                if offset <= bad && bad < offset + buf.len() as u64 {
                    return Err(std::io::Error::other("bad sector"));
                }
                buf.fill(1);
                Ok(())
            }
        }
        let mut c = Chunker {
            src: &Bad,
            name: Path::new("/dev/bad"),
            pieces: Pieces {
                extents: Box::new(std::iter::once(Ok(ext(0, 16)))),
                zeros: &[],
                pending: None,
            },
            pending: None,
            bs: 512,
            target: 1 << 20,
            zero_skip: false,
            source_size: 16 * 512,
            seq: 0,
            pool: Arc::default(),
            max_extents: 64,
            scratch: Vec::new(),
        };
        let err = c.next_chunk(&NoProgress).err().expect("read fails");
        assert!(
            err.to_string()
                .contains("/dev/bad: read at byte offset 2560"),
            "{err}"
        );
    }
}
