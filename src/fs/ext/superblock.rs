//! The ext2/3/4 superblock: the 1024 bytes at byte offset 1024 of the filesystem.
//!
//! Offsets follow the kernel's "The Super Block" table
//! (Documentation/filesystems/ext4/super.rst). Only the fields the scanner and `info` need are
//! decoded; everything is validated here so the rest of the scanner can rely on sane geometry.

use byteorder::{ByteOrder, LittleEndian};

use super::ExtError;
use super::checksum::crc32c_raw;

/// Byte offset of the primary superblock, whatever the block size.
pub const SUPERBLOCK_OFFSET: u64 = 1024;
/// Size of the superblock structure.
pub const SUPERBLOCK_SIZE: usize = 1024;
/// `s_magic`.
pub const EXT_MAGIC: u16 = 0xEF53;

// Field offsets (super.rst, "The Super Block").
const S_INODES_COUNT: usize = 0x0;
const S_BLOCKS_COUNT_LO: usize = 0x4;
const S_FREE_BLOCKS_COUNT_LO: usize = 0xC;
const S_FIRST_DATA_BLOCK: usize = 0x14;
const S_LOG_BLOCK_SIZE: usize = 0x18;
const S_LOG_CLUSTER_SIZE: usize = 0x1C;
const S_BLOCKS_PER_GROUP: usize = 0x20;
const S_CLUSTERS_PER_GROUP: usize = 0x24;
const S_INODES_PER_GROUP: usize = 0x28;
const S_MAGIC: usize = 0x38;
const S_STATE: usize = 0x3A;
const S_REV_LEVEL: usize = 0x4C;
const S_INODE_SIZE: usize = 0x58;
const S_FEATURE_COMPAT: usize = 0x5C;
const S_FEATURE_INCOMPAT: usize = 0x60;
const S_FEATURE_RO_COMPAT: usize = 0x64;
const S_UUID: usize = 0x68;
const S_VOLUME_NAME: usize = 0x78;
const S_RESERVED_GDT_BLOCKS: usize = 0xCE;
const S_JOURNAL_INUM: usize = 0xE0;
const S_LAST_ORPHAN: usize = 0xE8;
const S_DESC_SIZE: usize = 0xFE;
const S_FIRST_META_BG: usize = 0x104;
const S_BLOCKS_COUNT_HI: usize = 0x150;
const S_FREE_BLOCKS_COUNT_HI: usize = 0x158;
const S_CHECKSUM_TYPE: usize = 0x175;
const S_BACKUP_BGS: usize = 0x24C;
const S_CHECKSUM_SEED: usize = 0x270;
const S_CHECKSUM: usize = 0x3FC;

/// `s_state` bit: cleanly unmounted.
const STATE_VALID: u16 = 0x1;
/// `s_state` bit: errors detected.
const STATE_ERROR: u16 = 0x2;

/// `s_feature_compat` bits (super.rst).
pub mod compat {
    /// A journal (ext3/ext4).
    pub const HAS_JOURNAL: u32 = 0x4;
    /// Reserved GDT blocks for online growth.
    pub const RESIZE_INODE: u32 = 0x10;
    /// Backup superblocks only in the groups named by `s_backup_bgs`.
    pub const SPARSE_SUPER2: u32 = 0x200;
}

/// `s_feature_incompat` bits (super.rst).
pub mod incompat {
    /// Compression (never implemented upstream).
    pub const COMPRESSION: u32 = 0x1;
    /// Directory entries record the file type.
    pub const FILETYPE: u32 = 0x2;
    /// The journal needs recovery (set while mounted, or after a crash).
    pub const RECOVER: u32 = 0x4;
    /// This is an external journal device, not a filesystem.
    pub const JOURNAL_DEV: u32 = 0x8;
    /// Meta block groups: descriptors live in their meta group.
    pub const META_BG: u32 = 0x10;
    /// Extent-mapped files.
    pub const EXTENTS: u32 = 0x40;
    /// 64-bit block numbers, descriptors may be larger than 32 bytes.
    pub const BIT64: u32 = 0x80;
    /// Multiple mount protection.
    pub const MMP: u32 = 0x100;
    /// Flexible block groups.
    pub const FLEX_BG: u32 = 0x200;
    /// Extended attributes in inodes.
    pub const EA_INODE: u32 = 0x400;
    /// Data in directory entries.
    pub const DIRDATA: u32 = 0x1000;
    /// Metadata checksum seed in the superblock.
    pub const CSUM_SEED: u32 = 0x2000;
    /// Large directories.
    pub const LARGEDIR: u32 = 0x4000;
    /// Data in inodes.
    pub const INLINE_DATA: u32 = 0x8000;
    /// Encrypted inodes.
    pub const ENCRYPT: u32 = 0x10000;
    /// Case-insensitive directories.
    pub const CASEFOLD: u32 = 0x20000;

    /// Features whose on-disk effect on block allocation we understand. Every one of them keeps
    /// the block bitmaps authoritative; an unknown bit might not, so it is refused.
    pub const KNOWN: u32 = FILETYPE
        | RECOVER
        | META_BG
        | EXTENTS
        | BIT64
        | MMP
        | FLEX_BG
        | EA_INODE
        | DIRDATA
        | CSUM_SEED
        | LARGEDIR
        | INLINE_DATA
        | ENCRYPT
        | CASEFOLD;
}

/// `s_feature_ro_compat` bits (super.rst).
pub mod ro_compat {
    /// Backup superblocks only in groups 0, 1 and powers of 3, 5, 7.
    pub const SPARSE_SUPER: u32 = 0x1;
    /// Files larger than 2 GiB.
    pub const LARGE_FILE: u32 = 0x2;
    /// Unused B-tree directories flag.
    pub const BTREE_DIR: u32 = 0x4;
    /// Group descriptor checksums (crc16); makes `BLOCK_UNINIT` meaningful.
    pub const GDT_CSUM: u32 = 0x10;
    /// A bitmap bit covers a cluster of blocks.
    pub const BIGALLOC: u32 = 0x200;
    /// crc32c checksums on all metadata; makes `BLOCK_UNINIT` meaningful.
    pub const METADATA_CSUM: u32 = 0x400;
    /// Orphan file has entries.
    pub const ORPHAN_PRESENT: u32 = 0x10000;
}

/// The decoded, validated superblock.
#[derive(Clone, Debug)]
pub struct Superblock {
    /// `s_inodes_count`.
    pub inodes_count: u32,
    /// `s_blocks_count` (with `_hi` when 64bit).
    pub blocks_count: u64,
    /// `s_free_blocks_count` (with `_hi` when 64bit); in blocks even on bigalloc filesystems,
    /// where it is free clusters times the cluster ratio.
    pub free_blocks: u64,
    /// `s_first_data_block`: 1 on 1 KiB-block filesystems without bigalloc, else 0.
    pub first_data_block: u32,
    /// `log2(block size) - 10`.
    pub log_block_size: u32,
    /// `log2(cluster size) - 10`.
    pub log_cluster_size: u32,
    /// `s_blocks_per_group`.
    pub blocks_per_group: u32,
    /// `s_clusters_per_group`.
    pub clusters_per_group: u32,
    /// `s_inodes_per_group`.
    pub inodes_per_group: u32,
    /// `s_inode_size` (128 on revision 0).
    pub inode_size: u16,
    /// `s_state`.
    pub state: u16,
    /// `s_feature_compat`.
    pub feature_compat: u32,
    /// `s_feature_incompat`.
    pub feature_incompat: u32,
    /// `s_feature_ro_compat`.
    pub feature_ro_compat: u32,
    /// `s_uuid`.
    pub uuid: [u8; 16],
    /// `s_volume_name`, up to the first NUL.
    pub label: Vec<u8>,
    /// `s_reserved_gdt_blocks`.
    pub reserved_gdt_blocks: u16,
    /// `s_last_orphan`: head of the orphan inode list.
    pub last_orphan: u32,
    /// `s_journal_inum`: the inode of the internal journal (0: none).
    pub journal_inum: u32,
    /// Group descriptor size: `s_desc_size` when 64bit, else 32.
    pub desc_size: u32,
    /// `s_first_meta_bg`.
    pub first_meta_bg: u32,
    /// `s_backup_bgs` (sparse_super2).
    pub backup_bgs: [u32; 2],
    /// Seed for metadata checksums (crc32c of the UUID, or `s_checksum_seed`).
    pub csum_seed: u32,
}

/// Largest block size ext4 allows: 64 KiB (`log_block_size` 6).
const MAX_LOG_BLOCK_SIZE: u32 = 6;
/// Largest cluster size e2fsprogs allows: 512 MiB (`log_cluster_size` 19).
const MAX_LOG_CLUSTER_SIZE: u32 = 19;
/// Descriptors of a 64bit filesystem are at least this big (e2fsprogs: EXT2_MIN_DESC_SIZE_64BIT).
const MIN_DESC_SIZE_64BIT: u32 = 64;
/// Descriptors without 64bit.
const DESC_SIZE_32: u32 = 32;
/// Descriptors may not exceed the smallest block size (e2fsprogs: EXT2_MAX_DESC_SIZE).
const MAX_DESC_SIZE: u32 = 1024;

fn u16_at(raw: &[u8; SUPERBLOCK_SIZE], off: usize) -> u16 {
    LittleEndian::read_u16(&raw[off..off + 2])
}

fn u32_at(raw: &[u8; SUPERBLOCK_SIZE], off: usize) -> u32 {
    LittleEndian::read_u32(&raw[off..off + 4])
}

fn bad(reason: &'static str) -> ExtError {
    ExtError::BadSuperblock(reason)
}

impl Superblock {
    /// Decodes and validates a superblock.
    ///
    /// # Errors
    /// [`ExtError::NotExt`] without the ext magic; [`ExtError::SuperblockChecksum`] when
    /// metadata_csum is set and the checksum does not match; [`ExtError::JournalDevice`] for an
    /// external journal; [`ExtError::UnsupportedFeatures`] for unknown incompatible features;
    /// [`ExtError::BadSuperblock`] for any impossible geometry.
    pub fn parse(raw: &[u8; SUPERBLOCK_SIZE]) -> Result<Self, ExtError> {
        if u16_at(raw, S_MAGIC) != EXT_MAGIC {
            return Err(ExtError::NotExt);
        }
        let feature_compat = u32_at(raw, S_FEATURE_COMPAT);
        let feature_incompat = u32_at(raw, S_FEATURE_INCOMPAT);
        let feature_ro_compat = u32_at(raw, S_FEATURE_RO_COMPAT);

        if feature_ro_compat & ro_compat::METADATA_CSUM != 0 {
            // super.rst: s_checksum_type 1 is crc32c, the only one defined.
            if raw[S_CHECKSUM_TYPE] != 1 {
                return Err(bad("unknown metadata checksum type"));
            }
            let stored = u32_at(raw, S_CHECKSUM);
            let computed = crc32c_raw(!0, &raw[..S_CHECKSUM]);
            if stored != computed {
                return Err(ExtError::SuperblockChecksum { stored, computed });
            }
        }
        if feature_incompat & incompat::JOURNAL_DEV != 0 {
            return Err(ExtError::JournalDevice);
        }
        let unknown = feature_incompat & !incompat::KNOWN;
        if unknown != 0 {
            return Err(ExtError::UnsupportedFeatures { incompat: unknown });
        }
        let rev_level = u32_at(raw, S_REV_LEVEL);
        if rev_level > 1 {
            return Err(bad("revision level is newer than 1"));
        }

        let is_64bit = feature_incompat & incompat::BIT64 != 0;
        let bigalloc = feature_ro_compat & ro_compat::BIGALLOC != 0;
        let log_block_size = u32_at(raw, S_LOG_BLOCK_SIZE);
        let log_cluster_size = u32_at(raw, S_LOG_CLUSTER_SIZE);
        if log_block_size > MAX_LOG_BLOCK_SIZE {
            return Err(bad("block size is larger than 64 KiB"));
        }
        if log_cluster_size > MAX_LOG_CLUSTER_SIZE || log_cluster_size < log_block_size {
            return Err(bad("cluster size is out of range"));
        }
        if !bigalloc && log_cluster_size != log_block_size {
            return Err(bad("cluster size differs from block size without bigalloc"));
        }
        let block_size = 1024u32 << log_block_size;
        let ratio_bits = log_cluster_size - log_block_size;

        let inode_size = if rev_level == 0 {
            128
        } else {
            u16_at(raw, S_INODE_SIZE)
        };
        if inode_size < 128 || u32::from(inode_size) > block_size || !inode_size.is_power_of_two() {
            return Err(bad(
                "inode size is not a power of two between 128 and the block size",
            ));
        }

        let desc_size = if is_64bit {
            let d = u32::from(u16_at(raw, S_DESC_SIZE));
            if !(MIN_DESC_SIZE_64BIT..=MAX_DESC_SIZE).contains(&d) || !d.is_power_of_two() {
                return Err(bad(
                    "group descriptor size is not a power of two between 64 and 1024",
                ));
            }
            d
        } else {
            DESC_SIZE_32
        };

        let hi = |lo: usize, hi: usize| {
            let low = u64::from(u32_at(raw, lo));
            if is_64bit {
                low | (u64::from(u32_at(raw, hi)) << 32)
            } else {
                low
            }
        };
        let blocks_count = hi(S_BLOCKS_COUNT_LO, S_BLOCKS_COUNT_HI);
        let free_blocks = hi(S_FREE_BLOCKS_COUNT_LO, S_FREE_BLOCKS_COUNT_HI);

        let blocks_per_group = u32_at(raw, S_BLOCKS_PER_GROUP);
        let clusters_per_group = u32_at(raw, S_CLUSTERS_PER_GROUP);
        // One block of bitmap describes one group, so a group has at most 8 * block_size
        // clusters; and at least 8, as e2fsprogs demands.
        if clusters_per_group < 8
            || clusters_per_group > block_size * 8
            || !clusters_per_group.is_multiple_of(8)
        {
            return Err(bad("clusters per group is out of range"));
        }
        if u64::from(blocks_per_group) != u64::from(clusters_per_group) << ratio_bits {
            return Err(bad(
                "blocks per group is not clusters per group times the cluster ratio",
            ));
        }
        let inodes_per_group = u32_at(raw, S_INODES_PER_GROUP);
        if inodes_per_group == 0 || inodes_per_group > block_size * 8 {
            return Err(bad("inodes per group is out of range"));
        }

        let first_data_block = u32_at(raw, S_FIRST_DATA_BLOCK);
        // super.rst: s_first_data_block is 1 for 1 KiB blocks and 0 otherwise; bigalloc forces 0.
        let expected_fdb = u32::from(block_size == 1024 && !bigalloc);
        if first_data_block != expected_fdb {
            return Err(bad("first data block is not where the block size puts it"));
        }
        if u64::from(first_data_block) >= blocks_count {
            return Err(bad("filesystem has no blocks"));
        }

        let inodes_count = u32_at(raw, S_INODES_COUNT);
        let groups =
            (blocks_count - u64::from(first_data_block)).div_ceil(u64::from(blocks_per_group));
        if groups > u64::from(u32::MAX) {
            return Err(bad("group count does not fit in 32 bits"));
        }
        if groups * u64::from(inodes_per_group) != u64::from(inodes_count) {
            return Err(bad("inode count is not groups times inodes per group"));
        }
        // A free count beyond the block count is a wrong counter, not a wrong geometry: e2fsck
        // only notes it (ExtFs::open does the same).

        let uuid: [u8; 16] = raw[S_UUID..S_UUID + 16].try_into().expect("16-byte field");
        let name = &raw[S_VOLUME_NAME..S_VOLUME_NAME + 16];
        let label = name.split(|&b| b == 0).next().unwrap_or_default().to_vec();
        let csum_seed = if feature_incompat & incompat::CSUM_SEED != 0 {
            u32_at(raw, S_CHECKSUM_SEED)
        } else {
            crc32c_raw(!0, &uuid)
        };

        Ok(Self {
            inodes_count,
            blocks_count,
            free_blocks,
            first_data_block,
            log_block_size,
            log_cluster_size,
            blocks_per_group,
            clusters_per_group,
            inodes_per_group,
            inode_size,
            state: u16_at(raw, S_STATE),
            feature_compat,
            feature_incompat,
            feature_ro_compat,
            uuid,
            label,
            reserved_gdt_blocks: u16_at(raw, S_RESERVED_GDT_BLOCKS),
            last_orphan: u32_at(raw, S_LAST_ORPHAN),
            journal_inum: if feature_compat & compat::HAS_JOURNAL != 0 {
                u32_at(raw, S_JOURNAL_INUM)
            } else {
                0
            },
            desc_size,
            first_meta_bg: u32_at(raw, S_FIRST_META_BG),
            backup_bgs: [u32_at(raw, S_BACKUP_BGS), u32_at(raw, S_BACKUP_BGS + 4)],
            csum_seed,
        })
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u32 {
        1024 << self.log_block_size
    }

    /// log2 of blocks per cluster (0 without bigalloc).
    pub fn cluster_ratio_bits(&self) -> u32 {
        self.log_cluster_size - self.log_block_size
    }

    /// Number of block groups (validated to fit in `u32`).
    pub fn group_count(&self) -> u32 {
        let groups = (self.blocks_count - u64::from(self.first_data_block))
            .div_ceil(u64::from(self.blocks_per_group));
        u32::try_from(groups).expect("validated in parse")
    }

    /// Whether a compat feature bit is set.
    pub fn has_compat(&self, bit: u32) -> bool {
        self.feature_compat & bit != 0
    }

    /// Whether an incompat feature bit is set.
    pub fn has_incompat(&self, bit: u32) -> bool {
        self.feature_incompat & bit != 0
    }

    /// Whether a ro_compat feature bit is set.
    pub fn has_ro_compat(&self, bit: u32) -> bool {
        self.feature_ro_compat & bit != 0
    }

    /// Group descriptors carry checksums, which is what makes `BLOCK_UNINIT` trustworthy.
    pub fn has_group_desc_csum(&self) -> bool {
        self.has_ro_compat(ro_compat::GDT_CSUM | ro_compat::METADATA_CSUM)
    }

    /// Cleanly unmounted (`s_state` has the valid bit).
    pub fn is_clean(&self) -> bool {
        self.state & STATE_VALID != 0
    }

    /// The kernel or e2fsck recorded errors.
    pub fn has_errors(&self) -> bool {
        self.state & STATE_ERROR != 0
    }

    /// The journal must be replayed (mounted now, or crashed).
    pub fn needs_recovery(&self) -> bool {
        self.has_incompat(incompat::RECOVER)
    }

    /// Inodes are waiting on the orphan list (deleted while open, then crashed or still mounted).
    pub fn has_orphans(&self) -> bool {
        self.last_orphan != 0 || self.has_ro_compat(ro_compat::ORPHAN_PRESENT)
    }

    /// ext2, ext3 or ext4, decided the way blkid does: any feature ext3 lacks makes it ext4.
    pub fn flavour(&self) -> super::super::FsType {
        use super::super::FsType;
        const EXT3_INCOMPAT: u32 = incompat::FILETYPE | incompat::RECOVER | incompat::META_BG;
        const EXT3_RO_COMPAT: u32 =
            ro_compat::SPARSE_SUPER | ro_compat::LARGE_FILE | ro_compat::BTREE_DIR;
        if self.feature_incompat & !EXT3_INCOMPAT != 0
            || self.feature_ro_compat & !EXT3_RO_COMPAT != 0
        {
            FsType::Ext4
        } else if self.has_compat(compat::HAS_JOURNAL) {
            FsType::Ext3
        } else {
            FsType::Ext2
        }
    }
}
