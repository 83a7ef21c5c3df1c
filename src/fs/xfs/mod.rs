//! XFS: which blocks are in use, read from each AG's by-block free-space btree.
//!
//! The path through this module is the path through the disk: [`superblock`] → every AG's
//! AGF ([`ag`]) → the internal log's head ([`log`]) when the filesystem is opened; then, while
//! the extents are read, one AG at a time: its AGFL and its by-block free-space btree
//! ([`btree`]), whose free extents are complemented within the AG. Memory is a few dozen bytes
//! per AG plus one pointer per btree leaf of the AG being read, never one entry per block or
//! per free extent.
//!
//! The used set is everything but the btree's free extents, so AG headers, the free list,
//! every btree, the inodes and the internal log are all copied. Blocks the btree calls free
//! but that are the AG headers, the AGFL's blocks, the btree's own blocks or the log (a
//! corrupt btree) are copied anyway, and a note says so.

pub mod ag;
pub mod btree;
pub mod log;
pub mod superblock;

use std::io;
use std::sync::Mutex;

use thiserror::Error;

use super::{
    Coalesce, Extent, ExtentIter, Family, FsInfo, FsState, FsType, Identity, ScanError,
    ScanOptions, UsedBlocks, Uuid, label_text,
};
use crate::source::ReadAt;
use ag::{AGF_SECTOR, AGFL_SECTOR, Agf};
use btree::{FreeExtent, Walk};
use log::LogState;
use superblock::{SB_PREFIX, Superblock, Unsupported};

/// Why an XFS filesystem could not be scanned.
#[derive(Debug, Error)]
pub enum XfsError {
    /// No XFS magic: some other filesystem, or none.
    #[error("not an XFS filesystem (no XFSB magic at byte 0)")]
    NotXfs,
    /// The device cannot even hold a superblock.
    #[error("too small to hold an XFS superblock ({size} bytes)")]
    TooSmall {
        /// Device size in bytes.
        size: u64,
    },
    /// The superblock describes an impossible filesystem.
    #[error("corrupt XFS superblock: {0}")]
    BadSuperblock(&'static str),
    /// A v5 superblock whose CRC does not match.
    #[error("XFS superblock checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    SuperblockChecksum {
        /// `sb_crc`.
        stored: u32,
        /// What the sector hashes to.
        computed: u32,
    },
    /// Something rimage cannot vouch for (it is imaged raw instead).
    #[error("rimage does not scan this XFS filesystem: {0}")]
    Unsupported(Unsupported),
    /// The filesystem is larger than the device.
    #[error(
        "the filesystem claims {fs_bytes} bytes but the device holds only {device_bytes} (truncated image or wrong partition)"
    )]
    Truncated {
        /// `dblocks * blocksize` (saturated).
        fs_bytes: u64,
        /// Device size.
        device_bytes: u64,
    },
    /// An AGF that does not describe its AG.
    #[error("AG {ag}: corrupt AGF (sector 1 of the AG): {reason}")]
    BadAgf {
        /// The AG.
        ag: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// An AGF whose CRC does not match.
    #[error("AG {ag}: AGF checksum mismatch (run xfs_repair)")]
    AgfChecksum {
        /// The AG.
        ag: u32,
    },
    /// An AGFL that does not describe its AG.
    #[error("AG {ag}: corrupt AGFL (sector 3 of the AG): {reason}")]
    BadAgfl {
        /// The AG.
        ag: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// An AGFL whose CRC does not match.
    #[error("AG {ag}: AGFL checksum mismatch (run xfs_repair)")]
    AgflChecksum {
        /// The AG.
        ag: u32,
    },
    /// A free-space btree block that is not what the tree says it is.
    #[error("AG {ag}: free-space btree block {block}: {reason}")]
    BadBtree {
        /// The AG.
        ag: u32,
        /// The block, inside the AG.
        block: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// A free-space btree block whose CRC does not match.
    #[error("AG {ag}: free-space btree block {block} fails its checksum (run xfs_repair)")]
    BtreeChecksum {
        /// The AG.
        ag: u32,
        /// The block, inside the AG.
        block: u32,
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

/// Reads the bytes at a position (an AG block, or a byte offset in the log) into a buffer:
/// how the btree walk and the log search read, so that they need no device type.
pub type Reader<'a, At> = &'a mut dyn FnMut(At, &mut [u8]) -> Result<(), XfsError>;

/// Notes kept at most (one AG's problem per note; many damaged AGs are summed up).
const MAX_NOTES: usize = 24;

/// An opened XFS filesystem: its superblock, every AGF, and the state of its log.
#[derive(Debug)]
pub struct XfsFs {
    sb: Superblock,
    agfs: Vec<Agf>,
    log: LogState,
    opts: ScanOptions,
    /// Notes from opening, then those the extent walks add (deduplicated: `info` and the save
    /// both walk).
    notes: Mutex<Vec<String>>,
}

/// The XFS family: identified by its superblock, scanned through its free-space btrees.
pub const FAMILY: Family = Family {
    identify,
    scan: Some(probe),
};

fn read_at(dev: &(impl ReadAt + ?Sized), buf: &mut [u8], offset: u64) -> Result<(), XfsError> {
    dev.read_exact_at(buf, offset)
        .map_err(|source| XfsError::Io {
            offset,
            len: buf.len(),
            source,
        })
}

/// Reads the superblock sector (its CRC covers the whole sector).
fn read_superblock(
    dev: &(impl ReadAt + ?Sized),
    verify_checksums: bool,
) -> Result<(Superblock, bool), XfsError> {
    let size = dev.size();
    if size < SB_PREFIX as u64 {
        return Err(XfsError::TooSmall { size });
    }
    let mut prefix = [0u8; SB_PREFIX];
    read_at(dev, &mut prefix, 0)?;
    if !superblock::has_magic(&prefix) {
        return Err(XfsError::NotXfs);
    }
    let sect = superblock::sector_size(&prefix).ok_or(XfsError::BadSuperblock(
        "sector size is not a power of two from 512 to 32768",
    ))?;
    if u64::from(sect) > size {
        return Err(XfsError::TooSmall { size });
    }
    let mut sector = vec![0u8; sect as usize];
    read_at(dev, &mut sector, 0)?;
    Superblock::parse(&sector, verify_checksums)
}

/// Recognises an XFS superblock with sane geometry (its CRC is not checked, so that a damaged
/// filesystem is still recognised by its UUID).
pub fn identify(dev: &dyn ReadAt) -> Option<Identity> {
    let (sb, _) = read_superblock(dev, false).ok()?;
    Some(Identity {
        kind: FsType::Xfs,
        uuid: Some(Uuid(sb.uuid).to_string()),
        label: label_text(&sb.label),
        page_size: None,
        block_size: Some(sb.block_size),
    })
}

/// Opens `dev` as XFS; `Ok(None)` when it is not. A filesystem rimage cannot vouch for
/// (realtime section, external log, unknown features) is imaged raw, with a note saying why.
///
/// # Errors
/// An XFS filesystem that cannot be trusted or read.
pub fn probe(
    dev: &dyn ReadAt,
    opts: ScanOptions,
) -> Result<Option<Box<dyn UsedBlocks>>, ScanError> {
    match XfsFs::open(dev, opts) {
        Ok(fs) => Ok(Some(Box::new(fs))),
        Err(XfsError::NotXfs | XfsError::TooSmall { .. }) => Ok(None),
        Err(XfsError::Unsupported(why)) => Ok(Some(Box::new(super::raw::RawLayout::with_note(
            dev.size(),
            format!("XFS imaged raw (every non-zero block): {why}"),
        )))),
        Err(e) => Err(e.into()),
    }
}

impl XfsFs {
    /// Reads and validates the superblock, every AGF and the log head.
    ///
    /// # Errors
    /// [`XfsError::NotXfs`] when there is no XFS filesystem; [`XfsError::Unsupported`] for one
    /// rimage cannot vouch for; any other variant for one that cannot be trusted or read.
    pub fn open(dev: &(impl ReadAt + ?Sized), opts: ScanOptions) -> Result<Self, XfsError> {
        let (sb, sb_crc_ok) = read_superblock(dev, opts.verify_checksums)?;
        if let Some(why) = &sb.unsupported {
            return Err(XfsError::Unsupported(why.clone()));
        }
        let size = dev.size();
        let fs_bytes = sb.dblocks.checked_mul(u64::from(sb.block_size));
        if fs_bytes.is_none_or(|b| b > size) {
            return Err(XfsError::Truncated {
                fs_bytes: fs_bytes.unwrap_or(u64::MAX),
                device_bytes: size,
            });
        }
        let mut notes = Vec::new();
        if !sb_crc_ok {
            notes.push("the superblock fails its checksum; read as it is".to_string());
        }
        let bs = u64::from(sb.block_size);
        let mut sector = vec![0u8; sb.sect_size as usize];
        // Grows only as AGFs are read from the device, never from the claimed count alone.
        let mut agfs = Vec::new();
        let mut bad_agfs = Vec::new();
        for ag in 0..sb.agcount {
            let at = sb.linear(ag, 0) * bs + AGF_SECTOR * u64::from(sb.sect_size);
            read_at(dev, &mut sector, at)?;
            let agf = ag::parse_agf(&sector, &sb, ag, opts.verify_checksums)?;
            if agf.checksum_bad {
                bad_agfs.push(ag);
            }
            agfs.push(agf);
        }
        if let Some(first) = bad_agfs.first() {
            notes.push(format!(
                "the AGFs of {} fail their checksums (first: AG {first}); read as they are",
                crate::plural(bad_agfs.len() as u64, "AG")
            ));
        }
        let log_base = {
            let (ag, agbno) = sb.split_fsblock(sb.logstart);
            sb.linear(ag, agbno) * bs
        };
        let log = log::state(&sb, &mut |off, buf| read_at(dev, buf, log_base + off))?;
        match log {
            LogState::Clean => {}
            LogState::NeedsRecovery => notes.push(
                "the log needs recovery (the filesystem is mounted, or crashed): blocks its pending transactions allocate are not in the free-space btrees yet and may be missing from the image; mount and unmount it to replay the log first".to_string(),
            ),
            LogState::Unreadable(why) => notes.push(format!(
                "the log cannot be read ({why}); it is treated as needing recovery"
            )),
        }
        if sb.needs_repair() {
            notes.push("the filesystem is marked as needing xfs_repair".to_string());
        }
        Ok(Self {
            sb,
            agfs,
            log,
            opts,
            notes: Mutex::new(notes),
        })
    }

    /// The superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.sb.block_size
    }

    /// Blocks on the data device (`sb_dblocks`).
    pub fn blocks_count(&self) -> u64 {
        self.sb.dblocks
    }

    /// Whether the log needs recovery (or cannot be read).
    pub fn needs_recovery(&self) -> bool {
        self.log != LogState::Clean
    }

    /// What the scan found worth telling.
    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().map(|n| n.clone()).unwrap_or_default()
    }

    fn note(&self, text: String) {
        if let Ok(mut n) = self.notes.lock()
            && !n.contains(&text)
        {
            if n.len() < MAX_NOTES {
                n.push(text);
            } else if n.len() == MAX_NOTES {
                n.push("more AGs have problems like these; run xfs_repair -n".to_string());
            }
        }
    }

    /// Identity and state, with `used_blocks` as given.
    pub fn info(&self, used_blocks: u64) -> FsInfo {
        let dirty = self.needs_recovery();
        FsInfo {
            fs_type: FsType::Xfs,
            label: label_text(&self.sb.label).unwrap_or_default(),
            uuid: Some(Uuid(self.sb.uuid)),
            block_size: self.sb.block_size,
            total_blocks: self.sb.dblocks,
            used_blocks,
            state: FsState {
                clean: !dirty,
                errors: self.sb.needs_repair(),
                needs_recovery: dirty,
                orphans: false,
            },
        }
    }

    /// Used blocks according to the AGFs' free counters.
    pub fn agf_used_blocks(&self) -> u64 {
        self.agfs
            .iter()
            .map(|a| u64::from(a.length.saturating_sub(a.freeblks)))
            .sum()
    }

    /// The used blocks in ascending order, adjacent runs merged (also across AGs), one AG's
    /// free-space btree at a time.
    pub fn used_extents<'a, R: ReadAt + ?Sized>(
        &'a self,
        dev: &'a R,
    ) -> Coalesce<UsedExtents<'a, R>> {
        Coalesce::new(
            None,
            UsedExtents {
                fs: self,
                dev,
                next_ag: 0,
                cur: None,
                failed: false,
            },
        )
    }

    /// Blocks of AG `ag` that are used whatever its free-space btree says (AG-relative,
    /// sorted and merged): the four header sectors, the AGFL's blocks, the btree's own blocks,
    /// and the log when it is in this AG.
    fn always_used(&self, ag: u32, agfl: &[u32], btree_blocks: &[u32]) -> Vec<Extent> {
        let sb = &self.sb;
        let header_bytes = (AGFL_SECTOR + 1) * u64::from(sb.sect_size);
        let mut v = vec![Extent {
            start: 0,
            len: header_bytes.div_ceil(u64::from(sb.block_size)),
        }];
        v.extend(agfl.iter().chain(btree_blocks).map(|&b| Extent {
            start: u64::from(b),
            len: 1,
        }));
        let (log_ag, log_agbno) = sb.split_fsblock(sb.logstart);
        if log_ag == ag {
            v.push(Extent {
                start: u64::from(log_agbno),
                len: u64::from(sb.logblocks),
            });
        }
        v.sort_unstable_by_key(|e| e.start);
        let mut merged: Vec<Extent> = Vec::with_capacity(v.len());
        for e in v {
            match merged.last_mut() {
                Some(last) if e.start <= last.end() => {
                    last.len = last.len.max(e.end() - last.start);
                }
                _ => merged.push(e),
            }
        }
        merged
    }

    /// Prepares the walk of AG `ag`: reads its AGFL and the interior levels of its btree.
    fn start_ag(&self, dev: &(impl ReadAt + ?Sized), ag: u32) -> Result<AgWalk, XfsError> {
        let sb = &self.sb;
        let agf = &self.agfs[ag as usize];
        let bs = u64::from(sb.block_size);
        let ag_byte = sb.linear(ag, 0) * bs;
        let mut sector = vec![0u8; sb.sect_size as usize];
        read_at(
            dev,
            &mut sector,
            ag_byte + AGFL_SECTOR * u64::from(sb.sect_size),
        )?;
        let agfl = ag::parse_agfl(&sector, sb, ag, agf, self.opts.verify_checksums)?;
        if agfl.checksum_bad {
            self.note(format!(
                "AG {ag}: the AGFL fails its checksum; read as it is"
            ));
        }
        if agfl.odd {
            self.note(format!(
                "AG {ag}: the free list's count and slots disagree (the kernel resets such a list at mount); its listed blocks are copied"
            ));
        }
        let walk = self.walk(ag);
        let shape = walk.shape(&mut |b, buf| read_at(dev, buf, ag_byte + u64::from(b) * bs))?;
        Ok(AgWalk {
            ag,
            base: sb.linear(ag, 0),
            length: u64::from(agf.length),
            extras: self.always_used(ag, &agfl.blocks, &shape.blocks),
            extra_at: 0,
            leaves: shape.leaves,
            next_leaf: 0,
            free: Vec::new(),
            free_at: 0,
            prev_end: 0,
            cursor: 0,
            free_blocks: 0,
            overlap: 0,
            bad_checksums: shape.bad_checksums,
            buf: vec![0u8; sb.block_size as usize],
            out: Vec::new(),
            out_at: 0,
            done: false,
        })
    }

    fn walk(&self, ag: u32) -> Walk<'_> {
        Walk {
            sb: &self.sb,
            ag,
            agf: &self.agfs[ag as usize],
            verify_checksums: self.opts.verify_checksums,
        }
    }

    /// Produces the next used extents of the AG being walked into `w.out` (AG-relative);
    /// `false` when the AG is finished.
    fn advance(&self, dev: &(impl ReadAt + ?Sized), w: &mut AgWalk) -> Result<bool, XfsError> {
        w.out.clear();
        w.out_at = 0;
        if w.done {
            return Ok(false);
        }
        if w.free_at == w.free.len() {
            w.free.clear();
            w.free_at = 0;
            if let Some(&leaf) = w.leaves.get(w.next_leaf) {
                w.next_leaf += 1;
                let bs = u64::from(self.sb.block_size);
                read_at(dev, &mut w.buf, (w.base + u64::from(leaf)) * bs)?;
                let (end, crc_ok) = self
                    .walk(w.ag)
                    .leaf(&w.buf, leaf, w.prev_end, &mut w.free)?;
                w.prev_end = end;
                w.bad_checksums += u64::from(!crc_ok);
                return Ok(true);
            }
            // No free extents left: the rest of the AG is used.
            if w.cursor < w.length {
                w.out.push(Extent {
                    start: w.cursor,
                    len: w.length - w.cursor,
                });
            }
            w.done = true;
            self.finish_ag(w);
            return Ok(true);
        }
        for f in &w.free[w.free_at..] {
            let (s, e) = (u64::from(f.start), u64::from(f.start) + u64::from(f.len));
            if s > w.cursor {
                w.out.push(Extent {
                    start: w.cursor,
                    len: s - w.cursor,
                });
            }
            w.free_blocks += u64::from(f.len);
            // Blocks the btree calls free that cannot be: copied.
            while w.extras.get(w.extra_at).is_some_and(|x| x.end() <= s) {
                w.extra_at += 1;
            }
            let mut k = w.extra_at;
            while let Some(x) = w.extras.get(k).filter(|x| x.start < e) {
                let (a, b) = (x.start.max(s), x.end().min(e));
                w.out.push(Extent {
                    start: a,
                    len: b - a,
                });
                w.overlap += b - a;
                k += 1;
            }
            w.cursor = e;
        }
        w.free_at = w.free.len();
        Ok(true)
    }

    /// Notes what the walk of an AG found.
    fn finish_ag(&self, w: &AgWalk) {
        let agf = &self.agfs[w.ag as usize];
        let ag = w.ag;
        if w.overlap > 0 {
            self.note(format!(
                "AG {ag}: the free-space btree lists {} of AG headers, free list, btree or log as free; copied anyway",
                crate::plural(w.overlap, "block")
            ));
        }
        if w.free_blocks != u64::from(agf.freeblks) {
            self.note(format!(
                "AG {ag}: the AGF counts {} free blocks but the free-space btree holds {} (a wrong counter; xfs_repair corrects it)",
                agf.freeblks, w.free_blocks
            ));
        }
        if w.bad_checksums > 0 {
            self.note(format!(
                "AG {ag}: {} of the free-space btree fail their checksums; read as they are",
                crate::plural(w.bad_checksums, "block")
            ));
        }
    }
}

/// The walk of one AG.
#[derive(Debug)]
struct AgWalk {
    ag: u32,
    /// Linear block of the AG's first block.
    base: u64,
    length: u64,
    /// Blocks used whatever the btree says (sorted, merged).
    extras: Vec<Extent>,
    extra_at: usize,
    /// Leaves in key order, and the next one to read.
    leaves: Vec<u32>,
    next_leaf: usize,
    /// Free extents of the leaf being read.
    free: Vec<FreeExtent>,
    free_at: usize,
    /// End of the last free extent (records must come in order).
    prev_end: u64,
    /// Blocks before this are accounted for.
    cursor: u64,
    free_blocks: u64,
    overlap: u64,
    bad_checksums: u64,
    buf: Vec<u8>,
    /// Used extents ready to go out (AG-relative).
    out: Vec<Extent>,
    out_at: usize,
    done: bool,
}

/// Iterator over the used extents of an XFS filesystem, one AG at a time (merged across AGs
/// by [`Coalesce`]).
pub struct UsedExtents<'a, R: ReadAt + ?Sized> {
    fs: &'a XfsFs,
    dev: &'a R,
    next_ag: u32,
    cur: Option<AgWalk>,
    failed: bool,
}

impl<R: ReadAt + ?Sized> Iterator for UsedExtents<'_, R> {
    type Item = Result<Extent, XfsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(w) = &mut self.cur {
                if let Some(&e) = w.out.get(w.out_at) {
                    w.out_at += 1;
                    return Some(Ok(Extent {
                        start: w.base + e.start,
                        len: e.len,
                    }));
                }
                match self.fs.advance(self.dev, w) {
                    Ok(true) => continue,
                    Ok(false) => self.cur = None,
                    Err(e) => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                }
            }
            if self.next_ag >= self.fs.sb.agcount {
                return None;
            }
            let ag = self.next_ag;
            self.next_ag += 1;
            match self.fs.start_ag(self.dev, ag) {
                Ok(w) => self.cur = Some(w),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl UsedBlocks for XfsFs {
    fn block_size(&self) -> u32 {
        self.sb.block_size
    }

    fn info(&self, dev: &dyn ReadAt) -> Result<FsInfo, ScanError> {
        let mut used = 0;
        for e in self.used_extents(dev) {
            used += e?.len;
        }
        Ok(XfsFs::info(self, used))
    }

    fn extents<'a>(&'a self, dev: &'a dyn ReadAt) -> ExtentIter<'a> {
        Box::new(self.used_extents(dev).map(|r| r.map_err(ScanError::from)))
    }

    fn recorded_used_blocks(&self) -> Option<u64> {
        Some(self.agf_used_blocks())
    }

    fn notes(&self) -> Vec<String> {
        XfsFs::notes(self)
    }
}
