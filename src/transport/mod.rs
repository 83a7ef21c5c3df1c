//! Where image bytes come from. Two shapes, whatever the medium:
//!
//! - positional ([`RandomAccess`]): a complete image that can be read at any offset — a file
//!   (mapped), later HTTP ranges. Header, trailer and index are read first, so everything is
//!   checked before the first write, and chunks are fetched by the workers that use them;
//! - sequential (a [`Stream`]): bytes that arrive once, in order — standard input, a pipe
//!   from udpcast or ssh. Chunks are checked as they arrive and the index at the end.
//!
//! The transport knows files, sockets and retries; it does not know chunks. [`crate::read`]
//! turns either shape into the one chunk iterator that restore, verify, info and browse use.

pub mod file;
pub mod http;
pub mod stdin;

use std::borrow::Cow;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::Error;

/// Where an image is read from, as the user named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSource {
    /// A file: mapped, its index read first.
    File(PathBuf),
    /// Standard input, read sequentially.
    Stdin,
    /// A URL (`http://`, `https://`): range requests, or a stream when the server has none.
    Url {
        /// The URL.
        url: String,
        /// Retries and timeouts.
        opts: http::HttpOptions,
    },
}

impl ImageSource {
    /// The source a command-line argument names: "-" is standard input, `http(s)://` a URL
    /// (fetched with the default retries and timeout).
    pub fn from_arg(arg: &Path) -> Self {
        Self::from_arg_with(arg, http::HttpOptions::default())
    }

    /// As [`ImageSource::from_arg`], with how hard to try for URLs.
    pub fn from_arg_with(arg: &Path, opts: http::HttpOptions) -> Self {
        match arg.to_str() {
            Some("-") => Self::Stdin,
            Some(s) if http::is_url(s) => Self::Url {
                url: s.to_string(),
                opts,
            },
            _ => Self::File(arg.to_path_buf()),
        }
    }

    /// The name for messages ("<stdin>" for standard input).
    pub fn path(&self) -> &Path {
        match self {
            Self::File(p) => p,
            Self::Stdin => Path::new("<stdin>"),
            Self::Url { url, .. } => Path::new(url),
        }
    }

    /// Opens the source in the shape its medium allows.
    ///
    /// # Errors
    /// When it cannot be opened.
    pub fn open(&self) -> Result<Opened, Error> {
        Ok(match self {
            Self::File(p) => Opened::Random(Box::new(file::MappedFile::open(p)?)),
            Self::Stdin => Opened::Stream(Box::new(stdin::reader()?)),
            Self::Url { url, opts } => http::open(url, *opts)?,
        })
    }
}

/// Image bytes readable at any offset.
pub trait RandomAccess: Send + Sync {
    /// The name for messages (a path or URL).
    fn name(&self) -> &Path;

    /// Length of the image in bytes.
    fn len(&self) -> u64;

    /// Whether the image is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `len` bytes at `offset` (borrowed when they are in memory already). Reads past the end
    /// fail.
    ///
    /// # Errors
    /// The transport's error, naming the source and the offset.
    fn read_at(&self, offset: u64, len: u64) -> Result<Cow<'_, [u8]>, Error>;

    /// A hint that the bytes at `offset..offset + len` will not be read again.
    fn release(&self, _offset: u64, _len: u64) {}
}

/// Image bytes that arrive once, in order.
pub type Stream = Box<dyn Read + Send>;

/// An opened source.
pub enum Opened {
    /// Readable at any offset.
    Random(Box<dyn RandomAccess>),
    /// Readable in order only.
    Stream(Stream),
}

/// An image held in memory (tests and fuzzing read images this way).
pub struct Memory {
    name: PathBuf,
    bytes: Vec<u8>,
}

impl Memory {
    /// `bytes`, named `name` in messages.
    pub fn new(name: &str, bytes: Vec<u8>) -> Self {
        Self {
            name: PathBuf::from(name),
            bytes,
        }
    }
}

impl RandomAccess for Memory {
    fn name(&self) -> &Path {
        &self.name
    }

    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_at(&self, offset: u64, len: u64) -> Result<Cow<'_, [u8]>, Error> {
        slice_at(&self.name, &self.bytes, offset, len).map(Cow::Borrowed)
    }
}

/// `len` bytes at `offset` of `bytes`, or an error naming `name` when they are not all there.
pub(crate) fn slice_at<'a>(
    name: &Path,
    bytes: &'a [u8],
    offset: u64,
    len: u64,
) -> Result<&'a [u8], Error> {
    offset
        .checked_add(len)
        .and_then(|end| bytes.get(usize::try_from(offset).ok()?..usize::try_from(end).ok()?))
        .ok_or_else(|| {
            crate::error::IoError::new(
                name,
                "read",
                Some(offset),
                std::io::ErrorKind::UnexpectedEof.into(),
            )
            .into()
        })
}
