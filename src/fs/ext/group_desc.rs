//! Block group descriptors: 32 bytes, or `s_desc_size` (≥ 64) bytes on 64bit filesystems.
//!
//! Offsets follow the kernel's "Block Group Descriptors" table
//! (Documentation/filesystems/ext4/group_descr.rst).

use byteorder::{ByteOrder, LittleEndian};

use super::checksum::{crc16, crc32c_raw};
use super::superblock::{Superblock, ro_compat};

const BG_BLOCK_BITMAP_LO: usize = 0x0;
const BG_INODE_BITMAP_LO: usize = 0x4;
const BG_INODE_TABLE_LO: usize = 0x8;
const BG_FLAGS: usize = 0x12;
const BG_BLOCK_BITMAP_CSUM_LO: usize = 0x18;
const BG_ITABLE_UNUSED_LO: usize = 0x1C;
const BG_CHECKSUM: usize = 0x1E;
const BG_BLOCK_BITMAP_HI: usize = 0x20;
const BG_INODE_BITMAP_HI: usize = 0x24;
const BG_INODE_TABLE_HI: usize = 0x28;
const BG_ITABLE_UNUSED_HI: usize = 0x32;
const BG_BLOCK_BITMAP_CSUM_HI: usize = 0x38;
/// Descriptors at least this long carry the high half of the block bitmap checksum.
const BLOCK_BITMAP_CSUM_HI_END: usize = BG_BLOCK_BITMAP_CSUM_HI + 2;
/// Descriptors at least this long carry the `_hi` halves of the block numbers.
const HI_FIELDS_END: usize = BG_INODE_TABLE_HI + 4;

/// `bg_flags`: the inode table and bitmap are not initialised; no inode of the group is in use.
pub const BG_INODE_UNINIT: u16 = 0x1;
/// `bg_flags`: the block bitmap is not initialised; only the group's metadata is in use.
pub const BG_BLOCK_UNINIT: u16 = 0x2;

/// One decoded group descriptor (only what the scanner uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupDesc {
    /// Block holding this group's block bitmap.
    pub block_bitmap: u64,
    /// Block holding this group's inode bitmap.
    pub inode_bitmap: u64,
    /// First block of this group's inode table.
    pub inode_table: u64,
    /// `bg_flags`.
    pub flags: u16,
    /// Checksum of the block bitmap as stored (low 16 bits only on 32-byte descriptors).
    pub block_bitmap_csum: u32,
    /// `bg_itable_unused`: inodes at the end of the group's table never used.
    pub itable_unused: u32,
    /// Whether `bg_checksum` matched (always true when the filesystem has no descriptor checksums).
    pub checksum_ok: bool,
}

impl GroupDesc {
    /// Decodes the descriptor of `group` from exactly `sb.desc_size` bytes.
    ///
    /// Never fails: any bit pattern is a descriptor; whether its block numbers make sense is
    /// checked against the filesystem size by the caller.
    pub fn parse(raw: &[u8], group: u32, sb: &Superblock) -> Self {
        debug_assert_eq!(raw.len(), sb.desc_size as usize);
        let u32_at = |off: usize| LittleEndian::read_u32(&raw[off..off + 4]);
        let u16_at = |off: usize| LittleEndian::read_u16(&raw[off..off + 2]);
        let wide = raw.len() >= HI_FIELDS_END;
        let block = |lo: usize, hi: usize| {
            let low = u64::from(u32_at(lo));
            if wide {
                low | (u64::from(u32_at(hi)) << 32)
            } else {
                low
            }
        };
        let mut block_bitmap_csum = u32::from(u16_at(BG_BLOCK_BITMAP_CSUM_LO));
        if raw.len() >= BLOCK_BITMAP_CSUM_HI_END {
            block_bitmap_csum |= u32::from(u16_at(BG_BLOCK_BITMAP_CSUM_HI)) << 16;
        }
        let mut itable_unused = u32::from(u16_at(BG_ITABLE_UNUSED_LO));
        if wide {
            itable_unused |= u32::from(u16_at(BG_ITABLE_UNUSED_HI)) << 16;
        }
        Self {
            block_bitmap: block(BG_BLOCK_BITMAP_LO, BG_BLOCK_BITMAP_HI),
            inode_bitmap: block(BG_INODE_BITMAP_LO, BG_INODE_BITMAP_HI),
            inode_table: block(BG_INODE_TABLE_LO, BG_INODE_TABLE_HI),
            flags: u16_at(BG_FLAGS),
            block_bitmap_csum,
            itable_unused,
            checksum_ok: checksum_matches(raw, group, sb),
        }
    }

    /// Whether the group is flagged `BLOCK_UNINIT`.
    pub fn block_uninit(&self) -> bool {
        self.flags & BG_BLOCK_UNINIT != 0
    }

    /// Whether the group is flagged `INODE_UNINIT`.
    pub fn inode_uninit(&self) -> bool {
        self.flags & BG_INODE_UNINIT != 0
    }

    /// Whether the block bitmap checksum matches `bitmap` (metadata_csum filesystems).
    pub fn block_bitmap_csum_matches(&self, sb: &Superblock, bitmap: &[u8]) -> bool {
        let computed = crc32c_raw(sb.csum_seed, bitmap);
        if sb.desc_size as usize >= BLOCK_BITMAP_CSUM_HI_END {
            computed == self.block_bitmap_csum
        } else {
            computed & 0xFFFF == self.block_bitmap_csum
        }
    }
}

/// `bg_checksum` (group_descr.rst): crc32c(seed, group, desc with the field zeroed) & 0xFFFF on
/// metadata_csum filesystems; crc16(uuid, group, desc without the field) on gdt_csum ones.
fn checksum_matches(raw: &[u8], group: u32, sb: &Superblock) -> bool {
    let stored = LittleEndian::read_u16(&raw[BG_CHECKSUM..BG_CHECKSUM + 2]);
    let group_le = group.to_le_bytes();
    let before = &raw[..BG_CHECKSUM];
    let after = &raw[BG_CHECKSUM + 2..];
    if sb.has_ro_compat(ro_compat::METADATA_CSUM) {
        let mut crc = crc32c_raw(sb.csum_seed, &group_le);
        crc = crc32c_raw(crc, before);
        crc = crc32c_raw(crc, &[0, 0]);
        crc = crc32c_raw(crc, after);
        (crc & 0xFFFF) as u16 == stored
    } else if sb.has_ro_compat(ro_compat::GDT_CSUM) {
        crc16(&[&sb.uuid, &group_le, before, after]) == stored
    } else {
        true
    }
}
