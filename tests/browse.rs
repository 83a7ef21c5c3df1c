//! Browsing inside images: every file and listing read from the image equals the source's,
//! only the chunks needed are read, and unsupported filesystems say so.

mod common;

use std::path::{Path, PathBuf};

use common::{build, case, have};
use rimage::{Browser, Destination, NoProgress, SaveOptions};

fn save_small_chunks(src: &Path, dir: &Path) -> PathBuf {
    let image = dir.join("browse.rimg");
    let opts = SaveOptions {
        chunk_size: 256 << 10,
        ..SaveOptions::default()
    };
    rimage::save(src, &Destination::File(image.clone()), &opts, &NoProgress).unwrap();
    image
}

fn check_case(name: &str) {
    if !have("mke2fs") {
        eprintln!("SKIP {name}: e2fsprogs is not installed");
        return;
    }
    let t = build(case(name));
    let image = save_small_chunks(&t.img, t.dir.path());
    let browser = Browser::open(&rimage::ImageSource::File(image.clone())).unwrap();
    let from_image = common::tree::snapshot_ext4(browser.ext4().unwrap()).unwrap();
    let source = ext4_view::Ext4::load_from_path(&t.img).unwrap();
    let from_source = common::tree::snapshot_ext4(&source).unwrap();
    assert!(from_source.len() > 100);
    assert_eq!(
        from_image, from_source,
        "files read from the image differ from the source's"
    );

    // Listings agree with the source's directory entries.
    for dir in ["/", "/etc/conf.d", "/home/user"] {
        let names: Vec<String> = browser
            .list(dir)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        let mut expected: Vec<String> = source
            .read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().display().to_string())
            .filter(|n| n != "." && n != "..")
            .collect();
        expected.sort();
        assert_eq!(names, expected, "listing of {dir}");
    }
}

#[test]
fn ext4_small_1k() {
    check_case("ext4_small_1k");
}

#[test]
fn ext4_2g_4k() {
    check_case("ext4_2g_4k");
}

#[test]
fn ext4_no_64bit() {
    check_case("ext4_no_64bit");
}

#[test]
fn ext4_bigalloc_4k() {
    check_case("ext4_bigalloc_4k");
}

#[test]
fn ext4_no_flex_bg() {
    check_case("ext4_no_flex_bg");
}

#[test]
fn listing_reads_only_the_chunks_it_needs() {
    if !have("mke2fs") {
        eprintln!("SKIP: e2fsprogs is not installed");
        return;
    }
    let t = build(case("ext4_2g_4k"));
    let image = save_small_chunks(&t.img, t.dir.path());
    let chunks = rimage::inspect_image(&rimage::ImageSource::File(image.clone()))
        .unwrap()
        .chunks;
    let browser = Browser::open(&rimage::ImageSource::File(image.clone())).unwrap();
    browser.list("/").unwrap();
    browser.list("/etc/conf.d").unwrap();
    let read = browser.chunks_decoded();
    assert!(chunks > 20, "want an image of many chunks, got {chunks}");
    assert!(
        read <= 4,
        "listing two directories decompressed {read} of {chunks} chunks"
    );
}

#[test]
fn cli_ls_cat_extract() {
    if !have("mke2fs") {
        eprintln!("SKIP: e2fsprogs is not installed");
        return;
    }
    let t = build(case("ext4_small_fresh"));
    let image = save_small_chunks(&t.img, t.dir.path());
    let source = ext4_view::Ext4::load_from_path(&t.img).unwrap();

    let out = common::rimage()
        .arg("ls")
        .arg(&image)
        .arg("/etc/conf.d")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 40, "{text}");
    assert!(
        text.lines()
            .all(|l| l.starts_with("-rw-r--r--") && l.ends_with(".conf")),
        "{text}"
    );
    let out = common::rimage()
        .args(["ls", "--json"])
        .arg(&image)
        .arg("/")
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let link = json
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "short-link")
        .unwrap();
    assert_eq!(link["target"], "etc/conf.d/file1.conf");

    let out = common::rimage()
        .arg("cat")
        .arg(&image)
        .arg("/var/lib/db/big.bin")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, source.read("/var/lib/db/big.bin").unwrap());
    let out = common::rimage()
        .arg("cat")
        .arg(&image)
        .arg("/no/such/file")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("/no/such/file: no such file or directory in the image")
    );

    let dest = t.dir.path().join("extracted");
    let out = common::rimage()
        .arg("extract")
        .arg(&image)
        .arg("/home")
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let extracted = common::tree::snapshot_dir(&dest);
    let mut expected = common::tree::snapshot_ext4(&source).unwrap();
    expected.retain(|k, _| k.starts_with("/home/"));
    let expected: common::tree::Snapshot = expected
        .into_iter()
        .map(|(k, v)| (k["/home".len()..].to_string(), v))
        .collect();
    assert_eq!(
        extracted, expected,
        "extracted tree differs from the source's /home"
    );
    // Never overwrites.
    let again = common::rimage()
        .arg("extract")
        .arg(&image)
        .arg("/home")
        .arg(&dest)
        .output()
        .unwrap();
    assert!(!again.status.success());
}

#[test]
fn unsupported_and_raw_images_say_so() {
    if !have("mke2fs") {
        eprintln!("SKIP: e2fsprogs is not installed");
        return;
    }
    let t = build(case("ext4_meta_bg"));
    let image = save_small_chunks(&t.img, t.dir.path());
    let msg = common::chain(
        &Browser::open(&rimage::ImageSource::File(image.clone()))
            .err()
            .expect("ext4-view read a meta_bg filesystem"),
    );
    assert!(
        msg.contains("does not support") && msg.contains("restore the image"),
        "{msg}"
    );

    let raw = t.dir.path().join("raw.bin");
    std::fs::write(&raw, vec![7u8; 1 << 20]).unwrap();
    let image = t.dir.path().join("raw.rimg");
    common::save_with(&raw, &image, &SaveOptions::default());
    let msg = common::chain(
        &Browser::open(&rimage::ImageSource::File(image.clone()))
            .err()
            .expect("browsed a raw image"),
    );
    assert!(msg.contains("raw image"), "{msg}");
}
