//! browse: files inside an image without restoring it (`ls`, `cat`, `extract`).
//!
//! ext4-view reads the filesystem through [`ImageBlocks`], a reader that maps each block to its
//! chunk with the image index and keeps a few decompressed chunks in a cache; blocks the image
//! does not store read as zeros. Only the chunks holding the metadata and files asked for are
//! read, so listing a directory of a multi-GiB image touches a handful of chunks.

use std::cell::Cell;
use std::io::Write;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use ext4_view::{Ext4, Ext4Error, Ext4Read, FileType, Metadata};
use serde::Serialize;

use crate::Error;
use crate::error::IoError;
use crate::image::chunk::ChunkExtent;
use crate::read::{Image, Random};
use crate::transport::ImageSource;

/// Decompressed chunks kept in memory (at most 64 MiB each; typically 4 MiB).
const CACHE_CHUNKS: usize = 8;

/// A decompressed chunk: its extents with where each data extent starts in `data`.
struct Decoded {
    /// (extent, offset of its first byte in `data`; `None` for a zero extent).
    extents: Vec<(ChunkExtent, Option<usize>)>,
    data: Vec<u8>,
}

/// Reads the source's bytes out of an image, for ext4-view.
pub struct ImageBlocks {
    image: Image,
    cache: lru::LruCache<usize, Rc<Decoded>>,
    dctx: zstd::bulk::Decompressor<'static>,
    decoded: Rc<Cell<u64>>,
    /// Bytes shown to the reader instead of the image's: (byte offset, bytes).
    patch: Option<(u64, Vec<u8>)>,
}

impl ImageBlocks {
    /// A reader of a random-access image.
    fn new(image: Image, path: &Path) -> Result<Self, Error> {
        let mut reader = ImageBlocks {
            image,
            cache: lru::LruCache::new(NonZeroUsize::new(CACHE_CHUNKS).expect("non-zero")),
            dctx: zstd::bulk::Decompressor::new()
                .map_err(|e| IoError::new(path, "create a zstd context for", None, e))?,
            decoded: Rc::new(Cell::new(0)),
            patch: None,
        };
        reader.patch = small_inode_patch(&mut reader);
        Ok(reader)
    }

    /// The chunk `i`, decompressed and checked (from the cache when it is there).
    fn chunk(&mut self, i: usize) -> Result<Rc<Decoded>, Error> {
        if let Some(d) = self.cache.get(&i) {
            return Ok(Rc::clone(d));
        }
        let hdr = self.image.header();
        let mut data = Vec::new();
        let checked =
            random(&self.image)
                .chunk(i)
                .fetch()?
                .check_with(hdr, &mut self.dctx, &mut data)?;
        let bs = hdr.block_size as usize;
        let mut at = 0usize;
        let extents = checked
            .extents
            .into_iter()
            .map(|e| {
                if e.zero {
                    (e, None)
                } else {
                    let here = at;
                    at += e.extent.len as usize * bs;
                    (e, Some(here))
                }
            })
            .collect();
        let d = Rc::new(Decoded { extents, data });
        self.decoded.set(self.decoded.get() + 1);
        self.cache.put(i, Rc::clone(&d));
        Ok(d)
    }
}

impl Ext4Read for ImageBlocks {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.read_image(start_byte, dst)?;
        if let Some((at, bytes)) = &self.patch {
            let end = at + bytes.len() as u64;
            let dst_end = start_byte + dst.len() as u64;
            if *at < dst_end && start_byte < end {
                let from = (*at).max(start_byte);
                let to = end.min(dst_end);
                dst[(from - start_byte) as usize..(to - start_byte) as usize]
                    .copy_from_slice(&bytes[(from - at) as usize..(to - at) as usize]);
            }
        }
        Ok(())
    }
}

impl ImageBlocks {
    /// The source's bytes at `start_byte`, from the chunks that hold them (zeros where the
    /// image stores nothing).
    fn read_image(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        let hdr = self.image.header();
        let bs = u64::from(hdr.block_size);
        let end = start_byte
            .checked_add(dst.len() as u64)
            .filter(|&e| e <= hdr.source_size);
        if end.is_none() {
            return Err(format!(
                "read of {} bytes at byte offset {start_byte} is past the end of the source",
                dst.len()
            )
            .into());
        }
        let mut pos = start_byte;
        let mut done = 0usize;
        while done < dst.len() {
            let block = pos / bs;
            let want = dst.len() - done;
            // Unstored blocks (free space, and gaps) read as zeros up to the next chunk.
            let layout = random(&self.image).layout();
            let Some(i) = layout.find_chunk(block) else {
                let next = layout.next_chunk_after(block);
                let stop = layout
                    .index
                    .get(next)
                    .map_or(u64::MAX, |e| e.first_block.saturating_mul(bs));
                let n = want.min((stop - pos).try_into().unwrap_or(usize::MAX));
                dst[done..done + n].fill(0);
                done += n;
                pos += n as u64;
                continue;
            };
            let d = self.chunk(i)?;
            let k = d.extents.partition_point(|(e, _)| e.extent.end() <= block);
            let n = match d.extents.get(k) {
                Some((e, data_at)) if e.extent.start <= block => {
                    let avail = (e.extent.end() * bs - pos) as usize;
                    let n = want.min(avail);
                    match data_at {
                        Some(at) => {
                            let from = at + (pos - e.extent.start * bs) as usize;
                            dst[done..done + n].copy_from_slice(&d.data[from..from + n]);
                        }
                        None => dst[done..done + n].fill(0),
                    }
                    n
                }
                // Inside the chunk's span but between its extents: not stored.
                other => {
                    let end = random(&self.image).layout().index[i].end_block;
                    let stop = other.map_or(end, |(e, _)| e.extent.start) * bs;
                    let n = want.min((stop - pos) as usize);
                    dst[done..done + n].fill(0);
                    n
                }
            };
            done += n;
            pos += n as u64;
        }
        Ok(())
    }
}

/// The source's bytes out of an image file, as a [`ReadAt`]: what the filesystem scanners read
/// (blocks the image does not store read as zeros, as they would after a restore that zeroes
/// free space).
pub(crate) struct ImageReadAt {
    blocks: std::cell::RefCell<ImageBlocks>,
    size: u64,
}

impl ImageReadAt {
    /// Opens the image file at `path` (its header, index and trailer checked; each chunk is
    /// checked as it is read).
    ///
    /// # Errors
    /// An unreadable or corrupt image.
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        let image = Image::open(&ImageSource::File(path.to_path_buf()))?;
        let size = image.header().source_size;
        let mut blocks = ImageBlocks::new(image, path)?;
        // The scanners must see the superblock as it is.
        blocks.patch = None;
        Ok(Self {
            blocks: std::cell::RefCell::new(blocks),
            size,
        })
    }
}

impl crate::source::ReadAt for ImageReadAt {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.blocks
            .borrow_mut()
            .read_image(offset, buf)
            .map_err(std::io::Error::other)
    }
}

/// ext4-view refuses 128-byte inodes on a filesystem with metadata checksums ("inode 2 is
/// truncated"), which e2fsprogs and the kernel read (the checksum's high half is simply
/// absent). The chunks the image is read from carry their own checksums, so for such a
/// filesystem the reader is shown a superblock without `metadata_csum`: it then reads the
/// inodes without their checksums. Returns that superblock feature word, when needed.
fn small_inode_patch(reader: &mut ImageBlocks) -> Option<(u64, Vec<u8>)> {
    use crate::fs::ext::superblock::{SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, Superblock, ro_compat};
    /// `s_feature_ro_compat` (super.rst).
    const S_FEATURE_RO_COMPAT: u64 = 0x64;
    /// Inodes smaller than this have no room for `i_checksum_hi` (inodes.rst, 0x82 + 2).
    const CHECKSUM_HI_END: u16 = 0x84;
    let mut raw = [0u8; SUPERBLOCK_SIZE];
    reader.read_image(SUPERBLOCK_OFFSET, &mut raw).ok()?;
    let sb = Superblock::parse(&raw).ok()?;
    if sb.inode_size >= CHECKSUM_HI_END || !sb.has_ro_compat(ro_compat::METADATA_CSUM) {
        return None;
    }
    let word = sb.feature_ro_compat & !ro_compat::METADATA_CSUM;
    Some((
        SUPERBLOCK_OFFSET + S_FEATURE_RO_COMPAT,
        word.to_le_bytes().to_vec(),
    ))
}

/// The random-access side of an image that [`Browser::open`] checked has one.
fn random(image: &Image) -> &Random {
    image
        .random_access()
        .expect("Browser::open accepts random-access images only")
}

/// A directory entry as `ls` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    /// Name within the directory.
    pub name: String,
    /// "dir", "file", "symlink", or another kind.
    pub kind: &'static str,
    /// Permission bits.
    pub mode: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Symlink target.
    pub target: Option<String>,
}

fn kind(t: FileType) -> &'static str {
    match t {
        FileType::Directory => "dir",
        FileType::Regular => "file",
        FileType::Symlink => "symlink",
        FileType::BlockDevice => "block-device",
        FileType::CharacterDevice => "char-device",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
    }
}

/// A filesystem inside an image, opened for reading.
pub struct Browser {
    image: PathBuf,
    fs: Ext4,
    decoded: Rc<Cell<u64>>,
}

impl Browser {
    /// Opens the filesystem inside the image at `path`.
    ///
    /// # Errors
    /// When the image is unreadable or corrupt, holds a raw source, or holds an ext filesystem
    /// with features the reader does not support (meta_bg, inline_data, ...): the message says
    /// so and suggests restoring it.
    pub fn open(source: &ImageSource) -> Result<Self, Error> {
        let path = source.path();
        let image = Image::open(source)?;
        if image.random_access().is_none() {
            return Err(Error::refused(
                path,
                "browsing reads an image at random, which a stream cannot give; save it to a file first",
            ));
        }
        if !image.header().source_type.is_ext() {
            return Err(Error::refused(
                path,
                format!(
                    "a {} image: browsing reads ext2/3/4 filesystems only; restore it and mount it instead",
                    image.header().source_type
                ),
            ));
        }
        let reader = ImageBlocks::new(image, path)?;
        let decoded = Rc::clone(&reader.decoded);
        let fs = Ext4::load(Box::new(reader)).map_err(|e| browse_error(path, "/", &e))?;
        Ok(Self {
            image: path.to_path_buf(),
            fs,
            decoded,
        })
    }

    /// The ext4-view filesystem (for callers that want its full API).
    pub fn fs(&self) -> &Ext4 {
        &self.fs
    }

    /// How many chunks have been decompressed so far.
    pub fn chunks_decoded(&self) -> u64 {
        self.decoded.get()
    }

    /// The entries of directory `dir` (without "." and ".."), sorted by name; for a file, the
    /// file itself.
    ///
    /// # Errors
    /// A missing path, or a read failure.
    pub fn list(&self, dir: &str) -> Result<Vec<Entry>, Error> {
        let err = |e: Ext4Error| browse_error(&self.image, dir, &e);
        let path = self.ext_path(dir)?;
        let meta = self.fs.metadata(&path).map_err(err)?;
        if !meta.is_dir() {
            let name = dir.rsplit('/').next().unwrap_or(dir).to_string();
            return Ok(vec![self.entry(name, &path, &meta)?]);
        }
        Ok(self.children(&path)?.into_iter().map(|c| c.entry).collect())
    }

    /// `path` as a path inside the filesystem.
    fn ext_path(&self, path: &str) -> Result<ext4_view::PathBuf, Error> {
        ext4_view::PathBuf::try_from(path).map_err(|e| Error::Browse {
            image: self.image.clone(),
            message: format!("{path:?} is not a path inside the filesystem ({e})"),
        })
    }

    /// The entries of a directory with their metadata, sorted by name. Each child's inode is
    /// read once, by number, not looked up again by path (which costs a scan of the directory
    /// per child).
    fn children(&self, dir: &ext4_view::PathBuf) -> Result<Vec<Child>, Error> {
        let shown = dir.display().to_string();
        let err = |e: Ext4Error| browse_error(&self.image, &shown, &e);
        let mut out = Vec::new();
        for entry in self.fs.read_dir(dir).map_err(err)? {
            let entry = entry.map_err(err)?;
            let name = entry.file_name();
            if name.as_ref() == b"." || name.as_ref() == b".." {
                continue;
            }
            let meta = entry.metadata().map_err(err)?;
            let path = entry.path();
            let raw_name = name.as_ref().to_vec();
            let entry = self.entry(name.display().to_string(), &path, &meta)?;
            out.push(Child {
                entry,
                meta,
                path,
                raw_name,
            });
        }
        out.sort_by(|a, b| a.entry.name.cmp(&b.entry.name));
        Ok(out)
    }

    fn entry(
        &self,
        name: String,
        path: &ext4_view::PathBuf,
        meta: &Metadata,
    ) -> Result<Entry, Error> {
        let target = if meta.is_symlink() {
            let t = self
                .fs
                .read_link(path)
                .map_err(|e| browse_error(&self.image, &path.display().to_string(), &e))?;
            Some(String::from_utf8_lossy(t.as_ref()).into_owned())
        } else {
            None
        };
        Ok(Entry {
            name,
            kind: kind(meta.file_type()),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.len(),
            mtime: meta.modified().seconds(),
            target,
        })
    }

    /// Writes the contents of the file at `path` to `out`; returns the byte count.
    ///
    /// # Errors
    /// A missing path, a directory, a read failure, or a write failure of `out`.
    pub fn cat(&self, path: &str, out: &mut dyn Write) -> Result<u64, Error> {
        self.copy_out(&self.ext_path(path)?, out)
    }

    fn copy_out(&self, p: &ext4_view::PathBuf, out: &mut dyn Write) -> Result<u64, Error> {
        let path = p.display().to_string();
        let path = path.as_str();
        let mut file = self
            .fs
            .open(p)
            .map_err(|e| browse_error(&self.image, path, &e))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0;
        loop {
            let n = file
                .read_bytes(&mut buf)
                .map_err(|e| browse_error(&self.image, path, &e))?;
            if n == 0 {
                return Ok(total);
            }
            out.write_all(&buf[..n])
                .map_err(|e| IoError::new(Path::new("<output>"), "write", Some(total), e))?;
            total += n as u64;
        }
    }

    /// Copies `path` (a file, symlink or whole directory tree) out of the image to `dest`,
    /// keeping permissions and modification times (and owners when run as root). Existing
    /// files are never overwritten. Returns the number of entries written.
    ///
    /// # Errors
    /// A missing path, an existing destination file, or a read or write failure.
    pub fn extract(&self, path: &str, dest: &Path) -> Result<u64, Error> {
        let p = self.ext_path(path)?;
        let meta = self
            .fs
            .symlink_metadata(&p)
            .map_err(|e| browse_error(&self.image, path, &e))?;
        let mut count = 0;
        self.extract_one(&p, &meta, dest, &mut count)?;
        Ok(count)
    }

    fn extract_one(
        &self,
        path: &ext4_view::PathBuf,
        meta: &Metadata,
        dest: &Path,
        count: &mut u64,
    ) -> Result<(), Error> {
        let io =
            |op: &'static str| move |e: std::io::Error| Error::Io(IoError::new(dest, op, None, e));
        match meta.file_type() {
            FileType::Directory => {
                std::fs::create_dir(dest).map_err(io("create directory"))?;
                for child in self.children(path)? {
                    let name = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
                        &child.raw_name,
                    );
                    self.extract_one(&child.path, &child.meta, &dest.join(name), count)?;
                }
            }
            FileType::Regular => {
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(dest)
                    .map_err(io("create"))?;
                self.copy_out(path, &mut file)?;
            }
            FileType::Symlink => {
                let target = self
                    .fs
                    .read_link(path)
                    .map_err(|e| browse_error(&self.image, &path.display().to_string(), &e))?;
                let target =
                    <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(target.as_ref());
                std::os::unix::fs::symlink(target, dest).map_err(io("create symlink"))?;
            }
            // Device nodes, fifos and sockets are not files to copy.
            _ => return Ok(()),
        }
        if !meta.is_symlink() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                dest,
                std::fs::Permissions::from_mode(u32::from(meta.mode() & 0o7777)),
            )
            .map_err(io("chmod"))?;
        }
        if rustix::process::geteuid().is_root() {
            let _ = std::os::unix::fs::lchown(dest, Some(meta.uid()), Some(meta.gid()));
        }
        // Last, so that creating a directory's children does not move its time again.
        let t = meta.modified();
        let when = rustix::fs::Timespec {
            tv_sec: t.seconds(),
            tv_nsec: i64::from(t.nanoseconds()),
        };
        let times = rustix::fs::Timestamps {
            last_access: when,
            last_modification: when,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            dest,
            &times,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| Error::Io(IoError::new(dest, "set the times of", None, e.into())))?;
        *count += 1;
        Ok(())
    }
}

/// A directory entry with what extract needs to go on without looking it up again.
struct Child {
    entry: Entry,
    meta: Metadata,
    path: ext4_view::PathBuf,
    /// The name as stored (not necessarily UTF-8).
    raw_name: Vec<u8>,
}

/// An ext4-view error on `inside` within the image at `image`, as a clear message.
fn browse_error(image: &Path, inside: &str, e: &Ext4Error) -> Error {
    let what = match e {
        Ext4Error::NotFound => format!("{inside}: no such file or directory in the image"),
        Ext4Error::NotADirectory => format!("{inside}: not a directory"),
        Ext4Error::IsADirectory => format!("{inside}: is a directory"),
        Ext4Error::Incompatible(why) => format!(
            "the filesystem in this image uses features the built-in reader does not support ({}); \
             restore the image and mount it to read its files",
            journal_feature_names(&why.to_string())
        ),
        Ext4Error::Encrypted => format!("{inside}: encrypted"),
        other => format!("{inside}: {other}"),
    };
    Error::Browse {
        image: image.to_path_buf(),
        message: what,
    }
}

/// jbd2 incompatible journal features (journal.rst), by bit.
const JOURNAL_FEATURES: [(u32, &str); 6] = [
    (0x1, "revoke"),
    (0x2, "64bit"),
    (0x4, "async_commit"),
    (0x8, "checksum_v2"),
    (0x10, "checksum_v3"),
    (0x20, "fast_commit"),
];

/// ext4-view names journal features by number ("missing required journal features: 18"): name
/// them ("64bit, checksum_v3") and say why the journal matters at all.
fn journal_feature_names(why: &str) -> String {
    let Some((head, number)) = why.rsplit_once(": ") else {
        return why.to_string();
    };
    let Ok(bits) = number.trim().parse::<u32>() else {
        return why.to_string();
    };
    if !head.contains("journal features") {
        return why.to_string();
    }
    let names: Vec<&str> = JOURNAL_FEATURES
        .iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    format!(
        "{head}: {}; the journal needs recovery, and replaying it in memory needs them",
        names.join(", ")
    )
}
