//! Chunk-level throughput: compression at levels 1 and 3, decompression, and the checksums
//! (CRC32 per chunk, XXH3-128 per chunk for the digest).

mod common;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rimage::fs::Extent;
use rimage::image::chunk::{ChunkExtent, ChunkRecord, compressor, encode_chunk};

const CHUNK: usize = 4 << 20;

fn bench(c: &mut Criterion) {
    let data = common::realistic_bytes(CHUNK);
    let extent = Extent {
        start: 0,
        len: (CHUNK / 4096) as u64,
    };
    let extents = [ChunkExtent {
        extent,
        zero: false,
    }];

    let mut g = c.benchmark_group("chunk");
    g.throughput(Throughput::Bytes(CHUNK as u64));
    g.sample_size(20);
    for level in [1, 3] {
        let mut cctx = compressor(level).unwrap();
        g.bench_with_input(BenchmarkId::new("compress", level), &level, |b, _| {
            let mut payload = Vec::new();
            b.iter(|| {
                let enc = encode_chunk(
                    0,
                    &extents,
                    &data,
                    4096,
                    &mut cctx,
                    std::mem::take(&mut payload),
                )
                .unwrap();
                payload = enc.payload;
            });
        });
    }

    // Decompression and the per-chunk checks restore makes (CRC, extents, zstd checksum).
    let mut cctx = compressor(3).unwrap();
    let enc = encode_chunk(0, &extents, &data, 4096, &mut cctx, Vec::new()).unwrap();
    let mut record = enc.head.clone();
    record.extend_from_slice(&enc.payload);
    record.extend_from_slice(&enc.crc.to_le_bytes());
    let header = rimage::image::Header {
        version: rimage::image::Version::V1,
        source_type: rimage::fs::FsType::Ext4,
        compression: rimage::image::Compression::Zstd,
        unstored: rimage::image::Unstored::Free,
        block_size: 4096,
        chunk_target: CHUNK as u32,
        total_blocks: 1 << 20,
        used_blocks: 1024,
        source_size: 4 << 30,
        uuid: rimage::fs::Uuid::default(),
        label: String::new(),
        created: 0,
        level: 3,
        flags: 0,
        writer: String::new(),
    };
    let mut dctx = zstd::bulk::Decompressor::new().unwrap();
    let mut out = Vec::new();
    g.bench_function("decompress+check", |b| {
        b.iter(|| {
            let rec = ChunkRecord::new(&record, 512, 4096).unwrap();
            rec.check_crc().unwrap();
            let c = rec.check_extents(&header).unwrap();
            rec.decompress(&mut dctx, &mut out, (c.first_block, c.end_block))
                .unwrap();
        });
    });
    g.bench_function("crc32", |b| b.iter(|| crc32fast::hash(&data)));
    g.bench_function("xxh3-128", |b| {
        b.iter(|| rimage::image::digest::chunk_hash(&data))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
