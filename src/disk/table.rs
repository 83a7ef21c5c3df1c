//! Partition tables, GPT (the `gpt` crate) and MBR (the `mbrman` crate): read one into a
//! plain description for the manifest, and write a description back onto a disk exactly.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};

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

/// Reads the partition table of `disk`: GPT when there is a valid one, else MBR. `None` when
/// there is no table at all.
///
/// # Errors
/// A table that is present but cannot be parsed.
pub fn read_table(disk: &mut File) -> Result<Option<Table>, String> {
    let mut sector0 = [0u8; 512];
    disk.seek(SeekFrom::Start(0))
        .and_then(|_| disk.read_exact(&mut sector0))
        .map_err(|e| e.to_string())?;
    if sector0[510..512] != [0x55, 0xAA] {
        return Ok(None);
    }
    let protective = (0..4).any(|i| sector0[446 + 16 * i + 4] == 0xEE);
    if protective {
        let gpt = gpt::GptConfig::new()
            .writable(false)
            .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
            .open_from_device(&mut *disk)
            .map_err(|e| format!("GPT: {e}"))?;
        let h = gpt.header();
        let kind = TableKind::Gpt {
            disk_guid: gpt.guid().to_string().to_uppercase(),
            first_usable_lba: h.first_usable,
            last_usable_lba: h.last_usable,
            entries: h.num_parts,
            entry_size: h.part_size,
        };
        let partitions = gpt
            .partitions()
            .iter()
            .filter(|(_, p)| p.is_used())
            .map(|(&number, p)| Entry {
                number,
                start_lba: p.first_lba,
                sectors: p.last_lba + 1 - p.first_lba,
                type_guid: Some(p.part_type_guid.guid.to_string().to_uppercase()),
                part_guid: Some(p.part_guid.to_string().to_uppercase()),
                name: Some(p.name.clone()),
                attributes: Some(p.flags),
                type_code: None,
                bootable: None,
                chs: None,
                ebr_lba: None,
                ebr_sectors: None,
            })
            .collect();
        return Ok(Some(Table { kind, partitions }));
    }
    disk.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let mbr = mbrman::MBR::read_from(&mut *disk, SECTOR as u32).map_err(|e| format!("MBR: {e}"))?;
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
    Ok(Some(Table { kind, partitions }))
}

fn parse_uuid(s: &str) -> Result<uuid::Uuid, String> {
    s.parse().map_err(|e| format!("{s:?}: {e}"))
}

/// Writes `table` onto `disk` (of `disk_bytes` bytes), replacing whatever table was there:
/// for GPT the protective MBR (keeping `boot_code`), the primary header and entries and the
/// backup at the end of this disk; for DOS the MBR (with `boot_code`) and any EBRs.
///
/// # Errors
/// A table that does not fit the disk, or a write failure.
pub fn write_table(
    disk: &mut File,
    table: &Table,
    disk_bytes: u64,
    boot_code: &[u8; 440],
) -> Result<(), String> {
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
                .map_err(|e| format!("protective MBR: {e}"))?;
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
                .map_err(|e| format!("GPT header: {e}"))?;
            let mut backup = gpt::header::HeaderBuilder::from_header(&primary)
                .primary(false)
                .build(lb)
                .map_err(|e| format!("GPT header: {e}"))?;
            for e in &table.partitions {
                let end = e.start_lba + e.sectors;
                if e.start_lba < primary.first_usable || end - 1 > primary.last_usable {
                    return Err(format!(
                        "partition {} (sectors {}..{end}) does not fit this disk's usable sectors",
                        e.number, e.start_lba
                    ));
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
                .map_err(|e| format!("GPT entries: {e}"))?;
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
                    .map_err(|e| format!("GPT entry: {e}"))?;
                }
            }
            primary
                .write_primary(&mut *disk, lb)
                .map_err(|e| format!("GPT primary header: {e}"))?;
            backup
                .write_backup(&mut *disk, lb)
                .map_err(|e| format!("GPT backup header: {e}"))?;
        }
        TableKind::Dos { disk_signature } => {
            let sig = u32::from_str_radix(disk_signature.trim_start_matches("0x"), 16)
                .map_err(|e| format!("disk signature {disk_signature:?}: {e}"))?;
            let mut mbr = mbrman::MBR::new_from(&mut *disk, SECTOR as u32, sig.to_le_bytes())
                .map_err(|e| format!("MBR: {e}"))?;
            mbr.header.bootstrap_code = *boot_code;
            for e in &table.partitions {
                let end = e.start_lba + e.sectors;
                if end > sectors {
                    return Err(format!(
                        "partition {} (sectors {}..{end}) does not fit this disk",
                        e.number, e.start_lba
                    ));
                }
                let sys = u8::from_str_radix(
                    e.type_code
                        .as_deref()
                        .unwrap_or("0x83")
                        .trim_start_matches("0x"),
                    16,
                )
                .map_err(|x| format!("type {:?}: {x}", e.type_code))?;
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
                        .map_err(|_| "MBR partition start beyond 2 TiB".to_string())?,
                    sectors: u32::try_from(e.sectors)
                        .map_err(|_| "MBR partition beyond 2 TiB".to_string())?,
                };
                if e.number <= 4 {
                    *mbr.header
                        .get_mut(e.number as usize)
                        .ok_or("bad partition number")? = entry;
                } else {
                    mbr.logical_partitions.push(mbrman::LogicalPartition {
                        partition: entry,
                        absolute_ebr_lba: u32::try_from(e.ebr_lba.unwrap_or(e.start_lba - 1))
                            .map_err(|_| "EBR beyond 2 TiB")?,
                        ebr_sectors: e.ebr_sectors.and_then(|s| u32::try_from(s).ok()),
                        ebr_first_chs: mbrman::CHS::empty(),
                        ebr_last_chs: None,
                        bootstrap_code: [0; 446],
                    });
                }
            }
            mbr.write_into(&mut *disk)
                .map_err(|e| format!("MBR: {e}"))?;
        }
    }
    disk.flush().map_err(|e| e.to_string())?;
    Ok(())
}
