//! The XFS superblock: the first sector of AG 0 (copies open every other AG).
//!
//! Offsets follow `struct xfs_dsb` in xfsprogs' and the kernel's `libxfs/xfs_format.h`; every
//! field is big-endian except the CRC. Everything the scanner relies on is validated here, as
//! `xfs_validate_sb_common` does, so that the rest of the scanner can trust the geometry.

use byteorder::{BigEndian, ByteOrder};

use super::XfsError;

/// `XFS_SB_MAGIC`, "XFSB".
pub const XFS_MAGIC: u32 = 0x5846_5342;
/// The fields read here lie in the first 264 bytes (`sizeof(struct xfs_dsb)` of a v5
/// superblock), which fit the smallest sector.
pub const SB_PREFIX: usize = 512;

// Field offsets (`struct xfs_dsb`).
const SB_MAGICNUM: usize = 0;
const SB_BLOCKSIZE: usize = 4;
const SB_DBLOCKS: usize = 8;
const SB_RBLOCKS: usize = 16;
const SB_REXTENTS: usize = 24;
const SB_UUID: usize = 32;
const SB_LOGSTART: usize = 48;
const SB_AGBLOCKS: usize = 84;
const SB_AGCOUNT: usize = 88;
const SB_LOGBLOCKS: usize = 96;
const SB_VERSIONNUM: usize = 100;
const SB_SECTSIZE: usize = 102;
const SB_FNAME: usize = 108;
/// Length of `sb_fname`, the label.
pub const SB_FNAME_LEN: usize = 12;
const SB_BLOCKLOG: usize = 120;
const SB_SECTLOG: usize = 121;
const SB_AGBLKLOG: usize = 124;
const SB_INPROGRESS: usize = 126;
const SB_FDBLOCKS: usize = 144;
const SB_FEATURES2: usize = 200;
const SB_FEATURES_INCOMPAT: usize = 216;
/// `sb_crc` (`XFS_SB_CRC_OFF`): little-endian, over the whole sector.
pub const SB_CRC: usize = 224;
const SB_META_UUID: usize = 248;

/// `sb_versionnum` bits (`XFS_SB_VERSION_*`).
mod version {
    /// The version number proper: 4 or 5.
    pub const NUMBITS: u16 = 0x000f;
    /// Version 2 directories: every v4 filesystem Linux reads has it.
    pub const DIRV2BIT: u16 = 0x2000;
    /// The shared-superblock bit, never supported by anyone.
    pub const SHAREDBIT: u16 = 0x0200;
    /// `sb_features2` is in use.
    pub const MOREBITSBIT: u16 = 0x8000;
}

/// `sb_features2` bits a v4 filesystem may have (`XFS_SB_VERSION2_OKBITS`).
const FEATURES2_OKBITS: u32 = 0x2 | 0x8 | 0x80 | 0x200;

/// `sb_features_incompat` bits (v5, `XFS_SB_FEAT_INCOMPAT_*`).
pub mod incompat {
    /// File types in directory entries.
    pub const FTYPE: u32 = 1 << 0;
    /// Sparse inode chunks.
    pub const SPINODES: u32 = 1 << 1;
    /// Metadata UUID differs from the user-visible UUID.
    pub const META_UUID: u32 = 1 << 2;
    /// Timestamps past 2038.
    pub const BIGTIME: u32 = 1 << 3;
    /// xfs_repair must run before the filesystem is mounted.
    pub const NEEDSREPAIR: u32 = 1 << 4;
    /// 64-bit extent counters.
    pub const NREXT64: u32 = 1 << 5;
    /// Atomic file mapping exchange.
    pub const EXCHRANGE: u32 = 1 << 6;
    /// Directory parent pointers.
    pub const PARENT: u32 = 1 << 7;

    /// Features known to leave the by-block free-space btree of each AG the whole truth about
    /// free space on the data device. Anything else might not: such a filesystem is imaged raw.
    pub const KNOWN: u32 =
        FTYPE | SPINODES | META_UUID | BIGTIME | NEEDSREPAIR | NREXT64 | EXCHRANGE | PARENT;
}

/// Smallest and largest block sizes (`XFS_MIN_BLOCKSIZE_LOG`, `XFS_MAX_BLOCKSIZE_LOG`).
const MIN_BLOCKLOG: u8 = 9;
const MAX_BLOCKLOG: u8 = 16;
/// v5 filesystems have at least 1 KiB blocks (`XFS_MIN_CRC_BLOCKSIZE`).
const MIN_CRC_BLOCKLOG: u8 = 10;
/// Sector sizes (`XFS_MIN_SECTORSIZE_LOG`, `XFS_MAX_SECTORSIZE_LOG`).
const MIN_SECTLOG: u8 = 9;
const MAX_SECTLOG: u8 = 15;
/// `XFS_MIN_AG_BLOCKS`: no AG, not even the last, is smaller.
pub const MIN_AG_BLOCKS: u32 = 64;
/// An AG is at most 1 TiB (`XFS_MAX_AG_BYTES`), and its block numbers fit 31 bits.
const MAX_AG_BYTES: u64 = 1 << 40;

/// Why a filesystem is imaged raw rather than scanned: the scanner cannot vouch for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// A realtime section: its space is tracked by a bitmap on another device.
    Realtime,
    /// The log lives on another device, so whether it needs recovery cannot be told.
    ExternalLog,
    /// Incompatible features not known to this scanner.
    Incompat(u32),
    /// A v4 filesystem with feature bits Linux does not know either.
    V4Features,
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Realtime => {
                f.write_str("it has a realtime section, whose space rimage does not read")
            }
            Self::ExternalLog => f.write_str(
                "its log is on an external device, so rimage cannot tell whether it needs recovery",
            ),
            Self::Incompat(bits) => write!(
                f,
                "it has incompatible features {bits:#x} that rimage does not know"
            ),
            Self::V4Features => f.write_str("it has v4 feature bits that rimage does not know"),
        }
    }
}

/// The decoded, validated superblock.
#[derive(Clone, Debug)]
pub struct Superblock {
    /// `sb_blocksize`.
    pub block_size: u32,
    /// `sb_blocklog`.
    pub block_log: u8,
    /// `sb_sectsize`.
    pub sect_size: u32,
    /// `sb_dblocks`: blocks on the data device.
    pub dblocks: u64,
    /// `sb_agblocks`: blocks per AG (the last may be shorter).
    pub agblocks: u32,
    /// `sb_agblklog`: bits of an AG block number inside a filesystem block number.
    pub agblklog: u8,
    /// `sb_agcount`.
    pub agcount: u32,
    /// `sb_logstart`, a filesystem block number (AG in the high bits); 0 for an external log.
    pub logstart: u64,
    /// `sb_logblocks`.
    pub logblocks: u32,
    /// `sb_fdblocks`: free blocks as last written (lags while mounted).
    pub fdblocks: u64,
    /// `sb_uuid`, the UUID blkid shows.
    pub uuid: [u8; 16],
    /// The UUID stamped into v5 metadata (`sb_meta_uuid` with META_UUID, else `sb_uuid`).
    pub meta_uuid: [u8; 16],
    /// `sb_fname`.
    pub label: [u8; SB_FNAME_LEN],
    /// Version 5: metadata carries CRCs and self-describing headers.
    pub crc: bool,
    /// `sb_features_incompat` (0 on v4).
    pub incompat: u32,
    /// What keeps the scanner from vouching for the used blocks, if anything.
    pub unsupported: Option<Unsupported>,
}

fn bad(reason: &'static str) -> XfsError {
    XfsError::BadSuperblock(reason)
}

/// Whether `raw` starts with the XFS magic.
pub fn has_magic(raw: &[u8]) -> bool {
    raw.len() >= 4 && BigEndian::read_u32(&raw[SB_MAGICNUM..]) == XFS_MAGIC
}

/// The sector size a superblock prefix claims, when it is a valid one.
pub fn sector_size(raw: &[u8; SB_PREFIX]) -> Option<u32> {
    let log = raw[SB_SECTLOG];
    let size = u32::from(BigEndian::read_u16(&raw[SB_SECTSIZE..]));
    ((MIN_SECTLOG..=MAX_SECTLOG).contains(&log) && size == 1 << log).then_some(size)
}

/// The standard CRC-32C of a metadata buffer whose CRC field (4 bytes at `crc_at`) reads as
/// zero, as `xfs_start_cksum` and `xfs_end_cksum` compute it.
pub fn metadata_crc(buf: &[u8], crc_at: usize) -> u32 {
    let c = crc32c::crc32c(&buf[..crc_at]);
    let c = crc32c::crc32c_append(c, &[0; 4]);
    crc32c::crc32c_append(c, &buf[crc_at + 4..])
}

/// The CRC stored at `crc_at` (little-endian, unlike everything else).
pub fn stored_crc(buf: &[u8], crc_at: usize) -> u32 {
    u32::from_le_bytes(buf[crc_at..crc_at + 4].try_into().expect("4 bytes"))
}

impl Superblock {
    /// Decodes and validates the superblock in `sector` (the whole first sector: the CRC of a
    /// v5 superblock covers all of it).
    ///
    /// # Errors
    /// [`XfsError::NotXfs`] without the magic; [`XfsError::SuperblockChecksum`] when a v5
    /// checksum does not match and `verify_checksums` is set; [`XfsError::BadSuperblock`] for
    /// any impossible geometry.
    pub fn parse(sector: &[u8], verify_checksums: bool) -> Result<(Self, bool), XfsError> {
        if sector.len() < SB_PREFIX || !has_magic(sector) {
            return Err(XfsError::NotXfs);
        }
        let u16_at = |o: usize| BigEndian::read_u16(&sector[o..]);
        let u32_at = |o: usize| BigEndian::read_u32(&sector[o..]);
        let u64_at = |o: usize| BigEndian::read_u64(&sector[o..]);

        let versionnum = u16_at(SB_VERSIONNUM);
        let crc = match versionnum & version::NUMBITS {
            4 => false,
            5 => true,
            _ => return Err(bad("version is neither 4 nor 5")),
        };
        let mut checksum_ok = true;
        if crc {
            let stored = stored_crc(sector, SB_CRC);
            let computed = metadata_crc(sector, SB_CRC);
            if stored != computed {
                if verify_checksums {
                    return Err(XfsError::SuperblockChecksum { stored, computed });
                }
                checksum_ok = false;
            }
        }
        if sector[SB_INPROGRESS] != 0 {
            return Err(bad("mkfs.xfs did not finish (sb_inprogress is set)"));
        }

        let block_log = sector[SB_BLOCKLOG];
        let block_size = u32_at(SB_BLOCKSIZE);
        let min_log = if crc { MIN_CRC_BLOCKLOG } else { MIN_BLOCKLOG };
        if !(min_log..=MAX_BLOCKLOG).contains(&block_log) || block_size != 1 << block_log {
            return Err(bad(
                "block size is not a power of two from 512 (1024 on v5) to 65536",
            ));
        }
        let sect_log = sector[SB_SECTLOG];
        let sect_size = u32::from(u16_at(SB_SECTSIZE));
        if !(MIN_SECTLOG..=MAX_SECTLOG).contains(&sect_log)
            || sect_size != 1 << sect_log
            || sect_size > block_size
        {
            return Err(bad(
                "sector size is not a power of two from 512 to the block size",
            ));
        }
        if sector.len() < sect_size as usize {
            return Err(bad("superblock sector is shorter than the sector size"));
        }

        let agblocks = u32_at(SB_AGBLOCKS);
        let max_ag_blocks = (MAX_AG_BYTES >> block_log).min(u64::from(i32::MAX as u32));
        if agblocks < MIN_AG_BLOCKS || u64::from(agblocks) > max_ag_blocks {
            return Err(bad("AG size is out of range"));
        }
        let agblklog = sector[SB_AGBLKLOG];
        // sb_agblklog is log2 of sb_agblocks rounded up (xfs_validate_sb_common).
        if u32::from(agblklog) != u32::BITS - (agblocks - 1).leading_zeros() {
            return Err(bad("AG block log does not match the AG size"));
        }
        let agcount = u32_at(SB_AGCOUNT);
        if agcount == 0 {
            return Err(bad("no allocation groups"));
        }
        let dblocks = u64_at(SB_DBLOCKS);
        // XFS_MAX_DBLOCKS and XFS_MIN_DBLOCKS: every AG but the last is full, and the last
        // holds at least XFS_MIN_AG_BLOCKS.
        let full = u64::from(agcount - 1) * u64::from(agblocks);
        if dblocks > full + u64::from(agblocks) || dblocks < full + u64::from(MIN_AG_BLOCKS) {
            return Err(bad("data blocks do not match the AG count and size"));
        }

        let incompat = if crc { u32_at(SB_FEATURES_INCOMPAT) } else { 0 };
        let uuid: [u8; 16] = sector[SB_UUID..SB_UUID + 16].try_into().expect("16 bytes");
        let meta_uuid = if crc && incompat & incompat::META_UUID != 0 {
            sector[SB_META_UUID..SB_META_UUID + 16]
                .try_into()
                .expect("16 bytes")
        } else {
            uuid
        };

        let logstart = u64_at(SB_LOGSTART);
        let logblocks = u32_at(SB_LOGBLOCKS);
        let mut unsupported = None;
        if !crc {
            let features2 = if versionnum & version::MOREBITSBIT != 0 {
                u32_at(SB_FEATURES2)
            } else {
                0
            };
            if versionnum & version::DIRV2BIT == 0
                || versionnum & version::SHAREDBIT != 0
                || features2 & !FEATURES2_OKBITS != 0
            {
                unsupported = Some(Unsupported::V4Features);
            }
        } else if incompat & !incompat::KNOWN != 0 {
            unsupported = Some(Unsupported::Incompat(incompat & !incompat::KNOWN));
        }
        if u64_at(SB_RBLOCKS) != 0 || u64_at(SB_REXTENTS) != 0 {
            unsupported = unsupported.or(Some(Unsupported::Realtime));
        }
        if logstart == 0 {
            unsupported = unsupported.or(Some(Unsupported::ExternalLog));
        }
        let sb = Self {
            block_size,
            block_log,
            sect_size,
            dblocks,
            agblocks,
            agblklog,
            agcount,
            logstart,
            logblocks,
            fdblocks: u64_at(SB_FDBLOCKS),
            uuid,
            meta_uuid,
            label: sector[SB_FNAME..SB_FNAME + SB_FNAME_LEN]
                .try_into()
                .expect("12 bytes"),
            crc,
            incompat,
            unsupported,
        };
        if sb.logstart != 0 {
            sb.check_log()?;
        }
        Ok((sb, checksum_ok))
    }

    /// An internal log lies inside one AG of the data device.
    fn check_log(&self) -> Result<(), XfsError> {
        let (ag, agbno) = self.split_fsblock(self.logstart);
        if ag >= self.agcount {
            return Err(bad("the log starts in an AG that does not exist"));
        }
        if self.logblocks == 0 {
            return Err(bad("the internal log has no blocks"));
        }
        let end = u64::from(agbno) + u64::from(self.logblocks);
        if end > self.ag_length(ag) {
            return Err(bad("the internal log runs past the end of its AG"));
        }
        Ok(())
    }

    /// The AG and AG block of filesystem block number `fsb` (`XFS_FSB_TO_AGNO`/`_AGBNO`): an
    /// AG number in the high bits, above `sb_agblklog` bits of block. Not a linear address.
    pub fn split_fsblock(&self, fsb: u64) -> (u32, u32) {
        let ag = u32::try_from(fsb >> self.agblklog).unwrap_or(u32::MAX);
        let agbno = (fsb & ((1u64 << self.agblklog) - 1)) as u32;
        (ag, agbno)
    }

    /// Linear block (byte offset / block size) of block `agbno` of AG `ag`
    /// (`XFS_AGB_TO_DADDR` in blocks): AGs are `sb_agblocks` apart on disk.
    pub fn linear(&self, ag: u32, agbno: u32) -> u64 {
        u64::from(ag) * u64::from(self.agblocks) + u64::from(agbno)
    }

    /// Blocks in AG `ag`: `sb_agblocks`, except for the last AG, which holds the rest.
    pub fn ag_length(&self, ag: u32) -> u64 {
        let start = u64::from(ag) * u64::from(self.agblocks);
        self.dblocks
            .saturating_sub(start)
            .min(u64::from(self.agblocks))
    }

    /// Whether the filesystem must be repaired before it is mounted.
    pub fn needs_repair(&self) -> bool {
        self.incompat & incompat::NEEDSREPAIR != 0
    }
}
