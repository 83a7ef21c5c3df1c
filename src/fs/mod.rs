//! "Which blocks are in use": one module per filesystem family.
//!
//! [`probe`] looks at a source and returns a [`Scan`]: an ext2/3/4 filesystem read from its block
//! bitmaps, or raw (every block; the save pipeline drops all-zero blocks).

pub mod ext;
pub mod raw;

use serde::Serialize;

use crate::source::ReadAt;
use ext::{ExtError, ExtFs, ScanOptions};

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

/// What kind of source this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    /// ext2 (no journal).
    Ext2,
    /// ext3 (journal, no ext4 features).
    Ext3,
    /// ext4.
    Ext4,
    /// Not a filesystem rimage parses: imaged block by block, zero blocks skipped.
    Raw,
}

impl FsType {
    /// Lower-case name as `blkid` prints it ("raw" for anything else).
    pub fn name(self) -> &'static str {
        match self {
            Self::Ext2 => "ext2",
            Self::Ext3 => "ext3",
            Self::Ext4 => "ext4",
            Self::Raw => "raw",
        }
    }
}

/// Whether a filesystem can be copied as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FsState {
    /// Cleanly unmounted.
    pub clean: bool,
    /// Errors were recorded; e2fsck has not fixed them.
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FsInfo {
    /// Filesystem type.
    pub fs_type: FsType,
    /// Volume label (empty when none).
    pub label: String,
    /// Filesystem UUID (none for raw sources).
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

/// How a source will be read.
#[derive(Debug)]
pub enum Scan {
    /// An ext2/3/4 filesystem: only the blocks its bitmaps mark.
    Ext(Box<ExtFs>),
    /// Anything else: every block.
    Raw(raw::RawLayout),
}

/// Decides how to read `dev`: ext2/3/4 when there is an ext superblock, raw when there is none.
///
/// # Errors
/// An ext superblock that is present but corrupt, unsupported or unreadable is an error, not a
/// silent fall back to raw: the caller decides (the CLI offers `--raw`).
pub fn probe(dev: &(impl ReadAt + ?Sized), opts: ScanOptions) -> Result<Scan, ExtError> {
    match ExtFs::open(dev, opts) {
        Ok(fs) => Ok(Scan::Ext(Box::new(fs))),
        Err(ExtError::NotExt | ExtError::TooSmall { .. }) => {
            Ok(Scan::Raw(raw::RawLayout::new(dev.size())))
        }
        Err(e) => Err(e),
    }
}

impl Scan {
    /// Block size of the extents this scan yields.
    pub fn block_size(&self) -> u32 {
        match self {
            Self::Ext(fs) => fs.block_size(),
            Self::Raw(r) => r.block_size(),
        }
    }

    /// Used blocks that must read as zeros but need not be copied (ext: unused inode tables).
    pub fn zero_extents(&self) -> &[Extent] {
        match self {
            Self::Ext(fs) => fs.unused_inode_tables(),
            Self::Raw(_) => &[],
        }
    }

    /// The used extents, in ascending order.
    pub fn extents<'a, R: ReadAt + ?Sized>(
        &'a self,
        dev: &'a R,
    ) -> Box<dyn Iterator<Item = Result<Extent, ExtError>> + 'a> {
        match self {
            Self::Ext(fs) => Box::new(fs.used_extents(dev)),
            Self::Raw(r) => Box::new(r.extents().map(Ok)),
        }
    }

    /// Identity with an exact used count: scans every bitmap (ext) or counts blocks (raw).
    ///
    /// # Errors
    /// Any scan error.
    pub fn info(&self, dev: &(impl ReadAt + ?Sized)) -> Result<FsInfo, ExtError> {
        match self {
            Self::Ext(fs) => {
                let mut used = 0;
                for e in fs.used_extents(dev) {
                    used += e?.len;
                }
                Ok(fs.info(used))
            }
            Self::Raw(r) => Ok(r.info()),
        }
    }
}

/// Who a device currently is: enough to tell one filesystem from another before overwriting it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// Filesystem type (raw: nothing recognised).
    pub fs_type: FsType,
    /// Label (empty when none).
    pub label: String,
    /// UUID, when the filesystem has one.
    pub uuid: Option<Uuid>,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.fs_type == FsType::Raw {
            return f.write_str("no recognised filesystem");
        }
        write!(f, "{}", self.fs_type.name())?;
        if !self.label.is_empty() {
            write!(f, " \"{}\"", self.label)?;
        }
        if let Some(u) = &self.uuid {
            write!(f, " UUID {u}")?;
        }
        Ok(())
    }
}

/// Identifies what `dev` holds from its superblock alone (a damaged filesystem is still
/// recognised by its UUID). Raw when nothing is recognised.
pub fn identify(dev: &(impl ReadAt + ?Sized)) -> Identity {
    let mut raw = [0u8; ext::superblock::SUPERBLOCK_SIZE];
    let sb = dev
        .read_exact_at(&mut raw, ext::superblock::SUPERBLOCK_OFFSET)
        .ok()
        .and_then(|()| ext::superblock::Superblock::parse(&raw).ok());
    match sb {
        Some(sb) => Identity {
            fs_type: sb.flavour(),
            label: String::from_utf8_lossy(&sb.label).into_owned(),
            uuid: Some(Uuid(sb.uuid)),
        },
        None => Identity {
            fs_type: FsType::Raw,
            label: String::new(),
            uuid: None,
        },
    }
}
