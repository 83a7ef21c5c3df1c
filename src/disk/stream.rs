//! A whole saved disk as one self-delimiting stream (docs/FORMAT.md, "Disk stream"): the
//! manifest, the boot area and each partition image in order, so that a disk can go through a
//! pipe, ssh or udpcast multicast and be restored as it arrives. Records are framed and
//! checksummed; the partition images inside are ordinary image streams, which delimit and check
//! themselves.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use byteorder::{ByteOrder, LittleEndian};
use thiserror::Error;

/// Stream magic: a high byte, a name, CR LF and ^Z (as the image magic).
pub const MAGIC: [u8; 8] = *b"\x89RDSK\r\n\x1a";
/// The stream version this rimage writes and reads.
pub const VERSION: u16 = 1;
/// Bytes of the stream header: magic, version, reserved, CRC32.
pub const STREAM_HEADER_LEN: usize = 16;
/// Bytes of a record header: kind, reserved, partition, length, CRC32.
pub const RECORD_HEADER_LEN: usize = 20;
/// Largest manifest record.
pub const MAX_MANIFEST: u64 = 16 << 20;
/// Largest boot-area record (the boot area is at most 16 MiB).
pub const MAX_BOOT_AREA: u64 = 16 << 20;

/// Record kinds.
const KIND_MANIFEST: u8 = 1;
const KIND_BOOT_AREA: u8 = 2;
const KIND_IMAGE: u8 = 3;
const KIND_END: u8 = 4;

/// What is wrong with a disk stream.
#[derive(Debug, Error)]
pub enum DiskStreamError {
    /// Not a disk stream.
    #[error("not a rimage disk stream (bad magic at byte offset 0)")]
    NotADiskStream,
    /// A version this reader does not know.
    #[error("unsupported disk stream version {0} (this rimage reads version 1)")]
    Version(u16),
    /// A header or record fails its CRC.
    #[error("{what} at byte offset {offset} fails its CRC")]
    Crc {
        /// Which structure.
        what: &'static str,
        /// Where it starts.
        offset: u64,
    },
    /// A record of an unknown kind, or one out of place.
    #[error("unexpected record at byte offset {offset}: {what}")]
    Unexpected {
        /// Where.
        offset: u64,
        /// What was found, and what was expected.
        what: String,
    },
    /// A length beyond the limits.
    #[error("{what} at byte offset {offset} claims {len} bytes, more than {max}")]
    TooLong {
        /// Which record.
        what: &'static str,
        /// Where.
        offset: u64,
        /// What it claims.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The stream ends inside a structure.
    #[error("the disk stream ends inside the {what} at byte offset {offset}")]
    Truncated {
        /// Which structure.
        what: &'static str,
        /// Where it starts.
        offset: u64,
    },
    /// Reading failed.
    #[error("read failed at byte offset {offset}")]
    Io {
        /// Where.
        offset: u64,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// One record of a disk stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Record {
    /// The manifest (TOML).
    Manifest(Vec<u8>),
    /// The bytes before the first partition.
    BootArea(Vec<u8>),
    /// An image stream of partition `n` follows.
    Image(u32),
    /// The end: this many images were sent.
    End(u32),
}

fn header_bytes() -> [u8; STREAM_HEADER_LEN] {
    let mut h = [0u8; STREAM_HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    LittleEndian::write_u16(&mut h[8..], VERSION);
    let crc = crc32fast::hash(&h[..12]);
    LittleEndian::write_u32(&mut h[12..], crc);
    h
}

fn record_header(kind: u8, part: u32, len: u64) -> [u8; RECORD_HEADER_LEN] {
    let mut r = [0u8; RECORD_HEADER_LEN];
    r[0] = kind;
    LittleEndian::write_u32(&mut r[4..], part);
    LittleEndian::write_u64(&mut r[8..], len);
    let crc = crc32fast::hash(&r[..16]);
    LittleEndian::write_u32(&mut r[16..], crc);
    r
}

/// Writes a disk stream: [`DiskStreamWriter::start`], the manifest, the boot area, then for each
/// imaged partition [`DiskStreamWriter::image`] followed by the image stream written to the same
/// writer, and [`DiskStreamWriter::end`].
pub struct DiskStreamWriter<W: Write> {
    w: W,
    images: u32,
}

impl<W: Write> DiskStreamWriter<W> {
    /// Writes the stream header.
    ///
    /// # Errors
    /// Write errors.
    pub fn start(mut w: W) -> io::Result<Self> {
        w.write_all(&header_bytes())?;
        Ok(Self { w, images: 0 })
    }

    fn blob(&mut self, kind: u8, bytes: &[u8]) -> io::Result<()> {
        self.w
            .write_all(&record_header(kind, 0, bytes.len() as u64))?;
        self.w.write_all(bytes)?;
        self.w.write_all(&crc32fast::hash(bytes).to_le_bytes())
    }

    /// The manifest record.
    ///
    /// # Errors
    /// Write errors.
    pub fn manifest(&mut self, toml: &[u8]) -> io::Result<()> {
        self.blob(KIND_MANIFEST, toml)
    }

    /// The boot area record.
    ///
    /// # Errors
    /// Write errors.
    pub fn boot_area(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.blob(KIND_BOOT_AREA, bytes)
    }

    /// Announces the image of partition `n`; write the image stream to [`DiskStreamWriter::inner`]
    /// next.
    ///
    /// # Errors
    /// Write errors.
    pub fn image(&mut self, n: u32) -> io::Result<()> {
        self.images += 1;
        self.w.write_all(&record_header(KIND_IMAGE, n, 0))
    }

    /// The underlying writer (for the image streams).
    pub fn inner(&mut self) -> &mut W {
        &mut self.w
    }

    /// Writes the end record and flushes; returns the writer.
    ///
    /// # Errors
    /// Write errors.
    pub fn end(mut self) -> io::Result<W> {
        self.w.write_all(&record_header(KIND_END, self.images, 0))?;
        self.w.flush()?;
        Ok(self.w)
    }
}

/// A reader shared between the disk stream and the image stream it carries (the image reader
/// runs on worker threads and must own what it reads from).
pub struct Shared<R>(Arc<Mutex<(R, u64)>>);

impl<R> Clone for Shared<R> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<R: Read> Shared<R> {
    /// Shares `r`.
    pub fn new(r: R) -> Self {
        Self(Arc::new(Mutex::new((r, 0))))
    }

    /// Bytes read so far.
    pub fn position(&self) -> u64 {
        self.0.lock().expect("stream lock").1
    }
}

impl<R: Read> Read for Shared<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut g = self.0.lock().expect("stream lock");
        let n = g.0.read(buf)?;
        g.1 += n as u64;
        Ok(n)
    }
}

/// Reads a disk stream record by record. After [`Record::Image`], the image stream is read from
/// [`DiskStreamReader::image_reader`] (it stops at the image's trailer) before the next record.
pub struct DiskStreamReader<R> {
    r: Shared<R>,
    images: u32,
    ended: bool,
}

impl<R: Read> DiskStreamReader<R> {
    /// Reads and checks the stream header.
    ///
    /// # Errors
    /// Not a disk stream, an unknown version, a CRC mismatch, truncation, read errors.
    pub fn new(r: R) -> Result<Self, DiskStreamError> {
        let mut s = Self {
            r: Shared::new(r),
            images: 0,
            ended: false,
        };
        let mut h = [0u8; STREAM_HEADER_LEN];
        let mut got = 0;
        while got < h.len() {
            match s.r.read(&mut h[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(DiskStreamError::Io { offset: 0, source }),
            }
        }
        if got < MAGIC.len() || h[..8] != MAGIC {
            return Err(if h[..8] == crate::image::header::MAGIC {
                DiskStreamError::Unexpected {
                    offset: 0,
                    what: "a single partition image, not a whole disk: restore it with `rimage restore - TARGET`".into(),
                }
            } else {
                DiskStreamError::NotADiskStream
            });
        }
        if got < h.len() {
            return Err(DiskStreamError::Truncated {
                what: "stream header",
                offset: 0,
            });
        }
        if LittleEndian::read_u32(&h[12..]) != crc32fast::hash(&h[..12]) {
            return Err(DiskStreamError::Crc {
                what: "stream header",
                offset: 0,
            });
        }
        let v = LittleEndian::read_u16(&h[8..]);
        if v != VERSION {
            return Err(DiskStreamError::Version(v));
        }
        Ok(s)
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), DiskStreamError> {
        let offset = self.r.position();
        self.r.read_exact(buf).map_err(|source| {
            if source.kind() == io::ErrorKind::UnexpectedEof {
                DiskStreamError::Truncated { what, offset }
            } else {
                DiskStreamError::Io { offset, source }
            }
        })
    }

    /// Bytes read so far.
    pub fn position(&self) -> u64 {
        self.r.position()
    }

    /// The next record (`None` after the end record).
    ///
    /// # Errors
    /// A damaged or truncated record, or one of an unknown kind.
    pub fn next_record(&mut self) -> Result<Option<Record>, DiskStreamError> {
        if self.ended {
            return Ok(None);
        }
        let offset = self.r.position();
        let mut h = [0u8; RECORD_HEADER_LEN];
        self.read_exact(&mut h, "record header")?;
        if LittleEndian::read_u32(&h[16..]) != crc32fast::hash(&h[..16]) {
            return Err(DiskStreamError::Crc {
                what: "record header",
                offset,
            });
        }
        let (kind, part, len) = (
            h[0],
            LittleEndian::read_u32(&h[4..]),
            LittleEndian::read_u64(&h[8..]),
        );
        let blob =
            |s: &mut Self, what: &'static str, max: u64| -> Result<Vec<u8>, DiskStreamError> {
                if len > max {
                    return Err(DiskStreamError::TooLong {
                        what,
                        offset,
                        len,
                        max,
                    });
                }
                // Grows as bytes arrive (bounded by `max` above).
                let mut bytes = Vec::new();
                let got = (&mut s.r)
                    .take(len)
                    .read_to_end(&mut bytes)
                    .map_err(|source| DiskStreamError::Io { offset, source })?;
                if got as u64 != len {
                    return Err(DiskStreamError::Truncated { what, offset });
                }
                let mut crc = [0u8; 4];
                s.read_exact(&mut crc, what)?;
                if u32::from_le_bytes(crc) != crc32fast::hash(&bytes) {
                    return Err(DiskStreamError::Crc { what, offset });
                }
                Ok(bytes)
            };
        Ok(Some(match kind {
            KIND_MANIFEST => Record::Manifest(blob(self, "manifest", MAX_MANIFEST)?),
            KIND_BOOT_AREA => Record::BootArea(blob(self, "boot area", MAX_BOOT_AREA)?),
            KIND_IMAGE => {
                self.images += 1;
                Record::Image(part)
            }
            KIND_END => {
                if part != self.images {
                    return Err(DiskStreamError::Unexpected {
                        offset,
                        what: format!(
                            "the end record counts {part} images, the stream held {}",
                            self.images
                        ),
                    });
                }
                self.ended = true;
                Record::End(part)
            }
            other => {
                return Err(DiskStreamError::Unexpected {
                    offset,
                    what: format!("record kind {other}"),
                });
            }
        }))
    }

    /// The reader the image stream after a [`Record::Image`] is read from.
    pub fn image_reader(&self) -> Shared<R> {
        self.r.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn stream() -> Vec<u8> {
        let mut w = DiskStreamWriter::start(Vec::new()).unwrap();
        w.manifest(b"format = \"rimage-disk\"\n").unwrap();
        w.boot_area(&[0xEB; 1024]).unwrap();
        w.image(2).unwrap();
        w.inner().extend_from_slice(b"IMAGE-BYTES");
        w.end().unwrap()
    }

    #[test]
    fn records_come_back_in_order() {
        let bytes = stream();
        let mut r = DiskStreamReader::new(Cursor::new(bytes)).unwrap();
        assert!(
            matches!(r.next_record().unwrap(), Some(Record::Manifest(m)) if m.starts_with(b"format"))
        );
        assert!(matches!(r.next_record().unwrap(), Some(Record::BootArea(b)) if b.len() == 1024));
        assert_eq!(r.next_record().unwrap(), Some(Record::Image(2)));
        let mut img = [0u8; 11];
        r.image_reader().read_exact(&mut img).unwrap();
        assert_eq!(&img, b"IMAGE-BYTES");
        assert_eq!(r.next_record().unwrap(), Some(Record::End(1)));
        assert_eq!(r.next_record().unwrap(), None);
    }

    #[test]
    fn damage_and_truncation_are_named() {
        let bytes = stream();
        for cut in 0..bytes.len() - 1 {
            let mut r = match DiskStreamReader::new(Cursor::new(&bytes[..cut])) {
                Ok(r) => r,
                Err(_) => continue,
            };
            let mut failed = false;
            for _ in 0..4 {
                match r.next_record() {
                    Ok(Some(Record::Image(_))) => {
                        let mut sink = Vec::new();
                        let _ = r.image_reader().take(11).read_to_end(&mut sink);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            assert!(failed, "a stream cut at {cut} read through");
        }
        for i in 0..60 {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            let ok = DiskStreamReader::new(Cursor::new(bad)).and_then(|mut r| {
                while let Some(rec) = r.next_record()? {
                    if let Record::Image(_) = rec {
                        let mut sink = [0u8; 11];
                        let _ = r.image_reader().read_exact(&mut sink);
                    }
                }
                Ok(())
            });
            assert!(ok.is_err(), "a flipped byte at {i} went unnoticed");
        }
    }
}
