//! Sources rimage cannot parse: every block is a candidate, and the save pipeline drops the
//! all-zero ones (so restore recreates them as holes or zeros).

use super::{Extent, ExtentIter, FsInfo, FsState, FsType, ScanError, UsedBlocks};
use crate::source::ReadAt;

/// Block size of raw images. Device sizes are multiples of 512, not always of 4096: the last
/// block may be partial, and restore never writes past the recorded source size.
pub const RAW_BLOCK_SIZE: u32 = 4096;

/// A raw source of a given size.
#[derive(Clone, Debug)]
pub struct RawLayout {
    size: u64,
    /// Why a filesystem that was recognised is imaged raw, when it is.
    notes: Vec<String>,
}

impl RawLayout {
    /// A raw layout over `size` bytes.
    pub fn new(size: u64) -> Self {
        Self {
            size,
            notes: Vec::new(),
        }
    }

    /// A raw layout over `size` bytes of a filesystem rimage recognises but cannot vouch
    /// for; `note` says why.
    pub fn with_note(size: u64, note: String) -> Self {
        Self {
            size,
            notes: vec![note],
        }
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u32 {
        RAW_BLOCK_SIZE
    }

    /// Blocks, the last possibly partial.
    pub fn blocks(&self) -> u64 {
        self.size.div_ceil(u64::from(RAW_BLOCK_SIZE))
    }

    /// Every block, as one extent (none for an empty source).
    pub fn extents(&self) -> impl Iterator<Item = Extent> + use<> {
        let blocks = self.blocks();
        (blocks > 0)
            .then_some(Extent {
                start: 0,
                len: blocks,
            })
            .into_iter()
    }

    /// Identity of a raw source: no label or UUID, every block counted.
    pub fn info(&self) -> FsInfo {
        FsInfo {
            fs_type: FsType::Raw,
            label: String::new(),
            uuid: None,
            block_size: RAW_BLOCK_SIZE,
            total_blocks: self.blocks(),
            used_blocks: self.blocks(),
            state: FsState {
                clean: true,
                ..FsState::default()
            },
        }
    }
}

impl UsedBlocks for RawLayout {
    fn block_size(&self) -> u32 {
        RAW_BLOCK_SIZE
    }

    fn info(&self, _dev: &dyn ReadAt) -> Result<FsInfo, ScanError> {
        Ok(RawLayout::info(self))
    }

    fn extents<'a>(&'a self, _dev: &'a dyn ReadAt) -> ExtentIter<'a> {
        Box::new(RawLayout::extents(self).map(Ok))
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }
}
