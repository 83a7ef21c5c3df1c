//! The by-block free-space btree of one AG (the "bnobt"): short-form btree blocks whose
//! records are free extents `(ar_startblock, ar_blockcount)`, sorted by block.
//!
//! Block layout (`struct xfs_btree_block` with its short-form header, `libxfs/xfs_format.h`):
//! a 16-byte header (v4) or 56-byte header (v5: self-describing, with a CRC), then records in a
//! leaf; in an interior node, keys fill the first half of the space as if the node were full
//! (`maxrecs` keys) and the pointers start after them, which is why pointer `i` is at
//! `header + maxrecs * 8 + i * 4` whatever `numrecs` is.
//!
//! The walk reads the interior levels top-down, in key order, which lists the leaves in key
//! order and every btree block once; leaves are then read one at a time by the caller, so
//! memory is one pointer per leaf, not one record per free extent.

use byteorder::{BigEndian, ByteOrder};

use super::ag::Agf;
use super::superblock::{Superblock, metadata_crc, stored_crc};
use super::{Reader, XfsError};

/// `XFS_ABTB_MAGIC`, "ABTB" (v4).
const ABTB_MAGIC: u32 = 0x4142_5442;
/// `XFS_ABTB_CRC_MAGIC`, "AB3B" (v5).
const ABTB_CRC_MAGIC: u32 = 0x4142_3342;

// Short-form header offsets.
const BB_MAGIC: usize = 0;
const BB_LEVEL: usize = 4;
const BB_NUMRECS: usize = 6;
/// v5 only: the block's own disk address in 512-byte units.
const BB_BLKNO: usize = 16;
const BB_UUID: usize = 32;
const BB_OWNER: usize = 48;
/// `XFS_BTREE_SBLOCK_CRC_OFF`.
const BB_CRC: usize = 52;
/// `XFS_BTREE_SBLOCK_LEN` and `XFS_BTREE_SBLOCK_CRC_LEN`.
const HEADER_V4: usize = 16;
const HEADER_V5: usize = 56;
/// A record (`xfs_alloc_rec`) and a key (`xfs_alloc_key`) are two 32-bit numbers; a pointer
/// (`xfs_alloc_ptr_t`) is one.
const REC_LEN: usize = 8;
const KEY_LEN: usize = 8;
const PTR_LEN: usize = 4;

/// One free extent, in AG blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreeExtent {
    /// First free block.
    pub start: u32,
    /// Free blocks.
    pub len: u32,
}

fn header_len(sb: &Superblock) -> usize {
    if sb.crc { HEADER_V5 } else { HEADER_V4 }
}

/// Records a leaf holds (`xfs_allocbt_maxrecs(mp, blocklen, leaf=1)`).
fn leaf_maxrecs(sb: &Superblock) -> usize {
    (sb.block_size as usize - header_len(sb)) / REC_LEN
}

/// Keys (and pointers) an interior node holds.
fn node_maxrecs(sb: &Superblock) -> usize {
    (sb.block_size as usize - header_len(sb)) / (KEY_LEN + PTR_LEN)
}

/// The tallest a by-block btree can be in an AG of this size (`m_alloc_maxlevels`): the
/// height of a tree of half-full blocks holding the most free extents an AG can have, one
/// for every other block.
pub fn max_levels(sb: &Superblock) -> u32 {
    let leaf_min = (leaf_maxrecs(sb) / 2).max(1) as u64;
    let node_min = (node_maxrecs(sb) / 2).max(2) as u64;
    let records = u64::from(sb.agblocks).div_ceil(2);
    let mut blocks = records.div_ceil(leaf_min);
    let mut levels = 1;
    while blocks > 1 {
        blocks = blocks.div_ceil(node_min);
        levels += 1;
    }
    levels
}

/// Where a btree walk reads from, and what it reports about checksums.
pub struct Walk<'a> {
    /// The superblock.
    pub sb: &'a Superblock,
    /// The AG.
    pub ag: u32,
    /// Its AGF.
    pub agf: &'a Agf,
    /// Refuse blocks whose CRC does not match.
    pub verify_checksums: bool,
}

/// What a walk of the interior levels found.
#[derive(Debug, Default)]
pub struct Shape {
    /// Leaves, in key order.
    pub leaves: Vec<u32>,
    /// Every block of the btree (interior nodes and leaves), sorted.
    pub blocks: Vec<u32>,
    /// Blocks read whose CRC did not match (lenient scans only).
    pub bad_checksums: u64,
}

impl Walk<'_> {
    fn bad(&self, block: u32, reason: &'static str) -> XfsError {
        XfsError::BadBtree {
            ag: self.ag,
            block,
            reason,
        }
    }

    /// Checks the header of btree block `agbno` read into `buf`; returns its record count and
    /// whether its CRC matched.
    fn check_header(&self, buf: &[u8], agbno: u32, level: u32) -> Result<(usize, bool), XfsError> {
        let sb = self.sb;
        let magic = BigEndian::read_u32(&buf[BB_MAGIC..]);
        let want = if sb.crc { ABTB_CRC_MAGIC } else { ABTB_MAGIC };
        if magic != want {
            return Err(self.bad(agbno, "not a free-space btree block (magic)"));
        }
        if u32::from(BigEndian::read_u16(&buf[BB_LEVEL..])) != level {
            return Err(self.bad(agbno, "btree level differs from its place in the tree"));
        }
        let numrecs = usize::from(BigEndian::read_u16(&buf[BB_NUMRECS..]));
        let max = if level == 0 {
            leaf_maxrecs(sb)
        } else {
            node_maxrecs(sb)
        };
        if numrecs > max {
            return Err(self.bad(agbno, "more records than a block holds"));
        }
        if level > 0 && numrecs == 0 {
            return Err(self.bad(agbno, "interior btree block without pointers"));
        }
        let mut crc_ok = true;
        if sb.crc {
            let daddr = sb.linear(self.ag, agbno) << (sb.block_log - 9);
            if BigEndian::read_u64(&buf[BB_BLKNO..]) != daddr {
                return Err(self.bad(agbno, "btree block says it is elsewhere (bb_blkno)"));
            }
            if BigEndian::read_u32(&buf[BB_OWNER..]) != self.ag
                || buf[BB_UUID..BB_UUID + 16] != sb.meta_uuid
            {
                return Err(self.bad(agbno, "btree block belongs to another AG or filesystem"));
            }
            if stored_crc(buf, BB_CRC) != metadata_crc(buf, BB_CRC) {
                if self.verify_checksums {
                    return Err(XfsError::BtreeChecksum {
                        ag: self.ag,
                        block: agbno,
                    });
                }
                crc_ok = false;
            }
        }
        Ok((numrecs, crc_ok))
    }

    /// Reads the interior levels from the root down and lists the leaves in key order.
    /// Bounded: the height is at most [`max_levels`], every pointer is inside the AG, and a
    /// block reached twice (a loop, or two parents) is an error, so at most `agf_length`
    /// blocks are read.
    ///
    /// # Errors
    /// A read error, a block that is not a by-block btree block at the expected level, or a
    /// pointer outside the AG or to a block already reached.
    pub fn shape(&self, read: Reader<'_, u32>) -> Result<Shape, XfsError> {
        let sb = self.sb;
        let mut buf = vec![0u8; sb.block_size as usize];
        let mut shape = Shape::default();
        let mut level_blocks = vec![self.agf.bno_root];
        let mut seen = std::collections::HashSet::new();
        seen.insert(self.agf.bno_root);
        let ptr_base = header_len(sb) + node_maxrecs(sb) * KEY_LEN;
        for level in (1..self.agf.bno_level).rev() {
            let mut next = Vec::new();
            for &agbno in &level_blocks {
                read(agbno, &mut buf)?;
                let (numrecs, crc_ok) = self.check_header(&buf, agbno, level)?;
                shape.bad_checksums += u64::from(!crc_ok);
                for i in 0..numrecs {
                    let at = ptr_base + i * PTR_LEN;
                    let child = BigEndian::read_u32(&buf[at..at + PTR_LEN]);
                    if child == 0 || child >= self.agf.length {
                        return Err(self.bad(agbno, "btree pointer outside the AG"));
                    }
                    if !seen.insert(child) {
                        return Err(self.bad(child, "btree block reached twice (a loop)"));
                    }
                    next.push(child);
                }
            }
            shape.blocks.extend_from_slice(&level_blocks);
            level_blocks = next;
        }
        shape.blocks.extend_from_slice(&level_blocks);
        shape.blocks.sort_unstable();
        shape.leaves = level_blocks;
        Ok(shape)
    }

    /// Decodes leaf `agbno` (read into `buf`) into `out`, checking that its records lie in the
    /// AG, are not empty, and follow `prev_end` (the end of the previous record) in order.
    /// Returns the new `prev_end` and whether the CRC matched.
    ///
    /// # Errors
    /// A block that is not a leaf of this btree, or a record out of order or outside the AG.
    pub fn leaf(
        &self,
        buf: &[u8],
        agbno: u32,
        mut prev_end: u64,
        out: &mut Vec<FreeExtent>,
    ) -> Result<(u64, bool), XfsError> {
        let (numrecs, crc_ok) = self.check_header(buf, agbno, 0)?;
        let base = header_len(self.sb);
        for i in 0..numrecs {
            let at = base + i * REC_LEN;
            let start = BigEndian::read_u32(&buf[at..]);
            let len = BigEndian::read_u32(&buf[at + 4..]);
            let end = u64::from(start) + u64::from(len);
            if len == 0 || end > u64::from(self.agf.length) {
                return Err(self.bad(agbno, "free extent is empty or runs past the AG"));
            }
            if u64::from(start) < prev_end {
                return Err(self.bad(agbno, "free extents out of order or overlapping"));
            }
            prev_end = end;
            out.push(FreeExtent { start, len });
        }
        Ok((prev_end, crc_ok))
    }
}
