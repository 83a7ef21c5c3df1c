//! partclone image files, formats 0001 and 0002: header, bitmap and the checksummed block
//! stream. Bytes only: everything is read from a `Read` as it arrives, every number the file
//! claims is checked before it is used, and every failure is an [`ImportError`] naming the
//! byte offset (in the decompressed stream) and, for data, the block.
//!
//! The layouts, as partclone 0.3 writes and reads them (`src/partclone.h`, `partclone.c`,
//! `checksum.c`), all integers little-endian:
//!
//! - 0002: a 110-byte descriptor (head 36, filesystem info 52, options 18, CRC32 4), the bitmap
//!   (bit: one bit per block, LSB first, then a CRC32 of it; byte: one byte per block, 1 =
//!   used, then `BiTmAgIc`), then the used blocks in ascending order with a checksum after
//!   every `blocks_per_checksum` blocks and one after the last, shorter group.
//! - 0001: a 4160-byte descriptor (head 36, filesystem info 28, 4096 unused option bytes), a
//!   byte bitmap with `BiTmAgIc`, then each used block followed by a 4-byte CRC32 computed by
//!   0001's CRC (see [`Checksum::Crc32V1`]).
//!
//! partclone's CRC32 is the reflected IEEE CRC with initial register `0xFFFFFFFF` and no final
//! inversion; XXH64 has seed 0; XXH128 is XXH3-128 with seed 0, stored low 64 bits first.

use std::io::{self, Read};

use thiserror::Error;
use xxhash_rust::xxh3::Xxh3;
use xxhash_rust::xxh64::Xxh64;

/// `partclone-image` at offset 0 of both formats.
pub const MAGIC: &[u8; 15] = b"partclone-image";
/// The byte-bitmap terminator.
const BIT_MAGIC: &[u8; 8] = b"BiTmAgIc";
/// Where both formats keep their four ASCII version digits.
const VERSION_AT: usize = 30;
/// Descriptor lengths.
pub const DESC_V2_LEN: usize = 110;
/// Format 0001: head, filesystem info, then 4096 bytes of options partclone never used.
pub const DESC_V1_LEN: usize = 4160;
/// 0002's endianness mark as a little-endian machine writes it (0xC0DE).
const ENDIAN_LE: u16 = 0xC0DE;

/// Most blocks an imported image may have: its bitmap is kept in memory (4 GiB at this
/// limit, 128 TiB of 4 KiB blocks), and it bounds what a header can make us read.
pub const MAX_TOTAL_BLOCKS: u64 = 1 << 35;
/// Block sizes rimage's format holds (`docs/FORMAT.md`).
pub const MIN_BLOCK_SIZE: u32 = 512;
/// See [`MIN_BLOCK_SIZE`].
pub const MAX_BLOCK_SIZE: u32 = 65536;
/// Bytes of a bitmap read at a time, so memory grows only with bytes that arrived.
const BITMAP_PIECE: usize = 1 << 16;

/// Why a partclone image cannot be imported. Offsets are in the decompressed image stream.
#[derive(Debug, Error)]
pub enum ImportError {
    /// The magic is missing.
    #[error("not a partclone image (no \"partclone-image\" magic at byte 0)")]
    NotPartclone,
    /// A version this reader does not know.
    #[error("partclone image format {0:?} is not supported (0001 and 0002 are)")]
    UnsupportedVersion(String),
    /// The 0002 descriptor's CRC32 does not match.
    #[error(
        "the partclone header checksum does not match (stored {stored:#010x}, computed {computed:#010x}, at byte offset 106)"
    )]
    HeaderChecksum {
        /// Stored.
        stored: u32,
        /// Computed.
        computed: u32,
    },
    /// A descriptor field is impossible or unsupported.
    #[error("partclone header field {field} (at byte offset {offset}): {reason}")]
    BadHeader {
        /// The field, as partclone names it.
        field: &'static str,
        /// Where it is.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The bitmap's CRC32 does not match.
    #[error(
        "the partclone bitmap checksum at byte offset {offset} does not match (stored {stored:#010x}, computed {computed:#010x})"
    )]
    BitmapChecksum {
        /// Where the stored CRC is.
        offset: u64,
        /// Stored.
        stored: u32,
        /// Computed.
        computed: u32,
    },
    /// A byte bitmap is not followed by `BiTmAgIc`.
    #[error("the partclone byte bitmap is not followed by \"BiTmAgIc\" at byte offset {offset}")]
    BitmapMagic {
        /// Where the magic should be.
        offset: u64,
    },
    /// A data checksum does not match.
    #[error(
        "partclone checksum mismatch for block {block} (blocks {first}..={block}; checksum at byte offset {offset})"
    )]
    Checksum {
        /// The last block the checksum covers.
        block: u64,
        /// The first block it covers.
        first: u64,
        /// Where the stored checksum is.
        offset: u64,
    },
    /// The stream ends early.
    #[error("the partclone image ends at byte offset {offset}, inside {what}")]
    Truncated {
        /// Where it ends.
        offset: u64,
        /// What was being read ("the bitmap", "block 17", ...).
        what: String,
    },
    /// Bytes follow the last checksum.
    #[error("unexpected bytes after the last block, at byte offset {offset}")]
    TrailingData {
        /// Where they start.
        offset: u64,
    },
    /// Reading (or decompressing) the input failed.
    #[error("reading the partclone image failed at byte offset {offset}")]
    Io {
        /// Where.
        offset: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The blocks were asked for out of order (an internal fault of the importer).
    #[error(
        "block {block} was asked for after block {after}: the partclone stream reads forwards only"
    )]
    Backwards {
        /// Asked for.
        block: u64,
        /// Already passed.
        after: u64,
    },
}

/// Image format versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Version {
    /// "0001" (partclone before 0.2.61).
    V1,
    /// "0002".
    V2,
}

/// How data is checksummed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Checksum {
    /// No checksums.
    None,
    /// partclone's CRC32 (mode 0x20).
    Crc32,
    /// XXH64, seed 0 (mode 0x30).
    Xxh64,
    /// XXH3-128, seed 0 (mode 0x31).
    Xxh128,
    /// Format 0001's CRC32: it hashes the first byte of each block block-size times (a missing
    /// pointer increment) and is never reset between blocks.
    Crc32V1,
}

impl Checksum {
    /// Bytes of one stored checksum.
    pub fn size(self) -> u16 {
        match self {
            Self::None => 0,
            Self::Crc32 | Self::Crc32V1 => 4,
            Self::Xxh64 => 8,
            Self::Xxh128 => 16,
        }
    }
}

/// How the bitmap is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum BitmapMode {
    /// No bitmap: every block is stored.
    None,
    /// One bit per block, then a CRC32.
    Bit,
    /// One byte per block, then `BiTmAgIc`.
    Byte,
}

/// A decoded partclone descriptor.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Desc {
    /// Format.
    pub version: Version,
    /// partclone's version (0002 only).
    pub partclone_version: String,
    /// The filesystem field ("EXTFS", "FAT", "NTFS", ...).
    pub fs: String,
    /// Size of the source device in bytes (at least `total_blocks * block_size`).
    pub device_size: u64,
    /// Blocks of the filesystem.
    pub total_blocks: u64,
    /// Used blocks, as the header says (the bitmap decides).
    pub used_blocks: u64,
    /// Bytes per block.
    pub block_size: u32,
    /// Data checksums.
    pub checksum: Checksum,
    /// Blocks covered by one checksum (0 without checksums).
    pub blocks_per_checksum: u32,
    /// Whether the checksum restarts after each one stored.
    pub reseed: bool,
    /// Bitmap encoding.
    pub bitmap: BitmapMode,
    /// Bytes of the descriptor.
    pub len: usize,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).trim().to_string()
}

fn bad(field: &'static str, offset: usize, reason: impl Into<String>) -> ImportError {
    ImportError::BadHeader {
        field,
        offset: offset as u64,
        reason: reason.into(),
    }
}

impl Desc {
    /// The format of a descriptor from its first [`DESC_V2_LEN`] bytes (which both formats
    /// have): checks the magic and version.
    ///
    /// # Errors
    /// [`ImportError::NotPartclone`], [`ImportError::UnsupportedVersion`].
    pub fn version_of(first: &[u8; DESC_V2_LEN]) -> Result<Version, ImportError> {
        if &first[..MAGIC.len()] != MAGIC {
            return Err(ImportError::NotPartclone);
        }
        match &first[VERSION_AT..VERSION_AT + 4] {
            b"0001" => Ok(Version::V1),
            b"0002" => Ok(Version::V2),
            other => Err(ImportError::UnsupportedVersion(
                String::from_utf8_lossy(other).into_owned(),
            )),
        }
    }

    /// Decodes a 0002 descriptor.
    ///
    /// # Errors
    /// As [`Desc::version_of`], a CRC mismatch, or an impossible or unsupported field.
    pub fn decode_v2(raw: &[u8; DESC_V2_LEN]) -> Result<Self, ImportError> {
        if Self::version_of(raw)? != Version::V2 {
            return Err(ImportError::UnsupportedVersion("0001".into()));
        }
        let computed = crc32(CRC_SEED, &raw[..106]);
        let stored = le32(raw, 106);
        if stored != computed {
            return Err(ImportError::HeaderChecksum { stored, computed });
        }
        if le16(raw, 34) != ENDIAN_LE {
            return Err(bad(
                "endianess",
                34,
                "written on a big-endian machine, which this reader does not support",
            ));
        }
        let checksum = match le16(raw, 96) {
            0x00 => Checksum::None,
            0x20 => Checksum::Crc32,
            0x30 => Checksum::Xxh64,
            0x31 => Checksum::Xxh128,
            m => return Err(bad("checksum_mode", 96, format!("unknown mode {m:#x}"))),
        };
        if le16(raw, 98) != checksum.size() {
            return Err(bad(
                "checksum_size",
                98,
                format!(
                    "{} bytes, but {checksum:?} checksums have {}",
                    le16(raw, 98),
                    checksum.size()
                ),
            ));
        }
        let blocks_per_checksum = le32(raw, 100);
        if checksum != Checksum::None && blocks_per_checksum == 0 {
            return Err(bad("blocks_per_checksum", 100, "0 with checksums enabled"));
        }
        let bitmap = match raw[105] {
            0x00 => BitmapMode::None,
            0x01 => BitmapMode::Bit,
            0x08 => BitmapMode::Byte,
            m => return Err(bad("bitmap_mode", 105, format!("unknown mode {m:#x}"))),
        };
        let desc = Self {
            version: Version::V2,
            partclone_version: text(&raw[16..30]),
            fs: text(&raw[36..52]),
            device_size: le64(raw, 52),
            total_blocks: le64(raw, 60),
            used_blocks: le64(raw, 76),
            block_size: le32(raw, 84),
            checksum,
            blocks_per_checksum: if checksum == Checksum::None {
                0
            } else {
                blocks_per_checksum
            },
            reseed: raw[104] != 0,
            bitmap,
            len: DESC_V2_LEN,
        };
        desc.check(84, 60, 76, 52)?;
        Ok(desc)
    }

    /// Decodes a 0001 descriptor.
    ///
    /// # Errors
    /// As [`Desc::version_of`], or an impossible or unsupported field.
    pub fn decode_v1(raw: &[u8; DESC_V1_LEN]) -> Result<Self, ImportError> {
        let first: &[u8; DESC_V2_LEN] = raw[..DESC_V2_LEN].try_into().expect("prefix");
        if Self::version_of(first)? != Version::V1 {
            return Err(ImportError::UnsupportedVersion("0002".into()));
        }
        let desc = Self {
            version: Version::V1,
            partclone_version: String::new(),
            fs: text(&raw[15..30]),
            block_size: le32(raw, 36),
            device_size: le64(raw, 40),
            total_blocks: le64(raw, 48),
            used_blocks: le64(raw, 56),
            checksum: Checksum::Crc32V1,
            blocks_per_checksum: 1,
            reseed: false,
            bitmap: BitmapMode::Byte,
            len: DESC_V1_LEN,
        };
        desc.check(36, 48, 56, 40)?;
        Ok(desc)
    }

    /// The checks both formats share (offsets name the fields in the descriptor).
    fn check(
        &self,
        bs_at: usize,
        total_at: usize,
        used_at: usize,
        dev_at: usize,
    ) -> Result<(), ImportError> {
        let bs = self.block_size;
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bs) || !bs.is_power_of_two() {
            return Err(bad(
                "block_size",
                bs_at,
                format!(
                    "{bs} bytes; rimage images hold blocks of a power of two from 512 to 65536 bytes"
                ),
            ));
        }
        if self.total_blocks > MAX_TOTAL_BLOCKS {
            return Err(bad(
                "totalblock",
                total_at,
                format!(
                    "{} blocks is more than {MAX_TOTAL_BLOCKS}",
                    self.total_blocks
                ),
            ));
        }
        if self.used_blocks > self.total_blocks {
            return Err(bad(
                "usedblocks",
                used_at,
                format!("{} used of {} blocks", self.used_blocks, self.total_blocks),
            ));
        }
        let span = self.total_blocks * u64::from(bs); // bounded above: no overflow
        if span > self.device_size {
            return Err(bad(
                "device_size",
                dev_at,
                format!(
                    "{} bytes, less than the {span} bytes of its blocks",
                    self.device_size
                ),
            ));
        }
        Ok(())
    }

    /// Bytes of the filesystem's blocks.
    pub fn fs_bytes(&self) -> u64 {
        self.total_blocks * u64::from(self.block_size)
    }
}

/// Which blocks the image stores: one bit per block, LSB first, or all of them (kept as a
/// flag, not bits: a header alone must not make us allocate).
#[derive(Clone, PartialEq, Eq)]
pub struct Bitmap {
    /// `None`: every block.
    bits: Option<Vec<u8>>,
    total: u64,
    used: u64,
}

impl Bitmap {
    /// Every block used (partclone's `BM_NONE`).
    pub fn full(total: u64) -> Self {
        Self {
            bits: None,
            total,
            used: total,
        }
    }

    /// From bit bytes (bits past `total` ignored).
    fn from_bits(mut bits: Vec<u8>, total: u64) -> Self {
        mask_tail(&mut bits, total);
        let used = bits.iter().map(|b| u64::from(b.count_ones())).sum();
        Self {
            bits: Some(bits),
            total,
            used,
        }
    }

    /// Blocks.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Used blocks (the bits set).
    pub fn used(&self) -> u64 {
        self.used
    }

    /// The byte holding `block`'s bit (all ones without bits).
    fn byte(&self, block: u64) -> u8 {
        match &self.bits {
            None => 0xFF,
            Some(bits) => usize::try_from(block / 8)
                .ok()
                .and_then(|i| bits.get(i))
                .copied()
                .unwrap_or(0),
        }
    }

    /// Whether `block` is stored.
    pub fn test(&self, block: u64) -> bool {
        block < self.total && self.byte(block) & (1 << (block % 8)) != 0
    }

    /// The first used block at or after `from`.
    pub fn next_used(&self, from: u64) -> Option<u64> {
        let mut b = from;
        while b < self.total {
            let byte = self.byte(b) >> (b % 8);
            if byte != 0 {
                let at = b + u64::from(byte.trailing_zeros());
                return (at < self.total).then_some(at);
            }
            b = (b / 8 + 1) * 8;
        }
        None
    }

    /// The first free block at or after `from` (`total` when none).
    pub fn next_free(&self, from: u64) -> u64 {
        if self.bits.is_none() {
            return self.total;
        }
        let mut b = from;
        while b < self.total {
            let byte = !self.byte(b) >> (b % 8);
            if byte != 0 {
                return (b + u64::from(byte.trailing_zeros())).min(self.total);
            }
            b = (b / 8 + 1) * 8;
        }
        self.total
    }

    /// The last used block.
    pub fn last_used(&self) -> Option<u64> {
        match &self.bits {
            None => self.total.checked_sub(1),
            Some(bits) => {
                let i = bits.iter().rposition(|&b| b != 0)?;
                Some(i as u64 * 8 + 7 - u64::from(bits[i].leading_zeros()))
            }
        }
    }

    /// Runs of used blocks as (start, length), ascending.
    pub fn runs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut at = 0u64;
        std::iter::from_fn(move || {
            let start = self.next_used(at)?;
            let end = self.next_free(start);
            at = end;
            Some((start, end - start))
        })
    }
}

/// Clears the bits past `total` in the last byte.
fn mask_tail(bits: &mut [u8], total: u64) {
    let rem = total % 8;
    if rem != 0
        && let Some(last) = bits.last_mut()
    {
        *last &= (1u8 << rem) - 1;
    }
}

/// A `Read` that counts the bytes it gave, so that errors can say where they are.
pub struct Counted<R> {
    inner: R,
    offset: u64,
}

impl<R: Read> Counted<R> {
    /// Starts counting at 0.
    pub fn new(inner: R) -> Self {
        Self { inner, offset: 0 }
    }

    /// Bytes given so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Fills `buf`; a short stream is [`ImportError::Truncated`] naming `what`.
    fn fill(&mut self, buf: &mut [u8], what: impl FnOnce() -> String) -> Result<(), ImportError> {
        let mut done = 0;
        while done < buf.len() {
            match self.inner.read(&mut buf[done..]) {
                Ok(0) => {
                    return Err(ImportError::Truncated {
                        offset: self.offset,
                        what: what(),
                    });
                }
                Ok(n) => {
                    done += n;
                    self.offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(ImportError::Io {
                        offset: self.offset,
                        source: e,
                    });
                }
            }
        }
        Ok(())
    }

    /// Whether the stream is at its end (reads one byte to find out).
    fn at_end(&mut self) -> Result<bool, ImportError> {
        let mut one = [0u8; 1];
        loop {
            match self.inner.read(&mut one) {
                Ok(0) => return Ok(true),
                Ok(_) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(ImportError::Io {
                        offset: self.offset,
                        source: e,
                    });
                }
            }
        }
    }
}

/// Reads the descriptor.
///
/// # Errors
/// As [`Desc::decode_v2`] / [`Desc::decode_v1`], or a short stream.
pub fn read_desc<R: Read>(r: &mut Counted<R>) -> Result<Desc, ImportError> {
    let mut first = [0u8; DESC_V2_LEN];
    r.fill(&mut first, || "the header".into())?;
    match Desc::version_of(&first)? {
        Version::V2 => Desc::decode_v2(&first),
        Version::V1 => {
            let mut all = [0u8; DESC_V1_LEN];
            all[..DESC_V2_LEN].copy_from_slice(&first);
            r.fill(&mut all[DESC_V2_LEN..], || "the header".into())?;
            Desc::decode_v1(&all)
        }
    }
}

/// Reads the bitmap that follows the descriptor, as bytes arrive (memory grows with the input,
/// never with what the header claims alone).
///
/// # Errors
/// A short stream, a bitmap CRC mismatch or a missing `BiTmAgIc`.
pub fn read_bitmap<R: Read>(r: &mut Counted<R>, desc: &Desc) -> Result<Bitmap, ImportError> {
    let total = desc.total_blocks;
    match desc.bitmap {
        BitmapMode::None => Ok(Bitmap::full(total)),
        BitmapMode::Bit => {
            let len = total.div_ceil(8);
            let mut bits = Vec::new();
            let mut crc = CRC_SEED;
            let mut piece = vec![0u8; BITMAP_PIECE];
            let mut left = len;
            while left > 0 {
                let n = left.min(BITMAP_PIECE as u64) as usize;
                r.fill(&mut piece[..n], || "the bitmap".into())?;
                crc = crc32(crc, &piece[..n]);
                bits.extend_from_slice(&piece[..n]);
                left -= n as u64;
            }
            let offset = r.offset();
            let mut stored = [0u8; 4];
            r.fill(&mut stored, || "the bitmap checksum".into())?;
            let stored = u32::from_le_bytes(stored);
            if stored != crc {
                return Err(ImportError::BitmapChecksum {
                    offset,
                    stored,
                    computed: crc,
                });
            }
            Ok(Bitmap::from_bits(bits, total))
        }
        BitmapMode::Byte => {
            let mut bits = Vec::new();
            let mut piece = vec![0u8; BITMAP_PIECE];
            let mut left = total;
            let mut block = 0u64;
            while left > 0 {
                let n = left.min(BITMAP_PIECE as u64) as usize;
                r.fill(&mut piece[..n], || "the bitmap".into())?;
                for &b in &piece[..n] {
                    if block.is_multiple_of(8) {
                        bits.push(0);
                    }
                    // partclone counts exactly 1 as used, anything else as free.
                    if b == 1 {
                        *bits.last_mut().expect("pushed") |= 1 << (block % 8);
                    }
                    block += 1;
                }
                left -= n as u64;
            }
            let offset = r.offset();
            let mut magic = [0u8; 8];
            r.fill(&mut magic, || "the bitmap's end mark".into())?;
            if &magic != BIT_MAGIC {
                return Err(ImportError::BitmapMagic { offset });
            }
            Ok(Bitmap::from_bits(bits, total))
        }
    }
}

/// partclone's CRC32 register start.
pub const CRC_SEED: u32 = 0xFFFF_FFFF;

/// partclone's CRC32: continues register `reg` over `data` (no final inversion).
pub fn crc32(reg: u32, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(!reg);
    h.update(data);
    !h.finalize()
}

/// The reflected IEEE CRC32 table (0001's CRC needs byte steps, not the fast hasher).
const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut j = 0;
        while j < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
            j += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// 0001's CRC of one block: the block's first byte, `len` times.
pub fn crc32_v1(mut reg: u32, block: &[u8]) -> u32 {
    let b = u32::from(block.first().copied().unwrap_or(0));
    for _ in 0..block.len() {
        reg = (reg >> 8) ^ CRC_TABLE[((reg ^ b) & 0xFF) as usize];
    }
    reg
}

/// The running checksum of the data stream.
enum Running {
    None,
    Crc(u32),
    CrcV1(u32),
    Xxh64(Box<Xxh64>),
    Xxh128(Box<Xxh3>),
}

impl Running {
    fn new(mode: Checksum) -> Self {
        match mode {
            Checksum::None => Self::None,
            Checksum::Crc32 => Self::Crc(CRC_SEED),
            Checksum::Crc32V1 => Self::CrcV1(CRC_SEED),
            Checksum::Xxh64 => Self::Xxh64(Box::new(Xxh64::new(0))),
            Checksum::Xxh128 => Self::Xxh128(Box::new(Xxh3::new())),
        }
    }

    fn update(&mut self, block: &[u8]) {
        match self {
            Self::None => {}
            Self::Crc(r) => *r = crc32(*r, block),
            Self::CrcV1(r) => *r = crc32_v1(*r, block),
            Self::Xxh64(h) => h.update(block),
            Self::Xxh128(h) => h.update(block),
        }
    }

    /// The value as partclone stores it; the state goes on (without reseeding, the next
    /// checksum covers everything from the start).
    fn value(&self, out: &mut [u8; 16]) -> usize {
        match self {
            Self::None => 0,
            Self::Crc(r) | Self::CrcV1(r) => {
                out[..4].copy_from_slice(&r.to_le_bytes());
                4
            }
            Self::Xxh64(h) => {
                out[..8].copy_from_slice(&h.digest().to_le_bytes());
                8
            }
            Self::Xxh128(h) => {
                out.copy_from_slice(&h.digest128().to_le_bytes());
                16
            }
        }
    }
}

/// The used blocks of a partclone image, in ascending order, each checked against its
/// checksum as it passes.
pub struct BlockStream<R> {
    input: Counted<R>,
    desc: Desc,
    bitmap: std::sync::Arc<Bitmap>,
    running: Running,
    in_group: u32,
    group_first: u64,
    /// The next used block to arrive (`None`: all have).
    next: Option<u64>,
    finished: bool,
}

impl<R: Read> BlockStream<R> {
    /// The stream after the bitmap (`input` is positioned there).
    pub fn new(input: Counted<R>, desc: Desc, bitmap: std::sync::Arc<Bitmap>) -> Self {
        let next = bitmap.next_used(0);
        Self {
            input,
            running: Running::new(desc.checksum),
            desc,
            bitmap,
            in_group: 0,
            group_first: 0,
            next,
            finished: false,
        }
    }

    /// The descriptor.
    pub fn desc(&self) -> &Desc {
        &self.desc
    }

    /// The used blocks.
    pub fn bitmap(&self) -> &std::sync::Arc<Bitmap> {
        &self.bitmap
    }

    /// The next block to arrive, if any.
    pub fn peek(&self) -> Option<u64> {
        self.next
    }

    /// Reads the next used block into `buf` (one block long) and returns its number; `None`
    /// after the last.
    ///
    /// # Errors
    /// A short stream naming the block, a checksum mismatch naming the block, a read error.
    pub fn next_block(&mut self, buf: &mut [u8]) -> Result<Option<u64>, ImportError> {
        let Some(block) = self.next else {
            return Ok(None);
        };
        debug_assert_eq!(buf.len(), self.desc.block_size as usize);
        self.input.fill(buf, || format!("block {block}"))?;
        if self.in_group == 0 {
            self.group_first = block;
        }
        self.running.update(buf);
        self.in_group += 1;
        if self.desc.blocks_per_checksum > 0 && self.in_group == self.desc.blocks_per_checksum {
            self.check_sum(block)?;
        }
        self.next = self.bitmap.next_used(block + 1);
        Ok(Some(block))
    }

    /// Reads the stored checksum after `block` and compares.
    fn check_sum(&mut self, block: u64) -> Result<(), ImportError> {
        let mut want = [0u8; 16];
        let n = self.running.value(&mut want);
        let offset = self.input.offset();
        let mut got = [0u8; 16];
        self.input.fill(&mut got[..n], || {
            format!("the checksum after block {block}")
        })?;
        if got[..n] != want[..n] {
            return Err(ImportError::Checksum {
                block,
                first: self.group_first,
                offset,
            });
        }
        self.in_group = 0;
        if self.desc.reseed {
            self.running = Running::new(self.desc.checksum);
        }
        Ok(())
    }

    /// After the last block: the checksum of the last, shorter group, then the end of the
    /// stream.
    ///
    /// # Errors
    /// Blocks not yet read, a checksum mismatch, a short stream, or bytes after the end.
    pub fn finish(&mut self) -> Result<(), ImportError> {
        if self.finished {
            return Ok(());
        }
        if let Some(block) = self.next {
            return Err(ImportError::Truncated {
                offset: self.input.offset(),
                what: format!("the import, which stopped before block {block}"),
            });
        }
        if self.in_group > 0 && self.desc.blocks_per_checksum > 0 {
            let last = self.bitmap.last_used().unwrap_or(0);
            self.check_sum(last)?;
        }
        if !self.input.at_end()? {
            return Err(ImportError::TrailingData {
                offset: self.input.offset(),
            });
        }
        self.finished = true;
        Ok(())
    }
}

/// Rewrites every checksum of a partclone image (the 0002 header CRC, the bitmap CRC or end
/// mark, the data checksums) to match its bytes. The fuzzer's second pass: what lies behind a
/// checksum gets explored too.
#[doc(hidden)]
pub fn repair(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    if out.len() < DESC_V2_LEN {
        return out;
    }
    if &out[VERSION_AT..VERSION_AT + 4] == b"0002" {
        let crc = crc32(CRC_SEED, &out[..106]);
        out[106..110].copy_from_slice(&crc.to_le_bytes());
    }
    let Ok(desc) = read_desc(&mut Counted::new(&out[..])) else {
        return out;
    };
    let mut at = desc.len;
    let total = desc.total_blocks;
    let Ok(total_len) = usize::try_from(total) else {
        return out;
    };
    let bitmap = match desc.bitmap {
        BitmapMode::None => Bitmap::full(total),
        BitmapMode::Bit => {
            let len = total_len.div_ceil(8);
            let Some(end) = at.checked_add(len).filter(|e| e + 4 <= out.len()) else {
                return out;
            };
            let crc = crc32(CRC_SEED, &out[at..end]);
            out[end..end + 4].copy_from_slice(&crc.to_le_bytes());
            let bm = Bitmap::from_bits(out[at..end].to_vec(), total);
            at = end + 4;
            bm
        }
        BitmapMode::Byte => {
            let Some(end) = at.checked_add(total_len).filter(|e| e + 8 <= out.len()) else {
                return out;
            };
            out[end..end + 8].copy_from_slice(BIT_MAGIC);
            let mut bits = vec![0u8; total_len.div_ceil(8)];
            for (i, &b) in out[at..end].iter().enumerate() {
                if b == 1 {
                    bits[i / 8] |= 1 << (i % 8);
                }
            }
            at = end + 8;
            Bitmap::from_bits(bits, total)
        }
    };
    let bs = desc.block_size as usize;
    let cs = usize::from(desc.checksum.size());
    let bpc = desc.blocks_per_checksum;
    let mut running = Running::new(desc.checksum);
    let mut in_group = 0u32;
    let mut next = bitmap.next_used(0);
    while let Some(b) = next {
        if at + bs > out.len() {
            break;
        }
        running.update(&out[at..at + bs]);
        at += bs;
        in_group += 1;
        next = bitmap.next_used(b + 1);
        if bpc > 0 && (in_group == bpc || next.is_none()) {
            if at + cs > out.len() {
                break;
            }
            let mut v = [0u8; 16];
            running.value(&mut v);
            out[at..at + cs].copy_from_slice(&v[..cs]);
            at += cs;
            in_group = 0;
            if desc.reseed {
                running = Running::new(desc.checksum);
            }
        }
    }
    out
}

/// Decodes a whole partclone image held in memory, checking everything; returns the blocks
/// read and the blocks its bitmap marks used.
///
/// # Errors
/// Whatever is wrong with it.
pub fn decode_all(data: &[u8]) -> Result<(u64, u64), ImportError> {
    let mut r = Counted::new(data);
    let desc = read_desc(&mut r)?;
    let bitmap = std::sync::Arc::new(read_bitmap(&mut r, &desc)?);
    let used = bitmap.used();
    let mut buf = vec![0u8; desc.block_size as usize];
    let mut s = BlockStream::new(r, desc, bitmap);
    let mut n = 0;
    while s.next_block(&mut buf)?.is_some() {
        n += 1;
    }
    s.finish()?;
    Ok((n, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bitwise CRC32 register step, the textbook way.
    fn slow_crc(mut reg: u32, data: &[u8]) -> u32 {
        for &b in data {
            reg ^= u32::from(b);
            for _ in 0..8 {
                reg = if reg & 1 != 0 {
                    (reg >> 1) ^ 0xEDB8_8320
                } else {
                    reg >> 1
                };
            }
        }
        reg
    }

    #[test]
    fn crc_is_the_register_without_final_inversion() {
        let data = b"123456789";
        assert_eq!(crc32(CRC_SEED, data), slow_crc(CRC_SEED, data));
        // The standard CRC32 of "123456789" is 0xCBF43926 = !register.
        assert_eq!(!crc32(CRC_SEED, data), 0xCBF4_3926);
        let (a, b) = data.split_at(4);
        assert_eq!(crc32(crc32(CRC_SEED, a), b), crc32(CRC_SEED, data));
    }

    #[test]
    fn v1_crc_repeats_the_first_byte() {
        let block = [7u8, 1, 2, 3];
        assert_eq!(
            crc32_v1(CRC_SEED, &block),
            slow_crc(CRC_SEED, &[7, 7, 7, 7])
        );
    }

    #[test]
    fn bitmap_runs_and_tail() {
        let bm = Bitmap::from_bits(vec![0b1110_0110, 0xFF, 0b0000_0001], 17);
        assert_eq!(bm.used(), 5 + 8 + 1);
        assert_eq!(bm.runs().collect::<Vec<_>>(), vec![(1, 2), (5, 12)]);
        let bm = Bitmap::from_bits(vec![0xFF, 0xFF], 12);
        assert_eq!(bm.used(), 12);
        assert_eq!(bm.runs().collect::<Vec<_>>(), vec![(0, 12)]);
        assert!(!bm.test(12));
        assert_eq!(bm.last_used(), Some(11));
        assert_eq!(Bitmap::full(0).runs().count(), 0);
        assert_eq!(Bitmap::full(10).runs().collect::<Vec<_>>(), vec![(0, 10)]);
        assert_eq!(Bitmap::full(10).last_used(), Some(9));
        let bm = Bitmap::from_bits(vec![0, 0b0100_0000], 16);
        assert_eq!(bm.last_used(), Some(14));
    }
}
