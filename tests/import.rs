//! Bringing partclone and Clonezilla images along: images made by the real partclone (ext4,
//! ext2, vfat; -a0, -a1, several -k; gzip, zstd, xz, bzip2, lz4, split) and hand-built ones
//! (format 0001, XXH64, XXH128, byte bitmaps, no reseeding, odd headers) are imported,
//! restored onto pattern-filled targets and checked with fsck and file by file; corrupted
//! images are refused with the place named; a real Clonezilla savedisk directory becomes a
//! save-disk directory that restore-disk puts back.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::partclone::{Map, Spec, Sum};
use common::{have, pattern_file, run};
use rimage::import::ImportError;
use rimage::{Error, NoProgress, SaveOptions};

fn missing(tools: &[&str]) -> Option<String> {
    let m: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    (!m.is_empty()).then(|| format!("missing {m:?}"))
}

fn skip(why: &str) {
    eprintln!("note: skipping: {why}");
}

/// A populated ext filesystem image of `mib` MiB made with `mke2fs args`.
fn ext_source(dir: &Path, name: &str, mib: u64, args: &[&str]) -> PathBuf {
    let tree = dir.join(format!("{name}-tree"));
    common::tree::populate(&tree, 7);
    let img = dir.join(format!("{name}.img"));
    std::fs::File::create(&img)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    run(Command::new("mke2fs")
        .args(["-q", "-F"])
        .args(args)
        .arg("-d")
        .arg(&tree)
        .arg(&img));
    img
}

/// Runs `partclone.<fs> -c` on `source` into `out` with extra options.
fn partclone(fs: &str, source: &Path, out: &Path, opts: &[&str]) {
    run(Command::new(format!("partclone.{fs}"))
        .args(["-q", "-c"])
        .args(opts)
        .arg("-s")
        .arg(source)
        .arg("-O")
        .arg(out));
}

/// Compresses `file` with `tool` (gzip, zstd, xz, bzip2, lz4) into `file.<ext>`.
fn compress(file: &Path, tool: &str, ext: &str) -> PathBuf {
    let out = PathBuf::from(format!("{}.{ext}", file.display()));
    let data = run(Command::new("sh").arg("-c").arg(format!(
        "{tool} -c < '{}' > '{}' && echo ok",
        file.display(),
        out.display()
    )));
    assert_eq!(data.trim(), "ok");
    out
}

/// Splits `file` into `file.aa, file.ab, ...` of `bytes` each; removes `file`.
fn split(file: &Path, bytes: u64) -> PathBuf {
    run(Command::new("split")
        .args(["-b", &bytes.to_string()])
        .arg(file)
        .arg(format!("{}.", file.display())));
    std::fs::remove_file(file).unwrap();
    PathBuf::from(format!("{}.aa", file.display()))
}

fn import(input: &Path, out: &Path) -> Result<rimage::import::ImportReport, Error> {
    rimage::import::import_image(input, out, &SaveOptions::default(), &NoProgress)
}

/// Restores `image` onto a pattern-filled file of `size` bytes.
fn restore_onto_pattern(image: &Path, target: &Path, size: u64) {
    pattern_file(target, size);
    run(common::rimage()
        .args(["restore", "-q", "--force"])
        .arg(image)
        .arg(target));
}

/// The restored ext filesystem is clean and holds exactly the source's files.
fn assert_ext_restored(source: &Path, restored: &Path) {
    common::assert_fsck_clean(restored);
    common::tree::assert_same_tree(source, restored).expect("an oracle to compare trees");
}

/// A real partclone case: source, filesystem, partclone options, (compressor, suffix), split.
type Case<'a> = (
    &'a Path,
    &'a str,
    &'a [&'a str],
    Option<(&'a str, &'a str)>,
    bool,
);

#[test]
fn real_partclone_ext_images_in_every_compression() {
    if let Some(m) = missing(&[
        "partclone.ext4",
        "mke2fs",
        "e2fsck",
        "gzip",
        "zstd",
        "xz",
        "bzip2",
        "lz4",
        "split",
    ]) {
        return skip(&m);
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ext4 = ext_source(d, "ext4", 24, &["-t", "ext4"]);
    let ext2 = ext_source(d, "ext2", 24, &["-t", "ext2", "-b", "4096"]);
    // (source, fs, partclone options, compression, split)
    let cases: &[Case] = &[
        (&ext4, "ext4", &["-a0"], Some(("gzip", "gz")), false),
        (
            &ext4,
            "ext4",
            &["-a1", "-k", "1"],
            Some(("zstd -q", "zst")),
            false,
        ),
        (&ext4, "ext4", &[], Some(("zstd -q", "zst")), true),
        (&ext4, "ext4", &["-a1", "-k", "7"], None, false),
        (
            &ext2,
            "ext2",
            &["-a1", "-k", "3"],
            Some(("xz", "xz")),
            false,
        ),
        (&ext2, "ext2", &[], Some(("bzip2", "bz2")), true),
        (
            &ext2,
            "ext2",
            &["-a1", "-k", "64"],
            Some(("lz4 -q", "lz4")),
            false,
        ),
    ];
    for (i, (src, fs, opts, comp, pieces)) in cases.iter().enumerate() {
        eprintln!("case {i}: {fs} {opts:?} {comp:?} split={pieces}");
        let pc = d.join(format!("c{i}.{fs}-ptcl-img"));
        partclone(if *fs == "ext4" { "ext4" } else { "ext2" }, src, &pc, opts);
        let mut input = match comp {
            Some((tool, ext)) => {
                let c = compress(&pc, tool, ext);
                std::fs::remove_file(&pc).unwrap();
                c
            }
            None => pc.clone(),
        };
        if *pieces {
            input = split(&input, 1 << 20);
            assert!(PathBuf::from(input.to_str().unwrap().replace(".aa", ".ab")).exists());
        }
        let out = d.join(format!("c{i}.rimg"));
        let r = import(&input, &out).unwrap();
        assert_eq!(r.save.header.source_type.name(), *fs);
        assert_eq!(r.save.header.unstored, rimage::image::Unstored::Free);
        let rimage::import::Found::Partclone { bitmap_used, .. } = r.found else {
            panic!("not read as partclone");
        };
        assert_eq!(r.save.stored_blocks, bitmap_used);
        assert!(r.save.notes.is_empty(), "notes: {:?}", r.save.notes);
        if *pieces {
            assert!(r.pieces.len() > 1);
        }
        // An ordinary ext image: it browses.
        let ls = run(common::rimage().arg("ls").arg(&out).arg("/etc/conf.d"));
        assert!(ls.contains("file1.conf"), "{ls}");
        let target = d.join(format!("c{i}.target"));
        restore_onto_pattern(&out, &target, 24 << 20);
        assert_ext_restored(src, &target);
        std::fs::remove_file(&target).unwrap();
    }
}

/// Files of a FAT image, by path, with their contents (through mtools).
fn fat_files(img: &Path, scratch: &Path) -> Vec<(String, Vec<u8>)> {
    let _ = std::fs::remove_dir_all(scratch);
    std::fs::create_dir_all(scratch).unwrap();
    run(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-s", "-n", "-i"])
        .arg(img)
        .arg("::/")
        .arg(scratch));
    let mut out = Vec::new();
    let mut stack = vec![scratch.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(scratch).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// A 16 MiB FAT16 image with a few files.
fn vfat_source(d: &Path) -> PathBuf {
    let img = d.join("fat.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    run(Command::new("mkfs.vfat")
        .args(["-n", "IMPORTFAT"])
        .arg(&img));
    let tree = d.join("fat-tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    let mut rng = fastrand::Rng::with_seed(3);
    for i in 0..20 {
        let mut data = vec![0u8; rng.usize(100..200_000)];
        rng.fill(&mut data);
        std::fs::write(tree.join(format!("f{i}.bin")), &data).unwrap();
    }
    std::fs::write(tree.join("sub/hello.txt"), b"hello\n").unwrap();
    run(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-s", "-i"])
        .arg(&img)
        .arg(tree.join("sub"))
        .args(
            (0..20)
                .map(|i| tree.join(format!("f{i}.bin")))
                .collect::<Vec<_>>(),
        )
        .arg("::/"));
    img
}

#[test]
fn real_partclone_vfat_imports_raw_with_its_bitmap() {
    if let Some(m) = missing(&["partclone.vfat", "mkfs.vfat", "fsck.vfat", "mcopy", "gzip"]) {
        return skip(&m);
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = vfat_source(d);
    let want = fat_files(&src, &d.join("x-src"));
    assert_eq!(want.len(), 21);
    for (i, opts) in [&["-a0"][..], &["-a1", "-k", "5"][..]].iter().enumerate() {
        let pc = d.join(format!("v{i}.vfat-ptcl-img"));
        partclone("vfat", &src, &pc, opts);
        let input = compress(&pc, "gzip", "gz");
        let out = d.join(format!("v{i}.rimg"));
        let r = import(&input, &out).unwrap();
        let h = &r.save.header;
        assert_eq!(h.source_type, rimage::fs::FsType::Raw);
        assert_eq!(h.unstored, rimage::image::Unstored::Free);
        assert_eq!(r.filesystem.kind, rimage::fs::FsType::Vfat);
        assert_eq!(r.filesystem.label.as_deref(), Some("IMPORTFAT"));
        let (total, _, used) = common::partclone::bitmap_of(&pc);
        assert_eq!(h.total_blocks, total);
        assert_eq!(h.used_blocks, used.iter().filter(|&&u| u).count() as u64);
        assert!(
            h.used_blocks < total / 2,
            "the bitmap's used blocks, not all"
        );
        let target = d.join(format!("v{i}.target"));
        restore_onto_pattern(&out, &target, 16 << 20);
        run(Command::new("fsck.vfat").arg("-n").arg(&target));
        assert_eq!(fat_files(&target, &d.join("x-dst")), want);
    }
}

#[test]
fn dd_images_import_raw() {
    if let Some(m) = missing(&["partclone.dd", "mkfs.vfat", "mcopy", "zstd", "split"]) {
        return skip(&m);
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = vfat_source(d);
    let dd = d.join("sda9.dd-ptcl-img");
    run(Command::new("partclone.dd")
        .arg("-q")
        .arg("-s")
        .arg(&src)
        .arg("-O")
        .arg(&dd));
    assert_eq!(
        std::fs::read(&dd).unwrap(),
        std::fs::read(&src).unwrap(),
        "partclone.dd writes raw bytes"
    );
    let input = split(&compress(&dd, "zstd -q", "zst"), 3 << 20);
    let out = d.join("dd.rimg");
    let r = import(&input, &out).unwrap();
    assert!(matches!(r.found, rimage::import::Found::Raw { bytes } if bytes == 16 << 20));
    assert_eq!(r.save.header.source_type, rimage::fs::FsType::Raw);
    assert_eq!(r.filesystem.kind, rimage::fs::FsType::Vfat);
    let target = d.join("dd.target");
    restore_onto_pattern(&out, &target, 16 << 20);
    assert_eq!(
        std::fs::read(&target).unwrap(),
        std::fs::read(&src).unwrap()
    );
    // Not a partclone image and not named like a raw one: refused, nothing written.
    let other = d.join("notes.txt");
    std::fs::write(&other, b"hello").unwrap();
    let e = import(&other, &d.join("n.rimg")).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Import {
                source: ImportError::NotPartclone,
                ..
            }
        ),
        "{e}"
    );
    assert!(!d.join("n.rimg").exists());
}

/// A small ext2 filesystem and the used blocks partclone's own bitmap gives it.
fn hand_source(d: &Path) -> (PathBuf, Vec<bool>, u32) {
    let src = ext_source(d, "hand", 12, &["-t", "ext2"]);
    let pc = d.join("hand.pc");
    partclone("ext2", &src, &pc, &["-a0"]);
    let (_, bs, used) = common::partclone::bitmap_of(&pc);
    (src, used, bs)
}

#[test]
fn hand_built_v1_xxh64_xxh128_byte_bitmaps_and_odd_headers() {
    if let Some(m) = missing(&["partclone.ext2", "mke2fs", "e2fsck"]) {
        return skip(&m);
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (src, used, bs) = hand_source(d);
    let specs: Vec<(&str, Spec)> = vec![
        ("v1", Spec::v1()),
        ("xxh64-k1", Spec::v2(Sum::Xxh64, 1, true, Map::Bit)),
        (
            "xxh64-k5-noreseed-byte",
            Spec::v2(Sum::Xxh64, 5, false, Map::Byte),
        ),
        ("xxh128-k1000", Spec::v2(Sum::Xxh128, 1000, true, Map::Bit)),
        (
            "xxh128-k3-noreseed",
            Spec::v2(Sum::Xxh128, 3, false, Map::Bit),
        ),
        (
            "crc-k4-noreseed-byte",
            Spec::v2(Sum::Crc32, 4, false, Map::Byte),
        ),
        ("none-nobitmap", Spec::v2(Sum::None, 0, true, Map::None)),
        (
            "header-used-differs",
            Spec {
                used_skew: -5,
                ..Spec::v2(Sum::Crc32, 16, true, Map::Bit)
            },
        ),
        (
            "device-larger",
            Spec {
                extra_device_bytes: 3 * 512,
                fs: "NTFS",
                ..Spec::v2(Sum::Crc32, 16, true, Map::Bit)
            },
        ),
    ];
    for (name, spec) in specs {
        eprintln!("case {name}");
        let input = d.join(format!("{name}.pc"));
        std::fs::write(&input, common::partclone::write(&spec, &src, &used, bs)).unwrap();
        let out = d.join(format!("{name}.rimg"));
        let r = import(&input, &out).unwrap_or_else(|e| panic!("{name}: {}", e.full_message()));
        let h = &r.save.header;
        let n_used = used.iter().filter(|&&u| u).count() as u64;
        match name {
            "none-nobitmap" => assert_eq!(h.used_blocks, used.len() as u64),
            _ => assert_eq!(h.used_blocks, n_used, "{name}"),
        }
        match name {
            "header-used-differs" => assert!(
                r.save
                    .notes
                    .iter()
                    .any(|n| n.contains("the bitmap's are imported")),
                "{:?}",
                r.save.notes
            ),
            "device-larger" => {
                assert!(
                    r.save
                        .notes
                        .iter()
                        .any(|n| n.contains("bytes past the blocks"))
                );
                // Not ext by partclone's word: raw, with the bitmap's blocks.
                assert_eq!(h.source_type, rimage::fs::FsType::Raw);
                assert_eq!(h.source_size, used.len() as u64 * u64::from(bs));
            }
            _ => {
                assert!(r.save.notes.is_empty(), "{name}: {:?}", r.save.notes);
                assert_eq!(h.source_type, rimage::fs::FsType::Ext2);
            }
        }
        let target = d.join(format!("{name}.target"));
        restore_onto_pattern(&out, &target, 12 << 20);
        assert_ext_restored(&src, &target);
        std::fs::remove_file(&target).unwrap();
    }
}

#[test]
fn a_bitmap_missing_blocks_the_ext_scanner_needs_is_reported() {
    if let Some(m) = missing(&["partclone.ext2", "mke2fs"]) {
        return skip(&m);
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (src, mut used, bs) = hand_source(d);
    let gone: Vec<usize> = (0..used.len())
        .filter(|&b| used[b])
        .skip(300)
        .take(3)
        .collect();
    for &b in &gone {
        used[b] = false;
    }
    let input = d.join("missing.pc");
    std::fs::write(
        &input,
        common::partclone::write(&Spec::v2(Sum::Crc32, 8, true, Map::Bit), &src, &used, bs),
    )
    .unwrap();
    let r = import(&input, &d.join("missing.rimg")).unwrap();
    let want = format!(
        "3 blocks that rimage's ext scanner would copy are not in the partclone image (the first is block {})",
        gone[0]
    );
    assert!(
        r.save.notes.iter().any(|n| n.contains(&want)),
        "{:?}",
        r.save.notes
    );
}

/// Where a hand-built image's parts are: (data start, bytes per group of `bpc` blocks).
fn corrupt_and_import(d: &Path, name: &str, bytes: &[u8]) -> ImportError {
    let input = d.join(format!("{name}.pc"));
    std::fs::write(&input, bytes).unwrap();
    let out = d.join(format!("{name}.rimg"));
    let e = import(&input, &out).expect_err(name);
    assert!(!out.exists(), "{name}: an image was left behind");
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "{name}: temporary files left: {leftovers:?}"
    );
    match e {
        Error::Import { source, .. } => source,
        other => panic!("{name}: not an import error: {}", other.full_message()),
    }
}

#[test]
fn corrupted_images_are_refused_with_the_place_named() {
    if let Some(m) = missing(&["partclone.ext2", "mke2fs"]) {
        return skip(&m);
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (src, used, bs) = hand_source(d);
    let bsz = bs as usize;
    let used_list: Vec<u64> = (0..used.len() as u64)
        .filter(|&b| used[b as usize])
        .collect();
    let bitmap_len = used.len().div_ceil(8);
    let data_at = 110 + bitmap_len + 4;
    let bpc = 4usize;
    // Byte offset of the k-th used block's data in a CRC32 -k 4 image.
    let block_at = |k: usize| data_at + k * bsz + (k / bpc) * 4;
    let good = common::partclone::write(
        &Spec::v2(Sum::Crc32, bpc as u32, true, Map::Bit),
        &src,
        &used,
        bs,
    );
    assert!(rimage::import::partclone::decode_all(&good).is_ok());

    let mut b = good.clone();
    b[40] ^= 0x20; // the filesystem field
    assert!(matches!(
        corrupt_and_import(d, "header", &b),
        ImportError::HeaderChecksum { .. }
    ));

    let mut b = good.clone();
    b[110 + 3] ^= 0x01;
    match corrupt_and_import(d, "bitmap", &b) {
        ImportError::BitmapChecksum { offset, .. } => assert_eq!(offset as usize, 110 + bitmap_len),
        e => panic!("bitmap: {e}"),
    }

    // A flipped byte in the 11th used block: the checksum of its group of 4 names the group's
    // last block.
    let k = 10;
    let mut b = good.clone();
    b[block_at(k) + 100] ^= 0xFF;
    match corrupt_and_import(d, "data", &b) {
        ImportError::Checksum {
            block,
            first,
            offset,
        } => {
            assert_eq!(first, used_list[8]);
            assert_eq!(block, used_list[11]);
            assert_eq!(offset as usize, block_at(12) - 4);
        }
        e => panic!("data: {e}"),
    }

    let mut b = good.clone();
    let cs = block_at(4) - 4; // the first group's checksum
    b[cs] ^= 0x01;
    match corrupt_and_import(d, "checksum", &b) {
        ImportError::Checksum { block, .. } => assert_eq!(block, used_list[3]),
        e => panic!("checksum: {e}"),
    }

    let cut = block_at(20) + 10;
    match corrupt_and_import(d, "truncated", &good[..cut]) {
        ImportError::Truncated { offset, what } => {
            assert_eq!(offset as usize, cut);
            assert_eq!(what, format!("block {}", used_list[20]));
        }
        e => panic!("truncated: {e}"),
    }
    match corrupt_and_import(d, "truncated-bitmap", &good[..200]) {
        ImportError::Truncated { what, .. } => assert_eq!(what, "the bitmap"),
        e => panic!("truncated bitmap: {e}"),
    }

    let mut b = good.clone();
    b.extend_from_slice(b"junk");
    match corrupt_and_import(d, "trailing", &b) {
        ImportError::TrailingData { offset } => assert_eq!(offset as usize, good.len()),
        e => panic!("trailing: {e}"),
    }

    // The last, shorter group's checksum is checked too.
    let mut b = good.clone();
    let n = b.len();
    b[n - 1] ^= 0x01;
    match corrupt_and_import(d, "last-checksum", &b) {
        ImportError::Checksum { block, .. } => assert_eq!(block, *used_list.last().unwrap()),
        e => panic!("last checksum: {e}"),
    }

    // Format 0001 and XXH128: a flipped data byte names its block.
    let v1 = common::partclone::write(&Spec::v1(), &src, &used, bs);
    let mut b = v1.clone();
    let v1_block = |k: usize| 4160 + used.len() + 8 + k * (bsz + 4);
    b[v1_block(5)] ^= 0x01; // the first byte: 0001's CRC sees only that one
    match corrupt_and_import(d, "v1-data", &b) {
        ImportError::Checksum { block, first, .. } => {
            assert_eq!((first, block), (used_list[5], used_list[5]));
        }
        e => panic!("v1 data: {e}"),
    }
    let x = common::partclone::write(&Spec::v2(Sum::Xxh128, 1, true, Map::Bit), &src, &used, bs);
    let mut b = x.clone();
    b[data_at + 7 * (bsz + 16) + 9] ^= 0x01;
    match corrupt_and_import(d, "xxh128-data", &b) {
        ImportError::Checksum { block, .. } => assert_eq!(block, used_list[7]),
        e => panic!("xxh128 data: {e}"),
    }

    // Impossible headers, each refused by name (its CRC made right).
    let fix = |name: &str, at: usize, val: &[u8], field: &str| {
        let mut b = good.clone();
        b[at..at + val.len()].copy_from_slice(val);
        let crc = common::partclone::pc_crc(0xFFFF_FFFF, &b[..106]);
        b[106..110].copy_from_slice(&crc.to_le_bytes());
        match corrupt_and_import(d, name, &b) {
            ImportError::BadHeader { field: f, .. } => assert_eq!(f, field),
            e => panic!("{name}: {e}"),
        }
    };
    fix("block-size", 84, &3000u32.to_le_bytes(), "block_size");
    fix("total", 60, &(1u64 << 40).to_le_bytes(), "totalblock");
    fix("used", 76, &u64::MAX.to_le_bytes(), "usedblocks");
    fix("device", 52, &1024u64.to_le_bytes(), "device_size");
    fix("mode", 96, &0x77u16.to_le_bytes(), "checksum_mode");
    fix("size", 98, &8u16.to_le_bytes(), "checksum_size");
    fix("bpc", 100, &0u32.to_le_bytes(), "blocks_per_checksum");
    fix("bitmap", 105, &[3], "bitmap_mode");

    // Through the command line: exit status 3 and the block named.
    let mut b = good.clone();
    b[block_at(k) + 100] ^= 0xFF;
    let input = d.join("cli.pc");
    std::fs::write(&input, &b).unwrap();
    let out = common::rimage()
        .arg("import")
        .arg(&input)
        .arg(d.join("cli.rimg"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("for block {}", used_list[11])),
        "{err}"
    );
}

/// Parts of `sfdisk -d` that do not name the device.
fn table_dump(dev: &Path) -> String {
    let name = dev.file_name().unwrap().to_str().unwrap().to_string();
    run(Command::new("sfdisk").arg("-d").arg(dev))
        .lines()
        .filter(|l| !l.starts_with("device:"))
        .map(|l| l.replace(&name, "DISK"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn blkid(dev: &Path) -> String {
    let out = Command::new("blkid")
        .arg("-o")
        .arg("export")
        .arg(dev)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("DEVNAME="))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn a_real_clonezilla_gpt_disk_restores_with_restore_disk() {
    clonezilla_roundtrip(
        "label: gpt\nsize=16MiB, type=U, name=\"efi\"\nsize=96MiB, type=L, name=\"root\"\nsize=8MiB, type=S, name=\"swap\"\ntype=L, name=\"data\"\n",
    );
}

#[test]
fn a_real_clonezilla_mbr_disk_restores_with_restore_disk() {
    clonezilla_roundtrip(
        "label: dos\nsize=16MiB, type=c, bootable\nsize=96MiB, type=83\nsize=8MiB, type=82\ntype=83\n",
    );
}

/// A 160 MiB disk laid out by `layout`: 1 vfat, 2 ext4 root, 3 swap, 4 ext2 data (mounted
/// during the save, so Clonezilla skips it), saved by ocs-sr, imported, restored by
/// restore-disk onto a pattern-filled disk and compared.
fn clonezilla_roundtrip(layout: &str) {
    if let Some(m) = missing(&[
        "ocs-sr",
        "partclone.ext4",
        "sfdisk",
        "losetup",
        "partx",
        "mkfs.vfat",
        "mkswap",
        "mcopy",
        "blkid",
        "e2fsck",
        "fsck.vfat",
    ]) {
        return skip(&format!("{m} (tests/run-all.sh installs clonezilla)"));
    }
    if !rustix::process::geteuid().is_root() {
        return skip("not root");
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = d.join("disk.img");
    common::partitioned_file(&disk, 160 << 20, layout);
    let src = common::LoopDev::with_partitions(&disk).expect("a loop device");
    let tree = d.join("tree");
    common::tree::populate(&tree, 11);
    let fat = vfat_source(d);
    run(Command::new("dd")
        .arg(format!("if={}", fat.display()))
        .arg(format!("of={}", src.part(1).display()))
        .args(["bs=1M", "status=none", "conv=fsync"]));
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", "czroot", "-d"])
        .arg(&tree)
        .arg(src.part(2)));
    run(Command::new("mkswap")
        .args(["-L", "czswap"])
        .arg(src.part(3)));
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext2", "-L", "czdata"])
        .arg(src.part(4)));
    // ocs-sr keeps state in fixed places: one at a time.
    static OCS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = OCS.lock().unwrap_or_else(|e| e.into_inner());
    let kind = if layout.contains("gpt") { "gpt" } else { "dos" };
    let name = format!("rimage-test-{}-{kind}", std::process::id());
    let cz = Path::new("/home/partimag").join(&name);
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(cz.clone());
    let mnt = d.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    run(Command::new("mount")
        .arg("-o")
        .arg("ro")
        .arg(src.part(4))
        .arg(&mnt));
    let dev_name = src.dev.file_name().unwrap().to_str().unwrap().to_string();
    let saved = Command::new("ocs-sr")
        .args([
            "-q2", "-b", "-j2", "-z9p", "-i", "0", "-sfsck", "-scs", "-senc", "-p", "true",
            "savedisk",
        ])
        .arg(&name)
        .arg(&dev_name)
        .output()
        .unwrap();
    let _ = Command::new("umount").arg(&mnt).status();
    assert!(
        saved.status.success() && cz.join("parts").is_file(),
        "ocs-sr failed: {}\n{}",
        String::from_utf8_lossy(&saved.stdout),
        String::from_utf8_lossy(&saved.stderr)
    );

    // info describes the import without writing.
    let info = run(common::rimage().arg("info").arg("--json").arg(&cz));
    let plan: serde_json::Value = serde_json::from_str(&info).unwrap();
    let actions: Vec<&str> = plan["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["image", "image", "swap", "skip"]);
    assert!(!d.join("out").exists());

    let out = d.join("out");
    run(common::rimage().args(["import", "-q"]).arg(&cz).arg(&out));
    assert!(out.join("manifest.toml").is_file());
    let verify = common::rimage().arg("verify").arg(&out).output().unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    let target_file = d.join("target.img");
    pattern_file(&target_file, 160 << 20);
    let target = common::LoopDev::new(&target_file).expect("a loop device");
    run(common::rimage()
        .args(["restore-disk", "-q"])
        .arg(&out)
        .arg(&target.dev));
    let _ = Command::new("partx").arg("-a").arg(&target.dev).output();
    assert_eq!(table_dump(&target.dev), table_dump(&src.dev));
    for n in 1..=3 {
        assert_eq!(blkid(&target.part(n)), blkid(&src.part(n)), "partition {n}");
    }
    run(Command::new("fsck.vfat").arg("-n").arg(target.part(1)));
    assert_eq!(
        fat_files(&target.part(1), &d.join("f1")),
        fat_files(&src.part(1), &d.join("f2"))
    );
    common::assert_fsck_clean(&target.part(2));
    common::tree::assert_same_tree(&src.part(2), &target.part(2)).expect("an oracle");
    // The unsaved partition was left alone: it still holds the pattern.
    let mut head = [0u8; 16];
    std::os::unix::fs::FileExt::read_exact_at(
        &std::fs::File::open(target.part(4)).unwrap(),
        &mut head,
        0,
    )
    .unwrap();
    assert!(head.starts_with(b"PATTERN@"), "{head:?}");
}

/// A Clonezilla directory laid out by hand as ocs-sr lays it out (disk `vda`, GPT, an ext4
/// partition imaged by partclone, swap described, a stray file): no root needed.
fn synthetic_clonezilla(d: &Path) -> PathBuf {
    let disk = d.join("disk.img");
    common::partitioned_file(
        &disk,
        64 << 20,
        "label: gpt\nsize=40MiB, type=L\nsize=8MiB, type=S\n",
    );
    let cz = d.join("cz");
    std::fs::create_dir(&cz).unwrap();
    let gpt = std::fs::read(&disk).unwrap();
    std::fs::write(cz.join("vda-gpt-1st"), &gpt[..34 * 512]).unwrap();
    std::fs::write(cz.join("vda-mbr"), &gpt[..512]).unwrap();
    std::fs::write(cz.join("disk"), "vda\n").unwrap();
    std::fs::write(cz.join("parts"), "vda1\n").unwrap();
    std::fs::write(
        cz.join("swappt-vda2.info"),
        "UUID=\"0d1e2f30-aaaa-4bbb-8ccc-123456789abc\"\nLABEL=\"czswap\"\n",
    )
    .unwrap();
    std::fs::write(cz.join("stray.bin"), b"?").unwrap();
    let fs = ext_source(d, "czfs", 40, &["-t", "ext4", "-L", "czroot"]);
    let pc = cz.join("vda1.ext4-ptcl-img");
    partclone("ext4", &fs, &pc, &[]);
    compress(&pc, "gzip", "gz");
    std::fs::remove_file(&pc).unwrap();
    cz
}

#[test]
fn a_clonezilla_directory_import_is_described_and_all_or_nothing() {
    if let Some(m) = missing(&["partclone.ext4", "mke2fs", "sfdisk", "gzip"]) {
        return skip(&m);
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cz = synthetic_clonezilla(d);
    let plan = rimage::import::clonezilla::plan_dir(&cz).unwrap();
    assert_eq!(plan.disk, "vda");
    assert_eq!(plan.disk_bytes, 64 << 20);
    assert!(
        plan.notes
            .iter()
            .any(|n| n.contains("vda-gpt-2nd is missing"))
    );
    assert!(
        plan.notes
            .iter()
            .any(|n| n.starts_with("stray.bin: not understood")),
        "{:?}",
        plan.notes
    );
    let swap = &plan.partitions[1];
    assert_eq!(swap.action, rimage::disk::manifest::Action::Swap);
    assert_eq!(
        swap.filesystem.uuid.as_deref(),
        Some("0d1e2f30-aaaa-4bbb-8ccc-123456789abc")
    );
    assert_eq!(swap.filesystem.label.as_deref(), Some("czswap"));

    let out = d.join("out");
    let r = rimage::import::clonezilla::import_dir(&cz, &out, &SaveOptions::default(), &NoProgress)
        .unwrap();
    assert_eq!(r.imports.len(), 1);
    let m = rimage::disk::manifest::Manifest::read(&out.join("manifest.toml")).unwrap();
    assert_eq!(m.partitions[0].filesystem.label.as_deref(), Some("czroot"));
    assert_eq!(m.partitions[0].filesystem.kind, rimage::fs::FsType::Ext4);
    assert_eq!(
        std::fs::metadata(out.join("boot-area.bin")).unwrap().len(),
        1 << 20
    );
    let info = rimage::disk::inspect_dir(&out).unwrap();
    assert!(info.problems.is_empty(), "{:?}", info.problems);
    // Again without --overwrite: refused; with it: replaced.
    let again =
        rimage::import::clonezilla::import_dir(&cz, &out, &SaveOptions::default(), &NoProgress);
    assert!(matches!(again, Err(Error::Refused { .. })));
    let over = SaveOptions {
        overwrite: true,
        ..SaveOptions::default()
    };
    rimage::import::clonezilla::import_dir(&cz, &out, &over, &NoProgress).unwrap();

    // A corrupt partition image: refused, naming the file and block; nothing left behind.
    let gz = cz.join("vda1.ext4-ptcl-img.gz");
    let raw = run(Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -dc '{}' | wc -c", gz.display())));
    assert!(raw.trim().parse::<u64>().unwrap() > 1 << 20);
    run(Command::new("sh").arg("-c").arg(format!(
        "gzip -dc '{0}' > '{0}.x' && printf '\\377\\377' | dd of='{0}.x' bs=1 seek=1000000 conv=notrunc status=none && gzip -c '{0}.x' > '{0}' && rm '{0}.x'",
        gz.display()
    )));
    let out2 = d.join("out2");
    let e =
        rimage::import::clonezilla::import_dir(&cz, &out2, &SaveOptions::default(), &NoProgress)
            .unwrap_err();
    match &e {
        Error::Import {
            path,
            source: ImportError::Checksum { .. },
        } => assert!(path.ends_with("vda1.ext4-ptcl-img.gz")),
        other => panic!("{}", other.full_message()),
    }
    assert!(!out2.exists());
    let left: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
