//! verify: every check restore makes, on every chunk, in parallel, without writing anything;
//! plus the checks across chunks (order, counts, whole-image digest). Unlike restore, verify
//! goes on after a problem and reports them all, in image order.

use std::path::PathBuf;
use std::sync::Mutex;

use rayon::iter::{ParallelBridge, ParallelIterator};
use serde::Serialize;

use crate::Error;
use crate::image::header::Header;
use crate::pool::worker_pool;
use crate::progress::Progress;
use crate::read::Image;
use crate::transport::ImageSource;

/// The outcome of a verification.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// The image.
    pub image: PathBuf,
    /// Whether every check passed.
    pub ok: bool,
    /// The header, when it could be read.
    pub header: Option<Header>,
    /// Chunks that passed their checks.
    pub chunks: u64,
    /// Blocks in those chunks.
    pub stored_blocks: u64,
    /// Bytes of the image read.
    pub image_bytes: u64,
    /// Every problem found, naming its region or chunk, in image order.
    pub problems: Vec<String>,
}

/// Where a problem sorts among the others: chunks by their offset, then the problems that
/// concern the whole image.
const AFTER_CHUNKS: u64 = u64::MAX - 2;
const END_CHECKS: u64 = u64::MAX - 1;
const DIGEST: u64 = u64::MAX;

/// Verifies an image.
///
/// # Errors
/// Only when the image cannot be opened or read; problems with its contents are in the report.
pub fn verify(
    source: &ImageSource,
    threads: usize,
    progress: &dyn Progress,
) -> Result<VerifyReport, Error> {
    let image = match Image::open(source) {
        Ok(img) => img,
        Err(e @ Error::Image { .. }) => {
            return Ok(VerifyReport {
                image: source.path().to_path_buf(),
                ok: false,
                header: None,
                chunks: 0,
                stored_blocks: 0,
                image_bytes: 0,
                problems: vec![problem_text(&e)],
            });
        }
        Err(e) => return Err(e),
    };
    verify_image(image, threads, progress)
}

/// Verifies an opened image (a file, or a stream as it arrives: an upload to `rimage serve`).
///
/// # Errors
/// Only when the image cannot be read; problems with its contents are in the report.
pub fn verify_image(
    mut image: Image,
    threads: usize,
    progress: &dyn Progress,
) -> Result<VerifyReport, Error> {
    let pool = worker_pool(threads, "verify")?;
    let mut report = VerifyReport {
        image: image.name().to_path_buf(),
        ok: false,
        header: None,
        chunks: 0,
        stored_blocks: 0,
        image_bytes: 0,
        problems: Vec::new(),
    };
    let hdr = image.header().clone();
    report.header = Some(hdr.clone());
    // (position in the image, message): sorted before reporting.
    let problems: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    let problem = |at: u64, e: &Error| {
        let mut p = problems.lock().expect("problems lock");
        p.push((at, problem_text(e)));
    };
    if let Err(e) = image.check_up_front() {
        problem(DIGEST, &e);
    }
    let bs = u64::from(hdr.block_size);
    progress.start("verifying", image.expected_blocks() * bs);
    let spans = Mutex::new(Vec::new());
    pool.install(|| {
        image.chunks().par_bridge().for_each(|pending| {
            let pending = match pending {
                Ok(p) => p,
                Err(e) => return problem(AFTER_CHUNKS, &e),
            };
            let (seq, at) = (pending.seq(), pending.offset());
            let checked = pending
                .fetch()
                .and_then(|chunk| chunk.check(&hdr, |c, _| Ok(c.span(seq))));
            match checked {
                Ok(span) => {
                    progress.advance((span.blocks + span.zero_blocks) * bs);
                    spans.lock().expect("spans lock").push(span);
                }
                Err(e) => problem(at, &e),
            }
        });
    });
    progress.finish();
    report.image_bytes = image.bytes_read();
    let spans = spans.into_inner().expect("lock");
    report.chunks = spans.len() as u64;
    report.stored_blocks = spans.iter().map(|s| s.blocks).sum();
    // The checks across chunks mean something only when every chunk passed its own.
    if problems.lock().expect("problems lock").is_empty()
        && let Err(e) = image.finish(spans)
    {
        problem(END_CHECKS, &e);
    }
    let mut problems = problems.into_inner().expect("lock");
    problems.sort();
    report.problems.extend(problems.into_iter().map(|(_, m)| m));
    report.ok = report.problems.is_empty();
    Ok(report)
}

/// A problem as the report lists it: the image's own error without the image's name (the
/// report names the image once).
fn problem_text(e: &Error) -> String {
    match e {
        Error::Image { source, .. } => source.to_string(),
        other => other.full_message(),
    }
}
