//! File trees: populate a directory for `mke2fs -d`, and snapshot the tree inside a filesystem
//! image (with ext4-view, or through a read-only loop mount where ext4-view refuses the
//! features) so that two images can be compared file by file.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};

use ext4_view::{Ext4, Ext4Error, FileType};

/// Creates a varied tree under `root`: text, binaries, one larger file, many tiny files (inline
/// data candidates), symlinks short and long, a hard link, an empty file, a sparse file, deep
/// directories and awkward names.
pub fn populate(root: &Path, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mk = |p: &Path| std::fs::create_dir_all(p).unwrap();
    for d in [
        "etc/conf.d",
        "usr/bin",
        "usr/lib/x86_64",
        "var/lib/db",
        "home/user/deep/a/b/c/d",
        "empty-dir",
    ] {
        mk(&root.join(d));
    }
    for i in 0..40 {
        let words: String = (0..rng.usize(5..400))
            .map(|k| format!("line {k} of config {i} value={}\n", rng.u32(..)))
            .collect();
        std::fs::write(root.join(format!("etc/conf.d/file{i}.conf")), words).unwrap();
    }
    for i in 0..12 {
        let mut data = vec![0u8; rng.usize(10_000..300_000)];
        // Half random, half repetitive: binaries compress somewhat.
        let half = data.len() / 2;
        rng.fill(&mut data[..half]);
        std::fs::write(root.join(format!("usr/bin/tool{i}")), data).unwrap();
    }
    let mut big = vec![0u8; 3 << 20];
    rng.fill(&mut big);
    std::fs::write(root.join("var/lib/db/big.bin"), &big).unwrap();
    for i in 0..150 {
        let data: Vec<u8> = (0..rng.usize(0..120))
            .map(|_| rng.alphanumeric() as u8)
            .collect();
        std::fs::write(root.join(format!("home/user/tiny{i}")), data).unwrap();
    }
    std::fs::write(root.join("home/user/deep/a/b/c/d/leaf.txt"), b"deep leaf\n").unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::fs::write(
        root.join("name with spaces & ümlauts.txt"),
        b"awkward name\n",
    )
    .unwrap();
    symlink("etc/conf.d/file1.conf", root.join("short-link")).unwrap();
    let long_target = format!("{}/target", "x".repeat(120));
    symlink(long_target, root.join("long-link")).unwrap();
    std::fs::hard_link(
        root.join("usr/bin/tool0"),
        root.join("usr/lib/x86_64/tool0-hardlink"),
    )
    .unwrap();
    let sparse = std::fs::File::create(root.join("var/lib/db/sparse.img")).unwrap();
    sparse.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&sparse, b"middle of a sparse file", 4 << 20).unwrap();
}

/// Every regular file under `root` (for rewriting during `dirty`).
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let ft = std::fs::symlink_metadata(&p).unwrap().file_type();
            if ft.is_dir() {
                if !p.ends_with("lost+found") {
                    stack.push(p);
                }
            } else if ft.is_file() {
                out.push(p);
            }
        }
    }
    out
}

/// What is compared of each path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// 'd', 'f', 'l' or 'o' (other).
    pub kind: char,
    /// Permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Hash of the contents (files) or the target (symlinks).
    pub content: u128,
}

/// Path → entry, for every path in a filesystem.
pub type Snapshot = BTreeMap<String, Entry>;

/// How a snapshot was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Oracle {
    Ext4View,
    Mount,
}

/// Snapshots the tree in `img` with ext4-view; falls back to a read-only loop mount when
/// ext4-view refuses the filesystem's features. `None` when neither is possible.
pub fn snapshot(img: &Path) -> Option<(Oracle, Snapshot)> {
    let via_ext4_view = Ext4::load_from_path(img).and_then(|fs| snapshot_ext4(&fs));
    match via_ext4_view {
        Ok(snap) => Some((Oracle::Ext4View, snap)),
        Err(e) => {
            // ext4-view refuses some features (meta_bg, inline_data) and some block-mapped
            // files (holes in ext2/3 files): use the kernel instead.
            eprintln!(
                "note: ext4-view cannot read {} ({e}); comparing through a read-only mount",
                img.display()
            );
            let m = super::Mounted::new(img, true)?;
            Some((Oracle::Mount, snapshot_dir(m.path())))
        }
    }
}

/// Snapshots an ext4-view filesystem.
pub fn snapshot_ext4(fs: &Ext4) -> Result<Snapshot, Ext4Error> {
    let mut out = Snapshot::new();
    let mut stack = vec![ext4_view::PathBuf::new("/")];
    while let Some(dir) = stack.pop() {
        for entry in fs.read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if name.as_ref() == b"." || name.as_ref() == b".." {
                continue;
            }
            let path = entry.path();
            let meta = fs.symlink_metadata(&path)?;
            let kind = match meta.file_type() {
                FileType::Directory => 'd',
                FileType::Regular => 'f',
                FileType::Symlink => 'l',
                _ => 'o',
            };
            let content = match kind {
                'f' => xxhash_rust::xxh3::xxh3_128(&fs.read(&path)?),
                'l' => xxhash_rust::xxh3::xxh3_128(fs.read_link(&path)?.as_ref()),
                _ => 0,
            };
            if kind == 'd' {
                stack.push(path.clone());
            }
            let key = String::from_utf8_lossy(path.as_ref()).into_owned();
            let size = if kind == 'd' { 0 } else { meta.len() };
            let entry = Entry {
                kind,
                mode: u32::from(meta.mode() & 0o7777),
                uid: meta.uid(),
                gid: meta.gid(),
                size,
                mtime: meta.modified().seconds(),
                content,
            };
            out.insert(key, entry);
        }
    }
    Ok(out)
}

/// Snapshots a mounted directory tree (keys as absolute paths inside the filesystem).
pub fn snapshot_dir(root: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let ft = meta.file_type();
            let (kind, content) = if ft.is_dir() {
                stack.push(path.clone());
                ('d', 0)
            } else if ft.is_file() {
                (
                    'f',
                    xxhash_rust::xxh3::xxh3_128(&std::fs::read(&path).unwrap()),
                )
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                (
                    'l',
                    xxhash_rust::xxh3::xxh3_128(target.as_os_str().as_encoded_bytes()),
                )
            } else {
                ('o', 0)
            };
            let rel = path.strip_prefix(root).unwrap();
            let key = format!("/{}", rel.display());
            let size = if kind == 'd' { 0 } else { meta.len() };
            out.insert(
                key,
                Entry {
                    kind,
                    mode: meta.mode() & 0o7777,
                    uid: meta.uid(),
                    gid: meta.gid(),
                    size,
                    mtime: meta.mtime(),
                    content,
                },
            );
        }
    }
    out
}

/// Asserts that two images hold the same tree, every file identical. Returns how it compared,
/// or `None` (with a note) when no oracle was available.
pub fn assert_same_tree(source: &Path, copy: &Path) -> Option<Oracle> {
    let (oracle, a) = snapshot(source)?;
    let (_, b) = snapshot(copy).expect("the copy is readable when the source is");
    assert!(
        a.len() > 100,
        "the source tree is suspiciously small ({} entries)",
        a.len()
    );
    if a != b {
        let only_a: Vec<_> = a.keys().filter(|k| !b.contains_key(*k)).take(5).collect();
        let only_b: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).take(5).collect();
        let differ: Vec<_> = a
            .iter()
            .filter(|(k, v)| b.get(*k).is_some_and(|w| w != *v))
            .map(|(k, _)| k)
            .take(5)
            .collect();
        panic!(
            "trees differ: only in source {only_a:?}, only in copy {only_b:?}, different {differ:?}"
        );
    }
    Some(oracle)
}
