//! The mistakes a tired admin makes: each is refused before anything is written, and the test
//! checks that nothing changed. Also: interrupted work cleans up and says what state it left,
//! errors are JSON when JSON was asked for, and a crashed node's filesystem saved with --force
//! replays to the same files as the source.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{LoopDev, build, case, have};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn rimage(args: &[&std::ffi::OsStr]) -> Output {
    common::rimage().args(args).output().unwrap()
}

/// A saved image of the small matrix filesystem, in a fresh directory.
fn saved() -> (common::TestFs, PathBuf) {
    let t = build(case("ext4_small_fresh"));
    let image = t.dir.path().join("a.rimg");
    common::save_with(&t.img, &image, &rimage::SaveOptions::default());
    (t, image)
}

fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

#[test]
fn an_image_restored_onto_itself_is_refused() {
    if !have("mke2fs") {
        eprintln!("SKIP: needs mke2fs");
        return;
    }
    let (t, image) = saved();
    let before = std::fs::read(&image).unwrap();
    let link = t.dir.path().join("link.rimg");
    std::os::unix::fs::symlink(&image, &link).unwrap();
    let hard = t.dir.path().join("hard.rimg");
    std::fs::hard_link(&image, &hard).unwrap();
    for target in [&image, &link, &hard] {
        let out = rimage(&[os("restore"), image.as_os_str(), target.as_os_str()]);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains("same file or device as the image"),
            "{}",
            text(&out)
        );
    }
    assert!(
        std::fs::read(&image).unwrap() == before,
        "the image changed"
    );
}

#[test]
fn a_source_saved_over_itself_is_refused_also_through_its_loop_device() {
    if !have("mke2fs") {
        eprintln!("SKIP: needs mke2fs");
        return;
    }
    let t = build(case("ext4_small_fresh"));
    let before = std::fs::read(&t.img).unwrap();
    let out = rimage(&[
        os("save"),
        os("--overwrite"),
        t.img.as_os_str(),
        t.img.as_os_str(),
    ]);
    assert!(
        !out.status.success() && text(&out).contains("same file or device"),
        "{}",
        text(&out)
    );
    if let Some(lo) = LoopDev::new(&t.img) {
        // Saving the loop device into the file behind it.
        let out = rimage(&[
            os("save"),
            os("--overwrite"),
            lo.dev.as_os_str(),
            t.img.as_os_str(),
        ]);
        assert!(
            !out.status.success() && text(&out).contains("same file or device"),
            "{}",
            text(&out)
        );
        // Restoring the file behind a loop device onto that loop device.
        let image = t.dir.path().join("a.rimg");
        common::save_with(&t.img, &image, &rimage::SaveOptions::default());
        let lo2 = LoopDev::new(&image).unwrap();
        let out = rimage(&[os("restore"), image.as_os_str(), lo2.dev.as_os_str()]);
        assert!(
            !out.status.success() && text(&out).contains("same file or device"),
            "{}",
            text(&out)
        );
    }
    assert!(
        std::fs::read(&t.img).unwrap() == before,
        "the source changed"
    );
}

#[test]
fn a_device_given_as_the_image_is_refused_as_swapped_arguments() {
    if !have("mke2fs") {
        eprintln!("SKIP: needs mke2fs");
        return;
    }
    let t = build(case("ext4_small_fresh"));
    let dir = t.dir.path().join("some-dir");
    std::fs::create_dir(&dir).unwrap();
    // A directory, a character device, a new name among /dev's device nodes (and, where loop
    // devices exist, a block device).
    let mut wrong: Vec<PathBuf> = vec![
        dir.clone(),
        PathBuf::from("/dev/null"),
        PathBuf::from("/dev/rimage-test-no-such-node"),
    ];
    let lo_file = t.dir.path().join("victim.img");
    common::pattern_file(&lo_file, 8 << 20);
    let victim = std::fs::read(&lo_file).unwrap();
    let lo = LoopDev::new(&lo_file);
    if let Some(lo) = &lo {
        wrong.push(lo.dev.clone());
    }
    for image in &wrong {
        for extra in [None, Some("--overwrite")] {
            let mut args = vec![os("save")];
            args.extend(extra.map(os));
            args.extend([t.img.as_os_str(), image.as_os_str()]);
            let out = rimage(&args);
            assert!(
                !out.status.success() && text(&out).contains("did you swap the arguments"),
                "save {}: {}",
                image.display(),
                text(&out)
            );
        }
        // restore DEVICE FILE: the image argument is the device.
        let target = t.dir.path().join("new-target.img");
        let out = rimage(&[os("restore"), image.as_os_str(), target.as_os_str()]);
        assert!(
            !out.status.success() && text(&out).contains("did you swap the arguments"),
            "restore {}: {}",
            image.display(),
            text(&out)
        );
        assert!(!target.exists(), "restore created its target");
    }
    if let Some(lo) = &lo {
        use std::os::unix::fs::FileTypeExt;
        let m = std::fs::metadata(&lo.dev).unwrap();
        assert!(
            m.file_type().is_block_device(),
            "the device node was replaced"
        );
    }
    drop(lo);
    assert!(
        std::fs::read(&lo_file).unwrap() == victim,
        "the device was written"
    );
    assert!(
        std::fs::read_dir(&dir).unwrap().next().is_none(),
        "something was written into the directory"
    );
}

/// A disk image file with a GPT of three partitions.
fn gpt_disk(dir: &Path) -> PathBuf {
    let disk = dir.join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(96 << 20)
        .unwrap();
    let mut sfdisk = Command::new("sfdisk")
        .arg("-q")
        .arg(&disk)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: gpt\n,20M,L\n,20M,L\n,,L\n")
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    disk
}

#[test]
fn restoring_over_a_partition_table_or_another_filesystem_needs_force() {
    if !have("mke2fs") || !have("sfdisk") {
        eprintln!("SKIP: needs mke2fs and sfdisk");
        return;
    }
    let (t, image) = saved();
    // A whole disk holding a GPT, as a file and (where possible) as a loop device.
    let disk = gpt_disk(t.dir.path());
    let before = std::fs::read(&disk).unwrap();
    let lo = LoopDev::new(&disk);
    let mut targets = vec![disk.clone()];
    if let Some(lo) = &lo {
        targets.push(lo.dev.clone());
    }
    for target in &targets {
        let out = rimage(&[os("restore"), image.as_os_str(), target.as_os_str()]);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains("holds a GPT with 3 partitions")
                && text(&out).contains("--force")
                && text(&out).contains("Nothing was written"),
            "{}",
            text(&out)
        );
    }
    drop(lo);
    assert!(
        std::fs::read(&disk).unwrap() == before,
        "the disk was written"
    );

    // Another ext4 (another UUID): refused; with --force restored.
    let other = t.dir.path().join("other.img");
    std::fs::File::create(&other)
        .unwrap()
        .set_len(std::fs::metadata(&t.img).unwrap().len())
        .unwrap();
    common::run(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-L", "other"])
            .arg(&other),
    );
    let out = rimage(&[os("restore"), image.as_os_str(), other.as_os_str()]);
    assert!(
        !out.status.success() && text(&out).contains("holds ext4 \"other\""),
        "{}",
        text(&out)
    );
    let out = rimage(&[
        os("restore"),
        os("--force"),
        image.as_os_str(),
        other.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    common::assert_fsck_clean(&other);

    // A blank (pattern-filled) target and one holding the image's own filesystem need nothing.
    let blank = t.dir.path().join("blank.img");
    common::pattern_file(&blank, std::fs::metadata(&t.img).unwrap().len());
    for target in [&blank, &blank] {
        let out = rimage(&[os("restore"), image.as_os_str(), target.as_os_str()]);
        assert!(out.status.success(), "{}", text(&out));
    }
    // Another image as the target (swapped arguments) is refused too.
    let second = t.dir.path().join("b.rimg");
    std::fs::copy(&image, &second).unwrap();
    let out = rimage(&[os("restore"), image.as_os_str(), second.as_os_str()]);
    assert!(
        !out.status.success() && text(&out).contains("is a rimage image"),
        "{}",
        text(&out)
    );
}

#[test]
fn binary_is_not_written_to_or_read_from_a_terminal() {
    if !have("script") || !have("mke2fs") {
        eprintln!("SKIP: needs script (util-linux) and mke2fs");
        return;
    }
    let (t, image) = saved();
    // `script` runs the command on a pseudo-terminal: stdin and stdout are terminals.
    let run = |cmd: String| {
        let out = Command::new("script")
            .args(["-q", "-e", "-c", &cmd, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let bin = env!("CARGO_BIN_EXE_rimage");
    let (code, out) = run(format!("{bin} save {} -", t.img.display()));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("standard output is a terminal"), "{out}");
    assert!(
        out.len() < 2000,
        "binary reached the terminal: {} bytes",
        out.len()
    );
    let target = t.dir.path().join("t.img");
    let (code, out) = run(format!("timeout 20 {bin} restore - {}", target.display()));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("standard input is a terminal"), "{out}");
    assert!(!target.exists());
    let _ = image;
}

#[test]
fn saving_into_a_missing_directory_names_it() {
    if !have("mke2fs") {
        eprintln!("SKIP: needs mke2fs");
        return;
    }
    let t = build(case("ext4_small_fresh"));
    let image = t.dir.path().join("no/such/dir/a.rimg");
    let out = rimage(&[os("save"), t.img.as_os_str(), image.as_os_str()]);
    assert!(
        !out.status.success()
            && text(&out).contains(&format!(
                "directory {} does not exist",
                t.dir.path().join("no/such/dir").display()
            )),
        "{}",
        text(&out)
    );
}

#[test]
fn json_errors_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.img");
    let out = rimage(&[
        os("save"),
        os("--json"),
        missing.as_os_str(),
        dir.path().join("x.rimg").as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let v: serde_json::Value = serde_json::from_str(err.trim()).expect("a JSON object");
    assert_eq!(v["error"]["kind"], "io");
    assert_eq!(v["error"]["exit_status"], 1);
    assert_eq!(v["error"]["path"], missing.display().to_string());
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("No such file"),
        "{v}"
    );
    // A corrupt image: exit status 3 in the object too.
    let bad = dir.path().join("bad.rimg");
    let mut bytes = vec![0u8; 4096];
    bytes[..8].copy_from_slice(b"\x89RIMG\r\n\x1a");
    std::fs::write(&bad, bytes).unwrap();
    let out = rimage(&[
        os("restore"),
        os("--json"),
        bad.as_os_str(),
        dir.path().join("t.img").as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stderr).trim()).unwrap();
    assert_eq!(v["error"]["kind"], "image");
    assert_eq!(v["error"]["exit_status"], 3);
}

#[test]
fn every_subcommand_has_a_manual_page() {
    let out = rimage(&[os("man"), os("restore-disk")]);
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains(".TH rimage-restore-disk"), "{page}");
    assert!(page.contains("\\-\\-post\\-restore"), "{page}");
    let dir = tempfile::tempdir().unwrap();
    let out = rimage(&[os("man"), os("--out-dir"), dir.path().as_os_str()]);
    assert!(out.status.success(), "{}", text(&out));
    let main = std::fs::read_to_string(dir.path().join("rimage.1")).unwrap();
    // Every page the main page refers to exists.
    for sub in [
        "save",
        "restore",
        "verify",
        "info",
        "ls",
        "cat",
        "extract",
        "save-disk",
        "restore-disk",
    ] {
        assert!(main.contains(&format!("rimage\\-{}(1)", sub.replace('-', "\\-"))));
        assert!(
            dir.path().join(format!("rimage-{sub}.1")).exists(),
            "no page for {sub}"
        );
    }
    let out = rimage(&[os("man"), os("nonsense")]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn counts_of_one_are_singular() {
    if !have("mke2fs") {
        eprintln!("SKIP: needs mke2fs");
        return;
    }
    // A tiny filesystem fits in one chunk.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("tiny.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    common::run(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext2"])
            .arg(&img),
    );
    let image = dir.path().join("tiny.rimg");
    let out = rimage(&[os("save"), img.as_os_str(), image.as_os_str()]);
    let t = text(&out);
    assert!(out.status.success() && t.contains(" in 1 chunk "), "{t}");
    let out = rimage(&[os("verify"), image.as_os_str()]);
    assert!(text(&out).contains("(1 chunk,"), "{}", text(&out));
    let out = rimage(&[os("info"), image.as_os_str()]);
    assert!(
        text(&out).contains(" in 1 chunk of up to"),
        "{}",
        text(&out)
    );
}

#[test]
fn info_names_the_image_format_version() {
    // The fuzz seeds hold an image of each version.
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/image");
    for (seed, version) in [("ext", 2), ("ext-v1", 1)] {
        let out = rimage(&[os("info"), seeds.join(seed).as_os_str()]);
        let t = text(&out);
        assert!(
            out.status.success() && t.contains(&format!("format version {version},")),
            "{seed}: {t}"
        );
    }
}

/// Starts `rimage args`, waits until `ready` holds (or a timeout), sends `signal`, and returns
/// its output.
fn interrupt(args: &[&std::ffi::OsStr], ready: impl Fn() -> bool, signal: i32) -> Output {
    let mut child = common::rimage()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < until, "the command never got going");
        assert!(child.try_wait().unwrap().is_none(), "it ended too early");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    let sig = rustix::process::Signal::from_named_raw(signal).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
    child.wait_with_output().unwrap()
}

fn partials(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("rimage-partial"))
        .collect()
}

#[test]
fn an_interrupted_save_leaves_nothing_and_an_interrupted_restore_says_so() {
    let dir = tempfile::tempdir().unwrap();
    // 256 MiB of random data at a slow level: long enough to be interrupted half-way.
    let src = dir.path().join("random.img");
    let mut data = vec![0u8; 256 << 20];
    fastrand::Rng::with_seed(7).fill(&mut data);
    std::fs::write(&src, &data).unwrap();
    drop(data);
    let image = dir.path().join("r.rimg");
    for (signal, status) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let out = interrupt(
            &[
                os("save"),
                os("-l"),
                os("19"),
                os("-j"),
                os("1"),
                src.as_os_str(),
                image.as_os_str(),
            ],
            || !partials(dir.path()).is_empty(),
            signal,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(status), "{err}");
        assert!(err.contains("interrupted by SIG"), "{err}");
        assert!(
            partials(dir.path()).is_empty(),
            "a temporary file was left: {:?}",
            partials(dir.path())
        );
        assert!(!image.exists());
    }
    // A restore: a quick image of the same data, then a restore stopped half-way.
    common::save_with(
        &src,
        &image,
        &rimage::SaveOptions {
            level: 1,
            chunk_size: 1 << 20,
            ..rimage::SaveOptions::default()
        },
    );
    let target = dir.path().join("target.img");
    let out = interrupt(
        &[
            os("restore"),
            os("-j"),
            os("1"),
            image.as_os_str(),
            target.as_os_str(),
        ],
        || std::fs::metadata(&target).is_ok_and(|m| m.len() > 0),
        libc::SIGTERM,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        eprintln!("note: the restore finished before the signal arrived: {err}");
        return;
    }
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(
        err.contains("holds part of the image") && err.contains("interrupted by SIGTERM"),
        "{err}"
    );
}

/// A filesystem copied while mounted, after writes that are committed to its journal but not
/// yet to their home blocks: what a node that crashed leaves.
fn crashed_copy(dir: &Path) -> Option<PathBuf> {
    let src = dir.join("live.img");
    std::fs::File::create(&src)
        .unwrap()
        .set_len(128 << 20)
        .unwrap();
    common::run(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-J", "size=16"])
            .arg(&src),
    );
    let m = common::Mounted::new(&src, false)?;
    // Many small files: allocations land in several bitmaps, and inodes in the journal.
    for d in 0..8 {
        let sub = m.path().join(format!("d{d}"));
        std::fs::create_dir(&sub).unwrap();
        for f in 0..40 {
            let mut data = vec![0u8; 3000 + 997 * f];
            fastrand::Rng::with_seed(d * 100 + f as u64).fill(&mut data);
            let path = sub.join(format!("f{f}"));
            std::fs::write(&path, &data).unwrap();
            // fsync commits the transaction to the journal after writing the data, but leaves
            // the metadata's home blocks (bitmaps, inodes, directories) dirty in memory until
            // writeback, some 30 seconds later. (sync(2) would write them home.)
            std::fs::File::open(&path).unwrap().sync_all().unwrap();
        }
        std::fs::File::open(&sub).unwrap().sync_all().unwrap();
    }
    let copy = dir.join("crashed.img");
    common::run(
        Command::new("cp")
            .arg("--sparse=always")
            .arg(&src)
            .arg(&copy),
    );
    drop(m);
    Some(copy)
}

#[test]
fn a_crashed_filesystem_saved_with_force_replays_to_the_same_files() {
    if !have("e2fsck") || !have("debugfs") {
        eprintln!("SKIP: needs e2fsck and debugfs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(crashed) = crashed_copy(dir.path()) else {
        eprintln!("SKIP: needs loop mounts");
        return;
    };
    let info = rimage::inspect_source(&crashed).unwrap();
    if !info.fs.state.needs_recovery {
        eprintln!("note: the kernel checkpointed before the copy; nothing to replay");
        return;
    }
    // What the source repairs to.
    let repaired = dir.path().join("repaired.img");
    std::fs::copy(&crashed, &repaired).unwrap();
    let _ = Command::new("e2fsck").arg("-fy").arg(&repaired).output();
    let want = common::tree::snapshot(&repaired).unwrap().1;
    assert!(want.len() > 300, "the repaired source lost its files");

    // Without --force: refused (the journal needs recovery; a copy taken while the kernel
    // writes metadata back may also fail a checksum), pointing at --force.
    let image = dir.path().join("crashed.rimg");
    let out = rimage(&[os("save"), crashed.as_os_str(), image.as_os_str()]);
    assert!(
        !out.status.success() && text(&out).contains("--force"),
        "{}",
        text(&out)
    );
    let out = rimage(&[
        os("save"),
        os("--force"),
        crashed.as_os_str(),
        image.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("the journal needs recovery") && text(&out).contains("pending"),
        "the summary does not say the journal was read: {}",
        text(&out)
    );
    let target = dir.path().join("target.img");
    common::pattern_file(&target, std::fs::metadata(&crashed).unwrap().len());
    let out = rimage(&[
        os("restore"),
        os("--force"),
        image.as_os_str(),
        target.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let _ = Command::new("e2fsck").arg("-fy").arg(&target).output();
    common::assert_fsck_clean(&target);
    let got = common::tree::snapshot(&target).unwrap().1;
    assert_eq!(
        got.len(),
        want.len(),
        "the restored copy repairs to another set of files"
    );
    assert!(got == want, "the restored copy repairs to other contents");
}

#[test]
fn an_image_stream_whose_reader_goes_away_is_a_failure() {
    if !have("mke2fs") {
        eprintln!("SKIP: needs mke2fs");
        return;
    }
    let t = build(case("ext4_small_1k"));
    // The reader takes 100 bytes and leaves: the image did not arrive, so this is no success.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{} save {} - | head -c 100 > /dev/null; echo \"status=${{PIPESTATUS[0]}}\"",
            env!("CARGO_BIN_EXE_rimage"),
            t.img.display()
        ))
        .output()
        .unwrap();
    let all = text(&out);
    assert!(all.contains("status=1"), "{all}");
    assert!(
        all.contains("<stdout>") && all.contains("Broken pipe"),
        "{all}"
    );
}
