//! The image format (docs/FORMAT.md): header, chunk records, index, trailer, digest.
//!
//! These modules know bytes only: no threads, no devices. Every decoder takes a bounded slice
//! (fixed-size arrays where the structure has a fixed size) and returns a typed
//! [`FormatError`] naming the offset or chunk; every length read from an image is checked against
//! the limits below before anything is allocated for it.

pub mod chunk;
pub mod digest;
pub mod header;
pub mod index;
pub mod layout;
pub mod stream;
pub mod writer;

use byteorder::{ByteOrder, LittleEndian};
use thiserror::Error;

pub use chunk::{ChunkHeader, ChunkRecord};
pub use header::{Compression, Header, Unstored, Version};
pub use index::{IndexEntry, Trailer};
pub use layout::{Ends, ImageFile, Layout};

/// Largest uncompressed chunk.
pub const MAX_CHUNK_RAW: u32 = 64 << 20;
/// Smallest chunk target size a writer accepts.
pub const MIN_CHUNK_TARGET: u32 = 64 << 10;
/// Most extents in one chunk.
pub const MAX_CHUNK_EXTENTS: u32 = 65536;
/// Smallest block size.
pub const MIN_BLOCK_SIZE: u32 = 512;
/// Largest block size.
pub const MAX_BLOCK_SIZE: u32 = 65536;

/// zstd's worst-case compressed size for `len` input bytes (ZSTD_COMPRESSBOUND).
pub fn compress_bound(len: u32) -> u32 {
    let len = u64::from(len);
    let margin = if len < (128 << 10) {
        ((128 << 10) - len) >> 11
    } else {
        0
    };
    u32::try_from(len + (len >> 8) + margin).expect("bounded by MAX_CHUNK_RAW")
}

/// Largest chunk record any valid image contains.
pub fn max_record_len() -> u64 {
    chunk::CHUNK_HEADER_LEN as u64
        + 12 * u64::from(MAX_CHUNK_EXTENTS)
        + u64::from(compress_bound(MAX_CHUNK_RAW))
        + 4
}

/// A chunk's identity in error messages: its number and block range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkId {
    /// Sequence number.
    pub seq: u64,
    /// Byte offset of the record in the image.
    pub offset: u64,
    /// First block covered, when known.
    pub first_block: Option<u64>,
    /// One past the last block covered, when known.
    pub end_block: Option<u64>,
}

impl std::fmt::Display for ChunkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "chunk {} at byte offset {}", self.seq, self.offset)?;
        if let (Some(a), Some(b)) = (self.first_block, self.end_block) {
            write!(f, " (blocks {a}..{b})")?;
        }
        Ok(())
    }
}

/// Something wrong with the bytes of an image.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FormatError {
    /// Not a rimage image at all.
    #[error("not a rimage image (bad magic at byte offset 0)")]
    NotAnImage,
    /// A version this reader does not know.
    #[error("unsupported image version {0} (this rimage reads versions 1 and 2)")]
    UnsupportedVersion(u16),
    /// The header's CRC does not match.
    #[error("header checksum mismatch (image header corrupt)")]
    HeaderChecksum,
    /// A header field is out of range.
    #[error("corrupt header: {0}")]
    BadHeader(&'static str),
    /// The image ends inside a structure.
    #[error("image truncated: it ends inside the {what} at byte offset {offset}")]
    Truncated {
        /// Which structure.
        what: &'static str,
        /// Where that structure starts.
        offset: u64,
    },
    /// Expected a chunk record, index or trailer and found something else.
    #[error("unexpected bytes at byte offset {offset}: expected a chunk record or the index")]
    BadRecordMagic {
        /// Where.
        offset: u64,
    },
    /// A chunk record's fields break the format's limits or rules.
    #[error("{chunk}: {reason}")]
    BadChunk {
        /// Which chunk.
        chunk: ChunkId,
        /// What is wrong.
        reason: String,
    },
    /// A chunk record's CRC does not match.
    #[error("{chunk}: CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    ChunkCrc {
        /// Which chunk.
        chunk: ChunkId,
        /// The CRC in the record.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// The payload does not decompress to what the record says.
    #[error("{chunk}: payload does not decompress: {reason}")]
    Decompress {
        /// Which chunk.
        chunk: ChunkId,
        /// zstd's message, or the length mismatch.
        reason: String,
    },
    /// The index record is corrupt or disagrees with the chunks.
    #[error("index: {0}")]
    BadIndex(String),
    /// The trailer is corrupt.
    #[error("trailer: {0}")]
    BadTrailer(&'static str),
    /// The trailer's counts disagree with the chunks.
    #[error("trailer: says {trailer} {what}, the chunks hold {chunks}")]
    TrailerMismatch {
        /// What is counted.
        what: &'static str,
        /// The trailer's count.
        trailer: u64,
        /// The chunks' count.
        chunks: u64,
    },
    /// The whole-image digest does not match.
    #[error("whole-image digest mismatch (stored {stored:032x}, computed {computed:032x})")]
    Digest {
        /// Digest in the trailer.
        stored: u128,
        /// Digest of the image.
        computed: u128,
    },
}

fn le_u16(b: &[u8], off: usize) -> u16 {
    LittleEndian::read_u16(&b[off..off + 2])
}

fn le_u32(b: &[u8], off: usize) -> u32 {
    LittleEndian::read_u32(&b[off..off + 4])
}

fn le_u64(b: &[u8], off: usize) -> u64 {
    LittleEndian::read_u64(&b[off..off + 8])
}

fn le_u128(b: &[u8], off: usize) -> u128 {
    LittleEndian::read_u128(&b[off..off + 16])
}
