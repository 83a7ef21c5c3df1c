//! import: images made by other imagers, turned into ordinary rimage images.
//!
//! [`partclone`] decodes partclone's format (bytes only), [`input`] opens what Clonezilla
//! stores (split pieces, compression), [`clonezilla`] reads a Clonezilla image directory into a
//! save-disk directory. The conversion runs the save pipeline unchanged
//! ([`crate::save::write_image`]): the used set is partclone's bitmap (a [`UsedBlocks`]), and the
//! blocks are read through [`StreamSource`], a [`ReadAt`] that serves the pipeline's ascending
//! reads from the partclone stream, checking every checksum as the data passes.

pub mod clonezilla;
pub mod input;
pub mod partclone;

use std::cell::RefCell;
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

pub use partclone::ImportError;

use crate::Error;
use crate::error::IoError;
use crate::fs::{
    CrossCheck, Extent, ExtentIter, FsInfo, FsState, FsType, Identity, ScanError, ScanOptions,
    UsedBlocks,
};
use crate::image::header::Header;
use crate::image::{Compression as ImageCompression, Unstored, Version};
use crate::progress::Progress;
use crate::save::{Destination, Prepared, SaveOptions, SaveReport, write_image};
use crate::source::{Device, ReadAt};
use partclone::{Bitmap, BlockStream, Counted, Desc};

/// Bytes at the start of a partclone source read before the image is written: they hold every
/// superblock rimage identifies (ext at 1024, FAT at 0, swap in the first page).
const HEAD_BYTES: u64 = 64 << 10;
/// Bytes copied at a time from a raw (dd) input.
const RAW_PIECE: usize = 1 << 20;

/// What an imported file held.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Found {
    /// A partclone image.
    Partclone {
        /// Its descriptor.
        desc: Desc,
        /// Blocks its bitmap marks used (the header's count may differ).
        bitmap_used: u64,
    },
    /// Raw partition bytes (`*.dd-img`).
    Raw {
        /// Bytes.
        bytes: u64,
    },
}

/// What an import did.
#[derive(Clone, Debug, Serialize)]
pub struct ImportReport {
    /// The file named on the command line.
    pub input: PathBuf,
    /// The files read, in order (split pieces).
    pub pieces: Vec<PathBuf>,
    /// Their compression.
    pub compression: input::Compression,
    /// What they held.
    pub found: Found,
    /// What the filesystem is (from its superblock).
    pub filesystem: Identity,
    /// The image written.
    pub save: SaveReport,
}

/// Imports a partclone image file (or a Clonezilla `*.dd-img`: raw bytes) into a rimage image.
///
/// # Errors
/// An unreadable input, a corrupt partclone image ([`Error::Import`] naming the offset or
/// block), refusals of the destination. Nothing is left under the image's name on failure.
pub fn import_image(
    path: &Path,
    dest: &Path,
    opts: &SaveOptions,
    progress: &dyn Progress,
) -> Result<ImportReport, Error> {
    import_sized(path, dest, opts, None, progress)
}

/// As [`import_image`], for a partition of `size` bytes (a Clonezilla directory): the image
/// must fit in it, and a raw image is that long.
pub(crate) fn import_sized(
    path: &Path,
    dest: &Path,
    opts: &SaveOptions,
    size: Option<u64>,
    progress: &dyn Progress,
) -> Result<ImportReport, Error> {
    crate::guard::check_image_path(dest, "rimage import IMAGE OUT.rimg")?;
    let input = input::open(path)?;
    let mut reader = input.reader;
    let mut first = Vec::with_capacity(partclone::MAGIC.len());
    (&mut reader)
        .take(partclone::MAGIC.len() as u64)
        .read_to_end(&mut first)
        .map_err(|e| IoError::new(path, "read", Some(0), e))?;
    let stream = Cursor::new(first.clone()).chain(reader);
    let (found, filesystem, save) = if first == partclone::MAGIC {
        from_partclone(path, stream, dest, opts, size, progress)?
    } else if is_raw_name(path) {
        from_raw(path, stream, dest, opts, size, progress)?
    } else {
        return Err(Error::Import {
            path: path.to_path_buf(),
            source: ImportError::NotPartclone,
        });
    };
    Ok(ImportReport {
        input: path.to_path_buf(),
        pieces: input.pieces,
        compression: input.compression,
        found,
        filesystem,
        save,
    })
}

/// Clonezilla's names for raw partition bytes: `*.dd-img*` (dd) and `*.dd-ptcl-img*`
/// (partclone.dd).
pub fn is_raw_name(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains(".dd-img") || n.contains(".dd-ptcl-img"))
}

fn import_error(path: &Path) -> impl Fn(ImportError) -> Error + '_ {
    move |source| Error::Import {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether partclone's filesystem field names ext2/3/4 ("EXTFS", "EXT4", ...).
fn is_ext_field(fs: &str) -> bool {
    fs.to_ascii_uppercase().starts_with("EXT")
}

fn from_partclone<R: Read>(
    path: &Path,
    stream: R,
    dest: &Path,
    opts: &SaveOptions,
    size: Option<u64>,
    progress: &dyn Progress,
) -> Result<(Found, Identity, SaveReport), Error> {
    let err = import_error(path);
    let mut r = Counted::new(stream);
    let desc = partclone::read_desc(&mut r).map_err(&err)?;
    if let Some(size) = size
        && desc.fs_bytes() > size
    {
        return Err(Error::refused(
            path,
            format!(
                "its filesystem has {} bytes, more than the {size} bytes of its partition",
                desc.fs_bytes()
            ),
        ));
    }
    let bitmap = Arc::new(partclone::read_bitmap(&mut r, &desc).map_err(&err)?);
    let mut notes = Vec::new();
    if desc.used_blocks != bitmap.used() {
        notes.push(format!(
            "the partclone header counts {} used blocks, its bitmap {}: the bitmap's are imported",
            desc.used_blocks,
            bitmap.used()
        ));
    }
    if desc.device_size > desc.fs_bytes() {
        notes.push(format!(
            "the source device had {} bytes, its {} blocks {}: the bytes past the blocks were not in the partclone image",
            desc.device_size,
            desc.total_blocks,
            desc.fs_bytes()
        ));
    }
    let src =
        StreamSource::new(BlockStream::new(r, desc.clone(), Arc::clone(&bitmap))).map_err(&err)?;
    let identity = crate::fs::identify(&src.head_view());
    // An ext image's blocks must be the filesystem's own, or browsing would misread it.
    let ext_matches = identity.kind.is_ext() && identity.block_size == Some(desc.block_size);
    let source_type = if is_ext_field(&desc.fs) && ext_matches {
        identity.kind
    } else {
        if is_ext_field(&desc.fs) {
            notes.push(format!(
                "partclone calls it {} but rimage finds no ext superblock with its {}-byte blocks: imported raw",
                desc.fs, desc.block_size
            ));
        }
        FsType::Raw
    };
    let bs = desc.block_size;
    let info = FsInfo {
        fs_type: source_type,
        label: identity.label.clone().unwrap_or_default(),
        uuid: if source_type.is_ext() {
            identity.uuid.as_deref().and_then(|u| u.parse().ok())
        } else {
            None
        },
        block_size: bs,
        total_blocks: desc.total_blocks,
        used_blocks: bitmap.used(),
        state: FsState {
            clean: true,
            ..FsState::default()
        },
    };
    let header = Header {
        version: Version::V1,
        source_type,
        compression: ImageCompression::Zstd,
        // partclone's free blocks are free space whatever the filesystem: restore leaves them.
        unstored: Unstored::Free,
        block_size: bs,
        chunk_target: opts.chunk_size.div_ceil(bs) * bs,
        total_blocks: desc.total_blocks,
        used_blocks: bitmap.used(),
        source_size: desc.fs_bytes(),
        uuid: info.uuid.unwrap_or_default(),
        label: info.label.clone(),
        created: crate::image::header::now(),
        level: opts.level,
        flags: 0,
        writer: crate::WRITER.to_string(),
    };
    let used = PartcloneUsed {
        bitmap: Arc::clone(&bitmap),
        info,
    };
    let job = Prepared {
        src: &src,
        name: path,
        scan: Box::new(used),
        header,
        notes,
    };
    let later = RefCell::new(Vec::new());
    let result = write_image(
        &job,
        &Destination::File(dest.to_path_buf()),
        opts,
        progress,
        |tmp| {
            src.finish().map_err(&err)?;
            if source_type.is_ext()
                && let Some(tmp) = tmp
            {
                later.borrow_mut().extend(ext_coverage(tmp, &bitmap)?);
            }
            Ok(())
        },
    );
    let mut report = match result {
        Ok(r) => r,
        // A read that failed is the partclone stream's doing: report its error.
        Err(e) => return Err(src.take_error().map_or(e, &err)),
    };
    report.notes.extend(later.into_inner());
    let found = Found::Partclone {
        desc,
        bitmap_used: bitmap.used(),
    };
    Ok((found, identity, report))
}

/// Checks that the imported ext image holds every block rimage's own scanner would copy
/// (partclone's bitmap comes from libext2fs; ours from the on-disk bitmaps and group
/// metadata). Returns notes about blocks it lacks.
fn ext_coverage(image: &Path, bitmap: &Bitmap) -> Result<Vec<String>, Error> {
    let view = crate::read::blocks::BlocksReadAt::new(crate::read::blocks::ImageBlocks::new(
        crate::read::Image::open(&crate::transport::ImageSource::File(image.to_path_buf()))?,
    )?);
    let opts = ScanOptions {
        verify_checksums: false,
        cross_check: CrossCheck::Never,
    };
    let fs = match crate::fs::ext::probe(&view, opts) {
        Ok(Some(fs)) => fs,
        Ok(None) => {
            return Ok(vec![
                "rimage's ext scanner does not recognise the imported filesystem".into(),
            ]);
        }
        Err(e) => {
            return Ok(vec![format!(
                "rimage's ext scanner cannot read the imported filesystem ({e}); partclone's bitmap was used"
            )]);
        }
    };
    let mut missing = 0u64;
    let mut first = None;
    let mut count = |e: Extent| {
        for b in e.start..e.end() {
            if !bitmap.test(b) {
                missing += 1;
                first.get_or_insert(b);
            }
        }
    };
    for e in fs.extents(&view) {
        match e {
            Ok(e) => count(e),
            Err(e) => {
                return Ok(vec![format!(
                    "rimage's ext scanner stopped reading the imported filesystem ({e}); partclone's bitmap was used"
                )]);
            }
        }
    }
    for e in fs.zero_extents() {
        count(*e);
    }
    Ok(match first {
        None => Vec::new(),
        Some(b) => vec![format!(
            "{} that rimage's ext scanner would copy {} not in the partclone image (the first is block {b}); the filesystem may need e2fsck after a restore",
            crate::plural(missing, "block"),
            if missing == 1 { "is" } else { "are" }
        )],
    })
}

/// Raw partition bytes: written to a sparse temporary file beside the image (the stream's
/// length is known only at its end, and the header comes first), then saved raw.
fn from_raw<R: Read>(
    path: &Path,
    mut stream: R,
    dest: &Path,
    opts: &SaveOptions,
    size: Option<u64>,
    progress: &dyn Progress,
) -> Result<(Found, Identity, SaveReport), Error> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".rimage-import-")
        .tempfile_in(dir)
        .map_err(|e| IoError::new(dir, "create a temporary file in", None, e))?;
    let tmp_path = tmp.path().to_path_buf();
    let mut buf = vec![0u8; RAW_PIECE];
    let mut at = 0u64;
    progress.start("unpacking", size.unwrap_or(0));
    loop {
        crate::interrupt::check()?;
        let n = read_some(&mut stream, &mut buf)
            .map_err(|e| IoError::new(path, "read", Some(at), e))?;
        if n == 0 {
            break;
        }
        if let Some(size) = size
            && at + n as u64 > size
        {
            return Err(Error::refused(
                path,
                format!("holds more than the {size} bytes of its partition"),
            ));
        }
        // Zero blocks stay holes: the save skips them without reading.
        for (i, piece) in buf[..n].chunks(4096).enumerate() {
            if piece.iter().any(|&b| b != 0) {
                let off = at + (i * 4096) as u64;
                std::os::unix::fs::FileExt::write_all_at(tmp.as_file(), piece, off)
                    .map_err(|e| IoError::new(&tmp_path, "write", Some(off), e))?;
            }
        }
        at += n as u64;
        progress.advance(n as u64);
    }
    progress.finish();
    let bytes = at;
    let len = size.unwrap_or(bytes);
    tmp.as_file()
        .set_len(len)
        .map_err(|e| IoError::new(&tmp_path, "truncate", Some(len), e))?;
    tmp.flush()
        .map_err(|e| IoError::new(&tmp_path, "write", None, e))?;
    let dev = Device::open(&tmp_path)?;
    let identity = crate::fs::identify(&dev);
    let raw_opts = SaveOptions {
        raw: true,
        ..opts.clone()
    };
    let mut report = crate::save::save_device(
        &dev,
        &Destination::File(dest.to_path_buf()),
        &raw_opts,
        progress,
    )?;
    report.source = path.to_path_buf();
    if size.is_some_and(|s| bytes < s) {
        report.notes.push(format!(
            "the raw image holds {bytes} bytes, its partition {len}: the rest is imported as zeros"
        ));
    }
    Ok((Found::Raw { bytes }, identity, report))
}

/// One read, retried when interrupted; fills as much of `buf` as the stream gives.
fn read_some(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// partclone's bitmap as the save pipeline's used set.
#[derive(Debug)]
struct PartcloneUsed {
    bitmap: Arc<Bitmap>,
    info: FsInfo,
}

impl UsedBlocks for PartcloneUsed {
    fn block_size(&self) -> u32 {
        self.info.block_size
    }

    fn info(&self, _dev: &dyn ReadAt) -> Result<FsInfo, ScanError> {
        Ok(self.info.clone())
    }

    fn extents<'a>(&'a self, _dev: &'a dyn ReadAt) -> ExtentIter<'a> {
        Box::new(
            self.bitmap
                .runs()
                .map(|(start, len)| Ok(Extent { start, len })),
        )
    }
}

impl std::fmt::Debug for Bitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bitmap({} of {} blocks)", self.used(), self.total())
    }
}

/// The partclone stream as a [`ReadAt`] for the save pipeline, which reads the used extents in
/// ascending order. The first [`HEAD_BYTES`] are read ahead (to identify the filesystem before
/// the header is written) and kept; past them, a read may not go back. The first error is kept,
/// so that the import reports it rather than the pipeline's wrapping of it.
struct StreamSource<R> {
    state: RefCell<StreamState<R>>,
    bs: u64,
    size: u64,
    head: Vec<u8>,
    head_blocks: u64,
}

struct StreamState<R> {
    stream: BlockStream<R>,
    error: Option<ImportError>,
    scratch: Vec<u8>,
}

impl<R: Read> StreamSource<R> {
    fn new(mut stream: BlockStream<R>) -> Result<Self, ImportError> {
        let bs = u64::from(stream.desc().block_size);
        let size = stream.desc().fs_bytes();
        let head_blocks = HEAD_BYTES.min(size) / bs;
        let mut head = vec![0u8; (head_blocks * bs) as usize];
        while let Some(b) = stream.peek().filter(|&b| b < head_blocks) {
            let at = (b * bs) as usize;
            stream.next_block(&mut head[at..at + bs as usize])?;
        }
        Ok(Self {
            state: RefCell::new(StreamState {
                stream,
                error: None,
                scratch: vec![0u8; bs as usize],
            }),
            bs,
            size,
            head,
            head_blocks,
        })
    }

    /// The bytes read ahead, as a device of the source's size (reads past them fail).
    fn head_view(&self) -> HeadView<'_> {
        HeadView {
            head: &self.head,
            size: self.size,
        }
    }

    /// Checks the end of the stream (last checksum, nothing after it).
    fn finish(&self) -> Result<(), ImportError> {
        let mut st = self.state.borrow_mut();
        if let Some(e) = st.error.take() {
            return Err(e);
        }
        st.stream.finish()
    }

    fn take_error(&self) -> Option<ImportError> {
        self.state.borrow_mut().error.take()
    }

    fn read_block(
        &self,
        st: &mut StreamState<R>,
        block: u64,
        out: &mut [u8],
    ) -> Result<(), ImportError> {
        if block < self.head_blocks {
            let at = (block * self.bs) as usize;
            out.copy_from_slice(&self.head[at..at + out.len()]);
            return Ok(());
        }
        if !st.stream.bitmap().test(block) {
            out.fill(0);
            return Ok(());
        }
        loop {
            match st.stream.peek() {
                Some(b) if b < block => {
                    let mut scratch = std::mem::take(&mut st.scratch);
                    let r = st.stream.next_block(&mut scratch);
                    st.scratch = scratch;
                    r?;
                }
                Some(b) if b == block => {
                    st.stream.next_block(out)?;
                    return Ok(());
                }
                _ => {
                    return Err(ImportError::Backwards {
                        block,
                        after: st.stream.peek().unwrap_or(u64::MAX),
                    });
                }
            }
        }
    }
}

impl<R: Read> ReadAt for StreamSource<R> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let mut st = self.state.borrow_mut();
        if let Some(e) = &st.error {
            return Err(std::io::Error::other(e.to_string()));
        }
        if !offset.is_multiple_of(self.bs) || !(buf.len() as u64).is_multiple_of(self.bs) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a partclone stream is read in whole blocks",
            ));
        }
        let first = offset / self.bs;
        for (i, out) in buf.chunks_mut(self.bs as usize).enumerate() {
            if let Err(e) = self.read_block(&mut st, first + i as u64, out) {
                let text = e.to_string();
                st.error = Some(e);
                return Err(std::io::Error::other(text));
            }
        }
        Ok(())
    }
}

/// The read-ahead start of a partclone source, for identification.
struct HeadView<'a> {
    head: &'a [u8],
    size: u64,
}

impl ReadAt for HeadView<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.head.read_exact_at(buf, offset)
    }
}
