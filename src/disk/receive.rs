//! Receiving a saved disk (or one image) from a stream into a directory, checking every record
//! and every chunk as it arrives: what `rimage serve` does with an upload. The image checks
//! are [`crate::verify::verify_image`]'s, run on the bytes while they are written.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::manifest::{Action, MANIFEST};
use super::stream::{DiskStreamReader, MAGIC as DISK_MAGIC, Record, Shared};
use super::{BOOT_AREA, MAX_BOOT_AREA};
use crate::Error;
use crate::error::IoError;
use crate::progress::Progress;
use crate::read::Image;

/// File name a single received image gets inside the receiving directory.
pub const IMAGE_FILE: &str = "image.rimg";

/// What arrived.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Received {
    /// A whole disk: the directory now holds manifest.toml, boot-area.bin and partN.rimg.
    Disk {
        /// Partition images received.
        images: u32,
    },
    /// One image, in [`IMAGE_FILE`].
    Image,
}

/// Reads a disk stream or a single image stream from `r` into the (empty, existing) directory
/// `dir`, checking everything: each record's CRC, the manifest, the order of the images, and
/// every image completely (each chunk, the index, trailer and digest, its size against its
/// partition). The manifest is written last. Nothing more may follow the stream.
///
/// # Errors
/// A stream that is damaged, truncated, or followed by more bytes (the directory then holds
/// part of it: the caller removes it); write failures.
pub fn receive<R: Read + Send + 'static>(
    r: R,
    dir: &Path,
    threads: usize,
    progress: &dyn Progress,
) -> Result<Received, Error> {
    let shared = Shared::new(r);
    let mut peek = shared.clone();
    let mut magic = [0u8; 8];
    let mut got = 0;
    while got < magic.len() {
        match peek.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io(IoError::new(dir, "receive", Some(0), e))),
        }
    }
    let head = io::Cursor::new(magic[..got].to_vec());
    let chained = Shared::new(head.chain(shared));
    let received = if got == 8 && magic == DISK_MAGIC {
        receive_disk(chained.clone(), dir, threads, progress)?
    } else if got == 8 && magic == crate::image::header::MAGIC {
        let path = dir.join(IMAGE_FILE);
        receive_image(Box::new(chained.clone()), &path, None, threads, progress)?;
        Received::Image
    } else {
        return Err(Error::refused(
            dir,
            "the upload is neither a rimage disk stream nor a rimage image",
        ));
    };
    let mut extra = [0u8; 1];
    let mut rest = chained;
    match rest.read(&mut extra) {
        Ok(0) => Ok(received),
        Ok(_) => Err(Error::refused(
            dir,
            format!(
                "more bytes follow the end of the stream (at byte offset {})",
                rest.position() - 1
            ),
        )),
        Err(e) => Err(Error::Io(IoError::new(dir, "receive", None, e))),
    }
}

fn receive_disk<R: Read + Send + 'static>(
    r: R,
    dir: &Path,
    threads: usize,
    progress: &dyn Progress,
) -> Result<Received, Error> {
    let mut s = DiskStreamReader::new(r).map_err(|e| super::restore::stream_error(dir, e))?;
    let (mut m, boot) = super::restore::stream_head(&mut s, dir)?;
    let mut images = 0;
    let numbers: Vec<u32> = m
        .partitions
        .iter()
        .filter(|p| p.action == Action::Image)
        .map(|p| p.number)
        .collect();
    for n in numbers {
        match s
            .next_record()
            .map_err(|e| super::restore::stream_error(dir, e))?
        {
            Some(Record::Image(got)) if got == n => {}
            other => {
                return Err(Error::refused(
                    dir,
                    format!("the disk stream brings {other:?} where partition {n}'s image belongs"),
                ));
            }
        }
        // The sender's file names are not trusted: images are named by partition number.
        let name = format!("part{n}.rimg");
        let bytes = m.entry(n).map_or(0, |e| e.size_bytes());
        let size = receive_image(
            Box::new(s.image_reader()),
            &dir.join(&name),
            Some(bytes),
            threads,
            progress,
        )?;
        let plan = m
            .partitions
            .iter_mut()
            .find(|p| p.number == n)
            .expect("numbers come from the plans");
        if plan.image_bytes.is_some_and(|b| b != size) {
            return Err(Error::refused(
                &dir.join(&name),
                format!(
                    "the manifest says partition {n}'s image holds {} bytes, it holds {size}",
                    plan.image_bytes.unwrap_or_default()
                ),
            ));
        }
        plan.image = Some(name);
        plan.image_bytes = Some(size);
        images += 1;
    }
    match s
        .next_record()
        .map_err(|e| super::restore::stream_error(dir, e))?
    {
        Some(Record::End(_)) => {}
        other => {
            return Err(Error::refused(
                dir,
                format!("the disk stream brings {other:?} where its end record belongs"),
            ));
        }
    }
    if let Some(b) = &boot {
        if b.len() as u64 > MAX_BOOT_AREA {
            return Err(Error::refused(dir, "the boot area is too large"));
        }
        crate::atomic::write_file(&dir.join(BOOT_AREA), b)?;
        m.boot_area = Some(BOOT_AREA.into());
    }
    let text = m
        .to_toml()
        .map_err(|e| Error::Internal(format!("the manifest cannot be written as TOML: {e}")))?;
    crate::atomic::write_file(&dir.join(MANIFEST), text.as_bytes())?;
    Ok(Received::Disk { images })
}

/// Copies one image stream from `r` into `path` while verifying it completely; returns the
/// size of the filesystem it holds. `room`: the partition it is for, which it must fit.
fn receive_image(
    r: crate::transport::Stream,
    path: &Path,
    room: Option<u64>,
    threads: usize,
    progress: &dyn Progress,
) -> Result<u64, Error> {
    let file = File::create_new(path).map_err(|e| IoError::new(path, "create", None, e))?;
    let copy = file
        .try_clone()
        .map_err(|e| IoError::new(path, "open", None, e))?;
    let tee = Tee {
        r,
        w: copy,
        path: path.to_path_buf(),
    };
    let image = Image::stream_embedded(path, Box::new(tee))?;
    let size = image.header().source_size;
    if let Some(room) = room
        && size > room
    {
        return Err(Error::refused(
            path,
            format!("the image holds {size} bytes, more than its partition's {room}"),
        ));
    }
    let report = crate::verify::verify_image(image, threads, progress)?;
    if !report.ok {
        return Err(Error::refused(
            path,
            format!("the image fails its checks: {}", report.problems.join("; ")),
        ));
    }
    file.sync_all()
        .map_err(|e| IoError::new(path, "fsync", None, e))?;
    Ok(size)
}

/// Writes what is read to a file.
struct Tee {
    r: crate::transport::Stream,
    w: File,
    path: PathBuf,
}

impl Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.r.read(buf)?;
        self.w.write_all(&buf[..n]).map_err(|e| {
            io::Error::new(e.kind(), format!("{}: write: {e}", self.path.display()))
        })?;
        Ok(n)
    }
}
