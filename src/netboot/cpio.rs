//! A writer for the "newc" cpio format the kernel unpacks as its initramfs
//! (Documentation/driver-api/early-userspace/buffer-format.rst). Written here rather than taken
//! from a crate because the initramfs needs device nodes and symlinks with exact modes and owners
//! (root, whoever builds it), and the format is a 110-byte ASCII header.

use std::io::{self, Write};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Writes entries one after the other; [`finish`](Self::finish) writes the trailer.
pub struct Writer<W: Write> {
    out: W,
    ino: u32,
    written: u64,
}

impl<W: Write> Writer<W> {
    /// A writer into `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            ino: 1,
            written: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0; 3][..n])
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> io::Result<()> {
        let name = name.trim_start_matches('/');
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file over 4 GiB"))?;
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0, // uid: root
            0, // gid: root
            nlink,
            0, // mtime: reproducible images
            size,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0,
        );
        self.ino += 1;
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    /// A directory.
    ///
    /// # Errors
    /// The output's write error.
    pub fn dir(&mut self, name: &str) -> io::Result<()> {
        self.entry(name, S_IFDIR | 0o755, (0, 0), &[])
    }

    /// A regular file with permission bits `perm`.
    ///
    /// # Errors
    /// The output's write error; a file over 4 GiB.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(name, S_IFREG | (perm & 0o7777), (0, 0), data)
    }

    /// A symbolic link to `target`.
    ///
    /// # Errors
    /// The output's write error.
    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.entry(name, S_IFLNK | 0o777, (0, 0), target.as_bytes())
    }

    /// A character device node.
    ///
    /// # Errors
    /// The output's write error.
    pub fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(name, S_IFCHR | (perm & 0o7777), (major, minor), &[])
    }

    /// Writes the trailer and returns the output.
    ///
    /// # Errors
    /// The output's write error.
    pub fn finish(mut self) -> io::Result<W> {
        self.ino = 0;
        self.entry("TRAILER!!!", 0, (0, 0), &[])?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut w = Writer::new(Vec::new());
        w.dir("/dev").unwrap();
        w.char_device("dev/console", 0o600, 5, 1).unwrap();
        w.file("init", 0o755, b"hello").unwrap();
        w.symlink("bin/sh", "busybox").unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        assert!(out.starts_with(b"070701"));
        // The header of "dev": 110 bytes, then the name and its NUL padded to a multiple of 4.
        assert_eq!(&out[110..114], b"dev\0");
        assert!(text.contains("dev/console\0"));
        assert!(text.contains("init\0"));
        assert!(text.contains("hello"));
        assert!(text.ends_with("TRAILER!!!\0\0\0\0"));
        // Device numbers in rdevmajor/rdevminor (fields 10 and 11).
        let console = text.find("dev/console").unwrap() - 110;
        assert_eq!(
            &text[console + 6 + 9 * 8..console + 6 + 11 * 8],
            "0000000500000001"
        );
    }

    #[test]
    fn cpio_reads_it_back() {
        // GNU cpio, when present, lists what the kernel would unpack.
        let Ok(mut child) = std::process::Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            eprintln!("skipped: no cpio command");
            return;
        };
        let mut w = Writer::new(Vec::new());
        w.dir("bin").unwrap();
        w.file("bin/busybox", 0o755, &[1; 1001]).unwrap();
        w.symlink("bin/sh", "busybox").unwrap();
        let out = w.finish().unwrap();
        child.stdin.take().unwrap().write_all(&out).unwrap();
        let listed = child.wait_with_output().unwrap();
        assert!(listed.status.success());
        assert_eq!(
            String::from_utf8_lossy(&listed.stdout),
            "bin\nbin/busybox\nbin/sh\n"
        );
    }
}
