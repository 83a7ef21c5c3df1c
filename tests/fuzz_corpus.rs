//! Replays every file of the fuzz corpora (fuzz/corpus/<target>/) through the same code the
//! fuzz targets run, on stable Rust, so that every input a fuzzer ever found interesting (and
//! every crash it found, once fixed) stays covered by `cargo test`.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the {target} corpus is empty");
    for f in files {
        let data = std::fs::read(&f).unwrap();
        // A panic names the file through the test's output.
        eprintln!("replaying {}", f.display());
        run(&data);
    }
}

#[test]
fn header_corpus() {
    replay("header", rimage::fuzzing::header);
}

#[test]
fn chunk_corpus() {
    replay("chunk", rimage::fuzzing::chunk);
}

#[test]
fn image_corpus() {
    replay("image", rimage::fuzzing::image);
}

#[test]
fn ext_scan_corpus() {
    replay("ext_scan", rimage::fuzzing::ext_scan);
}

#[test]
fn xfs_scan_corpus() {
    replay("xfs_scan", rimage::fuzzing::xfs_scan);
}

#[test]
fn fat_scan_corpus() {
    replay("fat_scan", rimage::fuzzing::fat_scan);
}

#[test]
fn table_corpus() {
    replay("table", rimage::fuzzing::table);
}

#[test]
fn manifest_corpus() {
    replay("manifest", rimage::fuzzing::manifest);
}

#[test]
fn partclone_corpus() {
    replay("partclone", rimage::fuzzing::partclone);
}

#[test]
fn cmdline_corpus() {
    replay("cmdline", rimage::fuzzing::cmdline);
}

#[test]
fn serve_request_corpus() {
    replay("serve_request", rimage::fuzzing::serve_request);
}
