//! rimage: a partition imager that copies only the blocks a filesystem uses.
//!
//! The data path, one module per step (docs/ARCHITECTURE.md):
//! [`source`] (device or file) → [`fs`] (which blocks are used, one module per family) →
//! [`save`] (chunks, parallel compression) → [`image`] (the format, bytes only) →
//! [`transport`] (file, stream) → [`read`] (the one chunk iterator) → [`restore`] →
//! [`target`]. [`verify`], [`info`] and [`browse`] read images through the same seam;
//! [`disk`] does whole disks.
//!
//! The library never prints; the `rimage` binary presents what it returns.

pub mod agent;
pub(crate) mod atomic;
pub mod browse;
pub mod compare;
pub mod disk;
pub mod drift;
pub mod error;
pub mod fs;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod guard;
pub mod image;
pub mod import;
pub mod info;
pub mod interrupt;
pub mod netboot;
pub(crate) mod pool;
pub mod progress;
pub mod read;
pub mod restore;
pub mod save;
pub mod serve;
pub mod source;
pub(crate) mod sys;
pub mod target;
pub mod transport;
pub mod verify;

pub use browse::Browser;
pub use error::{Error, IoError};
pub use info::{ImageInfo, SourceInfo, inspect_image, inspect_source, is_image};
pub use progress::{NoProgress, Progress};
pub use restore::{ExpectUuid, FreeSpace, RestoreOptions, RestoreReport, restore};
pub use save::{Destination, SaveOptions, SaveReport, save};
pub use transport::ImageSource;
pub use verify::{VerifyReport, verify};

/// What images and manifests name as their writer.
pub const WRITER: &str = concat!("rimage ", env!("CARGO_PKG_VERSION"));

/// "1 chunk", "2 chunks", "3 entries": a count with its noun (regular English plurals).
pub fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        return format!("1 {noun}");
    }
    match noun.strip_suffix('y') {
        Some(stem) if !stem.ends_with(['a', 'e', 'o', 'u']) => format!("{n} {stem}ies"),
        _ => format!("{n} {noun}s"),
    }
}

/// Bytes as people read them: "512 B", "1.50 MiB", "3.72 GiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

/// Refuses to write image data to a terminal (for commands that stream an image or a disk to
/// standard output).
///
/// # Errors
/// [`Error::Refused`].
pub fn guard_stdout_not_terminal() -> Result<(), Error> {
    guard::check_not_terminal(false)
}
