//! ext2/3/4: which blocks are in use, read from the block bitmaps.
//!
//! The path through this module is the path through the disk: [`superblock`] → [`group_desc`]
//! (located by [`layout`]) → one block bitmap per group ([`bitmap`]) → used extents. Groups are
//! read one at a time, so memory grows with the number of groups (a few dozen bytes each), never
//! with the number of blocks.

pub mod bitmap;
pub mod checksum;
pub mod files;
pub mod group_desc;
pub mod inode;
pub mod journal;
pub mod layout;
pub mod superblock;

use std::io;

use thiserror::Error;

use super::{
    Coalesce, CrossCheck, Extent, ExtentIter, Family, FsInfo, FsState, Identity, ScanError,
    ScanOptions, UsedBlocks, Uuid, label_text,
};
use crate::source::ReadAt;
use group_desc::GroupDesc;
use layout::Layout;
use superblock::{SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, Superblock, ro_compat};

/// Why an ext2/3/4 filesystem could not be scanned.
#[derive(Debug, Error)]
pub enum ExtError {
    /// No ext magic: this is some other filesystem (or none).
    #[error("not an ext2/3/4 filesystem (no 0xEF53 magic at byte 1080)")]
    NotExt,
    /// The device cannot even hold a superblock.
    #[error("too small to hold an ext superblock ({size} bytes)")]
    TooSmall {
        /// Device size in bytes.
        size: u64,
    },
    /// The superblock describes an impossible filesystem.
    #[error("corrupt ext superblock: {0}")]
    BadSuperblock(&'static str),
    /// metadata_csum is on and the superblock checksum does not match.
    #[error("ext superblock checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    SuperblockChecksum {
        /// `s_checksum`.
        stored: u32,
        /// What the superblock bytes hash to.
        computed: u32,
    },
    /// An external journal, which has no block bitmaps.
    #[error("this is an external ext journal device, not a filesystem")]
    JournalDevice,
    /// Incompatible features this scanner does not know.
    #[error("unknown incompatible ext features {incompat:#x}")]
    UnsupportedFeatures {
        /// The unknown `s_feature_incompat` bits.
        incompat: u32,
    },
    /// The filesystem is larger than the device it is on.
    #[error(
        "the filesystem claims {fs_bytes} bytes but the device holds only {device_bytes} (truncated image or wrong partition)"
    )]
    Truncated {
        /// `blocks_count * block_size` (saturated).
        fs_bytes: u64,
        /// Device size.
        device_bytes: u64,
    },
    /// A descriptor block lies outside the filesystem.
    #[error(
        "group descriptor block {index} would be at block {block}, outside the filesystem ({blocks} blocks)"
    )]
    DescriptorBlockOutOfRange {
        /// Index of the descriptor block.
        index: u64,
        /// Where it would be.
        block: u64,
        /// `blocks_count`.
        blocks: u64,
    },
    /// A group descriptor points outside the filesystem.
    #[error("group {group}: {what} at block {block} is outside the filesystem ({blocks} blocks)")]
    DescriptorOutOfRange {
        /// The group.
        group: u32,
        /// Which field.
        what: &'static str,
        /// The block it names.
        block: u64,
        /// `blocks_count`.
        blocks: u64,
    },
    /// A group descriptor's checksum does not match.
    #[error("group {group}: descriptor checksum mismatch (run e2fsck -f)")]
    DescriptorChecksum {
        /// The group.
        group: u32,
    },
    /// A block bitmap's checksum does not match.
    #[error("group {group}: block bitmap at block {block} fails its checksum (run e2fsck -f)")]
    BitmapChecksum {
        /// The group.
        group: u32,
        /// Where the bitmap is.
        block: u64,
    },
    /// An inode's block map or extent tree is malformed.
    #[error("inode {ino}: {reason}")]
    BadInode {
        /// The inode.
        ino: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// The journal cannot be read.
    #[error("journal: {reason}")]
    BadJournal {
        /// What is wrong.
        reason: &'static str,
    },
    /// Reading the device failed.
    #[error("read of {len} bytes at byte offset {offset} failed")]
    Io {
        /// Byte offset.
        offset: u64,
        /// Bytes asked for.
        len: usize,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// An opened ext2/3/4 filesystem: superblock, layout and all group descriptors.
#[derive(Clone, Debug)]
pub struct ExtFs {
    sb: Superblock,
    layout: Layout,
    groups: Vec<GroupDesc>,
    /// Blocks used whatever the on-disk bitmaps say, sorted and merged: what e2fsprogs marks
    /// in use for `BLOCK_UNINIT` groups (their superblock backup and descriptors, bitmaps and
    /// inode table wherever they lie), and what a journal replay would mark used.
    always_used: Vec<Extent>,
    /// What the scan found worth telling (the journal it read, ...).
    notes: Vec<String>,
    /// Inode-table blocks that hold no inode ever used, sorted and merged (see
    /// [`ExtFs::unused_inode_tables`]).
    unused_itable: Vec<Extent>,
    opts: ScanOptions,
}

/// The ext family: identified by its superblock, scanned through its block bitmaps.
pub const FAMILY: Family = Family {
    identify,
    scan: Some(probe),
};

/// Recognises an ext superblock (validated geometry; checksums and state are not looked at, so
/// that a damaged filesystem is still recognised by its UUID).
pub fn identify(dev: &dyn ReadAt) -> Option<Identity> {
    let mut raw = [0u8; SUPERBLOCK_SIZE];
    dev.read_exact_at(&mut raw, SUPERBLOCK_OFFSET).ok()?;
    let sb = Superblock::parse(&raw).ok()?;
    Some(Identity {
        kind: sb.flavour(),
        uuid: Some(Uuid(sb.uuid).to_string()),
        label: label_text(&sb.label),
        page_size: None,
        block_size: Some(sb.block_size()),
    })
}

/// Opens `dev` as an ext filesystem; `Ok(None)` when it is none.
///
/// # Errors
/// An ext filesystem that cannot be trusted or read.
pub fn probe(
    dev: &dyn ReadAt,
    opts: ScanOptions,
) -> Result<Option<Box<dyn UsedBlocks>>, ScanError> {
    match ExtFs::open(dev, opts) {
        Ok(fs) => Ok(Some(Box::new(fs))),
        Err(ExtError::NotExt | ExtError::TooSmall { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl UsedBlocks for ExtFs {
    fn block_size(&self) -> u32 {
        self.layout.block_size
    }

    fn info(&self, dev: &dyn ReadAt) -> Result<FsInfo, ScanError> {
        let mut used = 0;
        for e in self.used_extents(dev) {
            used += e?.len;
        }
        Ok(self.info(used))
    }

    fn extents<'a>(&'a self, dev: &'a dyn ReadAt) -> ExtentIter<'a> {
        Box::new(self.used_extents(dev).map(|r| r.map_err(ScanError::from)))
    }

    fn zero_extents(&self) -> &[Extent] {
        &self.unused_itable
    }

    fn recorded_used_blocks(&self) -> Option<u64> {
        Some(self.superblock_used_blocks())
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }
}

fn read_at(dev: &(impl ReadAt + ?Sized), buf: &mut [u8], offset: u64) -> Result<(), ExtError> {
    dev.read_exact_at(buf, offset)
        .map_err(|source| ExtError::Io {
            offset,
            len: buf.len(),
            source,
        })
}

impl ExtFs {
    /// Reads and validates the superblock and every group descriptor.
    ///
    /// # Errors
    /// [`ExtError::NotExt`] when there is no ext filesystem; any other variant when there is one
    /// that cannot be trusted or read.
    pub fn open(dev: &(impl ReadAt + ?Sized), opts: ScanOptions) -> Result<Self, ExtError> {
        let size = dev.size();
        if size < SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE as u64 {
            return Err(ExtError::TooSmall { size });
        }
        let mut raw = [0u8; SUPERBLOCK_SIZE];
        read_at(dev, &mut raw, SUPERBLOCK_OFFSET)?;
        let sb = Superblock::parse(&raw)?;
        let layout = Layout::new(&sb);

        let fs_bytes = sb.blocks_count.checked_mul(u64::from(sb.block_size()));
        if fs_bytes.is_none_or(|b| b > size) {
            return Err(ExtError::Truncated {
                fs_bytes: fs_bytes.unwrap_or(u64::MAX),
                device_bytes: size,
            });
        }

        if sb.has_incompat(superblock::incompat::META_BG)
            && u64::from(sb.first_meta_bg) > layout.desc_blocks
        {
            return Err(ExtError::BadSuperblock(
                "first meta block group is beyond the descriptor table",
            ));
        }
        let mut notes = Vec::new();
        let groups = read_descriptors(dev, &sb, &layout, opts, &mut notes)?;
        if sb.free_blocks > sb.blocks_count {
            notes.push(format!(
                "the superblock counts {} free blocks of {} (a wrong counter; e2fsck -f corrects it)",
                sb.free_blocks, sb.blocks_count
            ));
        }
        let unused_itable = unused_inode_tables(&sb, &layout, &groups);
        let mut fs = Self {
            sb,
            layout,
            groups,
            always_used: Vec::new(),
            notes,
            unused_itable,
            opts,
        };
        let unclean = !fs.sb.is_clean()
            || fs.sb.has_errors()
            || fs.sb.needs_recovery()
            || fs.sb.has_orphans();
        let cross_check = match opts.cross_check {
            CrossCheck::Never => false,
            CrossCheck::IfUnclean => unclean,
            CrossCheck::Always => true,
        };
        fs.add_always_used(dev, cross_check)?;
        Ok(fs)
    }

    /// Works out the blocks that are used whatever the bitmaps say, and notes how many of them
    /// the bitmaps miss: the metadata of every group (superblock copy, descriptors, reserved
    /// descriptor blocks, bitmaps, inode table); with a journal that needs recovery, what its
    /// committed transactions mark used (see [`journal`]); with `cross_check`, every block an
    /// in-use inode maps (see [`files`]).
    fn add_always_used(
        &mut self,
        dev: &(impl ReadAt + ?Sized),
        cross_check: bool,
    ) -> Result<(), ExtError> {
        let metadata = group_metadata(&self.layout, &self.groups);
        let journal = if self.sb.needs_recovery() && self.sb.journal_inum != 0 {
            match journal::pending_allocations(self, dev) {
                Ok(j) => Some(j),
                Err(e) => {
                    self.notes.push(format!(
                        "the journal needs recovery but cannot be read ({e}); blocks its pending transactions allocate may be missing from the image"
                    ));
                    None
                }
            }
        } else {
            None
        };
        let files = if cross_check {
            Some(self.file_blocks(dev)?)
        } else {
            None
        };
        let empty: &[Extent] = &[];
        let lists: [&[Extent]; 3] = [
            &metadata,
            journal.as_ref().map_or(empty, |j| &j.0[..]),
            files.as_ref().map_or(empty, |f| &f.extents[..]),
        ];
        let audit = self.audit(dev, &lists)?;
        if !audit.metadata_groups.is_empty() {
            let shown: Vec<String> = audit
                .metadata_groups
                .iter()
                .take(8)
                .map(u32::to_string)
                .collect();
            let more = audit.metadata_groups.len().saturating_sub(8);
            self.notes.push(format!(
                "the block bitmaps of {} ({}{}) do not mark {} of group metadata; copied anyway",
                crate::plural(audit.metadata_groups.len() as u64, "group"),
                shown.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                },
                crate::plural(audit.missed[0], "block")
            ));
        }
        if let Some((_, transactions)) = &journal {
            self.notes.push(format!(
                "the journal needs recovery: {} pending in it mark {} used that the on-disk bitmaps do not; they are kept (with the journal), so that a replay finds them",
                crate::plural(*transactions, "committed transaction"),
                crate::plural(audit.missed[1], "block"),
            ));
        }
        if let Some(f) = &files {
            let mut note = format!(
                "cross-checked the bitmaps against {}: the bitmaps miss {} they use",
                crate::plural(f.inodes, "in-use inode"),
                crate::plural(audit.missed[2], "block"),
            );
            if audit.missed[2] > 0 {
                note.push_str(", copied too");
            }
            if f.bad_pointers > 0 {
                note.push_str(&format!(
                    "; {} outside the filesystem skipped",
                    crate::plural(f.bad_pointers, "block pointer")
                ));
            }
            if let Some((ino, why)) = f.unreadable.first() {
                note.push_str(&format!(
                    "; {} could not be followed (first: inode {ino}: {why})",
                    crate::plural(f.unreadable.len() as u64, "inode's map")
                ));
            }
            self.notes.push(note);
        }
        let mut all: Vec<Extent> = lists.concat();
        all.sort_unstable_by_key(|e| e.start);
        self.always_used = merge_sorted(all);
        Ok(())
    }

    /// Reads every bitmap once and counts, for each list of extents, the blocks it does not
    /// mark (in whole clusters), and which groups do not mark metadata of the first list.
    fn audit(
        &mut self,
        dev: &(impl ReadAt + ?Sized),
        lists: &[&[Extent]; 3],
    ) -> Result<Audit, ExtError> {
        let l = &self.layout;
        let mut audit = Audit::default();
        let mut bitmap = vec![0u8; l.block_size as usize];
        let mut bad_checksums = Vec::new();
        for group in 0..l.group_count {
            let first = l.group_first_block(group);
            let end = first + l.group_block_count(group);
            let read = self.group_bitmap(dev, group, &mut bitmap)?;
            if read == Bitmap::ChecksumMismatch {
                bad_checksums.push(group);
            }
            for (k, list) in lists.iter().enumerate() {
                // A BLOCK_UNINIT group's bitmap is all zeros by design: its metadata is known.
                if k == 0 && read == Bitmap::Uninit {
                    continue;
                }
                let from = list.partition_point(|e| e.end() <= first);
                let mut missed = 0;
                for e in list[from..].iter().take_while(|e| e.start < end) {
                    let c0 = (e.start.max(first) - first) >> l.ratio_bits;
                    let c1 = (e.end().min(end) - first).div_ceil(l.cluster_ratio());
                    missed += (c0..c1)
                        .filter(|&c| !bitmap::test(&bitmap, c as usize))
                        .count() as u64;
                }
                audit.missed[k] += missed << l.ratio_bits;
                if k == 0 && missed > 0 {
                    audit.metadata_groups.push(group);
                }
            }
        }
        if let Some(first) = bad_checksums.first() {
            self.notes.push(format!(
                "the block bitmaps of {} fail their checksums (first: group {first}); read as they are",
                crate::plural(bad_checksums.len() as u64, "group"),
            ));
        }
        Ok(audit)
    }

    /// What the scan found worth telling.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.layout.block_size
    }

    /// Total blocks (`s_blocks_count`).
    pub fn blocks_count(&self) -> u64 {
        self.sb.blocks_count
    }

    /// Used blocks according to the superblock's free count (which lags on a mounted
    /// filesystem). On bigalloc the count is whole clusters, so the last one may overshoot.
    pub fn superblock_used_blocks(&self) -> u64 {
        self.sb.blocks_count.saturating_sub(self.sb.free_blocks)
    }

    /// Inode-table blocks that the bitmaps mark used but that hold no inode ever used: the whole
    /// table of an `INODE_UNINIT` group, and the blocks past the last used inode
    /// (`bg_itable_unused`) of the others. Only trusted when descriptors carry checksums and
    /// this one's matches; the kernel and e2fsck then never read these blocks, and e2image skips
    /// them too. A save records them as "must read as zeros" instead of copying them, which
    /// keeps save time proportional to the data, not to the filesystem size.
    pub fn unused_inode_tables(&self) -> &[Extent] {
        &self.unused_itable
    }

    /// Identity and state, with `used_blocks` as given (from a scan, or the superblock).
    pub fn info(&self, used_blocks: u64) -> FsInfo {
        FsInfo {
            fs_type: self.sb.flavour(),
            label: label_text(&self.sb.label).unwrap_or_default(),
            uuid: Some(Uuid(self.sb.uuid)),
            block_size: self.layout.block_size,
            total_blocks: self.sb.blocks_count,
            used_blocks,
            state: FsState {
                clean: self.sb.is_clean(),
                errors: self.sb.has_errors(),
                needs_recovery: self.sb.needs_recovery(),
                orphans: self.sb.has_orphans(),
            },
        }
    }

    /// The used blocks, in ascending order, adjacent runs merged (also across groups).
    pub fn used_extents<'a, R: ReadAt + ?Sized>(
        &'a self,
        dev: &'a R,
    ) -> Coalesce<UsedExtents<'a, R>> {
        // Block 0 of a 1 KiB-block filesystem lies before group 0 and is in no bitmap; it holds
        // the boot sector, so it is always copied.
        let block0 = (self.layout.first_data_block > 0).then_some(Extent {
            start: 0,
            len: self.layout.first_data_block,
        });
        Coalesce::new(
            block0,
            UsedExtents {
                fs: self,
                dev,
                next_group: 0,
                queue: Vec::new(),
                queue_pos: 0,
                bitmap: vec![0; self.layout.block_size as usize],
                failed: false,
            },
        )
    }

    /// Reads the block bitmap of `group` into `bitmap` (all zeros for a trusted `BLOCK_UNINIT`
    /// group, whose bitmap was never written).
    ///
    /// # Errors
    /// A read error, or (when checksums are verified) a checksum mismatch.
    fn group_bitmap(
        &self,
        dev: &(impl ReadAt + ?Sized),
        group: u32,
        bitmap: &mut [u8],
    ) -> Result<Bitmap, ExtError> {
        let desc = &self.groups[group as usize];
        let bitmap = &mut bitmap[..self.sb.clusters_per_group as usize / 8];
        // group_descr.rst: with descriptor checksums, BLOCK_UNINIT means the on-disk bitmap was
        // never written and only the group's own metadata is in use.
        if self.sb.has_group_desc_csum() && desc.block_uninit() && desc.checksum_ok {
            bitmap.fill(0);
            return Ok(Bitmap::Uninit);
        }
        read_at(
            dev,
            bitmap,
            desc.block_bitmap * u64::from(self.layout.block_size),
        )?;
        if self.sb.has_ro_compat(ro_compat::METADATA_CSUM)
            && !desc.block_bitmap_csum_matches(&self.sb, bitmap)
        {
            if self.opts.verify_checksums {
                return Err(ExtError::BitmapChecksum {
                    group,
                    block: desc.block_bitmap,
                });
            }
            return Ok(Bitmap::ChecksumMismatch);
        }
        Ok(Bitmap::Read)
    }

    /// Appends the used extents of `group` to `out`.
    fn group_extents(
        &self,
        dev: &(impl ReadAt + ?Sized),
        group: u32,
        bitmap: &mut [u8],
        out: &mut Vec<Extent>,
    ) -> Result<(), ExtError> {
        let l = &self.layout;
        let nbytes = self.sb.clusters_per_group as usize / 8;
        self.group_bitmap(dev, group, bitmap)?;
        let bitmap = &mut bitmap[..nbytes];

        let first = l.group_first_block(group);
        let count = l.group_block_count(group);
        let end = first + count;
        // Metadata of BLOCK_UNINIT groups that lies in this group.
        let from = self
            .always_used
            .partition_point(|e| e.start + e.len <= first);
        for e in self.always_used[from..]
            .iter()
            .take_while(|e| e.start < end)
        {
            let s = e.start.max(first);
            let t = (e.start + e.len).min(end);
            let c0 = (s - first) >> l.ratio_bits;
            let c1 = (t - first).div_ceil(l.cluster_ratio());
            bitmap::set_range(bitmap, c0 as usize, (c1 - c0) as usize);
        }

        // Only the clusters that exist: the last group's padding bits are set on disk.
        let clusters = count.div_ceil(l.cluster_ratio()) as usize;
        bitmap::for_each_run(bitmap, clusters, |c, n| {
            let start = first + ((c as u64) << l.ratio_bits);
            let stop = (first + (((c + n) as u64) << l.ratio_bits)).min(end);
            out.push(Extent {
                start,
                len: stop - start,
            });
        });
        Ok(())
    }
}

/// How a group's bitmap was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bitmap {
    /// From disk, checksum fine (or none).
    Read,
    /// From disk; its checksum does not match (a lenient scan reads it anyway).
    ChecksumMismatch,
    /// Never written (`BLOCK_UNINIT`): all zeros.
    Uninit,
}

/// What [`ExtFs::audit`] counted.
#[derive(Debug, Default)]
struct Audit {
    /// Blocks of each list the bitmaps do not mark.
    missed: [u64; 3],
    /// Groups whose bitmap misses metadata.
    metadata_groups: Vec<u32>,
}

/// Reads every group descriptor, checking that what they point to lies in the filesystem. A
/// lenient scan notes checksum mismatches in `notes` instead of refusing them.
fn read_descriptors(
    dev: &(impl ReadAt + ?Sized),
    sb: &Superblock,
    l: &Layout,
    opts: ScanOptions,
    notes: &mut Vec<String>,
) -> Result<Vec<GroupDesc>, ExtError> {
    let bs = l.block_size as usize;
    let ds = l.desc_size as usize;
    let mut block = vec![0u8; bs];
    // Grows only as descriptor blocks are actually read, never from the claimed count alone.
    let mut groups = Vec::new();
    for i in 0..l.desc_blocks {
        let blk = l.descriptor_block(i);
        if blk >= l.blocks_count {
            return Err(ExtError::DescriptorBlockOutOfRange {
                index: i,
                block: blk,
                blocks: l.blocks_count,
            });
        }
        read_at(dev, &mut block, blk * bs as u64)?;
        for raw in block.chunks_exact(ds) {
            let Ok(group) = u32::try_from(groups.len()) else {
                break;
            };
            if group >= l.group_count {
                break;
            }
            let desc = GroupDesc::parse(raw, group, sb);
            check_descriptor(l, group, &desc)?;
            if opts.verify_checksums && !desc.checksum_ok {
                return Err(ExtError::DescriptorChecksum { group });
            }
            groups.push(desc);
        }
    }
    let bad: Vec<u32> = (0u32..)
        .zip(&groups)
        .filter(|(_, d)| !d.checksum_ok)
        .map(|(g, _)| g)
        .collect();
    if let Some(first) = bad.first() {
        notes.push(format!(
            "the descriptors of {} fail their checksums (first: group {first}); read as e2fsck reads them",
            crate::plural(bad.len() as u64, "group")
        ));
    }
    Ok(groups)
}

fn check_descriptor(l: &Layout, group: u32, d: &GroupDesc) -> Result<(), ExtError> {
    let blocks = l.blocks_count;
    let out = |what, block| {
        Err(ExtError::DescriptorOutOfRange {
            group,
            what,
            block,
            blocks,
        })
    };
    if d.block_bitmap == 0 || d.block_bitmap >= blocks {
        return out("block bitmap", d.block_bitmap);
    }
    if d.inode_bitmap == 0 || d.inode_bitmap >= blocks {
        return out("inode bitmap", d.inode_bitmap);
    }
    if d.inode_table == 0
        || d.inode_table
            .checked_add(l.inode_table_blocks)
            .is_none_or(|end| end > blocks)
    {
        return out("inode table", d.inode_table);
    }
    Ok(())
}

/// The metadata of every group, wherever it lies: superblock backup, descriptor blocks (with
/// the reserved ones), inode table and both bitmaps. e2fsprogs' `mark_uninit_bg_group_blocks`
/// marks exactly these for `BLOCK_UNINIT` groups; for the others the bitmaps should mark them,
/// and a damaged bitmap that does not must not cost the filesystem its metadata.
fn group_metadata(l: &Layout, groups: &[GroupDesc]) -> Vec<Extent> {
    let mut v = Vec::new();
    for (g, d) in (0u32..).zip(groups) {
        l.super_and_gdt_extents(g, &mut v);
        v.push(Extent {
            start: d.inode_table,
            len: l.inode_table_blocks,
        });
        v.push(Extent {
            start: d.block_bitmap,
            len: 1,
        });
        v.push(Extent {
            start: d.inode_bitmap,
            len: 1,
        });
    }
    v.sort_unstable_by_key(|e| e.start);
    merge_sorted(v)
}

/// See [`ExtFs::unused_inode_tables`].
fn unused_inode_tables(sb: &Superblock, l: &Layout, groups: &[GroupDesc]) -> Vec<Extent> {
    if !sb.has_group_desc_csum() {
        return Vec::new();
    }
    let inodes_per_block = u64::from(l.block_size / u32::from(sb.inode_size));
    let mut v: Vec<Extent> = groups
        .iter()
        .filter(|d| d.checksum_ok)
        .filter_map(|d| {
            let unused = if d.inode_uninit() {
                l.inode_table_blocks
            } else {
                // Whole blocks only: a block with one used inode is copied.
                (u64::from(d.itable_unused) / inodes_per_block).min(l.inode_table_blocks)
            };
            (unused > 0).then(|| Extent {
                start: d.inode_table + l.inode_table_blocks - unused,
                len: unused,
            })
        })
        .collect();
    v.sort_unstable_by_key(|e| e.start);
    merge_sorted(v)
}

/// Merges sorted extents that overlap or touch.
fn merge_sorted(v: Vec<Extent>) -> Vec<Extent> {
    let mut merged: Vec<Extent> = Vec::with_capacity(v.len());
    for e in v.into_iter().filter(|e| e.len > 0) {
        match merged.last_mut() {
            Some(last) if e.start <= last.end() => last.len = last.len.max(e.end() - last.start),
            _ => merged.push(e),
        }
    }
    merged
}

/// Iterator over the used extents of an ext filesystem, one group's bitmap at a time (merged
/// across groups by [`Coalesce`]).
pub struct UsedExtents<'a, R: ReadAt + ?Sized> {
    fs: &'a ExtFs,
    dev: &'a R,
    next_group: u32,
    queue: Vec<Extent>,
    queue_pos: usize,
    bitmap: Vec<u8>,
    failed: bool,
}

impl<R: ReadAt + ?Sized> Iterator for UsedExtents<'_, R> {
    type Item = Result<Extent, ExtError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(&e) = self.queue.get(self.queue_pos) {
                self.queue_pos += 1;
                return Some(Ok(e));
            }
            if self.next_group >= self.fs.layout.group_count {
                return None;
            }
            self.queue.clear();
            self.queue_pos = 0;
            let g = self.next_group;
            self.next_group += 1;
            if let Err(e) = self
                .fs
                .group_extents(self.dev, g, &mut self.bitmap, &mut self.queue)
            {
                self.failed = true;
                return Some(Err(e));
            }
        }
    }
}
