//! XFS: the used set against xfs_db's free extents, save → restore round trips checked by
//! xfs_repair and file by file, the log state against xfs_logprint, what is imaged raw, and
//! hostile metadata. Filesystems are made by mkfs.xfs at test time and filled through a loop
//! mount, with stale data left in their free space.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Mounted, have, run, tree};
use rimage::fs::xfs::superblock::metadata_crc;
use rimage::fs::xfs::{XfsError, XfsFs};
use rimage::fs::{Extent, FsType, ScanError, ScanOptions};
use rimage::image::Unstored;
use rimage::{NoProgress, SaveOptions};
use tempfile::TempDir;

/// One filesystem of the matrix.
struct XfsCase {
    name: &'static str,
    /// mkfs.xfs options.
    mkfs: &'static [&'static str],
    /// Size of the image file in MiB.
    mib: u64,
    /// Small files written and every other one deleted: a fragmented free space, so that the
    /// free-space btrees get interior levels.
    fragment: u32,
}

const CASES: &[XfsCase] = &[
    XfsCase {
        name: "v4_4k",
        mkfs: &["-m", "crc=0", "-b", "size=4096", "-d", "agcount=4"],
        mib: 64,
        fragment: 0,
    },
    XfsCase {
        name: "v5_4k",
        mkfs: &["-m", "crc=1", "-b", "size=4096", "-d", "agcount=3"],
        mib: 64,
        fragment: 0,
    },
    XfsCase {
        name: "v5_1k_fragmented",
        mkfs: &["-m", "crc=1", "-b", "size=1024", "-d", "agcount=2"],
        mib: 48,
        fragment: 3000,
    },
    XfsCase {
        name: "v4_512",
        mkfs: &["-m", "crc=0", "-b", "size=512", "-d", "agcount=2"],
        mib: 40,
        fragment: 0,
    },
    XfsCase {
        name: "reflink_rmapbt",
        mkfs: &["-m", "reflink=1,rmapbt=1", "-d", "agcount=7"],
        mib: 112,
        fragment: 500,
    },
    XfsCase {
        name: "no_finobt_sparse_4k_sectors",
        mkfs: &[
            "-m",
            "finobt=0",
            "-i",
            "sparse=1",
            "-s",
            "size=4096",
            "-d",
            "agcount=5",
        ],
        mib: 80,
        fragment: 0,
    },
    // Larger than 2 GiB: a sparse file, so it costs what it holds.
    XfsCase {
        name: "over_2gib",
        mkfs: &["-d", "agcount=4"],
        mib: 2300,
        fragment: 200,
    },
];

/// What mkfs.xfs needs to make filesystems smaller than 300 MiB (as fstests sets it).
fn mkfs_xfs() -> Command {
    let mut c = Command::new("mkfs.xfs");
    c.env("TEST_DIR", "/tmp")
        .env("TEST_DEV", "/dev/null")
        .env("QA_CHECK_FS", "1");
    c
}

/// Whether the tools the tests need are here (and says what is missing).
fn tools(test: &str) -> bool {
    for tool in ["mkfs.xfs", "xfs_db", "xfs_repair", "xfs_logprint", "xfs_io"] {
        if !have(tool) {
            eprintln!("SKIP {test}: {tool} is not installed (xfsprogs)");
            return false;
        }
    }
    true
}

/// Whether the case is a v4 filesystem, which kernels built without XFS_SUPPORT_V4 (this
/// one) do not mount.
fn is_v4(case: &XfsCase) -> bool {
    case.mkfs.contains(&"crc=0")
}

/// Makes the case's filesystem. v5: mkfs, then a populated tree and fragmented free space
/// written through a loop mount, files rewritten and deleted (stale data in free space). v4:
/// `mkfs.xfs -p` with a protofile of the same tree. Then, for both, every free extent is
/// filled with junk, as a disk that has been used for years.
fn build(case: &XfsCase, seed: u64) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fs.xfs");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(case.mib << 20)
        .unwrap();
    let mut mkfs = mkfs_xfs();
    mkfs.args(["-q", "-f", "-L", "rimg"]).args(case.mkfs);
    if is_v4(case) {
        let src = dir.path().join("tree");
        std::fs::create_dir(&src).unwrap();
        tree::populate(&src, seed);
        let proto = dir.path().join("proto");
        std::fs::write(&proto, protofile(&src)).unwrap();
        run(mkfs.arg("-p").arg(&proto).arg(&img));
        std::fs::remove_dir_all(&src).unwrap();
    } else {
        run(mkfs.arg(&img));
        if let Some(m) = Mounted::new(&img, false) {
            tree::populate(m.path(), seed);
            fragment(m.path(), case.fragment, block_size(&img));
        }
        common::dirty(&img, seed);
    }
    stale_fill(&img, seed);
    (dir, img)
}

/// A protofile for `mkfs.xfs -p` describing the tree under `root` (names with blanks, which
/// the format cannot spell, are left out).
fn protofile(root: &Path) -> String {
    fn dir(path: &Path, depth: usize, out: &mut String) {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            if name.contains(char::is_whitespace) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let pad = " ".repeat(depth * 2);
            if meta.is_dir() {
                out.push_str(&format!("{pad}{name} d--755 0 0\n"));
                dir(&p, depth + 1, out);
                out.push_str(&format!("{pad}$\n"));
            } else if meta.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.push_str(&format!("{pad}{name} l--777 0 0 {}\n", t.display()));
            } else {
                out.push_str(&format!("{pad}{name} ---644 0 0 {}\n", p.display()));
            }
        }
    }
    let mut out = String::from("/dev/null\n0 0\nd--755 0 0\n");
    dir(root, 1, &mut out);
    out.push_str("$\n");
    out
}

/// Writes junk into the free extents xfs_db lists (but not the AGFL's blocks).
fn stale_fill(img: &Path, seed: u64) {
    use std::os::unix::fs::FileExt;
    let (used, _, dblocks) = xfs_db_used(img);
    let bs = block_size(img);
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut junk = vec![0u8; 1 << 20];
    // At most 64 MiB, so that the large case stays cheap.
    let mut budget: u64 = 64 << 20;
    let mut prev = 0;
    for e in used.iter().copied().chain([Extent {
        start: dblocks,
        len: 0,
    }]) {
        let (mut b, end) = (prev * bs, e.start * bs);
        while b < end && budget > 0 {
            let n = (end - b).min(junk.len() as u64) as usize;
            rng.fill(&mut junk[..n]);
            f.write_all_at(&junk[..n], b).unwrap();
            b += n as u64;
            budget = budget.saturating_sub(n as u64);
        }
        prev = e.end();
    }
    f.sync_all().unwrap();
}

/// Writes `n` one-block files and deletes every other one.
fn fragment(root: &Path, n: u32, bs: u64) {
    if n == 0 {
        return;
    }
    let d = root.join("frag");
    std::fs::create_dir(&d).unwrap();
    for i in 0..n {
        std::fs::write(
            d.join(format!("f{i}")),
            vec![(i % 251) as u8 + 1; bs as usize],
        )
        .unwrap();
    }
    rustix::fs::sync();
    for i in (0..n).step_by(2) {
        std::fs::remove_file(d.join(format!("f{i}"))).unwrap();
    }
    rustix::fs::sync();
}

fn xfs_db(img: &Path, cmds: &[&str]) -> String {
    let mut c = Command::new("xfs_db");
    c.arg("-r");
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    run(c.arg(img))
}

/// `name = value` fields of an xfs_db print.
fn fields(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn block_size(img: &Path) -> u64 {
    fields(&xfs_db(img, &["sb 0", "p blocksize"]))["blocksize"]
        .parse()
        .unwrap()
}

/// The used extents by xfs_db: every block but the free extents `freesp -d` lists, less the
/// AGFL's blocks (which freesp counts as free and which a copy must keep). Also the number
/// of free blocks freesp reports, and `dblocks`.
fn xfs_db_used(img: &Path) -> (Vec<Extent>, u64, u64) {
    let sb = fields(&xfs_db(img, &["sb 0", "p dblocks agblocks agcount"]));
    let dblocks: u64 = sb["dblocks"].parse().unwrap();
    let agblocks: u64 = sb["agblocks"].parse().unwrap();
    let agcount: u32 = sb["agcount"].parse().unwrap();
    let mut free: Vec<(u32, u64, u64)> = Vec::new();
    for line in xfs_db(img, &["freesp -d"]).lines() {
        let nums: Vec<u64> = line
            .split_whitespace()
            .map_while(|w| w.parse().ok())
            .collect();
        if nums.len() == 3 && line.split_whitespace().count() == 3 {
            free.push((nums[0] as u32, nums[1], nums[2]));
        }
    }
    let freesp_total: u64 = free.iter().map(|f| f.2).sum();
    let mut used = Vec::new();
    for ag in 0..agcount {
        let len = agblocks.min(dblocks - u64::from(ag) * agblocks);
        let mut map = vec![true; len as usize];
        for &(_, s, n) in free.iter().filter(|f| f.0 == ag) {
            map[s as usize..(s + n) as usize].fill(false);
        }
        for b in agfl_blocks(img, ag) {
            map[b as usize] = true;
        }
        let base = u64::from(ag) * agblocks;
        let mut i = 0;
        while i < map.len() {
            if map[i] {
                let s = i;
                while i < map.len() && map[i] {
                    i += 1;
                }
                push_merged(
                    &mut used,
                    Extent {
                        start: base + s as u64,
                        len: (i - s) as u64,
                    },
                );
            } else {
                i += 1;
            }
        }
    }
    (used, freesp_total, dblocks)
}

fn push_merged(v: &mut Vec<Extent>, e: Extent) {
    match v.last_mut() {
        Some(last) if last.end() == e.start => last.len += e.len,
        _ => v.push(e),
    }
}

/// The blocks in the active AGFL slots of `ag`, as xfs_db prints them.
fn agfl_blocks(img: &Path, ag: u32) -> Vec<u64> {
    let agf = fields(&xfs_db(img, &[&format!("agf {ag}"), "p flfirst flcount"]));
    let first: usize = agf["flfirst"].parse().unwrap();
    let count: usize = agf["flcount"].parse().unwrap();
    let out = xfs_db(img, &[&format!("agfl {ag}"), "p bno"]);
    // "bno[0-118] = 0:null 1:6 2:7 ..."
    let list = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("bno[").map(str::to_string))
        .unwrap();
    let slots: Vec<Option<u64>> = list
        .split_once(" = ")
        .unwrap()
        .1
        .split_whitespace()
        .map(|s| s.split_once(':').unwrap().1.parse().ok())
        .collect();
    (0..count)
        .filter_map(|i| slots[(first + i) % slots.len()])
        .collect()
}

fn scan(img: &Path, opts: ScanOptions) -> Result<(XfsFs, Vec<Extent>), XfsError> {
    let dev = rimage::source::Device::open(img).unwrap();
    let fs = XfsFs::open(&dev, opts)?;
    let extents = fs.used_extents(&dev).collect::<Result<Vec<_>, _>>()?;
    Ok((fs, extents))
}

/// Snapshot of the tree inside an XFS image, through a read-only loop mount.
fn snapshot(img: &Path) -> Option<tree::Snapshot> {
    let m = Mounted::new(img, true)?;
    Some(tree::snapshot_dir(m.path()))
}

fn check_case(case: &XfsCase) {
    if !tools(case.name) {
        return;
    }
    let (dir, img) = build(case, 0x5eed ^ case.mib);

    // The used set, block for block, against xfs_db.
    let (fs, extents) = scan(&img, ScanOptions::default()).unwrap();
    let (expected, freesp, dblocks) = xfs_db_used(&img);
    assert_eq!(
        extents, expected,
        "{}: used set differs from xfs_db's",
        case.name
    );
    let used: u64 = extents.iter().map(|e| e.len).sum();
    let agfl: u64 = (0..fs.superblock().agcount)
        .map(|ag| agfl_blocks(&img, ag).len() as u64)
        .sum();
    assert_eq!(used, dblocks - (freesp - agfl), "{}", case.name);
    assert!(
        !fs.needs_recovery(),
        "{}: a cleanly unmounted log",
        case.name
    );
    assert!(fs.notes().is_empty(), "{}: {:?}", case.name, fs.notes());
    if case.fragment >= 3000 && common::can_mount() {
        // The point of fragmenting: a btree with interior levels (in the AG of the files).
        let level = (0..fs.superblock().agcount)
            .map(|ag| {
                fields(&xfs_db(&img, &[&format!("agf {ag}"), "p bnolevel"]))["bnolevel"]
                    .parse::<u32>()
                    .unwrap()
            })
            .max()
            .unwrap();
        assert!(level >= 2, "{}: bnobt has {level} level(s)", case.name);
    }

    // Save, restore onto a pattern, check.
    let image = dir.path().join("fs.rimg");
    let report = common::save_with(
        &img,
        &image,
        &SaveOptions {
            chunk_size: 256 << 10,
            ..SaveOptions::default()
        },
    );
    assert_eq!(report.header.source_type, FsType::Xfs);
    assert_eq!(report.header.unstored, Unstored::Free);
    assert_eq!(report.header.used_blocks, used);
    assert_eq!(report.stored_blocks, used);
    let target = dir.path().join("restored.xfs");
    common::restore_onto_pattern(&image, &target, case.mib << 20);
    common::assert_blocks_equal(&img, &target, &extents, fs.block_size());
    run(Command::new("xfs_repair").arg("-n").arg(&target));
    // v4 cannot be mounted here: every used block being identical (above) is the check.
    if !is_v4(case)
        && let Some(a) = snapshot(&img)
    {
        let b = snapshot(&target).unwrap();
        assert!(a.len() > 100, "{}: {} entries", case.name, a.len());
        assert!(a == b, "{}: the restored tree differs", case.name);
    }
}

#[test]
fn v4_4k() {
    check_case(&CASES[0]);
}

#[test]
fn v5_4k() {
    check_case(&CASES[1]);
}

#[test]
fn v5_1k_fragmented() {
    check_case(&CASES[2]);
}

#[test]
fn v4_512() {
    check_case(&CASES[3]);
}

#[test]
fn reflink_rmapbt() {
    check_case(&CASES[4]);
}

#[test]
fn no_finobt_sparse_4k_sectors() {
    check_case(&CASES[5]);
}

#[test]
fn over_2gib() {
    check_case(&CASES[6]);
}

#[test]
fn every_case_has_a_test() {
    let names = [
        "v4_4k",
        "v5_4k",
        "v5_1k_fragmented",
        "v4_512",
        "reflink_rmapbt",
        "no_finobt_sparse_4k_sectors",
        "over_2gib",
    ];
    assert_eq!(
        CASES.iter().map(|c| c.name).collect::<Vec<_>>(),
        names.to_vec()
    );
}

/// A small filesystem, mkfs'd only.
fn small(dir: &Path, args: &[&str]) -> PathBuf {
    let img = dir.join("small.xfs");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    run(mkfs_xfs().args(["-q", "-f"]).args(args).arg(&img));
    img
}

fn logprint_state(img: &Path) -> String {
    let out = run(Command::new("xfs_logprint").arg("-t").arg(img));
    out.lines()
        .find_map(|l| l.split_once("state: ").map(|(_, s)| s.trim().to_string()))
        .unwrap()
}

#[test]
fn dirty_log_is_refused_unless_forced() {
    if !tools("dirty_log") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = small(dir.path(), &[]);
    assert_eq!(logprint_state(&img), "<CLEAN>");
    assert!(
        !scan(&img, ScanOptions::default())
            .unwrap()
            .0
            .needs_recovery()
    );
    let Some(m) = Mounted::new(&img, false) else {
        eprintln!("SKIP dirty_log: no loop mounts");
        return;
    };
    tree::populate(m.path(), 7);
    rustix::fs::sync();
    // Shut down after flushing the log, as a crash would leave it: records, no unmount record.
    run(Command::new("xfs_io")
        .args(["-x", "-c", "shutdown -f"])
        .arg(m.path()));
    drop(m);
    assert_eq!(logprint_state(&img), "<DIRTY>");
    let (fs, _) = scan(&img, ScanOptions::default()).unwrap();
    assert!(fs.needs_recovery());

    let image = dir.path().join("d.rimg");
    let err = rimage::save(
        &img,
        &rimage::Destination::File(image.clone()),
        &SaveOptions::default(),
        &NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("needs recovery") && err.contains("xfs_repair"),
        "{err}"
    );
    assert!(!image.exists());
    let report = common::save_with(
        &img,
        &image,
        &SaveOptions {
            force: true,
            ..SaveOptions::default()
        },
    );
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("log needs recovery"))
    );

    // Replayed by a mount, the log is clean again.
    drop(Mounted::new(&img, false));
    assert_eq!(logprint_state(&img), "<CLEAN>");
    assert!(
        !scan(&img, ScanOptions::default())
            .unwrap()
            .0
            .needs_recovery()
    );
}

#[test]
fn external_log_and_realtime_are_imaged_raw_with_a_note() {
    if !tools("external_log") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let logdev = dir.path().join("log.img");
    std::fs::File::create(&logdev)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let rtdev = dir.path().join("rt.img");
    std::fs::File::create(&rtdev)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    for (args, why) in [
        (
            vec!["-l".to_string(), format!("logdev={}", logdev.display())],
            "external device",
        ),
        (
            vec!["-r".to_string(), format!("rtdev={}", rtdev.display())],
            "realtime section",
        ),
    ] {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let img = small(dir.path(), &a);
        let dev = rimage::source::Device::open(&img).unwrap();
        assert!(matches!(
            XfsFs::open(&dev, ScanOptions::default()),
            Err(XfsError::Unsupported(_))
        ));
        let scan = rimage::fs::probe(&dev, ScanOptions::default()).unwrap();
        let info = scan.info(&dev).unwrap();
        assert_eq!(info.fs_type, FsType::Raw);
        let notes = scan.notes();
        assert!(
            notes.len() == 1 && notes[0].contains("XFS imaged raw") && notes[0].contains(why),
            "{notes:?}"
        );
        // Recognised all the same.
        assert_eq!(rimage::fs::identify(&dev).kind, FsType::Xfs);
    }
}

#[test]
fn info_and_identity() {
    if !tools("info") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = small(
        dir.path(),
        &[
            "-L",
            "rootfs",
            "-m",
            "uuid=0b1c2d3e-4f50-4162-8374-95a6b7c8d9ea",
        ],
    );
    let out = common::rimage()
        .args(["info", "--json"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let fs = &v["fs"];
    assert_eq!(fs["fs_type"], "xfs");
    assert_eq!(fs["label"], "rootfs");
    assert_eq!(fs["uuid"], "0b1c2d3e-4f50-4162-8374-95a6b7c8d9ea");
    assert_eq!(fs["block_size"], 4096);
    let (expected, _, _) = xfs_db_used(&img);
    assert_eq!(
        fs["used_blocks"].as_u64().unwrap(),
        expected.iter().map(|e| e.len).sum::<u64>()
    );
    assert_eq!(fs["state"]["needs_recovery"], false);
    let id = rimage::fs::identify(&rimage::source::Device::open(&img).unwrap());
    assert_eq!(id.kind, FsType::Xfs);
    assert_eq!(id.label.as_deref(), Some("rootfs"));
    assert_eq!(
        id.uuid.as_deref(),
        Some("0b1c2d3e-4f50-4162-8374-95a6b7c8d9ea")
    );

    // The image header carries the type and identity; browsing says it is not supported.
    let image = dir.path().join("s.rimg");
    common::save_with(&img, &image, &SaveOptions::default());
    let out = common::rimage()
        .args(["info", "--json"])
        .arg(&image)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["header"]["source_type"], "xfs");
    assert_eq!(v["header"]["uuid"], "0b1c2d3e-4f50-4162-8374-95a6b7c8d9ea");
    let out = common::rimage()
        .arg("ls")
        .arg(&image)
        .arg("/")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("browsing is not supported"), "{err}");
}

// Hostile metadata: a real filesystem with one field changed (and its CRC made to match, so
// that the check behind the CRC is what refuses it).

const SB_AGBLOCKS: usize = 84;
const SB_AGCOUNT: usize = 88;
const SB_CRC: usize = 224;
const AGF_BNO_ROOT: usize = 16;
const AGF_BNO_LEVEL: usize = 28;
const AGF_CRC: usize = 216;
const BB_CRC: usize = 52;
/// v5 short btree block header.
const BTREE_HEADER: usize = 56;

#[derive(Clone)]
struct Hostile {
    bytes: Vec<u8>,
    bs: usize,
    sect: usize,
    /// The AG whose free-space btree has two levels, and its byte offset.
    ag: u32,
    ag_at: usize,
}

impl Hostile {
    /// A v5 filesystem with 1 KiB blocks whose AG 0 free-space btree has two levels.
    fn new() -> Option<Self> {
        if !tools("hostile") || !common::can_mount() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = small(dir.path(), &["-b", "size=1024", "-d", "agcount=2"]);
        {
            let m = Mounted::new(&img, false)?;
            fragment(m.path(), 2000, 1024);
        }
        let mut h = Self {
            bytes: std::fs::read(&img).unwrap(),
            bs: 1024,
            sect: 512,
            ag: 0,
            ag_at: 0,
        };
        let agblocks = h.be32(SB_AGBLOCKS) as usize;
        let agcount = h.be32(SB_AGCOUNT);
        (h.ag, h.ag_at) = (0..agcount)
            .map(|ag| (ag, ag as usize * agblocks * h.bs))
            .find(|&(_, at)| h.be32(at + h.sect + AGF_BNO_LEVEL) == 2)
            .expect("an AG with a two-level free-space btree");
        Some(h)
    }

    fn be32(&self, at: usize) -> u32 {
        u32::from_be_bytes(self.bytes[at..at + 4].try_into().unwrap())
    }

    fn set_be32(&mut self, at: usize, v: u32) {
        self.bytes[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    /// Re-stamps the CRC at `crc_at` of the `len` bytes at `at`.
    fn fix_crc(&mut self, at: usize, len: usize, crc_at: usize) {
        let crc = metadata_crc(&self.bytes[at..at + len], crc_at);
        self.bytes[at + crc_at..at + crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    }

    /// Byte offset of the AG's AGF.
    fn agf(&self) -> usize {
        self.ag_at + self.sect
    }

    /// Byte offset of a block of the AG.
    fn block(&self, agbno: u32) -> usize {
        self.ag_at + agbno as usize * self.bs
    }

    /// Byte offset of the AG's bnobt root.
    fn root(&self) -> usize {
        self.block(self.be32(self.agf() + AGF_BNO_ROOT))
    }

    /// The used extents a probe finds, and its notes.
    fn scan(&self, opts: ScanOptions) -> Result<(Vec<Extent>, Vec<String>), ScanError> {
        let scan = rimage::fs::probe(&self.bytes, opts)?;
        let extents = scan.extents(&self.bytes).collect::<Result<Vec<_>, _>>()?;
        Ok((extents, scan.notes()))
    }
}

#[test]
fn hostile_superblocks_give_typed_errors() {
    let Some(clean) = Hostile::new() else { return };
    assert!(clean.scan(ScanOptions::default()).is_ok());
    let mut h = clean.clone();
    for agblocks in [0, 1, u32::MAX] {
        h.set_be32(SB_AGBLOCKS, agblocks);
        h.fix_crc(0, h.sect, SB_CRC);
        let e = h.scan(ScanOptions::default()).unwrap_err();
        assert!(
            matches!(e, ScanError::Xfs(XfsError::BadSuperblock(_))),
            "agblocks {agblocks}: {e}"
        );
    }
    // A CRC mismatch is refused, unless lenient.
    let mut h = clean;
    h.bytes[SB_CRC] ^= 1;
    let e = h.scan(ScanOptions::default()).unwrap_err();
    assert!(
        matches!(e, ScanError::Xfs(XfsError::SuperblockChecksum { .. })),
        "{e}"
    );
    assert!(h.scan(ScanOptions::lenient()).is_ok());
}

#[test]
fn hostile_btrees_give_typed_errors() {
    let Some(clean) = Hostile::new() else { return };
    let (good, _) = clean.scan(ScanOptions::default()).unwrap();
    let root = clean.root();
    assert_eq!(
        clean.be32(clean.agf() + AGF_BNO_LEVEL),
        2,
        "a two-level btree"
    );

    // Pointers of the root start after maxrecs keys.
    let maxrecs = (clean.bs - BTREE_HEADER) / 12;
    let ptrs = root + BTREE_HEADER + maxrecs * 8;
    let numrecs = u16::from_be_bytes([clean.bytes[root + 6], clean.bytes[root + 7]]) as usize;
    assert!(numrecs >= 2);

    type Patch = fn(&mut Hostile, usize, usize);
    let cases: [(&str, Patch, &str); 5] = [
        (
            "height beyond the limit",
            |h, _, _| {
                let agf = h.agf();
                h.set_be32(agf + AGF_BNO_LEVEL, 40);
                h.fix_crc(agf, h.sect, AGF_CRC);
            },
            "BadAgf",
        ),
        (
            "a leaf reached twice",
            |h, root, ptrs| {
                let first = h.be32(ptrs);
                h.set_be32(ptrs + 4, first);
                h.fix_crc(root, h.bs, BB_CRC);
            },
            "BadBtree",
        ),
        (
            "the root points at itself",
            |h, root, ptrs| {
                h.set_be32(ptrs, ((root - h.ag_at) / h.bs) as u32);
                h.fix_crc(root, h.bs, BB_CRC);
            },
            "BadBtree",
        ),
        (
            "a pointer past the AG",
            |h, root, ptrs| {
                h.set_be32(ptrs, 1 << 30);
                h.fix_crc(root, h.bs, BB_CRC);
            },
            "BadBtree",
        ),
        (
            "a free extent past the AG",
            |h, _, ptrs| {
                let leaf = h.block(h.be32(ptrs));
                h.set_be32(leaf + BTREE_HEADER + 4, u32::MAX);
                h.fix_crc(leaf, h.bs, BB_CRC);
            },
            "BadBtree",
        ),
    ];
    for (what, patch, variant) in cases {
        let mut h = clean.clone();
        patch(&mut h, root, ptrs);
        let e = h.scan(ScanOptions::default()).unwrap_err();
        let ok = match variant {
            "BadAgf" => matches!(e, ScanError::Xfs(XfsError::BadAgf { ag, .. }) if ag == h.ag),
            _ => matches!(e, ScanError::Xfs(XfsError::BadBtree { ag, .. }) if ag == h.ag),
        };
        assert!(ok, "{what}: {e}");
    }

    // A btree block whose CRC does not match: refused, or read and noted when lenient.
    let mut h = clean.clone();
    h.bytes[root + 100] ^= 0xFF;
    let e = h.scan(ScanOptions::default()).unwrap_err();
    assert!(
        matches!(e, ScanError::Xfs(XfsError::BtreeChecksum { ag, .. }) if ag == h.ag),
        "{e}"
    );
    let (extents, notes) = h.scan(ScanOptions::lenient()).unwrap();
    assert_eq!(extents, good);
    assert!(
        notes.iter().any(|n| n.contains("fail their checksums")),
        "{notes:?}"
    );

    // A btree that calls the AG headers, the free list and the btree roots free: they are
    // copied all the same, and a note says so.
    let mut h = clean.clone();
    let leaf = h.block(h.be32(ptrs));
    let rec = leaf + BTREE_HEADER;
    let end = h.be32(rec) + h.be32(rec + 4);
    h.set_be32(rec, 0);
    h.set_be32(rec + 4, end);
    h.fix_crc(leaf, h.bs, BB_CRC);
    let (extents, notes) = h.scan(ScanOptions::default()).unwrap();
    assert!(
        notes.iter().any(|n| n.contains("as free; copied anyway")),
        "{notes:?}"
    );
    let header_blocks = (4 * h.sect).div_ceil(h.bs);
    let first = (h.ag_at / h.bs) as u64;
    assert!(
        extents
            .iter()
            .any(|e| e.start <= first && first + header_blocks as u64 <= e.end()),
        "AG headers not copied"
    );
    // The root and the leaves are still copied.
    for b in [root / h.bs, leaf / h.bs] {
        assert!(
            extents
                .iter()
                .any(|e| e.start <= b as u64 && (b as u64) < e.end()),
            "btree block {b} not copied"
        );
    }
}

/// save-disk records an XFS root and a FAT EFI system partition as such, images both through
/// their scanners, and restore-disk brings both back.
#[test]
fn save_disk_records_xfs_and_vfat() {
    if !tools("save_disk") || !have("sfdisk") || !have("mkfs.fat") || !have("mcopy") {
        eprintln!("SKIP save_disk: needs xfsprogs, fdisk, dosfstools and mtools");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    common::partitioned_file(&disk, 160 << 20, "label: gpt\n,40M,U\n,,L\n");
    let Some(a) = common::LoopDev::with_partitions(&disk) else {
        eprintln!("SKIP save_disk: no loop devices with partitions");
        return;
    };
    run(Command::new("mkfs.fat")
        .args(["-F", "32", "-n", "ESP", "-i", "E5B0E5B0"])
        .arg(a.part(1)));
    std::fs::write(dir.path().join("grubx64.efi"), vec![0x4Du8; 300_000]).unwrap();
    run(Command::new("mcopy")
        .arg("-i")
        .arg(a.part(1))
        .arg(dir.path().join("grubx64.efi"))
        .arg("::"));
    run(mkfs_xfs().args(["-q", "-f", "-L", "root"]).arg(a.part(2)));
    if let Some(m) = Mounted::new(&a.part(2), false) {
        tree::populate(m.path(), 3);
    }
    let saved = dir.path().join("saved");
    run(common::rimage()
        .args(["save-disk", "-q"])
        .arg(&a.dev)
        .arg(&saved));
    let manifest = std::fs::read_to_string(saved.join("manifest.toml")).unwrap();
    assert!(
        manifest.contains("kind = \"vfat\"") && manifest.contains("kind = \"xfs\""),
        "{manifest}"
    );
    for (part, kind) in [(1, "vfat"), (2, "xfs")] {
        let info = run(common::rimage()
            .args(["info", "--json"])
            .arg(saved.join(format!("part{part}.rimg"))));
        assert!(
            info.contains(&format!("\"source_type\": \"{kind}\"")),
            "{info}"
        );
    }

    let target = dir.path().join("target.img");
    common::pattern_file(&target, 160 << 20);
    let b = common::LoopDev::new(&target).expect("loop device");
    run(common::rimage().arg("restore-disk").arg(&saved).arg(&b.dev));
    run(Command::new("xfs_repair").arg("-n").arg(b.part(2)));
    run(Command::new("fsck.fat").arg("-n").arg(b.part(1)));
    let esp = run(Command::new("mdir")
        .args(["-b", "-i"])
        .arg(b.part(1))
        .arg("::"));
    assert!(
        esp.contains("GRUBX64.EFI") || esp.contains("grubx64.efi"),
        "{esp}"
    );
    if let Some(x) = snapshot(&a.part(2)) {
        let y = snapshot(&b.part(2)).unwrap();
        assert!(x.len() > 100 && x == y, "the XFS root's files differ");
    }
}
