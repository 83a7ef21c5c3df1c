//! The used-block scanner against real filesystems made by mke2fs, with dumpe2fs and e2fsck as
//! oracles; and against hostile metadata.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{BOOT_MARK, build, case, have};
use rimage::fs::ext::{ExtError, ExtFs};
use rimage::fs::{Extent, FsType, ScanOptions, probe};
use rimage::source::Device;

fn open_ext(img: &Path) -> (Device, ExtFs) {
    let dev = Device::open(img).unwrap();
    let fs = ExtFs::open(&dev, ScanOptions::default())
        .unwrap_or_else(|e| panic!("{} was not recognised as ext: {e}", img.display()));
    (dev, fs)
}

/// Merged `[start, end)` ranges in units of `ratio` blocks.
fn to_clusters(ranges: impl IntoIterator<Item = (u64, u64)>, ratio: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in ranges {
        let (cs, ce) = (s / ratio, e.div_ceil(ratio));
        match out.last_mut() {
            Some(last) if cs <= last.1 => last.1 = last.1.max(ce),
            _ => out.push((cs, ce)),
        }
    }
    out
}

fn check_case(name: &str) {
    if !have("mke2fs") || !have("dumpe2fs") || !have("e2fsck") {
        eprintln!("SKIP {name}: e2fsprogs is not installed");
        return;
    }
    let t = build(case(name));
    let (dev, fs) = open_ext(&t.img);
    let extents: Vec<Extent> = fs.used_extents(&dev).collect::<Result<_, _>>().unwrap();
    let blocks = fs.blocks_count();
    let bs = fs.block_size();

    // Ascending, merged, inside the filesystem.
    for w in extents.windows(2) {
        assert!(
            w[0].end() < w[1].start,
            "extents {:?} and {:?} overlap, touch or are out of order",
            w[0],
            w[1]
        );
    }
    assert!(extents.iter().all(|e| e.len > 0 && e.end() <= blocks));

    // The used count agrees with the superblock (in clusters on bigalloc).
    let field = |f: &str| {
        common::dumpe2fs_field(&t.img, f).unwrap_or_else(|| panic!("dumpe2fs has no {f}"))
    };
    assert_eq!(field("Block count").parse::<u64>().unwrap(), blocks);
    let cluster_size: u64 = common::dumpe2fs_field(&t.img, "Cluster size")
        .map_or(u64::from(bs), |v| v.parse().unwrap());
    let ratio = cluster_size / u64::from(bs);
    let free_blocks: u64 = field("Free blocks").parse().unwrap();
    let used_clusters: u64 = to_clusters(extents.iter().map(|e| (e.start, e.end())), ratio)
        .iter()
        .map(|(s, e)| e - s)
        .sum();
    assert_eq!(
        used_clusters,
        blocks.div_ceil(ratio) - free_blocks / ratio,
        "used count differs from the superblock's"
    );

    // The used set is exactly the complement of dumpe2fs's free ranges. On bigalloc, dumpe2fs
    // prints each free range from the first block of its first cluster to the first block of
    // its last cluster.
    let mut free: Vec<(u64, u64)> = common::dumpe2fs_free(&t.img)
        .into_iter()
        .map(|(a, b)| (a / ratio, b / ratio + 1))
        .collect();
    free.sort_unstable();
    let mut complement = Vec::new();
    let mut pos = 0;
    for (a, b) in free {
        if a > pos {
            complement.push((pos, a));
        }
        pos = pos.max(b);
    }
    let clusters = blocks.div_ceil(ratio);
    if pos < clusters {
        complement.push((pos, clusters));
    }
    assert_eq!(
        to_clusters(extents.iter().map(|e| (e.start, e.end())), ratio),
        to_clusters(complement, 1),
        "used set differs from the complement of dumpe2fs's free ranges"
    );

    // Copying only the used blocks onto a pattern gives the same filesystem.
    let copy = t.dir.path().join("copy.img");
    common::pattern_file(&copy, dev.size_bytes());
    let out = common::open_rw(&copy);
    let mut buf = Vec::new();
    for e in &extents {
        buf.resize((e.len * u64::from(bs)) as usize, 0);
        dev.read_at_checked(&mut buf, e.start * u64::from(bs))
            .unwrap();
        out.write_all_at(&buf, e.start * u64::from(bs)).unwrap();
    }
    out.sync_all().unwrap();
    let mut head = [0u8; BOOT_MARK.len()];
    out.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(head, BOOT_MARK, "block 0 (boot sector) was not copied");

    common::assert_fsck_clean(&copy);
    common::assert_backup_fsck_matches(&t.img, &copy, bs);
    if common::tree::assert_same_tree(&t.img, &copy).is_none() {
        eprintln!(
            "note: {name}: no way to compare files here (no ext4-view support and no loop mount)"
        );
    }
}

common::matrix_tests!();

// ---- Hostile metadata: typed errors, never a panic. ----

/// A small real filesystem held in memory (1 KiB blocks, 64bit, no metadata_csum so that
/// superblock fields can be changed without re-checksumming).
fn small_fs(extra: &[&str]) -> Option<Vec<u8>> {
    if !have("mke2fs") {
        eprintln!("SKIP: mke2fs is not installed");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("h.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    common::run(
        std::process::Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-b", "1024", "-O", "64bit"])
            .args(extra)
            .arg(&img),
    );
    Some(std::fs::read(&img).unwrap())
}

const SB: usize = 1024;

fn put_u32(img: &mut [u8], off: usize, v: u32) {
    img[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u16(img: &mut [u8], off: usize, v: u16) {
    img[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

fn open_err(img: &[u8]) -> ExtError {
    match ExtFs::open(img, ScanOptions::default()) {
        Ok(fs) => match fs.used_extents(img).find_map(Result::err) {
            Some(e) => e,
            None => panic!("hostile image was accepted"),
        },
        Err(e) => e,
    }
}

#[test]
fn hostile_superblock_fields_are_typed_errors() {
    let Some(base) = small_fs(&["-O", "^metadata_csum"]) else {
        return;
    };
    assert!(
        ExtFs::open(base.as_slice(), ScanOptions::default()).is_ok(),
        "the unmodified image must open"
    );
    type Mutation<'a> = (&'a str, &'a dyn Fn(&mut Vec<u8>));
    let cases: &[Mutation] = &[
        ("blocks_per_group 0", &|i| {
            put_u32(i, SB + 0x20, 0);
            put_u32(i, SB + 0x24, 0);
        }),
        ("blocks_per_group huge", &|i| {
            put_u32(i, SB + 0x20, u32::MAX);
            put_u32(i, SB + 0x24, u32::MAX);
        }),
        ("clusters_per_group differs", &|i| {
            put_u32(i, SB + 0x24, 4096)
        }),
        ("desc_size 0", &|i| put_u16(i, SB + 0xFE, 0)),
        ("desc_size above the block size", &|i| {
            put_u16(i, SB + 0xFE, 2048)
        }),
        ("desc_size not a power of two", &|i| {
            put_u16(i, SB + 0xFE, 96)
        }),
        ("log_block_size 40", &|i| put_u32(i, SB + 0x18, 40)),
        ("log_cluster_size 40", &|i| put_u32(i, SB + 0x1C, 40)),
        ("group count overflowing", &|i| {
            put_u32(i, SB + 0x150, u32::MAX)
        }),
        ("blocks_count 0", &|i| put_u32(i, SB + 0x4, 0)),
        ("inodes_count inconsistent", &|i| put_u32(i, SB, 12345)),
        ("inode size 0", &|i| put_u16(i, SB + 0x58, 0)),
        ("first_data_block wrong", &|i| put_u32(i, SB + 0x14, 0)),
        ("unknown incompat feature", &|i| {
            let f = u32::from_le_bytes(i[SB + 0x60..SB + 0x64].try_into().unwrap());
            put_u32(i, SB + 0x60, f | 0x8000_0000);
        }),
        ("first_meta_bg beyond the table", &|i| {
            let f = u32::from_le_bytes(i[SB + 0x60..SB + 0x64].try_into().unwrap());
            put_u32(i, SB + 0x60, f | 0x10);
            put_u32(i, SB + 0x104, 1000);
        }),
        ("bigger than the device", &|i| put_u32(i, SB + 0x4, 1 << 30)),
    ];
    for (what, mutate) in cases {
        let mut img = base.clone();
        mutate(&mut img);
        let err = open_err(&img);
        assert!(
            matches!(
                err,
                ExtError::BadSuperblock(_)
                    | ExtError::Truncated { .. }
                    | ExtError::UnsupportedFeatures { .. }
            ),
            "{what}: unexpected {err:?}"
        );
    }
}

#[test]
fn hostile_descriptors_are_typed_errors() {
    let Some(base) = small_fs(&["-O", "^metadata_csum,^uninit_bg"]) else {
        return;
    };
    // 1 KiB blocks: descriptors start in block 2; each is 64 bytes (64bit).
    let gd = 2 * 1024;
    let cases: &[(&str, usize, u32)] = &[
        ("block bitmap past the end", 0x0, 0x00FF_FFF0),
        ("block bitmap at block 0", 0x0, 0),
        ("inode bitmap past the end", 0x4, 0x00FF_FFF0),
        ("inode table past the end", 0x8, 16 * 1024 - 2),
        ("block bitmap hi past the end", 0x20, 7),
    ];
    for group in [0usize, 1] {
        for (what, field, value) in cases {
            let mut img = base.clone();
            put_u32(&mut img, gd + group * 64 + field, *value);
            let err = open_err(&img);
            assert!(
                matches!(err, ExtError::DescriptorOutOfRange { .. }),
                "group {group} {what}: unexpected {err:?}"
            );
        }
    }
}

/// Superblock counters are not geometry: an impossible free count is noted (as e2fsck notes
/// it), not refused.
#[test]
fn an_impossible_free_count_is_noted_not_refused() {
    let Some(mut img) = small_fs(&["-O", "^metadata_csum"]) else {
        return;
    };
    put_u32(&mut img, SB + 0xC, u32::MAX);
    let fs = ExtFs::open(img.as_slice(), ScanOptions::default()).unwrap();
    assert!(
        fs.notes().iter().any(|n| n.contains("free blocks")),
        "{:?}",
        fs.notes()
    );
}

#[test]
fn checksums_are_verified() {
    let Some(base) = small_fs(&[]) else { return };
    // A flipped superblock byte (the label) fails the superblock checksum.
    let mut img = base.clone();
    img[SB + 0x78] ^= 0x55;
    assert!(matches!(
        open_err(&img),
        ExtError::SuperblockChecksum { .. }
    ));
    // A flipped descriptor byte (free inode count of group 0) fails the descriptor checksum.
    let mut img = base.clone();
    img[2 * 1024 + 0xE] ^= 0x55;
    assert!(matches!(
        open_err(&img),
        ExtError::DescriptorChecksum { group: 0 }
    ));
    // A flipped bit in group 0's block bitmap fails the bitmap checksum.
    let fs = ExtFs::open(base.as_slice(), ScanOptions::default()).unwrap();
    let bitmap = u32::from_le_bytes(base[2 * 1024..2 * 1024 + 4].try_into().unwrap()) as usize;
    let mut img = base.clone();
    // A byte of free blocks (metadata would be added back whatever the bitmap says).
    let free = (0..1024)
        .rev()
        .find(|&k| base[bitmap * 1024 + k] == 0)
        .expect("free blocks");
    img[bitmap * 1024 + free] ^= 0x01;
    assert!(
        matches!(open_err(&img), ExtError::BitmapChecksum { group: 0, .. }),
        "{:?}",
        open_err(&img)
    );
    // Without verification the scan goes on and reads the changed bitmap.
    let lenient = ScanOptions::lenient();
    let fs2 = ExtFs::open(img.as_slice(), lenient).unwrap();
    let count = |fs: &ExtFs, img: &[u8]| fs.used_extents(img).map(|e| e.unwrap().len).sum::<u64>();
    assert_eq!(count(&fs2, &img).abs_diff(count(&fs, &base)), 1);
}

#[test]
fn truncated_and_tiny_devices() {
    let Some(base) = small_fs(&[]) else { return };
    assert!(matches!(
        ExtFs::open(&base[..base.len() / 2], ScanOptions::default()),
        Err(ExtError::Truncated { .. })
    ));
    assert!(matches!(
        ExtFs::open(&base[..1500], ScanOptions::default()),
        Err(ExtError::TooSmall { .. })
    ));
    assert!(matches!(
        ExtFs::open(&vec![0u8; 1 << 20][..], ScanOptions::default()),
        Err(ExtError::NotExt)
    ));
    // Something that is not ext probes as raw.
    let zeros = vec![0u8; 1 << 20];
    let raw = probe(&zeros, ScanOptions::default()).unwrap();
    assert_eq!(raw.info(&zeros).unwrap().fs_type, FsType::Raw);
}

#[test]
fn random_corruption_of_metadata_never_panics() {
    let Some(base) = small_fs(&["-O", "^metadata_csum"]) else {
        return;
    };
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..3000 {
        let mut img = base.clone();
        for _ in 0..rng.usize(1..8) {
            // Superblock, descriptors and the first bitmaps live in the first 300 KiB.
            let at = rng.usize(1024..300 * 1024);
            img[at] = rng.u8(..);
        }
        if let Ok(fs) = ExtFs::open(
            img.as_slice(),
            ScanOptions {
                verify_checksums: rng.bool(),
                cross_check: rimage::fs::CrossCheck::Always,
            },
        ) {
            let mut prev_end = 0;
            for e in fs.used_extents(img.as_slice()) {
                let Ok(e) = e else { break };
                assert!(e.start >= prev_end && e.end() <= fs.blocks_count());
                prev_end = e.end();
            }
        }
    }
}

/// Used blocks of `img` as merged `[start, end)` ranges, by rimage's scan.
fn our_used(img: &Path) -> Vec<(u64, u64)> {
    let (dev, fs) = open_ext(img);
    fs.used_extents(&dev)
        .map(|e| e.map(|e| (e.start, e.end())).unwrap())
        .collect()
}

/// Used blocks of `img` as merged `[start, end)` ranges: the complement of dumpe2fs's free
/// ranges.
fn dumpe2fs_used(img: &Path) -> Vec<(u64, u64)> {
    let total: u64 = common::dumpe2fs_field(img, "Block count")
        .unwrap()
        .parse()
        .unwrap();
    let mut theirs = Vec::new();
    let mut at = 0;
    for (a, b) in common::dumpe2fs_free(img) {
        if a > at {
            theirs.push((at, a));
        }
        at = b + 1;
    }
    if at < total {
        theirs.push((at, total));
    }
    to_clusters(theirs, 1)
}

/// Writes `cmds` through `debugfs -w`.
fn debugfs(img: &Path, cmds: &str) {
    let script = img.with_extension("cmds");
    std::fs::write(&script, cmds).unwrap();
    common::run(
        std::process::Command::new("debugfs")
            .args(["-w", "-f"])
            .arg(&script)
            .arg(img),
    );
}

/// The `Block bitmap at N` of each group, from dumpe2fs.
fn bitmap_blocks(img: &Path) -> Vec<u64> {
    common::run(std::process::Command::new("dumpe2fs").arg(img))
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Block bitmap at "))
        .map(|r| {
            r.split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

/// Committed journal transactions that log new block bitmaps (written with debugfs, which
/// writes real jbd2 transactions): the scan's used set is what the on-disk bitmaps say once
/// debugfs replays the journal (`journal_run`), for 32- and 64-bit journals, with and without
/// checksums; a transaction whose commit block is damaged is not replayed and adds nothing.
#[test]
fn pending_journal_transactions_add_the_blocks_their_bitmaps_mark() {
    if !have("debugfs") || !have("dumpe2fs") {
        eprintln!("SKIP: needs debugfs and dumpe2fs");
        return;
    }
    // Without metadata_csum: the replayed bitmaps would fail their checksums (the descriptors
    // that hold them are not logged here), and dumpe2fs, the oracle, would refuse them.
    for (mkfs, jo) in [
        (&["-O", "64bit,^metadata_csum"][..], "jo"),
        (&["-O", "^64bit,^metadata_csum"][..], "jo -c"),
        (&["-O", "64bit,^metadata_csum", "-b", "4096"][..], "jo -c"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("j.img");
        let big = mkfs.contains(&"4096");
        let size = if big { 32 << 20 } else { 8 << 20 };
        std::fs::File::create(&img).unwrap().set_len(size).unwrap();
        common::run(
            std::process::Command::new("mke2fs")
                .args(["-q", "-F", "-t", "ext4", "-J"])
                .arg(if big { "size=4" } else { "size=1" })
                .args(mkfs)
                .arg(&img),
        );
        let bs: u64 = common::dumpe2fs_field(&img, "Block size")
            .unwrap()
            .parse()
            .unwrap();
        let bpg: u64 = common::dumpe2fs_field(&img, "Blocks per group")
            .unwrap()
            .parse()
            .unwrap();
        let first: u64 = common::dumpe2fs_field(&img, "First block")
            .unwrap()
            .parse()
            .unwrap();
        let bitmaps = bitmap_blocks(&img);
        let before = our_used(&img);
        // Transaction 1 marks 100 free blocks of the last group used; transaction 2 another
        // 50 (a newer copy of the same bitmap, as the kernel logs it).
        let g = bitmaps.len() as u64 - 1;
        let group_first = first + g * bpg;
        let disk = std::fs::read(&img).unwrap();
        let bm_at = (bitmaps[g as usize] * bs) as usize;
        let mut bm = disk[bm_at..bm_at + bs as usize].to_vec();
        let mut mark = |from: u64, n: u64| {
            for b in from..from + n {
                let bit = (b - group_first) as usize;
                bm[bit / 8] |= 1 << (bit % 8);
            }
            bm.clone()
        };
        // The end of the last group is free on a fresh filesystem.
        let total: u64 = common::dumpe2fs_field(&img, "Block count")
            .unwrap()
            .parse()
            .unwrap();
        let t1 = mark(total - 400, 100);
        let t2 = mark(total - 200, 50);
        std::fs::write(dir.path().join("t1"), t1).unwrap();
        std::fs::write(dir.path().join("t2"), t2).unwrap();
        let bmb = bitmaps[g as usize];
        debugfs(
            &img,
            &format!(
                "{jo}\njw -b {bmb} {}\njw -b {bmb} {}\njc\n",
                dir.path().join("t1").display(),
                dir.path().join("t2").display()
            ),
        );
        assert_eq!(
            common::dumpe2fs_field(&img, "Journal start").as_deref(),
            Some("1"),
            "{mkfs:?}: debugfs left no pending transactions"
        );
        let replayed = dir.path().join("replayed.img");
        std::fs::copy(&img, &replayed).unwrap();
        debugfs(&replayed, "jr\n");
        let ours = our_used(&img);
        let oracle = dumpe2fs_used(&replayed);
        assert_eq!(
            ours, oracle,
            "{mkfs:?} {jo}: the used set differs from the replayed one"
        );
        assert_ne!(ours, before, "{mkfs:?}: the journal added nothing");

        // Damage transaction 2's commit block: only transaction 1 is replayed.
        let phys = |logical: u64| -> u64 {
            let out = common::run(
                std::process::Command::new("debugfs")
                    .args(["-R", &format!("bmap <8> {logical}")])
                    .arg(&img),
            );
            out.trim().parse().unwrap()
        };
        // Log: superblock 0; t1 = descriptor 1, data 2, commit 3; t2 = 4, 5, commit 6.
        let commit2 = phys(6);
        let f = common::open_rw(&img);
        use std::os::unix::fs::FileExt;
        f.write_all_at(&[0u8; 4], commit2 * bs).unwrap();
        drop(f);
        std::fs::copy(&img, &replayed).unwrap();
        debugfs(&replayed, "jr\n");
        let ours = our_used(&img);
        let oracle = dumpe2fs_used(&replayed);
        assert_eq!(ours, oracle, "{mkfs:?} {jo}: uncommitted transaction");
    }
}
