//! The node workflow end to end on loop devices: a disk with /boot, /, swap and a data
//! partition is saved with save-disk and restored with restore-disk onto a second,
//! pattern-filled disk; the table, every identity, every file, swap, the re-created data
//! partition and the post-restore command are checked. GPT (ext2 /boot) and MBR (vfat /boot).

mod common;

use std::path::Path;
use std::process::Command;

use common::disk::*;
use common::{LoopDev, have, run};

fn workflow(label: &str, vfat_boot: bool) {
    if let Some(why) = tools_missing() {
        eprintln!("SKIP disk workflow ({label}): {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_img, a) = make_source_disk(dir.path(), label, vfat_boot);
    let saved = dir.path().join("saved");
    let out = common::rimage()
        .args(["save-disk", "-q", "--reformat", "4"])
        .arg(&a.dev)
        .arg(&saved)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "save-disk: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = std::fs::read_to_string(saved.join("manifest.toml")).unwrap();
    assert!(
        manifest.contains("action = \"swap\"") && manifest.contains("action = \"reformat\""),
        "{manifest}"
    );
    assert!(
        !saved.join("part3.rimg").exists() && !saved.join("part4.rimg").exists(),
        "swap or data partition was imaged"
    );

    if vfat_boot {
        assert!(manifest.contains("kind = \"vfat\""), "{manifest}");
        let info = run(common::rimage()
            .args(["info", "--json"])
            .arg(saved.join("part1.rimg")));
        assert!(info.contains("\"source_type\": \"vfat\""), "{info}");
        let boot_files = common::run(
            Command::new("mdir")
                .arg("-/")
                .arg("-b")
                .arg("-i")
                .arg(a.part(1))
                .arg("::"),
        );
        assert!(boot_files.contains("grub.cfg"), "{boot_files}");
    }
    let target = dir.path().join("target-disk.img");
    common::pattern_file(&target, 300 << 20);
    let b = LoopDev::new(&target).expect("loop device");
    // /boot is mounted for the command when the root's fstab names it (and the kernel can).
    let boot_mounted = !vfat_boot || kernel_has_vfat();
    if !boot_mounted {
        eprintln!(
            "note: this kernel has no vfat: /boot is left out of fstab and not mounted for the post-restore command"
        );
    }
    let post = r#"touch "$RIMAGE_ROOT/post-restore-ran" && test "$RIMAGE_PART_2" = "$RIMAGE_ROOT_DEVICE" && if [ -f "$RIMAGE_ROOT/boot/grub/grub.cfg" ]; then touch "$RIMAGE_ROOT/boot-was-mounted"; fi"#;
    let out = common::rimage()
        .args(["restore-disk", "--post-restore", post])
        .arg(&saved)
        .arg(&b.dev)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "restore-disk: {text}");

    // The table, and every identity blkid sees (TYPE, UUID, LABEL, PARTUUID, ...).
    assert_eq!(
        table_dump(&a.dev),
        table_dump(&b.dev),
        "partition tables differ"
    );
    for n in 1..=4 {
        assert_eq!(
            blkid(&a.part(n)),
            blkid(&b.part(n)),
            "partition {n}: blkid differs"
        );
    }
    assert_eq!(
        blkid(&b.part(3)).get("TYPE").map(String::as_str),
        Some("swap")
    );
    assert_eq!(
        blkid(&b.part(3)).get("UUID").map(String::as_str),
        Some(SWAP_UUID)
    );

    // /boot
    if vfat_boot {
        run(Command::new("fsck.vfat").arg("-n").arg(b.part(1)));
        // Imaged as FAT (used clusters only): every file identical, read with mtools.
        let files = |part: &Path| {
            let out = tempfile::tempdir().unwrap();
            run(Command::new("mcopy")
                .args(["-s", "-n", "-m", "-Q", "-i"])
                .arg(part)
                .arg("::*")
                .arg(out.path()));
            common::tree::snapshot_dir(out.path())
        };
        let (x, y) = (files(&a.part(1)), files(&b.part(1)));
        assert!(
            x.contains_key("/grub/grub.cfg") && x == y,
            "the vfat /boot files differ"
        );
    } else {
        common::assert_fsck_clean(&b.part(1));
        let (_, x) = common::tree::snapshot(&a.part(1)).unwrap();
        let (_, y) = common::tree::snapshot(&b.part(1)).unwrap();
        assert!(
            x.contains_key("/grub/grub.cfg") && x == y,
            "the /boot files differ"
        );
    }
    // /: every file identical, plus what the post-restore command left.
    common::assert_fsck_clean(&b.part(2));
    let before = ext4_view::Ext4::load_from_path(a.part(2)).unwrap();
    let after = ext4_view::Ext4::load_from_path(b.part(2)).unwrap();
    let mut restored = common::tree::snapshot_ext4(&after).unwrap();
    assert!(
        restored.remove("/post-restore-ran").is_some(),
        "the post-restore command did not run in the root"
    );
    assert_eq!(
        restored.remove("/boot-was-mounted").is_some(),
        boot_mounted,
        "/boot mounted for the post-restore command: {text}"
    );
    assert_eq!(
        common::tree::snapshot_ext4(&before).unwrap(),
        restored,
        "the root filesystem's files differ"
    );
    // data: empty, old UUID and label.
    common::assert_fsck_clean(&b.part(4));
    let data = ext4_view::Ext4::load_from_path(b.part(4)).unwrap();
    let names: Vec<String> = data
        .read_dir("/")
        .unwrap()
        .map(|e| e.unwrap().file_name().display().to_string())
        .collect();
    assert_eq!(
        names
            .iter()
            .filter(|n| !n.starts_with('.'))
            .collect::<Vec<_>>(),
        ["lost+found"],
        "the data partition is not empty"
    );

    // A second restore keeps the identical table.
    drop(a);
    let out = common::rimage()
        .args(["restore-disk"])
        .arg(&saved)
        .arg(&b.dev)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("kept the identical partition table"),
        "{text}"
    );
}

#[test]
fn gpt_disk_with_ext2_boot() {
    workflow("gpt", false);
}

#[test]
fn mbr_disk_with_vfat_boot() {
    workflow("dos", true);
}

#[test]
fn a_disk_too_small_is_refused_before_any_write() {
    if let Some(why) = tools_missing() {
        eprintln!("SKIP: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_img, a) = make_source_disk(dir.path(), "gpt", false);
    let saved = dir.path().join("saved");
    let out = common::rimage()
        .args(["save-disk", "-q"])
        .arg(&a.dev)
        .arg(&saved)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let small = dir.path().join("small.img");
    common::pattern_file(&small, 200 << 20);
    let before = std::fs::read(&small).unwrap();
    {
        let c = LoopDev::new(&small).unwrap();
        let out = common::rimage()
            .args(["restore-disk"])
            .arg(&saved)
            .arg(&c.dev)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("nothing was written"),
            "{err}"
        );
    }
    assert!(
        std::fs::read(&small).unwrap() == before,
        "the small disk was written to"
    );
}

/// Tables read from sfdisk-made disks (GPT; MBR with an extended partition and logical ones)
/// and written onto a blank disk read back the same, and sfdisk sees the same table.
#[test]
fn tables_written_read_back_identically() {
    use rimage::disk::table::{read_table, write_table};
    let have_sfdisk = have("sfdisk");
    for name in ["gpt", "dos"] {
        let seed = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus/table")
            .join(name);
        let bytes = std::fs::read(&seed).unwrap();
        let mut src = std::io::Cursor::new(bytes.clone());
        let table = read_table(&mut src, bytes.len() as u64)
            .unwrap()
            .expect("a table");
        assert!(table.partitions.len() >= 2, "{table:?}");
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join(name);
        std::fs::write(&copy, vec![0u8; bytes.len()]).unwrap();
        let mut f = common::open_rw(&copy);
        let mut code = [0u8; 440];
        code.copy_from_slice(&bytes[..440]);
        write_table(&mut f, &table, bytes.len() as u64, &code).unwrap();
        drop(f);
        let again = read_table(
            &mut std::io::Cursor::new(std::fs::read(&copy).unwrap()),
            bytes.len() as u64,
        )
        .unwrap()
        .unwrap();
        assert_eq!(again, table, "{name}: the table read back differs");
        if have_sfdisk {
            let dump = |p: &Path| {
                run(Command::new("sfdisk").arg("-d").arg(p))
                    .replace(&p.display().to_string(), "DISK")
            };
            assert_eq!(
                dump(&seed),
                dump(&copy),
                "{name}: sfdisk sees another table"
            );
        }
    }
}

fn save_disk(disk: &Path, saved: &Path, extra: &[&str]) {
    let out = common::rimage()
        .args(["save-disk", "-q"])
        .args(extra)
        .arg(disk)
        .arg(saved)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "save-disk: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn output(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let out = common::rimage().args(args).output().unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_saved_disk_is_described_and_checked_as_a_whole() {
    if let Some(why) = tools_missing() {
        eprintln!("SKIP: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_img, a) = make_source_disk(dir.path(), "gpt", false);
    let saved = dir.path().join("saved");
    save_disk(&a.dev, &saved, &["--reformat", "4"]);
    let s = saved.as_os_str();

    // The whole disk itself: described by its table, with save-disk suggested.
    let (code, t) = output(&["info".as_ref(), a.dev.as_os_str()]);
    assert_eq!(code, Some(0), "{t}");
    assert!(
        t.contains("a GPT with 4 partitions") && t.contains("rimage save-disk"),
        "{t}"
    );

    let (code, t) = output(&["info".as_ref(), s]);
    assert_eq!(code, Some(0), "{t}");
    assert!(
        t.contains("a GPT with 4 partitions")
            && t.contains("image part1.rimg")
            && t.contains("image part2.rimg")
            && t.contains("swap header")
            && t.contains("re-created empty"),
        "{t}"
    );
    let (code, t) = output(&["info".as_ref(), "--json".as_ref(), s]);
    assert_eq!(code, Some(0), "{t}");
    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
    assert_eq!(v["partitions"].as_array().unwrap().len(), 4);
    assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");

    let (code, t) = output(&["verify".as_ref(), s]);
    assert_eq!(code, Some(0), "{t}");
    assert!(
        t.contains("OK: the saved disk is restorable (2 images checked)"),
        "{t}"
    );

    // A damaged image: exit 3, naming the partition and the chunk.
    let img2 = saved.join("part2.rimg");
    let good = std::fs::read(&img2).unwrap();
    let mut bad = good.clone();
    bad[1000] ^= 0x40;
    std::fs::write(&img2, &bad).unwrap();
    let (code, t) = output(&["verify".as_ref(), s]);
    assert_eq!(code, Some(3), "{t}");
    assert!(
        t.contains("partition 2:") && t.contains("chunk 0") && t.contains("FAILED"),
        "{t}"
    );
    std::fs::write(&img2, &good).unwrap();
    // A missing image.
    std::fs::rename(saved.join("part1.rimg"), dir.path().join("away.rimg")).unwrap();
    let (code, t) = output(&["verify".as_ref(), s]);
    assert_eq!(code, Some(3), "{t}");
    assert!(t.contains("partition 1") && t.contains("part1.rimg"), "{t}");
    let (code, t) = output(&["info".as_ref(), s]);
    assert_eq!(code, Some(0), "{t}");
    assert!(t.contains("problem: partition 1"), "{t}");
}

#[test]
fn restore_disk_grows_the_last_partition_onto_a_bigger_disk() {
    if let Some(why) = tools_missing() {
        eprintln!("SKIP: {why}");
        return;
    }
    if !have("resize2fs") {
        eprintln!("SKIP: needs resize2fs");
        return;
    }
    for label in ["gpt", "dos"] {
        let dir = tempfile::tempdir().unwrap();
        let (_img, a) = make_source_disk(dir.path(), label, false);
        let saved = dir.path().join("saved");
        // The data partition (last) is imaged this time: its files must survive the growth.
        save_disk(&a.dev, &saved, &[]);
        let big = dir.path().join("big.img");
        common::pattern_file(&big, 400 << 20);
        let b = LoopDev::new(&big).unwrap();

        // Without --grow: restored as saved, with a note about the unused space.
        let (code, t) = output(&[
            "restore-disk".as_ref(),
            saved.as_os_str(),
            b.dev.as_os_str(),
        ]);
        assert_eq!(code, Some(0), "{t}");
        assert!(t.contains("left unused") && t.contains("--grow"), "{t}");
        assert_eq!(
            common::dumpe2fs_field(&b.part(4), "Block count"),
            common::dumpe2fs_field(&a.part(4), "Block count")
        );

        let (code, t) = output(&[
            "restore-disk".as_ref(),
            "--grow".as_ref(),
            saved.as_os_str(),
            b.dev.as_os_str(),
        ]);
        assert_eq!(code, Some(0), "{label}: {t}");
        assert!(t.contains("partition 4 grown"), "{t}");
        // The partition reaches the end of the disk (GPT: its last usable sector).
        let dump = table_dump(&b.dev);
        let sectors = (400u64 << 20) / 512;
        let p4 = dump
            .lines()
            .find(|l| l.starts_with("DISK4") || l.contains("p4 :"))
            .unwrap();
        let field = |name: &str| -> u64 {
            let (_, fields) = p4.split_once(':').unwrap();
            fields
                .split(',')
                .find_map(|f| f.trim().strip_prefix(name))
                .and_then(|v| v.trim_start_matches([' ', '=']).trim().parse().ok())
                .unwrap()
        };
        let end = field("start") + field("size");
        let want_end = if label == "gpt" {
            sectors - 33
        } else {
            sectors
        };
        assert_eq!(end, want_end, "{label}: {dump}");
        // Its filesystem fills it, is clean, keeps its identity and its files.
        common::assert_fsck_clean(&b.part(4));
        let blocks: u64 = common::dumpe2fs_field(&b.part(4), "Block count")
            .unwrap()
            .parse()
            .unwrap();
        let bs: u64 = common::dumpe2fs_field(&b.part(4), "Block size")
            .unwrap()
            .parse()
            .unwrap();
        // resize2fs fills the partition up to whole 4 KiB pages.
        let part_bytes = field("size") * 512;
        assert!(
            blocks * bs <= part_bytes && blocks * bs + 4096 > part_bytes,
            "{label}: {blocks} blocks of {bs} in a partition of {part_bytes} bytes"
        );
        assert_eq!(blkid(&a.part(4)).get("UUID"), blkid(&b.part(4)).get("UUID"));
        let (_, x) = common::tree::snapshot(&a.part(4)).unwrap();
        let (_, y) = common::tree::snapshot(&b.part(4)).unwrap();
        assert!(x == y, "{label}: the data partition's files differ");
        // The other partitions are as saved.
        for n in 1..=3 {
            assert_eq!(
                blkid(&a.part(n)),
                blkid(&b.part(n)),
                "{label}: partition {n}"
            );
        }
    }
}

#[test]
fn restore_disk_from_a_url() {
    if let Some(why) = tools_missing() {
        eprintln!("SKIP: {why}");
        return;
    }
    if !have("nginx") {
        eprintln!("SKIP: needs nginx");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_img, a) = make_source_disk(dir.path(), "gpt", false);
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    save_disk(&a.dev, &www.join("node"), &["--reformat", "4"]);
    let nginx = common::http::Nginx::start(&www, true).unwrap();
    let target = dir.path().join("target-disk.img");
    common::pattern_file(&target, 300 << 20);
    let b = LoopDev::new(&target).unwrap();
    let url = nginx.url("node");
    // Over HTTP, with the post-restore command run in the restored root.
    let (code, t) = output(&[
        "restore-disk".as_ref(),
        "--post-restore".as_ref(),
        "touch \"$RIMAGE_ROOT/ran\"".as_ref(),
        url.as_ref(),
        b.dev.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{t}");
    assert_eq!(table_dump(&a.dev), table_dump(&b.dev));
    for n in 1..=4 {
        assert_eq!(blkid(&a.part(n)), blkid(&b.part(n)), "partition {n}");
    }
    common::assert_fsck_clean(&b.part(2));
    let (_, x) = common::tree::snapshot(&a.part(2)).unwrap();
    let (_, mut y) = common::tree::snapshot(&b.part(2)).unwrap();
    assert!(
        y.remove("/ran").is_some(),
        "the post-restore command did not run"
    );
    assert!(x == y, "the root's files differ");
    // Again, as a delta: nothing left to write.
    let (code, t) = output(&[
        "restore-disk".as_ref(),
        "--delta".as_ref(),
        "--json".as_ref(),
        url.as_ref(),
        b.dev.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{t}");
    // A missing saved disk names the manifest's URL.
    let (code, t) = output(&[
        "restore-disk".as_ref(),
        nginx.url("nope").as_ref(),
        b.dev.as_os_str(),
    ]);
    assert_eq!(code, Some(1), "{t}");
    assert!(t.contains("nope/manifest.toml") && t.contains("404"), "{t}");
}

#[test]
fn a_whole_disk_goes_through_a_pipe_as_one_stream() {
    if let Some(why) = tools_missing() {
        eprintln!("SKIP: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_img, a) = make_source_disk(dir.path(), "dos", false);
    let target = dir.path().join("target-disk.img");
    common::pattern_file(&target, 300 << 20);
    let b = LoopDev::new(&target).unwrap();
    let bin = env!("CARGO_BIN_EXE_rimage");
    // save-disk DISK - | restore-disk - DISK, with the post-restore step (its root found on the
    // restored disk, since a stream cannot be looked into first).
    let (code, t) = shell(&format!(
        "set -o pipefail; {bin} save-disk -q --reformat 4 {} - | {bin} restore-disk --post-restore 'touch \"$RIMAGE_ROOT/ran\"' - {}",
        a.dev.display(),
        b.dev.display()
    ));
    assert_eq!(code, Some(0), "{t}");
    assert!(
        common::tree::snapshot(&b.part(2))
            .unwrap()
            .1
            .contains_key("/ran"),
        "the post-restore command did not run: {t}"
    );
    {
        let m = common::Mounted::new(&b.part(2), false).unwrap();
        std::fs::remove_file(m.path().join("ran")).unwrap();
    }
    assert_same_disk(&a, &b, "save-disk | restore-disk");

    // A stored saved disk through `send`.
    let saved = dir.path().join("saved");
    save_disk(&a.dev, &saved, &["--reformat", "4"]);
    common::pattern_file(&target, 300 << 20);
    let (code, t) = shell(&format!(
        "set -o pipefail; {bin} send {} | {bin} restore-disk - {}",
        saved.display(),
        b.dev.display()
    ));
    assert_eq!(code, Some(0), "{t}");
    assert_same_disk(&a, &b, "send | restore-disk");

    // A stream cut short: exit non-zero, saying which partitions are complete.
    let stream = dir.path().join("disk.stream");
    let (code, t) = shell(&format!(
        "{bin} send {} > {}",
        saved.display(),
        stream.display()
    ));
    assert_eq!(code, Some(0), "{t}");
    let bytes = std::fs::read(&stream).unwrap();
    let cut = bytes.len() * 2 / 3;
    std::fs::write(&stream, &bytes[..cut]).unwrap();
    let (code, t) = shell(&format!(
        "{bin} restore-disk - {} < {}",
        b.dev.display(),
        stream.display()
    ));
    assert_ne!(code, Some(0), "{t}");
    assert!(
        t.contains("restore-disk stopped at partition")
            && t.contains("partitions restored completely: 1")
            && t.contains("not restored"),
        "{t}"
    );
    // A damaged chunk in the second image: exit 3, nothing of that chunk written.
    let mut bad = bytes.clone();
    let second = bytes
        .windows(8)
        .enumerate()
        .filter(|(_, w)| *w == b"\x89RIMG\r\n\x1a")
        .nth(1)
        .unwrap()
        .0;
    bad[second + 512 + 200] ^= 0x55;
    std::fs::write(&stream, &bad).unwrap();
    let (code, t) = shell(&format!(
        "{bin} restore-disk - {} < {}",
        b.dev.display(),
        stream.display()
    ));
    assert_eq!(code, Some(3), "{t}");
    assert!(t.contains("stopped at partition 2"), "{t}");
    // Not a disk stream at all.
    let (code, t) = shell(&format!(
        "echo hello | {bin} restore-disk - {}",
        b.dev.display()
    ));
    assert_eq!(code, Some(1), "{t}");
    assert!(t.contains("not a rimage disk stream"), "{t}");
}
