//! Damaged and crashed filesystems, built here with debugfs: whatever `e2fsck -fy` keeps of the
//! source, the restored copy must keep too. Each test saves, restores onto a pattern-filled
//! target, repairs a copy of the source and the target with `e2fsck -fy`, and compares every
//! file of the two.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{have, run};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn tools() -> bool {
    let ok = ["mke2fs", "e2fsck", "debugfs", "dumpe2fs"]
        .iter()
        .all(|t| have(t));
    if !ok {
        eprintln!("SKIP: needs e2fsprogs (mke2fs, e2fsck, debugfs, dumpe2fs)");
    }
    ok
}

/// A filesystem image with a populated tree (and `extra` mke2fs options).
fn make_fs(dir: &Path, size_mib: u64, extra: &[&str]) -> PathBuf {
    let tree = dir.join("tree");
    common::tree::populate(&tree, 42);
    std::fs::create_dir_all(tree.join("many")).unwrap();
    for i in 0..150 {
        std::fs::write(
            tree.join(format!("many/file-{i:03}")),
            format!("{i}\n").repeat(i + 1),
        )
        .unwrap();
    }
    std::fs::write(tree.join("foo"), vec![0xF0u8; 50_000]).unwrap();
    std::fs::write(tree.join("bar"), b"bar\n".repeat(3000)).unwrap();
    let img = dir.join("fs.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(size_mib << 20)
        .unwrap();
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4"])
        .args(extra)
        .arg("-d")
        .arg(&tree)
        .arg(&img));
    img
}

/// Runs `cmds` (one per line) in one `debugfs -w` session: a descriptor changed and its
/// checksum recomputed must happen while the filesystem is open.
fn debugfs_w(img: &Path, cmds: &str) -> String {
    let script = img.with_extension("debugfs");
    std::fs::write(&script, format!("{cmds}\n")).unwrap();
    run(Command::new("debugfs")
        .args(["-w", "-n", "-f"])
        .arg(&script)
        .arg(img))
}

fn debugfs(img: &Path, cmd: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", cmd])
        .arg(img)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The files `e2fsck -fy` leaves in a copy of `img`.
fn repaired_files(img: &Path, name: &str) -> common::tree::Snapshot {
    let copy = img.with_file_name(name);
    std::fs::copy(img, &copy).unwrap();
    let out = Command::new("e2fsck")
        .arg("-fy")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.code().is_some_and(|c| c < 4),
        "e2fsck could not repair {}: {}",
        copy.display(),
        text(&out)
    );
    common::assert_fsck_clean(&copy);
    common::tree::snapshot(&copy)
        .expect("the repaired copy can be read")
        .1
}

/// Saves `img` with `args`, restores it onto a pattern-filled target, and checks that the
/// target repairs to exactly the files the source repairs to. Returns the save's output.
fn round_trip(img: &Path, args: &[&str]) -> String {
    let dir = img.parent().unwrap();
    let image = dir.join("saved.rimg");
    let out = common::rimage()
        .arg("save")
        .args(args)
        .arg("--overwrite")
        .arg(img)
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "save {args:?}: {}", text(&out));
    let saved = text(&out);
    let target = dir.join("target.img");
    common::pattern_file(&target, std::fs::metadata(img).unwrap().len());
    let out = common::rimage()
        .args(["restore", "--force"])
        .arg(&image)
        .arg(&target)
        .output()
        .unwrap();
    assert!(out.status.success(), "restore: {}", text(&out));
    let want = repaired_files(img, "source-repaired.img");
    let got = repaired_files(&target, "target-repaired.img");
    let lost: Vec<&String> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    assert!(
        lost.is_empty(),
        "the restored copy lost {} paths, e.g. {:?}\n{saved}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    let changed: Vec<&String> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .map(|(k, _)| k)
        .collect();
    assert!(
        changed.is_empty(),
        "{} files differ, e.g. {:?}\n{saved}",
        changed.len(),
        &changed[..changed.len().min(10)]
    );
    assert_eq!(want.len(), got.len(), "extra files in the restored copy");
    saved
}

fn group0_bitmap(img: &Path) -> u64 {
    run(Command::new("dumpe2fs").arg(img))
        .lines()
        .find_map(|l| l.trim().strip_prefix("Block bitmap at "))
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .unwrap()
}

fn field(img: &Path, name: &str) -> u64 {
    common::dumpe2fs_field(img, name).unwrap().parse().unwrap()
}

/// A crashed filesystem (journal needing recovery) whose group 0 block bitmap is all zeros:
/// saved with --force, the superblock, descriptors, inode tables, journal and every file's
/// blocks are all in the image.
#[test]
fn a_zeroed_bitmap_on_a_crashed_filesystem_costs_nothing() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = make_fs(dir.path(), 64, &[]);
    // A pending transaction: a copy of the root directory's inode table block, replayed as is.
    let bs = field(&img, "Block size");
    let itable: u64 = run(Command::new("dumpe2fs").arg(&img))
        .lines()
        .find_map(|l| l.trim().strip_prefix("Inode table at "))
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .unwrap();
    let bytes = std::fs::read(&img).unwrap();
    let block = dir.path().join("block");
    std::fs::write(
        &block,
        &bytes[(itable * bs) as usize..((itable + 1) * bs) as usize],
    )
    .unwrap();
    let cmds = dir.path().join("cmds");
    std::fs::write(
        &cmds,
        format!("jo\njw -b {itable} {}\njc\n", block.display()),
    )
    .unwrap();
    run(Command::new("debugfs")
        .args(["-w", "-f"])
        .arg(&cmds)
        .arg(&img));
    // Zero group 0's block bitmap.
    let bm = group0_bitmap(&img);
    let f = common::open_rw(&img);
    std::os::unix::fs::FileExt::write_all_at(&f, &vec![0u8; bs as usize], bm * bs).unwrap();
    drop(f);
    assert!(
        rimage::inspect_source(&img)
            .unwrap()
            .fs
            .state
            .needs_recovery
    );

    let saved = round_trip(&img, &["--force"]);
    assert!(saved.contains("do not mark"), "{saved}");
    assert!(saved.contains("the journal needs recovery"), "{saved}");
    assert!(saved.contains("cross-checked the bitmaps"), "{saved}");
}

/// A descriptor that claims more unused inodes than there are (`bg_itable_unused` too big) on
/// a filesystem with clean state flags, saved without --force: the inode-table blocks it calls
/// unused are read, and those holding live inodes are stored.
#[test]
fn live_inodes_past_itable_unused_are_kept() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = make_fs(dir.path(), 64, &[]);
    let ipg = field(&img, "Inodes per group");
    // Only the first 11 inodes (the reserved ones) are left "in use".
    debugfs_w(
        &img,
        &format!(
            "set_bg 0 itable_unused {}\nset_bg 0 checksum calc",
            ipg - 11
        ),
    );
    let dev = rimage::source::Device::open(&img).unwrap();
    let fs = rimage::fs::ext::ExtFs::open(&dev, rimage::fs::ScanOptions::default()).unwrap();
    assert!(
        !fs.unused_inode_tables().is_empty(),
        "the descriptor was not taken at its word: nothing to test"
    );
    assert!(
        rimage::inspect_source(&img)
            .unwrap()
            .fs
            .state
            .problems()
            .is_empty()
    );
    round_trip(&img, &[]);
}

/// Blocks files use that the bitmaps do not mark: freed directory and file blocks, and a
/// BLOCK_UNINIT flag on a group holding data. A clean filesystem needs --thorough; one with
/// recorded errors is cross-checked by --force.
#[test]
fn blocks_the_bitmaps_miss_are_found_from_the_files() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = make_fs(dir.path(), 96, &["-b", "1024", "-g", "2048"]);
    // Free the blocks of a directory with many entries and of two files.
    for path in ["/many", "/foo", "/bar"] {
        let blocks = debugfs(&img, &format!("blocks {path}"));
        for b in blocks.split_whitespace() {
            debugfs_w(&img, &format!("freeb {b}"));
        }
    }
    // A group holding file data, flagged as never used (BLOCK_UNINIT | INODE_UNINIT would
    // lose its inodes too; BLOCK_UNINIT alone).
    let tree = img.with_file_name("tree");
    let data_group = common::tree::files_under(&tree).into_iter().find_map(|f| {
        let inside = format!("/{}", f.strip_prefix(&tree).ok()?.display());
        let first: u64 = debugfs(&img, &format!("blocks {inside}"))
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        let g = (first - 1) / 2048;
        (g > 0).then_some(g)
    });
    let g = data_group.expect("a file outside group 0");
    debugfs_w(
        &img,
        &format!("set_bg {g} flags 2\nset_bg {g} checksum calc"),
    );
    let saved = round_trip(&img, &["--thorough"]);
    assert!(
        saved.contains("cross-checked the bitmaps") && saved.contains("copied too"),
        "{saved}"
    );
    // The same filesystem with errors recorded: --force cross-checks without being asked.
    debugfs_w(&img, "ssv state 2");
    let out = common::rimage()
        .arg("save")
        .arg(&img)
        .arg(dir.path().join("refused.rimg"))
        .output()
        .unwrap();
    assert!(
        !out.status.success() && text(&out).contains("--force"),
        "{}",
        text(&out)
    );
    let saved = round_trip(&img, &["--force"]);
    assert!(saved.contains("copied too"), "{saved}");
}

/// Counters and checksums are not geometry: --force images a filesystem whose superblock free
/// count is impossible and whose descriptor checksum fails, and info describes it with its
/// problems. When not even the geometry can be read, both say --raw.
#[test]
fn force_images_what_it_can_read_and_info_lists_the_problems() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = make_fs(dir.path(), 64, &[]);
    debugfs_w(&img, "ssv free_blocks_count 99999999");
    // Damage group 0's descriptor checksum (its free inode count changes, the checksum not).
    let gd = if field(&img, "Block size") == 1024 {
        2048u64
    } else {
        4096
    };
    let f = common::open_rw(&img);
    let mut b = [0u8; 2];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, gd + 0x1E).unwrap();
    b[0] ^= 0x40;
    std::os::unix::fs::FileExt::write_all_at(&f, &b, gd + 0x1E).unwrap();
    drop(f);
    let out = common::rimage().arg("info").arg(&img).output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("free blocks") && t.contains("fail their checksums"),
        "{t}"
    );
    round_trip(&img, &["--force"]);

    // Nothing readable: a superblock with no groups.
    let bad = dir.path().join("bad.img");
    std::fs::copy(&img, &bad).unwrap();
    let f = common::open_rw(&bad);
    std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 8], 1024 + 0x20).unwrap();
    drop(f);
    let out = common::rimage().arg("info").arg(&bad).output().unwrap();
    assert!(
        !out.status.success() && text(&out).contains("--raw"),
        "{}",
        text(&out)
    );
    let out = common::rimage()
        .args(["save", "--force"])
        .arg(&bad)
        .arg(dir.path().join("x.rimg"))
        .output()
        .unwrap();
    assert!(
        !out.status.success() && text(&out).contains("--raw"),
        "{}",
        text(&out)
    );
}

/// Browsing what e2fsprogs reads: 128-byte inodes on a filesystem with metadata checksums, and a
/// directory with many subdirectories (listed and extracted completely); an image whose journal
/// the reader cannot replay says which features it lacks, by name.
#[test]
fn browsing_small_inodes_big_directories_and_old_journals() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("big")).unwrap();
    for i in 0..3000 {
        std::fs::create_dir(tree.join(format!("big/d{i:05}"))).unwrap();
    }
    std::fs::write(tree.join("big/d00042/file"), b"forty-two\n").unwrap();
    let img = dir.path().join("small-inodes.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    run(Command::new("mke2fs")
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-I",
            "128",
            "-O",
            "metadata_csum",
            "-N",
            "8000",
            "-d",
        ])
        .arg(&tree)
        .arg(&img));
    assert_eq!(field(&img, "Inode size"), 128);
    let image = dir.path().join("small.rimg");
    common::save_with(&img, &image, &rimage::SaveOptions::default());
    let out = common::rimage()
        .arg("ls")
        .arg(&image)
        .arg("/big")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3000);
    let out = common::rimage()
        .arg("cat")
        .arg(&image)
        .arg("/big/d00042/file")
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"forty-two\n", "{}", text(&out));
    let dest = dir.path().join("extracted");
    let out = common::rimage()
        .arg("extract")
        .arg(&image)
        .arg("/big")
        .arg(&dest)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 3000);
    assert_eq!(
        std::fs::read(dest.join("d00042/file")).unwrap(),
        b"forty-two\n"
    );

    // A journal without the features the reader replays (32-bit, no checksums), needing
    // recovery.
    let old = dir.path().join("old-journal.img");
    std::fs::File::create(&old)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    run(Command::new("mke2fs")
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-O",
            "^64bit,^metadata_csum",
            "-d",
        ])
        .arg(&tree)
        .arg(&old));
    let cmds = dir.path().join("cmds");
    let sb_copy = dir.path().join("sb");
    std::fs::write(&sb_copy, &std::fs::read(&old).unwrap()[1024..2048]).unwrap();
    std::fs::write(&cmds, format!("jo\njw -b 2000 {}\njc\n", sb_copy.display())).unwrap();
    run(Command::new("debugfs")
        .args(["-w", "-f"])
        .arg(&cmds)
        .arg(&old));
    let image = dir.path().join("old.rimg");
    common::save_with(
        &old,
        &image,
        &rimage::SaveOptions {
            force: true,
            ..rimage::SaveOptions::default()
        },
    );
    let out = common::rimage()
        .arg("ls")
        .arg(&image)
        .arg("/")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("64bit, checksum_v3") && t.contains("needs recovery"),
        "{t}"
    );
}
