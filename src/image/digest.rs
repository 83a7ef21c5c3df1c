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

    /// Adds the next chunk's hash.
    pub fn add_chunk(&mut self, hash: u128) {
        self.0.update(&hash.to_le_bytes());
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
