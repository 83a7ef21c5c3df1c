//! FAT12/16/32: which sectors are in use, read from the first FAT.
//!
//! Layout (Microsoft's "FAT: General Overview of On-Disk Format", the BPB fields `BPB_*` and
//! `BS_*`): reserved sectors (boot sector, FSInfo, backup boot sector), the FAT copies, on
//! FAT12/16 the fixed root directory, then the data region of clusters numbered from 2. The
//! reserved sectors, every FAT copy and the root directory are always used; a cluster is used
//! when its entry in the first FAT is neither 0 (free) nor the bad-cluster mark; the sectors
//! after the last whole cluster are kept. The block size of a FAT scan is the sector size,
//! since the data region need not start on a cluster boundary. The FAT is read in pieces, so
//! memory does not grow with the volume.

use std::io;

use byteorder::{ByteOrder, LittleEndian};
use thiserror::Error;

use super::{
    Coalesce, Extent, ExtentIter, Family, FsInfo, FsState, FsType, Identity, ScanError,
    ScanOptions, UsedBlocks, Uuid, label_text,
};
use crate::source::ReadAt;

/// Boot signature at the end of the boot sector.
const BOOT_SIGNATURE: usize = 510;
/// `BS_jmpBoot`: a short (0xEB) or near (0xE9) jump to the boot code.
const JMP_BOOT: usize = 0;
// BPB fields (offsets in the boot sector).
const BPB_BYTS_PER_SEC: usize = 11;
const BPB_SEC_PER_CLUS: usize = 13;
const BPB_RSVD_SEC_CNT: usize = 14;
const BPB_NUM_FATS: usize = 16;
const BPB_ROOT_ENT_CNT: usize = 17;
const BPB_TOT_SEC16: usize = 19;
const BPB_MEDIA: usize = 21;
const BPB_FAT_SZ16: usize = 22;
const BPB_TOT_SEC32: usize = 32;
/// FAT32 only: `BPB_FATSz32`, `BPB_ExtFlags`.
const BPB_FAT_SZ32: usize = 36;
const BPB_EXT_FLAGS: usize = 40;
/// Where FAT32 keeps its filesystem type text ("FAT32   "), in its extended boot record at 64.
const FAT32_FS_TYPE: usize = 82;
/// Extended boot record fields, FAT12/16 (at 36) and FAT32 (at 64): `BS_Reserved1` (whose bit 0
/// Linux and Windows set while the volume is mounted), `BS_BootSig`, `BS_VolID`, `BS_VolLab`,
/// `BS_FilSysType`.
const EBR_FAT16: Ebr = Ebr {
    state: 37,
    sig: 38,
    id: 39,
    label: 43,
    fs_type: 54,
};
const EBR_FAT32: Ebr = Ebr {
    state: 65,
    sig: 66,
    id: 67,
    label: 71,
    fs_type: 82,
};
/// `BS_BootSig` values announcing that the volume id and label follow (0x28: id only).
const EXTENDED_BOOT_SIGNATURES: [u8; 2] = [0x29, 0x28];
/// `BS_Reserved1` bit 0: the volume is dirty (Linux's `FAT_STATE_DIRTY`).
const STATE_DIRTY: u8 = 0x01;
/// FAT12 has fewer clusters than this, FAT16 fewer than [`FAT16_LIMIT`] (the spec's rule).
const FAT12_LIMIT: u64 = 4085;
const FAT16_LIMIT: u64 = 65525;
/// Most clusters a FAT32 volume addresses (cluster numbers up to 0x0FFFFFF6).
const FAT32_MAX_CLUSTERS: u64 = 0x0FFF_FFF5;
/// A FAT32 entry's top four bits are reserved.
const FAT32_MASK: u32 = 0x0FFF_FFFF;
/// Clean-shutdown bit of the second FAT entry (FAT16; FAT32 has it at bit 27).
const FAT16_CLEAN: u32 = 0x8000;
const FAT32_CLEAN: u32 = 0x0800_0000;
/// FAT entries read at a time (FAT16/32).
const ENTRIES_PER_READ: u32 = 1 << 16;

struct Ebr {
    state: usize,
    sig: usize,
    id: usize,
    label: usize,
    fs_type: usize,
}

/// Why a FAT filesystem could not be scanned.
#[derive(Debug, Error)]
pub enum FatError {
    /// No FAT boot sector.
    #[error("not a FAT filesystem (no boot sector with a BPB)")]
    NotFat,
    /// The device cannot even hold a boot sector.
    #[error("too small to hold a FAT boot sector ({size} bytes)")]
    TooSmall {
        /// Device size in bytes.
        size: u64,
    },
    /// The BPB describes an impossible volume.
    #[error("corrupt FAT boot sector: {0}")]
    BadBootSector(&'static str),
    /// The FAT has fewer entries than the volume has clusters.
    #[error("the FAT ({fat_sectors} sectors) cannot hold {clusters} clusters of a FAT{bits}")]
    FatTooSmall {
        /// `BPB_FATSz16` or `BPB_FATSz32`.
        fat_sectors: u32,
        /// Clusters in the data region.
        clusters: u64,
        /// Entry width.
        bits: u32,
    },
    /// The volume is larger than the device.
    #[error(
        "the filesystem claims {fs_bytes} bytes but the device holds only {device_bytes} (truncated image or wrong partition)"
    )]
    Truncated {
        /// Total sectors times the sector size.
        fs_bytes: u64,
        /// Device size.
        device_bytes: u64,
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

/// FAT entry width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FatKind {
    /// 12-bit entries.
    Fat12,
    /// 16-bit entries.
    Fat16,
    /// 32-bit entries, of which 28 bits count.
    Fat32,
}

impl FatKind {
    fn bits(self) -> u32 {
        match self {
            Self::Fat12 => 12,
            Self::Fat16 => 16,
            Self::Fat32 => 32,
        }
    }

    /// The bad-cluster mark.
    fn bad(self) -> u32 {
        match self {
            Self::Fat12 => 0xFF7,
            Self::Fat16 => 0xFFF7,
            Self::Fat32 => 0x0FFF_FFF7,
        }
    }
}

/// The geometry a valid BPB describes, in sectors.
#[derive(Clone, Debug)]
pub struct Geometry {
    /// `BPB_BytsPerSec`.
    pub sector_size: u32,
    /// `BPB_SecPerClus`.
    pub sectors_per_cluster: u32,
    /// `BPB_FATSz16` or `BPB_FATSz32`.
    pub fat_sectors: u32,
    /// First sector of the first FAT (`BPB_RsvdSecCnt`).
    pub fat_start: u32,
    /// First sector of cluster 2.
    pub first_data_sector: u64,
    /// Clusters in the data region.
    pub clusters: u64,
    /// Sectors in the volume.
    pub total_sectors: u64,
    /// Entry width, from the cluster count.
    pub kind: FatKind,
}

/// Decodes and checks the BPB of a boot sector.
///
/// # Errors
/// [`FatError::NotFat`] when it is no FAT boot sector; [`FatError::BadBootSector`] or
/// [`FatError::FatTooSmall`] for an impossible geometry.
pub fn parse_bpb(boot: &[u8; 512]) -> Result<Geometry, FatError> {
    let u16_at = |o: usize| u32::from(LittleEndian::read_u16(&boot[o..]));
    let u32_at = |o: usize| LittleEndian::read_u32(&boot[o..]);
    if boot[BOOT_SIGNATURE..] != [0x55, 0xAA]
        || !(boot[JMP_BOOT] == 0xE9 || (boot[JMP_BOOT] == 0xEB && boot[JMP_BOOT + 2] == 0x90))
    {
        return Err(FatError::NotFat);
    }
    let media = boot[BPB_MEDIA];
    if media != 0xF0 && media < 0xF8 {
        return Err(FatError::NotFat);
    }
    let bad = FatError::BadBootSector;
    let sector_size = u16_at(BPB_BYTS_PER_SEC);
    if !matches!(sector_size, 512 | 1024 | 2048 | 4096) {
        return Err(bad("bytes per sector is not 512, 1024, 2048 or 4096"));
    }
    let spc = u32::from(boot[BPB_SEC_PER_CLUS]);
    if spc == 0 || !spc.is_power_of_two() {
        return Err(bad(
            "sectors per cluster is not a power of two from 1 to 128",
        ));
    }
    let reserved = u16_at(BPB_RSVD_SEC_CNT);
    if reserved == 0 {
        return Err(bad("no reserved sectors"));
    }
    let fats = u32::from(boot[BPB_NUM_FATS]);
    if fats == 0 {
        return Err(bad("no FAT"));
    }
    let fat16 = u16_at(BPB_FAT_SZ16);
    let fat32_form = fat16 == 0;
    let fat_sectors = if fat32_form {
        u32_at(BPB_FAT_SZ32)
    } else {
        fat16
    };
    if fat_sectors == 0 {
        return Err(bad("the FAT has no sectors"));
    }
    let root_entries = u16_at(BPB_ROOT_ENT_CNT);
    if fat32_form && root_entries != 0 {
        return Err(bad("a FAT32 boot sector with a fixed root directory"));
    }
    let tot16 = u16_at(BPB_TOT_SEC16);
    let total_sectors = u64::from(if tot16 != 0 {
        tot16
    } else {
        u32_at(BPB_TOT_SEC32)
    });
    // Root directory entries are 32 bytes, in whole sectors.
    let root_sectors = u64::from((root_entries * 32).div_ceil(sector_size));
    let first_data_sector =
        u64::from(reserved) + u64::from(fats) * u64::from(fat_sectors) + root_sectors;
    if first_data_sector >= total_sectors {
        return Err(bad(
            "the FATs and root directory run past the end of the volume",
        ));
    }
    let clusters = (total_sectors - first_data_sector) / u64::from(spc);
    if clusters == 0 {
        return Err(bad("no data clusters"));
    }
    // The cluster count decides between FAT12 and FAT16, as the spec says. A FAT32 boot sector
    // (no 16-bit FAT size) means FAT32 whatever the count, as Linux and dosfstools read it:
    // mkfs.fat makes such small FAT32 volumes.
    let kind = if fat32_form {
        if clusters > FAT32_MAX_CLUSTERS {
            return Err(bad("more clusters than FAT32 addresses"));
        }
        FatKind::Fat32
    } else if clusters < FAT12_LIMIT {
        FatKind::Fat12
    } else if clusters < FAT16_LIMIT {
        FatKind::Fat16
    } else {
        return Err(bad(
            "a FAT12/16 boot sector with more clusters than FAT16 addresses",
        ));
    };
    let entries = u64::from(fat_sectors) * u64::from(sector_size) * 8 / u64::from(kind.bits());
    if entries < clusters + 2 {
        return Err(FatError::FatTooSmall {
            fat_sectors,
            clusters,
            bits: kind.bits(),
        });
    }
    Ok(Geometry {
        sector_size,
        sectors_per_cluster: spc,
        fat_sectors,
        fat_start: reserved,
        first_data_sector,
        clusters,
        total_sectors,
        kind,
    })
}

/// The FAT family: identified by its boot sector, scanned through its first FAT.
pub const FAMILY: Family = Family {
    identify,
    scan: Some(probe),
};

fn ebr(boot: &[u8; 512]) -> Option<&'static Ebr> {
    let ebr = if &boot[FAT32_FS_TYPE..FAT32_FS_TYPE + 5] == b"FAT32"
        || LittleEndian::read_u16(&boot[BPB_FAT_SZ16..]) == 0
    {
        &EBR_FAT32
    } else {
        &EBR_FAT16
    };
    EXTENDED_BOOT_SIGNATURES
        .contains(&boot[ebr.sig])
        .then_some(ebr)
}

/// The volume id in the extended boot record, when there is one.
fn volume_id(boot: &[u8; 512]) -> Option<u32> {
    ebr(boot).map(|e| LittleEndian::read_u32(&boot[e.id..]))
}

/// The label in the extended boot record ("NO NAME" is none).
fn volume_label(boot: &[u8; 512]) -> Option<String> {
    let e = ebr(boot).filter(|e| boot[e.sig] == 0x29)?;
    label_text(&boot[e.label..e.label + 11]).filter(|l| l != "NO NAME")
}

/// Recognises a FAT boot sector: a valid BPB, or an extended boot record naming FAT.
pub fn identify(dev: &dyn ReadAt) -> Option<Identity> {
    let mut boot = [0u8; 512];
    dev.read_exact_at(&mut boot, 0).ok()?;
    let geometry = parse_bpb(&boot).ok();
    if geometry.is_none() {
        let e = ebr(&boot)?;
        if boot[BOOT_SIGNATURE..] != [0x55, 0xAA] || &boot[e.fs_type..e.fs_type + 3] != b"FAT" {
            return None;
        }
    }
    Some(Identity {
        kind: FsType::Vfat,
        uuid: volume_id(&boot).map(|id| FsType::Vfat.id_text(&id_bytes(id))),
        label: volume_label(&boot),
        page_size: None,
        block_size: geometry.map(|g| g.sector_size),
    })
}

/// How an image header keeps a volume id (see [`FsType::id_text`]).
fn id_bytes(id: u32) -> Uuid {
    let mut u = [0u8; 16];
    u[..4].copy_from_slice(&id.to_le_bytes());
    Uuid(u)
}

/// Opens `dev` as FAT; `Ok(None)` when it is not.
///
/// # Errors
/// A FAT filesystem whose geometry is impossible, that does not fit the device, or that cannot
/// be read.
pub fn probe(
    dev: &dyn ReadAt,
    opts: ScanOptions,
) -> Result<Option<Box<dyn UsedBlocks>>, ScanError> {
    match FatFs::open(dev, opts) {
        Ok(fs) => Ok(Some(Box::new(fs))),
        Err(FatError::NotFat | FatError::TooSmall { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// An opened FAT filesystem.
#[derive(Clone, Debug)]
pub struct FatFs {
    geometry: Geometry,
    volume_id: Option<u32>,
    label: Option<String>,
    notes: Vec<String>,
}

fn read_at(dev: &(impl ReadAt + ?Sized), buf: &mut [u8], offset: u64) -> Result<(), FatError> {
    dev.read_exact_at(buf, offset)
        .map_err(|source| FatError::Io {
            offset,
            len: buf.len(),
            source,
        })
}

impl FatFs {
    /// Reads and checks the boot sector, and the dirty flags.
    ///
    /// # Errors
    /// [`FatError::NotFat`] when there is no FAT filesystem; any other variant for one that
    /// cannot be trusted or read.
    pub fn open(dev: &(impl ReadAt + ?Sized), _opts: ScanOptions) -> Result<Self, FatError> {
        let size = dev.size();
        if size < 512 {
            return Err(FatError::TooSmall { size });
        }
        let mut boot = [0u8; 512];
        read_at(dev, &mut boot, 0)?;
        let g = parse_bpb(&boot)?;
        let ss = u64::from(g.sector_size);
        let fs_bytes = g.total_sectors * ss;
        if fs_bytes > size {
            return Err(FatError::Truncated {
                fs_bytes,
                device_bytes: size,
            });
        }
        let mut notes = Vec::new();
        if g.kind == FatKind::Fat32 && g.clusters < FAT16_LIMIT {
            notes.push(format!(
                "FAT32 with only {} clusters (the specification wants at least 65,525); read as FAT32, as Linux and dosfstools read it",
                g.clusters
            ));
        }
        if g.kind == FatKind::Fat32 {
            let flags = LittleEndian::read_u16(&boot[BPB_EXT_FLAGS..]);
            // Bit 7: only the FAT numbered in bits 0-3 is active.
            if flags & 0x80 != 0 && flags & 0xF != 0 {
                notes.push(format!(
                    "FAT mirroring is off and FAT {} is the active one; the first FAT is read, as Linux reads it",
                    flags & 0xF
                ));
            }
        }
        let dirty_boot = ebr(&boot).is_some_and(|e| boot[e.state] & STATE_DIRTY != 0);
        let dirty_fat = {
            let mut e1 = [0u8; 4];
            let at = u64::from(g.fat_start) * ss;
            match g.kind {
                FatKind::Fat12 => false,
                FatKind::Fat16 => {
                    read_at(dev, &mut e1[..2], at + 2)?;
                    u32::from(LittleEndian::read_u16(&e1)) & FAT16_CLEAN == 0
                }
                FatKind::Fat32 => {
                    read_at(dev, &mut e1, at + 4)?;
                    LittleEndian::read_u32(&e1) & FAT32_CLEAN == 0
                }
            }
        };
        if dirty_boot || dirty_fat {
            notes.push(
                "the volume's dirty bit is set (it is mounted, or was not cleanly unmounted); fsck.fat -a checks and clears it"
                    .to_string(),
            );
        }
        Ok(Self {
            volume_id: volume_id(&boot),
            label: volume_label(&boot),
            geometry: g,
            notes,
        })
    }

    /// The geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Identity, with `used_blocks` (sectors) as given.
    pub fn info(&self, used_blocks: u64) -> FsInfo {
        FsInfo {
            fs_type: FsType::Vfat,
            label: self.label.clone().unwrap_or_default(),
            uuid: self.volume_id.map(id_bytes),
            block_size: self.geometry.sector_size,
            total_blocks: self.geometry.total_sectors,
            used_blocks,
            state: FsState {
                clean: true,
                ..FsState::default()
            },
        }
    }

    /// The used sectors, ascending, adjacent runs merged.
    pub fn used_extents<'a, R: ReadAt + ?Sized>(
        &'a self,
        dev: &'a R,
    ) -> Coalesce<UsedSectors<'a, R>> {
        // The reserved sectors, every FAT and the root directory.
        let metadata = Extent {
            start: 0,
            len: self.geometry.first_data_sector,
        };
        Coalesce::new(
            Some(metadata),
            UsedSectors {
                fs: self,
                dev,
                next: 2,
                buf: Vec::new(),
                buf_first: 2,
                buf_entries: 0,
                tail_done: false,
                failed: false,
            },
        )
    }

    /// Reads the FAT entries from cluster `first` on into `buf`; returns how many it holds.
    fn fill(
        &self,
        dev: &(impl ReadAt + ?Sized),
        first: u32,
        buf: &mut Vec<u8>,
    ) -> Result<u32, FatError> {
        let g = &self.geometry;
        let end = u32::try_from(g.clusters + 2).expect("bounded by FAT32_MAX_CLUSTERS");
        let fat = u64::from(g.fat_start) * u64::from(g.sector_size);
        let (offset, bytes, n) = match g.kind {
            // At most 4086 entries of 1.5 bytes: the whole table at once.
            FatKind::Fat12 => (fat, (end as usize * 3).div_ceil(2) + 1, end - first),
            FatKind::Fat16 | FatKind::Fat32 => {
                let n = ENTRIES_PER_READ.min(end - first);
                let w = (g.kind.bits() / 8) as usize;
                (fat + u64::from(first) * w as u64, n as usize * w, n)
            }
        };
        // The FAT was checked to hold every entry; a FAT12's last byte may be the FAT's own.
        let limit = u64::from(g.fat_sectors) * u64::from(g.sector_size) - (offset - fat);
        buf.resize(bytes.min(limit as usize), 0);
        buf[..].fill(0);
        read_at(dev, buf, offset)?;
        buf.resize(bytes, 0);
        Ok(n)
    }

    /// The entry of cluster `n`, from `buf` filled by [`FatFs::fill`] from cluster `first`.
    fn entry(&self, buf: &[u8], first: u32, n: u32) -> u32 {
        match self.geometry.kind {
            FatKind::Fat12 => {
                let at = (n + n / 2) as usize;
                let v = u32::from(LittleEndian::read_u16(&buf[at..]));
                if n % 2 == 1 { v >> 4 } else { v & 0xFFF }
            }
            FatKind::Fat16 => u32::from(LittleEndian::read_u16(&buf[(n - first) as usize * 2..])),
            FatKind::Fat32 => LittleEndian::read_u32(&buf[(n - first) as usize * 4..]) & FAT32_MASK,
        }
    }
}

/// Iterator over the used sectors of a FAT volume, reading the first FAT in pieces.
pub struct UsedSectors<'a, R: ReadAt + ?Sized> {
    fs: &'a FatFs,
    dev: &'a R,
    /// Next cluster number to look at.
    next: u32,
    buf: Vec<u8>,
    buf_first: u32,
    buf_entries: u32,
    tail_done: bool,
    failed: bool,
}

impl<R: ReadAt + ?Sized> Iterator for UsedSectors<'_, R> {
    type Item = Result<Extent, FatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let g = &self.fs.geometry;
        let end = g.clusters + 2;
        let spc = u64::from(g.sectors_per_cluster);
        let bad = g.kind.bad();
        while u64::from(self.next) < end {
            if self.next >= self.buf_first + self.buf_entries {
                match self.fs.fill(self.dev, self.next, &mut self.buf) {
                    Ok(n) => {
                        self.buf_first = self.next;
                        self.buf_entries = n;
                    }
                    Err(e) => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                }
            }
            // A run of used clusters within what the buffer holds.
            let stop = self.buf_first + self.buf_entries;
            let start = self.next;
            let mut n = start;
            let used = |c| {
                let v = self.fs.entry(&self.buf, self.buf_first, c);
                v != 0 && v != bad
            };
            while n < stop && !used(n) {
                n += 1;
            }
            let run = n;
            while n < stop && used(n) {
                n += 1;
            }
            self.next = n;
            if n > run {
                let e = Extent {
                    start: g.first_data_sector + u64::from(run - 2) * spc,
                    len: u64::from(n - run) * spc,
                };
                return Some(Ok(e));
            }
        }
        if !self.tail_done {
            self.tail_done = true;
            // Sectors past the last whole cluster belong to no cluster: kept.
            let data_end = g.first_data_sector + g.clusters * spc;
            if data_end < g.total_sectors {
                return Some(Ok(Extent {
                    start: data_end,
                    len: g.total_sectors - data_end,
                }));
            }
        }
        None
    }
}

impl UsedBlocks for FatFs {
    fn block_size(&self) -> u32 {
        self.geometry.sector_size
    }

    fn info(&self, dev: &dyn ReadAt) -> Result<FsInfo, ScanError> {
        let mut used = 0;
        for e in self.used_extents(dev) {
            used += e?.len;
        }
        Ok(FatFs::info(self, used))
    }

    fn extents<'a>(&'a self, dev: &'a dyn ReadAt) -> ExtentIter<'a> {
        Box::new(self.used_extents(dev).map(|r| r.map_err(ScanError::from)))
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }
}
