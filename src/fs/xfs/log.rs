//! Whether the internal log needs recovery, found the way `xlog_find_head` and
//! `xlog_find_tail` find it (kernel `fs/xfs/xfs_log_recover.c`, log format in
//! `libxfs/xfs_log_format.h`). XFS keeps no "clean" flag: a filesystem was cleanly unmounted
//! when the last record before the log head is an unmount record.
//!
//! The log is a ring of 512-byte basic blocks (BBs). Each BB starts with the cycle number of
//! the pass that wrote it (record headers start with a magic instead and carry the cycle
//! inside), so the head is where the cycle number drops. Work is bounded: a binary search, one
//! window of at most [`SCAN_WINDOW`] BBs behind the head, and a search of at most
//! [`SCAN_WINDOW`] BBs for the last record header.

use byteorder::{BigEndian, ByteOrder};

use super::superblock::Superblock;
use super::{Reader, XfsError};

/// Basic block size (`BBSIZE`).
const BB: u64 = 512;
/// `XLOG_HEADER_MAGIC_NUM`.
const HEADER_MAGIC: u32 = 0xFEED_BABE;
/// How far behind the head an unfinished write may leave holes, and how far back the last
/// record header may start: eight in-flight records of at most 256 KiB
/// (`XLOG_TOTAL_REC_SHIFT` for v2 logs), in BBs.
pub const SCAN_WINDOW: u64 = (8 << 18) / BB;
/// Largest record (`XLOG_MAX_RECORD_BSIZE`).
const MAX_RECORD: u32 = 256 * 1024;
/// Header space per header BB (`XLOG_HEADER_CYCLE_SIZE`): a record bigger than this has
/// extended headers.
const HEADER_CYCLE_SIZE: u32 = 32 * 1024;
/// `XLOG_VERSION_2`.
const VERSION_2: u32 = 2;
/// `XLOG_UNMOUNT_TRANS`: the operation is an unmount record.
const UNMOUNT_TRANS: u8 = 0x20;
/// Tries at backing the head over records that were not completely written.
const MAX_PARTIAL_RECORDS: u32 = 8;

// `struct xlog_rec_header` offsets.
const H_MAGICNO: usize = 0;
const H_VERSION: usize = 8;
const H_LEN: usize = 12;
const H_NUM_LOGOPS: usize = 40;
const H_SIZE: usize = 320;
/// `struct xlog_op_header`: `oh_flags` after `oh_tid`, `oh_len` and `oh_clientid`.
const OH_FLAGS: usize = 9;

/// What the log says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogState {
    /// The last record is an unmount record (or the log was never written).
    Clean,
    /// Records after the last unmount: a mount must replay them.
    NeedsRecovery,
    /// The log is not a log rimage can read; treated as needing recovery.
    Unreadable(&'static str),
}

/// The cycle that wrote a BB (`xlog_get_cycle`): its first word, except in a record header,
/// which starts with the magic and keeps the cycle in `h_cycle` next to it.
fn cycle_of(bb: &[u8]) -> u32 {
    let first = BigEndian::read_u32(bb);
    if first == HEADER_MAGIC {
        BigEndian::read_u32(&bb[4..])
    } else {
        first
    }
}

struct Log<'a> {
    read: Reader<'a, u64>,
    /// Length in BBs.
    len: u64,
}

impl Log<'_> {
    fn cycle(&mut self, blk: u64) -> Result<u32, XfsError> {
        let mut b = [0u8; 8];
        (self.read)(blk * BB, &mut b)?;
        Ok(cycle_of(&b))
    }

    /// The first block of `lo..hi` whose cycle is `target`, when `lo` has another cycle and
    /// `hi` has `target` (`xlog_find_cycle_start`).
    fn cycle_start(&mut self, mut lo: u64, mut hi: u64, target: u32) -> Result<u64, XfsError> {
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.cycle(mid)? == target {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Ok(hi)
    }

    /// The first block of `start..start + n` whose cycle is `stop` (`xlog_find_verify_cycle`).
    fn first_with_cycle(&mut self, start: u64, n: u64, stop: u32) -> Result<Option<u64>, XfsError> {
        let mut buf = vec![0u8; (n * BB) as usize];
        (self.read)(start * BB, &mut buf)?;
        Ok(buf
            .chunks_exact(BB as usize)
            .position(|b| cycle_of(b) == stop)
            .map(|i| start + i as u64))
    }

    /// Where the next record would be written, `len` standing for "just wrapped".
    fn head(&mut self) -> Result<Option<u64>, XfsError> {
        let first = self.cycle(0)?;
        if first == 0 {
            return Ok(None);
        }
        let last = self.cycle(self.len - 1)?;
        let (mut head, stop) = if last == 0 {
            // Not wrapped yet: the head is the first never-written block.
            (self.cycle_start(0, self.len - 1, 0)?, 0)
        } else if first == last {
            // The whole log has one cycle: the head is at the end, about to wrap.
            (self.len, last.wrapping_sub(1))
        } else {
            (self.cycle_start(0, self.len - 1, last)?, last)
        };
        // Writes may complete out of order: a block of the old cycle shortly before the head
        // is a hole, and the head is really there.
        let window = SCAN_WINDOW.min(self.len);
        if head >= window {
            if let Some(b) = self.first_with_cycle(head - window, window, stop)? {
                head = b;
            }
        } else {
            let wrapped = window - head;
            let mut found = None;
            if last != 0 {
                found = self.first_with_cycle(self.len - wrapped, wrapped, stop.wrapping_sub(1))?;
            }
            if found.is_none() && head > 0 {
                found = self.first_with_cycle(0, head, stop)?;
            }
            if let Some(b) = found {
                head = b;
            }
        }
        Ok(Some(head))
    }

    /// The last record header at or before `before - 1`, going back at most
    /// [`SCAN_WINDOW`] blocks and wrapping round the ring.
    fn header_before(&mut self, before: u64) -> Result<Option<u64>, XfsError> {
        let mut blk = before % self.len;
        for _ in 0..SCAN_WINDOW.min(self.len) {
            blk = if blk == 0 { self.len - 1 } else { blk - 1 };
            let mut b = [0u8; 4];
            (self.read)(blk * BB, &mut b)?;
            if BigEndian::read_u32(&b) == HEADER_MAGIC {
                return Ok(Some(blk));
            }
        }
        Ok(None)
    }
}

/// Reads the log of `sb` through `read` (byte offset inside the log, buffer) and tells whether
/// it needs recovery.
///
/// # Errors
/// Only read errors; a log that makes no sense is [`LogState::Unreadable`].
pub fn state(sb: &Superblock, read: Reader<'_, u64>) -> Result<LogState, XfsError> {
    let len = u64::from(sb.logblocks) * u64::from(sb.block_size) / BB;
    let mut log = Log { read, len };
    let Some(mut head) = log.head()? else {
        // A zeroed log has nothing to replay (xlog_find_zeroed: "totally zeroed log").
        return Ok(LogState::Clean);
    };
    for _ in 0..MAX_PARTIAL_RECORDS {
        let Some(hdr) = log.header_before(head)? else {
            return Ok(LogState::Unreadable("no log record header before the head"));
        };
        let mut h = [0u8; BB as usize];
        (log.read)(hdr * BB, &mut h)?;
        let version = BigEndian::read_u32(&h[H_VERSION..]);
        let h_len = BigEndian::read_u32(&h[H_LEN..]);
        let h_size = BigEndian::read_u32(&h[H_SIZE..]);
        if h_len > MAX_RECORD || (version & VERSION_2 != 0 && h_size > MAX_RECORD) {
            return Ok(LogState::Unreadable("a log record is larger than 256 KiB"));
        }
        let hblks = if version & VERSION_2 != 0 && h_size > HEADER_CYCLE_SIZE {
            u64::from(h_size.div_ceil(HEADER_CYCLE_SIZE))
        } else {
            1
        };
        let end = (hdr + hblks + u64::from(h_len).div_ceil(BB)) % len;
        if end != head % len {
            // The last record was not completely written: the head is at its start.
            head = hdr;
            continue;
        }
        if BigEndian::read_u32(&h[H_MAGICNO..]) == HEADER_MAGIC
            && BigEndian::read_u32(&h[H_NUM_LOGOPS..]) == 1
        {
            let mut op = [0u8; BB as usize];
            (log.read)(((hdr + hblks) % len) * BB, &mut op)?;
            if op[OH_FLAGS] & UNMOUNT_TRANS != 0 {
                return Ok(LogState::Clean);
            }
        }
        return Ok(LogState::NeedsRecovery);
    }
    Ok(LogState::Unreadable("the log head cannot be found"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::xfs::superblock::Superblock;

    const LEN: usize = 64;

    fn sb() -> Superblock {
        Superblock {
            block_size: 512,
            block_log: 9,
            sect_size: 512,
            dblocks: 1 << 20,
            agblocks: 1 << 20,
            agblklog: 20,
            agcount: 1,
            logstart: 8,
            logblocks: LEN as u32,
            fdblocks: 0,
            uuid: [0; 16],
            meta_uuid: [0; 16],
            label: [0; 12],
            crc: true,
            incompat: 0,
            unsupported: None,
        }
    }

    /// Writes a record of one header and three data BBs at `blk`.
    fn record(log: &mut [u8], blk: usize, cycle: u32, unmount: bool) {
        let h = &mut log[blk * 512..(blk + 1) * 512];
        h.fill(0);
        BigEndian::write_u32(&mut h[H_MAGICNO..], HEADER_MAGIC);
        BigEndian::write_u32(&mut h[4..], cycle);
        BigEndian::write_u32(&mut h[H_VERSION..], VERSION_2);
        BigEndian::write_u32(&mut h[H_LEN..], 3 * 512);
        BigEndian::write_u32(&mut h[H_NUM_LOGOPS..], if unmount { 1 } else { 3 });
        BigEndian::write_u32(&mut h[H_SIZE..], HEADER_CYCLE_SIZE);
        for d in 1..4 {
            let b = &mut log[(blk + d) * 512..(blk + d + 1) * 512];
            b.fill(0);
            BigEndian::write_u32(b, cycle);
            if d == 1 && unmount {
                b[OH_FLAGS] = UNMOUNT_TRANS;
            }
        }
    }

    fn state_of(log: &[u8]) -> LogState {
        state(&sb(), &mut |off, buf| {
            let o = off as usize;
            buf.copy_from_slice(&log[o..o + buf.len()]);
            Ok(())
        })
        .unwrap()
    }

    #[test]
    fn head_and_last_record_are_found() {
        let mut log = vec![0u8; LEN * 512];
        assert_eq!(state_of(&log), LogState::Clean, "zeroed");
        // Not wrapped: five records of cycle 1, then zeros.
        for r in 0..5 {
            record(&mut log, r * 4, 1, r == 4);
        }
        assert_eq!(state_of(&log), LogState::Clean);
        record(&mut log, 16, 1, false);
        assert_eq!(state_of(&log), LogState::NeedsRecovery);
        // A stale header of cycle 0 just past the head (an earlier mkfs.xfs leaves such): it
        // starts with the magic, not with its cycle, and is no record of this log.
        record(&mut log, 16, 1, true);
        record(&mut log, 20, 0, false);
        BigEndian::write_u32(&mut log[20 * 512 + H_LEN..], 0);
        log[21 * 512..].fill(0);
        assert_eq!(
            state_of(&log),
            LogState::Clean,
            "stale header past the head"
        );
        log[20 * 512..].fill(0);
        record(&mut log, 16, 1, false);
        assert_eq!(state_of(&log), LogState::NeedsRecovery);
        // Wrapped: cycle 1 everywhere, cycle 2 over the first 20 blocks.
        for r in 0..LEN / 4 {
            record(&mut log, r * 4, 1, false);
        }
        for r in 0..5 {
            record(&mut log, r * 4, 2, r == 4);
        }
        assert_eq!(state_of(&log), LogState::Clean);
        record(&mut log, 16, 2, false);
        assert_eq!(state_of(&log), LogState::NeedsRecovery);
        // About to wrap: the whole log is cycle 2 and ends with an unmount record.
        for r in 0..LEN / 4 {
            record(&mut log, r * 4, 2, r == LEN / 4 - 1);
        }
        assert_eq!(state_of(&log), LogState::Clean);
        // A record whose data was never written: the head is before it.
        for r in 0..LEN / 4 {
            record(&mut log, r * 4, 1, false);
        }
        for r in 0..5 {
            record(&mut log, r * 4, 2, r == 3);
        }
        for d in 17..20 {
            BigEndian::write_u32(&mut log[d * 512..], 1);
        }
        assert_eq!(state_of(&log), LogState::Clean, "torn last record");
    }
}
