//! FAT12/16/32: recognised by its boot sector (volume id and label), imaged raw for now.

use super::{Family, FsType, Identity, label_text};
use crate::source::ReadAt;

/// Boot signature at the end of the boot sector.
const BOOT_SIGNATURE: usize = 510;
/// Where FAT32 keeps its filesystem type text ("FAT32   "), in its extended boot record at 64.
const FAT32_FS_TYPE: usize = 82;
/// Extended boot record fields, FAT12/16 (at 36) and FAT32 (at 64): Microsoft's FAT spec,
/// `BS_BootSig`, `BS_VolID`, `BS_VolLab`, `BS_FilSysType`.
const EBR_FAT16: (usize, usize, usize) = (39, 43, 54);
const EBR_FAT32: (usize, usize, usize) = (67, 71, 82);
/// `BS_BootSig` value announcing that the volume id and label follow.
const EXTENDED_BOOT_SIGNATURE: u8 = 0x29;

/// The FAT family: identified by its boot sector; its used blocks are not yet read.
pub const FAMILY: Family = Family {
    identify,
    scan: None,
};

/// Recognises a FAT boot sector with an extended boot record.
pub fn identify(dev: &dyn ReadAt) -> Option<Identity> {
    let mut boot = [0u8; 512];
    dev.read_exact_at(&mut boot, 0).ok()?;
    if boot[BOOT_SIGNATURE..] != [0x55, 0xAA] {
        return None;
    }
    let (id_at, label_at, fstype_at) = if &boot[FAT32_FS_TYPE..FAT32_FS_TYPE + 5] == b"FAT32" {
        EBR_FAT32
    } else {
        EBR_FAT16
    };
    if &boot[fstype_at..fstype_at + 3] != b"FAT" || boot[id_at - 1] != EXTENDED_BOOT_SIGNATURE {
        return None;
    }
    let id = u32::from_le_bytes(boot[id_at..id_at + 4].try_into().expect("4 bytes"));
    Some(Identity {
        kind: FsType::Vfat,
        uuid: Some(format!("{:04X}-{:04X}", id >> 16, id & 0xFFFF)),
        label: label_text(&boot[label_at..label_at + 11]).filter(|l| l != "NO NAME"),
        page_size: None,
        block_size: None,
    })
}
