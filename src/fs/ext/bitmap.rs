//! Bit operations on one group's block bitmap (bit `n` of byte `n / 8`, least significant
//! first: the kernel's little-endian bitmap order).

/// Sets bits `start..start + len`, ignoring any part beyond the bitmap.
pub fn set_range(bitmap: &mut [u8], start: usize, len: usize) {
    let end = start.saturating_add(len).min(bitmap.len() * 8);
    let mut bit = start;
    while bit < end && !bit.is_multiple_of(8) {
        bitmap[bit / 8] |= 1 << (bit % 8);
        bit += 1;
    }
    while bit + 8 <= end {
        bitmap[bit / 8] = 0xFF;
        bit += 8;
    }
    while bit < end {
        bitmap[bit / 8] |= 1 << (bit % 8);
        bit += 1;
    }
}

/// The 64 bits starting at bit `64 * word`, zero-padded past the end of the bitmap.
fn word(bitmap: &[u8], word: usize) -> u64 {
    let start = word * 8;
    match bitmap.get(start..start + 8) {
        Some(bytes) => u64::from_le_bytes(bytes.try_into().expect("8 bytes")),
        None => {
            let mut buf = [0u8; 8];
            let tail = bitmap.get(start..).unwrap_or_default();
            buf[..tail.len()].copy_from_slice(tail);
            u64::from_le_bytes(buf)
        }
    }
}

/// First bit at or after `from` (and before `limit`) whose value is `value`.
fn find(bitmap: &[u8], from: usize, limit: usize, value: bool) -> Option<usize> {
    let mut pos = from;
    while pos < limit {
        let mut w = word(bitmap, pos / 64);
        if !value {
            w = !w;
        }
        w >>= pos % 64;
        if w != 0 {
            let hit = pos + w.trailing_zeros() as usize;
            return (hit < limit).then_some(hit);
        }
        pos = (pos / 64 + 1) * 64;
    }
    None
}

/// Calls `emit(first_bit, count)` for every run of set bits among the first `nbits` bits.
pub fn for_each_run(bitmap: &[u8], nbits: usize, mut emit: impl FnMut(usize, usize)) {
    let limit = nbits.min(bitmap.len() * 8);
    let mut pos = 0;
    while let Some(start) = find(bitmap, pos, limit, true) {
        let end = find(bitmap, start, limit, false).unwrap_or(limit);
        emit(start, end - start);
        pos = end;
    }
}

/// Whether bit `i` is set.
pub fn test(bitmap: &[u8], i: usize) -> bool {
    bitmap[i / 8] & (1 << (i % 8)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(bitmap: &[u8], nbits: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for_each_run(bitmap, nbits, |s, n| out.push((s, n)));
        out
    }

    #[test]
    fn runs_match_a_bit_by_bit_walk() {
        // A pseudo-random bitmap, compared with the obvious per-bit loop.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let bitmap: Vec<u8> = (0..300)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Bias towards long runs of zeros and ones.
                match x % 4 {
                    0 => 0,
                    1 => 0xFF,
                    _ => x as u8,
                }
            })
            .collect();
        for nbits in [0, 1, 7, 63, 64, 65, 1000, 2399, 2400, 5000] {
            let mut expected = Vec::new();
            let limit = nbits.min(bitmap.len() * 8);
            let mut i = 0;
            while i < limit {
                if bitmap[i / 8] >> (i % 8) & 1 == 1 {
                    let s = i;
                    while i < limit && bitmap[i / 8] >> (i % 8) & 1 == 1 {
                        i += 1;
                    }
                    expected.push((s, i - s));
                } else {
                    i += 1;
                }
            }
            assert_eq!(runs(&bitmap, nbits), expected, "nbits {nbits}");
        }
    }

    #[test]
    fn set_range_sets_exactly_the_range() {
        for (start, len) in [
            (0, 0),
            (0, 1),
            (3, 5),
            (3, 20),
            (8, 8),
            (13, 100),
            (250, 100),
        ] {
            let mut bm = vec![0u8; 32];
            set_range(&mut bm, start, len);
            for bit in 0..256 {
                let set = bm[bit / 8] >> (bit % 8) & 1 == 1;
                assert_eq!(
                    set,
                    bit >= start && bit < start + len,
                    "start {start} len {len} bit {bit}"
                );
            }
        }
    }
}
