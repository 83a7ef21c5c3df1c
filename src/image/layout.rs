//! An image's layout for random access: header, trailer and index, read and cross-checked up
//! front, before any chunk is touched, from wherever the bytes are (memory, a map, ranges
//! fetched over a network).

use super::chunk::ChunkRecord;
use super::digest::Digest;
use super::header::{HEADER_LEN, Header};
use super::index::{IndexEntry, TRAILER_LEN, Trailer, decode_index};
use super::{FormatError, MAX_CHUNK_RAW};

/// Where an image's structures are, from the outside in: the header at the start, the trailer
/// at the end, the index where the trailer says. A random-access reader reads them in that
/// order, before any chunk.
#[derive(Clone, Debug)]
pub struct Ends {
    header_raw: [u8; HEADER_LEN],
    /// The header.
    pub header: Header,
    /// The trailer.
    pub trailer: Trailer,
}

impl Ends {
    /// Where the trailer of an image of `len` bytes starts (`None`: too short to hold one).
    pub fn trailer_offset(len: u64) -> Option<u64> {
        len.checked_sub(TRAILER_LEN as u64)
            .filter(|&t| t >= HEADER_LEN as u64)
    }

    /// Checks the header (`first`: the image's first bytes, up to [`HEADER_LEN`]) and the
    /// trailer (`trailer_raw`, when the image is long enough to hold one) of an image of `len`
    /// bytes, and that the index lies between them.
    ///
    /// # Errors
    /// [`FormatError::NotAnImage`], [`FormatError::Truncated`], or any header or trailer error.
    pub fn parse(
        first: &[u8],
        trailer_raw: Option<&[u8; TRAILER_LEN]>,
        len: u64,
    ) -> Result<Self, FormatError> {
        let header_raw: [u8; HEADER_LEN] = match first.get(..HEADER_LEN) {
            Some(h) => h.try_into().expect("exact length"),
            None if first.len() >= 8 && first[..8] == super::header::MAGIC => {
                return Err(FormatError::Truncated {
                    what: "header",
                    offset: 0,
                });
            }
            None => return Err(FormatError::NotAnImage),
        };
        let header = Header::decode(&header_raw)?;
        let (Some(trailer_raw), Some(_)) = (trailer_raw, Self::trailer_offset(len)) else {
            return Err(FormatError::Truncated {
                what: "trailer",
                offset: len,
            });
        };
        let trailer = Trailer::decode(trailer_raw, header.version).map_err(|e| match e {
            // Without a trailer magic the image most likely stopped being written half-way.
            FormatError::BadTrailer(_) if trailer_raw[..8] != super::index::TRAILER_MAGIC => {
                FormatError::Truncated {
                    what: "image (no trailer: incomplete save?)",
                    offset: len,
                }
            }
            e => e,
        })?;
        let index_end = len - TRAILER_LEN as u64;
        if trailer.index_offset < HEADER_LEN as u64
            || trailer.index_offset.checked_add(trailer.index_len) != Some(index_end)
        {
            return Err(FormatError::BadTrailer(
                "the index does not end where the trailer starts",
            ));
        }
        Ok(Self {
            header_raw,
            header,
            trailer,
        })
    }

    /// Byte range of the index: (offset, length).
    pub fn index_range(&self) -> (u64, u64) {
        (self.trailer.index_offset, self.trailer.index_len)
    }
}

/// A structurally valid image: header, trailer and index agree with each other and with the
/// image's length. Chunk contents are not checked until asked for.
#[derive(Clone, Debug)]
pub struct Layout {
    header_raw: [u8; HEADER_LEN],
    /// The header.
    pub header: Header,
    /// The trailer.
    pub trailer: Trailer,
    /// One entry per chunk, in order.
    pub index: Vec<IndexEntry>,
}

impl Layout {
    /// Completes [`Ends`] with the index record's bytes (read from [`Ends::index_range`]).
    ///
    /// # Errors
    /// Any [`FormatError`] about the index, or an index that disagrees with the trailer.
    pub fn new(ends: Ends, index_raw: &[u8]) -> Result<Self, FormatError> {
        let Ends {
            header_raw,
            header,
            trailer,
        } = ends;
        let index = decode_index(index_raw, trailer.index_offset, header.version)?;
        if index.len() as u64 != trailer.chunk_count {
            return Err(FormatError::BadIndex(
                "entry count differs from the trailer's chunk count".into(),
            ));
        }
        check_entries(&header, &trailer, &index)?;
        Ok(Self {
            header_raw,
            header,
            trailer,
            index,
        })
    }

    /// Parses the header, trailer and index of a whole image held in memory.
    ///
    /// # Errors
    /// As [`Ends::parse`] and [`Layout::new`].
    pub fn parse(all: &[u8]) -> Result<Self, FormatError> {
        let len = all.len() as u64;
        let trailer =
            Ends::trailer_offset(len).map(|t| all[t as usize..].try_into().expect("exact length"));
        let ends = Ends::parse(&all[..all.len().min(HEADER_LEN)], trailer, len)?;
        let (at, n) = ends.index_range();
        Self::new(ends, &all[at as usize..(at + n) as usize])
    }

    /// Byte range of chunk `i`'s record: from its index offset to the next record (or the
    /// index), as (offset, length).
    pub fn record_range(&self, i: usize) -> (u64, u64) {
        let start = self.index[i].offset;
        let end = self
            .index
            .get(i + 1)
            .map_or(self.trailer.index_offset, |e| e.offset);
        (start, end - start)
    }

    /// The record of chunk `i`, given the bytes of its [`Layout::record_range`].
    ///
    /// # Errors
    /// When the record's own header is invalid or disagrees with the index.
    pub fn record<'a>(&self, i: usize, bytes: &'a [u8]) -> Result<ChunkRecord<'a>, FormatError> {
        let entry = &self.index[i];
        let rec = ChunkRecord::new(bytes, entry.offset, self.header.block_size)?;
        if rec.bytes().len() != bytes.len() {
            return Err(FormatError::BadIndex(format!(
                "chunk {i}: record length differs from the space the index gives it"
            )));
        }
        if rec.header.seq != i as u64 {
            return Err(FormatError::BadIndex(format!(
                "chunk {i}: record carries sequence number {}",
                rec.header.seq
            )));
        }
        if rec.header.raw_len != entry.raw_len || rec.header.n_extents != entry.n_extents {
            return Err(FormatError::BadIndex(format!(
                "chunk {i}: record and index entry disagree"
            )));
        }
        Ok(rec)
    }

    /// The digest the index's chunk hashes add up to (compare with the trailer's).
    pub fn index_digest(&self) -> u128 {
        let mut d = Digest::new(&self.header_raw);
        for e in &self.index {
            d.add_chunk(e.hash, e.content_hash);
        }
        d.value()
    }

    /// Checks the whole-image digest against the index's chunk hashes.
    ///
    /// # Errors
    /// [`FormatError::Digest`].
    pub fn check_digest(&self) -> Result<(), FormatError> {
        let computed = self.index_digest();
        if computed != self.trailer.digest {
            return Err(FormatError::Digest {
                stored: self.trailer.digest,
                computed,
            });
        }
        Ok(())
    }

    /// Index of the chunk whose block span contains `block`, if any.
    pub fn find_chunk(&self, block: u64) -> Option<usize> {
        let i = self.index.partition_point(|e| e.end_block <= block);
        (i < self.index.len() && self.index[i].first_block <= block).then_some(i)
    }

    /// Index of the first chunk that starts after `block` (`index.len()` when none does).
    pub fn next_chunk_after(&self, block: u64) -> usize {
        self.index.partition_point(|e| e.first_block <= block)
    }

    /// Bytes of the whole image.
    pub fn image_len(&self) -> u64 {
        self.trailer.index_offset + self.trailer.index_len + TRAILER_LEN as u64
    }
}

/// A whole image in memory (or mapped), with its layout: for tests and tools that hold the
/// bytes already.
#[derive(Debug)]
pub struct ImageFile<B> {
    bytes: B,
    layout: Layout,
}

impl<B: AsRef<[u8]>> ImageFile<B> {
    /// Parses the layout of the image in `bytes`.
    ///
    /// # Errors
    /// As [`Layout::parse`].
    pub fn parse(bytes: B) -> Result<Self, FormatError> {
        let layout = Layout::parse(bytes.as_ref())?;
        Ok(Self { bytes, layout })
    }

    /// The record of chunk `i`.
    ///
    /// # Errors
    /// As [`Layout::record`].
    pub fn record(&self, i: usize) -> Result<ChunkRecord<'_>, FormatError> {
        let (at, len) = self.layout.record_range(i);
        self.layout
            .record(i, &self.bytes.as_ref()[at as usize..(at + len) as usize])
    }

    /// The image bytes.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_ref()
    }
}

impl<B> std::ops::Deref for ImageFile<B> {
    type Target = Layout;

    fn deref(&self) -> &Layout {
        &self.layout
    }
}

/// Offsets ascending and inside the chunk area, block spans ascending, disjoint and inside the
/// source, raw lengths within limits.
fn check_entries(
    header: &Header,
    trailer: &Trailer,
    index: &[IndexEntry],
) -> Result<(), FormatError> {
    let mut prev_offset = None;
    let mut prev_end = 0u64;
    let mut raw_blocks: u64 = 0;
    for (i, e) in index.iter().enumerate() {
        let bad = |what: &str| Err(FormatError::BadIndex(format!("entry {i}: {what}")));
        let expected_first = prev_offset.is_none().then_some(HEADER_LEN as u64);
        if expected_first.is_some_and(|o| e.offset != o)
            || prev_offset.is_some_and(|p| e.offset <= p)
            || e.offset >= trailer.index_offset
        {
            return bad("offset out of order or outside the chunk area");
        }
        if e.first_block >= e.end_block
            || e.end_block > header.total_blocks
            || (i > 0 && e.first_block < prev_end)
        {
            return bad("block span out of order or outside the source");
        }
        if e.raw_len == 0
            || e.raw_len > MAX_CHUNK_RAW
            || e.raw_len % header.block_size != 0
            || e.n_extents == 0
        {
            return bad("raw length or extent count out of range");
        }
        raw_blocks += u64::from(e.raw_len / header.block_size);
        prev_offset = Some(e.offset);
        prev_end = e.end_block;
    }
    if index.is_empty() && trailer.index_offset != HEADER_LEN as u64 {
        return Err(FormatError::BadIndex(
            "no chunks, but bytes between the header and the index".into(),
        ));
    }
    if raw_blocks != trailer.stored_blocks {
        return Err(FormatError::BadIndex(format!(
            "chunks hold {raw_blocks} blocks, the trailer says {}",
            trailer.stored_blocks
        )));
    }
    check_stored_blocks(header, trailer.stored_blocks, trailer.zero_blocks)
}

/// An ext image accounts for exactly its used blocks (stored, or zero extents); a raw one
/// for at most all of them.
///
/// # Errors
/// [`FormatError::BadIndex`] when the counts disagree with the header.
pub fn check_stored_blocks(header: &Header, stored: u64, zero: u64) -> Result<(), FormatError> {
    let total = stored.checked_add(zero);
    let ok = match header.unstored {
        super::Unstored::Free => total == Some(header.used_blocks),
        super::Unstored::Zero => total.is_some_and(|t| t <= header.used_blocks),
    };
    if !ok {
        return Err(FormatError::BadIndex(format!(
            "{stored} blocks stored and {zero} zero blocks, but the header says {} are used",
            header.used_blocks
        )));
    }
    Ok(())
}
