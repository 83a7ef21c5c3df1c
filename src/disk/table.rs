//! Partition tables, GPT (the `gpt` crate) and MBR (the `mbrman` crate): read one into a
//! plain description for the manifest, and write a description back onto a disk exactly.

use std::io::{Read, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a partition table cannot be read or written.
#[derive(Debug, Error)]
pub enum TableError {
    /// Reading or writing the disk failed.
    #[error("{what} failed")]
    Io {
        /// What was being read or written.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The table on the disk is malformed or lies outside the disk.
    #[error("malformed partition table: {0}")]
    Malformed(String),
    /// A table description (from a manifest) is out of range.
    #[error("invalid partition table: {0}")]
    Invalid(String),
    /// The table does not fit the disk it is written to.
    #[error("{0}")]
    DoesNotFit(String),
    /// The `gpt` or `mbrman` crate refused the table.
    #[error("{what}: {message}")]
    Parser {
        /// Which structure.
        what: &'static str,
        /// The crate's message.
        message: String,
    },
}

impl TableError {
    fn parser(what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> Self {
        move |e| Self::Parser {
            what,
            message: e.to_string(),
        }
    }
}

/// Bytes per sector the tables are read and written with.
pub const SECTOR: u64 = 512;

/// The table itself (without its partitions).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TableKind {
    /// GUID partition table.
    Gpt {
        /// Disk GUID (sfdisk's label-id).
        disk_guid: String,
        /// First usable LBA (sfdisk's first-lba).
        first_usable_lba: u64,
        /// Last usable LBA on the source disk (sfdisk's last-lba).
        last_usable_lba: u64,
        /// Entries in the partition array.
        entries: u32,
        /// Bytes per entry.
        entry_size: u32,
    },
    /// MS-DOS (MBR) table.
    Dos {
        /// Disk signature (sfdisk's label-id), e.g. "0x7e6a4fd9".
        disk_signature: String,
    },
}

/// One partition entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Partition number (sda2 is 2).
    pub number: u32,
    /// First sector.
    pub start_lba: u64,
    /// Length in sectors.
    pub sectors: u64,
    /// GPT: partition type GUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_guid: Option<String>,
    /// GPT: unique partition GUID (PARTUUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_guid: Option<String>,
    /// GPT: partition name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// GPT: attribute bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<u64>,
    /// DOS: system id, e.g. "0x83".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_code: Option<String>,
    /// DOS: the boot flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootable: Option<bool>,
    /// DOS: CHS of the first and last sector as stored, [cylinder, head, sector] each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chs: Option<[[u16; 3]; 2]>,
    /// DOS logical partitions: where their extended boot record is, and its span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ebr_lba: Option<u64>,
    /// DOS logical partitions: sectors of the EBR's link to the next one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ebr_sectors: Option<u64>,
}

impl Entry {
    /// First byte.
    pub fn start_bytes(&self) -> u64 {
        self.start_lba * SECTOR
    }

    /// Length in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.sectors * SECTOR
    }

    /// An extended partition (a container for logical ones, not a filesystem).
    pub fn is_extended(&self) -> bool {
        matches!(self.type_code.as_deref(), Some("0x05" | "0x0f" | "0x85"))
    }
}

/// A whole partition table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    /// The table.
    #[serde(flatten)]
    pub kind: TableKind,
    /// Its partitions, by number.
    pub partitions: Vec<Entry>,
}

fn chs(c: mbrman::CHS) -> [u16; 3] {
    [c.cylinder, u16::from(c.head), u16::from(c.sector)]
}

fn to_chs(v: [u16; 3]) -> mbrman::CHS {
    mbrman::CHS::new(v[0], v[1] as u8, v[2] as u8)
}

fn dos_entry(number: u32, p: &mbrman::MBRPartitionEntry) -> Entry {
    Entry {
        number,
        start_lba: u64::from(p.starting_lba),
        sectors: u64::from(p.sectors),
        type_guid: None,
        part_guid: None,
        name: None,
        attributes: None,
        type_code: Some(format!("0x{:02x}", p.sys)),
        bootable: Some(p.is_active()),
        chs: Some([chs(p.first_chs), chs(p.last_chs)]),
        ebr_lba: None,
        ebr_sectors: None,
    }
}

/// Most GPT entries accepted (the standard array has 128).
const MAX_GPT_ENTRIES: u32 = 1024;
/// The only GPT entry size written by partitioning tools (and read by the `gpt` crate).
const GPT_ENTRY_SIZE: u32 = 128;
/// Most logical partitions followed in an MBR extended partition.
const MAX_LOGICAL: usize = 128;

fn read_sector<D: Read + Seek>(disk: &mut D, lba: u64) -> Result<[u8; 512], TableError> {
    let mut s = [0u8; 512];
    let at = lba
        .checked_mul(SECTOR)
        .ok_or_else(|| TableError::Malformed(format!("sector number {lba} overflows")))?;
    disk.seek(SeekFrom::Start(at))
        .and_then(|_| disk.read_exact(&mut s))
        .map_err(|source| TableError::Io {
            what: format!("read of sector {lba}"),
            source,
        })?;
    Ok(s)
}

/// (system id, start, sectors) of the four entries of an MBR or EBR sector.
fn mbr_entries(sector: &[u8; 512]) -> [(u8, u64, u64); 4] {
    std::array::from_fn(|i| {
        let e = &sector[446 + 16 * i..462 + 16 * i];
        (
            e[4],
            u64::from(u32::from_le_bytes(e[8..12].try_into().expect("4 bytes"))),
            u64::from(u32::from_le_bytes(e[12..16].try_into().expect("4 bytes"))),
        )
    })
}

/// Checks what the `gpt` and `mbrman` crates assume but do not check (they panic or overflow
/// on tables that break it): GPT entry size and count, MBR partitions starting after sector
/// 0 and inside the disk, an EBR chain that moves forward inside its extended partition.
fn precheck<D: Read + Seek>(
    disk: &mut D,
    sector0: &[u8; 512],
    disk_sectors: u64,
    gpt: bool,
) -> Result<(), TableError> {
    if gpt {
        let h = read_sector(disk, 1)?;
        if &h[..8] != b"EFI PART" {
            return Err(TableError::Malformed(
                "protective MBR but no GPT header in sector 1".into(),
            ));
        }
        let entries = u32::from_le_bytes(h[80..84].try_into().expect("4 bytes"));
        let size = u32::from_le_bytes(h[84..88].try_into().expect("4 bytes"));
        if size != GPT_ENTRY_SIZE || entries == 0 || entries > MAX_GPT_ENTRIES {
            return Err(TableError::Malformed(format!(
                "unsupported GPT: {entries} entries of {size} bytes (expected up to {MAX_GPT_ENTRIES} of {GPT_ENTRY_SIZE})"
            )));
        }
        return Ok(());
    }
    let mut extended = None;
    for (i, (sys, start, len)) in mbr_entries(sector0).into_iter().enumerate() {
        if sys == 0 {
            continue;
        }
        if start == 0 || len == 0 || start + len > disk_sectors {
            return Err(TableError::Malformed(format!(
                "MBR partition {} (sectors {start}+{len}) is not inside the disk's {disk_sectors} sectors",
                i + 1
            )));
        }
        // mbrman follows the first extended partition.
        if matches!(sys, 0x05 | 0x0f | 0x85) && extended.is_none() {
            extended = Some((start, len));
        }
    }
    let Some((ext_start, ext_len)) = extended else {
        return Ok(());
    };
    let mut ebr = ext_start;
    for _ in 0..MAX_LOGICAL {
        let s = read_sector(disk, ebr)?;
        if s[510..512] != [0x55, 0xAA] {
            return Ok(());
        }
        let [(sys, rel, len), (next_sys, next_rel, _), ..] = mbr_entries(&s);
        // mbrman adds the EBR's position and its entry's start in 32 bits, used entry or not.
        if ebr + rel > u64::from(u32::MAX) {
            return Err(TableError::Malformed(format!(
                "the EBR at sector {ebr} points past 2 TiB"
            )));
        }
        if sys != 0 && (rel == 0 || len == 0 || ebr + rel + len > ext_start + ext_len) {
            return Err(TableError::Malformed(format!(
                "logical partition in the EBR at sector {ebr} is not inside its extended partition"
            )));
        }
        if next_sys == 0 || next_rel == 0 {
            return Ok(());
        }
        let next = ext_start + next_rel;
        if next <= ebr || next >= ext_start + ext_len || next > u64::from(u32::MAX) {
            return Err(TableError::Malformed(format!(
                "the EBR at sector {ebr} links to sector {next}, not forward inside its extended partition"
            )));
        }
        ebr = next;
    }
    Err(TableError::Malformed(format!(
        "more than {MAX_LOGICAL} logical partitions"
    )))
}

/// Reads the partition table of `disk` (`disk_bytes` long): GPT when there is a protective
/// MBR, else MBR. `None` when there is no table at all.
///
/// # Errors
/// A table that is present but unreadable, malformed, or outside the disk.
pub fn read_table<D: Read + Write + Seek + std::fmt::Debug>(
    disk: &mut D,
    disk_bytes: u64,
) -> Result<Option<Table>, TableError> {
    let disk_sectors = disk_bytes / SECTOR;
    let sector0 = read_sector(disk, 0)?;
    if sector0[510..512] != [0x55, 0xAA] {
        return Ok(None);
    }
    let protective = mbr_entries(&sector0).iter().any(|e| e.0 == 0xEE);
    precheck(disk, &sector0, disk_sectors, protective)?;
    // A last line of defence: a crate that still panics on some input is an error, not a crash.
    let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if protective {
            read_gpt(disk)
        } else {
            read_mbr(disk)
        }
    }))
    .map_err(|_| TableError::Malformed("its parser gave up".into()))??;
    for e in &parsed.partitions {
        if e.start_lba == 0
            || e.sectors == 0
            || e.start_lba
                .checked_add(e.sectors)
                .is_none_or(|end| end > disk_sectors)
        {
            return Err(TableError::Malformed(format!(
                "partition {} (sectors {}+{}) is not inside the disk's {disk_sectors} sectors",
                e.number, e.start_lba, e.sectors
            )));
        }
    }
    // What restore-disk will demand of it later, demanded now.
    check_table(&parsed)?;
    Ok(Some(parsed))
}

fn read_gpt<D: Read + Write + Seek + std::fmt::Debug>(disk: &mut D) -> Result<Table, TableError> {
    let gpt = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .open_from_device(&mut *disk)
        .map_err(|e| TableError::parser("GPT")(&e))?;
    let h = gpt.header();
    let kind = TableKind::Gpt {
        disk_guid: gpt.guid().to_string().to_uppercase(),
        first_usable_lba: h.first_usable,
        last_usable_lba: h.last_usable,
        entries: h.num_parts,
        entry_size: h.part_size,
    };
    let mut partitions = Vec::new();
    for (&number, p) in gpt.partitions().iter().filter(|(_, p)| p.is_used()) {
        if p.last_lba < p.first_lba {
            return Err(TableError::Malformed(format!(
                "GPT partition {number} ends (sector {}) before it starts (sector {})",
                p.last_lba, p.first_lba
            )));
        }
        partitions.push(Entry {
            number,
            start_lba: p.first_lba,
            sectors: (p.last_lba - p.first_lba)
                .checked_add(1)
                .ok_or_else(|| TableError::Malformed("GPT partition too large".into()))?,
            type_guid: Some(p.part_type_guid.guid.to_string().to_uppercase()),
            part_guid: Some(p.part_guid.to_string().to_uppercase()),
            name: Some(p.name.clone()),
            attributes: Some(p.flags),
            type_code: None,
            bootable: None,
            chs: None,
            ebr_lba: None,
            ebr_sectors: None,
        });
    }
    Ok(Table { kind, partitions })
}

fn read_mbr<D: Read + Seek>(disk: &mut D) -> Result<Table, TableError> {
    disk.seek(SeekFrom::Start(0))
        .map_err(|source| TableError::Io {
            what: "seek to sector 0".into(),
            source,
        })?;
    let mbr = mbrman::MBR::read_from(&mut *disk, SECTOR as u32)
        .map_err(|e| TableError::parser("MBR")(&e))?;
    let sig = mbr.header.disk_signature;
    let kind = TableKind::Dos {
        disk_signature: format!("0x{:08x}", u32::from_le_bytes(sig)),
    };
    let mut partitions: Vec<Entry> = mbr
        .header
        .iter()
        .filter(|(_, p)| p.is_used())
        .map(|(i, p)| dos_entry(i as u32, p))
        .collect();
    for (k, l) in mbr.logical_partitions.iter().enumerate() {
        let mut e = dos_entry(5 + k as u32, &l.partition);
        e.ebr_lba = Some(u64::from(l.absolute_ebr_lba));
        e.ebr_sectors = l.ebr_sectors.map(u64::from);
        partitions.push(e);
    }
    Ok(Table { kind, partitions })
}

/// The table with its last partition grown to the end of a disk of `disk_bytes` (Clonezilla's
/// `-k1 -r` for a disk larger than the one saved): for GPT up to the last usable sector, with
/// the backup header at the new end; for MBR up to the end of the disk (or 2 TiB). Returns the
/// new table and the number of the grown partition; `None` when there is nothing to grow.
///
/// # Errors
/// A last partition that is a logical one (its extended partition and EBR chain would have to
/// move too).
pub fn grown(t: &Table, disk_bytes: u64) -> Result<Option<(Table, u32)>, TableError> {
    let sectors = disk_bytes / SECTOR;
    let mut t = t.clone();
    let Some(last) = t
        .partitions
        .iter_mut()
        .filter(|e| !e.is_extended())
        .max_by_key(|e| e.start_lba + e.sectors)
    else {
        return Ok(None);
    };
    let end = match &mut t.kind {
        TableKind::Gpt {
            last_usable_lba,
            entries,
            entry_size,
            ..
        } => {
            let array = (u64::from(*entries) * u64::from(*entry_size)).div_ceil(SECTOR);
            // Backup header in the last sector, its entry array just before it.
            let usable = sectors
                .checked_sub(2 + array)
                .ok_or_else(|| TableError::DoesNotFit("the disk is too small for a GPT".into()))?;
            *last_usable_lba = usable;
            usable + 1
        }
        TableKind::Dos { .. } => {
            if last.number > 4 {
                return Err(TableError::DoesNotFit(format!(
                    "the last partition ({}) is a logical partition; growing it would move its extended partition, which --grow does not do",
                    last.number
                )));
            }
            sectors.min(u64::from(u32::MAX))
        }
    };
    if end <= last.start_lba + last.sectors {
        return Ok(None);
    }
    last.sectors = end - last.start_lba;
    let number = last.number;
    Ok(Some((t, number)))
}

/// Checks a table that came from a manifest (which anyone can edit) before it is written:
/// numbers, sizes and positions that the arithmetic of [`write_table`] relies on.
///
/// # Errors
/// The first problem found.
pub fn check_table(t: &Table) -> Result<(), TableError> {
    if let TableKind::Gpt {
        entries,
        entry_size,
        first_usable_lba,
        ..
    } = &t.kind
        && (*entry_size != GPT_ENTRY_SIZE
            || *entries == 0
            || *entries > MAX_GPT_ENTRIES
            || *first_usable_lba == 0)
    {
        return Err(TableError::Invalid(format!(
            "unsupported GPT: {entries} entries of {entry_size} bytes, first usable sector {first_usable_lba}"
        )));
    }
    let max_number = match t.kind {
        TableKind::Gpt { entries, .. } => entries,
        TableKind::Dos { .. } => 4 + MAX_LOGICAL as u32,
    };
    for e in &t.partitions {
        // 2^54 sectors of 512 bytes: all byte offsets fit in 64 bits.
        let end = e
            .start_lba
            .checked_add(e.sectors)
            .filter(|&end| end < 1 << 54);
        if e.number == 0
            || e.number > max_number
            || e.start_lba == 0
            || e.sectors == 0
            || end.is_none()
        {
            return Err(TableError::Invalid(format!(
                "partition {} (sectors {}+{}) is out of range",
                e.number, e.start_lba, e.sectors
            )));
        }
        if e.number > 4
            && matches!(t.kind, TableKind::Dos { .. })
            && e.ebr_lba.is_none_or(|ebr| ebr == 0 || ebr >= e.start_lba)
        {
            return Err(TableError::Invalid(format!(
                "logical partition {} has no extended boot record before it",
                e.number
            )));
        }
    }
    Ok(())
}

fn parse_uuid(s: &str) -> Result<uuid::Uuid, TableError> {
    s.parse()
        .map_err(|e| TableError::Invalid(format!("GUID {s:?}: {e}")))
}

/// Writes `table` onto `disk` (of `disk_bytes` bytes), replacing whatever table was there:
/// for GPT the protective MBR (keeping `boot_code`), the primary header and entries and the
/// backup at the end of this disk; for DOS the MBR (with `boot_code`) and any EBRs.
///
/// # Errors
/// A table that does not fit the disk, or a write failure.
pub fn write_table<D: Read + Write + Seek + std::fmt::Debug>(
    disk: &mut D,
    table: &Table,
    disk_bytes: u64,
    boot_code: &[u8; 440],
) -> Result<(), TableError> {
    let sectors = disk_bytes / SECTOR;
    match &table.kind {
        TableKind::Gpt {
            disk_guid,
            first_usable_lba,
            last_usable_lba: _,
            entries,
            entry_size,
        } => {
            let lb = gpt::disk::LogicalBlockSize::Lb512;
            let mut mbr = gpt::mbr::ProtectiveMBR::with_lb_size(
                u32::try_from(sectors - 1).unwrap_or(0xFFFF_FFFF),
            );
            mbr.set_bootcode(*boot_code);
            mbr.overwrite_lba0(&mut *disk)
                .map_err(|e| TableError::parser("protective MBR")(&e))?;
            let mut builder = gpt::header::HeaderBuilder::new();
            builder
                .disk_guid(parse_uuid(disk_guid)?)
                .backup_lba(sectors - 1)
                .first_usable(*first_usable_lba)
                .num_parts(*entries)
                .part_size(*entry_size);
            let mut primary = builder
                .primary(true)
                .build(lb)
                .map_err(|e| TableError::parser("GPT header")(&e))?;
            let mut backup = gpt::header::HeaderBuilder::from_header(&primary)
                .primary(false)
                .build(lb)
                .map_err(|e| TableError::parser("GPT header")(&e))?;
            for e in &table.partitions {
                let end = e.start_lba + e.sectors;
                if e.start_lba < primary.first_usable || end - 1 > primary.last_usable {
                    return Err(TableError::DoesNotFit(format!(
                        "partition {} (sectors {}..{end}) does not fit this disk's usable sectors",
                        e.number, e.start_lba
                    )));
                }
            }
            // Entries first: writing a header computes the CRC of the entry array on disk.
            for part_start in [primary.part_start, backup.part_start] {
                gpt::partition::Partition::write_zero_entries_to_device(
                    &mut *disk,
                    0,
                    u64::from(*entries),
                    part_start,
                    lb,
                    *entry_size,
                )
                .map_err(|e| TableError::parser("GPT entries")(&e))?;
                for e in &table.partitions {
                    let p = gpt::partition::Partition {
                        // Only the GUID is written; the OS label is the crate's annotation.
                        part_type_guid: gpt::partition_types::Type {
                            guid: parse_uuid(e.type_guid.as_deref().unwrap_or_default())?,
                            os: gpt::partition_types::OperatingSystem::None,
                        },
                        part_guid: parse_uuid(e.part_guid.as_deref().unwrap_or_default())?,
                        first_lba: e.start_lba,
                        last_lba: e.start_lba + e.sectors - 1,
                        flags: e.attributes.unwrap_or(0),
                        name: e.name.clone().unwrap_or_default(),
                    };
                    p.write_to_device(
                        &mut *disk,
                        u64::from(e.number - 1),
                        part_start,
                        lb,
                        *entry_size,
                    )
                    .map_err(|e| TableError::parser("GPT entry")(&e))?;
                }
            }
            primary
                .write_primary(&mut *disk, lb)
                .map_err(|e| TableError::parser("GPT primary header")(&e))?;
            backup
                .write_backup(&mut *disk, lb)
                .map_err(|e| TableError::parser("GPT backup header")(&e))?;
        }
        TableKind::Dos { disk_signature } => {
            let sig =
                u32::from_str_radix(disk_signature.trim_start_matches("0x"), 16).map_err(|e| {
                    TableError::Invalid(format!("disk signature {disk_signature:?}: {e}"))
                })?;
            let mut mbr = mbrman::MBR::new_from(&mut *disk, SECTOR as u32, sig.to_le_bytes())
                .map_err(|e| TableError::parser("MBR")(&e))?;
            mbr.header.bootstrap_code = *boot_code;
            for e in &table.partitions {
                let end = e.start_lba + e.sectors;
                if end > sectors {
                    return Err(TableError::DoesNotFit(format!(
                        "partition {} (sectors {}..{end}) does not fit this disk",
                        e.number, e.start_lba
                    )));
                }
                let sys = u8::from_str_radix(
                    e.type_code
                        .as_deref()
                        .unwrap_or("0x83")
                        .trim_start_matches("0x"),
                    16,
                )
                .map_err(|x| TableError::Invalid(format!("type {:?}: {x}", e.type_code)))?;
                let [first, last] = e.chs.unwrap_or([[0; 3]; 2]);
                let entry = mbrman::MBRPartitionEntry {
                    boot: if e.bootable == Some(true) {
                        mbrman::BOOT_ACTIVE
                    } else {
                        mbrman::BOOT_INACTIVE
                    },
                    first_chs: to_chs(first),
                    sys,
                    last_chs: to_chs(last),
                    starting_lba: u32::try_from(e.start_lba)
                        .map_err(|_| beyond_2tib("MBR partition start"))?,
                    sectors: u32::try_from(e.sectors).map_err(|_| beyond_2tib("MBR partition"))?,
                };
                if e.number <= 4 {
                    *mbr.header
                        .get_mut(e.number as usize)
                        .ok_or_else(|| TableError::Invalid("bad partition number".into()))? = entry;
                } else {
                    // check_table guarantees an EBR before the partition.
                    let ebr = e.ebr_lba.unwrap_or(e.start_lba - 1);
                    // The link to an EBR spans from it to the end of its logical partition.
                    let span = e.ebr_sectors.unwrap_or(e.start_lba + e.sectors - ebr);
                    mbr.logical_partitions.push(mbrman::LogicalPartition {
                        partition: entry,
                        absolute_ebr_lba: u32::try_from(ebr).map_err(|_| beyond_2tib("EBR"))?,
                        ebr_sectors: Some(
                            u32::try_from(span).map_err(|_| beyond_2tib("EBR span"))?,
                        ),
                        ebr_first_chs: mbrman::CHS::empty(),
                        ebr_last_chs: Some(mbrman::CHS::empty()),
                        bootstrap_code: [0; 446],
                    });
                }
            }
            mbr.write_into(&mut *disk)
                .map_err(|e| TableError::parser("MBR")(&e))?;
        }
    }
    disk.flush().map_err(|source| TableError::Io {
        what: "flush of the table".into(),
        source,
    })?;
    Ok(())
}

fn beyond_2tib(what: &str) -> TableError {
    TableError::DoesNotFit(format!(
        "{what} lies beyond 2 TiB, past what an MBR can address"
    ))
}
