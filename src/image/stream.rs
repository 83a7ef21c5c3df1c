//! Sequential reading of an image from a pipe: header, records one by one, index, trailer.
//! Every length is checked against the format's limits before a buffer is sized for it.

use std::io::{self, Read};

use super::chunk::{
    CHUNK_HEADER_LEN, CHUNK_MAGIC, ChunkHeader, ChunkSpan, EXTENT_LEN, ZERO_EXTENT,
};
use super::digest::{Digest, chunk_hash};
use super::header::{HEADER_LEN, Header};
use super::index::{
    INDEX_HEAD_LEN, INDEX_MAGIC, IndexEntry, TRAILER_LEN, Trailer, decode_index, decode_index_head,
    index_len,
};
use super::layout::check_stored_blocks;
use super::{FormatError, MAX_CHUNK_RAW};

/// Why reading a stream failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The bytes are wrong.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// Reading failed.
    #[error("read failed at byte offset {offset}")]
    Io {
        /// Stream position.
        offset: u64,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// What the stream held after its last chunk, checked against the chunks seen.
#[derive(Debug)]
pub struct StreamEnd {
    /// The index.
    pub index: Vec<IndexEntry>,
    /// The trailer.
    pub trailer: Trailer,
}

impl StreamEnd {
    /// Checks the block spans of the chunks the stream held (in sequence order) against the
    /// index, and that they ascend without overlapping: what a random-access reader checks
    /// before reading any chunk, a stream reader can only check after.
    ///
    /// # Errors
    /// The first chunk out of order, or the first index entry that differs.
    pub fn check_spans(&self, spans: &[ChunkSpan]) -> Result<(), FormatError> {
        if spans.len() != self.index.len() {
            return Err(FormatError::BadIndex(format!(
                "{} chunks passed their checks, the index lists {}",
                spans.len(),
                self.index.len()
            )));
        }
        let mut prev_end = 0;
        for (i, (e, s)) in self.index.iter().zip(spans).enumerate() {
            let (first, end) = (s.first_block, s.end_block);
            if (e.first_block, e.end_block) != (first, end) || e.content_hash != s.content_hash {
                return Err(FormatError::BadIndex(format!(
                    "entry {i}: block span differs from its chunk"
                )));
            }
            if first < prev_end {
                return Err(FormatError::BadIndex(format!(
                    "chunk {i} (blocks {first}..{end}) overlaps the previous chunk"
                )));
            }
            prev_end = end;
        }
        Ok(())
    }
}

/// Reads an image sequentially.
pub struct StreamReader<R> {
    r: R,
    pos: u64,
    header: Header,
    header_raw: [u8; HEADER_LEN],
    /// (offset, hash, raw_len, n_extents) of every chunk seen, to compare with the index.
    seen: Vec<(u64, u128, u32, u32)>,
    /// Blocks of zero extents in the chunks seen.
    zero_blocks: u64,
    done: bool,
    end: Option<StreamEnd>,
    /// Inside a larger stream (a disk stream): what follows the trailer is not this image's.
    embedded: bool,
}

impl<R: Read> StreamReader<R> {
    /// Reads and checks the header.
    ///
    /// # Errors
    /// A truncated or invalid header.
    pub fn new(r: R) -> Result<Self, StreamError> {
        Self::with_end(r, false)
    }

    /// Reads and checks the header of an image inside a larger stream: reading stops at its
    /// trailer, leaving what follows to the caller.
    ///
    /// # Errors
    /// As [`StreamReader::new`].
    pub fn new_embedded(r: R) -> Result<Self, StreamError> {
        Self::with_end(r, true)
    }

    fn with_end(mut r: R, embedded: bool) -> Result<Self, StreamError> {
        let mut header_raw = [0u8; HEADER_LEN];
        read_exact(&mut r, &mut header_raw, 0, "header")?;
        let header = Header::decode(&header_raw)?;

        Ok(Self {
            r,
            pos: HEADER_LEN as u64,
            header,
            header_raw,
            seen: Vec::new(),
            zero_blocks: 0,
            done: false,
            end: None,
            embedded,
        })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Reads the next chunk record into `buf` (resized to the record) and returns its offset;
    /// `Ok(None)` once the index and trailer have been read and checked against the chunks
    /// seen, with [`StreamReader::finish`] giving them.
    ///
    /// # Errors
    /// Truncation, bad magic, limits, or an index/trailer/digest that disagrees with the chunks.
    pub fn next_record(&mut self, buf: &mut Vec<u8>) -> Result<Option<u64>, StreamError> {
        if self.done {
            return Ok(None);
        }
        let offset = self.pos;
        let mut magic = [0u8; 4];
        read_exact(&mut self.r, &mut magic, offset, "chunk record or index")?;
        if magic == INDEX_MAGIC {
            self.read_end(offset)?;
            self.done = true;
            return Ok(None);
        }
        if magic != CHUNK_MAGIC {
            return Err(FormatError::BadRecordMagic { offset }.into());
        }
        let mut head = [0u8; CHUNK_HEADER_LEN];
        head[..4].copy_from_slice(&magic);
        read_exact(&mut self.r, &mut head[4..], offset, "chunk record")?;
        let h = ChunkHeader::decode(&head, offset, self.header.block_size)?;
        if h.seq != self.seen.len() as u64 {
            return Err(FormatError::BadIndex(format!(
                "record at byte offset {offset} carries sequence number {}, expected {}",
                h.seq,
                self.seen.len()
            ))
            .into());
        }
        // record_len() is bounded by the format's limits; even so the buffer grows only as
        // bytes actually arrive, so a header that promises 64 MiB costs nothing until sent.
        buf.clear();
        buf.extend_from_slice(&head);
        let rest = (h.record_len() - CHUNK_HEADER_LEN) as u64;
        let got = (&mut self.r)
            .take(rest)
            .read_to_end(buf)
            .map_err(|source| StreamError::Io { offset, source })?;
        if got as u64 != rest {
            return Err(FormatError::Truncated {
                what: "chunk record",
                offset,
            }
            .into());
        }
        self.pos += buf.len() as u64;
        // Zero extents are counted here: the index does not list them.
        for e in buf[CHUNK_HEADER_LEN..CHUNK_HEADER_LEN + h.extents_len()].chunks_exact(EXTENT_LEN)
        {
            let word = u32::from_le_bytes(e[8..12].try_into().expect("4 bytes"));
            if word & ZERO_EXTENT != 0 {
                self.zero_blocks = self
                    .zero_blocks
                    .saturating_add(u64::from(word & !ZERO_EXTENT));
            }
        }
        let hash = chunk_hash(buf);
        self.seen.push((offset, hash, h.raw_len, h.n_extents));
        Ok(Some(offset))
    }

    /// The index and trailer, once [`StreamReader::next_record`] has returned `Ok(None)`.
    pub fn finish(self) -> Option<StreamEnd> {
        self.end
    }

    /// Bytes read so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn read_end(&mut self, offset: u64) -> Result<(), StreamError> {
        let mut head = [0u8; INDEX_HEAD_LEN];
        head[..4].copy_from_slice(&INDEX_MAGIC);
        read_exact(&mut self.r, &mut head[4..], offset, "index")?;
        let count = decode_index_head(&head, offset)?;
        // The only count worth allocating for is the number of chunks actually seen.
        if count != self.seen.len() as u64 {
            return Err(FormatError::BadIndex(format!(
                "index lists {count} chunks, the stream held {}",
                self.seen.len()
            ))
            .into());
        }
        let version = self.header.version;
        let len = index_len(count, version).expect("count is small") as usize;
        let mut raw = Vec::with_capacity(len);
        raw.extend_from_slice(&head);
        raw.resize(len, 0);
        read_exact(&mut self.r, &mut raw[INDEX_HEAD_LEN..], offset, "index")?;
        let index = decode_index(&raw, offset, version)?;
        let mut trailer_raw = [0u8; TRAILER_LEN];
        let trailer_at = offset + len as u64;
        read_exact(&mut self.r, &mut trailer_raw, trailer_at, "trailer")?;
        let trailer = Trailer::decode(&trailer_raw, version)?;
        let mut extra = [0u8; 1];
        // An embedded image is followed by the disk stream's next record.
        let tail = if self.embedded {
            Ok(0)
        } else {
            self.r.read(&mut extra)
        };
        match tail {
            Ok(0) => {}
            Ok(_) => return Err(FormatError::BadTrailer("bytes follow the trailer").into()),
            Err(source) => {
                return Err(StreamError::Io {
                    offset: trailer_at + TRAILER_LEN as u64,
                    source,
                });
            }
        }
        if trailer.index_offset != offset || trailer.chunk_count != count {
            return Err(FormatError::BadTrailer(
                "index position or chunk count differs from the stream",
            )
            .into());
        }
        let mut stored_blocks = 0u64;
        for (i, (e, s)) in index.iter().zip(&self.seen).enumerate() {
            if (e.offset, e.hash, e.raw_len, e.n_extents) != *s {
                return Err(FormatError::BadIndex(format!(
                    "entry {i} differs from the chunk record seen"
                ))
                .into());
            }
            if e.raw_len == 0 || e.raw_len > MAX_CHUNK_RAW {
                return Err(
                    FormatError::BadIndex(format!("entry {i}: raw length out of range")).into(),
                );
            }
            stored_blocks += u64::from(e.raw_len / self.header.block_size);
        }
        if stored_blocks != trailer.stored_blocks {
            return Err(FormatError::BadIndex(format!(
                "chunks hold {stored_blocks} blocks, the trailer says {}",
                trailer.stored_blocks
            ))
            .into());
        }
        if self.zero_blocks != trailer.zero_blocks {
            return Err(FormatError::BadIndex(format!(
                "chunks hold {} zero blocks, the trailer says {}",
                self.zero_blocks, trailer.zero_blocks
            ))
            .into());
        }
        check_stored_blocks(&self.header, stored_blocks, self.zero_blocks)?;
        // The record hashes as they arrived; the content hashes (version 2) from the index,
        // checked against the chunks' decompressed contents in `StreamEnd::check_spans`.
        let mut digest = Digest::new(&self.header_raw);
        for (s, e) in self.seen.iter().zip(&index) {
            digest.add_chunk(s.1, e.content_hash);
        }
        let computed = digest.value();
        if computed != trailer.digest {
            return Err(FormatError::Digest {
                stored: trailer.digest,
                computed,
            }
            .into());
        }
        self.end = Some(StreamEnd { index, trailer });
        Ok(())
    }
}

fn read_exact(
    r: &mut impl Read,
    buf: &mut [u8],
    offset: u64,
    what: &'static str,
) -> Result<(), StreamError> {
    r.read_exact(buf).map_err(|source| {
        if source.kind() == io::ErrorKind::UnexpectedEof {
            StreamError::Format(FormatError::Truncated { what, offset })
        } else {
            StreamError::Io { offset, source }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::fs::Extent;
    use crate::image::chunk::{ChunkExtent, compressor, encode_chunk};
    use crate::image::header::tests::sample;
    use crate::image::writer::ImageWriter;

    /// An image of the sample header, saying `used` used blocks, with three chunks (5 blocks
    /// stored, 3 in a zero extent).
    fn image(used: u64) -> Vec<u8> {
        let mut hdr = sample();
        hdr.used_blocks = used;
        let mut w = ImageWriter::new(Vec::new(), &hdr).unwrap();
        let mut cctx = compressor(1).unwrap();
        let ext = |start, len, zero| ChunkExtent {
            extent: Extent { start, len },
            zero,
        };
        let chunks: [&[ChunkExtent]; 3] = [
            &[ext(0, 2, false)],
            &[ext(2, 3, true), ext(5, 2, false)],
            &[ext(100, 1, false)],
        ];
        for (seq, extents) in chunks.iter().enumerate() {
            let blocks: u64 = extents
                .iter()
                .filter(|e| !e.zero)
                .map(|e| e.extent.len)
                .sum();
            let data = vec![seq as u8 + 1; blocks as usize * 4096];
            let c = encode_chunk(seq as u64, extents, &data, 4096, &mut cctx, Vec::new()).unwrap();
            w.write_chunk(&c).unwrap();
        }
        w.finish().unwrap().0
    }

    fn read_all(bytes: &[u8]) -> Result<(usize, StreamEnd), StreamError> {
        let mut r = StreamReader::new(Cursor::new(bytes))?;
        let mut buf = Vec::new();
        let mut n = 0;
        while r.next_record(&mut buf)?.is_some() {
            n += 1;
        }
        Ok((n, r.finish().expect("the stream ended")))
    }

    #[test]
    fn a_whole_stream_reads_and_checks() {
        let bytes = image(8);
        let (n, end) = read_all(&bytes).unwrap();
        assert_eq!(n, 3);
        assert_eq!(end.trailer.stored_blocks, 5);
        assert_eq!(end.trailer.zero_blocks, 3);
    }

    #[test]
    fn counts_that_disagree_with_the_header_are_refused() {
        // 5 stored + 3 zero blocks, but the header says 10 used.
        let err = read_all(&image(10)).expect_err("refused");
        assert!(err.to_string().contains("header says 10"), "{err}");
    }

    #[test]
    fn truncation_anywhere_names_the_structure() {
        let bytes = image(8);
        for cut in (0..bytes.len()).step_by(37) {
            let err = read_all(&bytes[..cut]).expect_err("truncated stream accepted");
            assert!(
                matches!(err, StreamError::Format(FormatError::Truncated { .. })),
                "cut at {cut}: {err:?}"
            );
        }
    }

    #[test]
    fn bytes_after_the_trailer_and_spans_out_of_order_are_refused() {
        let mut bytes = image(8);
        let (_, end) = read_all(&bytes).unwrap();
        let content = |seq: u64| end.index[seq as usize].content_hash;
        let span = |seq, first_block, end_block| ChunkSpan {
            seq,
            first_block,
            end_block,
            blocks: 0,
            zero_blocks: 0,
            content_hash: content(seq),
        };
        let good = [span(0, 0, 2), span(1, 2, 7), span(2, 100, 101)];
        end.check_spans(&good).unwrap();
        assert!(end.check_spans(&good[..2]).is_err(), "a missing chunk");
        let moved = [span(0, 0, 2), span(1, 2, 8), span(2, 100, 101)];
        assert!(end.check_spans(&moved).is_err(), "a span unlike its entry");
        bytes.push(0);
        let err = read_all(&bytes).expect_err("trailing byte accepted");
        assert!(
            err.to_string().contains("bytes follow the trailer"),
            "{err}"
        );
    }
}
