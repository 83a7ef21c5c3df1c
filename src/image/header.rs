//! The 512-byte image header (docs/FORMAT.md, "Header").

use byteorder::{ByteOrder, LittleEndian};

use super::{FormatError, MAX_BLOCK_SIZE, MAX_CHUNK_RAW, MIN_BLOCK_SIZE, le_u16, le_u32, le_u64};
use crate::fs::{FsType, Identity, Uuid};

/// Size of the header.
pub const HEADER_LEN: usize = 512;
/// The image magic: a high byte, a name, CR LF and ^Z catch text-mode and 7-bit damage.
pub const MAGIC: [u8; 8] = *b"\x89RIMG\r\n\x1a";

const VERSION: usize = 8;
const HEADER_SIZE: usize = 10;
const SOURCE_TYPE: usize = 12;
const COMPRESSION: usize = 13;
const UNSTORED: usize = 14;
const BLOCK_SIZE: usize = 16;
const CHUNK_TARGET: usize = 20;
const TOTAL_BLOCKS: usize = 24;
const USED_BLOCKS: usize = 32;
const SOURCE_SIZE: usize = 40;
const UUID: usize = 48;
const LABEL: usize = 64;
const LABEL_LEN: usize = 64;
const CREATED: usize = 128;
const LEVEL: usize = 136;
const FLAGS: usize = 140;
const WRITER: usize = 144;
const WRITER_LEN: usize = 32;
const CRC: usize = 508;

/// Header flag: the source was not clean and was saved with `--force`.
pub const FLAG_FORCED_UNCLEAN: u32 = 1;

/// Seconds since the epoch now, as the header's `created` holds it.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Image format versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// The first: chunk records, index, trailer, digest.
    V1,
    /// Adds a content hash per chunk to the index (delta restore, drift check).
    V2,
}

impl Version {
    /// The version this rimage writes.
    pub const CURRENT: Self = Self::V2;

    fn decode(v: u16) -> Result<Self, FormatError> {
        match v {
            1 => Ok(Self::V1),
            2 => Ok(Self::V2),
            other => Err(FormatError::UnsupportedVersion(other)),
        }
    }

    fn encode(self) -> u16 {
        match self {
            Self::V1 => 1,
            Self::V2 => 2,
        }
    }

    /// Whether the index carries each chunk's content hash.
    pub fn has_content_hashes(self) -> bool {
        self >= Self::V2
    }

    /// The number, as the header stores it.
    pub fn number(self) -> u16 {
        self.encode()
    }
}

/// How chunk payloads are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// One zstd frame per chunk.
    Zstd,
}

/// What blocks that are not stored mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unstored {
    /// Free space: restore leaves it as it is unless asked to zero it.
    Free,
    /// Zeros: restore must make them read as zeros.
    Zero,
}

/// The decoded header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version.
    pub version: Version,
    /// Source type.
    pub source_type: FsType,
    /// Compression.
    pub compression: Compression,
    /// Meaning of blocks not stored.
    pub unstored: Unstored,
    /// Block size in bytes.
    pub block_size: u32,
    /// Chunk target size (uncompressed bytes).
    pub chunk_target: u32,
    /// Blocks of the source.
    pub total_blocks: u64,
    /// Blocks the source's allocation map marks used (raw: all).
    pub used_blocks: u64,
    /// Source size in bytes.
    pub source_size: u64,
    /// Filesystem UUID, or a FAT volume id in the first 4 bytes (all zeros when none): see
    /// [`FsType::id_text`].
    pub uuid: Uuid,
    /// Label.
    pub label: String,
    /// Seconds since the epoch.
    pub created: i64,
    /// zstd level.
    pub level: i32,
    /// Flags (`FLAG_*`).
    pub flags: u32,
    /// Writer name and version.
    pub writer: String,
}

impl serde::Serialize for Header {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        /// The fields, with the identifier spelled as the source type spells it.
        #[derive(serde::Serialize)]
        struct Shown<'a> {
            source_type: FsType,
            compression: Compression,
            unstored: Unstored,
            block_size: u32,
            chunk_target: u32,
            total_blocks: u64,
            used_blocks: u64,
            source_size: u64,
            uuid: String,
            label: &'a str,
            created: i64,
            level: i32,
            flags: u32,
            writer: &'a str,
        }
        Shown {
            source_type: self.source_type,
            compression: self.compression,
            unstored: self.unstored,
            block_size: self.block_size,
            chunk_target: self.chunk_target,
            total_blocks: self.total_blocks,
            used_blocks: self.used_blocks,
            source_size: self.source_size,
            uuid: self.source_type.id_text(&self.uuid),
            label: &self.label,
            created: self.created,
            level: self.level,
            flags: self.flags,
            writer: &self.writer,
        }
        .serialize(s)
    }
}

fn text(raw: &[u8]) -> Result<String, FormatError> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8(raw[..end].to_vec())
        .map_err(|_| FormatError::BadHeader("text field is not UTF-8"))
}

fn put_text(dst: &mut [u8], s: &str) {
    // Truncate on a character boundary so the field stays valid UTF-8.
    let mut end = s.len().min(dst.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    dst[..end].copy_from_slice(&s.as_bytes()[..end]);
}

impl Header {
    /// Decodes and validates a header.
    ///
    /// # Errors
    /// [`FormatError::NotAnImage`], [`FormatError::UnsupportedVersion`],
    /// [`FormatError::HeaderChecksum`] or [`FormatError::BadHeader`].
    pub fn decode(raw: &[u8; HEADER_LEN]) -> Result<Self, FormatError> {
        if raw[..8] != MAGIC {
            return Err(FormatError::NotAnImage);
        }
        // The version comes before the checksum: a newer format may checksum differently.
        let version = Version::decode(le_u16(raw, VERSION))?;
        if le_u32(raw, CRC) != crc32fast::hash(&raw[..CRC]) {
            return Err(FormatError::HeaderChecksum);
        }
        if usize::from(le_u16(raw, HEADER_SIZE)) != HEADER_LEN {
            return Err(FormatError::BadHeader("header size is not 512"));
        }
        let compression = match raw[COMPRESSION] {
            1 => Compression::Zstd,
            _ => return Err(FormatError::BadHeader("unknown compression")),
        };
        let unstored = match raw[UNSTORED] {
            0 => Unstored::Free,
            1 => Unstored::Zero,
            _ => return Err(FormatError::BadHeader("unknown meaning of unstored blocks")),
        };
        let block_size = le_u32(raw, BLOCK_SIZE);
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) || !block_size.is_power_of_two()
        {
            return Err(FormatError::BadHeader(
                "block size is not a power of two from 512 to 65536",
            ));
        }
        let chunk_target = le_u32(raw, CHUNK_TARGET);
        if chunk_target == 0
            || chunk_target > MAX_CHUNK_RAW
            || !chunk_target.is_multiple_of(block_size)
        {
            return Err(FormatError::BadHeader("chunk target size is out of range"));
        }
        let total_blocks = le_u64(raw, TOTAL_BLOCKS);
        let used_blocks = le_u64(raw, USED_BLOCKS);
        let source_size = le_u64(raw, SOURCE_SIZE);
        if used_blocks > total_blocks {
            return Err(FormatError::BadHeader("more used blocks than blocks"));
        }
        let bs = u64::from(block_size);
        let Some(span) = total_blocks.checked_mul(bs) else {
            return Err(FormatError::BadHeader("total size overflows"));
        };
        if span < source_size || span - source_size >= bs {
            return Err(FormatError::BadHeader(
                "total blocks do not match the source size",
            ));
        }
        Ok(Self {
            version,
            source_type: FsType::from_code(raw[SOURCE_TYPE])
                .ok_or(FormatError::BadHeader("unknown source type"))?,
            compression,
            unstored,
            block_size,
            chunk_target,
            total_blocks,
            used_blocks,
            source_size,
            uuid: Uuid(raw[UUID..UUID + 16].try_into().expect("16 bytes")),
            label: text(&raw[LABEL..LABEL + LABEL_LEN])?,
            created: le_u64(raw, CREATED) as i64,
            level: le_u32(raw, LEVEL) as i32,
            flags: le_u32(raw, FLAGS),
            writer: text(&raw[WRITER..WRITER + WRITER_LEN])?,
        })
    }

    /// Encodes the header, CRC included.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut raw = [0u8; HEADER_LEN];
        raw[..8].copy_from_slice(&MAGIC);
        LittleEndian::write_u16(&mut raw[VERSION..], self.version.encode());
        LittleEndian::write_u16(&mut raw[HEADER_SIZE..], HEADER_LEN as u16);
        raw[SOURCE_TYPE] = self
            .source_type
            .code()
            .expect("images are made of sources with a type code");
        raw[COMPRESSION] = match self.compression {
            Compression::Zstd => 1,
        };
        raw[UNSTORED] = match self.unstored {
            Unstored::Free => 0,
            Unstored::Zero => 1,
        };
        LittleEndian::write_u32(&mut raw[BLOCK_SIZE..], self.block_size);
        LittleEndian::write_u32(&mut raw[CHUNK_TARGET..], self.chunk_target);
        LittleEndian::write_u64(&mut raw[TOTAL_BLOCKS..], self.total_blocks);
        LittleEndian::write_u64(&mut raw[USED_BLOCKS..], self.used_blocks);
        LittleEndian::write_u64(&mut raw[SOURCE_SIZE..], self.source_size);
        raw[UUID..UUID + 16].copy_from_slice(&self.uuid.0);
        put_text(&mut raw[LABEL..LABEL + LABEL_LEN], &self.label);
        LittleEndian::write_i64(&mut raw[CREATED..], self.created);
        LittleEndian::write_i32(&mut raw[LEVEL..], self.level);
        LittleEndian::write_u32(&mut raw[FLAGS..], self.flags);
        put_text(&mut raw[WRITER..WRITER + WRITER_LEN], &self.writer);
        let crc = crc32fast::hash(&raw[..CRC]);
        LittleEndian::write_u32(&mut raw[CRC..], crc);
        raw
    }

    /// Who the source was, as its filesystem would identify itself.
    pub fn identity(&self) -> Identity {
        Identity {
            kind: self.source_type,
            uuid: (self.uuid != Uuid::default()).then(|| self.source_type.id_text(&self.uuid)),
            label: (!self.label.is_empty()).then(|| self.label.clone()),
            page_size: None,
            block_size: (self.source_type != FsType::Raw).then_some(self.block_size),
        }
    }

    /// Whether the first bytes of a file look like an image (magic only).
    pub fn sniff(first: &[u8]) -> bool {
        first.len() >= 8 && first[..8] == MAGIC
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Header {
        Header {
            version: Version::V1,
            source_type: FsType::Ext4,
            compression: Compression::Zstd,
            unstored: Unstored::Free,
            block_size: 4096,
            chunk_target: 4 << 20,
            total_blocks: 1000,
            used_blocks: 10,
            source_size: 4096 * 1000,
            uuid: Uuid([7; 16]),
            label: "röot".into(),
            created: 1_700_000_000,
            level: 3,
            flags: 0,
            writer: "rimage test".into(),
        }
    }

    #[test]
    fn round_trip() {
        let h = sample();
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn every_single_byte_flip_is_caught() {
        let raw = sample().encode();
        for i in 0..HEADER_LEN {
            let mut bad = raw;
            bad[i] ^= 0x10;
            assert!(
                Header::decode(&bad).is_err(),
                "flip at byte {i} was accepted"
            );
        }
    }

    #[test]
    fn unknown_version_is_named() {
        let mut raw = sample().encode();
        raw[VERSION] = 9;
        assert_eq!(
            Header::decode(&raw),
            Err(FormatError::UnsupportedVersion(9))
        );
    }
}
