//! Random access to a complete image held in memory or mapped from a file: header, trailer and
//! index are read and cross-checked up front, before any chunk is touched.

use super::chunk::ChunkRecord;
use super::digest::Digest;
use super::header::{HEADER_LEN, Header};
use super::index::{IndexEntry, TRAILER_LEN, Trailer, decode_index};
use super::{FormatError, MAX_CHUNK_RAW};

/// A structurally valid image: header, trailer and index agree with each other and with the
/// image's length. Chunk contents are not checked until asked for.
#[derive(Debug)]
pub struct ImageFile<B> {
    bytes: B,
    header_raw: [u8; HEADER_LEN],
    /// The header.
    pub header: Header,
    /// The trailer.
    pub trailer: Trailer,
    /// One entry per chunk, in order.
    pub index: Vec<IndexEntry>,
}

impl<B: AsRef<[u8]>> ImageFile<B> {
    /// Parses and cross-checks the header, trailer and index of the image in `bytes`.
    ///
    /// # Errors
    /// Any [`FormatError`] about those three structures, including
    /// [`FormatError::Truncated`] for an image that ends early.
    pub fn parse(bytes: B) -> Result<Self, FormatError> {
        let all = bytes.as_ref();
        let len = all.len() as u64;
        let header_raw: [u8; HEADER_LEN] = match all.get(..HEADER_LEN) {
            Some(h) => h.try_into().expect("exact length"),
            None if all.len() >= 8 && all[..8] == super::header::MAGIC => {
                return Err(FormatError::Truncated {
                    what: "header",
                    offset: 0,
                });
            }
            None => return Err(FormatError::NotAnImage),
        };
        let header = Header::decode(&header_raw)?;
        if all.len() < HEADER_LEN + TRAILER_LEN {
            return Err(FormatError::Truncated {
                what: "trailer",
                offset: len,
            });
        }
        let trailer_raw: &[u8; TRAILER_LEN] = all[all.len() - TRAILER_LEN..]
            .try_into()
            .expect("exact length");
        let trailer = Trailer::decode(trailer_raw).map_err(|e| match e {
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
        let index_raw = &all[trailer.index_offset as usize..index_end as usize];
        let index = decode_index(index_raw, trailer.index_offset)?;
        if index.len() as u64 != trailer.chunk_count {
            return Err(FormatError::BadIndex(
                "entry count differs from the trailer's chunk count".into(),
            ));
        }
        check_entries(&header, &trailer, &index)?;
        Ok(Self {
            bytes,
            header_raw,
            header,
            trailer,
            index,
        })
    }

    /// Total image size in bytes.
    pub fn len(&self) -> u64 {
        self.bytes.as_ref().len() as u64
    }

    /// Whether the image is empty (never, for a parsed image).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The record of chunk `i`: the bytes from its index offset to the next record.
    ///
    /// # Errors
    /// When the record's own header is invalid or its length disagrees with the index.
    pub fn record(&self, i: usize) -> Result<ChunkRecord<'_>, FormatError> {
        let entry = &self.index[i];
        let end = self
            .index
            .get(i + 1)
            .map_or(self.trailer.index_offset, |e| e.offset);
        let slice = &self.bytes.as_ref()[entry.offset as usize..end as usize];
        let rec = ChunkRecord::new(slice, entry.offset, self.header.block_size)?;
        if rec.bytes().len() != slice.len() {
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
            d.add_chunk(e.hash);
        }
        d.value()
    }

    /// Index of the chunk whose block span contains `block`, if any.
    pub fn find_chunk(&self, block: u64) -> Option<usize> {
        let i = self.index.partition_point(|e| e.end_block <= block);
        (i < self.index.len() && self.index[i].first_block <= block).then_some(i)
    }

    /// The image bytes.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_ref()
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
