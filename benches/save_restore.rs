//! A whole save and restore of a generated filesystem held in a temporary directory.

mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rimage::{Destination, ImageSource, NoProgress, RestoreOptions, SaveOptions};

fn bench(c: &mut Criterion) {
    if !common::have_mke2fs() {
        eprintln!("skipping: mke2fs is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    common::tree(&tree, 96);
    let img = dir.path().join("fs.img");
    common::mkfs(&img, 512, &["-b", "4096"], Some(&tree));
    let used = rimage::inspect_source(&img).unwrap().fs.used_blocks * 4096;
    let image = dir.path().join("fs.rimg");
    let target = dir.path().join("target.img");

    let mut g = c.benchmark_group("whole");
    g.throughput(Throughput::Bytes(used));
    g.sample_size(10);
    for level in [1, 3] {
        g.bench_function(format!("save-level{level}"), |b| {
            b.iter(|| {
                let opts = SaveOptions {
                    level,
                    overwrite: true,
                    ..SaveOptions::default()
                };
                rimage::save(&img, &Destination::File(image.clone()), &opts, &NoProgress).unwrap()
            })
        });
    }
    g.bench_function("restore", |b| {
        b.iter(|| {
            rimage::restore(
                &ImageSource::File(image.clone()),
                &target,
                &RestoreOptions::default(),
                &NoProgress,
            )
            .unwrap()
        })
    });
    g.bench_function("verify", |b| {
        b.iter(|| rimage::verify(&ImageSource::File(image.clone()), 0, &NoProgress).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
