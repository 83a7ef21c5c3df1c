//! "What is on this device, and which of its blocks are in use": one module per filesystem
//! family behind one interface.
//!
//! [`FsType`] is the one list of what rimage recognises, with the code the image header
//! stores and the name the manifest and `blkid` use. [`FAMILIES`] is the one table of readers:
//! each family identifies its own superblock and, when it can, scans its allocation maps into
//! a [`UsedBlocks`]. Adding a family means one new module and one row in that table; nothing
//! outside `fs/` matches on the filesystem type.

pub mod ext;
pub mod fat;
pub mod raw;
pub mod swap;
pub mod xfs;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::source::ReadAt;
use ext::ExtError;
use fat::FatError;
use xfs::XfsError;

/// A run of blocks: `len` blocks from block `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Extent {
    /// First block.
    pub start: u64,
    /// Number of blocks.
    pub len: u64,
}

impl Extent {
    /// One past the last block.
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// Merges adjacent extents of an ascending, fallible extent iterator and stops after its first
/// error. Each family reads its allocation map a piece at a time (a group's bitmap, an AG's
/// btree, a window of the FAT); this joins runs across the pieces.
pub struct Coalesce<I> {
    inner: I,
    pending: Option<Extent>,
    failed: bool,
}

impl<I> Coalesce<I> {
    /// Extents of `first` (when given) and then of `inner`.
    pub fn new(first: Option<Extent>, inner: I) -> Self {
        Self {
            inner,
            pending: first,
            failed: false,
        }
    }
}

impl<I: Iterator<Item = Result<Extent, E>>, E> Iterator for Coalesce<I> {
    type Item = Result<Extent, E>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            match self.inner.next() {
                Some(Ok(e)) => match &mut self.pending {
                    Some(p) if p.end() == e.start => p.len += e.len,
                    Some(p) => return Some(Ok(std::mem::replace(p, e))),
                    None => self.pending = Some(e),
                },
                Some(Err(e)) => {
                    self.failed = true;
                    return Some(Err(e));
                }
                None => return self.pending.take().map(Ok),
            }
        }
    }
}

/// What a device holds, as far as rimage recognises it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FsType {
    /// ext2 (no journal).
    Ext2,
    /// ext3 (journal, no ext4 features).
    Ext3,
    /// ext4.
    Ext4,
    /// Linux swap (version 1 header).
    Swap,
    /// FAT12/16/32.
    Vfat,
    /// XFS (v4 and v5).
    Xfs,
    /// Nothing rimage parses: imaged block by block, zero blocks skipped.
    Raw,
}

/// How a type identifies a filesystem, and how the 16 bytes an image header keeps for it are
/// read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IdForm {
    /// A 128-bit UUID, shown 8-4-4-4-12.
    Uuid,
    /// A FAT volume id: the header keeps its 4 bytes (little-endian, as on disk) first, then
    /// zeros; shown "XXXX-XXXX" as blkid shows it.
    VolumeId,
}

/// Which reader browses the files of an image of a type (`ls`, `cat`, `extract`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileReader {
    /// ext4-view.
    Ext4View,
    /// The fatfs crate.
    FatFs,
}

/// One row of [`TYPES`].
type Row = (FsType, Option<u8>, &'static str, IdForm, Option<FileReader>);

/// The one code table: (type, image header code, name as `blkid` and the manifest spell it,
/// identifier form, reader that browses its images). Codes are stored in images: never reuse or
/// renumber one.
#[rustfmt::skip]
const TYPES: &[Row] = &[
    (FsType::Ext2, Some(1), "ext2", IdForm::Uuid,     Some(FileReader::Ext4View)),
    (FsType::Ext3, Some(2), "ext3", IdForm::Uuid,     Some(FileReader::Ext4View)),
    (FsType::Ext4, Some(3), "ext4", IdForm::Uuid,     Some(FileReader::Ext4View)),
    (FsType::Raw,  Some(4), "raw",  IdForm::Uuid,     None),
    (FsType::Xfs,  Some(5), "xfs",  IdForm::Uuid,     None),
    (FsType::Vfat, Some(6), "vfat", IdForm::VolumeId, Some(FileReader::FatFs)),
    (FsType::Swap, None,    "swap", IdForm::Uuid,     None),
];

impl FsType {
    fn row(self) -> &'static Row {
        TYPES
            .iter()
            .find(|r| r.0 == self)
            .expect("every type has a row")
    }

    /// The identifier kept in `id` (an image header's UUID field), as blkid shows it for this
    /// type: a UUID, or a FAT volume id "XXXX-XXXX".
    pub fn id_text(self, id: &Uuid) -> String {
        match self.row().3 {
            IdForm::Uuid => id.to_string(),
            IdForm::VolumeId => {
                let v = u32::from_le_bytes([id.0[0], id.0[1], id.0[2], id.0[3]]);
                format!("{:04X}-{:04X}", v >> 16, v & 0xFFFF)
            }
        }
    }

    /// The reader that browses images of this type, if any.
    pub fn file_reader(self) -> Option<FileReader> {
        self.row().4
    }

    /// What this type's identifier is called: "uuid" or "volume id".
    pub fn id_name(self) -> &'static str {
        match self.row().3 {
            IdForm::Uuid => "uuid",
            IdForm::VolumeId => "volume id",
        }
    }

    /// Lower-case name as `blkid` prints it ("raw" for anything else).
    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// The type called `name` ("unknown", as manifest version 1 wrote it, is raw).
    pub fn from_name(name: &str) -> Option<Self> {
        if name == "unknown" {
            return Some(Self::Raw);
        }
        TYPES.iter().find(|r| r.2 == name).map(|r| r.0)
    }

    /// The code an image header stores for a source of this type (`None`: never a source type).
    pub fn code(self) -> Option<u8> {
        self.row().1
    }

    /// The type an image header code stands for.
    pub fn from_code(code: u8) -> Option<Self> {
        TYPES.iter().find(|r| r.1 == Some(code)).map(|r| r.0)
    }

    /// Whether this is ext2, ext3 or ext4.
    pub fn is_ext(self) -> bool {
        matches!(self, Self::Ext2 | Self::Ext3 | Self::Ext4)
    }

    /// Whether files inside it can be read (browsed, mounted for a post-restore command).
    pub fn has_files(self) -> bool {
        self.is_ext() || matches!(self, Self::Vfat | Self::Xfs)
    }

    /// The command that checks and repairs a filesystem of this type on `device`.
    pub fn repair_command(self, device: &std::path::Path) -> Option<String> {
        let d = device.display();
        match self {
            Self::Ext2 | Self::Ext3 | Self::Ext4 => Some(format!("e2fsck -f {d}")),
            Self::Vfat => Some(format!("fsck.fat -a {d}")),
            Self::Xfs => Some(format!("xfs_repair {d}")),
            Self::Swap | Self::Raw => None,
        }
    }
}

impl std::fmt::Display for FsType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for FsType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for FsType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Self::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown filesystem type {name:?}")))
    }
}

/// Whether a filesystem can be copied as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FsState {
    /// Cleanly unmounted.
    pub clean: bool,
    /// Errors were recorded; the filesystem's checker has not fixed them.
    pub errors: bool,
    /// The journal must be replayed (it is mounted, or it crashed).
    pub needs_recovery: bool,
    /// Orphan inodes are pending.
    pub orphans: bool,
}

impl FsState {
    /// What keeps the filesystem from being copied as it is, worded to follow "the
    /// filesystem ..."; empty when it is clean.
    pub fn problems(&self) -> Vec<&'static str> {
        let mut why = Vec::new();
        if !self.clean {
            why.push("was not cleanly unmounted (is it mounted?)");
        }
        if self.errors {
            why.push("has recorded errors");
        }
        if self.needs_recovery {
            why.push("has a journal that needs recovery (is it mounted?)");
        }
        if self.orphans {
            why.push("has orphan inodes pending");
        }
        why
    }
}

/// Identity and size of a source, as a save would record it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsInfo {
    /// Filesystem type.
    pub fs_type: FsType,
    /// Volume label (empty when none).
    pub label: String,
    /// Filesystem UUID, or FAT volume id in the first 4 bytes (none for raw sources): see
    /// [`FsType::id_text`].
    pub uuid: Option<Uuid>,
    /// Block size in bytes.
    pub block_size: u32,
    /// Blocks in the filesystem (or device, for raw).
    pub total_blocks: u64,
    /// Blocks a save copies (for raw, the blocks before zero-skipping).
    pub used_blocks: u64,
    /// State flags (all clear for raw).
    pub state: FsState,
}

impl FsInfo {
    /// The identifier as blkid shows it for this type.
    pub fn id_text(&self) -> Option<String> {
        self.uuid.as_ref().map(|u| self.fs_type.id_text(u))
    }
}

impl Serialize for FsInfo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        /// The fields, with the identifier spelled as this type spells it.
        #[derive(Serialize)]
        struct Shown<'a> {
            fs_type: FsType,
            label: &'a str,
            uuid: Option<String>,
            block_size: u32,
            total_blocks: u64,
            used_blocks: u64,
            state: FsState,
        }
        Shown {
            fs_type: self.fs_type,
            label: &self.label,
            uuid: self.id_text(),
            block_size: self.block_size,
            total_blocks: self.total_blocks,
            used_blocks: self.used_blocks,
            state: self.state,
        }
        .serialize(s)
    }
}

/// A filesystem UUID, shown and serialised the usual 8-4-4-4-12 way.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Uuid(pub [u8; 16]);

impl std::fmt::Display for Uuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        uuid::Uuid::from_bytes(self.0).hyphenated().fmt(f)
    }
}

impl std::fmt::Debug for Uuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Uuid {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        uuid::Uuid::parse_str(s)
            .map(|u| Self(u.into_bytes()))
            .map_err(|e| format!("not a UUID: {s:?} ({e})"))
    }
}

impl Serialize for Uuid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Who a device currently is, as `blkid` would say: enough to describe a partition in a
/// manifest, and to tell one filesystem from another before overwriting it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Filesystem type (raw: nothing recognised).
    pub kind: FsType,
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

impl Identity {
    /// Nothing recognised.
    pub fn unknown() -> Self {
        Self {
            kind: FsType::Raw,
            uuid: None,
            label: None,
            page_size: None,
            block_size: None,
        }
    }

    /// Whether two identities name the same filesystem (type, UUID and label).
    pub fn same_filesystem(&self, other: &Self) -> bool {
        self.kind == other.kind && self.uuid == other.uuid && self.label == other.label
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.kind == FsType::Raw {
            return f.write_str("no recognised filesystem");
        }
        write!(f, "{}", self.kind)?;
        if let Some(l) = &self.label {
            write!(f, " \"{l}\"")?;
        }
        if let Some(u) = &self.uuid {
            write!(f, " UUID {u}")?;
        }
        Ok(())
    }
}

/// When a scan checks the allocation maps against the files (walks every in-use inode's
/// blocks and copies what the maps miss, as e2image does).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CrossCheck {
    /// Never: trust the maps.
    Never,
    /// When the filesystem is not clean (crashed, errors, mounted): the maps may be wrong.
    #[default]
    IfUnclean,
    /// Always (`--thorough`, and `--force`).
    Always,
}

/// How strict a scan is, and how much it double-checks.
#[derive(Clone, Copy, Debug)]
pub struct ScanOptions {
    /// Refuse metadata whose checksums do not match. Without it, such metadata is read as the
    /// filesystem's own checker would read it, and the mismatch is noted.
    pub verify_checksums: bool,
    /// When to check the allocation maps against the files.
    pub cross_check: CrossCheck,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            verify_checksums: true,
            cross_check: CrossCheck::IfUnclean,
        }
    }
}

impl ScanOptions {
    /// Tolerant of damage: checksum mismatches are noted, not refused (what `info` and
    /// `save --force` use).
    pub fn lenient() -> Self {
        Self {
            verify_checksums: false,
            ..Self::default()
        }
    }
}

/// Why a filesystem that is present could not be scanned.
#[derive(Debug, Error)]
pub enum ScanError {
    /// An ext2/3/4 filesystem.
    #[error(transparent)]
    Ext(#[from] ExtError),
    /// An XFS filesystem.
    #[error(transparent)]
    Xfs(#[from] XfsError),
    /// A FAT filesystem.
    #[error(transparent)]
    Fat(#[from] FatError),
}

impl ScanError {
    /// Whether reading the device failed (as opposed to what was read making no sense).
    pub fn is_io(&self) -> bool {
        matches!(
            self,
            Self::Ext(ExtError::Io { .. })
                | Self::Xfs(XfsError::Io { .. })
                | Self::Fat(FatError::Io { .. })
        )
    }
}

/// The used blocks of a scanned source, in ascending order.
pub type ExtentIter<'a> = Box<dyn Iterator<Item = Result<Extent, ScanError>> + 'a>;

/// A source whose used blocks are known: what the save pipeline reads.
pub trait UsedBlocks: std::fmt::Debug + Send + Sync {
    /// Block size of the extents.
    fn block_size(&self) -> u32;

    /// Identity and state, with an exact used count (which may read every allocation map).
    ///
    /// # Errors
    /// Any scan error.
    fn info(&self, dev: &dyn ReadAt) -> Result<FsInfo, ScanError>;

    /// The used extents, ascending and disjoint.
    fn extents<'a>(&'a self, dev: &'a dyn ReadAt) -> ExtentIter<'a>;

    /// Used blocks that should read as zeros (sorted, disjoint): the save reads them and stores
    /// only those that do not, so that they cost reading, not compressing.
    fn zero_extents(&self) -> &[Extent] {
        &[]
    }

    /// Used blocks according to the filesystem's own counters, when it keeps them (they lag
    /// while it is mounted).
    fn recorded_used_blocks(&self) -> Option<u64> {
        None
    }

    /// What the scan found that the user should know (blocks added beyond the bitmaps, parts
    /// that could not be read).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Opens a device for a scan: `Ok(None)` when it does not hold the family's filesystem.
pub type Scanner = fn(&dyn ReadAt, ScanOptions) -> Result<Option<Box<dyn UsedBlocks>>, ScanError>;

/// One filesystem family: how to recognise it, and (when rimage can) how to scan it.
pub struct Family {
    /// Recognises the family's superblock and says who the filesystem is.
    pub identify: fn(&dyn ReadAt) -> Option<Identity>,
    /// Opens the filesystem for a scan (`None`: rimage images it raw).
    pub scan: Option<Scanner>,
}

/// Every family rimage knows, tried in order; raw when none recognises the source.
pub const FAMILIES: &[Family] = &[ext::FAMILY, xfs::FAMILY, swap::FAMILY, fat::FAMILY];

/// Decides how to read `dev`: the first family whose scanner recognises it, raw when none does.
///
/// # Errors
/// A filesystem that is present but corrupt, unsupported or unreadable is an error, not a
/// silent fall back to raw: the caller decides (the CLI offers `--raw`).
pub fn probe(dev: &dyn ReadAt, opts: ScanOptions) -> Result<Box<dyn UsedBlocks>, ScanError> {
    for family in FAMILIES {
        if let Some(scan) = family.scan
            && let Some(fs) = scan(dev, opts)?
        {
            return Ok(fs);
        }
    }
    Ok(Box::new(raw::RawLayout::new(dev.size())))
}

/// Identifies what `dev` holds from its superblock alone (a damaged filesystem is still
/// recognised by its UUID). Raw when nothing is recognised.
pub fn identify(dev: &dyn ReadAt) -> Identity {
    FAMILIES
        .iter()
        .find_map(|f| (f.identify)(dev))
        .unwrap_or_else(Identity::unknown)
}

/// Text up to the first NUL, trailing blanks removed; `None` when empty.
pub(crate) fn label_text(raw: &[u8]) -> Option<String> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let s = String::from_utf8_lossy(&raw[..end]).trim_end().to_string();
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_one_name_and_at_most_one_code() {
        for (t, code, name, _, _) in TYPES {
            assert_eq!(FsType::from_name(name), Some(*t));
            if let Some(c) = code {
                assert_eq!(FsType::from_code(*c), Some(*t));
            }
            assert_eq!(TYPES.iter().filter(|r| r.0 == *t).count(), 1);
        }
        assert_eq!(FsType::from_name("unknown"), Some(FsType::Raw));
        assert_eq!(FsType::from_code(0), None);
    }

    #[test]
    fn identifiers_are_spelled_per_type() {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&0x1234_ABCDu32.to_le_bytes());
        assert_eq!(FsType::Vfat.id_text(&Uuid(id)), "1234-ABCD");
        assert_eq!(FsType::Vfat.id_name(), "volume id");
        let u: Uuid = "0b1c2d3e-4f50-4162-8374-95a6b7c8d9ea".parse().unwrap();
        assert_eq!(
            FsType::Xfs.id_text(&u),
            "0b1c2d3e-4f50-4162-8374-95a6b7c8d9ea"
        );
        assert_eq!(FsType::from_code(5), Some(FsType::Xfs));
        assert_eq!(FsType::from_code(6), Some(FsType::Vfat));
    }
}
