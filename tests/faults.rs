//! Faults and refusals: a full destination, a killed save, a target too small, mounted sources
//! and targets, read errors, and restoring over the wrong filesystem. Parts that need root, loop
//! devices or mounts skip with a message where those are unavailable.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Mounted, build, case, have};
use rimage::{Destination, ExpectUuid, ImageSource, NoProgress, RestoreOptions, SaveOptions};

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A raw source of incompressible data.
fn random_file(path: &Path, len: usize) {
    let mut data = vec![0u8; len];
    fastrand::Rng::with_seed(3).fill(&mut data);
    std::fs::write(path, data).unwrap();
}

#[test]
fn destination_full_mid_save_leaves_nothing() {
    if !common::can_mount() {
        eprintln!("SKIP: mounts are not available here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.bin");
    random_file(&src, 8 << 20);
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    common::run(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(&small),
    );
    let image = small.join("img.rimg");
    let result = rimage::save(
        &src,
        &Destination::File(image.clone()),
        &SaveOptions::default(),
        &NoProgress,
    );
    let listing = entries(&small);
    let _ = Command::new("umount").arg(&small).status();
    let msg = common::chain(&result.expect_err("a save into a full filesystem succeeded"));
    assert!(msg.contains("No space left on device"), "{msg}");
    assert!(
        msg.contains(&small.display().to_string()),
        "the error does not name the destination: {msg}"
    );
    assert!(
        listing.is_empty(),
        "left behind in the full destination: {listing:?}"
    );
}

#[test]
fn a_killed_save_leaves_nothing_under_the_final_name() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.bin");
    random_file(&src, 64 << 20);
    let image = dir.path().join("img.rimg");
    // Level 19 on incompressible data is slow enough to be killed half-way.
    let mut child = common::rimage()
        .args(["save", "-q", "-l", "19"])
        .arg(&src)
        .arg(&image)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let partial: Vec<String> = entries(dir.path())
        .into_iter()
        .filter(|n| n.contains("rimage-partial"))
        .collect();
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(
        !image.exists(),
        "a killed save left a file under the final name"
    );
    assert_eq!(
        partial.len(),
        1,
        "the save was not writing a temporary file half-way: {:?}",
        entries(dir.path())
    );
}

#[test]
fn restore_target_too_small_is_refused_before_any_write() {
    if !have("losetup") {
        eprintln!("SKIP: no losetup");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/sample.ext4");
    let image = dir.path().join("s.rimg");
    common::save_with(&sample, &image, &SaveOptions::default());
    let backing = dir.path().join("small.img");
    let size = std::fs::metadata(&sample).unwrap().len() - (1 << 20);
    common::pattern_file(&backing, size);
    let before = std::fs::read(&backing).unwrap();
    {
        let Some(lo) = common::LoopDev::new(&backing) else {
            return;
        };
        let err = rimage::restore(
            &ImageSource::File(image),
            &lo.dev,
            &RestoreOptions::default(),
            &NoProgress,
        )
        .unwrap_err();
        let msg = common::chain(&err);
        assert!(
            msg.contains(&lo.dev.display().to_string()) && msg.contains("nothing was written"),
            "{msg}"
        );
    }
    assert!(
        std::fs::read(&backing).unwrap() == before,
        "the too-small target was written to"
    );
}

#[test]
fn mounted_source_is_refused_unless_forced() {
    if !have("mke2fs") || !common::can_mount() {
        eprintln!("SKIP: needs mke2fs and loop mounts");
        return;
    }
    let t = build(case("ext4_small_fresh"));
    let image = t.dir.path().join("m.rimg");
    {
        let m = Mounted::new(&t.img, false).unwrap();
        let out = common::rimage()
            .arg("save")
            .arg(&t.img)
            .arg(&image)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("mounted read-write at") && err.contains(&m.path().display().to_string()),
            "{err}"
        );
        assert!(
            err.contains("fsfreeze") && err.contains("LVM snapshot") && err.contains("--force"),
            "{err}"
        );
        assert!(!image.exists());

        let out = common::rimage()
            .args(["save", "--force"])
            .arg(&t.img)
            .arg(&image)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(
            err.contains("may be inconsistent") && err.contains("fsfreeze"),
            "no warning with --force: {err}"
        );
    }
    // Mounted read-only is fine: nothing changes underneath.
    let _m = Mounted::new(&t.img, true).unwrap();
    let out = common::rimage()
        .args(["save", "--overwrite"])
        .arg(&t.img)
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn mounted_restore_target_is_always_refused() {
    if !have("mke2fs") || !common::can_mount() {
        eprintln!("SKIP: needs mke2fs and loop mounts");
        return;
    }
    let t = build(case("ext4_small_fresh"));
    let image = t.dir.path().join("s.rimg");
    common::save_with(&t.img, &image, &SaveOptions::default());
    let target = t.dir.path().join("target.img");
    std::fs::copy(&t.img, &target).unwrap();
    let m = Mounted::new(&target, true).unwrap();
    let out = common::rimage()
        .arg("restore")
        .arg(&image)
        .arg(&target)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("mounted at") && err.contains(&m.path().display().to_string()),
        "{err}"
    );
    // The same through the loop device itself (O_EXCL).
    // The loop device mounted there, as the kernel's mount table names it.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let at = m.path().display().to_string();
    let dev = mounts
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.get(1) == Some(&at.as_str()))
        .map(|f| f[0].to_string())
        .expect("the mount is listed");
    let out = common::rimage()
        .arg("restore")
        .arg(&image)
        .arg(&dev)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("mounted"), "{err}");
}

#[test]
fn wrong_filesystem_on_the_target_is_reported_and_expect_uuid_is_enforced() {
    if !have("mke2fs") {
        eprintln!("SKIP: needs mke2fs");
        return;
    }
    let t = build(case("ext4_small_fresh"));
    let image = t.dir.path().join("a.rimg");
    common::save_with(&t.img, &image, &SaveOptions::default());
    let image_uuid = rimage::inspect_image(&ImageSource::File(image.clone()))
        .unwrap()
        .header
        .uuid;
    // The target holds another filesystem (another UUID).
    let target = t.dir.path().join("other.img");
    std::fs::File::create(&target)
        .unwrap()
        .set_len(std::fs::metadata(&t.img).unwrap().len())
        .unwrap();
    common::run(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-L", "other"])
            .arg(&target),
    );
    let other = rimage::fs::identify(&rimage::source::Device::open(&target).unwrap())
        .uuid
        .unwrap();
    let before = std::fs::read(&target).unwrap();

    let out = common::rimage()
        .args(["restore", "--expect-uuid", "image"])
        .arg(&image)
        .arg(&target)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "--expect-uuid image accepted another filesystem"
    );
    assert!(
        err.contains(&other.to_string()) && err.contains(&image_uuid.to_string()),
        "both identities are not shown: {err}"
    );
    assert!(
        std::fs::read(&target).unwrap() == before,
        "the target was written to despite --expect-uuid"
    );

    let out = common::rimage()
        .args(["restore", "--expect-uuid", &image_uuid.to_string()])
        .arg(&image)
        .arg(&target)
        .output()
        .unwrap();
    assert!(!out.status.success());

    // Without --expect-uuid or --force the other filesystem is not overwritten either.
    let out = common::rimage()
        .arg("restore")
        .arg(&image)
        .arg(&target)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("holds ext4 \"other\"") && err.contains("--force"),
        "{err}"
    );
    assert!(std::fs::read(&target).unwrap() == before);
    // With --force the restore goes ahead, after saying what it overwrites.
    let out = common::rimage()
        .args(["restore", "--force"])
        .arg(&image)
        .arg(&target)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("currently holds ext4 \"other\"")
            && err.contains(&other.to_string())
            && err.contains(&image_uuid.to_string()),
        "{err}"
    );
    // Now the target holds the image's filesystem: --expect-uuid image passes.
    let r = rimage::restore(
        &ImageSource::File(image.clone()),
        &target,
        &RestoreOptions {
            expect_uuid: Some(ExpectUuid::Image),
            ..RestoreOptions::default()
        },
        &NoProgress,
    );
    assert!(r.is_ok(), "{:?}", r.err());
}

/// Puts a file with many extents on a small ext4 filesystem, then corrupts the extent-tree
/// block that maps part of it: reading that part through the kernel fails (EUCLEAN/EBADMSG).
/// Returns the mount, the file, and the byte offset where the damaged range starts.
fn file_with_read_error(dir: &Path) -> Option<(Mounted, PathBuf, u64)> {
    let outer = dir.join("outer.img");
    std::fs::File::create(&outer)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    common::run(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-O", "^has_journal"])
            .arg(&outer),
    );
    {
        let m = Mounted::new(&outer, false)?;
        // 4 KiB every 8 KiB: 400 extents, more than one leaf of the extent tree holds.
        let f = std::fs::File::create(m.path().join("src.bin")).unwrap();
        let mut rng = fastrand::Rng::with_seed(9);
        let mut buf = vec![0u8; 4096];
        for i in 0..400u64 {
            rng.fill(&mut buf);
            f.write_all_at(&buf, i * 8192).unwrap();
        }
        f.sync_all().unwrap();
    }
    // debugfs `ex` lists the index entries of the tree ("level 0/1"): logical start and the
    // leaf block of each. Damage the last leaf: reads from its logical start on fail.
    let ex = common::run(
        Command::new("debugfs")
            .args(["-R", "ex /src.bin"])
            .arg(&outer),
    );
    // " 0/ 1   2/  2   340 -  799  1234   460"
    let (first_logical, leaf): (u64, u64) = ex
        .lines()
        .rev()
        .filter(|l| l.trim_start().starts_with("0/"))
        .filter_map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            Some((t.get(4)?.parse().ok()?, t.get(7)?.parse().ok()?))
        })
        .next()?;
    if first_logical == 0 {
        return None;
    }
    let f = common::open_rw(&outer);
    let mut block = vec![0u8; 4096];
    f.read_exact_at(&mut block, leaf * 4096).unwrap();
    for b in &mut block[12..64] {
        *b ^= 0x5A;
    }
    f.write_all_at(&block, leaf * 4096).unwrap();
    drop(f);
    let m = Mounted::new(&outer, true)?;
    let file = m.path().join("src.bin");
    Some((m, file, first_logical * 4096))
}

#[test]
fn a_read_error_names_the_source_and_byte_offset() {
    if !have("mke2fs") || !have("debugfs") || !common::can_mount() {
        eprintln!(
            "SKIP: needs mke2fs, debugfs and loop mounts (no device-mapper here: a corrupted extent tree makes the read error)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some((_m, file, bad_offset)) = file_with_read_error(dir.path()) else {
        eprintln!("SKIP: could not build a file with a read error");
        return;
    };
    let image = dir.path().join("e.rimg");
    let out = common::rimage()
        .args(["save", "--raw"])
        .arg(&file)
        .arg(&image)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a save through a read error succeeded"
    );
    assert!(
        err.contains(&file.display().to_string()),
        "the error does not name the source: {err}"
    );
    assert!(
        err.contains(&format!("byte offset {bad_offset}")),
        "the error does not name byte offset {bad_offset}: {err}"
    );
    assert!(!image.exists());
}
