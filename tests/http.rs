//! Images over HTTP from a real nginx on a loopback port, through a fault-injecting proxy:
//! cut connections, stalls, 503s, a restarted server, an image replaced mid-restore, a server
//! without range support; and delta restore and the drift check. Every restore that succeeds
//! gives a target byte-identical to a restore from the file.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::http::{Nginx, Proxy};
use common::{build, case, have};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A served directory with one image of a dirty 64 MiB ext4 in small chunks, and a reference
/// restore of it from the file onto a pattern-filled target.
struct Served {
    t: common::TestFs,
    root: PathBuf,
    reference: PathBuf,
}

fn served() -> Option<Served> {
    if !have("mke2fs") || !have("nginx") {
        eprintln!("SKIP: needs mke2fs and nginx");
        return None;
    }
    let t = build(case("ext4_small_1k"));
    let root = t.dir.path().join("www");
    std::fs::create_dir(&root).unwrap();
    common::save_with(
        &t.img,
        &root.join("root.rimg"),
        &rimage::SaveOptions {
            chunk_size: 256 << 10,
            ..rimage::SaveOptions::default()
        },
    );
    let reference = t.dir.path().join("reference.img");
    restore_onto(root.join("root.rimg").to_str().unwrap(), &reference, &[])
        .unwrap_or_else(|o| panic!("reference restore: {}", text(&o)));
    Some(Served { t, root, reference })
}

/// Restores `image` (a path or URL) onto a fresh pattern-filled `target`.
fn restore_onto(image: &str, target: &Path, extra: &[&str]) -> Result<Output, Output> {
    common::pattern_file(target, 64 << 20);
    let out = common::rimage()
        .args(["restore", "--force", "--timeout", "2"])
        .args(extra)
        .arg(image)
        .arg(target)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(out)
    } else {
        Err(out)
    }
}

fn assert_same(a: &Path, b: &Path, what: &str) {
    assert!(
        std::fs::read(a).unwrap() == std::fs::read(b).unwrap(),
        "{what}: the target differs from a restore from the file"
    );
}

#[test]
fn restores_verify_info_and_browsing_over_http() {
    let Some(s) = served() else { return };
    let nginx = Nginx::start(&s.root, true).unwrap();
    let url = nginx.url("root.rimg");
    let target = s.t.dir.path().join("t.img");
    let out = restore_onto(&url, &target, &[]).unwrap_or_else(|o| panic!("{}", text(&o)));
    assert!(text(&out).contains("restored"), "{}", text(&out));
    assert_same(&target, &s.reference, "plain");
    common::assert_fsck_clean(&target);
    for args in [
        vec!["verify".to_string(), url.clone()],
        vec!["info".to_string(), url.clone()],
        vec!["ls".to_string(), url.clone(), "/".to_string()],
    ] {
        let out = common::rimage().args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }
    let listed = common::rimage().args(["ls", &url, "/"]).output().unwrap();
    let local = common::rimage()
        .arg("ls")
        .arg(s.root.join("root.rimg"))
        .arg("/")
        .output()
        .unwrap();
    assert_eq!(listed.stdout, local.stdout);
    // A missing image names the URL and the status.
    let out = common::rimage()
        .args(["info", &nginx.url("nope.rimg")])
        .output()
        .unwrap();
    assert!(
        !out.status.success() && text(&out).contains("nope.rimg") && text(&out).contains("404"),
        "{}",
        text(&out)
    );
}

#[test]
fn faults_are_retried_and_transfers_resumed() {
    let Some(s) = served() else { return };
    let mut nginx = Nginx::start(&s.root, true).unwrap();
    let proxy = Proxy::start(nginx.port);
    let url = proxy.url("root.rimg");
    let target = s.t.dir.path().join("t.img");

    // Every connection cut after 300 KB.
    proxy.set(|f| f.cut_every = Some(300 << 10));
    let out = restore_onto(&url, &target, &[]).unwrap_or_else(|o| panic!("cuts: {}", text(&o)));
    assert_same(&target, &s.reference, "connections cut");
    let _ = out;
    proxy.set(|f| f.cut_every = None);

    // A stall longer than the timeout (2 s), once.
    let at = proxy.bytes.load(Ordering::Relaxed) + (1 << 20);
    proxy.set(|f| f.stall = Some((at, Duration::from_secs(5))));
    restore_onto(&url, &target, &[]).unwrap_or_else(|o| panic!("stall: {}", text(&o)));
    assert_same(&target, &s.reference, "stall");

    // Three 503 answers.
    proxy.set(|f| f.fail_503 = 3);
    restore_onto(&url, &target, &[]).unwrap_or_else(|o| panic!("503: {}", text(&o)));
    assert_same(&target, &s.reference, "503");

    // The server restarted mid-restore.
    let at = proxy.bytes.load(Ordering::Relaxed) + (2 << 20);
    let port = nginx.port;
    let restarted = std::sync::Arc::new(std::sync::Mutex::new(false));
    {
        let flag = std::sync::Arc::clone(&restarted);
        proxy.set(move |f| {
            f.hook = Some((
                at,
                Box::new(move || {
                    *flag.lock().unwrap() = true;
                }),
            ))
        });
    }
    // The hook only marks the moment; the restart happens from this thread.
    let handle = {
        let url = url.clone();
        let target = target.clone();
        std::thread::spawn(move || restore_onto(&url, &target, &["--retries", "8"]))
    };
    while !*restarted.lock().unwrap() && !handle.is_finished() {
        std::thread::sleep(Duration::from_millis(5));
    }
    nginx.restart();
    assert_eq!(nginx.port, port);
    handle
        .join()
        .unwrap()
        .unwrap_or_else(|o| panic!("restart: {}", text(&o)));
    assert_same(&target, &s.reference, "server restarted");

    // Give up after the retries, naming the URL, the offset and the chunk.
    proxy.set(|f| f.fail_503 = 1000);
    let out = restore_onto(&url, &target, &["--retries", "1"]).expect_err("503 forever");
    let t = text(&out);
    assert!(
        t.contains("root.rimg") && t.contains("byte offset") && t.contains("503"),
        "{t}"
    );
}

#[test]
fn an_image_replaced_mid_restore_stops_the_restore() {
    let Some(s) = served() else { return };
    // Image B: another filesystem of the same size, in place of A half-way.
    let other = build(case("ext4_small_fresh"));
    let b = s.root.join("b.rimg");
    common::save_with(
        &other.img,
        &b,
        &rimage::SaveOptions {
            chunk_size: 256 << 10,
            ..rimage::SaveOptions::default()
        },
    );
    let nginx = Nginx::start(&s.root, true).unwrap();
    let proxy = Proxy::start(nginx.port);
    let url = proxy.url("root.rimg");
    let (a_path, b_path) = (s.root.join("root.rimg"), b.clone());
    let at = 2 << 20;
    proxy.set(move |f| {
        f.hook = Some((
            at,
            Box::new(move || {
                std::fs::rename(&b_path, &a_path).unwrap();
            }),
        ))
    });
    let target = s.t.dir.path().join("t.img");
    let out = restore_onto(&url, &target, &["-j", "1"]).expect_err("the restore went on");
    let t = text(&out);
    assert!(
        t.contains("changed") && t.contains("never given chunks of two images"),
        "{t}"
    );
    assert!(t.contains("holds part of the image"), "{t}");
    // Every block it wrote is image A's: where the target differs from the pattern, it
    // equals the reference restore of A.
    let mut pattern = s.t.dir.path().join("pattern.img");
    common::pattern_file(&pattern, 64 << 20);
    let (got, want, pat) = (
        std::fs::read(&target).unwrap(),
        std::fs::read(&s.reference).unwrap(),
        std::fs::read(&pattern).unwrap(),
    );
    let mut written = 0;
    for (i, ((g, w), p)) in got
        .chunks(1024)
        .zip(want.chunks(1024))
        .zip(pat.chunks(1024))
        .enumerate()
    {
        if g != p {
            written += 1;
            assert_eq!(g, w, "block {i} holds something image A does not");
        }
    }
    assert!(written > 0, "nothing was written before the image changed");
    pattern.pop();
}

#[test]
fn a_server_without_ranges_is_read_as_a_stream() {
    let Some(s) = served() else { return };
    let nginx = Nginx::start(&s.root, false).unwrap();
    let url = nginx.url("root.rimg");
    let target = s.t.dir.path().join("t.img");
    restore_onto(&url, &target, &[]).unwrap_or_else(|o| panic!("{}", text(&o)));
    assert_same(&target, &s.reference, "no ranges");
    let out = common::rimage().args(["verify", &url]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = common::rimage().args(["ls", &url, "/"]).output().unwrap();
    assert!(
        !out.status.success() && text(&out).contains("random"),
        "{}",
        text(&out)
    );
}

/// Chunks of `image` the target does not hold, and their records' bytes.
fn changed_chunks(image: &Path, target: &Path) -> (usize, u64) {
    let bytes = std::fs::read(image).unwrap();
    let img = rimage::image::ImageFile::parse(&bytes[..]).unwrap();
    let dev = rimage::source::Device::open(target).unwrap();
    let mut n = 0;
    let mut stored = 0;
    for i in 0..img.index.len() {
        let rec = img.record(i).unwrap();
        let c = rec.check_extents(&img.header).unwrap();
        let content = img.index[i].content_hash.unwrap();
        if !rimage::compare::holds(&dev, &img.header, &c.extents, content).unwrap() {
            n += 1;
            stored += rec.bytes().len() as u64;
        }
    }
    (n, stored)
}

#[test]
fn delta_restore_over_http_fetches_what_changed_and_the_drift_check_sees_it() {
    let Some(s) = served() else { return };
    if !common::can_mount() {
        eprintln!("SKIP: needs loop mounts");
        return;
    }
    let nginx = Nginx::start(&s.root, true).unwrap();
    let proxy = Proxy::start(nginx.port);
    let url = proxy.url("root.rimg");
    let image = s.root.join("root.rimg");
    let target = s.t.dir.path().join("node.img");
    restore_onto(&url, &target, &[]).unwrap_or_else(|o| panic!("{}", text(&o)));
    let drift = |what: &str| {
        let out = common::rimage()
            .args(["verify", &url, "--against"])
            .arg(&target)
            .output()
            .unwrap();
        (out.status.code(), format!("{what}: {}", text(&out)))
    };
    let (code, t) = drift("fresh");
    assert_eq!(code, Some(0), "{t}");

    // The node drifts: a few files change, one is deleted, one is added.
    {
        let m = common::Mounted::new(&target, false).unwrap();
        let files = common::tree::files_under(m.path());
        std::fs::write(&files[1], b"changed on the node\n").unwrap();
        std::fs::write(m.path().join("added-on-node"), vec![7u8; 50_000]).unwrap();
        std::fs::remove_file(&files[3]).unwrap();
    }
    let (code, t) = drift("drifted");
    assert_eq!(code, Some(4), "{t}");
    assert!(t.contains("differs from") && t.contains("in:"), "{t}");
    let (changed, changed_bytes) = changed_chunks(&image, &target);
    assert!(changed > 0);

    // A full restore of the same drifted state, for reference.
    let full = s.t.dir.path().join("full.img");
    std::fs::copy(&target, &full).unwrap();
    let out = common::rimage()
        .args(["restore", "--force"])
        .arg(&image)
        .arg(&full)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let before = proxy.bytes.load(Ordering::Relaxed);
    let out = common::rimage()
        .args(["restore", "--delta", "--force", "--json", &url])
        .arg(&target)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let fetched = proxy.bytes.load(Ordering::Relaxed) - before;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["chunks_written"].as_u64(),
        Some(changed as u64),
        "{report}"
    );
    let total = std::fs::metadata(&image).unwrap().len();
    assert!(
        fetched <= 2 * changed_bytes + 64 * 1024,
        "fetched {fetched} bytes for {changed} changed chunks of {changed_bytes} bytes (image {total})"
    );
    assert!(
        std::fs::read(&target).unwrap() == std::fs::read(&full).unwrap(),
        "the delta restore differs from a full restore"
    );
    common::assert_fsck_clean(&target);
    let (code, t) = drift("after the delta restore");
    assert_eq!(code, Some(0), "{t}");

    // A version 1 image (no content hashes) falls back to decompress and compare: the same
    // result, nothing written.
    let v1 = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/image/ext-v1");
    let small = s.t.dir.path().join("small.img");
    let out = common::rimage()
        .arg("restore")
        .arg(&v1)
        .arg(&small)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = common::rimage()
        .args(["restore", "--delta", "--force", "--json"])
        .arg(&v1)
        .arg(&small)
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["chunks_written"].as_u64(), Some(0), "{r}");
    assert!(r["chunks_skipped"].as_u64().unwrap() > 0, "{r}");
    let _ = Command::new("true").status();
}
