//! What a partition holds, from its first blocks: ext2/3/4 (our superblock parser), Linux swap
//! (the swap header), FAT (the boot sector), or something else. Enough to describe a partition
//! in the manifest and to check a restore, like `blkid` but without running it.

use serde::{Deserialize, Serialize};

use crate::fs::ext::superblock::{SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, Superblock};
use crate::fs::{FsType, Uuid};
use crate::source::ReadAt;

/// The filesystem kinds rimage knows a partition can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    /// ext2.
    Ext2,
    /// ext3.
    Ext3,
    /// ext4.
    Ext4,
    /// Linux swap (version 1 header).
    Swap,
    /// FAT12/16/32.
    Vfat,
    /// Nothing recognised.
    Unknown,
}

impl FsKind {
    /// The name blkid uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ext2 => "ext2",
            Self::Ext3 => "ext3",
            Self::Ext4 => "ext4",
            Self::Swap => "swap",
            Self::Vfat => "vfat",
            Self::Unknown => "unknown",
        }
    }

    /// Whether this is ext2, ext3 or ext4.
    pub fn is_ext(self) -> bool {
        matches!(self, Self::Ext2 | Self::Ext3 | Self::Ext4)
    }
}

/// What a partition holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detected {
    /// Filesystem kind.
    pub kind: FsKind,
    /// Its UUID as blkid prints it (a FAT volume id is "XXXX-XXXX").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Its label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// For swap: the page size its header was written for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u32>,
    /// For ext: block size (used to re-create a reformatted filesystem alike).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u32>,
}

/// Swap header fields (linux/swap.h, `union swap_header`): after 1024 bytes of boot space.
pub const SWAP_VERSION: usize = 1024;
/// `info.last_page`.
pub const SWAP_LAST_PAGE: usize = 1028;
/// `info.nr_badpages`.
pub const SWAP_NR_BADPAGES: usize = 1032;
/// `info.sws_uuid`.
pub const SWAP_UUID: usize = 1036;
/// `info.sws_volume` (the label).
pub const SWAP_LABEL: usize = 1052;
/// The magic ends the first page.
pub const SWAP_MAGIC: &[u8; 10] = b"SWAPSPACE2";

fn text(raw: &[u8]) -> Option<String> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let s = String::from_utf8_lossy(&raw[..end]).trim_end().to_string();
    (!s.is_empty()).then_some(s)
}

/// Identifies what `dev` holds.
pub fn detect(dev: &(impl ReadAt + ?Sized)) -> Detected {
    let unknown = Detected {
        kind: FsKind::Unknown,
        uuid: None,
        label: None,
        page_size: None,
        block_size: None,
    };
    let mut sb = [0u8; SUPERBLOCK_SIZE];
    if dev.read_exact_at(&mut sb, SUPERBLOCK_OFFSET).is_ok()
        && let Ok(sb) = Superblock::parse(&sb)
    {
        let kind = match sb.flavour() {
            FsType::Ext2 => FsKind::Ext2,
            FsType::Ext3 => FsKind::Ext3,
            _ => FsKind::Ext4,
        };
        return Detected {
            kind,
            uuid: Some(Uuid(sb.uuid).to_string()),
            label: text(&sb.label),
            page_size: None,
            block_size: Some(sb.block_size()),
        };
    }
    for page in [4096u32, 8192, 16384, 65536] {
        let mut buf = vec![0u8; page as usize];
        if dev.read_exact_at(&mut buf, 0).is_err() {
            break;
        }
        if &buf[page as usize - 10..] == SWAP_MAGIC {
            let uuid: [u8; 16] = buf[SWAP_UUID..SWAP_UUID + 16].try_into().expect("16 bytes");
            return Detected {
                kind: FsKind::Swap,
                uuid: (uuid != [0; 16]).then(|| Uuid(uuid).to_string()),
                label: text(&buf[SWAP_LABEL..SWAP_LABEL + 16]),
                page_size: Some(page),
                block_size: None,
            };
        }
    }
    let mut boot = [0u8; 512];
    if dev.read_exact_at(&mut boot, 0).is_ok() && boot[510..512] == [0x55, 0xAA] {
        // FAT32 keeps its extended boot record at 64, FAT12/16 at 36 (Microsoft's FAT spec).
        let (id_at, label_at, fstype_at) = if &boot[82..87] == b"FAT32" {
            (67, 71, 82)
        } else {
            (39, 43, 54)
        };
        if &boot[fstype_at..fstype_at + 3] == b"FAT" && boot[id_at - 1] == 0x29 {
            let id = u32::from_le_bytes(boot[id_at..id_at + 4].try_into().expect("4 bytes"));
            let label = text(&boot[label_at..label_at + 11]).filter(|l| l != "NO NAME");
            return Detected {
                kind: FsKind::Vfat,
                uuid: Some(format!("{:04X}-{:04X}", id >> 16, id & 0xFFFF)),
                label,
                page_size: None,
                block_size: None,
            };
        }
    }
    unknown
}
