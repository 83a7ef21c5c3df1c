//! Damaged images: one flipped byte in every region, and truncation at many offsets. verify
//! must fail and name the region or chunk; restore must never write a block of a chunk that
//! fails its checks, must refuse before writing anything when the header, index or trailer is
//! bad, and must exit non-zero; nothing may panic.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rimage::fs::Extent;
use rimage::image::ImageFile;
use rimage::{ImageSource, NoProgress, RestoreOptions, SaveOptions};

struct Fixture {
    dir: tempfile::TempDir,
    bytes: Vec<u8>,
    /// Per chunk: record offset, record length, extents.
    chunks: Vec<(usize, usize, Vec<Extent>)>,
    index_offset: usize,
    source_size: u64,
    block_size: u64,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/sample.ext4");
    let image = dir.path().join("sample.rimg");
    let opts = SaveOptions {
        chunk_size: 64 << 10,
        ..SaveOptions::default()
    };
    common::save_with(&sample, &image, &opts);
    let bytes = std::fs::read(&image).unwrap();
    let img = ImageFile::parse(&bytes[..]).unwrap();
    let chunks = (0..img.index.len())
        .map(|i| {
            let rec = img.record(i).unwrap();
            (
                rec.offset as usize,
                rec.bytes().len(),
                rec.check_extents(&img.header)
                    .unwrap()
                    .extents
                    .into_iter()
                    .map(|e| e.extent)
                    .collect(),
            )
        })
        .collect::<Vec<_>>();
    assert!(chunks.len() >= 20, "want many chunks, got {}", chunks.len());
    let index_offset = img.trailer.index_offset as usize;
    let (source_size, block_size) = (img.header.source_size, u64::from(img.header.block_size));
    Fixture {
        dir,
        bytes,
        chunks,
        index_offset,
        source_size,
        block_size,
    }
}

impl Fixture {
    fn write_variant(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn flipped(&self, at: usize) -> Vec<u8> {
        let mut b = self.bytes.clone();
        b[at] ^= 0x20;
        b
    }

    /// Verify fails, and its report mentions `needle`.
    fn assert_verify_fails(&self, image: &Path, needle: &str) {
        let report =
            rimage::verify(&ImageSource::File(image.to_path_buf()), 0, &NoProgress).unwrap();
        assert!(!report.ok, "verify accepted a damaged image ({needle})");
        let text = report.problems.join("\n");
        assert!(
            text.contains(needle),
            "verify's report does not mention {needle:?}:\n{text}"
        );
    }

    /// Restores onto a fresh pattern target; returns the error text and the target path.
    fn restore_fails(&self, image: &Path) -> (String, PathBuf) {
        let target = self.dir.path().join("target.img");
        common::pattern_file(&target, self.source_size);
        let err = rimage::restore(
            &ImageSource::File(image.to_path_buf()),
            &target,
            &RestoreOptions::default(),
            &NoProgress,
        )
        .expect_err("restore of a damaged image succeeded");
        (common::chain(&err), target)
    }

    /// Whether every block of `extents` on `target` still holds the pattern.
    fn untouched(&self, target: &Path, extents: &[Extent]) -> bool {
        let pristine = self.dir.path().join("pristine.img");
        if !pristine.exists() {
            common::pattern_file(&pristine, self.source_size);
        }
        let (a, b) = (
            std::fs::File::open(target).unwrap(),
            std::fs::File::open(&pristine).unwrap(),
        );
        extents.iter().all(|e| {
            let len = (e.len * self.block_size) as usize;
            let (mut x, mut y) = (vec![0u8; len], vec![0u8; len]);
            a.read_exact_at(&mut x, e.start * self.block_size).unwrap();
            b.read_exact_at(&mut y, e.start * self.block_size).unwrap();
            x == y
        })
    }

    fn all_extents(&self) -> Vec<Extent> {
        self.chunks.iter().flat_map(|c| c.2.clone()).collect()
    }
}

#[test]
fn a_flipped_byte_in_any_chunk_region_is_caught_and_never_written() {
    let f = fixture();
    for (i, (offset, len, extents)) in f.chunks.iter().enumerate() {
        let n_ext = extents.len();
        let regions = [
            ("record header", offset + 20),
            ("extent list", offset + 32 + 12 * (n_ext - 1) + 2),
            (
                "payload",
                offset + 32 + 12 * n_ext + (len - 36 - 12 * n_ext) / 2,
            ),
            ("CRC", offset + len - 1),
        ];
        for (region, at) in regions {
            let bad = f.write_variant("bad.rimg", &f.flipped(at));
            f.assert_verify_fails(&bad, &format!("chunk {i} "));
            let (err, target) = f.restore_fails(&bad);
            assert!(
                err.contains(&format!("chunk {i} ")),
                "restore error for {region} of chunk {i} does not name it: {err}"
            );
            assert!(
                f.untouched(&target, extents),
                "restore wrote blocks of chunk {i} after damage to its {region}"
            );
        }
    }
}

#[test]
fn damage_outside_the_chunks_is_caught_before_anything_is_written() {
    let f = fixture();
    let len = f.bytes.len();
    let trailer = len - 72;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("header", f.flipped(100), "header"),
        ("header magic", f.flipped(1), "not a rimage image"),
        (
            "index entry",
            f.flipped(f.index_offset + 16 + 48 * 3 + 9),
            "index",
        ),
        ("index count", f.flipped(f.index_offset + 8), "index"),
        ("trailer", f.flipped(trailer + 9), "trailer"),
        ("trailer magic", f.flipped(trailer + 2), "truncated"),
        (
            "digest",
            {
                // Change the digest and repair the trailer's own CRC: only the digest is wrong.
                let mut b = f.flipped(trailer + 50);
                let crc = crc32fast::hash(&b[trailer..trailer + 68]);
                b[trailer + 68..].copy_from_slice(&crc.to_le_bytes());
                b
            },
            "digest mismatch",
        ),
    ];
    for (what, bytes, needle) in cases {
        let bad = f.write_variant("bad.rimg", &bytes);
        f.assert_verify_fails(&bad, needle);
        let (err, target) = f.restore_fails(&bad);
        assert!(
            f.untouched(&target, &f.all_extents()),
            "restore wrote blocks despite a damaged {what}: {err}"
        );
        let out = common::rimage().arg("verify").arg(&bad).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(3),
            "verify exit status for a damaged {what}"
        );
    }
}

#[test]
fn truncated_images_are_refused_from_a_file() {
    let f = fixture();
    let len = f.bytes.len();
    let mut cuts: Vec<usize> = (0..len).step_by(977).collect();
    cuts.extend([
        0,
        7,
        8,
        511,
        512,
        513,
        f.index_offset - 1,
        f.index_offset,
        f.index_offset + 20,
        len - 72,
        len - 1,
    ]);
    for (_, l, _) in f.chunks.iter().take(3) {
        cuts.push(512 + l - 1);
    }
    for cut in cuts {
        let bad = f.write_variant("cut.rimg", &f.bytes[..cut]);
        match ImageFile::parse(&f.bytes[..cut]) {
            Ok(_) => panic!("an image cut at {cut} of {len} bytes parsed"),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        let report = rimage::verify(&ImageSource::File(bad.clone()), 0, &NoProgress).unwrap();
        assert!(!report.ok, "verify accepted an image cut at {cut}");
        let (err, target) = f.restore_fails(&bad);
        assert!(
            f.untouched(&target, &f.all_extents()),
            "restore of an image cut at {cut} wrote blocks: {err}"
        );
    }
}

#[test]
fn truncated_images_fail_clearly_from_stdin() {
    let f = fixture();
    let len = f.bytes.len();
    let mut cuts: Vec<usize> = (0..len).step_by(len / 40).collect();
    cuts.extend([0, 100, 512, f.index_offset, len - 72, len - 1]);
    for cut in cuts {
        let target = f.dir.path().join("piped.img");
        common::pattern_file(&target, f.source_size);
        for args in [
            vec!["restore", "-q", "-", target.to_str().unwrap()],
            vec!["verify", "-q", "-"],
        ] {
            let mut child = Command::new(env!("CARGO_BIN_EXE_rimage"))
                .args(&args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            {
                use std::io::Write;
                let mut stdin = child.stdin.take().unwrap();
                let _ = stdin.write_all(&f.bytes[..cut]);
            }
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                out.status.code(),
                Some(3),
                "{} of an image cut at {cut}: {text}",
                args[0]
            );
            assert!(
                text.contains("truncated") || text.contains("not a rimage image"),
                "{} of an image cut at {cut}: {text}",
                args[0]
            );
            assert!(!text.contains("panicked"), "{text}");
        }
    }
}

#[test]
fn restore_from_stdin_never_writes_a_damaged_chunk() {
    let f = fixture();
    let victim = f.chunks.len() / 2;
    let (offset, len, extents) = &f.chunks[victim];
    let bad = f.flipped(offset + len / 2);
    let target = f.dir.path().join("piped.img");
    common::pattern_file(&target, f.source_size);
    let mut child = Command::new(env!("CARGO_BIN_EXE_rimage"))
        .args(["restore", "-q", "-", target.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let _ = child.stdin.take().unwrap().write_all(&bad);
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains(&format!("chunk {victim} ")), "{text}");
    assert!(
        f.untouched(&target, extents),
        "the damaged chunk was written"
    );
}

/// An image whose chunks are each valid (CRC, checksum, digest all computed honestly) but
/// overlap: a file image is refused by its index before any write; from a pipe, where the order
/// can only be checked after the chunks, restore and verify still fail and say why.
#[test]
fn overlapping_chunks_with_valid_checksums_are_refused() {
    use rimage::fs::FsType;
    use rimage::fs::{Extent, Uuid};
    use rimage::image::chunk::{ChunkExtent, compressor, encode_chunk};
    use rimage::image::writer::ImageWriter;
    use rimage::image::{Compression, Header, Unstored, Version};

    let header = Header {
        version: Version::V1,
        source_type: FsType::Raw,
        compression: Compression::Zstd,
        unstored: Unstored::Zero,
        block_size: 4096,
        chunk_target: 1 << 20,
        total_blocks: 64,
        used_blocks: 64,
        source_size: 64 * 4096,
        uuid: Uuid::default(),
        label: String::new(),
        created: 0,
        level: 3,
        flags: 0,
        writer: "test".into(),
    };
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("overlap.rimg");
    let mut w = ImageWriter::new(std::fs::File::create(&image).unwrap(), &header).unwrap();
    let mut cctx = compressor(3).unwrap();
    // Blocks 0..8, then 4..12: the second chunk overlaps the first.
    for (seq, start) in [(0u64, 0u64), (1, 4)] {
        let ext = [ChunkExtent {
            extent: Extent { start, len: 8 },
            zero: false,
        }];
        let chunk = encode_chunk(
            seq,
            &ext,
            &vec![seq as u8 + 1; 8 * 4096],
            4096,
            &mut cctx,
            Vec::new(),
        )
        .unwrap();
        w.write_chunk(&chunk).unwrap();
    }
    w.finish().unwrap();

    let report = rimage::verify(&ImageSource::File(image.clone()), 0, &NoProgress).unwrap();
    assert!(
        !report.ok && report.problems.join("\n").contains("out of order"),
        "{:?}",
        report.problems
    );
    let target = dir.path().join("target.img");
    common::pattern_file(&target, 64 * 4096);
    let before = std::fs::read(&target).unwrap();
    assert!(
        rimage::restore(
            &ImageSource::File(image.clone()),
            &target,
            &RestoreOptions::default(),
            &NoProgress
        )
        .is_err()
    );
    assert!(
        std::fs::read(&target).unwrap() == before,
        "a file image with overlapping chunks was written"
    );

    for args in [
        vec!["verify", "-"],
        vec!["restore", "-q", "-", target.to_str().unwrap()],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_rimage"))
            .args(&args)
            .stdin(std::fs::File::open(&image).unwrap())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(3), "{}: {text}", args[0]);
        assert!(
            text.contains("overlaps the previous chunk"),
            "{}: {text}",
            args[0]
        );
    }
}
