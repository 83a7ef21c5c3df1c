//! The read side: an opened image, whatever its transport, and the one chunk iterator that
//! restore, verify, info, browse and the fuzz targets use.
//!
//! An image read at random ([`crate::transport::RandomAccess`]) has its header, trailer and
//! index checked when it is opened, before any chunk; its chunks are fetched by the workers
//! that use them. An image read as a stream has its header checked when it is opened, each
//! chunk as it arrives, and its index, trailer and digest at the end. Either way a pipeline
//! pulls [`PendingChunk`]s from [`Image::chunks`], fetches and checks each one
//! ([`Chunk::check`]: nothing of a chunk is used before every check passed), and hands the
//! spans of the chunks that passed to [`Image::finish`] for the checks across chunks.

pub mod blocks;

use std::borrow::Cow;
use std::cell::RefCell;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::image::chunk::{CheckedChunk, ChunkRecord, ChunkSpan};
use crate::image::header::{HEADER_LEN, Header};
use crate::image::index::TRAILER_LEN;
use crate::image::stream::StreamReader;
use crate::image::{Ends, FormatError, IndexEntry, Layout};
use crate::transport::{ImageSource, Opened, RandomAccess, Stream};

/// An opened image: header checked, and for random access its index and trailer too.
pub struct Image {
    name: PathBuf,
    header: Header,
    body: Body,
}

enum Body {
    Random(Random),
    Stream(StreamReader<Stream>),
}

/// An image read at random: its bytes and its checked layout.
pub struct Random {
    src: Box<dyn RandomAccess>,
    layout: Layout,
}

impl Random {
    /// The header, trailer and index.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Chunk `i`, not fetched yet.
    pub fn chunk(&self, i: usize) -> PendingChunk<'_> {
        PendingChunk {
            name: self.src.name(),
            seq: i as u64,
            kind: Pending::Indexed { img: self, i },
        }
    }
}

/// What the checks across chunks found, once every chunk passed its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImageEnd {
    /// Chunks.
    pub chunks: u64,
    /// Blocks stored.
    pub stored_blocks: u64,
    /// Blocks of zero extents.
    pub zero_blocks: u64,
}

impl Image {
    /// Opens an image from where `source` names.
    ///
    /// # Errors
    /// The source cannot be opened or read, or its header (and for random access its trailer
    /// and index) is not a valid image's.
    pub fn open(source: &ImageSource) -> Result<Self, Error> {
        match source.open()? {
            Opened::Random(src) => Self::random(src),
            Opened::Stream(s) => Self::stream(source.path(), s),
        }
    }

    /// Opens an image readable at any offset: header, trailer, then index, checked together.
    ///
    /// # Errors
    /// As [`Image::open`].
    pub fn random(src: Box<dyn RandomAccess>) -> Result<Self, Error> {
        let name = src.name().to_path_buf();
        let len = src.len();
        let first = src.read_at(0, len.min(HEADER_LEN as u64))?;
        let trailer = match Ends::trailer_offset(len) {
            Some(at) => Some(src.read_at(at, TRAILER_LEN as u64)?),
            None => None,
        };
        let trailer: Option<&[u8; TRAILER_LEN]> = trailer
            .as_deref()
            .map(|t| t.try_into().expect("exact length"));
        let ends = Ends::parse(&first, trailer, len).map_err(|e| Error::image(&name, e))?;
        // Ends::parse checked that the index fits between the header and the trailer.
        let (at, n) = ends.index_range();
        let index = src.read_at(at, n)?;
        let layout = Layout::new(ends, &index).map_err(|e| Error::image(&name, e))?;
        drop((first, index));
        Ok(Self {
            name,
            header: layout.header.clone(),
            body: Body::Random(Random { src, layout }),
        })
    }

    /// Opens an image arriving as a stream: its header now, the rest as it comes.
    ///
    /// # Errors
    /// A stream that ends inside the header, or a header that is not a valid image's.
    pub fn stream(name: &Path, stream: Stream) -> Result<Self, Error> {
        Self::from_stream(name, StreamReader::new(stream))
    }

    /// Opens an image inside a larger stream (a disk stream): reading stops at its trailer.
    ///
    /// # Errors
    /// As [`Image::stream`].
    pub fn stream_embedded(name: &Path, stream: Stream) -> Result<Self, Error> {
        Self::from_stream(name, StreamReader::new_embedded(stream))
    }

    fn from_stream(
        name: &Path,
        reader: Result<StreamReader<Stream>, crate::image::stream::StreamError>,
    ) -> Result<Self, Error> {
        let reader = reader.map_err(|e| Error::stream(name, e))?;
        Ok(Self {
            name: name.to_path_buf(),
            header: reader.header().clone(),
            body: Body::Stream(reader),
        })
    }

    /// The name for messages.
    pub fn name(&self) -> &Path {
        &self.name
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The random-access side, when the transport allows it (browsing needs it).
    pub fn random_access(&self) -> Option<&Random> {
        match &self.body {
            Body::Random(r) => Some(r),
            Body::Stream(_) => None,
        }
    }

    /// Bytes of the image (random access), or read so far (stream).
    pub fn bytes_read(&self) -> u64 {
        match &self.body {
            Body::Random(r) => r.src.len(),
            Body::Stream(s) => s.position(),
        }
    }

    /// Blocks the chunks account for (data and zero extents), for progress: exact when the
    /// index is known, the header's used count (an upper bound) for a stream.
    pub fn expected_blocks(&self) -> u64 {
        match &self.body {
            Body::Random(r) => r.layout.trailer.stored_blocks + r.layout.trailer.zero_blocks,
            Body::Stream(_) => self.header.used_blocks,
        }
    }

    /// The check that can be made before any chunk is read: the whole-image digest against
    /// the index (random access; a stream's digest is checked at its end).
    ///
    /// # Errors
    /// A digest mismatch.
    pub fn check_up_front(&self) -> Result<(), Error> {
        match &self.body {
            Body::Random(r) => r
                .layout
                .check_digest()
                .map_err(|e| Error::image(&self.name, e)),
            Body::Stream(_) => Ok(()),
        }
    }

    /// The chunks, in image order, for a pool of workers to pull from (`par_bridge`). For a
    /// stream each item's bytes have been read; the iterator ends after the index and trailer
    /// were read and checked, or after the first error (its last item).
    pub fn chunks(&mut self) -> Chunks<'_> {
        let inner = match &mut self.body {
            Body::Random(img) => ChunksInner::Random { img, next: 0 },
            Body::Stream(reader) => ChunksInner::Stream {
                reader,
                seq: 0,
                failed: false,
            },
        };
        Chunks {
            name: &self.name,
            inner,
        }
    }

    /// The checks across chunks, given the spans of every chunk (each of which passed its own
    /// checks): all chunks present, in order, disjoint, and adding up to the trailer's counts.
    ///
    /// # Errors
    /// The first disagreement; for a stream that did not reach its end, "truncated".
    pub fn finish(self, mut spans: Vec<ChunkSpan>) -> Result<ImageEnd, Error> {
        spans.sort_unstable();
        let end = ImageEnd {
            chunks: spans.len() as u64,
            stored_blocks: spans.iter().map(|s| s.blocks).sum(),
            zero_blocks: spans.iter().map(|s| s.zero_blocks).sum(),
        };
        let fail = |e| Error::image(&self.name, e);
        match self.body {
            Body::Random(r) => {
                let t = &r.layout.trailer;
                if end.chunks != t.chunk_count {
                    return Err(fail(FormatError::TrailerMismatch {
                        what: "chunks",
                        trailer: t.chunk_count,
                        chunks: end.chunks,
                    }));
                }
                // The index guarantees order and the stored count; each chunk matched its
                // entry. Zero extents are counted only in the records.
                if end.zero_blocks != t.zero_blocks {
                    return Err(fail(FormatError::TrailerMismatch {
                        what: "zero blocks",
                        trailer: t.zero_blocks,
                        chunks: end.zero_blocks,
                    }));
                }
            }
            Body::Stream(reader) => {
                let at = reader.position();
                let tail = reader.finish().ok_or(FormatError::Truncated {
                    what: "index",
                    offset: at,
                });
                // The index, trailer and digest were checked against the records as the
                // stream ended; the order of the chunks and their spans are checked here.
                tail.and_then(|t| t.check_spans(&spans)).map_err(fail)?;
            }
        }
        Ok(end)
    }
}

/// The chunks of an image, in order (see [`Image::chunks`]).
pub struct Chunks<'a> {
    name: &'a Path,
    inner: ChunksInner<'a>,
}

enum ChunksInner<'a> {
    Random {
        img: &'a Random,
        next: usize,
    },
    Stream {
        reader: &'a mut StreamReader<Stream>,
        seq: u64,
        failed: bool,
    },
}

impl<'a> Iterator for Chunks<'a> {
    type Item = Result<PendingChunk<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            ChunksInner::Random { img, next } => {
                let img: &'a Random = img;
                let i = *next;
                if i >= img.layout.index.len() {
                    return None;
                }
                *next += 1;
                Some(Ok(img.chunk(i)))
            }
            ChunksInner::Stream {
                reader,
                seq,
                failed,
            } => {
                if *failed {
                    return None;
                }
                // Sized as bytes arrive (see StreamReader::next_record).
                let mut bytes = Vec::new();
                match reader.next_record(&mut bytes) {
                    Ok(Some(offset)) => {
                        let pending = PendingChunk {
                            name: self.name,
                            seq: *seq,
                            kind: Pending::Read { bytes, offset },
                        };
                        *seq += 1;
                        Some(Ok(pending))
                    }
                    Ok(None) => None,
                    Err(e) => {
                        // After a bad record the stream position means nothing: stop here.
                        *failed = true;
                        Some(Err(Error::stream(self.name, e)))
                    }
                }
            }
        }
    }
}

/// A chunk whose record has not been fetched yet (random access), or has just been read
/// (stream).
pub struct PendingChunk<'a> {
    name: &'a Path,
    seq: u64,
    kind: Pending<'a>,
}

enum Pending<'a> {
    Indexed { img: &'a Random, i: usize },
    Read { bytes: Vec<u8>, offset: u64 },
}

impl<'a> PendingChunk<'a> {
    /// Sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The chunk's index entry, when the image was read at random.
    pub fn entry(&self) -> Option<&'a IndexEntry> {
        match &self.kind {
            Pending::Indexed { img, i } => Some(&img.layout.index[*i]),
            Pending::Read { .. } => None,
        }
    }

    /// Byte offset of the record in the image.
    pub fn offset(&self) -> u64 {
        match &self.kind {
            Pending::Indexed { img, i } => img.layout.index[*i].offset,
            Pending::Read { offset, .. } => *offset,
        }
    }

    /// The chunk's extents, from its record's head alone (one small read), when the image is
    /// read at random; `None` for a stream (whose record is here already).
    ///
    /// # Errors
    /// The transport's error, or a head that breaks the format or disagrees with the index.
    pub fn fetch_extents(&self, hdr: &Header) -> Result<Option<CheckedChunk>, Error> {
        let Pending::Indexed { img, i } = &self.kind else {
            return Ok(None);
        };
        let entry = &img.layout.index[*i];
        let (at, len) = img.layout.record_range(*i);
        let fail = |reason: &str| {
            Error::image(
                self.name,
                FormatError::BadIndex(format!("chunk {}: {reason}", self.seq)),
            )
        };
        if entry.n_extents > crate::image::MAX_CHUNK_EXTENTS {
            return Err(fail("extent count out of range"));
        }
        let head = crate::image::chunk::head_len(entry.n_extents) as u64;
        if head > len {
            return Err(fail("its extent list does not fit its record"));
        }
        let bytes = img
            .src
            .read_at(at, head)
            .map_err(|e| e.in_chunk(self.seq))?;
        let c = crate::image::chunk::head_extents(&bytes, at, hdr)
            .map_err(|e| Error::image(self.name, e))?;
        if (c.first_block, c.end_block) != (entry.first_block, entry.end_block) {
            return Err(fail("block span differs from its index entry"));
        }
        Ok(Some(c))
    }

    /// Fetches the record's bytes from the transport (a stream's are here already).
    ///
    /// # Errors
    /// The transport's error, naming the source, byte offset and chunk.
    pub fn fetch(self) -> Result<Chunk<'a>, Error> {
        match self.kind {
            Pending::Indexed { img, i } => {
                let (at, len) = img.layout.record_range(i);
                let bytes = img.src.read_at(at, len).map_err(|e| e.in_chunk(self.seq))?;
                Ok(Chunk {
                    name: self.name,
                    bytes,
                    offset: at,
                    indexed: Some((img, i)),
                })
            }
            Pending::Read { bytes, offset } => Ok(Chunk {
                name: self.name,
                bytes: Cow::Owned(bytes),
                offset,
                indexed: None,
            }),
        }
    }
}

/// A chunk record's bytes, not yet checked.
pub struct Chunk<'a> {
    name: &'a Path,
    bytes: Cow<'a, [u8]>,
    offset: u64,
    indexed: Option<(&'a Random, usize)>,
}

thread_local! {
    /// One zstd decompression context and output buffer per worker, kept across chunks.
    static DCTX: RefCell<Option<(zstd::bulk::Decompressor<'static>, Vec<u8>)>> = const { RefCell::new(None) };
}

impl Chunk<'_> {
    /// Every check the chunk must pass (CRC, extents, its index entry, decompression with
    /// zstd's content checksum and length), with the caller's decompressor; the blocks of its
    /// data extents end up in `out`, back to back.
    ///
    /// # Errors
    /// The first check that fails, naming the chunk.
    pub fn check_with(
        &self,
        hdr: &Header,
        dctx: &mut zstd::bulk::Decompressor<'static>,
        out: &mut Vec<u8>,
    ) -> Result<CheckedChunk, Error> {
        let fail = |e| Error::image(self.name, e);
        let (rec, entry) = match self.indexed {
            Some((img, i)) => (
                img.layout.record(i, &self.bytes).map_err(fail)?,
                Some(&img.layout.index[i]),
            ),
            None => (
                ChunkRecord::new(&self.bytes, self.offset, hdr.block_size).map_err(fail)?,
                None,
            ),
        };
        rec.check(hdr, entry, dctx, out).map_err(fail)
    }

    /// Checks the chunk (see [`Chunk::check_with`]) with this thread's decompressor and hands
    /// its extents and data to `f`.
    ///
    /// # Errors
    /// The first check that fails, or `f`'s error.
    pub fn check<T>(
        &self,
        hdr: &Header,
        f: impl FnOnce(&CheckedChunk, &[u8]) -> Result<T, Error>,
    ) -> Result<T, Error> {
        DCTX.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                let dctx = zstd::bulk::Decompressor::new()
                    .map_err(|e| Error::Internal(format!("cannot create a zstd context: {e}")))?;
                *slot = Some((dctx, Vec::new()));
            }
            let (dctx, out) = slot.as_mut().expect("just set");
            let checked = self.check_with(hdr, dctx, out)?;
            f(&checked, out)
        })
    }
}

impl Chunk<'_> {
    /// Bytes of the record (what was read from the transport).
    pub fn record_len(&self) -> u64 {
        self.bytes.len() as u64
    }
}

impl Drop for Chunk<'_> {
    fn drop(&mut self) {
        if let Some((img, _)) = self.indexed {
            img.src.release(self.offset, self.bytes.len() as u64);
        }
    }
}
