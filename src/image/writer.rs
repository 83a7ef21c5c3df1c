//! Writes an image sequentially: header, chunk records in order, then index and trailer.

use std::io::{self, Write};

use super::chunk::EncodedChunk;
use super::digest::Digest;
use super::header::{HEADER_LEN, Header, Version};
use super::index::{IndexEntry, Trailer, encode_index};

/// What a finished image holds.
#[derive(Clone, Copy, Debug)]
pub struct WriteSummary {
    /// Chunks written.
    pub chunks: u64,
    /// Blocks stored.
    pub stored_blocks: u64,
    /// Blocks of zero extents.
    pub zero_blocks: u64,
    /// Bytes of the whole image.
    pub image_bytes: u64,
    /// Whole-image digest.
    pub digest: u128,
}

/// Appends chunks to an image in order and finishes it with the index and trailer.
pub struct ImageWriter<W: Write> {
    w: W,
    pos: u64,
    block_size: u32,
    version: Version,
    digest: Digest,
    index: Vec<IndexEntry>,
    stored_blocks: u64,
    zero_blocks: u64,
}

impl<W: Write> ImageWriter<W> {
    /// Writes the header.
    ///
    /// # Errors
    /// Write errors.
    pub fn new(mut w: W, header: &Header) -> io::Result<Self> {
        let raw = header.encode();
        w.write_all(&raw)?;
        Ok(Self {
            w,
            pos: HEADER_LEN as u64,
            block_size: header.block_size,
            version: header.version,
            digest: Digest::new(&raw),
            index: Vec::new(),
            stored_blocks: 0,
            zero_blocks: 0,
        })
    }

    /// Appends the next chunk (chunks must come in sequence order).
    ///
    /// # Errors
    /// Write errors.
    pub fn write_chunk(&mut self, c: &EncodedChunk) -> io::Result<()> {
        debug_assert_eq!(c.seq, self.index.len() as u64);
        self.w.write_all(&c.head)?;
        self.w.write_all(&c.payload)?;
        self.w.write_all(&c.crc.to_le_bytes())?;
        self.index.push(IndexEntry {
            offset: self.pos,
            first_block: c.first_block,
            end_block: c.end_block,
            raw_len: c.raw_len,
            n_extents: c.n_extents,
            hash: c.hash,
            content_hash: self.version.has_content_hashes().then_some(c.content_hash),
        });
        self.pos += c.record_len();
        let content = self.index.last().and_then(|e| e.content_hash);
        self.digest.add_chunk(c.hash, content);
        self.stored_blocks += u64::from(c.raw_len / self.block_size);
        self.zero_blocks += c.zero_blocks;
        Ok(())
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Writes the index and trailer and flushes; returns the writer (to fsync) and a summary.
    ///
    /// # Errors
    /// Write errors.
    pub fn finish(mut self) -> io::Result<(W, WriteSummary)> {
        let index = encode_index(&self.index, self.version);
        let trailer = Trailer {
            index_offset: self.pos,
            index_len: index.len() as u64,
            chunk_count: self.index.len() as u64,
            stored_blocks: self.stored_blocks,
            zero_blocks: self.zero_blocks,
            digest: self.digest.value(),
        };
        self.w.write_all(&index)?;
        self.w.write_all(&trailer.encode())?;
        self.w.flush()?;
        let image_bytes = self.pos + index.len() as u64 + super::index::TRAILER_LEN as u64;
        let summary = WriteSummary {
            chunks: trailer.chunk_count,
            stored_blocks: self.stored_blocks,
            zero_blocks: self.zero_blocks,
            image_bytes,
            digest: trailer.digest,
        };
        Ok((self.w, summary))
    }
}
