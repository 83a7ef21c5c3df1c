//! An image's chunks compared with what a device holds at the same block addresses: whether it
//! already holds a chunk (delta restore skips it), and which blocks differ (the drift check).
//! The comparison never depends on chunk boundaries: it is always "the image's blocks vs the
//! device's blocks at the extents the chunk lists".

use crate::fs::Extent;
use crate::image::chunk::ChunkExtent;
use crate::image::digest::ContentHasher;
use crate::image::header::Header;
use crate::source::ReadAt;

/// Bytes read from the device at a time.
const WINDOW: usize = 1 << 20;

/// Reads `len` bytes of `dev` at `offset` in windows, handing each to `f` (stops when `f`
/// returns `false`). Bytes past the source's size (a raw image's last partial block) read as
/// zeros, as the image stores them.
fn read_windows(
    dev: &dyn ReadAt,
    hdr: &Header,
    offset: u64,
    len: u64,
    buf: &mut Vec<u8>,
    mut f: impl FnMut(&[u8]) -> bool,
) -> std::io::Result<bool> {
    let mut done = 0;
    while done < len {
        let n = (len - done).min(WINDOW as u64) as usize;
        buf.resize(n, 0);
        let at = offset + done;
        let avail = hdr.source_size.saturating_sub(at).min(n as u64) as usize;
        dev.read_exact_at(&mut buf[..avail], at)?;
        buf[avail..].fill(0);
        if !f(buf) {
            return Ok(false);
        }
        done += n as u64;
    }
    Ok(true)
}

fn is_zero(b: &[u8]) -> bool {
    b.chunks(64).all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0)
}

/// Whether `dev` already holds a chunk: its blocks at the data extents hash (with the extent
/// words) to `content_hash`, and its blocks at the zero extents are zeros. Reads the device,
/// never the image.
///
/// # Errors
/// A read error of the device.
pub fn holds(
    dev: &dyn ReadAt,
    hdr: &Header,
    extents: &[ChunkExtent],
    content_hash: u128,
) -> std::io::Result<bool> {
    let bs = u64::from(hdr.block_size);
    let mut h = ContentHasher::new();
    let mut buf = Vec::new();
    for e in extents {
        h.extent(e);
        let (offset, len) = (e.extent.start * bs, e.extent.len * bs);
        let all = if e.zero {
            read_windows(dev, hdr, offset, len, &mut buf, is_zero)?
        } else {
            read_windows(dev, hdr, offset, len, &mut buf, |b| {
                h.data(b);
                true
            })?
        };
        if !all {
            return Ok(false);
        }
    }
    Ok(h.value() == content_hash)
}

/// The blocks of a decompressed chunk (`data`: its data extents back to back) that `dev` holds
/// differently, as merged extents (empty when it holds them all).
///
/// # Errors
/// A read error of the device.
pub fn differing(
    dev: &dyn ReadAt,
    hdr: &Header,
    extents: &[ChunkExtent],
    data: &[u8],
) -> std::io::Result<Vec<Extent>> {
    let bs = hdr.block_size as usize;
    let mut out: Vec<Extent> = Vec::new();
    let mut mark = |block: u64| match out.last_mut() {
        Some(e) if e.end() == block => e.len += 1,
        _ => out.push(Extent {
            start: block,
            len: 1,
        }),
    };
    let mut buf = Vec::new();
    let mut at = 0usize;
    for e in extents {
        let mut block = e.extent.start;
        let offset = block * bs as u64;
        let len = e.extent.len * bs as u64;
        read_windows(dev, hdr, offset, len, &mut buf, |window| {
            for held in window.chunks(bs) {
                let same = if e.zero {
                    is_zero(held)
                } else {
                    let want = &data[at..at + bs];
                    at += bs;
                    held == want
                };
                if !same {
                    mark(block);
                }
                block += 1;
            }
            true
        })?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::digest::content_hash;
    use crate::image::header::tests::sample;

    fn ext(start: u64, len: u64, zero: bool) -> ChunkExtent {
        ChunkExtent {
            extent: Extent { start, len },
            zero,
        }
    }

    #[test]
    fn a_device_holding_the_chunk_matches_and_one_changed_block_does_not() {
        let hdr = sample(); // 4096-byte blocks, 1000 blocks
        let extents = [ext(2, 3, false), ext(5, 2, true), ext(10, 1, false)];
        let data: Vec<u8> = (0..4 * 4096).map(|i| (i % 251) as u8 + 1).collect();
        let want = content_hash(&extents, &data, 4096);
        let mut dev = vec![0xAAu8; 1000 * 4096];
        dev[2 * 4096..5 * 4096].copy_from_slice(&data[..3 * 4096]);
        dev[5 * 4096..7 * 4096].fill(0);
        dev[10 * 4096..11 * 4096].copy_from_slice(&data[3 * 4096..]);
        assert!(holds(&dev, &hdr, &extents, want).unwrap());
        assert!(differing(&dev, &hdr, &extents, &data).unwrap().is_empty());
        // Blocks outside the extents (a gap, free space) do not matter.
        dev[7 * 4096] = 1;
        assert!(holds(&dev, &hdr, &extents, want).unwrap());
        // One byte of a data block, and one of a zero block.
        dev[3 * 4096 + 17] ^= 0xFF;
        dev[6 * 4096 + 5] = 9;
        assert!(!holds(&dev, &hdr, &extents, want).unwrap());
        assert_eq!(
            differing(&dev, &hdr, &extents, &data).unwrap(),
            vec![Extent { start: 3, len: 1 }, Extent { start: 6, len: 1 }]
        );
        // The same blocks at other addresses are not the same content.
        let moved = [ext(3, 3, false), ext(6, 2, true), ext(11, 1, false)];
        assert!(!holds(&dev, &hdr, &moved, want).unwrap());
    }
}
