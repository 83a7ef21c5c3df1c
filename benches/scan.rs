//! Scanning: bitmap bits into extents, and a whole filesystem's bitmaps into its used extents.

mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rimage::fs::ScanOptions;
use rimage::fs::ext::ExtFs;
use rimage::fs::ext::bitmap::for_each_run;
use rimage::source::Device;

fn bench(c: &mut Criterion) {
    // Synthetic bitmaps: long runs, short runs, and alternating bits (the worst case).
    let mut g = c.benchmark_group("bitmap-runs");
    let mut rng = fastrand::Rng::with_seed(1);
    let long: Vec<u8> = (0..4096)
        .map(|i| if (i / 300) % 2 == 0 { 0xFF } else { 0 })
        .collect();
    let short: Vec<u8> = (0..4096).map(|_| rng.u8(..)).collect();
    let alternating = vec![0x55u8; 4096];
    for (name, bm) in [
        ("long-runs", &long),
        ("random", &short),
        ("alternating", &alternating),
    ] {
        g.throughput(Throughput::Bytes(bm.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut n = 0usize;
                for_each_run(bm, bm.len() * 8, |_, len| n += len);
                n
            })
        });
    }
    g.finish();

    if !common::have_mke2fs() {
        eprintln!("skipping the filesystem scan: mke2fs is not installed");
        return;
    }
    // A 64 GiB filesystem with every bitmap initialised (no uninit_bg): all 512 bitmaps are read.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("scan.img");
    common::mkfs(
        &img,
        64 << 10,
        &["-b", "4096", "-O", "^metadata_csum,^uninit_bg"],
        None,
    );
    let dev = Device::open(&img).unwrap();
    let fs = ExtFs::open(&dev, ScanOptions::default()).unwrap();
    let mut g = c.benchmark_group("scan");
    g.throughput(Throughput::Bytes(dev.size_bytes()));
    g.sample_size(20);
    g.bench_function("ext4-64GiB-all-bitmaps", |b| {
        b.iter(|| fs.used_extents(&dev).map(|e| e.unwrap().len).sum::<u64>())
    });
    g.bench_function("ext4-64GiB-open+scan", |b| {
        b.iter(|| {
            let fs = ExtFs::open(&dev, ScanOptions::default()).unwrap();
            fs.used_extents(&dev).map(|e| e.unwrap().len).sum::<u64>()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
