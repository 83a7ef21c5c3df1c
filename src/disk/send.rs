//! `rimage send`: a stored saved disk (or one image) written as a stream on standard output, so
//! that a golden image can be fed to any transport (udpcast, ssh, a pipe).

use std::io::Write;
use std::path::Path;

use super::manifest::Action;
use super::source::DiskSource;
use super::stream::DiskStreamWriter;
use crate::Error;
use crate::error::IoError;

/// What `send` wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SendReport {
    /// Bytes written.
    pub bytes: u64,
    /// Images sent.
    pub images: u64,
}

/// Writes the saved disk in directory `path` as a disk stream, or the image file `path` as
/// itself, to `out`.
///
/// # Errors
/// Not a saved disk or an image, a file that cannot be read, or a write failure.
pub fn send(path: &Path, out: &mut dyn Write) -> Result<SendReport, Error> {
    let write_err = |e| Error::Io(IoError::new(Path::new("<stdout>"), "write", None, e));
    let mut counting = Counting { w: out, n: 0 };
    if crate::info::is_image(path) {
        copy_file(path, &mut counting)?;
        return Ok(SendReport {
            bytes: counting.n,
            images: 1,
        });
    }
    if !super::check::is_disk_dir(path) {
        return Err(Error::refused(
            path,
            "is neither a rimage image nor a directory written by save-disk",
        ));
    }
    let src = DiskSource::Dir(path.to_path_buf());
    let mut m = src.manifest()?;
    // The receiver checks every image's size before it writes: say them in the manifest.
    for p in m
        .partitions
        .iter_mut()
        .filter(|p| p.action == Action::Image)
    {
        if p.image_bytes.is_none() {
            let name = p.image.as_deref().unwrap_or_default();
            p.image_bytes = Some(crate::inspect_image(&src.image(name))?.header.source_size);
        }
    }
    let text = m
        .to_toml()
        .map_err(|e| Error::Internal(format!("the manifest cannot be written as TOML: {e}")))?;
    let mut w = DiskStreamWriter::start(&mut counting).map_err(write_err)?;
    w.manifest(text.as_bytes()).map_err(write_err)?;
    if let Some(b) = &m.boot_area {
        w.boot_area(&src.read_file(b, super::MAX_BOOT_AREA)?)
            .map_err(write_err)?;
    }
    let mut images = 0;
    for p in m.partitions.iter().filter(|p| p.action == Action::Image) {
        w.image(p.number).map_err(write_err)?;
        copy_file(
            &path.join(p.image.as_deref().unwrap_or_default()),
            w.inner(),
        )?;
        images += 1;
    }
    w.end().map_err(write_err)?;
    Ok(SendReport {
        bytes: counting.n,
        images,
    })
}

fn copy_file(path: &Path, out: &mut dyn Write) -> Result<(), Error> {
    let mut f = std::fs::File::open(path).map_err(|e| IoError::new(path, "open", None, e))?;
    std::io::copy(&mut f, out).map_err(|e| {
        Error::Io(IoError::new(
            Path::new("<stdout>"),
            "write (copying an image)",
            None,
            e,
        ))
    })?;
    Ok(())
}

/// A writer that counts.
struct Counting<'a> {
    w: &'a mut dyn Write,
    n: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.w.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}
