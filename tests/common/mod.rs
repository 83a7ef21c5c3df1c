//! Shared test helpers: the mkfs matrix, pattern-filled targets, dirtying free space through a
//! loop mount, dumpe2fs and e2fsck as oracles, and file-tree comparison.
#![allow(dead_code)]

pub mod disk;
pub mod http;
pub mod netns;
pub mod partclone;
pub mod tree;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tempfile::TempDir;

/// One filesystem of the matrix.
#[derive(Debug)]
pub struct Case {
    /// Test-friendly name.
    pub name: &'static str,
    /// Size of the image file in MiB.
    pub size_mib: u64,
    /// Arguments for `mke2fs` (after `-q -F`).
    pub args: &'static [&'static str],
    /// Mount it, write, delete and rewrite files so free space holds stale data.
    pub dirty: bool,
}

/// The scanner's matrix: every layout feature that changes which blocks are metadata.
pub const MATRIX: &[Case] = &[
    Case {
        name: "ext4_small_1k",
        size_mib: 64,
        args: &["-t", "ext4"],
        dirty: true,
    },
    Case {
        name: "ext4_small_fresh",
        size_mib: 64,
        args: &["-t", "ext4"],
        dirty: false,
    },
    Case {
        name: "ext4_2g_4k",
        size_mib: 2048,
        args: &["-t", "ext4"],
        dirty: true,
    },
    Case {
        name: "ext4_no_flex_bg",
        size_mib: 256,
        args: &["-t", "ext4", "-O", "^flex_bg"],
        dirty: true,
    },
    Case {
        name: "ext4_no_64bit",
        size_mib: 128,
        args: &["-t", "ext4", "-O", "^64bit"],
        dirty: true,
    },
    Case {
        name: "ext4_meta_bg",
        size_mib: 256,
        args: &["-t", "ext4", "-O", "meta_bg,^resize_inode"],
        dirty: true,
    },
    Case {
        name: "ext4_meta_bg_4k",
        size_mib: 512,
        args: &[
            "-t",
            "ext4",
            "-b",
            "4096",
            "-O",
            "meta_bg,^resize_inode,^64bit",
            "-g",
            "1024",
        ],
        dirty: false,
    },
    Case {
        name: "ext4_bigalloc_1k",
        size_mib: 256,
        args: &["-t", "ext4", "-b", "1024", "-O", "bigalloc", "-C", "16384"],
        dirty: true,
    },
    Case {
        name: "ext4_bigalloc_4k",
        size_mib: 512,
        args: &["-t", "ext4", "-b", "4096", "-O", "bigalloc", "-C", "65536"],
        dirty: true,
    },
    Case {
        name: "ext2",
        size_mib: 64,
        args: &["-t", "ext2"],
        dirty: true,
    },
    Case {
        name: "ext3",
        size_mib: 128,
        args: &["-t", "ext3"],
        dirty: true,
    },
    Case {
        name: "ext4_sparse_super2",
        size_mib: 256,
        args: &["-t", "ext4", "-O", "sparse_super2"],
        dirty: true,
    },
    Case {
        name: "ext4_no_sparse_super",
        size_mib: 128,
        args: &["-t", "ext4", "-O", "^sparse_super,^resize_inode"],
        dirty: false,
    },
    Case {
        name: "ext4_uninit_bg",
        size_mib: 256,
        args: &["-t", "ext4", "-O", "^metadata_csum,uninit_bg"],
        dirty: true,
    },
    Case {
        name: "ext4_inline_data",
        size_mib: 64,
        args: &["-t", "ext4", "-O", "inline_data"],
        dirty: true,
    },
];

/// Expands to one `#[test]` per matrix case, each calling `check_case("<name>")` of the file
/// that uses it, and a test that every case of [`MATRIX`] has one.
#[allow(unused_macros)]
macro_rules! matrix_tests {
    () => {
        common::matrix_tests!(
            ext4_small_1k,
            ext4_small_fresh,
            ext4_2g_4k,
            ext4_no_flex_bg,
            ext4_no_64bit,
            ext4_meta_bg,
            ext4_meta_bg_4k,
            ext4_bigalloc_1k,
            ext4_bigalloc_4k,
            ext2,
            ext3,
            ext4_sparse_super2,
            ext4_no_sparse_super,
            ext4_uninit_bg,
            ext4_inline_data,
        );
    };
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { check_case(stringify!($name)); })*

        #[test]
        fn every_matrix_case_has_a_test() {
            let tested = [$(stringify!($name)),*];
            for c in common::MATRIX {
                assert!(tested.contains(&c.name), "matrix case {} has no test", c.name);
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use matrix_tests;

/// The case called `name`.
pub fn case(name: &str) -> &'static Case {
    MATRIX
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

/// Whether an external program is on PATH (or in /sbin).
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs a command, panicking with its output if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether loop mounts work here (root, loop driver). Checked once.
pub fn can_mount() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let Ok(dir) = tempfile::tempdir() else {
            return false;
        };
        let img = dir.path().join("probe.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        File::create(&img).unwrap().set_len(8 << 20).unwrap();
        let made = Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext2"])
            .arg(&img)
            .output()
            .is_ok_and(|o| o.status.success());
        if !made {
            return false;
        }
        let ok = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt)
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            let _ = Command::new("umount").arg(&mnt).status();
        } else {
            eprintln!(
                "note: loop mounts are not available here; tests that need them skip that part"
            );
        }
        ok
    })
}

/// A loop-mounted filesystem image, unmounted on drop.
pub struct Mounted {
    dir: TempDir,
}

impl Mounted {
    /// Mounts `img` (read-only without journal replay when `ro`).
    pub fn new(img: &Path, ro: bool) -> Option<Self> {
        if !can_mount() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        // Read-only mounts must not replay a journal; ext2 has none and refuses "noload".
        let attempts: &[&str] = if ro {
            &["loop,ro,noload", "loop,ro"]
        } else {
            &["loop"]
        };
        let mut last = None;
        for opts in attempts {
            let out = Command::new("mount")
                .args(["-o", opts])
                .arg(img)
                .arg(dir.path())
                .output()
                .unwrap();
            if out.status.success() {
                return Some(Self { dir });
            }
            last = Some(out);
        }
        let out = last.expect("at least one attempt");
        panic!(
            "mount {} failed: {}",
            img.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// A filesystem image made for a test, in its own temporary directory.
pub struct TestFs {
    pub dir: TempDir,
    pub img: PathBuf,
    pub case: &'static Case,
}

/// Bytes written into block 0 of every source: a 1 KiB-block filesystem must keep its boot
/// sector although no bitmap covers it.
pub const BOOT_MARK: &[u8] = b"RIMAGE-TEST-BOOT-SECTOR";

/// Builds the case: populate a tree, `mke2fs -d`, optionally dirty free space, mark block 0.
pub fn build(case: &'static Case) -> TestFs {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    tree::populate(&tree, seed_of(case.name));
    let img = dir.path().join(format!("{}.img", case.name));
    File::create(&img)
        .unwrap()
        .set_len(case.size_mib << 20)
        .unwrap();
    run(Command::new("mke2fs")
        .args(["-q", "-F"])
        .args(case.args)
        .arg("-d")
        .arg(&tree)
        .arg(&img));
    if case.dirty {
        dirty(&img, seed_of(case.name) ^ 0xD1);
    }
    File::options()
        .write(true)
        .open(&img)
        .unwrap()
        .write_all_at(BOOT_MARK, 0)
        .unwrap();
    TestFs { dir, img, case }
}

fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

/// Mounts the image, fills part of its free space with random files, deletes some of them and
/// rewrites some original files: afterwards free blocks hold stale non-zero data, as on a real
/// disk. Does nothing (with a note) where loop mounts are unavailable.
pub fn dirty(img: &Path, seed: u64) {
    let Some(m) = Mounted::new(img, false) else {
        eprintln!(
            "note: cannot mount {}: free space stays clean",
            img.display()
        );
        return;
    };
    let mut rng = fastrand::Rng::with_seed(seed);
    let st = rustix::fs::statvfs(m.path()).unwrap();
    let free = st.f_bavail * st.f_frsize;
    let budget = (free / 3).min(64 << 20);
    let junk = m.path().join("junk");
    std::fs::create_dir(&junk).unwrap();
    let mut written = 0;
    let mut i = 0;
    while written < budget {
        let len = rng.u64(4096..(budget / 8).max(8192));
        let mut data = vec![0u8; len as usize];
        rng.fill(&mut data);
        std::fs::write(junk.join(format!("j{i}")), &data).unwrap();
        written += len;
        i += 1;
    }
    rustix::fs::sync();
    for k in (0..i).filter(|k| k % 3 != 0) {
        std::fs::remove_file(junk.join(format!("j{k}"))).unwrap();
    }
    // Rewrite some original files in place with new, different-length contents.
    for path in tree::files_under(m.path())
        .into_iter()
        .filter(|p| !p.starts_with(&junk))
        .step_by(5)
    {
        let mut data = vec![0u8; rng.usize(0..20000)];
        rng.fill(&mut data);
        std::fs::write(&path, &data).unwrap();
    }
    rustix::fs::sync();
}

/// Fills `path` (created or truncated) with `size` bytes of a non-zero pattern that names each
/// 512-byte sector, so a block that restore should have written but did not is visible.
pub fn pattern_file(path: &Path, size: u64) {
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(buf.len() as u64) as usize;
        for (i, sector) in buf[..n].chunks_mut(512).enumerate() {
            let tag = format!("PATTERN@{:016x};", off + (i as u64) * 512);
            for (j, b) in sector.iter_mut().enumerate() {
                *b = tag.as_bytes()[j % tag.len()];
            }
        }
        f.write_all(&buf[..n]).unwrap();
        off += n as u64;
    }
    f.sync_all().unwrap();
}

/// Free block ranges (inclusive) as dumpe2fs lists them, group by group.
pub fn dumpe2fs_free(img: &Path) -> Vec<(u64, u64)> {
    let out = run(Command::new("dumpe2fs").arg(img));
    let mut free = Vec::new();
    for line in out.lines() {
        let Some(list) = line.strip_prefix("  Free blocks: ") else {
            continue;
        };
        for item in list.split(", ").filter(|s| !s.is_empty()) {
            let (a, b) = item.split_once('-').unwrap_or((item, item));
            free.push((a.trim().parse().unwrap(), b.trim().parse().unwrap()));
        }
    }
    free
}

/// A superblock field as `dumpe2fs -h` prints it ("Block count", "Free blocks", ...).
pub fn dumpe2fs_field(img: &Path, field: &str) -> Option<String> {
    let out = run(Command::new("dumpe2fs").arg("-h").arg(img));
    out.lines().find_map(|l| {
        l.strip_prefix(&format!("{field}:"))
            .map(|v| v.trim().to_string())
    })
}

/// The first backup superblock dumpe2fs reports, if any.
pub fn first_backup_superblock(img: &Path) -> Option<u64> {
    let out = run(Command::new("dumpe2fs").arg(img));
    out.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("Backup superblock at ")?;
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })
}

/// `e2fsck -fn` (optionally through a backup superblock): exit status and report, with the
/// image path replaced so reports of different images compare equal.
pub fn e2fsck(img: &Path, backup: Option<(u64, u32)>) -> (i32, String) {
    let mut cmd = Command::new("e2fsck");
    cmd.arg("-fn");
    if let Some((sb, bs)) = backup {
        cmd.args(["-b", &sb.to_string(), "-B", &bs.to_string()]);
    }
    let out = cmd.arg(img).output().expect("run e2fsck");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap_or(-1),
        text.replace(&img.display().to_string(), "IMG"),
    )
}

/// Asserts `e2fsck -fn` finds nothing wrong.
pub fn assert_fsck_clean(img: &Path) {
    let (code, report) = e2fsck(img, None);
    assert_eq!(
        code,
        0,
        "e2fsck -fn {} reports problems:\n{report}",
        img.display()
    );
}

/// Asserts e2fsck through the first backup superblock says of `copy` exactly what it says of
/// `source`: a lost backup superblock or descriptor block shows up as a different report.
pub fn assert_backup_fsck_matches(source: &Path, copy: &Path, block_size: u32) {
    let Some(sb) = first_backup_superblock(source) else {
        eprintln!("note: {} has no backup superblock", source.display());
        return;
    };
    let src = e2fsck(source, Some((sb, block_size)));
    let dst = e2fsck(copy, Some((sb, block_size)));
    assert_eq!(src, dst, "e2fsck -b {sb} differs between source and copy");
}

/// Opens a file for positional writes.
pub fn open_rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap()
}

/// A loop device over a file, detached on drop (with any partitions the kernel has for it:
/// partitions added with BLKPG outlive a detach, and a later attach of another file to the same
/// loop device would inherit them).
pub struct LoopDev {
    pub dev: PathBuf,
}

impl LoopDev {
    /// Attaches `file` to a free loop device; `None` (with a note) where that is not possible.
    pub fn new(file: &Path) -> Option<Self> {
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "note: cannot attach a loop device here ({}); skipping the block-device part",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let _ = Command::new("partx").arg("-d").arg(&dev).output();
        Some(Self { dev })
    }

    /// Attaches `file` and has the kernel add the partitions of its table (`partx -a`).
    pub fn with_partitions(file: &Path) -> Option<Self> {
        let lo = Self::new(file)?;
        run(Command::new("partx").arg("-a").arg(&lo.dev));
        Some(lo)
    }

    /// The device node of partition `n`.
    pub fn part(&self, n: u32) -> PathBuf {
        PathBuf::from(format!("{}p{n}", self.dev.display()))
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("partx").arg("-d").arg(&self.dev).output();
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// The rimage binary built for these tests.
pub fn rimage() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rimage"))
}

/// Asserts every block in `extents` is byte-identical in `a` and `b`.
pub fn assert_blocks_equal(a: &Path, b: &Path, extents: &[rimage::fs::Extent], block_size: u32) {
    let (fa, fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let bs = u64::from(block_size);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for e in extents {
        let mut done = 0;
        while done < e.len {
            let n = (e.len - done).min(1024);
            x.resize((n * bs) as usize, 0);
            y.resize((n * bs) as usize, 0);
            let off = (e.start + done) * bs;
            fa.read_exact_at(&mut x, off).unwrap();
            fb.read_exact_at(&mut y, off).unwrap();
            if x != y {
                let first = x
                    .chunks(bs as usize)
                    .zip(y.chunks(bs as usize))
                    .position(|(p, q)| p != q)
                    .unwrap();
                panic!(
                    "block {} differs between {} and {}",
                    e.start + done + first as u64,
                    a.display(),
                    b.display()
                );
            }
            done += n;
        }
    }
}

/// The used extents of an ext filesystem image, from rimage's own scanner.
pub fn used_extents(img: &Path) -> (Vec<rimage::fs::Extent>, u32) {
    let dev = rimage::source::Device::open(img).unwrap();
    let fs = rimage::fs::ext::ExtFs::open(&dev, rimage::fs::ScanOptions::default())
        .unwrap_or_else(|e| panic!("{} is not ext: {e}", img.display()));
    (
        fs.used_extents(&dev).collect::<Result<_, _>>().unwrap(),
        fs.block_size(),
    )
}

/// An error and all its sources, as the CLI prints them ("a: b: c").
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Saves `src` into the image file `image` with `opts` (panics on failure).
pub fn save_with(src: &Path, image: &Path, opts: &rimage::SaveOptions) -> rimage::SaveReport {
    rimage::save(
        src,
        &rimage::Destination::File(image.to_path_buf()),
        opts,
        &rimage::NoProgress,
    )
    .unwrap()
}

/// Creates a sparse file of `bytes` and partitions it with `sfdisk -q`, reading `script`.
pub fn partitioned_file(path: &Path, bytes: u64, script: &str) {
    File::create(path).unwrap().set_len(bytes).unwrap();
    let mut sfdisk = Command::new("sfdisk")
        .arg("-q")
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(
        sfdisk.wait().unwrap().success(),
        "sfdisk {}",
        path.display()
    );
}

/// Fills `target` (`bytes` long) with a pattern, then restores `image` onto it leaving free
/// space as it is: blocks the image does not store keep the pattern, so a missing block shows.
pub fn restore_onto_pattern(image: &Path, target: &Path, bytes: u64) {
    pattern_file(target, bytes);
    rimage::restore(
        &rimage::ImageSource::File(image.to_path_buf()),
        target,
        &rimage::RestoreOptions {
            free_space: rimage::FreeSpace::Leave,
            ..rimage::RestoreOptions::default()
        },
        &rimage::progress::NoProgress,
    )
    .unwrap();
}
