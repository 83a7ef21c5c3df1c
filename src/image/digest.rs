//! The whole-image digest: XXH3-128 over the header and the XXH3-128 of each chunk record.
//!
//! Chunk hashes are computed wherever the chunk's bytes already are (compression workers when
//! saving, checking workers when verifying), in parallel; combining them is a sequential pass
//! over 16 bytes per chunk.

use xxhash_rust::xxh3::{Xxh3, xxh3_128};

use super::header::HEADER_LEN;

/// Hash of one chunk record (all of its bytes).
pub fn chunk_hash(record: &[u8]) -> u128 {
    xxh3_128(record)
}

/// Hash of a chunk record given in pieces (equal to [`chunk_hash`] of their concatenation).
pub fn chunk_hash_parts(parts: &[&[u8]]) -> u128 {
    let mut h = Xxh3::new();
    for p in parts {
        h.update(p);
    }
    h.digest128()
}

/// The content hash of a chunk (format version 2): XXH3-128 over, for each extent in order,
/// its first block (u64), its length word (u32, the zero-extent flag included) and, for a data
/// extent, its blocks; `data` holds the data extents' blocks back to back. It names the blocks
/// as they are after a restore, at their addresses, whatever the compression: a target that
/// already holds them (its blocks at the data extents hash the same, its blocks at the zero
/// extents are zeros) needs nothing from this chunk.
pub fn content_hash(extents: &[super::chunk::ChunkExtent], data: &[u8], block_size: u32) -> u128 {
    let mut h = ContentHasher::new();
    let bs = block_size as usize;
    let mut at = 0usize;
    for e in extents {
        h.extent(e);
        if !e.zero {
            // Callers pass exactly the data extents' bytes; a shorter buffer (a malformed
            // record being built on purpose) hashes what there is.
            let n = (e.extent.len as usize).saturating_mul(bs);
            let end = at.saturating_add(n).min(data.len());
            h.data(&data[at.min(end)..end]);
            at = end;
        }
    }
    h.value()
}

/// Computes a content hash piece by piece (for data read from a target rather than held in one
/// buffer): extents in order, each followed by its data when it is a data extent.
pub struct ContentHasher(Xxh3);

impl ContentHasher {
    /// An empty hash.
    pub fn new() -> Self {
        Self(Xxh3::new())
    }

    /// The next extent's descriptor.
    pub fn extent(&mut self, e: &super::chunk::ChunkExtent) {
        let word = e.extent.len as u32 | if e.zero { super::chunk::ZERO_EXTENT } else { 0 };
        self.0.update(&e.extent.start.to_le_bytes());
        self.0.update(&word.to_le_bytes());
    }

    /// Data of the current data extent (in any number of pieces).
    pub fn data(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The hash.
    pub fn value(&self) -> u128 {
        self.0.digest128()
    }
}

impl Default for ContentHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// Accumulates the whole-image digest.
#[derive(Clone)]
pub struct Digest(Xxh3);

impl Digest {
    /// Starts a digest with the image header.
    pub fn new(header: &[u8; HEADER_LEN]) -> Self {
        let mut h = Xxh3::new();
        h.update(header);
        Self(h)
    }

    /// Adds the next chunk's record hash, and (version 2) its content hash.
    pub fn add_chunk(&mut self, hash: u128, content_hash: Option<u128>) {
        self.0.update(&hash.to_le_bytes());
        if let Some(c) = content_hash {
            self.0.update(&c.to_le_bytes());
        }
    }

    /// The digest so far.
    pub fn value(&self) -> u128 {
        self.0.digest128()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_hash_like_the_whole() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        assert_eq!(
            chunk_hash_parts(&[&data[..10], &data[10..5000], &data[5000..]]),
            chunk_hash(&data)
        );
    }
}
