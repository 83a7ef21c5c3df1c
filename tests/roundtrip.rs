//! save → image → restore, over the scanner's mkfs matrix and raw sources, through files,
//! pipes and loop block devices; verify on good and damaged images.

mod common;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Stdio;

use common::{build, case, have};
use rimage::image::ImageFile;
use rimage::{Destination, FreeSpace, ImageSource, NoProgress, RestoreOptions, SaveOptions};

fn save(src: &Path, image: &Path, opts: SaveOptions) -> rimage::SaveReport {
    common::save_with(src, image, &opts)
}

fn restore(image: &Path, target: &Path, free_space: FreeSpace) -> rimage::RestoreReport {
    rimage::restore(
        &ImageSource::File(image.to_path_buf()),
        target,
        &RestoreOptions {
            free_space,
            ..RestoreOptions::default()
        },
        &NoProgress,
    )
    .unwrap()
}

fn check_case(name: &str) {
    if !have("mke2fs") || !have("e2fsck") {
        eprintln!("SKIP {name}: e2fsprogs is not installed");
        return;
    }
    let t = build(case(name));
    let image = t.dir.path().join("fs.rimg");
    // Small chunks so that even small filesystems span many chunks and extents get split.
    let report = save(
        &t.img,
        &image,
        SaveOptions {
            chunk_size: 256 << 10,
            ..SaveOptions::default()
        },
    );
    let (extents, bs) = common::used_extents(&t.img);
    assert_eq!(
        report.stored_blocks + report.zero_blocks,
        extents.iter().map(|e| e.len).sum::<u64>()
    );
    assert!(report.chunks > 1, "expected several chunks");

    let target = t.dir.path().join("restored.img");
    common::pattern_file(&target, std::fs::metadata(&t.img).unwrap().len());
    let r = restore(&image, &target, FreeSpace::Leave);
    assert_eq!(r.blocks_written, report.stored_blocks);

    common::assert_blocks_equal(&t.img, &target, &extents, bs);
    common::assert_fsck_clean(&target);
    common::assert_backup_fsck_matches(&t.img, &target, bs);
    common::tree::assert_same_tree(&t.img, &target);
}

common::matrix_tests!();

/// A non-ext source: random data with long zero runs (and a size that is not a multiple of
/// the raw block size).
fn raw_source(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let mut rng = fastrand::Rng::with_seed(42);
    let size = (24 << 20) + 3 * 512;
    let mut data = vec![0u8; size];
    let mut pos = 0;
    while pos < size {
        let run = rng.usize(1..600_000).min(size - pos);
        if rng.bool() {
            rng.fill(&mut data[pos..pos + run]);
        }
        pos += run;
    }
    // A block that is zero except for its very last byte must be kept.
    data[8 * 4096 + 4095] = 1;
    let path = dir.join("raw.bin");
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

#[test]
fn raw_round_trip_to_new_file_is_sparse_and_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = raw_source(dir.path());
    let image = dir.path().join("raw.rimg");
    let report = save(&src, &image, SaveOptions::default());
    assert_eq!(report.header.source_type, rimage::fs::FsType::Raw);
    let target = dir.path().join("out.bin");
    restore(&image, &target, FreeSpace::Leave);
    assert_eq!(
        std::fs::read(&target).unwrap(),
        data,
        "raw restore is not byte-exact"
    );
    let zero_blocks = data
        .chunks(4096)
        .filter(|b| b.iter().all(|&x| x == 0))
        .count() as u64;
    let allocated = std::fs::metadata(&target).unwrap().blocks() * 512;
    assert!(zero_blocks > 1000, "the source should have long zero runs");
    assert!(
        allocated <= data.len() as u64 - zero_blocks * 4096 + (1 << 20),
        "zero runs were written instead of left as holes ({allocated} bytes allocated)"
    );
}

#[test]
fn raw_round_trip_onto_pattern_zeroes_the_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = raw_source(dir.path());
    let image = dir.path().join("raw.rimg");
    save(&src, &image, SaveOptions::default());
    let target = dir.path().join("out.bin");
    common::pattern_file(&target, data.len() as u64);
    let r = restore(&image, &target, FreeSpace::Leave);
    assert!(r.bytes_cleared > 0);
    assert_eq!(
        std::fs::read(&target).unwrap(),
        data,
        "pattern survived in a zero run"
    );
}

#[test]
fn raw_image_stores_no_zero_block() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = raw_source(dir.path());
    let image = dir.path().join("raw.rimg");
    let report = save(
        &src,
        &image,
        SaveOptions {
            chunk_size: 1 << 20,
            ..SaveOptions::default()
        },
    );
    let nonzero = data
        .chunks(4096)
        .filter(|b| b.iter().any(|&x| x != 0))
        .count() as u64;
    assert_eq!(report.stored_blocks, nonzero);
    let bytes = std::fs::read(&image).unwrap();
    let img = ImageFile::parse(&bytes[..]).unwrap();
    let mut dctx = zstd::bulk::Decompressor::new().unwrap();
    let mut out = Vec::new();
    for i in 0..img.index.len() {
        let rec = img.record(i).unwrap();
        let c = rec.check_extents(&img.header).unwrap();
        rec.decompress(&mut dctx, &mut out, (c.first_block, c.end_block))
            .unwrap();
        for (k, block) in out.chunks(4096).enumerate() {
            assert!(
                block.iter().any(|&x| x != 0),
                "chunk {i} stores an all-zero block (#{k})"
            );
        }
    }
}

#[test]
fn stdout_to_stdin_round_trip() {
    if !have("mke2fs") {
        eprintln!("SKIP: e2fsprogs is not installed");
        return;
    }
    let t = build(case("ext4_small_1k"));
    let target = t.dir.path().join("piped.img");
    common::pattern_file(&target, std::fs::metadata(&t.img).unwrap().len());
    let mut saver = common::rimage()
        .args(["save", "-q"])
        .arg(&t.img)
        .arg("-")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pipe = saver.stdout.take().unwrap();
    let restorer = common::rimage()
        .args(["restore", "-q", "-"])
        .arg(&target)
        .stdin(pipe)
        .output()
        .unwrap();
    assert!(saver.wait().unwrap().success());
    assert!(
        restorer.status.success(),
        "restore from stdin failed: {}",
        String::from_utf8_lossy(&restorer.stderr)
    );
    let (extents, bs) = common::used_extents(&t.img);
    common::assert_blocks_equal(&t.img, &target, &extents, bs);
    common::assert_fsck_clean(&target);
    common::tree::assert_same_tree(&t.img, &target);
}

#[test]
fn restore_onto_a_loop_block_device() {
    if !have("mke2fs") || !have("losetup") {
        eprintln!("SKIP: e2fsprogs or losetup is not installed");
        return;
    }
    let t = build(case("ext4_small_1k"));
    let image = t.dir.path().join("fs.rimg");
    save(&t.img, &image, SaveOptions::default());
    let backing = t.dir.path().join("disk.img");
    // One MiB larger than the filesystem: the device may be bigger than the image.
    common::pattern_file(
        &backing,
        std::fs::metadata(&t.img).unwrap().len() + (1 << 20),
    );
    {
        let Some(lo) = common::LoopDev::new(&backing) else {
            return;
        };
        let out = common::rimage()
            .args(["restore", "-q", "--zero-free"])
            .arg(&image)
            .arg(&lo.dev)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "restore onto {} failed: {}",
            lo.dev.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (extents, bs) = common::used_extents(&t.img);
    common::assert_blocks_equal(&t.img, &backing, &extents, bs);
    common::assert_fsck_clean(&backing);
    common::tree::assert_same_tree(&t.img, &backing);
    // --zero-free: every free block of the filesystem reads as zeros (BLKZEROOUT).
    let f = File::open(&backing).unwrap();
    let mut used = vec![false; (std::fs::metadata(&t.img).unwrap().len() / u64::from(bs)) as usize];
    for e in &extents {
        used[e.start as usize..e.end() as usize].fill(true);
    }
    let mut block = vec![0u8; bs as usize];
    for (b, _) in used.iter().enumerate().filter(|(_, u)| !**u) {
        f.read_exact_at(&mut block, b as u64 * u64::from(bs))
            .unwrap();
        assert!(
            block.iter().all(|&x| x == 0),
            "free block {b} was not zeroed"
        );
    }
}

#[test]
fn verify_passes_good_images_and_fails_a_flipped_payload_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _) = raw_source(dir.path());
    let image = dir.path().join("raw.rimg");
    save(
        &src,
        &image,
        SaveOptions {
            chunk_size: 1 << 20,
            ..SaveOptions::default()
        },
    );
    let ok = common::rimage().arg("verify").arg(&image).output().unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );

    let bytes = std::fs::read(&image).unwrap();
    let img = ImageFile::parse(&bytes[..]).unwrap();
    let victim = 3;
    let rec = img.record(victim).unwrap();
    // A byte in the middle of chunk 3's zstd payload.
    let at = rec.offset as usize + rec.bytes().len() - rec.payload().len() / 2;
    let mut bad = bytes.clone();
    bad[at] ^= 0x01;
    let bad_path = dir.path().join("bad.rimg");
    File::create(&bad_path).unwrap().write_all(&bad).unwrap();
    let out = common::rimage()
        .arg("verify")
        .arg(&bad_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "verify of a damaged image: {text}"
    );
    assert!(
        text.contains(&format!("chunk {victim} ")),
        "the report does not name chunk {victim}: {text}"
    );
    // The same through a pipe.
    let piped = common::rimage()
        .args(["verify", "-"])
        .stdin(File::open(&bad_path).unwrap())
        .output()
        .unwrap();
    assert_eq!(piped.status.code(), Some(3));
}

#[test]
fn unclean_filesystem_is_refused_unless_forced() {
    if !have("mke2fs") {
        eprintln!("SKIP: e2fsprogs is not installed");
        return;
    }
    let t = build(case("ext4_small_fresh"));
    // Set the "errors" bit in s_state and fix the superblock checksum (metadata_csum).
    let f = common::open_rw(&t.img);
    let mut sb = [0u8; 1024];
    f.read_exact_at(&mut sb, 1024).unwrap();
    sb[0x3A] |= 2;
    let csum = !crc32c::crc32c(&sb[..0x3FC]);
    sb[0x3FC..].copy_from_slice(&csum.to_le_bytes());
    f.write_all_at(&sb, 1024).unwrap();
    drop(f);

    let image = t.dir.path().join("unclean.rimg");
    let err = rimage::save(
        &t.img,
        &Destination::File(image.clone()),
        &SaveOptions::default(),
        &NoProgress,
    )
    .unwrap_err();
    let msg = common::chain(&err);
    assert!(
        msg.contains("has recorded errors") && msg.contains("e2fsck -f") && msg.contains("--force"),
        "{msg}"
    );
    assert!(!image.exists());
    let leftovers: Vec<_> = std::fs::read_dir(t.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("rimage-partial"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    let report = save(
        &t.img,
        &image,
        SaveOptions {
            force: true,
            ..SaveOptions::default()
        },
    );
    assert_eq!(
        report.header.flags & rimage::image::header::FLAG_FORCED_UNCLEAN,
        1
    );
    // An existing image is not replaced without --overwrite.
    let again = rimage::save(
        &t.img,
        &Destination::File(image.clone()),
        &SaveOptions {
            force: true,
            ..SaveOptions::default()
        },
        &NoProgress,
    );
    assert!(common::chain(&again.unwrap_err()).contains("--overwrite"));
}
