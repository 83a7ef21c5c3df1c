//! A partclone image writer for tests, written from the documented layout (partclone's
//! `partclone.h`, `partclone.c`, `checksum.c`) independently of rimage's decoder: it makes the
//! images this partclone cannot (format 0001, XXH64, XXH128, byte bitmaps, no reseeding) and
//! the odd ones (header counts that disagree, devices larger than the blocks).

use std::path::Path;

/// What checksums to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sum {
    None,
    Crc32,
    Xxh64,
    Xxh128,
}

/// How the bitmap is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Map {
    Bit,
    Byte,
    None,
}

/// An image to write.
#[derive(Clone, Debug)]
pub struct Spec {
    /// "0001" or "0002".
    pub v1: bool,
    pub fs: &'static str,
    pub sum: Sum,
    pub blocks_per_checksum: u32,
    pub reseed: bool,
    pub map: Map,
    /// Added to the bitmap's used count in the header.
    pub used_skew: i64,
    /// Added to the device size (blocks × block size).
    pub extra_device_bytes: u64,
}

impl Spec {
    pub fn v2(sum: Sum, bpc: u32, reseed: bool, map: Map) -> Self {
        Self {
            v1: false,
            fs: "EXTFS",
            sum,
            blocks_per_checksum: bpc,
            reseed,
            map,
            used_skew: 0,
            extra_device_bytes: 0,
        }
    }

    pub fn v1() -> Self {
        Self {
            v1: true,
            ..Self::v2(Sum::Crc32, 1, false, Map::Byte)
        }
    }
}

/// The CRC32 table, reflected IEEE.
fn table() -> [u32; 256] {
    let mut t = [0u32; 256];
    for (i, e) in t.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
        *e = c;
    }
    t
}

/// partclone's CRC32: the register from `reg`, no final inversion.
pub fn pc_crc(reg: u32, data: &[u8]) -> u32 {
    let t = table();
    data.iter().fold(reg, |c, &b| {
        (c >> 8) ^ t[((c ^ u32::from(b)) & 0xFF) as usize]
    })
}

/// 0001's CRC of a block: its first byte, block-size times.
fn v1_crc(reg: u32, block: &[u8]) -> u32 {
    let t = table();
    (0..block.len()).fold(reg, |c, _| {
        (c >> 8) ^ t[((c ^ u32::from(block[0])) & 0xFF) as usize]
    })
}

/// Reads the used-block bitmap of a real 0002 bit-bitmap image (to rebuild its source in
/// other layouts): (total blocks, block size, used flags).
pub fn bitmap_of(pc_image: &Path) -> (u64, u32, Vec<bool>) {
    let b = std::fs::read(pc_image).unwrap();
    assert_eq!(&b[30..34], b"0002");
    assert_eq!(b[105], 1, "a bit bitmap");
    let total = u64::from_le_bytes(b[60..68].try_into().unwrap());
    let bs = u32::from_le_bytes(b[84..88].try_into().unwrap());
    let used = (0..total as usize)
        .map(|i| b[110 + i / 8] & (1 << (i % 8)) != 0)
        .collect();
    (total, bs, used)
}

/// Writes an image of `source` (a filesystem image file) storing the blocks `used` says.
pub fn write(spec: &Spec, source: &Path, used: &[bool], block_size: u32) -> Vec<u8> {
    let src = std::fs::read(source).unwrap();
    let bs = block_size as usize;
    let total = used.len() as u64;
    let n_used = match spec.map {
        Map::None => used.len() as u64,
        _ => used.iter().filter(|&&u| u).count() as u64,
    };
    let header_used = (n_used as i64 + spec.used_skew) as u64;
    let device = total * u64::from(block_size) + spec.extra_device_bytes;
    let mut out = Vec::new();
    if spec.v1 {
        out.extend_from_slice(b"partclone-image");
        let mut fs = [0u8; 15];
        fs[..spec.fs.len()].copy_from_slice(spec.fs.as_bytes());
        out.extend_from_slice(&fs);
        out.extend_from_slice(b"0001\0\0");
        out.extend_from_slice(&(block_size as i32).to_le_bytes());
        out.extend_from_slice(&device.to_le_bytes());
        out.extend_from_slice(&total.to_le_bytes());
        out.extend_from_slice(&header_used.to_le_bytes());
        out.extend_from_slice(&[0u8; 4096]);
    } else {
        out.extend_from_slice(b"partclone-image\0");
        let mut v = [0u8; 14];
        v[..6].copy_from_slice(b"0.3.23");
        out.extend_from_slice(&v);
        out.extend_from_slice(b"0002");
        out.extend_from_slice(&0xC0DEu16.to_le_bytes());
        let mut fs = [0u8; 16];
        fs[..spec.fs.len()].copy_from_slice(spec.fs.as_bytes());
        out.extend_from_slice(&fs);
        out.extend_from_slice(&device.to_le_bytes());
        out.extend_from_slice(&total.to_le_bytes());
        out.extend_from_slice(&header_used.to_le_bytes());
        out.extend_from_slice(&header_used.to_le_bytes());
        out.extend_from_slice(&block_size.to_le_bytes());
        let (mode, size): (u16, u16) = match spec.sum {
            Sum::None => (0, 0),
            Sum::Crc32 => (0x20, 4),
            Sum::Xxh64 => (0x30, 8),
            Sum::Xxh128 => (0x31, 16),
        };
        out.extend_from_slice(&18u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&64u16.to_le_bytes());
        out.extend_from_slice(&mode.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&spec.blocks_per_checksum.to_le_bytes());
        out.push(u8::from(spec.reseed));
        out.push(match spec.map {
            Map::None => 0,
            Map::Bit => 1,
            Map::Byte => 8,
        });
        let crc = pc_crc(0xFFFF_FFFF, &out);
        out.extend_from_slice(&crc.to_le_bytes());
    }
    let stored: Vec<bool> = match spec.map {
        Map::None => vec![true; used.len()],
        _ => used.to_vec(),
    };
    match spec.map {
        Map::Bit => {
            let mut bits = vec![0u8; used.len().div_ceil(8)];
            for (i, _) in used.iter().enumerate().filter(|(_, u)| **u) {
                bits[i / 8] |= 1 << (i % 8);
            }
            let crc = pc_crc(0xFFFF_FFFF, &bits);
            out.extend_from_slice(&bits);
            out.extend_from_slice(&crc.to_le_bytes());
        }
        Map::Byte => {
            out.extend(used.iter().map(|&u| u8::from(u)));
            out.extend_from_slice(b"BiTmAgIc");
        }
        Map::None => {}
    }
    let mut crc = 0xFFFF_FFFFu32;
    let mut x64 = xxhash_rust::xxh64::Xxh64::new(0);
    let mut x128 = xxhash_rust::xxh3::Xxh3::new();
    let mut in_group = 0;
    let order: Vec<usize> = (0..stored.len()).filter(|&i| stored[i]).collect();
    for (k, &i) in order.iter().enumerate() {
        let block = &src[i * bs..(i + 1) * bs];
        out.extend_from_slice(block);
        if spec.sum == Sum::None {
            continue;
        }
        if spec.v1 {
            crc = v1_crc(crc, block);
        } else {
            crc = pc_crc(crc, block);
        }
        x64.update(block);
        x128.update(block);
        in_group += 1;
        if in_group == spec.blocks_per_checksum || k + 1 == order.len() {
            match spec.sum {
                Sum::Crc32 => out.extend_from_slice(&crc.to_le_bytes()),
                Sum::Xxh64 => out.extend_from_slice(&x64.digest().to_le_bytes()),
                Sum::Xxh128 => out.extend_from_slice(&x128.digest128().to_le_bytes()),
                Sum::None => {}
            }
            in_group = 0;
            if spec.reseed {
                crc = 0xFFFF_FFFF;
                x64 = xxhash_rust::xxh64::Xxh64::new(0);
                x128 = xxhash_rust::xxh3::Xxh3::new();
            }
        }
    }
    out
}
