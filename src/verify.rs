//! verify: every check restore makes, on every chunk, in parallel, without writing anything;
//! plus the index, the block order across chunks, the counts and the whole-image digest.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::iter::{ParallelBridge, ParallelIterator};
use serde::Serialize;

use crate::Error;
use crate::image::FormatError;
use crate::image::chunk::ChunkRecord;
use crate::image::file::ImageFile;
use crate::image::header::Header;
use crate::image::stream::{StreamError, StreamReader};
use crate::progress::Progress;
use crate::restore::{
    ImageSource, check_chunk, map_image, release, stdin_reader, with_decompressor,
};
use crate::save::worker_pool;

/// The outcome of a verification.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// The image.
    pub image: PathBuf,
    /// Whether every check passed.
    pub ok: bool,
    /// The header, when it could be read.
    pub header: Option<Header>,
    /// Chunks checked.
    pub chunks: u64,
    /// Blocks in the chunks checked.
    pub stored_blocks: u64,
    /// Bytes of the image read.
    pub image_bytes: u64,
    /// Every problem found, naming its region or chunk, in image order.
    pub problems: Vec<String>,
}

/// Verifies an image.
///
/// # Errors
/// Only when the image cannot be opened or read; problems with its contents are in the report.
pub fn verify(
    image: &ImageSource,
    threads: usize,
    progress: &dyn Progress,
) -> Result<VerifyReport, Error> {
    let pool = worker_pool(threads, "verify")?;
    let path = image.path();
    let mut report = VerifyReport {
        image: path.to_path_buf(),
        ok: false,
        header: None,
        chunks: 0,
        stored_blocks: 0,
        image_bytes: 0,
        problems: Vec::new(),
    };
    // (position in the image, message): sorted before reporting.
    let problems: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    let problem = |at: u64, e: &dyn std::fmt::Display| {
        problems
            .lock()
            .expect("problems lock")
            .push((at, e.to_string()))
    };
    match image {
        ImageSource::File(p) => {
            let map = map_image(p)?;
            report.image_bytes = map.len() as u64;
            let img = match ImageFile::parse(&map[..]) {
                Ok(img) => img,
                Err(e) => {
                    report.problems.push(e.to_string());
                    return Ok(report);
                }
            };
            report.header = Some(img.header.clone());
            let computed = img.index_digest();
            if computed != img.trailer.digest {
                problem(
                    u64::MAX,
                    &FormatError::Digest {
                        stored: img.trailer.digest,
                        computed,
                    },
                );
            }
            let zero_blocks = AtomicU64::new(0);
            progress.start(
                "verifying",
                img.trailer.stored_blocks * u64::from(img.header.block_size),
            );
            pool.install(|| {
                (0..img.index.len()).par_bridge().for_each(|i| {
                    let entry = &img.index[i];
                    let checked = img.record(i).and_then(|rec| {
                        with_decompressor(|d, out| {
                            check_chunk(&rec, &img.header, Some(entry), d, out)
                        })
                    });
                    match checked {
                        Ok(c) => {
                            zero_blocks.fetch_add(c.zero_blocks, Ordering::Relaxed);
                        }
                        Err(e) => problem(entry.offset, &e),
                    }
                    let end = img
                        .index
                        .get(i + 1)
                        .map_or(img.trailer.index_offset, |e| e.offset);
                    release(&map, entry.offset, (end - entry.offset) as usize);
                    progress.advance(u64::from(entry.raw_len));
                });
            });
            progress.finish();
            let zero_blocks = zero_blocks.into_inner();
            if zero_blocks != img.trailer.zero_blocks {
                let msg = format!(
                    "trailer: says {} zero blocks, the chunks hold {zero_blocks}",
                    img.trailer.zero_blocks
                );
                problem(u64::MAX, &msg);
            }
            report.chunks = img.index.len() as u64;
            report.stored_blocks = img.trailer.stored_blocks;
        }
        ImageSource::Stdin => {
            let mut reader = match StreamReader::new(stdin_reader()?) {
                Ok(r) => r,
                Err(StreamError::Format(e)) => {
                    report.problems.push(e.to_string());
                    return Ok(report);
                }
                Err(e) => return Err(Error::stream(path, e)),
            };
            let hdr = reader.header().clone();
            report.header = Some(hdr.clone());
            progress.start("verifying", hdr.used_blocks * u64::from(hdr.block_size));
            // (seq, first block, end block, blocks) of every chunk that passed its checks.
            let spans: Mutex<Vec<(u64, u64, u64, u64)>> = Mutex::new(Vec::new());
            let stream_error: Mutex<Option<StreamError>> = Mutex::new(None);
            pool.install(|| {
                reader.records().par_bridge().for_each(|item| {
                    let (buf, offset) = match item {
                        Ok(record) => record,
                        Err(e) => return *stream_error.lock().expect("error lock") = Some(e),
                    };
                    let checked = ChunkRecord::new(&buf, offset, hdr.block_size).and_then(|rec| {
                        with_decompressor(|d, out| check_chunk(&rec, &hdr, None, d, out))
                            .map(|c| (rec.header.seq, c))
                    });
                    match checked {
                        Ok((seq, c)) => {
                            progress
                                .advance((c.blocks + c.zero_blocks) * u64::from(hdr.block_size));
                            spans.lock().expect("spans lock").push((
                                seq,
                                c.first_block,
                                c.end_block,
                                c.blocks,
                            ));
                        }
                        Err(e) => problem(offset, &e),
                    }
                });
            });
            progress.finish();
            match stream_error.into_inner().expect("lock") {
                Some(StreamError::Format(e)) => problem(reader.position(), &e),
                Some(e) => return Err(Error::stream(path, e)),
                None => {}
            }
            let mut spans = spans.into_inner().expect("lock");
            spans.sort_unstable();
            report.chunks = spans.len() as u64;
            report.stored_blocks = spans.iter().map(|s| s.3).sum();
            report.image_bytes = reader.position();
            // Only a complete stream whose chunks all passed has an order to check.
            if let Some(end) = reader.finish()
                && problems.lock().expect("problems lock").is_empty()
            {
                let pairs: Vec<(u64, u64)> = spans.iter().map(|s| (s.1, s.2)).collect();
                if let Err(e) = end.check_spans(&pairs) {
                    problem(u64::MAX - 1, &e);
                }
            }
        }
    }
    let mut problems = problems.into_inner().expect("lock");
    problems.sort();
    report.problems.extend(problems.into_iter().map(|(_, m)| m));
    report.ok = report.problems.is_empty();
    Ok(report)
}
