//! Side-by-side comparison against partclone on the same data, in one run:
//!
//!     cargo bench --bench compare                 # full run (root: cold-cache runs too)
//!     cargo bench --bench compare -- --quick      # one repetition, warm cache only
//!
//! Builds the corpus when missing (benches/make-corpus.sh: 4 GiB ext4, about half used, stale
//! data in free space), times rimage and `partclone | zstd` for save, raw save, restore and
//! verify (median of several runs, cold and warm cache), measures the compression ceiling
//! (`zstd -T<cores>` over exactly the used bytes, in memory), peak RSS and CPU time, and how save
//! time scales with filesystem size at constant used data. Prints a table of ratios and writes
//! benches/results/{results.json,latest.md,chart.svg}.
//!
//! An XFS corpus (the same content, through a loop mount) is saved by rimage and by
//! `partclone.xfs | zstd` too. RIMAGE_BENCH_ONLY=xfs runs only that part and writes
//! benches/results/xfs.md (the full run's files are left as they are).
//!
//! Environment: RIMAGE_BENCH_DIR (work directory, default target/bench-compare),
//! RIMAGE_BENCH_REPS (default 3), RIMAGE_BENCH_BASELINE (another rimage binary, e.g. a build of
//! the previous commit: its save, restore and verify are timed in alternation with this
//! build's on the same corpus, to show a change costs nothing beyond noise).

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, Serialize)]
struct Run {
    wall: f64,
    user: f64,
    sys: f64,
    max_rss_mib: f64,
}

#[derive(Clone, Debug, Serialize)]
struct Measure {
    name: String,
    command: String,
    cache: &'static str,
    runs: Vec<Run>,
    median: Run,
    output_bytes: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
struct Ratio {
    what: String,
    value: f64,
    target: String,
    holds: bool,
}

struct Ctx {
    dir: PathBuf,
    rimage: PathBuf,
    reps: usize,
    cold: bool,
    measures: Vec<Measure>,
    /// Figures that are not timings (bytes fetched, ...), by name.
    figures: BTreeMap<String, f64>,
}

fn sh(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", cmd])
        .status()
        .is_ok_and(|s| s.success())
}

fn have(tool: &str) -> bool {
    sh(&format!("command -v {tool} >/dev/null 2>&1"))
}

fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3\n");
}

impl Ctx {
    /// Runs `cmd` under /usr/bin/time `reps` times (after `setup` each time) and records the
    /// median wall time with CPU time and peak RSS.
    fn measure(
        &mut self,
        name: &str,
        cmd: &str,
        cold: bool,
        output: Option<&Path>,
        setup: &dyn Fn(),
    ) -> Run {
        if cold && !self.cold {
            return Run::default();
        }
        let mut runs = Vec::new();
        for _ in 0..self.reps {
            setup();
            runs.push(run_once(name, cmd, cold));
        }
        self.record(name, cmd, cold, output, runs)
    }

    /// Times `a` and `b` in alternation (`reps` runs each, same cache state), so that drift in
    /// the machine's speed hits both alike.
    fn measure_ab(&mut self, a: (&str, &str), b: (&str, &str), cold: bool) {
        if cold && !self.cold {
            return;
        }
        let (mut ra, mut rb) = (Vec::new(), Vec::new());
        for _ in 0..self.reps {
            ra.push(run_once(a.0, a.1, cold));
            rb.push(run_once(b.0, b.1, cold));
        }
        self.record(a.0, a.1, cold, None, ra);
        self.record(b.0, b.1, cold, None, rb);
    }

    fn record(
        &mut self,
        name: &str,
        cmd: &str,
        cold: bool,
        output: Option<&Path>,
        runs: Vec<Run>,
    ) -> Run {
        let mut sorted = runs.clone();
        sorted.sort_by(|a, b| a.wall.total_cmp(&b.wall));
        let median = sorted[sorted.len() / 2];
        let output_bytes = output
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.len());
        eprintln!(
            "  {name:<28} {:<5} {:>7.2} s  cpu {:>6.2} s  rss {:>7.1} MiB{}",
            if cold { "cold" } else { "warm" },
            median.wall,
            median.user + median.sys,
            median.max_rss_mib,
            output_bytes
                .map(|b| format!("  {:.1} MB", b as f64 / 1e6))
                .unwrap_or_default()
        );
        self.measures.push(Measure {
            name: name.into(),
            command: cmd.into(),
            cache: if cold { "cold" } else { "warm" },
            runs,
            median,
            output_bytes,
        });
        median
    }

    fn get(&self, name: &str, cache: &str) -> Option<&Measure> {
        self.measures
            .iter()
            .find(|m| m.name == name && m.cache == cache)
    }
}

/// One run of `cmd` under /usr/bin/time (after dropping the page cache when `cold`).
fn run_once(name: &str, cmd: &str, cold: bool) -> Run {
    if cold {
        drop_caches();
    }
    let out = Command::new("/usr/bin/time")
        .args(["-f", "RIMAGE-TIME %e %U %S %M", "sh", "-c", cmd])
        .output()
        .expect("run /usr/bin/time");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name}: `{cmd}` failed:\n{err}");
    let line = err
        .lines()
        .rev()
        .find(|l| l.starts_with("RIMAGE-TIME "))
        .expect("time output");
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    Run {
        wall: f[0],
        user: f[1],
        sys: f[2],
        max_rss_mib: f[3] / 1024.0,
    }
}

/// Writes exactly the used bytes of `img` (rimage's own scanner) to `out`.
fn dump_used(img: &Path, out: &Path) -> u64 {
    let dev = rimage::source::Device::open(img).unwrap();
    let fs = rimage::fs::ext::ExtFs::open(&dev, Default::default()).expect("corpus is ext");
    let bs = u64::from(fs.block_size());
    let file = std::fs::File::create(out).unwrap();
    let mut buf = Vec::new();
    let mut pos = 0;
    for e in fs.used_extents(&dev) {
        let e = e.unwrap();
        buf.resize((e.len * bs) as usize, 0);
        dev.read_at_checked(&mut buf, e.start * bs).unwrap();
        file.write_all_at(&buf, pos).unwrap();
        pos += buf.len() as u64;
    }
    pos
}

/// Writes the non-zero 4 KiB blocks of `img` (what a raw save stores) to `out`.
fn dump_nonzero(img: &Path, out: &Path) -> u64 {
    let src = std::fs::File::open(img).unwrap();
    let file = std::fs::File::create(out).unwrap();
    let mut buf = vec![0u8; 4 << 20];
    let (mut pos, mut at) = (0u64, 0u64);
    loop {
        let n = src.read_at(&mut buf, at).unwrap();
        if n == 0 {
            break;
        }
        for block in buf[..n].chunks(4096).filter(|b| b.iter().any(|&x| x != 0)) {
            file.write_all_at(block, pos).unwrap();
            pos += block.len() as u64;
        }
        at += n as u64;
    }
    pos
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb >> 20);
    let out = |c: &str, a: &[&str]| {
        Command::new(c)
            .args(a)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let partclone = Command::new("partclone.ext4")
        .arg("-v")
        .output()
        .map(|o| {
            let t = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            t.lines()
                .find(|l| l.contains("Partclone"))
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default();
    // "*** Zstandard CLI (64-bit) v1.5.4, by Yann Collet ***" → "v1.5.4".
    let zstd_version = out("zstd", &["--version"]);
    let zstd_version = zstd_version
        .split_whitespace()
        .find(|w| w.starts_with('v'))
        .unwrap_or("?")
        .trim_end_matches(',')
        .to_string();
    format!(
        "{cores} cores ({cpu}), {mem} GiB RAM, Linux {}, zstd {zstd_version}, {partclone}",
        out("uname", &["-r"])
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `-- --only-http`: just the HTTP and delta rows, on an existing corpus and image.
    let only_http = args.iter().any(|a| a == "--only-http");
    if args.iter().any(|a| a == "--list") {
        return;
    }
    for tool in [
        "partclone.ext4",
        "partclone.dd",
        "partclone.restore",
        "partclone.chkimg",
        "zstd",
        "/usr/bin/time",
        "mke2fs",
    ] {
        if !have(tool) {
            eprintln!(
                "compare: {tool} is missing (Debian: apt-get install partclone zstd time e2fsprogs); nothing measured"
            );
            return;
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("RIMAGE_BENCH_DIR")
        .map_or_else(|| root.join("target/bench-compare"), PathBuf::from);
    std::fs::create_dir_all(&dir).unwrap();
    let is_root = rustix::process::geteuid().is_root();
    let reps = if quick {
        1
    } else {
        std::env::var("RIMAGE_BENCH_REPS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(3)
    };
    assert!(
        sh(&format!(
            "cd {} && cargo build --release --quiet --bin rimage",
            root.display()
        )),
        "cargo build failed"
    );
    let mut cx = Ctx {
        dir: dir.clone(),
        rimage: root.join("target/release/rimage"),
        reps,
        cold: is_root && !quick,
        measures: Vec::new(),
        figures: BTreeMap::new(),
    };
    if !cx.cold {
        eprintln!(
            "note: warm-cache runs only ({})",
            if quick {
                "--quick"
            } else {
                "not root: cannot drop the page cache"
            }
        );
    }

    if std::env::var("RIMAGE_BENCH_ONLY").as_deref() == Ok("xfs") {
        xfs_part(&mut cx, root, is_root);
        let rows = xfs_rows(&cx);
        let mut md = format!(
            "Machine: {}. XFS corpus: 4 GiB, the same content as the ext4 corpus. Medians of {} runs{}.\n\n| ratio | value | target | holds |\n|---|---:|---|---|\n",
            machine(),
            cx.reps,
            if cx.cold {
                ", cold and warm cache"
            } else {
                ", warm cache"
            }
        );
        for r in &rows {
            let _ = writeln!(
                md,
                "| {} | {:.2} | {} | {} |",
                r.what.replace('|', "\\|"),
                r.value,
                r.target,
                if r.holds { "yes" } else { "**no**" }
            );
        }
        println!("\n{md}");
        std::fs::write(root.join("benches/results/xfs.md"), md).unwrap();
        return;
    }

    let corpus = dir.join("corpus.img");
    if !corpus.exists() {
        assert!(
            is_root,
            "building the corpus needs root (loop mount); or put a corpus at {}",
            corpus.display()
        );
        eprintln!("building the corpus (a few minutes)...");
        assert!(
            sh(&format!(
                "bash {}/benches/make-corpus.sh {} 4",
                root.display(),
                corpus.display()
            )),
            "corpus build failed"
        );
    }
    let info = rimage::inspect_source(&corpus).unwrap();
    let used_bytes = info.fs.used_blocks * u64::from(info.fs.block_size);
    let corpus_bytes = info.device_bytes;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "corpus: {} ({:.2} GiB, {:.2} GiB used)",
        corpus.display(),
        corpus_bytes as f64 / (1u64 << 30) as f64,
        used_bytes as f64 / (1u64 << 30) as f64
    );

    let r = cx.rimage.display().to_string();
    let c = corpus.display().to_string();
    let d = |n: &str| dir.join(n).display().to_string();
    let none: &dyn Fn() = &|| {};
    if only_http {
        // Delta needs the content hashes of format version 2: an older image is saved again.
        let current =
            rimage::inspect_image(&rimage::transport::ImageSource::File(dir.join("r3.rimg")))
                .is_ok_and(|i| i.header.version == rimage::image::header::Version::CURRENT);
        if !current {
            assert!(sh(&format!(
                "{r} save -q --overwrite -l 3 {c} {}",
                d("r3.rimg")
            )));
        }
        let target = dir.join("target.img");
        if !target.exists() {
            assert!(sh(&format!(
                "fallocate -l {corpus_bytes} {}",
                target.display()
            )));
        }
        http_section(
            &mut cx,
            &dir,
            &d("r3.rimg"),
            &target.display().to_string(),
            corpus_bytes,
        );
        let mut md = String::from("| ratio | value | target | holds |\n|---|---:|---|---|\n");
        for row in http_ratios(&cx) {
            let _ = writeln!(
                md,
                "| {} | {:.3} | {} | {} |",
                row.what,
                row.value,
                row.target,
                if row.holds { "yes" } else { "**no**" }
            );
        }
        eprintln!("{md}");
        std::fs::write(root.join("benches/results/http.md"), md).unwrap();
        return;
    }

    eprintln!("save:");
    for cache in [true, false] {
        for level in [3, 1] {
            cx.measure(
                &format!("rimage save -l{level}"),
                &format!(
                    "{r} save -q --overwrite -l {level} {c} {}",
                    d(&format!("r{level}.rimg"))
                ),
                cache,
                Some(&dir.join(format!("r{level}.rimg"))),
                none,
            );
            cx.measure(
                &format!("partclone.ext4 | zstd -{level}"),
                &format!(
                    "partclone.ext4 -q -c -s {c} -o - 2>/dev/null | zstd -q -T0 -{level} -c > {}",
                    d(&format!("p{level}.zst"))
                ),
                cache,
                Some(&dir.join(format!("p{level}.zst"))),
                none,
            );
        }
    }
    eprintln!("compression ceiling (used bytes in memory):");
    let shm = PathBuf::from("/dev/shm/rimage-bench-used.bin");
    let dumped = dump_used(&corpus, &shm);
    assert_eq!(dumped, used_bytes);
    for level in [3, 1] {
        cx.measure(
            &format!("zstd -T{cores} -{level} (ceiling)"),
            &format!(
                "zstd -q -T{cores} -{level} -c {} > /dev/null",
                shm.display()
            ),
            false,
            None,
            none,
        );
    }
    let _ = std::fs::remove_file(&shm);

    eprintln!("raw-mode compression ceiling (non-zero blocks in memory):");
    let nonzero = dump_nonzero(&corpus, &shm);
    eprintln!(
        "  non-zero blocks: {:.2} GiB",
        nonzero as f64 / (1u64 << 30) as f64
    );
    cx.measure(
        &format!("zstd -T{cores} -3 (raw ceiling)"),
        &format!("zstd -q -T{cores} -3 -c {} > /dev/null", shm.display()),
        false,
        None,
        none,
    );
    let _ = std::fs::remove_file(&shm);

    eprintln!("raw save:");
    for cache in [true, false] {
        cx.measure(
            "rimage save --raw",
            &format!("{r} save -q --overwrite --raw {c} {}", d("raw.rimg")),
            cache,
            Some(&dir.join("raw.rimg")),
            none,
        );
        cx.measure(
            "partclone.dd | zstd -3",
            &format!(
                "partclone.dd -q -s {c} -o - 2>/dev/null | zstd -q -T0 -3 -c > {}",
                d("dd.zst")
            ),
            cache,
            Some(&dir.join("dd.zst")),
            none,
        );
    }

    eprintln!("restore (into a pre-allocated target):");
    let target = dir.join("target.img");
    let _ = std::fs::remove_file(&target);
    assert!(sh(&format!(
        "fallocate -l {corpus_bytes} {}",
        target.display()
    )));
    let t = target.display().to_string();
    for cache in [true, false] {
        cx.measure(
            "rimage restore",
            &format!("{r} restore -q {} {t}", d("r3.rimg")),
            cache,
            None,
            none,
        );
        cx.measure(
            "zstd -dc | partclone.restore",
            &format!(
                "zstd -q -dc {} | partclone.restore -C -s - -O {t} >/dev/null 2>&1",
                d("p3.zst")
            ),
            cache,
            None,
            none,
        );
    }
    assert!(
        sh(&format!("e2fsck -fn {t} >/dev/null 2>&1")),
        "the restored target does not pass e2fsck"
    );

    // Bringing a Clonezilla-style image (partclone | zstd) along: import it, then restore the
    // result, against partclone.restore of the same image (measured above).
    eprintln!("import + restore:");
    for cache in [true, false] {
        cx.measure(
            "rimage import + restore",
            &format!(
                "{r} import -q --overwrite {} {} && {r} restore -q {} {t}",
                d("p3.zst"),
                d("imported.rimg"),
                d("imported.rimg")
            ),
            cache,
            None,
            none,
        );
    }
    assert!(
        sh(&format!("e2fsck -fn {t} >/dev/null 2>&1")),
        "the target restored from the imported image does not pass e2fsck"
    );

    eprintln!("verify:");
    for cache in [true, false] {
        cx.measure(
            "rimage verify",
            &format!("{r} verify -q {}", d("r3.rimg")),
            cache,
            None,
            none,
        );
        cx.measure(
            "zstd -dc | partclone.chkimg",
            &format!(
                "zstd -q -dc {} | partclone.chkimg -s - >/dev/null 2>&1",
                d("p3.zst")
            ),
            cache,
            None,
            none,
        );
    }

    xfs_part(&mut cx, root, is_root);

    if let Some(base) = std::env::var_os("RIMAGE_BENCH_BASELINE") {
        let b = PathBuf::from(base).display().to_string();
        eprintln!("this build (A) and the baseline build {b} (B), alternating:");
        for cache in [true, false] {
            cx.measure_ab(
                (
                    "A: save -l3",
                    &format!("{r} save -q --overwrite -l 3 {c} {}", d("a3.rimg")),
                ),
                (
                    "B: save -l3",
                    &format!("{b} save -q --overwrite -l 3 {c} {}", d("b3.rimg")),
                ),
                cache,
            );
            cx.measure_ab(
                (
                    "A: restore",
                    &format!("{r} restore -q {} {t}", d("a3.rimg")),
                ),
                (
                    "B: restore",
                    &format!("{b} restore -q {} {t}", d("b3.rimg")),
                ),
                cache,
            );
            cx.measure_ab(
                ("A: verify", &format!("{r} verify -q {}", d("a3.rimg"))),
                ("B: verify", &format!("{b} verify -q {}", d("b3.rimg"))),
                cache,
            );
        }
    }

    http_section(&mut cx, &dir, &d("r3.rimg"), &t, corpus_bytes);

    eprintln!("scaling (same used data, growing filesystem; warm cache):");
    let scaling = scaling(&mut cx, root);

    report(&cx, root, used_bytes, corpus_bytes, cores, &scaling);
}

/// XFS: rimage's save against `partclone.xfs | zstd -3` on a 4 GiB XFS corpus with the same
/// content as the ext4 one; the restored image must pass `xfs_repair -n`. Skipped (with a
/// note) without xfsprogs or partclone.xfs.
fn xfs_part(cx: &mut Ctx, root: &Path, is_root: bool) {
    if !have("partclone.xfs") || !have("mkfs.xfs") || !have("xfs_repair") {
        eprintln!("note: partclone.xfs or xfsprogs missing: no XFS comparison");
        return;
    }
    let corpus = cx.dir.join("corpus-xfs.img");
    if !corpus.exists() {
        assert!(is_root, "building the XFS corpus needs root (loop mount)");
        eprintln!("building the XFS corpus (a few minutes)...");
        assert!(
            sh(&format!(
                "bash {}/benches/make-corpus.sh {} 4 xfs",
                root.display(),
                corpus.display()
            )),
            "XFS corpus build failed"
        );
    }
    let info = rimage::inspect_source(&corpus).unwrap();
    eprintln!(
        "XFS corpus: {} ({:.2} GiB used)",
        corpus.display(),
        (info.fs.used_blocks * u64::from(info.fs.block_size)) as f64 / (1u64 << 30) as f64
    );
    let r = cx.rimage.display().to_string();
    let c = corpus.display().to_string();
    let dir = cx.dir.clone();
    let d = |n: &str| dir.join(n).display().to_string();
    let (ours, theirs) = (d("x3.rimg"), d("xp3.zst"));
    eprintln!("XFS save:");
    for cache in [true, false] {
        cx.measure(
            "rimage save -l3 (xfs)",
            &format!("{r} save -q --overwrite -l 3 {c} {ours}"),
            cache,
            Some(Path::new(&ours)),
            &|| {},
        );
        cx.measure(
            "partclone.xfs | zstd -3",
            &format!("partclone.xfs -q -c -s {c} -o - 2>/dev/null | zstd -q -T0 -3 -c > {theirs}"),
            cache,
            Some(Path::new(&theirs)),
            &|| {},
        );
    }
    let target = d("target-xfs.img");
    let _ = std::fs::remove_file(&target);
    assert!(sh(&format!("truncate -s {} {target}", info.device_bytes)));
    assert!(sh(&format!("{r} restore -q {ours} {target}")));
    assert!(
        sh(&format!("xfs_repair -n {target} >/dev/null 2>&1")),
        "the restored XFS target does not pass xfs_repair -n"
    );
    let _ = std::fs::remove_file(&target);
}

/// The XFS rows of the report (none when the XFS part did not run).
fn xfs_rows(cx: &Ctx) -> Vec<Ratio> {
    let mut rows = Vec::new();
    for c in ["cold", "warm"] {
        if let (Some(ours), Some(theirs)) = (
            cx.get("rimage save -l3 (xfs)", c),
            cx.get("partclone.xfs | zstd -3", c),
        ) {
            let speed = theirs.median.wall / ours.median.wall;
            rows.push(Ratio {
                what: format!("XFS save speed vs partclone.xfs|zstd ({c})"),
                value: speed,
                target: "≥ 2.0×".into(),
                holds: speed >= 2.0,
            });
        }
    }
    if let (Some(ours), Some(theirs)) = (
        cx.get("rimage save -l3 (xfs)", "warm"),
        cx.get("partclone.xfs | zstd -3", "warm"),
    ) {
        let size = ours.output_bytes.unwrap() as f64 / theirs.output_bytes.unwrap() as f64;
        rows.push(Ratio {
            what: "XFS image size vs partclone.xfs|zstd".into(),
            value: size,
            target: "≤ 1.01×".into(),
            holds: size <= 1.01,
        });
    }
    rows
}

/// Save time and peak RSS at three filesystem sizes holding the same files.
fn scaling(cx: &mut Ctx, root: &Path) -> Vec<(u64, f64, f64)> {
    let tree = cx.dir.join("scaling-tree");
    if !tree.exists() {
        std::fs::create_dir_all(&tree).unwrap();
        let data = common::realistic_bytes(512 << 20);
        for (i, piece) in data.chunks(4 << 20).enumerate() {
            std::fs::write(tree.join(format!("f{i}")), piece).unwrap();
        }
    }
    let _ = root;
    let mut out = Vec::new();
    for gib in [16u64, 128, 1024] {
        let img = cx.dir.join(format!("scale-{gib}g.img"));
        if !img.exists() {
            std::fs::File::create(&img)
                .unwrap()
                .set_len(gib << 30)
                .unwrap();
            assert!(sh(&format!(
                "mke2fs -q -F -t ext4 -b 4096 -d {} {} ",
                tree.display(),
                img.display()
            )));
        }
        let image = cx.dir.join("scale.rimg");
        let run = cx.measure(
            &format!("rimage save ({gib} GiB fs)"),
            &format!(
                "{} save -q --overwrite {} {}",
                cx.rimage.display(),
                img.display(),
                image.display()
            ),
            false,
            Some(&image),
            &|| {},
        );
        out.push((gib, run.wall, run.max_rss_mib));
    }
    out
}

fn report(cx: &Ctx, root: &Path, used: u64, size: u64, cores: usize, scaling: &[(u64, f64, f64)]) {
    let mut ratios = Vec::new();
    let mut add = |what: String, value: f64, target: &str, holds: bool| {
        ratios.push(Ratio {
            what,
            value,
            target: target.into(),
            holds,
        })
    };
    let cache = if cx.cold { "cold" } else { "warm" };
    let m = |n: &str, c: &str| cx.get(n, c).unwrap_or_else(|| panic!("no measure {n} {c}"));
    for row in http_ratios(cx) {
        add(row.what, row.value, &row.target, row.holds);
    }
    for c in if cx.cold {
        vec!["cold", "warm"]
    } else {
        vec!["warm"]
    } {
        for level in [3, 1] {
            let ours = m(&format!("rimage save -l{level}"), c);
            let theirs = m(&format!("partclone.ext4 | zstd -{level}"), c);
            let speed = theirs.median.wall / ours.median.wall;
            add(
                format!("save -{level} speed vs partclone.ext4|zstd ({c})"),
                speed,
                "≥ 2.0×",
                speed >= 2.0,
            );
        }
    }
    for level in [3, 1] {
        let size_ratio = m(&format!("rimage save -l{level}"), "warm")
            .output_bytes
            .unwrap() as f64
            / m(&format!("partclone.ext4 | zstd -{level}"), "warm")
                .output_bytes
                .unwrap() as f64;
        add(
            format!("image size -{level} vs partclone.ext4|zstd"),
            size_ratio,
            "≤ 1.01×",
            size_ratio <= 1.01,
        );
        let ceiling = m(&format!("rimage save -l{level}"), "warm").median.wall
            / m(&format!("zstd -T{cores} -{level} (ceiling)"), "warm")
                .median
                .wall;
        add(
            format!("save -{level} time vs compression ceiling (warm)"),
            ceiling,
            "≤ 1.15×",
            ceiling <= 1.15,
        );
    }
    let raw_speed =
        m("partclone.dd | zstd -3", cache).median.wall / m("rimage save --raw", cache).median.wall;
    add(
        format!("raw save speed vs partclone.dd|zstd ({cache})"),
        raw_speed,
        "≥ 4×",
        raw_speed >= 4.0,
    );
    let raw_ceiling = m("rimage save --raw", "warm").median.wall
        / m(&format!("zstd -T{cores} -3 (raw ceiling)"), "warm")
            .median
            .wall;
    add(
        "raw save time vs raw compression ceiling (warm)".into(),
        raw_ceiling,
        "-",
        true,
    );
    let raw_size = m("rimage save --raw", "warm").output_bytes.unwrap() as f64
        / m("partclone.dd | zstd -3", "warm").output_bytes.unwrap() as f64;
    add(
        "raw image size vs partclone.dd|zstd".into(),
        raw_size,
        "≤ 0.5×",
        raw_size <= 0.5,
    );
    let ext_vs_dd = m("rimage save -l3", "warm").output_bytes.unwrap() as f64
        / m("partclone.dd | zstd -3", "warm").output_bytes.unwrap() as f64;
    add(
        "(for reference) bitmap-mode image size vs partclone.dd|zstd".into(),
        ext_vs_dd,
        "-",
        true,
    );
    let restore = m("zstd -dc | partclone.restore", cache).median.wall
        / m("rimage restore", cache).median.wall;
    add(
        format!("restore speed vs zstd -dc|partclone.restore ({cache})"),
        restore,
        "≥ 2.5×",
        restore >= 2.5,
    );
    let import = m("zstd -dc | partclone.restore", cache).median.wall
        / m("rimage import + restore", cache).median.wall;
    add(
        format!("import + restore speed vs zstd -dc|partclone.restore of the same image ({cache})"),
        import,
        "-",
        true,
    );
    let verify =
        m("zstd -dc | partclone.chkimg", cache).median.wall / m("rimage verify", cache).median.wall;
    add(
        format!("verify speed vs zstd -dc|partclone.chkimg ({cache})"),
        verify,
        "≥ 5×",
        verify >= 5.0,
    );
    for what in ["save -l3", "restore", "verify"] {
        for c in ["cold", "warm"] {
            if let (Some(a), Some(b)) = (
                cx.get(&format!("A: {what}"), c),
                cx.get(&format!("B: {what}"), c),
            ) {
                let ratio = a.median.wall / b.median.wall;
                add(
                    format!("{what} time, this build vs baseline ({c})"),
                    ratio,
                    "≤ 1.10× (noise)",
                    ratio <= 1.10,
                );
            }
        }
    }
    for r in xfs_rows(cx) {
        add(r.what, r.value, &r.target, r.holds);
    }
    let (small, big) = (scaling[0], scaling[scaling.len() - 1]);
    add(
        format!(
            "save time, {} GiB fs vs {} GiB fs, same data",
            big.0, small.0
        ),
        big.1 / small.1,
        "≈ 1×",
        big.1 / small.1 <= 1.5,
    );
    add(
        format!("peak RSS saving the {} GiB fs (MiB)", big.0),
        big.2,
        "≤ 256",
        big.2 <= 256.0,
    );

    let machine = machine();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Machine: {machine}. Corpus: {:.2} GiB ext4, {:.2} GiB used, stale data in free space.",
        size as f64 / (1u64 << 30) as f64,
        used as f64 / (1u64 << 30) as f64
    );
    let _ = writeln!(
        md,
        "Medians of {} runs{}.\n",
        cx.reps,
        if cx.cold {
            ", cold cache (page cache dropped before each run) and warm"
        } else {
            ", warm cache"
        }
    );
    let _ = writeln!(md, "| ratio | value | target | holds |\n|---|---:|---|---|");
    for r in &ratios {
        let _ = writeln!(
            md,
            "| {} | {:.2} | {} | {} |",
            r.what.replace('|', "\\|"),
            r.value,
            r.target,
            if r.target == "-" {
                ""
            } else if r.holds {
                "yes"
            } else {
                "**no**"
            }
        );
    }
    let _ = writeln!(
        md,
        "\n| run | cache | wall s | cpu s | peak RSS MiB | output MB |\n|---|---|---:|---:|---:|---:|"
    );
    for ms in &cx.measures {
        let _ = writeln!(
            md,
            "| `{}` | {} | {:.2} | {:.2} | {:.0} | {} |",
            ms.name.replace('|', "\\|"),
            ms.cache,
            ms.median.wall,
            ms.median.user + ms.median.sys,
            ms.median.max_rss_mib,
            ms.output_bytes
                .map(|b| format!("{:.1}", b as f64 / 1e6))
                .unwrap_or_default()
        );
    }
    println!("\n{md}");
    let results = root.join("benches/results");
    std::fs::create_dir_all(&results).unwrap();
    std::fs::write(results.join("latest.md"), &md).unwrap();
    let json = serde_json::json!({ "machine": machine, "used_bytes": used, "fs_bytes": size, "reps": cx.reps, "ratios": ratios, "measures": cx.measures, "scaling": scaling });
    std::fs::write(
        results.join("results.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
    chart(&results.join("chart.svg"), cx);
    eprintln!(
        "wrote {}/{{latest.md,results.json,chart.svg}}",
        results.display()
    );
}

/// Bar chart: median wall time of each run, rimage and its counterpart side by side.
fn chart(path: &Path, cx: &Ctx) {
    use plotters::prelude::*;
    let cache = if cx.cold { "cold" } else { "warm" };
    let pairs: Vec<(&str, &str, &str)> = vec![
        ("save -3", "rimage save -l3", "partclone.ext4 | zstd -3"),
        ("save -1", "rimage save -l1", "partclone.ext4 | zstd -1"),
        ("raw save", "rimage save --raw", "partclone.dd | zstd -3"),
        ("restore", "rimage restore", "zstd -dc | partclone.restore"),
        ("verify", "rimage verify", "zstd -dc | partclone.chkimg"),
    ];
    let mut data: BTreeMap<usize, (f64, f64)> = BTreeMap::new();
    for (i, (_, ours, theirs)) in pairs.iter().enumerate() {
        let a = cx.get(ours, cache).map_or(0.0, |m| m.median.wall);
        let b = cx.get(theirs, cache).map_or(0.0, |m| m.median.wall);
        data.insert(i, (a, b));
    }
    let max = data.values().map(|(a, b)| a.max(*b)).fold(0.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("median wall time, {cache} cache (lower is better): rimage (blue) vs partclone + zstd (grey)"), ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..pairs.len() as f64, 0f64..max)
        .unwrap();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(pairs.len() * 2)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 && i < pairs.len() {
                pairs[i].0.to_string()
            } else {
                String::new()
            }
        })
        .y_desc("seconds")
        .draw()
        .unwrap();
    for (&i, &(a, b)) in &data {
        let x = i as f64;
        chart
            .draw_series([Rectangle::new(
                [(x + 0.12, 0.0), (x + 0.48, a)],
                BLUE.filled(),
            )])
            .unwrap();
        chart
            .draw_series([Rectangle::new(
                [(x + 0.52, 0.0), (x + 0.88, b)],
                RGBColor(150, 150, 150).filled(),
            )])
            .unwrap();
    }
    root.present().unwrap();
}

/// Starts nginx on a loopback port serving `root` (with its own configuration and temporary
/// paths under `dir`); returns the child and the port.
fn start_nginx(dir: &Path, root: &Path) -> Option<(std::process::Child, u16)> {
    if !have("nginx") {
        eprintln!("  nginx is missing (apt-get install nginx-light): no HTTP rows");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let d = dir.join("nginx");
    std::fs::create_dir_all(&d).unwrap();
    let conf = d.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log;\nevents {{ worker_connections 256; }}\n\
             http {{ access_log off; default_type application/octet-stream; sendfile on;\n\
             client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             keepalive_requests 100000;\n\
             server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n",
            d = d.display(),
            root = root.display()
        ),
    )
    .unwrap();
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(&d)
        .spawn()
        .ok()?;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((child, port));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    None
}

/// Restore over HTTP from nginx on loopback vs from the file (warm), and a delta restore over
/// HTTP after ~1% drift (every 100th chunk gets one changed block) vs a full one: time, and
/// image bytes read.
fn http_section(cx: &mut Ctx, dir: &Path, image: &str, target: &str, corpus_bytes: u64) {
    eprintln!("restore over HTTP (nginx on loopback) and delta restore after 1% drift:");
    let Some((mut nginx, port)) = start_nginx(dir, dir) else {
        return;
    };
    let name = Path::new(image)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let url = format!("http://127.0.0.1:{port}/{name}");
    let r = cx.rimage.display().to_string();
    let none: &dyn Fn() = &|| {};
    cx.measure(
        "rimage restore (file, for HTTP)",
        &format!("{r} restore -q --force {image} {target}"),
        false,
        None,
        none,
    );
    cx.measure(
        "rimage restore (HTTP)",
        &format!("{r} restore -q --force {url} {target}"),
        false,
        None,
        none,
    );
    // Drift: one block in every 100th chunk of the target (which holds the image now).
    let bytes = std::fs::read(image).unwrap();
    let img = rimage::image::ImageFile::parse(&bytes[..]).unwrap();
    let bs = u64::from(img.header.block_size);
    let drifted: Vec<u64> = img
        .index
        .iter()
        .step_by(100)
        .map(|e| e.first_block * bs)
        .collect();
    let chunks = img.index.len();
    drop(bytes);
    let t = PathBuf::from(target);
    let drift = move || {
        let f = std::fs::OpenOptions::new().write(true).open(&t).unwrap();
        let mut junk = vec![0u8; bs as usize];
        fastrand::Rng::with_seed(1).fill(&mut junk);
        for &at in &drifted {
            f.write_all_at(&junk, at).unwrap();
        }
        f.sync_all().unwrap();
    };
    let fetched = |args: &str| -> f64 {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{r} restore --force --json {args} {url} {target}"))
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["image_bytes_read"].as_f64().unwrap_or(f64::NAN)
    };
    cx.measure(
        "rimage restore --delta, 1% drift (HTTP)",
        &format!("{r} restore -q --force --delta {url} {target}"),
        false,
        None,
        &drift,
    );
    drift();
    let delta_bytes = fetched("--delta");
    let full_bytes = fetched("");
    eprintln!(
        "  image bytes read: full {full_bytes:.0}, delta {delta_bytes:.0} ({:.2}% of the full; {} of {chunks} chunks drifted; corpus {corpus_bytes} bytes)",
        100.0 * delta_bytes / full_bytes,
        chunks.div_ceil(100),
    );
    cx.figures.insert("http full bytes".into(), full_bytes);
    cx.figures.insert("http delta bytes".into(), delta_bytes);
    let _ = nginx.kill();
    let _ = nginx.wait();
}

/// The HTTP and delta rows, when they were measured.
fn http_ratios(cx: &Ctx) -> Vec<Ratio> {
    let mut out = Vec::new();
    let get = |n: &str| cx.get(n, "warm").map(|m| m.median.wall);
    if let (Some(file), Some(http)) = (
        get("rimage restore (file, for HTTP)"),
        get("rimage restore (HTTP)"),
    ) {
        out.push(Ratio {
            what: "restore time over HTTP (nginx, loopback) vs from the file (warm)".into(),
            value: http / file,
            target: "≈ 1× (loopback)".into(),
            holds: http / file <= 1.5,
        });
        if let Some(delta) = get("rimage restore --delta, 1% drift (HTTP)") {
            out.push(Ratio {
                what: "delta restore time after 1% drift vs full restore, over HTTP".into(),
                value: delta / http,
                target: "-".into(),
                holds: true,
            });
        }
    }
    if let (Some(d), Some(f)) = (
        cx.figures.get("http delta bytes"),
        cx.figures.get("http full bytes"),
    ) {
        out.push(Ratio {
            what: "image bytes fetched, delta after 1% drift vs full".into(),
            value: d / f,
            target: "≤ 0.05×".into(),
            holds: d / f <= 0.05,
        });
    }
    out
}
