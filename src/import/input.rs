//! Image files as Clonezilla stores them: split into `NAME.aa, NAME.ab, ...` and compressed
//! with gzip, zstd, xz, bzip2 or lz4 (or `.uncomp`). The pieces are read in order as one
//! stream, and the compression is recognised by its magic bytes (the name's suffix is only a
//! hint people get wrong).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::error::IoError;

/// Most pieces a split image may have (`split -a 2` gives 676; longer suffixes allow more).
pub const MAX_PIECES: usize = 100_000;
/// Most memory an xz stream may make its decoder take (xz -9 needs 65 MiB), in KiB: a hostile
/// header cannot ask for gigabytes.
const XZ_MEMORY_KIB: u32 = 256 * 1024;
/// Read buffer of each input piece.
const BUFFER: usize = 1 << 20;

/// A compression format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Not compressed.
    None,
    /// gzip (also pigz's, possibly several members).
    Gzip,
    /// zstd (possibly several frames).
    Zstd,
    /// xz.
    Xz,
    /// bzip2 (also pbzip2's, several streams).
    Bzip2,
    /// lz4 frames.
    Lz4,
}

impl Compression {
    /// Recognises a compressed stream by its first bytes.
    pub fn sniff(first: &[u8]) -> Self {
        if first.starts_with(&[0x1F, 0x8B]) {
            Self::Gzip
        } else if first.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
            Self::Zstd
        } else if first.starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0]) {
            Self::Xz
        } else if first.starts_with(b"BZh") {
            Self::Bzip2
        } else if first.starts_with(&[0x04, 0x22, 0x4D, 0x18]) {
            Self::Lz4
        } else {
            Self::None
        }
    }
}

/// The files of one image, in order: `path` itself, or the split pieces it names.
///
/// `path` may be the first piece (`NAME.aa`) or the name the pieces share (`NAME`, when no
/// such file exists).
///
/// # Errors
/// When neither the file nor its pieces exist, or the pieces have a gap.
pub fn pieces(path: &Path) -> Result<Vec<PathBuf>, IoError> {
    let not_found = || {
        IoError::new(
            path,
            "open",
            None,
            io::Error::new(
                io::ErrorKind::NotFound,
                "no such file, nor split pieces of it",
            ),
        )
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(not_found)?;
    let (stem, first_suffix) = match name.rsplit_once('.') {
        Some((stem, s)) if is_first_suffix(s) => (stem.to_string(), s.len()),
        _ if path.is_file() => return Ok(vec![path.to_path_buf()]),
        _ => (name.to_string(), 0),
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Every NAME.<letters> of one suffix length, sorted: split's order.
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| IoError::new(dir, "read directory", None, e))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| {
            let s = n.strip_prefix(&stem)?.strip_prefix('.')?;
            (s.len() >= 2 && s.bytes().all(|b| b.is_ascii_lowercase())).then(|| s.to_string())
        })
        .filter(|s| first_suffix == 0 || s.len() == first_suffix)
        .collect();
    found.sort_by(|a, b| a.len().cmp(&b.len()).then(a.cmp(b)));
    if found.is_empty() {
        return Err(not_found());
    }
    let len = found[0].len();
    if found.len() > MAX_PIECES || found.iter().any(|s| s.len() != len) {
        return Err(IoError::new(
            path,
            "open",
            None,
            io::Error::other("its split pieces have suffixes of different lengths"),
        ));
    }
    let mut expect = "a".repeat(len);
    for s in &found {
        if *s != expect {
            return Err(IoError::new(
                &dir.join(format!("{stem}.{expect}")),
                "open",
                None,
                io::Error::new(io::ErrorKind::NotFound, "a split piece is missing"),
            ));
        }
        expect = next_suffix(&expect);
    }
    Ok(found
        .iter()
        .map(|s| dir.join(format!("{stem}.{s}")))
        .collect())
}

fn is_first_suffix(s: &str) -> bool {
    s.len() >= 2 && s.bytes().all(|b| b == b'a')
}

/// The suffix after `s` in split's order (aa, ab, ..., az, ba, ...).
fn next_suffix(s: &str) -> String {
    let mut b = s.as_bytes().to_vec();
    for c in b.iter_mut().rev() {
        if *c == b'z' {
            *c = b'a';
        } else {
            *c += 1;
            break;
        }
    }
    String::from_utf8(b).expect("ASCII")
}

/// Reads the pieces one after the other.
struct Concat {
    files: std::vec::IntoIter<PathBuf>,
    current: Option<(PathBuf, BufReader<File>)>,
}

impl Read for Concat {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.current.is_none() {
                let Some(p) = self.files.next() else {
                    return Ok(0);
                };
                let f = File::open(&p)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
                self.current = Some((p, BufReader::with_capacity(BUFFER, f)));
            }
            let (p, r) = self.current.as_mut().expect("just set");
            match r.read(buf) {
                Ok(0) if !buf.is_empty() => self.current = None,
                Ok(n) => return Ok(n),
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", p.display()))),
            }
        }
    }
}

/// An opened image input: the decompressed bytes, and what was found.
pub struct Input {
    /// The decompressed stream.
    pub reader: Box<dyn Read + Send>,
    /// The compression found.
    pub compression: Compression,
    /// The files read, in order.
    pub pieces: Vec<PathBuf>,
}

/// Opens `path` (or its split pieces) and decompresses what it holds.
///
/// # Errors
/// When a piece cannot be opened or read.
pub fn open(path: &Path) -> Result<Input, IoError> {
    let pieces = pieces(path)?;
    let mut raw = BufReader::with_capacity(
        BUFFER,
        Concat {
            files: pieces.clone().into_iter(),
            current: None,
        },
    );
    let first = raw
        .fill_buf()
        .map_err(|e| IoError::new(path, "read", Some(0), e))?;
    let compression = Compression::sniff(first);
    let reader: Box<dyn Read + Send> = match compression {
        Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(raw)
                .map_err(|e| IoError::new(path, "start zstd on", None, e))?,
        ),
        Compression::Xz => Box::new(lzma_rust2::XzReader::new_mem_limit(
            raw,
            true,
            XZ_MEMORY_KIB,
        )),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(raw)),
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(raw)),
    };
    Ok(Input {
        reader,
        compression,
        pieces,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_follow_split() {
        assert_eq!(next_suffix("aa"), "ab");
        assert_eq!(next_suffix("az"), "ba");
        assert_eq!(next_suffix("zz"), "aa");
        assert!(is_first_suffix("aa") && is_first_suffix("aaa") && !is_first_suffix("ab"));
    }

    #[test]
    fn pieces_in_order_and_gaps_refused() {
        let d = tempfile::tempdir().unwrap();
        for s in ["ab", "aa", "ac"] {
            std::fs::write(d.path().join(format!("x.gz.{s}")), s).unwrap();
        }
        let got = pieces(&d.path().join("x.gz.aa")).unwrap();
        let names: Vec<_> = got
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["x.gz.aa", "x.gz.ab", "x.gz.ac"]);
        assert_eq!(pieces(&d.path().join("x.gz")).unwrap(), got);
        let mut all = String::new();
        open(&d.path().join("x.gz"))
            .unwrap()
            .reader
            .read_to_string(&mut all)
            .unwrap();
        assert_eq!(all, "aaabac");
        std::fs::remove_file(d.path().join("x.gz.ab")).unwrap();
        let e = pieces(&d.path().join("x.gz.aa")).unwrap_err();
        assert!(e.path.ends_with("x.gz.ab"), "{e}");
    }
}
