//! Per-AG headers: the AGF (free-space summary, sector 1 of each AG) and the AGFL (the free
//! list, sector 3), as `struct xfs_agf` and `struct xfs_agfl` in `libxfs/xfs_format.h` lay
//! them out. Big-endian, CRCs little-endian.

use byteorder::{BigEndian, ByteOrder};

use super::XfsError;
use super::superblock::{Superblock, metadata_crc, stored_crc};

/// `XFS_AGF_MAGIC`, "XAGF".
const AGF_MAGIC: u32 = 0x5841_4746;
/// `XFS_AGF_VERSION`.
const AGF_VERSION: u32 = 1;
/// `XFS_AGFL_MAGIC`, "XAFL" (v5 only: a v4 AGFL is a bare array).
const AGFL_MAGIC: u32 = 0x5841_464c;
/// `NULLAGBLOCK`: an AGFL slot that holds no block.
const NULL_AGBLOCK: u32 = u32::MAX;

// `struct xfs_agf` offsets.
const AGF_MAGICNUM: usize = 0;
const AGF_VERSIONNUM: usize = 4;
const AGF_SEQNO: usize = 8;
const AGF_LENGTH: usize = 12;
/// `agf_roots[XFS_BTNUM_BNO]`: root of the by-block free-space btree.
const AGF_BNO_ROOT: usize = 16;
/// `agf_levels[XFS_BTNUM_BNO]`.
const AGF_BNO_LEVEL: usize = 28;
const AGF_FLFIRST: usize = 40;
const AGF_FLLAST: usize = 44;
const AGF_FLCOUNT: usize = 48;
const AGF_FREEBLKS: usize = 52;
const AGF_UUID: usize = 64;
/// `XFS_AGF_CRC_OFF`.
const AGF_CRC: usize = 216;
/// Bytes of `struct xfs_agf` (the CRC covers the whole sector).
pub const AGF_SIZE: usize = 224;

// `struct xfs_agfl` offsets (v5).
const AGFL_MAGICNUM: usize = 0;
const AGFL_SEQNO: usize = 4;
const AGFL_UUID: usize = 8;
/// `XFS_AGFL_CRC_OFF`.
const AGFL_CRC: usize = 32;
/// `agfl_bno[]` of a v5 AGFL starts after the 36-byte header.
const AGFL_V5_HEADER: usize = 36;

/// Sector index of each header inside its AG (`XFS_AGF_DADDR` = 1, `XFS_AGFL_DADDR` = 3).
pub const AGF_SECTOR: u64 = 1;
/// See [`AGF_SECTOR`].
pub const AGFL_SECTOR: u64 = 3;

/// What one AGF says.
#[derive(Clone, Copy, Debug)]
pub struct Agf {
    /// `agf_length`: blocks in this AG.
    pub length: u32,
    /// Root block of the by-block free-space btree.
    pub bno_root: u32,
    /// Its height (1: the root is a leaf).
    pub bno_level: u32,
    /// First active AGFL slot.
    pub flfirst: u32,
    /// Last active AGFL slot.
    pub fllast: u32,
    /// Active AGFL slots.
    pub flcount: u32,
    /// `agf_freeblks`: blocks in the free-space btrees' records.
    pub freeblks: u32,
    /// The checksum did not match (lenient scans read it anyway).
    pub checksum_bad: bool,
}

/// Slots in an AGFL sector (`XFS_AGFL_SIZE`).
pub fn agfl_slots(sb: &Superblock) -> u32 {
    let header = if sb.crc { AGFL_V5_HEADER as u32 } else { 0 };
    (sb.sect_size - header) / 4
}

/// Decodes and checks the AGF of AG `ag` from its sector.
///
/// # Errors
/// [`XfsError::BadAgf`] when it does not describe AG `ag` as the superblock does, or its free
/// list slots are out of range; [`XfsError::AgfChecksum`] on a v5 CRC mismatch when checksums
/// are verified.
pub fn parse_agf(
    sector: &[u8],
    sb: &Superblock,
    ag: u32,
    verify_checksums: bool,
) -> Result<Agf, XfsError> {
    let bad = |reason| XfsError::BadAgf { ag, reason };
    let u32_at = |o: usize| BigEndian::read_u32(&sector[o..]);
    if u32_at(AGF_MAGICNUM) != AGF_MAGIC {
        return Err(bad("no XAGF magic"));
    }
    if u32_at(AGF_VERSIONNUM) != AGF_VERSION {
        return Err(bad("unknown AGF version"));
    }
    if u32_at(AGF_SEQNO) != ag {
        return Err(bad("AGF names another AG"));
    }
    let mut checksum_bad = false;
    if sb.crc {
        if sector[AGF_UUID..AGF_UUID + 16] != sb.meta_uuid {
            return Err(bad("AGF belongs to another filesystem (UUID differs)"));
        }
        if stored_crc(sector, AGF_CRC) != metadata_crc(sector, AGF_CRC) {
            if verify_checksums {
                return Err(XfsError::AgfChecksum { ag });
            }
            checksum_bad = true;
        }
    }
    let length = u32_at(AGF_LENGTH);
    if u64::from(length) != sb.ag_length(ag) {
        return Err(bad(
            "AGF length differs from the AG size the superblock gives",
        ));
    }
    let bno_root = u32_at(AGF_BNO_ROOT);
    if bno_root == 0 || bno_root >= length {
        return Err(bad("free-space btree root is outside the AG"));
    }
    let bno_level = u32_at(AGF_BNO_LEVEL);
    let max = super::btree::max_levels(sb);
    if bno_level == 0 || bno_level > max {
        return Err(bad(
            "free-space btree height is 0 or beyond the limit for this AG size",
        ));
    }
    let slots = agfl_slots(sb);
    let (flfirst, fllast, flcount) = (u32_at(AGF_FLFIRST), u32_at(AGF_FLLAST), u32_at(AGF_FLCOUNT));
    if flfirst >= slots || fllast >= slots || flcount > slots {
        return Err(bad("free list slots are out of range"));
    }
    Ok(Agf {
        length,
        bno_root,
        bno_level,
        flfirst,
        fllast,
        flcount,
        freeblks: u32_at(AGF_FREEBLKS),
        checksum_bad,
    })
}

/// What the AGFL of an AG holds.
#[derive(Debug, Default)]
pub struct FreeList {
    /// Blocks in the active slots, inside the AG.
    pub blocks: Vec<u32>,
    /// Active slots whose count disagrees with `fllast`, or that hold nothing or a block
    /// outside the AG (what the kernel's `xfs_agfl_needs_reset` would clear).
    pub odd: bool,
    /// The checksum did not match.
    pub checksum_bad: bool,
}

/// Reads the active slots of an AGFL sector: `flcount` slots from `flfirst`, wrapping. Unused
/// slots are never looked at.
///
/// # Errors
/// [`XfsError::BadAgfl`] when the v5 header names another AG or filesystem;
/// [`XfsError::AgflChecksum`] on a CRC mismatch when checksums are verified.
pub fn parse_agfl(
    sector: &[u8],
    sb: &Superblock,
    ag: u32,
    agf: &Agf,
    verify_checksums: bool,
) -> Result<FreeList, XfsError> {
    let mut out = FreeList::default();
    let slots = agfl_slots(sb);
    let base = if sb.crc {
        if BigEndian::read_u32(&sector[AGFL_MAGICNUM..]) != AGFL_MAGIC {
            return Err(XfsError::BadAgfl {
                ag,
                reason: "no XAFL magic",
            });
        }
        if BigEndian::read_u32(&sector[AGFL_SEQNO..]) != ag
            || sector[AGFL_UUID..AGFL_UUID + 16] != sb.meta_uuid
        {
            return Err(XfsError::BadAgfl {
                ag,
                reason: "AGFL names another AG or filesystem",
            });
        }
        if stored_crc(sector, AGFL_CRC) != metadata_crc(sector, AGFL_CRC) {
            if verify_checksums {
                return Err(XfsError::AgflChecksum { ag });
            }
            out.checksum_bad = true;
        }
        AGFL_V5_HEADER
    } else {
        0
    };
    if agf.flcount > 0 && (agf.flfirst + agf.flcount - 1) % slots != agf.fllast {
        out.odd = true;
    }
    for i in 0..agf.flcount {
        let slot = ((agf.flfirst + i) % slots) as usize;
        let at = base + slot * 4;
        let b = BigEndian::read_u32(&sector[at..at + 4]);
        if b == NULL_AGBLOCK || b >= agf.length {
            out.odd = true;
        } else {
            out.blocks.push(b);
        }
    }
    Ok(out)
}
