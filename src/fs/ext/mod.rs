//! ext2/3/4: which blocks are in use, read from the block bitmaps.
//!
//! The path through this module is the path through the disk: [`superblock`] → [`group_desc`]
//! (located by [`layout`]) → one block bitmap per group ([`bitmap`]) → used extents. Groups are
//! read one at a time, so memory grows with the number of groups (a few dozen bytes each), never
//! with the number of blocks.

pub mod bitmap;
pub mod checksum;
pub mod group_desc;
pub mod inode;
pub mod journal;
pub mod layout;
pub mod superblock;

use std::io;

use thiserror::Error;

use super::{
    Extent, ExtentIter, Family, FsInfo, FsState, Identity, ScanError, ScanOptions, UsedBlocks,
    Uuid, label_text,
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
        let groups = read_descriptors(dev, &sb, &layout, opts)?;
        let always_used = uninit_metadata(&layout, &groups);
        let unused_itable = unused_inode_tables(&sb, &layout, &groups);
        Ok(Self {
            sb,
            layout,
            groups,
            always_used,
            notes: Vec::new(),
            unused_itable,
            opts,
        }
        .with_journal(dev))
    }

    /// A filesystem whose journal needs recovery: the blocks its committed transactions mark
    /// used are added to the used set (see [`journal`]), so that an image replays to the same
    /// filesystem the source would. A journal that cannot be read leaves a note instead.
    fn with_journal(mut self, dev: &(impl ReadAt + ?Sized)) -> Self {
        if !self.sb.needs_recovery() || self.sb.journal_inum == 0 {
            return self;
        }
        match journal::pending_allocations(&self, dev) {
            Ok((extra, transactions)) => {
                let before = self.used_count(dev);
                let mut all = std::mem::take(&mut self.always_used);
                all.extend(extra);
                all.sort_unstable_by_key(|e| e.start);
                self.always_used = merge_sorted(all);
                let added = match (before, self.used_count(dev)) {
                    (Some(b), Some(a)) => crate::plural(a.saturating_sub(b), "block"),
                    _ => "the blocks".to_string(),
                };
                self.notes.push(format!(
                    "the journal needs recovery: {} pending in it mark {added} used that the on-disk bitmaps do not; they are kept (with the journal), so that a replay finds them",
                    crate::plural(transactions, "committed transaction"),
                ));
            }
            Err(e) => self.notes.push(format!(
                "the journal needs recovery but cannot be read ({e}); blocks its pending transactions allocate may be missing from the image"
            )),
        }
        self
    }

    /// Used blocks by a scan of every bitmap (`None` when one cannot be read).
    fn used_count(&self, dev: &(impl ReadAt + ?Sized)) -> Option<u64> {
        self.used_extents(dev)
            .map(|e| e.map(|e| e.len))
            .sum::<Result<u64, _>>()
            .ok()
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
        self.sb.blocks_count - self.sb.free_blocks
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
    pub fn used_extents<'a, R: ReadAt + ?Sized>(&'a self, dev: &'a R) -> UsedExtents<'a, R> {
        // Block 0 of a 1 KiB-block filesystem lies before group 0 and is in no bitmap; it holds
        // the boot sector, so it is always copied.
        let pending = (self.layout.first_data_block > 0).then_some(Extent {
            start: 0,
            len: self.layout.first_data_block,
        });
        UsedExtents {
            fs: self,
            dev,
            next_group: 0,
            queue: Vec::new(),
            queue_pos: 0,
            pending,
            bitmap: vec![0; self.layout.block_size as usize],
            failed: false,
        }
    }

    /// Appends the used extents of `group` to `out`.
    fn group_extents(
        &self,
        dev: &(impl ReadAt + ?Sized),
        group: u32,
        bitmap: &mut [u8],
        out: &mut Vec<Extent>,
    ) -> Result<(), ExtError> {
        let desc = &self.groups[group as usize];
        let l = &self.layout;
        let nbytes = self.sb.clusters_per_group as usize / 8;
        let bitmap = &mut bitmap[..nbytes];

        // group_descr.rst: with descriptor checksums, BLOCK_UNINIT means the on-disk bitmap was
        // never written and only the group's own metadata is in use.
        let uninit = self.sb.has_group_desc_csum() && desc.block_uninit() && desc.checksum_ok;
        if uninit {
            bitmap.fill(0);
        } else {
            let offset = desc.block_bitmap * u64::from(l.block_size);
            read_at(dev, bitmap, offset)?;
            if self.opts.verify_checksums
                && self.sb.has_ro_compat(ro_compat::METADATA_CSUM)
                && !desc.block_bitmap_csum_matches(&self.sb, bitmap)
            {
                return Err(ExtError::BitmapChecksum {
                    group,
                    block: desc.block_bitmap,
                });
            }
        }

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

/// Reads every group descriptor, checking that what they point to lies in the filesystem.
fn read_descriptors(
    dev: &(impl ReadAt + ?Sized),
    sb: &Superblock,
    l: &Layout,
    opts: ScanOptions,
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

/// Everything e2fsprogs' `mark_uninit_bg_group_blocks` marks: for each `BLOCK_UNINIT` group,
/// its superblock backup and descriptor blocks, its inode table and both bitmaps.
fn uninit_metadata(l: &Layout, groups: &[GroupDesc]) -> Vec<Extent> {
    let mut v = Vec::new();
    for (g, d) in (0u32..).zip(groups) {
        if !d.block_uninit() {
            continue;
        }
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

/// Iterator over the used extents of an ext filesystem, one group's bitmap at a time.
pub struct UsedExtents<'a, R: ReadAt + ?Sized> {
    fs: &'a ExtFs,
    dev: &'a R,
    next_group: u32,
    queue: Vec<Extent>,
    queue_pos: usize,
    /// The extent being grown; it is emitted once the next one is not adjacent.
    pending: Option<Extent>,
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
                match &mut self.pending {
                    Some(p) if p.start + p.len == e.start => p.len += e.len,
                    Some(p) => return Some(Ok(std::mem::replace(p, e))),
                    None => self.pending = Some(e),
                }
                continue;
            }
            if self.next_group >= self.fs.layout.group_count {
                return self.pending.take().map(Ok);
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
