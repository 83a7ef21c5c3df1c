//! The jbd2 journal (journal.rst), read far enough to know what a replay would mark used.
//!
//! A filesystem that crashed (or was copied while mounted) has transactions in its journal
//! that are committed but not yet written to their home blocks. Among them are new copies of
//! block bitmaps: blocks those transactions allocated are free in the on-disk bitmap but used
//! once e2fsck or the kernel replays the journal. An image of such a filesystem must hold them,
//! or the replayed copy loses their contents. This module walks the log from `s_start` as
//! recovery's first pass does (descriptor blocks and their tags, commit blocks, sequence
//! numbers, wrap-around) and hands back the logged bitmap copies of committed transactions.
//!
//! All journal fields are big-endian.

use byteorder::{BigEndian, ByteOrder};

use super::inode::Mapping;
use super::{ExtError, ExtFs, read_at};
use crate::source::ReadAt;

/// `h_magic` of every journal metadata block.
const JBD2_MAGIC: u32 = 0xC03B_3998;
/// `h_blocktype` values.
const DESCRIPTOR_BLOCK: u32 = 1;
const COMMIT_BLOCK: u32 = 2;
const SUPERBLOCK_V1: u32 = 3;
const SUPERBLOCK_V2: u32 = 4;
const REVOKE_BLOCK: u32 = 5;
/// Journal superblock fields.
const S_BLOCKSIZE: usize = 0xC;
const S_MAXLEN: usize = 0x10;
const S_FIRST: usize = 0x14;
const S_SEQUENCE: usize = 0x18;
const S_START: usize = 0x1C;
const S_FEATURE_INCOMPAT: usize = 0x28;
/// Incompatible journal features that change the tag layout.
const INCOMPAT_64BIT: u32 = 0x2;
const INCOMPAT_CSUM_V2: u32 = 0x8;
const INCOMPAT_CSUM_V3: u32 = 0x10;
/// Tag flags.
const FLAG_ESCAPE: u32 = 0x1;
const FLAG_SAME_UUID: u32 = 0x2;
const FLAG_LAST_TAG: u32 = 0x8;
/// Bytes of a block header (magic, type, sequence).
const HEADER_LEN: usize = 12;
/// Bytes of the checksum tail of a descriptor block (csum v2/v3).
const TAIL_LEN: usize = 4;

/// A block the journal would write home on replay: where it goes, and where its logged copy is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoggedBlock {
    /// The filesystem block the copy is for.
    pub home: u64,
    /// The journal block (logical, within the journal) holding the copy.
    pub copy: u64,
    /// The copy's first four bytes were the journal magic and are stored as zeros.
    pub escaped: bool,
}

/// The committed, not yet checkpointed part of a journal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PendingLog {
    /// Committed transactions found.
    pub transactions: u64,
    /// Every block they log, oldest first (a block logged twice appears twice).
    pub blocks: Vec<LoggedBlock>,
}

/// The journal's blocks, mapped from the journal inode, with the log's geometry.
pub struct Journal<'a> {
    fs: &'a ExtFs,
    map: Vec<Mapping>,
    block_size: u64,
    first: u64,
    maxlen: u64,
    sequence: u32,
    start: u64,
    tag_len: usize,
    csum: bool,
}

impl<'a> Journal<'a> {
    /// Opens the internal journal (inode `s_journal_inum`) from its superblock.
    ///
    /// # Errors
    /// A journal inode or superblock that cannot be read or makes no sense.
    pub fn open(fs: &'a ExtFs, dev: &(impl ReadAt + ?Sized), ino: u32) -> Result<Self, ExtError> {
        let inode = fs.read_inode(dev, ino)?;
        let map = fs.inode_blocks(dev, ino, &inode)?.data;
        let bad = |reason| ExtError::BadJournal { reason };
        let block_size = u64::from(fs.layout.block_size);
        let mut j = Self {
            fs,
            map,
            block_size,
            first: 0,
            maxlen: 0,
            sequence: 0,
            start: 0,
            tag_len: 0,
            csum: false,
        };
        let mut sb = vec![0u8; block_size as usize];
        j.read(dev, 0, &mut sb)?;
        if BigEndian::read_u32(&sb[0..]) != JBD2_MAGIC {
            return Err(bad("no journal superblock magic"));
        }
        let version = BigEndian::read_u32(&sb[4..]);
        if version != SUPERBLOCK_V1 && version != SUPERBLOCK_V2 {
            return Err(bad("unknown journal superblock type"));
        }
        if u64::from(BigEndian::read_u32(&sb[S_BLOCKSIZE..])) != block_size {
            return Err(bad("journal block size differs from the filesystem's"));
        }
        j.maxlen = u64::from(BigEndian::read_u32(&sb[S_MAXLEN..]));
        j.first = u64::from(BigEndian::read_u32(&sb[S_FIRST..]));
        j.sequence = BigEndian::read_u32(&sb[S_SEQUENCE..]);
        j.start = u64::from(BigEndian::read_u32(&sb[S_START..]));
        if j.first == 0 || j.first >= j.maxlen || j.start >= j.maxlen {
            return Err(bad("journal log bounds out of range"));
        }
        let incompat = if version == SUPERBLOCK_V2 {
            BigEndian::read_u32(&sb[S_FEATURE_INCOMPAT..])
        } else {
            0
        };
        // journal_tag_bytes() of the kernel.
        j.csum = incompat & (INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3) != 0;
        j.tag_len = if incompat & INCOMPAT_CSUM_V3 != 0 {
            16
        } else {
            let mut n = 12
                + if incompat & INCOMPAT_CSUM_V2 != 0 {
                    2
                } else {
                    0
                };
            if incompat & INCOMPAT_64BIT == 0 {
                n -= 4;
            }
            n
        };
        Ok(j)
    }

    /// Where the journal's logical block `logical` is on disk.
    fn physical(&self, logical: u64) -> Option<u64> {
        let i = self.map.partition_point(|m| m.logical + m.len <= logical);
        let m = self.map.get(i)?;
        (m.logical <= logical).then(|| m.physical + (logical - m.logical))
    }

    /// Reads journal block `logical` into `buf`.
    ///
    /// # Errors
    /// A block the journal inode does not map, or a read error.
    pub fn read(
        &self,
        dev: &(impl ReadAt + ?Sized),
        logical: u64,
        buf: &mut [u8],
    ) -> Result<(), ExtError> {
        let physical = self.physical(logical).ok_or(ExtError::BadJournal {
            reason: "the journal inode does not map a block of the log",
        })?;
        read_at(dev, buf, physical * self.block_size)
    }

    /// The next log position after `pos`, wrapping from the end to `s_first`.
    fn next(&self, pos: u64) -> u64 {
        if pos + 1 >= self.maxlen {
            self.first
        } else {
            pos + 1
        }
    }

    /// Walks the log from `s_start` and collects the blocks of every committed transaction, as
    /// recovery's scan pass does; an uncommitted tail is not replayed and not returned.
    ///
    /// # Errors
    /// A read error, or a descriptor block whose tags run past it.
    pub fn pending(&self, dev: &(impl ReadAt + ?Sized)) -> Result<PendingLog, ExtError> {
        let mut log = PendingLog::default();
        if self.start == 0 {
            // A clean journal: nothing to replay.
            return Ok(log);
        }
        let mut buf = vec![0u8; self.block_size as usize];
        let mut pos = self.start;
        let mut seq = self.sequence;
        let mut open: Vec<LoggedBlock> = Vec::new();
        // Every log block is visited at most once per pass.
        for _ in 0..self.maxlen {
            self.read(dev, pos, &mut buf)?;
            if BigEndian::read_u32(&buf[0..]) != JBD2_MAGIC || BigEndian::read_u32(&buf[8..]) != seq
            {
                break;
            }
            match BigEndian::read_u32(&buf[4..]) {
                DESCRIPTOR_BLOCK => {
                    let end = buf.len() - if self.csum { TAIL_LEN } else { 0 };
                    let mut at = HEADER_LEN;
                    loop {
                        if at + self.tag_len > end {
                            return Err(ExtError::BadJournal {
                                reason: "descriptor block tags run past the block",
                            });
                        }
                        let (home, flags) = self.tag(&buf[at..at + self.tag_len]);
                        pos = self.next(pos);
                        open.push(LoggedBlock {
                            home,
                            copy: pos,
                            escaped: flags & FLAG_ESCAPE != 0,
                        });
                        at += self.tag_len;
                        if flags & FLAG_SAME_UUID == 0 {
                            at += 16;
                        }
                        if flags & FLAG_LAST_TAG != 0 {
                            break;
                        }
                    }
                }
                COMMIT_BLOCK => {
                    log.transactions += 1;
                    log.blocks.append(&mut open);
                    seq = seq.wrapping_add(1);
                }
                // Revocations only stop replays of older copies; keeping every copy's bits is
                // the safe side for "which blocks are used".
                REVOKE_BLOCK => {}
                _ => break,
            }
            pos = self.next(pos);
        }
        Ok(log)
    }

    /// (home block, flags) of a descriptor tag.
    fn tag(&self, t: &[u8]) -> (u64, u32) {
        let low = u64::from(BigEndian::read_u32(&t[0..]));
        if self.tag_len == 16 {
            // journal_block_tag3_t: blocknr, flags, blocknr_high, checksum.
            let high = u64::from(BigEndian::read_u32(&t[8..]));
            (low | high << 32, BigEndian::read_u32(&t[4..]))
        } else {
            // journal_block_tag_t: blocknr, checksum (16), flags (16), [blocknr_high].
            let flags = u32::from(BigEndian::read_u16(&t[6..]));
            let high = if t.len() >= 12 {
                u64::from(BigEndian::read_u32(&t[8..]))
            } else {
                0
            };
            (low | high << 32, flags)
        }
    }

    /// The filesystem this journal belongs to.
    pub fn fs(&self) -> &ExtFs {
        self.fs
    }

    /// The journal's own blocks on disk.
    pub fn extents(&self) -> impl Iterator<Item = crate::fs::Extent> + '_ {
        self.map.iter().map(|m| crate::fs::Extent {
            start: m.physical,
            len: m.len,
        })
    }
}

/// Restores a logged copy whose first four bytes were escaped (zeroed because they equalled
/// the journal magic).
pub fn unescape(block: &mut [u8], escaped: bool) {
    if escaped {
        BigEndian::write_u32(&mut block[0..], JBD2_MAGIC);
    }
}

/// The blocks that replaying the journal's committed transactions would mark used: every bit
/// set in a logged copy of a block bitmap (their union, whichever copy a replay keeps), as
/// extents; and how many transactions are pending.
///
/// # Errors
/// A journal that cannot be read.
pub fn pending_allocations(
    fs: &ExtFs,
    dev: &(impl ReadAt + ?Sized),
) -> Result<(Vec<crate::fs::Extent>, u64), ExtError> {
    let journal = Journal::open(fs, dev, fs.sb.journal_inum)?;
    let log = journal.pending(dev)?;
    let bitmaps: std::collections::HashMap<u64, u32> = (0u32..)
        .zip(&fs.groups)
        .map(|(g, d)| (d.block_bitmap, g))
        .collect();
    let l = &fs.layout;
    let mut buf = vec![0u8; l.block_size as usize];
    let mut out = Vec::new();
    for b in &log.blocks {
        let Some(&group) = bitmaps.get(&b.home) else {
            continue;
        };
        journal.read(dev, b.copy, &mut buf)?;
        unescape(&mut buf, b.escaped);
        let first = l.group_first_block(group);
        let count = l.group_block_count(group);
        let clusters = count.div_ceil(l.cluster_ratio()) as usize;
        let nbytes = fs.sb.clusters_per_group as usize / 8;
        super::bitmap::for_each_run(&buf[..nbytes], clusters, |c, n| {
            let start = first + ((c as u64) << l.ratio_bits);
            let stop = (first + (((c + n) as u64) << l.ratio_bits)).min(first + count);
            out.push(crate::fs::Extent {
                start,
                len: stop - start,
            });
        });
    }
    out.extend(journal.extents());
    out.sort_unstable_by_key(|e| e.start);
    Ok((super::merge_sorted(out), log.transactions))
}
