//! Entry points for the fuzz targets in `fuzz/`, kept in the library so that `cargo test`
//! replays every corpus file through exactly the code the fuzzer runs (tests/fuzz_corpus.rs).
//!
//! Each function takes arbitrary bytes and must never panic, overflow or allocate more than
//! the input justifies; where a checksum would stop the fuzzer at the door, a second pass
//! repairs it so that the structure behind it gets explored too.

use std::io::Cursor;

use crate::fs::ScanOptions;
use crate::fs::ext::ExtFs;
use crate::image::chunk::{CRC_LEN, ChunkRecord};
use crate::image::header::{HEADER_LEN, Header};
use crate::image::{Compression, Unstored, Version};
use crate::read::Image;
use crate::transport::Memory;

/// The image header decoder; a decoded header must re-encode to itself.
pub fn header(data: &[u8]) {
    let Some(raw) = data.get(..HEADER_LEN) else {
        return;
    };
    let mut raw: [u8; HEADER_LEN] = raw.try_into().expect("exact length");
    for pass in 0..2 {
        if let Ok(h) = Header::decode(&raw) {
            assert_eq!(
                Header::decode(&h.encode()).as_ref(),
                Ok(&h),
                "header does not round-trip"
            );
        }
        if pass == 0 {
            // Repair the CRC so the field checks behind it are reached.
            let crc = crc32fast::hash(&raw[..HEADER_LEN - 4]);
            raw[HEADER_LEN - 4..].copy_from_slice(&crc.to_le_bytes());
        }
    }
}

fn fuzz_header(block_size: u32) -> Header {
    Header {
        version: Version::V1,
        source_type: crate::fs::FsType::Ext4,
        compression: Compression::Zstd,
        unstored: Unstored::Free,
        block_size,
        chunk_target: 1 << 20,
        total_blocks: 1 << 20,
        used_blocks: 1 << 20,
        source_size: (1 << 20) * u64::from(block_size),
        uuid: crate::fs::Uuid::default(),
        label: String::new(),
        created: 0,
        level: 3,
        flags: 0,
        writer: String::new(),
    }
}

/// One chunk record, checked as restore checks it (CRC, extents, decompression).
pub fn chunk(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let bs = 512u32 << (sel % 4);
    let hdr = fuzz_header(bs);
    let mut dctx = zstd::bulk::Decompressor::new().expect("zstd context");
    let mut out = Vec::new();
    let mut copy = rest.to_vec();
    for pass in 0..2 {
        if let Ok(rec) = ChunkRecord::new(&copy, 512, bs) {
            let _ = rec.check(&hdr, None, &mut dctx, &mut out);
            if pass == 0 {
                let len = rec.bytes().len();
                let crc = crc32fast::hash(&copy[..len - CRC_LEN]);
                copy[len - CRC_LEN..len].copy_from_slice(&crc.to_le_bytes());
                continue;
            }
        }
        break;
    }
}

/// A whole image, read both ways through the read side that restore and verify use: at
/// random (header, trailer, index, every chunk) and as a stream; then the checks across chunks.
pub fn image(data: &[u8]) {
    let random = Image::random(Box::new(Memory::new("fuzz", data.to_vec())));
    let stream = Image::stream(
        std::path::Path::new("fuzz"),
        Box::new(Cursor::new(data.to_vec())),
    );
    for mut img in [random, stream].into_iter().flatten() {
        let _ = img.check_up_front();
        if let Some(r) = img.random_access() {
            let _ = r.layout().find_chunk(img.header().total_blocks / 2);
        }
        let hdr = img.header().clone();
        let mut spans = Vec::new();
        for pending in img.chunks() {
            let Ok(pending) = pending else { break };
            let seq = pending.seq();
            if let Ok(span) = pending
                .fetch()
                .and_then(|c| c.check(&hdr, |c, _| Ok(c.span(seq))))
            {
                spans.push(span);
            }
        }
        let _ = img.finish(spans);
    }
}

/// The ext2/3/4 scanner over an arbitrary "device": superblock, descriptors, bitmaps. Extents
/// must come out ascending and inside the filesystem.
pub fn ext_scan(data: &[u8]) {
    for verify_checksums in [true, false] {
        let Ok(fs) = ExtFs::open(
            data,
            ScanOptions {
                verify_checksums,
                cross_check: crate::fs::CrossCheck::Always,
            },
        ) else {
            continue;
        };
        let mut prev_end = 0;
        // Bounded: a hostile filesystem may describe millions of tiny extents.
        for e in fs.used_extents(data).take(1 << 16) {
            let Ok(e) = e else { break };
            assert!(
                e.len > 0 && e.start >= prev_end && e.end() <= fs.blocks_count(),
                "bad extent {e:?}"
            );
            prev_end = e.end();
        }
        // Inodes, their extent trees and block maps (the journal's is read by open when the
        // filesystem needs recovery).
        let inodes = fs.superblock().inodes_count.min(32);
        for ino in 1..=inodes {
            let Ok(inode) = fs.read_inode(data, ino) else {
                continue;
            };
            if let Ok(b) = fs.inode_blocks(data, ino, &inode) {
                for m in b.data {
                    assert!(m.physical + m.len <= fs.blocks_count(), "bad mapping {m:?}");
                }
            }
        }
    }
}

/// A fuzz input seen as the start of a larger device that reads as zeros past the input: a
/// real filesystem's metadata lies near the start of each AG, so a seed can be a few MiB cut
/// from a much larger filesystem.
struct ZeroExtended<'a> {
    data: &'a [u8],
    size: u64,
}

impl crate::source::ReadAt for ZeroExtended<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.size)
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.fill(0);
        let len = self.data.len() as u64;
        if offset < len {
            let n = (end.min(len) - offset) as usize;
            buf[..n].copy_from_slice(&self.data[offset as usize..offset as usize + n]);
        }
        Ok(())
    }
}

/// Checks that a scan's extents are ascending, disjoint and inside `total` blocks, and that
/// `info` counts what they hold. Bounded: a hostile filesystem may describe millions of tiny
/// extents.
fn check_extents(scan: &dyn crate::fs::UsedBlocks, dev: &dyn crate::source::ReadAt, total: u64) {
    let mut prev_end = 0;
    let mut used = 0;
    let mut complete = true;
    for (i, e) in scan.extents(dev).enumerate() {
        if i == 1 << 16 {
            complete = false;
            break;
        }
        let Ok(e) = e else {
            complete = false;
            break;
        };
        assert!(
            e.len > 0 && e.start >= prev_end && e.end() <= total,
            "bad extent {e:?}"
        );
        prev_end = e.end();
        used += e.len;
    }
    if complete && let Ok(info) = scan.info(dev) {
        assert_eq!(info.used_blocks, used, "info counts other extents");
    }
    let _ = scan.notes();
}

/// The XFS scanner over an arbitrary device (as it is, then zero-extended to 1 TiB):
/// superblock, AGFs, the log head, every AG's free list and free-space btree. Extents must come
/// out ascending and inside the filesystem.
pub fn xfs_scan(data: &[u8]) {
    use crate::fs::xfs::XfsFs;
    let extended = ZeroExtended {
        data,
        size: 1 << 40,
    };
    let exact = ZeroExtended {
        data,
        size: data.len() as u64,
    };
    let devs: [&dyn crate::source::ReadAt; 2] = [&exact, &extended];
    for dev in devs {
        for verify_checksums in [true, false] {
            let opts = ScanOptions {
                verify_checksums,
                ..ScanOptions::default()
            };
            let _ = crate::fs::xfs::identify(dev);
            let Ok(fs) = XfsFs::open(dev, opts) else {
                continue;
            };
            check_extents(&fs, dev, fs.blocks_count());
        }
    }
}

/// The FAT scanner over an arbitrary device (as it is, then zero-extended to 64 MiB, which
/// bounds how much FAT a run reads): boot sector, dirty flags, the first FAT.
pub fn fat_scan(data: &[u8]) {
    use crate::fs::fat::FatFs;
    let extended = ZeroExtended {
        data,
        size: 64 << 20,
    };
    let exact = ZeroExtended {
        data,
        size: data.len() as u64,
    };
    let devs: [&dyn crate::source::ReadAt; 2] = [&exact, &extended];
    for dev in devs {
        let _ = crate::fs::fat::identify(dev);
        let Ok(fs) = FatFs::open(dev, ScanOptions::default()) else {
            continue;
        };
        check_extents(&fs, dev, fs.geometry().total_sectors);
    }
}

/// Partition tables read from an arbitrary disk (GPT and MBR, through the `gpt` and `mbrman`
/// crates after rimage's own checks), then written onto a blank copy: neither may panic.
pub fn table(data: &[u8]) {
    let mut disk = Cursor::new(data.to_vec());
    if let Ok(Some(t)) = crate::disk::table::read_table(&mut disk, data.len() as u64) {
        let mut copy = Cursor::new(vec![0u8; data.len()]);
        let _ = crate::disk::table::write_table(&mut copy, &t, data.len() as u64, &[0; 440]);
    }
}

/// Disk manifests (editable TOML): parsing and checking, then writing the table onto a small
/// in-memory disk (which must fail cleanly when it does not fit).
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = crate::disk::manifest::Manifest::parse(text) {
        let mut disk = Cursor::new(vec![0u8; 1 << 20]);
        let _ = crate::disk::table::write_table(&mut disk, &m.table, 1 << 20, &[0; 440]);
    }
}

/// The partclone decoder (header, bitmap, checksummed block stream), as read and as repaired
/// (every checksum made to match), so that both the checks and what lies behind them run.
/// A repaired image that decodes must give exactly the blocks its bitmap promises.
pub fn partclone(data: &[u8]) {
    use crate::import::partclone;
    for input in [data.to_vec(), partclone::repair(data)] {
        if let Ok((read, used)) = partclone::decode_all(&input) {
            assert_eq!(
                read, used,
                "a decoded image gave other blocks than its bitmap's"
            );
        }
    }
}

/// The netboot init's kernel command line parser: never panics; what it accepts keeps its
/// invariants (a server URL without a trailing slash, a prefix length of at most 32, a disk
/// under /dev).
pub fn cmdline(data: &[u8]) {
    if let Ok(p) = crate::netboot::cmdline::parse(data) {
        if let Some(s) = &p.server {
            assert!(!s.ends_with('/'), "server keeps a trailing slash");
        }
        if let Some(a) = &p.address {
            assert!(a.prefix <= 32, "prefix over 32");
        }
        if let Some(d) = &p.disk {
            assert!(d.starts_with("/dev/"), "disk outside /dev");
        }
        if let Some(m) = p.mac {
            assert_eq!(m.to_string().parse(), Ok(m), "MAC does not round-trip");
        }
    }
}

/// What `rimage serve` parses from a request: the first line selects the parser (MAC from a
/// boot path, image path, Range header, Host header, bearer token, node or image name), the
/// rest is the input; anything else is a report body. Accepted values must be the canonical
/// forms the service relies on.
pub fn serve_request(data: &[u8]) {
    use crate::serve::proto;
    let text = String::from_utf8_lossy(data);
    let (kind, rest) = text.split_once('\n').unwrap_or(("report", &text));
    match kind {
        "mac" => {
            if let Ok(m) = rest.parse::<proto::Mac>() {
                assert_eq!(m.to_string().parse::<proto::Mac>(), Ok(m));
                assert_eq!(m.hyphenated().parse::<proto::Mac>(), Ok(m));
            }
        }
        "path" => {
            if let Ok(parts) = proto::image_path_components(rest) {
                for p in parts {
                    assert!(!p.is_empty() && p != ".." && !p.starts_with('.') && !p.contains('/'));
                }
            }
        }
        "range" => {
            let len = rest.len() as u64 * 997;
            if let proto::RangeAsk::Part(a, b) = proto::parse_range(Some(rest), len) {
                assert!(a <= b && b < len, "{a}-{b} of {len}");
            }
        }
        "host" => {
            if let Some(h) = proto::check_host(rest) {
                assert!(!h.contains(['/', ' ', '\r', '\n', '?', '#', '@']));
            }
        }
        "name" => {
            let _ = proto::check_node_name(rest);
            if proto::check_image_name(rest).is_ok() {
                assert!(!rest.starts_with('.') && !rest.contains('/'));
            }
        }
        "bearer" => {
            let _ = proto::bearer(rest);
        }
        _ => {
            if let Ok(lines) = proto::parse_report(&text) {
                for l in lines {
                    let again = serde_json::to_string(&l).expect("serializes");
                    assert!(proto::parse_report(&again).is_ok(), "{again}");
                }
            }
        }
    }
}
