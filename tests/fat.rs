//! FAT12/16/32: the used count against fsck.fat's, save → restore round trips checked by
//! fsck.fat and file by file (through mtools: this kernel may have no vfat), the dirty bit,
//! identity, and hostile boot sectors. Volumes are made by mkfs.fat at test time.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{have, run, tree};
use rimage::fs::fat::{FatError, FatFs, FatKind};
use rimage::fs::{FsType, ScanError, ScanOptions};
use rimage::image::Unstored;
use rimage::{ImageSource, NoProgress, RestoreOptions, SaveOptions};
use tempfile::TempDir;

struct FatCase {
    name: &'static str,
    /// `mkfs.fat -F`.
    bits: u32,
    /// `mkfs.fat -s`: sectors per cluster.
    spc: u32,
    mib: u64,
    kind: FatKind,
    /// Whether mtools can write to it (it refuses FAT32 with fewer than 65,525 clusters).
    populate: bool,
}

const CASES: &[FatCase] = &[
    FatCase {
        name: "fat12_s1",
        bits: 12,
        spc: 1,
        mib: 2,
        kind: FatKind::Fat12,
        populate: true,
    },
    FatCase {
        name: "fat12_s4",
        bits: 12,
        spc: 4,
        // Leaves 3 sectors after the last cluster.
        mib: 4,
        kind: FatKind::Fat12,
        populate: true,
    },
    FatCase {
        name: "fat16_s2",
        bits: 16,
        spc: 2,
        mib: 32,
        kind: FatKind::Fat16,
        populate: true,
    },
    FatCase {
        name: "fat16_s8",
        bits: 16,
        spc: 8,
        mib: 64,
        kind: FatKind::Fat16,
        populate: true,
    },
    FatCase {
        name: "fat32_s1",
        bits: 32,
        spc: 1,
        mib: 64,
        kind: FatKind::Fat32,
        populate: true,
    },
    FatCase {
        name: "fat32_s8",
        bits: 32,
        spc: 8,
        mib: 300,
        kind: FatKind::Fat32,
        populate: true,
    },
    // Fewer clusters than the specification's FAT32 minimum: mkfs.fat makes it all the same.
    FatCase {
        name: "fat32_few_clusters",
        bits: 32,
        spc: 4,
        mib: 16,
        kind: FatKind::Fat32,
        populate: false,
    },
];

fn tools(test: &str) -> bool {
    for (tool, pkg) in [
        ("mkfs.fat", "dosfstools"),
        ("fsck.fat", "dosfstools"),
        ("mcopy", "mtools"),
        ("mdel", "mtools"),
    ] {
        if !have(tool) {
            eprintln!("SKIP {test}: {tool} is not installed ({pkg})");
            return false;
        }
    }
    true
}

/// A tree of directories and files of many sizes, about `budget` bytes.
fn fat_tree(root: &Path, budget: u64, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut written = 0;
    let mut i = 0;
    while written < budget {
        let dir = root.join(format!("dir{}/sub{}", i % 7, i % 3));
        std::fs::create_dir_all(&dir).unwrap();
        let len = match i % 5 {
            0 => 0,
            1 => rng.u64(1..600),
            2 => rng.u64(600..10_000),
            _ => rng.u64(10_000..(budget / 10).clamp(10_001, 400_000)),
        };
        let mut data = vec![0u8; len as usize];
        rng.fill(&mut data);
        std::fs::write(dir.join(format!("file{i}.bin")), &data).unwrap();
        written += len + 512;
        i += 1;
    }
    std::fs::write(root.join("README.TXT"), b"top level\n").unwrap();
}

fn mtools(cmd: &str, img: &Path) -> Command {
    let mut c = Command::new(cmd);
    c.arg("-i").arg(img);
    c
}

/// Makes the case's volume: mkfs.fat, a tree copied in with mcopy, junk files copied in and
/// some deleted (stale data in free clusters), some files overwritten.
fn build(case: &FatCase, seed: u64) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fs.fat");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(case.mib << 20)
        .unwrap();
    run(Command::new("mkfs.fat")
        .args(["-F", &case.bits.to_string(), "-s", &case.spc.to_string()])
        .args(["-n", "RIMGTEST", "-i", "1234ABCD"])
        .arg(&img));
    if !case.populate {
        return (dir, img);
    }
    let src = dir.path().join("tree");
    fat_tree(&src, (case.mib << 20) / 4, seed);
    let entries: Vec<PathBuf> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    run(mtools("mcopy", &img).arg("-s").args(&entries).arg("::"));
    let junk = dir.path().join("junk");
    fat_tree(&junk, (case.mib << 20) / 5, seed + 1);
    run(mtools("mmd", &img).arg("::junk"));
    let junk_entries: Vec<PathBuf> = std::fs::read_dir(&junk)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    run(mtools("mcopy", &img)
        .arg("-s")
        .args(&junk_entries)
        .arg("::junk"));
    run(mtools("mdeltree", &img).arg("::junk"));
    run(mtools("mcopy", &img)
        .arg("-o")
        .arg(src.join("README.TXT"))
        .arg("::dir0/README.TXT"));
    std::fs::remove_dir_all(&src).unwrap();
    std::fs::remove_dir_all(&junk).unwrap();
    (dir, img)
}

/// What `fsck.fat -n -v` says: boot sector numbers and the used cluster count.
fn fsck_fat(img: &Path) -> BTreeMap<&'static str, u64> {
    let out = run(Command::new("fsck.fat").arg("-n").arg("-v").arg(img));
    let mut m = BTreeMap::new();
    for line in out.lines() {
        let l = line.trim();
        let first = |s: &str| s.split_whitespace().next().unwrap().parse::<u64>().unwrap();
        if let Some(rest) = l.strip_prefix("Data area starts at byte ") {
            let sector = rest.split("(sector ").nth(1).unwrap().trim_end_matches(')');
            m.insert("data_sector", sector.parse().unwrap());
        } else if l.ends_with("data clusters") || l.contains(" data clusters (") {
            m.insert("clusters", first(l));
        } else if l.ends_with("sectors total") {
            m.insert("total", first(l));
        } else if l.ends_with("bytes per cluster") {
            m.insert("cluster_bytes", first(l));
        } else if l.ends_with("bytes per logical sector") {
            m.insert("sector_bytes", first(l));
        } else if let Some((_, counts)) = l.rsplit_once(" files, ") {
            let used = counts.split('/').next().unwrap();
            m.insert("used", used.parse().unwrap());
        }
    }
    m
}

/// Every file of a FAT volume, extracted with mcopy and snapshotted.
fn files(img: &Path) -> tree::Snapshot {
    let out = tempfile::tempdir().unwrap();
    run(mtools("mcopy", img)
        .args(["-s", "-n", "-m", "-Q"])
        .arg("::*")
        .arg(out.path()));
    tree::snapshot_dir(out.path())
}

fn check_case(case: &FatCase) {
    if !tools(case.name) {
        return;
    }
    let (dir, img) = build(case, 0xfa7 ^ case.mib);
    let dev = rimage::source::Device::open(&img).unwrap();
    let fs = FatFs::open(&dev, ScanOptions::default()).unwrap();
    assert_eq!(fs.geometry().kind, case.kind, "{}", case.name);
    let extents: Vec<_> = fs.used_extents(&dev).collect::<Result<_, _>>().unwrap();
    let used: u64 = extents.iter().map(|e| e.len).sum();

    // Against fsck.fat: metadata sectors, the clusters it counts used, and the tail.
    let f = fsck_fat(&img);
    let spc = f["cluster_bytes"] / f["sector_bytes"];
    assert_eq!(spc, u64::from(case.spc));
    let data = f["data_sector"];
    let tail = f["total"] - data - f["clusters"] * spc;
    assert_eq!(
        used,
        data + f["used"] * spc + tail,
        "{}: used sectors differ from fsck.fat's count ({} clusters used)",
        case.name,
        f["used"]
    );
    assert!(f["used"] > 0 || !case.populate);
    if case.name == "fat12_s4" {
        assert!(
            tail > 0,
            "the case meant to have sectors after the last cluster"
        );
    }
    let few = fs.info(used);
    assert_eq!(few.total_blocks, f["total"]);
    let notes = rimage::fs::UsedBlocks::notes(&fs);
    assert_eq!(
        notes.iter().any(|n| n.contains("FAT32 with only")),
        case.name == "fat32_few_clusters",
        "{}: {notes:?}",
        case.name
    );

    // Save, restore onto a pattern, check.
    let image = dir.path().join("fs.rimg");
    let report = common::save_with(
        &img,
        &image,
        &SaveOptions {
            chunk_size: 128 << 10,
            ..SaveOptions::default()
        },
    );
    assert_eq!(report.header.source_type, FsType::Vfat);
    assert_eq!(report.header.unstored, Unstored::Free);
    assert_eq!(report.header.block_size, 512);
    assert_eq!(report.stored_blocks, used);
    let target = dir.path().join("restored.fat");
    common::restore_onto_pattern(&image, &target, case.mib << 20);
    common::assert_blocks_equal(&img, &target, &extents, 512);
    let r = fsck_fat(&target);
    assert_eq!(r["used"], f["used"]);
    if case.populate {
        let (a, b) = (files(&img), files(&target));
        assert!(a.len() > 10, "{}: {} entries", case.name, a.len());
        assert!(a == b, "{}: the restored files differ", case.name);

        // Browsing the image (fatfs) shows the same files mtools reads from the volume.
        let browser = rimage::Browser::open(&ImageSource::File(image.clone())).unwrap();
        let out = tempfile::tempdir().unwrap();
        let into = out.path().join("x");
        let n = browser.extract("/", &into).unwrap();
        assert_eq!(n as usize, a.len() + 1, "{}", case.name);
        assert!(
            tree::snapshot_dir(&into) == a,
            "{}: the files browsed in the image differ",
            case.name
        );
        let listed: Vec<String> = browser
            .list("/")
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(listed.contains(&"README.TXT".to_string()), "{listed:?}");
        let mut text = Vec::new();
        browser.cat("/readme.txt", &mut text).unwrap();
        assert_eq!(text, b"top level\n");
    }
}

#[test]
fn fat12_s1() {
    check_case(&CASES[0]);
}

#[test]
fn fat12_s4() {
    check_case(&CASES[1]);
}

#[test]
fn fat16_s2() {
    check_case(&CASES[2]);
}

#[test]
fn fat16_s8() {
    check_case(&CASES[3]);
}

#[test]
fn fat32_s1() {
    check_case(&CASES[4]);
}

#[test]
fn fat32_s8() {
    check_case(&CASES[5]);
}

#[test]
fn fat32_few_clusters() {
    check_case(&CASES[6]);
}

#[test]
fn every_case_has_a_test() {
    assert_eq!(
        CASES.iter().map(|c| c.name).collect::<Vec<_>>(),
        [
            "fat12_s1",
            "fat12_s4",
            "fat16_s2",
            "fat16_s8",
            "fat32_s1",
            "fat32_s8",
            "fat32_few_clusters"
        ]
    );
}

fn small(dir: &Path, bits: &str) -> PathBuf {
    let img = dir.join(format!("fat{bits}.img"));
    std::fs::File::create(&img)
        .unwrap()
        .set_len(40 << 20)
        .unwrap();
    run(Command::new("mkfs.fat")
        .args(["-F", bits, "-n", "ESP", "-i", "C0FFEE42"])
        .arg(&img));
    img
}

#[test]
fn info_identity_and_header() {
    if !tools("info") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = small(dir.path(), "32");
    let out = common::rimage()
        .args(["info", "--json"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["fs"]["fs_type"], "vfat");
    assert_eq!(v["fs"]["uuid"], "C0FF-EE42");
    assert_eq!(v["fs"]["label"], "ESP");
    assert_eq!(v["fs"]["block_size"], 512);
    let text = run(common::rimage().arg("info").arg(&img));
    assert!(text.contains("volume id    C0FF-EE42"), "{text}");
    if have("blkid") {
        let b = run(Command::new("blkid")
            .args(["-o", "value", "-s", "UUID"])
            .arg(&img));
        assert_eq!(b.trim(), "C0FF-EE42");
    }

    let image = dir.path().join("esp.rimg");
    common::save_with(&img, &image, &SaveOptions::default());
    let out = common::rimage()
        .args(["info", "--json"])
        .arg(&image)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["header"]["source_type"], "vfat");
    assert_eq!(v["header"]["uuid"], "C0FF-EE42");
    let text = run(common::rimage().arg("info").arg(&image));
    assert!(text.contains("volume id    C0FF-EE42"), "{text}");
    let bytes = std::fs::read(&image).unwrap();
    let id = rimage::image::ImageFile::parse(&bytes[..])
        .unwrap()
        .header
        .identity();
    let dev_id = rimage::fs::identify(&rimage::source::Device::open(&img).unwrap());
    assert!(id.same_filesystem(&dev_id), "{id:?} vs {dev_id:?}");
    // Restoring over the same volume is not restoring over "another filesystem".
    rimage::restore(
        &ImageSource::File(image),
        &img,
        &RestoreOptions::default(),
        &NoProgress,
    )
    .unwrap();
}

#[test]
fn dirty_bit_gives_a_note() {
    if !tools("dirty_bit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (bits, state_at) in [("16", 37usize), ("32", 65)] {
        let img = small(dir.path(), bits);
        let fs = FatFs::open(
            &rimage::source::Device::open(&img).unwrap(),
            ScanOptions::default(),
        )
        .unwrap();
        assert!(rimage::fs::UsedBlocks::notes(&fs).is_empty());
        let mut bytes = std::fs::read(&img).unwrap();
        bytes[state_at] |= 1;
        std::fs::write(&img, &bytes).unwrap();
        let out = Command::new("fsck.fat")
            .arg("-n")
            .arg(&img)
            .output()
            .unwrap();
        let says = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(says.contains("dirty bit"), "fsck.fat: {says}");
        let scan = rimage::fs::probe(&bytes, ScanOptions::default()).unwrap();
        let notes = scan.notes();
        assert!(notes.iter().any(|n| n.contains("dirty bit")), "{notes:?}");
        // A note, not a refusal.
        assert!(scan.info(&bytes).unwrap().state.problems().is_empty());
    }
}

#[test]
fn hostile_boot_sectors_give_typed_errors() {
    if !tools("hostile") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let clean16 = std::fs::read(small(dir.path(), "16")).unwrap();
    let clean32 = std::fs::read(small(dir.path(), "32")).unwrap();
    assert!(rimage::fs::probe(&clean16, ScanOptions::default()).is_ok());
    type Patch = fn(&mut Vec<u8>);
    let cases: [(&str, &Vec<u8>, Patch, &str); 7] = [
        (
            "FATs past the end of the volume",
            &clean16,
            |b| b[22..24].copy_from_slice(&0xFFFFu16.to_le_bytes()),
            "BadBootSector",
        ),
        (
            "a FAT32 FAT size past the device",
            &clean32,
            |b| b[36..40].copy_from_slice(&0x4000_0000u32.to_le_bytes()),
            "BadBootSector",
        ),
        (
            "a volume larger than the device",
            &clean32,
            |b| {
                // Just past the device, within what the FAT can hold.
                let sectors = (b.len() / 512) as u32 + 8;
                b[32..36].copy_from_slice(&sectors.to_le_bytes());
            },
            "Truncated",
        ),
        (
            "a FAT too small for its clusters",
            &clean16,
            |b| {
                let n = u16::from_le_bytes([b[22], b[23]]);
                b[22..24].copy_from_slice(&(n / 2).to_le_bytes());
            },
            "FatTooSmall",
        ),
        (
            "a FAT16 boot sector with more clusters than FAT16 addresses",
            &clean16,
            |b| {
                b[19..21].copy_from_slice(&0u16.to_le_bytes());
                b[32..36].copy_from_slice(&0x0800_0000u32.to_le_bytes());
            },
            "BadBootSector",
        ),
        (
            "no sectors per cluster",
            &clean16,
            |b| b[13] = 0,
            "BadBootSector",
        ),
        (
            "odd bytes per sector",
            &clean16,
            |b| b[11..13].copy_from_slice(&700u16.to_le_bytes()),
            "BadBootSector",
        ),
    ];
    for (what, clean, patch, variant) in cases {
        let mut b = clean.clone();
        patch(&mut b);
        let e = rimage::fs::probe(&b, ScanOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        let ok = match variant {
            "Truncated" => matches!(e, ScanError::Fat(FatError::Truncated { .. })),
            "FatTooSmall" => matches!(e, ScanError::Fat(FatError::FatTooSmall { .. })),
            _ => matches!(e, ScanError::Fat(FatError::BadBootSector(_))),
        };
        assert!(ok, "{what}: {e}");
    }
}
