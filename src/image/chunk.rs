//! Chunk records (docs/FORMAT.md, "Chunk record"): a fixed 32-byte header, the extent list, one
//! zstd frame, a CRC32.

use byteorder::{ByteOrder, LittleEndian};

use super::digest::chunk_hash;
use super::header::Header;
use super::index::IndexEntry;
use super::{
    ChunkId, FormatError, MAX_CHUNK_EXTENTS, MAX_CHUNK_RAW, compress_bound, le_u32, le_u64,
};
use crate::fs::Extent;

/// Size of the fixed part of a record.
pub const CHUNK_HEADER_LEN: usize = 32;
/// Size of one extent entry.
pub const EXTENT_LEN: usize = 12;
/// Size of the CRC at the end of a record.
pub const CRC_LEN: usize = 4;
/// Record magic.
pub const CHUNK_MAGIC: [u8; 4] = *b"CHNK";

const FLAGS: usize = 4;
const SEQ: usize = 8;
const N_EXTENTS: usize = 16;
const RAW_LEN: usize = 20;
const STORED_LEN: usize = 24;
const RESERVED: usize = 28;

/// zstd frame magic (RFC 8878, 3.1.1), little-endian.
const ZSTD_MAGIC: u32 = 0xFD2F_B528;
/// Frame_Header_Descriptor bit: the frame ends with an XXH64 checksum of its content.
const ZSTD_CONTENT_CHECKSUM_FLAG: u8 = 0x04;

/// The fixed part of a chunk record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Sequence number.
    pub seq: u64,
    /// Number of extents.
    pub n_extents: u32,
    /// Uncompressed bytes.
    pub raw_len: u32,
    /// Bytes of the zstd frame.
    pub stored_len: u32,
}

impl ChunkHeader {
    /// Decodes the fixed part of a record found at `offset`, checking the format's limits, so
    /// that [`ChunkHeader::record_len`] can be trusted as an allocation size.
    ///
    /// # Errors
    /// [`FormatError::BadRecordMagic`] or [`FormatError::BadChunk`].
    pub fn decode(
        raw: &[u8; CHUNK_HEADER_LEN],
        offset: u64,
        block_size: u32,
    ) -> Result<Self, FormatError> {
        if raw[..4] != CHUNK_MAGIC {
            return Err(FormatError::BadRecordMagic { offset });
        }
        let h = Self {
            seq: le_u64(raw, SEQ),
            n_extents: le_u32(raw, N_EXTENTS),
            raw_len: le_u32(raw, RAW_LEN),
            stored_len: le_u32(raw, STORED_LEN),
        };
        let bad = |reason: &str| FormatError::BadChunk {
            chunk: ChunkId {
                seq: h.seq,
                offset,
                first_block: None,
                end_block: None,
            },
            reason: reason.to_string(),
        };
        if le_u32(raw, FLAGS) != 0 || le_u32(raw, RESERVED) != 0 {
            return Err(bad("unknown flags"));
        }
        // raw_len may be 0: a chunk of zero extents only carries an empty frame.
        if h.raw_len > MAX_CHUNK_RAW || !h.raw_len.is_multiple_of(block_size) {
            return Err(bad("raw length is out of range"));
        }
        if h.n_extents == 0 || h.n_extents > MAX_CHUNK_EXTENTS {
            return Err(bad("extent count is out of range"));
        }
        if h.stored_len == 0 || h.stored_len > compress_bound(h.raw_len) {
            return Err(bad("stored length is out of range"));
        }
        Ok(h)
    }

    /// Encodes the fixed part.
    pub fn encode(&self) -> [u8; CHUNK_HEADER_LEN] {
        let mut raw = [0u8; CHUNK_HEADER_LEN];
        raw[..4].copy_from_slice(&CHUNK_MAGIC);
        LittleEndian::write_u64(&mut raw[SEQ..], self.seq);
        LittleEndian::write_u32(&mut raw[N_EXTENTS..], self.n_extents);
        LittleEndian::write_u32(&mut raw[RAW_LEN..], self.raw_len);
        LittleEndian::write_u32(&mut raw[STORED_LEN..], self.stored_len);
        raw
    }

    /// Bytes of the extent list.
    pub fn extents_len(&self) -> usize {
        self.n_extents as usize * EXTENT_LEN
    }

    /// Bytes of the whole record (bounded by the limits `decode` checked).
    pub fn record_len(&self) -> usize {
        CHUNK_HEADER_LEN + self.extents_len() + self.stored_len as usize + CRC_LEN
    }
}

/// Flag in an extent's length word: the extent's blocks are not stored and must read as zeros.
pub const ZERO_EXTENT: u32 = 1 << 31;

/// One extent of a chunk: stored data, or blocks that must read as zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkExtent {
    /// The blocks.
    pub extent: Extent,
    /// Not stored: restore makes them read as zeros.
    pub zero: bool,
}

/// Encodes the header and extent list of a record (the part before the payload).
pub fn encode_head(
    seq: u64,
    extents: &[ChunkExtent],
    raw_len: u32,
    stored_len: u32,
    out: &mut Vec<u8>,
) {
    out.clear();
    let n_extents = u32::try_from(extents.len()).expect("writer bounds extents");
    out.extend_from_slice(
        &ChunkHeader {
            seq,
            n_extents,
            raw_len,
            stored_len,
        }
        .encode(),
    );
    for e in extents {
        let len = u32::try_from(e.extent.len)
            .ok()
            .filter(|&l| l < ZERO_EXTENT)
            .expect("writer bounds extent length");
        out.extend_from_slice(&e.extent.start.to_le_bytes());
        out.extend_from_slice(&(len | if e.zero { ZERO_EXTENT } else { 0 }).to_le_bytes());
    }
}

/// A whole chunk record, borrowed from the image or a read buffer.
#[derive(Clone, Copy, Debug)]
pub struct ChunkRecord<'a> {
    /// The fixed part.
    pub header: ChunkHeader,
    /// Byte offset of the record in the image.
    pub offset: u64,
    bytes: &'a [u8],
}

/// A chunk that passed every check: its extents, block span and block counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedChunk {
    /// Extents, ascending: data extents in payload order, and zero extents.
    pub extents: Vec<ChunkExtent>,
    /// First block.
    pub first_block: u64,
    /// One past the last block.
    pub end_block: u64,
    /// Blocks stored (data extents).
    pub blocks: u64,
    /// Blocks that must read as zeros (zero extents).
    pub zero_blocks: u64,
    /// The content hash (version 2 images), once the payload was decompressed.
    pub content_hash: Option<u128>,
}

impl CheckedChunk {
    /// Where the chunk lies and what it holds, for the end-of-image checks.
    pub fn span(&self, seq: u64) -> ChunkSpan {
        ChunkSpan {
            seq,
            first_block: self.first_block,
            end_block: self.end_block,
            blocks: self.blocks,
            zero_blocks: self.zero_blocks,
            content_hash: self.content_hash,
        }
    }
}

/// A chunk that passed its checks, reduced to what the checks across chunks need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChunkSpan {
    /// Sequence number.
    pub seq: u64,
    /// First block.
    pub first_block: u64,
    /// One past the last block.
    pub end_block: u64,
    /// Blocks stored.
    pub blocks: u64,
    /// Blocks of zero extents.
    pub zero_blocks: u64,
    /// The content hash of its decompressed blocks (version 2 images).
    pub content_hash: Option<u128>,
}

impl<'a> ChunkRecord<'a> {
    /// Wraps the bytes of one record (exactly `header.record_len()` of them) found at `offset`.
    ///
    /// # Errors
    /// As [`ChunkHeader::decode`]; [`FormatError::Truncated`] when `bytes` is shorter than the
    /// record.
    pub fn new(bytes: &'a [u8], offset: u64, block_size: u32) -> Result<Self, FormatError> {
        let head: &[u8; CHUNK_HEADER_LEN] = bytes
            .get(..CHUNK_HEADER_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(FormatError::Truncated {
                what: "chunk record",
                offset,
            })?;
        let header = ChunkHeader::decode(head, offset, block_size)?;
        let bytes = bytes
            .get(..header.record_len())
            .ok_or(FormatError::Truncated {
                what: "chunk record",
                offset,
            })?;
        Ok(Self {
            header,
            offset,
            bytes,
        })
    }

    /// All bytes of the record.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The chunk's identity for messages, with a block span once known.
    pub fn id(&self, span: Option<(u64, u64)>) -> ChunkId {
        ChunkId {
            seq: self.header.seq,
            offset: self.offset,
            first_block: span.map(|s| s.0),
            end_block: span.map(|s| s.1),
        }
    }

    /// The zstd frame.
    pub fn payload(&self) -> &'a [u8] {
        let start = CHUNK_HEADER_LEN + self.header.extents_len();
        &self.bytes[start..start + self.header.stored_len as usize]
    }

    /// Checks the record's CRC32.
    ///
    /// # Errors
    /// [`FormatError::ChunkCrc`].
    pub fn check_crc(&self) -> Result<(), FormatError> {
        let body = self.bytes.len() - CRC_LEN;
        let stored = le_u32(self.bytes, body);
        let computed = crc32fast::hash(&self.bytes[..body]);
        if stored != computed {
            return Err(FormatError::ChunkCrc {
                chunk: self.id(None),
                stored,
                computed,
            });
        }
        Ok(())
    }

    /// The extents as stored (unchecked).
    pub fn raw_extents(&self) -> impl Iterator<Item = (u64, u32)> + 'a {
        self.bytes[CHUNK_HEADER_LEN..CHUNK_HEADER_LEN + self.header.extents_len()]
            .chunks_exact(EXTENT_LEN)
            .map(|e| (le_u64(e, 0), le_u32(e, 8)))
    }

    /// Checks the extents: non-empty, ascending, not touching, inside `[0, total_blocks)`, and
    /// adding up to the raw length.
    ///
    /// # Errors
    /// [`FormatError::BadChunk`] naming the problem.
    pub fn check_extents(&self, hdr: &Header) -> Result<CheckedChunk, FormatError> {
        check_extent_list(&self.header, self.raw_extents(), self.id(None), hdr)
    }

    /// Decompresses the payload into `out` (cleared first; its capacity is reused) and checks
    /// that it is exactly one frame, with a content checksum, of exactly the raw length.
    ///
    /// # Errors
    /// [`FormatError::Decompress`].
    pub fn decompress(
        &self,
        dctx: &mut zstd::bulk::Decompressor<'_>,
        out: &mut Vec<u8>,
        span: (u64, u64),
    ) -> Result<(), FormatError> {
        let payload = self.payload();
        let fail = |reason: String| FormatError::Decompress {
            chunk: self.id(Some(span)),
            reason,
        };
        if payload.len() < 5 || le_u32(payload, 0) != ZSTD_MAGIC {
            return Err(fail("payload is not a zstd frame".into()));
        }
        if payload[4] & ZSTD_CONTENT_CHECKSUM_FLAG == 0 {
            return Err(fail("zstd frame has no content checksum".into()));
        }
        match zstd::zstd_safe::find_frame_compressed_size(payload) {
            Ok(n) if n == payload.len() => {}
            Ok(n) => {
                return Err(fail(format!(
                    "payload holds {} bytes after its zstd frame",
                    payload.len() - n
                )));
            }
            Err(code) => return Err(fail(zstd::zstd_safe::get_error_name(code).to_string())),
        }
        out.clear();
        let want = self.header.raw_len as usize;
        out.reserve(want);
        // zstd writes into the vector's capacity and never grows it: a frame that inflates past
        // the raw length fails (or is caught below) instead of allocating.
        let n = dctx
            .decompress_to_buffer(payload, out)
            .map_err(|e| fail(e.to_string()))?;
        if n != want {
            return Err(fail(format!("decompressed to {n} bytes, expected {want}")));
        }
        Ok(())
    }
}

impl ChunkRecord<'_> {
    /// Checks the record against its index entry (when the image has one, i.e. when it is read
    /// at random): same block span, same XXH3-128 of the record's bytes.
    ///
    /// # Errors
    /// [`FormatError::BadChunk`] naming the chunk.
    pub fn check_entry(
        &self,
        checked: &CheckedChunk,
        entry: &IndexEntry,
    ) -> Result<(), FormatError> {
        let span = (checked.first_block, checked.end_block);
        let reason = if (entry.first_block, entry.end_block) != span {
            "block span differs from its index entry"
        } else if chunk_hash(self.bytes) != entry.hash {
            "hash differs from its index entry"
        } else {
            return Ok(());
        };
        Err(FormatError::BadChunk {
            chunk: self.id(Some(span)),
            reason: reason.into(),
        })
    }

    /// Every check a chunk must pass before it is used: CRC, extents, its index entry (when
    /// there is one), then decompression into `out` with zstd's content checksum.
    ///
    /// # Errors
    /// The first check that fails, naming the chunk.
    pub fn check(
        &self,
        hdr: &Header,
        entry: Option<&IndexEntry>,
        dctx: &mut zstd::bulk::Decompressor<'_>,
        out: &mut Vec<u8>,
    ) -> Result<CheckedChunk, FormatError> {
        self.check_crc()?;
        let mut c = self.check_extents(hdr)?;
        if let Some(e) = entry {
            self.check_entry(&c, e)?;
        }
        self.decompress(dctx, out, (c.first_block, c.end_block))?;
        if hdr.version.has_content_hashes() {
            let h = super::digest::content_hash(&c.extents, out, hdr.block_size);
            if entry.is_some_and(|e| e.content_hash != Some(h)) {
                return Err(FormatError::BadChunk {
                    chunk: self.id(Some((c.first_block, c.end_block))),
                    reason: "content hash differs from its index entry".into(),
                });
            }
            c.content_hash = Some(h);
        }
        Ok(c)
    }
}

/// Checks an extent list (`(start, length word)` pairs as stored) against the record's header
/// and the image's: non-empty, ascending, not touching, inside `[0, total_blocks)`, and adding
/// up to the raw length.
fn check_extent_list(
    head: &ChunkHeader,
    raw: impl Iterator<Item = (u64, u32)>,
    id: ChunkId,
    hdr: &Header,
) -> Result<CheckedChunk, FormatError> {
    let mut extents: Vec<ChunkExtent> = Vec::with_capacity(head.n_extents as usize);
    let (mut blocks, mut zero_blocks) = (0u64, 0u64);
    let bad = |reason: String| FormatError::BadChunk { chunk: id, reason };
    for (start, word) in raw {
        let (len, zero) = (word & !ZERO_EXTENT, word & ZERO_EXTENT != 0);
        if len == 0 {
            return Err(bad(format!("empty extent at block {start}")));
        }
        if start
            .checked_add(u64::from(len))
            .is_none_or(|end| end > hdr.total_blocks)
        {
            let total = hdr.total_blocks;
            return Err(bad(format!(
                "extent {start}+{len} lies outside the {total} blocks of the source"
            )));
        }
        // Ascending; touching only between a data and a zero extent (same kinds are merged).
        if let Some(prev) = extents.last()
            && (start < prev.extent.end() || (start == prev.extent.end() && prev.zero == zero))
        {
            let end = prev.extent.end();
            return Err(bad(format!(
                "extent at block {start} does not follow the previous one (ending at {end})"
            )));
        }
        extents.push(ChunkExtent {
            extent: Extent {
                start,
                len: u64::from(len),
            },
            zero,
        });
        // At most 65536 extents of at most 2^31 blocks: no overflow.
        *(if zero { &mut zero_blocks } else { &mut blocks }) += u64::from(len);
    }
    if blocks.checked_mul(u64::from(hdr.block_size)) != Some(u64::from(head.raw_len)) {
        let raw = head.raw_len;
        return Err(bad(format!(
            "data extents hold {blocks} blocks but the raw length is {raw} bytes"
        )));
    }
    let first_block = extents[0].extent.start;
    let end_block = extents[extents.len() - 1].extent.end();
    Ok(CheckedChunk {
        extents,
        first_block,
        end_block,
        blocks,
        zero_blocks,
        content_hash: None,
    })
}

/// Bytes of a record's head (fixed part and extent list) for `n_extents` extents.
pub fn head_len(n_extents: u32) -> usize {
    CHUNK_HEADER_LEN + n_extents as usize * EXTENT_LEN
}

/// The extents of a record from its head alone (the first [`head_len`] bytes, found at
/// `offset`): what a reader needs to compare a chunk with a target before fetching the rest.
/// The head is not covered by a checksum of its own: a damaged extent list gives a content
/// hash that no target matches, and the full record is then fetched and checked.
///
/// # Errors
/// A head that is short or breaks the format's rules.
pub fn head_extents(head: &[u8], offset: u64, hdr: &Header) -> Result<CheckedChunk, FormatError> {
    let fixed: &[u8; CHUNK_HEADER_LEN] = head
        .get(..CHUNK_HEADER_LEN)
        .and_then(|b| b.try_into().ok())
        .ok_or(FormatError::Truncated {
            what: "chunk record",
            offset,
        })?;
    let h = ChunkHeader::decode(fixed, offset, hdr.block_size)?;
    let list = head
        .get(CHUNK_HEADER_LEN..head_len(h.n_extents))
        .ok_or(FormatError::Truncated {
            what: "chunk record",
            offset,
        })?;
    let id = ChunkId {
        seq: h.seq,
        offset,
        first_block: None,
        end_block: None,
    };
    let raw = list
        .chunks_exact(EXTENT_LEN)
        .map(|e| (le_u64(e, 0), le_u32(e, 8)));
    check_extent_list(&h, raw, id, hdr)
}

/// A chunk ready to be written: its record in three pieces (head with the extent list, zstd
/// frame, CRC) plus what the index needs.
#[derive(Debug)]
pub struct EncodedChunk {
    /// Sequence number.
    pub seq: u64,
    /// Fixed header and extent list.
    pub head: Vec<u8>,
    /// The zstd frame.
    pub payload: Vec<u8>,
    /// CRC32 of head and payload.
    pub crc: u32,
    /// XXH3-128 of the whole record.
    pub hash: u128,
    /// First block.
    pub first_block: u64,
    /// One past the last block.
    pub end_block: u64,
    /// Uncompressed bytes.
    pub raw_len: u32,
    /// Extent count.
    pub n_extents: u32,
    /// Blocks of zero extents.
    pub zero_blocks: u64,
    /// The content hash (see [`super::digest::content_hash`]).
    pub content_hash: u128,
}

impl EncodedChunk {
    /// Bytes of the whole record.
    pub fn record_len(&self) -> u64 {
        (self.head.len() + self.payload.len() + CRC_LEN) as u64
    }
}

/// Compresses `data` (the blocks of the data extents, back to back) into a chunk record,
/// reusing `payload`'s allocation for the frame. `cctx` must have the content checksum enabled.
///
/// # Errors
/// zstd's error message (which no valid input causes).
pub fn encode_chunk(
    seq: u64,
    extents: &[ChunkExtent],
    data: &[u8],
    block_size: u32,
    cctx: &mut zstd::bulk::Compressor<'_>,
    mut payload: Vec<u8>,
) -> Result<EncodedChunk, String> {
    let raw_len = u32::try_from(data.len()).map_err(|_| "chunk too large".to_string())?;
    payload.clear();
    payload.reserve(compress_bound(raw_len) as usize);
    cctx.compress_to_buffer(data, &mut payload)
        .map_err(|e| e.to_string())?;
    let stored_len = u32::try_from(payload.len()).map_err(|_| "frame too large".to_string())?;
    let mut head = Vec::with_capacity(CHUNK_HEADER_LEN + extents.len() * EXTENT_LEN);
    encode_head(seq, extents, raw_len, stored_len, &mut head);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head);
    crc.update(&payload);
    let crc = crc.finalize();
    let hash = super::digest::chunk_hash_parts(&[&head, &payload, &crc.to_le_bytes()]);
    let zero_blocks = extents
        .iter()
        .filter(|e| e.zero)
        .map(|e| e.extent.len)
        .sum();
    Ok(EncodedChunk {
        seq,
        head,
        payload,
        crc,
        hash,
        first_block: extents[0].extent.start,
        end_block: extents[extents.len() - 1].extent.end(),
        raw_len,
        n_extents: extents.len() as u32,
        zero_blocks,
        content_hash: super::digest::content_hash(extents, data, block_size),
    })
}

/// A zstd compressor as images need it: given level, content size and checksum in the frame.
///
/// # Errors
/// An invalid level.
pub fn compressor(level: i32) -> std::io::Result<zstd::bulk::Compressor<'static>> {
    let mut c = zstd::bulk::Compressor::new(level)?;
    c.include_checksum(true)?;
    c.include_contentsize(true)?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::header::tests::sample;

    fn ce(start: u64, len: u64, zero: bool) -> ChunkExtent {
        ChunkExtent {
            extent: Extent { start, len },
            zero,
        }
    }

    /// A record with these extents and `data_blocks` blocks of data, as bytes.
    fn record(extents: &[ChunkExtent], data_blocks: usize) -> Vec<u8> {
        let data = vec![0x5Au8; data_blocks * 4096];
        let c = encode_chunk(
            7,
            extents,
            &data,
            4096,
            &mut compressor(1).unwrap(),
            Vec::new(),
        )
        .unwrap();
        [c.head, c.payload, c.crc.to_le_bytes().to_vec()].concat()
    }

    fn check(extents: &[ChunkExtent], data_blocks: usize) -> Result<CheckedChunk, FormatError> {
        let bytes = record(extents, data_blocks);
        ChunkRecord::new(&bytes, 512, 4096)?.check_extents(&sample())
    }

    fn reason(r: Result<CheckedChunk, FormatError>) -> String {
        match r {
            Err(FormatError::BadChunk { reason, .. }) => reason,
            other => panic!("expected a bad chunk, got {other:?}"),
        }
    }

    #[test]
    fn valid_extents_give_span_and_counts() {
        let c = check(&[ce(10, 2, false), ce(12, 3, true), ce(20, 1, false)], 3).unwrap();
        assert_eq!((c.first_block, c.end_block), (10, 21));
        assert_eq!((c.blocks, c.zero_blocks), (3, 3));
        assert_eq!(c.span(4).seq, 4);
    }

    #[test]
    fn broken_extent_lists_are_named() {
        // The sample header's source has 1000 blocks.
        let cases: &[(&[ChunkExtent], usize, &str)] = &[
            (&[ce(5, 0, false)], 0, "empty extent at block 5"),
            (&[ce(998, 3, false)], 3, "lies outside the 1000 blocks"),
            (&[ce(10, 5, false), ce(12, 5, false)], 10, "does not follow"),
            (&[ce(10, 5, false), ce(15, 5, false)], 10, "does not follow"),
            (&[ce(10, 5, true), ce(15, 5, true)], 0, "does not follow"),
            (&[ce(10, 5, false)], 4, "raw length is 16384 bytes"),
        ];
        for (extents, data, want) in cases {
            let got = reason(check(extents, *data));
            assert!(got.contains(want), "{extents:?}: {got}");
        }
        // Touching is allowed only between a data and a zero extent.
        check(&[ce(10, 5, false), ce(15, 5, true)], 5).unwrap();
    }

    #[test]
    fn every_check_runs_before_the_data_is_used() {
        let bytes = record(&[ce(0, 2, false)], 2);
        let hdr = sample();
        let mut dctx = zstd::bulk::Decompressor::new().unwrap();
        let mut out = Vec::new();
        let rec = ChunkRecord::new(&bytes, 512, 4096).unwrap();
        let c = rec.check(&hdr, None, &mut dctx, &mut out).unwrap();
        assert_eq!(out.len(), 2 * 4096);
        // An index entry that disagrees (span, then hash) is refused.
        let mut entry = IndexEntry {
            offset: 512,
            first_block: 0,
            end_block: 3,
            raw_len: 8192,
            n_extents: 1,
            hash: chunk_hash(&bytes),
            content_hash: None,
        };
        let span = rec.check(&hdr, Some(&entry), &mut dctx, &mut out);
        assert!(
            format!("{span:?}").contains("block span differs"),
            "{span:?}"
        );
        entry.end_block = c.end_block;
        entry.hash ^= 1;
        let hash = rec.check(&hdr, Some(&entry), &mut dctx, &mut out);
        assert!(format!("{hash:?}").contains("hash differs"), "{hash:?}");
        // A flipped payload byte fails the CRC first.
        let mut bad = bytes.clone();
        let at = bad.len() - 10;
        bad[at] ^= 1;
        let rec = ChunkRecord::new(&bad, 512, 4096).unwrap();
        assert!(matches!(
            rec.check(&hdr, None, &mut dctx, &mut out),
            Err(FormatError::ChunkCrc { .. })
        ));
    }
}
