//! The index record and the trailer (docs/FORMAT.md, "Index record", "Trailer").

use byteorder::{ByteOrder, LittleEndian};

use super::header::Version;
use super::{FormatError, le_u32, le_u64, le_u128};

/// Index record magic.
pub const INDEX_MAGIC: [u8; 4] = *b"INDX";
/// Fixed part of the index record before the entries.
pub const INDEX_HEAD_LEN: usize = 16;
/// One index entry of a version 1 image.
pub const ENTRY_LEN_V1: usize = 48;
/// One index entry of a version 2 image (with the content hash).
pub const ENTRY_LEN_V2: usize = 64;
/// The largest entry.
const ENTRY_LEN_MAX: usize = ENTRY_LEN_V2;

/// Bytes of one index entry in an image of `version`.
pub fn entry_len(version: Version) -> usize {
    if version.has_content_hashes() {
        ENTRY_LEN_V2
    } else {
        ENTRY_LEN_V1
    }
}
/// Trailer size.
pub const TRAILER_LEN: usize = 72;
/// Trailer field offsets (docs/FORMAT.md, "Trailer").
const DIGEST: usize = 48;
const RESERVED: usize = 64;
const CRC: usize = 68;
/// Trailer magic.
pub const TRAILER_MAGIC: [u8; 8] = *b"RIMGEND\0";

/// Where a chunk is and what it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// Byte offset of the chunk record.
    pub offset: u64,
    /// First block.
    pub first_block: u64,
    /// One past the last block.
    pub end_block: u64,
    /// Uncompressed bytes.
    pub raw_len: u32,
    /// Number of extents.
    pub n_extents: u32,
    /// XXH3-128 of the record.
    pub hash: u128,
    /// XXH3-128 of the chunk's content as restored (version 2; see [`super::digest::content_hash`]).
    pub content_hash: Option<u128>,
}

impl IndexEntry {
    /// Decodes one entry (`raw` is exactly [`entry_len`] bytes for the image's version).
    fn decode(raw: &[u8]) -> Self {
        Self {
            offset: le_u64(raw, 0),
            first_block: le_u64(raw, 8),
            end_block: le_u64(raw, 16),
            raw_len: le_u32(raw, 24),
            n_extents: le_u32(raw, 28),
            hash: le_u128(raw, 32),
            content_hash: (raw.len() == ENTRY_LEN_V2).then(|| le_u128(raw, 48)),
        }
    }

    fn encode(&self, out: &mut [u8]) {
        LittleEndian::write_u64(&mut out[0..], self.offset);
        LittleEndian::write_u64(&mut out[8..], self.first_block);
        LittleEndian::write_u64(&mut out[16..], self.end_block);
        LittleEndian::write_u32(&mut out[24..], self.raw_len);
        LittleEndian::write_u32(&mut out[28..], self.n_extents);
        LittleEndian::write_u128(&mut out[32..], self.hash);
        if out.len() == ENTRY_LEN_V2 {
            LittleEndian::write_u128(&mut out[48..], self.content_hash.unwrap_or_default());
        }
    }
}

/// Byte length of an index record with `count` entries in an image of `version`, if
/// representable.
pub fn index_len(count: u64, version: Version) -> Option<u64> {
    count
        .checked_mul(entry_len(version) as u64)?
        .checked_add((INDEX_HEAD_LEN + 4) as u64)
}

/// Encodes the index record of an image of `version`.
pub fn encode_index(entries: &[IndexEntry], version: Version) -> Vec<u8> {
    let len = entry_len(version);
    let mut out = Vec::with_capacity(INDEX_HEAD_LEN + entries.len() * len + 4);
    out.extend_from_slice(&INDEX_MAGIC);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    let mut buf = [0u8; ENTRY_LEN_MAX];
    for e in entries {
        e.encode(&mut buf[..len]);
        out.extend_from_slice(&buf[..len]);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads the chunk count from the fixed part of an index record found at `offset`.
///
/// # Errors
/// [`FormatError::BadRecordMagic`] or [`FormatError::BadIndex`].
pub fn decode_index_head(raw: &[u8; INDEX_HEAD_LEN], offset: u64) -> Result<u64, FormatError> {
    if raw[..4] != INDEX_MAGIC {
        return Err(FormatError::BadRecordMagic { offset });
    }
    if le_u32(raw, 4) != 0 {
        return Err(FormatError::BadIndex("unknown flags".into()));
    }
    Ok(le_u64(raw, 8))
}

/// Decodes a whole index record of an image of `version` (its length already matched to its
/// count by the caller).
///
/// # Errors
/// [`FormatError::BadIndex`] for a CRC or length mismatch.
pub fn decode_index(
    raw: &[u8],
    offset: u64,
    version: Version,
) -> Result<Vec<IndexEntry>, FormatError> {
    let head: &[u8; INDEX_HEAD_LEN] = raw
        .get(..INDEX_HEAD_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(FormatError::Truncated {
            what: "index",
            offset,
        })?;
    let count = decode_index_head(head, offset)?;
    if index_len(count, version) != Some(raw.len() as u64) {
        return Err(FormatError::BadIndex(format!(
            "{count} entries do not fit its {} bytes",
            raw.len()
        )));
    }
    let body = raw.len() - 4;
    if le_u32(raw, body) != crc32fast::hash(&raw[..body]) {
        return Err(FormatError::BadIndex("CRC mismatch".into()));
    }
    Ok(raw[INDEX_HEAD_LEN..body]
        .chunks_exact(entry_len(version))
        .map(IndexEntry::decode)
        .collect())
}

/// The last 64 bytes of an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// Byte offset of the index record.
    pub index_offset: u64,
    /// Byte length of the index record.
    pub index_len: u64,
    /// Number of chunks.
    pub chunk_count: u64,
    /// Blocks stored.
    pub stored_blocks: u64,
    /// Blocks of zero extents (used, not stored, must read as zeros).
    pub zero_blocks: u64,
    /// Whole-image digest.
    pub digest: u128,
}

impl Trailer {
    /// Decodes the trailer of an image of `version`.
    ///
    /// # Errors
    /// [`FormatError::BadTrailer`].
    pub fn decode(raw: &[u8; TRAILER_LEN], version: Version) -> Result<Self, FormatError> {
        if raw[..8] != TRAILER_MAGIC {
            return Err(FormatError::BadTrailer(
                "no trailer magic at the end of the image (incomplete image?)",
            ));
        }
        if le_u32(raw, CRC) != crc32fast::hash(&raw[..CRC]) {
            return Err(FormatError::BadTrailer("CRC mismatch"));
        }
        if le_u32(raw, RESERVED) != 0 {
            return Err(FormatError::BadTrailer("reserved bytes are not zero"));
        }
        let t = Self {
            index_offset: le_u64(raw, 8),
            index_len: le_u64(raw, 16),
            chunk_count: le_u64(raw, 24),
            stored_blocks: le_u64(raw, 32),
            zero_blocks: le_u64(raw, 40),
            digest: le_u128(raw, DIGEST),
        };
        if index_len(t.chunk_count, version) != Some(t.index_len) {
            return Err(FormatError::BadTrailer(
                "index length does not match the chunk count",
            ));
        }
        Ok(t)
    }

    /// Encodes the trailer.
    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut raw = [0u8; TRAILER_LEN];
        raw[..8].copy_from_slice(&TRAILER_MAGIC);
        LittleEndian::write_u64(&mut raw[8..], self.index_offset);
        LittleEndian::write_u64(&mut raw[16..], self.index_len);
        LittleEndian::write_u64(&mut raw[24..], self.chunk_count);
        LittleEndian::write_u64(&mut raw[32..], self.stored_blocks);
        LittleEndian::write_u64(&mut raw[40..], self.zero_blocks);
        LittleEndian::write_u128(&mut raw[DIGEST..], self.digest);
        let crc = crc32fast::hash(&raw[..CRC]);
        LittleEndian::write_u32(&mut raw[CRC..], crc);
        raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trip_and_crc() {
        let entries: Vec<IndexEntry> = (0..5)
            .map(|i| IndexEntry {
                offset: 512 + i * 1000,
                first_block: i * 10,
                end_block: i * 10 + 5,
                raw_len: 5 * 4096,
                n_extents: 1,
                hash: u128::from(i) << 64 | 7,
                content_hash: Some(u128::from(i) * 3),
            })
            .collect();
        for version in [Version::V1, Version::V2] {
            let entries: Vec<IndexEntry> = entries
                .iter()
                .map(|e| IndexEntry {
                    content_hash: e.content_hash.filter(|_| version.has_content_hashes()),
                    ..*e
                })
                .collect();
            let raw = encode_index(&entries, version);
            assert_eq!(raw.len() as u64, index_len(5, version).unwrap());
            assert_eq!(decode_index(&raw, 0, version).unwrap(), entries);
            for i in 0..raw.len() {
                let mut bad = raw.clone();
                bad[i] ^= 1;
                assert!(
                    decode_index(&bad, 0, version).is_err(),
                    "flip at {i} accepted"
                );
            }
        }
    }

    #[test]
    fn trailer_round_trip() {
        let t = Trailer {
            index_offset: 4096,
            index_len: index_len(3, Version::V2).unwrap(),
            chunk_count: 3,
            stored_blocks: 99,
            zero_blocks: 5,
            digest: 0x1234,
        };
        assert_eq!(Trailer::decode(&t.encode(), Version::V2).unwrap(), t);
        assert!(
            Trailer::decode(&t.encode(), Version::V1).is_err(),
            "a v2 index length is not a v1 one"
        );
        for i in 0..TRAILER_LEN {
            let mut bad = t.encode();
            bad[i] ^= 0x40;
            assert!(
                Trailer::decode(&bad, Version::V2).is_err(),
                "flip at {i} accepted"
            );
        }
    }
}
