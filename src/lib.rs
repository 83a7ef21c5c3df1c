//! rimage: a partition imager that copies only the blocks a filesystem uses.
//!
//! The data path, one module per step:
//! [`source`] (device or file) → [`fs`] (which blocks are used) → [`save`] (chunks, parallel
//! compression) → [`image`] (the format) → [`restore`] → [`target`].
//! [`verify`] and [`info`] check and describe images.
//!
//! The library never prints; the `rimage` binary presents what it returns.

pub mod browse;
pub mod disk;
pub mod error;
pub mod fs;
#[doc(hidden)]
pub mod fuzzing;
pub mod image;
pub mod info;
pub mod progress;
pub mod restore;
pub mod save;
pub mod source;
pub mod target;
pub mod verify;

pub use browse::Browser;
pub use error::Error;
pub use info::{ImageInfo, SourceInfo, inspect_image, inspect_source, is_image};
pub use progress::{NoProgress, Progress};
pub use restore::{ExpectUuid, FreeSpace, ImageSource, RestoreOptions, RestoreReport, restore};
pub use save::{Destination, SaveOptions, SaveReport, save};
pub use verify::{VerifyReport, verify};
