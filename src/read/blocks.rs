//! The source's bytes read out of an image at any offset: each block is found in its chunk
//! through the index, a few decompressed chunks are kept, and blocks the image does not store
//! read as zeros. What browsing (ext4-view) and the drift check's file lookup read through.

use std::cell::{Cell, RefCell};
use std::io;
use std::num::NonZeroUsize;
use std::rc::Rc;

use super::{Image, Random};
use crate::Error;
use crate::image::chunk::ChunkExtent;
use crate::image::header::Header;
use crate::source::ReadAt;

/// Decompressed chunks kept in memory (at most 64 MiB each; typically 4 MiB).
const CACHE_CHUNKS: usize = 8;

/// A decompressed chunk: its extents with where each data extent starts in `data`.
struct Decoded {
    /// (extent, offset of its first byte in `data`; `None` for a zero extent).
    extents: Vec<(ChunkExtent, Option<usize>)>,
    data: Vec<u8>,
}

/// Reads the source's bytes out of an image read at random.
pub struct ImageBlocks {
    image: Image,
    cache: lru::LruCache<usize, Rc<Decoded>>,
    dctx: zstd::bulk::Decompressor<'static>,
    decoded: Rc<Cell<u64>>,
}

impl ImageBlocks {
    /// Reads through `image`, which must allow random access.
    ///
    /// # Errors
    /// [`Error::Refused`] for a stream; an internal error when no zstd context can be made.
    pub fn new(image: Image) -> Result<Self, Error> {
        if image.random_access().is_none() {
            return Err(Error::refused(
                image.name(),
                "reading blocks out of an image needs random access, which a stream cannot give; save it to a file first",
            ));
        }
        Ok(Self {
            image,
            cache: lru::LruCache::new(NonZeroUsize::new(CACHE_CHUNKS).expect("non-zero")),
            dctx: zstd::bulk::Decompressor::new()
                .map_err(|e| Error::Internal(format!("cannot create a zstd context: {e}")))?,
            decoded: Rc::new(Cell::new(0)),
        })
    }

    /// The image's header.
    pub fn header(&self) -> &Header {
        self.image.header()
    }

    /// A counter of the chunks decompressed so far (shared: it stays readable after `self` is
    /// handed to a reader).
    pub fn decoded_counter(&self) -> Rc<Cell<u64>> {
        Rc::clone(&self.decoded)
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

    /// The source's bytes at `start_byte`, from the chunks that hold them (zeros where the
    /// image stores nothing).
    ///
    /// # Errors
    /// A read past the end of the source, or a chunk that cannot be fetched or fails its checks.
    pub fn read(&mut self, start_byte: u64, dst: &mut [u8]) -> Result<(), Error> {
        let hdr = self.image.header();
        let bs = u64::from(hdr.block_size);
        let end = start_byte
            .checked_add(dst.len() as u64)
            .filter(|&e| e <= hdr.source_size);
        if end.is_none() {
            return Err(Error::Io(crate::error::IoError::new(
                self.image.name(),
                "read past the end of the source",
                Some(start_byte),
                io::ErrorKind::UnexpectedEof.into(),
            )));
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

/// The random-access side of an image that [`ImageBlocks::new`] checked has one.
fn random(image: &Image) -> &Random {
    image
        .random_access()
        .expect("ImageBlocks::new accepts random-access images only")
}

/// [`ImageBlocks`] as a [`ReadAt`] (for the filesystem scanners).
pub struct BlocksReadAt {
    blocks: RefCell<ImageBlocks>,
    size: u64,
}

impl BlocksReadAt {
    /// Wraps `blocks`.
    pub fn new(blocks: ImageBlocks) -> Self {
        let size = blocks.header().source_size;
        Self {
            blocks: RefCell::new(blocks),
            size,
        }
    }
}

impl ReadAt for BlocksReadAt {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.blocks
            .borrow_mut()
            .read(offset, buf)
            .map_err(|e| io::Error::other(e.full_message()))
    }
}
