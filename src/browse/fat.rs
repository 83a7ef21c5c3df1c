//! Browsing FAT images with the fatfs crate, which reads the image through [`ImageBlocks`] as
//! a read-only disk.
//!
//! FAT keeps no owners or permissions: entries show root's, 0755 for directories, 0644 for
//! files (0444 when read-only). Times are the FAT's local times, shown as if UTC.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use fatfs::{FileAttributes, FsOptions, ReadWriteSeek};

use super::{Entry, Files, ImageBlocks, set_mtime};
use crate::Error;
use crate::error::IoError;

/// The image as a disk for fatfs: reads go to the image, writes are refused.
pub(super) struct Disk {
    blocks: ImageBlocks,
    pos: u64,
    len: u64,
}

impl Read for Disk {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.len.saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        self.blocks
            .read(self.pos, &mut buf[..n])
            .map_err(io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Disk {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(self.pos)
    }
}

impl Write for Disk {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "an image is read-only",
        ))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A FAT filesystem inside an image.
pub(super) struct FatFiles {
    image: PathBuf,
    fs: fatfs::FileSystem<Disk>,
}

type Dir<'a> = fatfs::Dir<'a, Disk>;
type DirEntry<'a> = fatfs::DirEntry<'a, Disk>;

impl FatFiles {
    /// Opens the FAT filesystem the image holds.
    pub(super) fn open(image: &Path, blocks: ImageBlocks) -> Result<Self, Error> {
        let len = blocks.header().source_size;
        let disk = Disk {
            blocks,
            pos: 0,
            len,
        };
        let fs = fatfs::FileSystem::new(disk, FsOptions::new()).map_err(|e| Error::Browse {
            image: image.to_path_buf(),
            message: format!("the FAT filesystem in this image cannot be read ({e}); restore it and read it with mtools or mount it"),
        })?;
        Ok(Self {
            image: image.to_path_buf(),
            fs,
        })
    }

    fn err(&self, inside: &str, what: impl std::fmt::Display) -> Error {
        Error::Browse {
            image: self.image.clone(),
            message: format!("{inside}: {what}"),
        }
    }

    /// The entry at `path` (`None` for the root), found case-insensitively as FAT does.
    fn lookup(&self, path: &str) -> Result<Option<DirEntry<'_>>, Error> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let Some((last, parents)) = parts.split_last() else {
            return Ok(None);
        };
        let mut dir = self.fs.root_dir();
        for p in parents {
            dir = match self.child(&dir, p, path)? {
                Some(e) if e.is_dir() => e.to_dir(),
                Some(_) => return Err(self.err(path, "not a directory")),
                None => return Err(self.err(path, "no such file or directory in the image")),
            };
        }
        match self.child(&dir, last, path)? {
            Some(e) => Ok(Some(e)),
            None => Err(self.err(path, "no such file or directory in the image")),
        }
    }

    fn child<'a>(
        &self,
        dir: &Dir<'a>,
        name: &str,
        path: &str,
    ) -> Result<Option<DirEntry<'a>>, Error> {
        for e in dir.iter() {
            let e = e.map_err(|e| self.err(path, e))?;
            if e.file_name().eq_ignore_ascii_case(name) {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// The entries of a directory, without ".", ".." and the volume label.
    fn children<'a>(&self, dir: &Dir<'a>, path: &str) -> Result<Vec<DirEntry<'a>>, Error> {
        let mut out = Vec::new();
        for e in dir.iter() {
            let e = e.map_err(|e| self.err(path, e))?;
            let name = e.file_name();
            if name == "." || name == ".." || e.attributes().contains(FileAttributes::VOLUME_ID) {
                continue;
            }
            out.push(e);
        }
        out.sort_by_key(DirEntry::file_name);
        Ok(out)
    }

    fn copy_out(&self, e: &DirEntry<'_>, path: &str, out: &mut dyn Write) -> Result<u64, Error> {
        let mut file = e.to_file();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0;
        loop {
            let n = file.read(&mut buf).map_err(|e| self.err(path, e))?;
            if n == 0 {
                return Ok(total);
            }
            out.write_all(&buf[..n])
                .map_err(|e| IoError::new(Path::new("<output>"), "write", Some(total), e))?;
            total += n as u64;
        }
    }

    fn extract_one(
        &self,
        e: &DirEntry<'_>,
        path: &str,
        dest: &Path,
        count: &mut u64,
    ) -> Result<(), Error> {
        let io =
            |op: &'static str| move |e: std::io::Error| Error::Io(IoError::new(dest, op, None, e));
        if e.is_dir() {
            std::fs::create_dir(dest).map_err(io("create directory"))?;
            for child in self.children(&e.to_dir(), path)? {
                let name = child.file_name();
                self.extract_one(&child, &format!("{path}/{name}"), &dest.join(&name), count)?;
            }
        } else {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(dest)
                .map_err(io("create"))?;
            self.copy_out(e, path, &mut file)?;
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(u32::from(mode(e))))
            .map_err(io("chmod"))?;
        set_mtime(dest, mtime(e), 0)?;
        *count += 1;
        Ok(())
    }
}

/// The permissions shown for an entry.
fn mode(e: &DirEntry<'_>) -> u16 {
    if e.is_dir() {
        0o755
    } else if e.attributes().contains(FileAttributes::READ_ONLY) {
        0o444
    } else {
        0o644
    }
}

/// The modification time, seconds since the epoch (FAT's local time taken as UTC).
fn mtime(e: &DirEntry<'_>) -> i64 {
    let t = e.modified();
    let (y, m, d) = (
        i64::from(t.date.year),
        i64::from(t.date.month),
        i64::from(t.date.day),
    );
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400
        + i64::from(t.time.hour) * 3600
        + i64::from(t.time.min) * 60
        + i64::from(t.time.sec)
}

fn entry(e: &DirEntry<'_>) -> Entry {
    Entry {
        name: e.file_name(),
        kind: if e.is_dir() { "dir" } else { "file" },
        mode: mode(e),
        uid: 0,
        gid: 0,
        size: if e.is_dir() { 0 } else { e.len() },
        mtime: mtime(e),
        target: None,
    }
}

impl Files for FatFiles {
    fn list(&self, dir: &str) -> Result<Vec<Entry>, Error> {
        match self.lookup(dir)? {
            None => Ok(self
                .children(&self.fs.root_dir(), dir)?
                .iter()
                .map(entry)
                .collect()),
            Some(e) if e.is_dir() => {
                Ok(self.children(&e.to_dir(), dir)?.iter().map(entry).collect())
            }
            Some(e) => Ok(vec![entry(&e)]),
        }
    }

    fn cat(&self, path: &str, out: &mut dyn Write) -> Result<u64, Error> {
        match self.lookup(path)? {
            Some(e) if !e.is_dir() => self.copy_out(&e, path, out),
            _ => Err(self.err(path, "is a directory")),
        }
    }

    fn extract(&self, path: &str, dest: &Path) -> Result<u64, Error> {
        let mut count = 0;
        match self.lookup(path)? {
            Some(e) => self.extract_one(&e, path.trim_end_matches('/'), dest, &mut count)?,
            None => {
                std::fs::create_dir(dest)
                    .map_err(|e| Error::Io(IoError::new(dest, "create directory", None, e)))?;
                for child in self.children(&self.fs.root_dir(), "/")? {
                    let name = child.file_name();
                    self.extract_one(&child, &format!("/{name}"), &dest.join(&name), &mut count)?;
                }
                count += 1;
            }
        }
        Ok(count)
    }

    fn exists(&self, path: &str) -> bool {
        self.lookup(path).is_ok()
    }
}

// fatfs wants its disk to be `Read + Write + Seek`.
const _: fn() = || {
    fn is_disk<T: ReadWriteSeek>() {}
    is_disk::<Disk>();
};
