//! Where the fixed metadata of each block group lies: superblock backups, group descriptor
//! blocks (classic or meta_bg), reserved GDT blocks.
//!
//! This follows the kernel's "Layout" and "Meta Block Groups" sections
//! (Documentation/filesystems/ext4/overview.rst, blockgroup.rst) and reproduces e2fsprogs'
//! `ext2fs_bg_has_super`, `ext2fs_super_and_bgd_loc2` and `ext2fs_descriptor_block_loc2`
//! semantics, which is what e2fsck checks a filesystem against.

use super::Extent;
use super::superblock::{Superblock, compat, incompat, ro_compat};

/// Geometry derived from a validated superblock. All arithmetic here is on values the
/// superblock validation bounded, so it cannot overflow.
#[derive(Clone, Debug)]
pub struct Layout {
    pub(crate) blocks_count: u64,
    pub(crate) first_data_block: u64,
    pub(crate) blocks_per_group: u64,
    pub(crate) group_count: u32,
    pub(crate) block_size: u32,
    pub(crate) ratio_bits: u32,
    pub(crate) desc_size: u32,
    /// Descriptors per descriptor block.
    pub(crate) desc_per_block: u32,
    /// Blocks needed for all descriptors.
    pub(crate) desc_blocks: u64,
    /// Blocks of the inode table of each group.
    pub(crate) inode_table_blocks: u64,
    meta_bg: bool,
    first_meta_bg: u32,
    reserved_gdt_blocks: u64,
    sparse_super: bool,
    sparse_super2: Option<[u32; 2]>,
}

impl Layout {
    /// Derives the layout from a superblock that [`Superblock::parse`] accepted.
    pub fn new(sb: &Superblock) -> Self {
        let block_size = sb.block_size();
        let desc_per_block = block_size / sb.desc_size;
        let group_count = sb.group_count();
        let inode_bytes = u64::from(sb.inodes_per_group) * u64::from(sb.inode_size);
        Self {
            blocks_count: sb.blocks_count,
            first_data_block: u64::from(sb.first_data_block),
            blocks_per_group: u64::from(sb.blocks_per_group),
            group_count,
            block_size,
            ratio_bits: sb.cluster_ratio_bits(),
            desc_size: sb.desc_size,
            desc_per_block,
            desc_blocks: u64::from(group_count).div_ceil(u64::from(desc_per_block)),
            inode_table_blocks: inode_bytes.div_ceil(u64::from(block_size)),
            meta_bg: sb.has_incompat(incompat::META_BG),
            first_meta_bg: sb.first_meta_bg,
            reserved_gdt_blocks: if sb.has_incompat(incompat::META_BG) {
                0
            } else {
                u64::from(sb.reserved_gdt_blocks)
            },
            sparse_super: sb.has_ro_compat(ro_compat::SPARSE_SUPER),
            sparse_super2: sb
                .has_compat(compat::SPARSE_SUPER2)
                .then_some(sb.backup_bgs),
        }
    }

    /// First block of `group`.
    pub fn group_first_block(&self, group: u32) -> u64 {
        self.first_data_block + u64::from(group) * self.blocks_per_group
    }

    /// Blocks in `group` (the last group may be short).
    pub fn group_block_count(&self, group: u32) -> u64 {
        (self.blocks_count - self.group_first_block(group)).min(self.blocks_per_group)
    }

    /// Blocks per cluster.
    pub fn cluster_ratio(&self) -> u64 {
        1 << self.ratio_bits
    }

    /// Whether `group` holds a superblock (primary or backup).
    pub fn has_super(&self, group: u32) -> bool {
        if group == 0 {
            return true;
        }
        if let Some(backups) = self.sparse_super2 {
            return backups.contains(&group);
        }
        if group <= 1 || !self.sparse_super {
            return true;
        }
        group % 2 == 1 && (is_power_of(group, 3) || is_power_of(group, 5) || is_power_of(group, 7))
    }

    /// The block the superblock copy of `group` starts in. Group 0 on a 1 KiB-block filesystem
    /// with `first_data_block` 0 (bigalloc) still has its superblock at byte 1024, block 1.
    fn super_block_of(&self, group: u32) -> u64 {
        let first = self.group_first_block(group);
        if first == 0 && self.block_size == 1024 {
            1
        } else {
            first
        }
    }

    /// Whether `group`'s descriptors are in the classic (contiguous) table.
    fn classic_gdt(&self, group: u32) -> bool {
        !self.meta_bg || group / self.desc_per_block < self.first_meta_bg
    }

    /// Blocks of the classic descriptor table (plus reserved GDT blocks) after each superblock.
    fn classic_gdt_blocks(&self) -> u64 {
        if self.meta_bg {
            u64::from(self.first_meta_bg)
        } else {
            self.desc_blocks + self.reserved_gdt_blocks
        }
    }

    /// Block number of descriptor block `i` of the primary copy.
    pub fn descriptor_block(&self, i: u64) -> u64 {
        if !self.meta_bg || i < u64::from(self.first_meta_bg) {
            return self.super_block_of(0) + 1 + i;
        }
        // meta_bg: descriptor block i lives in the first group of meta group i, after that
        // group's superblock backup if it has one.
        let group = u32::try_from(i * u64::from(self.desc_per_block)).expect("i < desc_blocks");
        // Group 0 of a 1 KiB-block bigalloc filesystem starts at block 0, but its superblock
        // is in block 1, so its descriptors start at block 2.
        let adjust = u64::from(i == 0 && self.block_size == 1024 && self.ratio_bits > 0);
        self.group_first_block(group) + u64::from(self.has_super(group)) + adjust
    }

    /// The blocks `group` reserves for superblock and descriptors, as e2fsprogs'
    /// `ext2fs_reserve_super_and_bgd` marks them for a `BLOCK_UNINIT` group.
    pub fn super_and_gdt_extents(&self, group: u32, out: &mut Vec<Extent>) {
        let has_super = self.has_super(group);
        let sb_block = self.super_block_of(group);
        if has_super {
            out.push(Extent {
                start: sb_block,
                len: 1,
            });
        }
        if group == 0 && self.block_size == 1024 && self.ratio_bits > 0 {
            out.push(Extent { start: 0, len: 1 });
        }
        if self.classic_gdt(group) {
            if has_super {
                let start = sb_block + 1;
                let len = self
                    .classic_gdt_blocks()
                    .min(self.blocks_count.saturating_sub(start));
                if len > 0 {
                    out.push(Extent { start, len });
                }
            }
        } else {
            let pos = group % self.desc_per_block;
            if pos == 0 || pos == 1 || pos == self.desc_per_block - 1 {
                out.push(Extent {
                    start: sb_block + u64::from(has_super),
                    len: 1,
                });
            }
        }
    }
}

/// Whether `n` is a power of `base` (1 counts as `base^0`, but callers only ask for n > 1).
fn is_power_of(mut n: u32, base: u32) -> bool {
    while n > 1 && n.is_multiple_of(base) {
        n /= base;
    }
    n == 1
}

#[cfg(test)]
mod tests {
    use super::is_power_of;

    #[test]
    fn sparse_super_groups() {
        // Groups 0 and 1 always, then odd powers of 3, 5 and 7 (overview.rst, "sparse_super").
        let backups: Vec<u32> = (2..400)
            .filter(|&g| {
                g % 2 == 1 && (is_power_of(g, 3) || is_power_of(g, 5) || is_power_of(g, 7))
            })
            .collect();
        assert_eq!(backups, [3, 5, 7, 9, 25, 27, 49, 81, 125, 243, 343]);
    }
}
