//! Inodes and the blocks they use (inodes.rst, "Inode Table" and "The Contents of inode.i_block"):
//! an extent tree or the classic direct/indirect block map. Used to find blocks the bitmaps do
//! not account for: the journal's, and (for a damaged filesystem) those of every file.
//!
//! Every block number read from disk is checked against the filesystem before it is read or
//! reported; trees deeper than the format allows and loops are refused.

use byteorder::{ByteOrder, LittleEndian};

use super::{ExtError, ExtFs, read_at};
use crate::fs::Extent;
use crate::source::ReadAt;

/// `i_mode`.
const I_MODE: usize = 0x0;
/// `i_size_lo`.
const I_SIZE_LO: usize = 0x4;
/// `i_links_count`.
const I_LINKS_COUNT: usize = 0x1A;
/// `i_flags`.
const I_FLAGS: usize = 0x20;
/// `i_block`: 60 bytes of block map or extent tree root.
const I_BLOCK: usize = 0x28;
const I_BLOCK_LEN: usize = 60;
/// `i_size_high`.
const I_SIZE_HIGH: usize = 0x6C;

/// `EXT4_EXTENTS_FL`: `i_block` holds an extent tree.
const EXTENTS_FL: u32 = 0x0008_0000;
/// `EXT4_INLINE_DATA_FL`: the data lives in the inode; no blocks.
const INLINE_DATA_FL: u32 = 0x1000_0000;

/// Mode type bits.
const S_IFMT: u16 = 0xF000;
const S_IFLNK: u16 = 0xA000;
const S_IFREG: u16 = 0x8000;
const S_IFDIR: u16 = 0x4000;

/// Extent tree header magic (extents.rst).
const EXTENT_MAGIC: u16 = 0xF30A;
/// Extent header and entry size.
const EXTENT_ENTRY: usize = 12;
/// The kernel's limit on extent tree depth (`EXT4_MAX_EXTENT_DEPTH`).
const MAX_EXTENT_DEPTH: u16 = 5;
/// `ee_len` above this marks an uninitialized extent of `ee_len - 32768` blocks.
const EXT_INIT_MAX_LEN: u16 = 32768;

/// The fields of an inode the block walk needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inode {
    /// `i_mode`.
    pub mode: u16,
    /// `i_links_count`.
    pub links: u16,
    /// `i_flags`.
    pub flags: u32,
    /// Size in bytes.
    pub size: u64,
    /// `i_block`.
    pub block: [u8; I_BLOCK_LEN],
}

impl Inode {
    /// Decodes the first 128 bytes of an on-disk inode.
    pub fn parse(raw: &[u8; 128]) -> Self {
        Self {
            mode: LittleEndian::read_u16(&raw[I_MODE..]),
            links: LittleEndian::read_u16(&raw[I_LINKS_COUNT..]),
            flags: LittleEndian::read_u32(&raw[I_FLAGS..]),
            size: u64::from(LittleEndian::read_u32(&raw[I_SIZE_LO..]))
                | u64::from(LittleEndian::read_u32(&raw[I_SIZE_HIGH..])) << 32,
            block: raw[I_BLOCK..I_BLOCK + I_BLOCK_LEN]
                .try_into()
                .expect("60 bytes"),
        }
    }

    /// Whether `i_block` maps blocks at all: not for inline data, device nodes, fifos,
    /// sockets, or fast symlinks (whose target is stored in `i_block`).
    pub fn has_blocks(&self) -> bool {
        if self.flags & INLINE_DATA_FL != 0 {
            return false;
        }
        match self.mode & S_IFMT {
            S_IFREG | S_IFDIR => true,
            S_IFLNK => self.flags & EXTENTS_FL != 0 || self.size >= I_BLOCK_LEN as u64,
            // Special inodes (journal, resize, ...) have mode 0 or a regular mode.
            0 => true,
            _ => false,
        }
    }
}

/// A run of an inode's logical blocks and where they are on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First logical block.
    pub logical: u64,
    /// First physical block.
    pub physical: u64,
    /// Number of blocks.
    pub len: u64,
}

/// What the block walk of one inode found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InodeBlocks {
    /// Data blocks, by logical position.
    pub data: Vec<Mapping>,
    /// Blocks of the mapping itself: extent tree nodes, indirect blocks.
    pub meta: Vec<Extent>,
    /// Block numbers that pointed outside the filesystem (skipped, as e2fsck would clear them).
    pub bad: u64,
}

impl ExtFs {
    /// Reads inode `ino` (1-based).
    ///
    /// # Errors
    /// An inode number outside the filesystem, or a read error.
    pub fn read_inode(&self, dev: &(impl ReadAt + ?Sized), ino: u32) -> Result<Inode, ExtError> {
        let ipg = self.sb.inodes_per_group;
        if ino == 0 || ino > self.sb.inodes_count {
            return Err(ExtError::BadInode {
                ino,
                reason: "inode number out of range",
            });
        }
        let (group, index) = ((ino - 1) / ipg, (ino - 1) % ipg);
        let table = self.groups[group as usize].inode_table;
        let offset = table * u64::from(self.layout.block_size)
            + u64::from(index) * u64::from(self.sb.inode_size);
        let mut raw = [0u8; 128];
        read_at(dev, &mut raw, offset)?;
        Ok(Inode::parse(&raw))
    }

    /// The blocks inode `inode` uses: data by logical position, and the blocks of its mapping.
    ///
    /// # Errors
    /// A read error, a malformed extent tree (bad magic, depth beyond the format's limit,
    /// more entries than fit) or a block map that loops.
    pub fn inode_blocks(
        &self,
        dev: &(impl ReadAt + ?Sized),
        ino: u32,
        inode: &Inode,
    ) -> Result<InodeBlocks, ExtError> {
        let mut out = InodeBlocks::default();
        if !inode.has_blocks() {
            return Ok(out);
        }
        let mut walk = Walk {
            fs: self,
            dev,
            ino,
            out: &mut out,
            buf: Vec::new(),
            visited: 0,
        };
        if inode.flags & EXTENTS_FL != 0 {
            walk.extent_node(&inode.block, None)?;
        } else {
            walk.block_map(&inode.block)?;
        }
        Ok(out)
    }
}

struct Walk<'a, R: ReadAt + ?Sized> {
    fs: &'a ExtFs,
    dev: &'a R,
    ino: u32,
    out: &'a mut InodeBlocks,
    buf: Vec<u8>,
    /// Mapping blocks read so far: bounded by the filesystem's size, so a loop ends.
    visited: u64,
}

impl<R: ReadAt + ?Sized> Walk<'_, R> {
    fn bad(&self, reason: &'static str) -> ExtError {
        ExtError::BadInode {
            ino: self.ino,
            reason,
        }
    }

    /// Whether `len` blocks from `start` lie inside the filesystem (after the first data block).
    fn inside(&self, start: u64, len: u64) -> bool {
        start >= self.fs.layout.first_data_block
            && start
                .checked_add(len)
                .is_some_and(|end| end <= self.fs.sb.blocks_count)
    }

    /// Reads mapping block `block` (already checked to be inside) into `self.buf`.
    fn read_block(&mut self, block: u64) -> Result<Vec<u8>, ExtError> {
        self.visited += 1;
        if self.visited > self.fs.sb.blocks_count {
            return Err(self.bad("its block map loops"));
        }
        let bs = self.fs.layout.block_size as usize;
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(bs, 0);
        read_at(self.dev, &mut buf, block * bs as u64)?;
        self.out.meta.push(Extent {
            start: block,
            len: 1,
        });
        Ok(buf)
    }

    /// An extent tree node: the 60-byte root in the inode, or a tree block. `depth` is the
    /// depth its parent promised (`None` for the root).
    fn extent_node(&mut self, node: &[u8], depth: Option<u16>) -> Result<(), ExtError> {
        let magic = LittleEndian::read_u16(&node[0..]);
        let entries = LittleEndian::read_u16(&node[2..]);
        let node_depth = LittleEndian::read_u16(&node[6..]);
        if magic != EXTENT_MAGIC {
            return Err(self.bad("extent tree node without its magic"));
        }
        if node_depth > MAX_EXTENT_DEPTH || depth.is_some_and(|d| d != node_depth) {
            return Err(self.bad("extent tree depth out of range"));
        }
        let fits = (node.len() - EXTENT_ENTRY) / EXTENT_ENTRY;
        if usize::from(entries) > fits {
            return Err(self.bad("extent tree node holds more entries than fit"));
        }
        for i in 0..usize::from(entries) {
            let e = &node[EXTENT_ENTRY * (i + 1)..EXTENT_ENTRY * (i + 2)];
            if node_depth == 0 {
                let logical = u64::from(LittleEndian::read_u32(&e[0..]));
                let raw_len = LittleEndian::read_u16(&e[4..]);
                let len = u64::from(if raw_len > EXT_INIT_MAX_LEN {
                    raw_len - EXT_INIT_MAX_LEN
                } else {
                    raw_len
                });
                let physical = u64::from(LittleEndian::read_u16(&e[6..])) << 32
                    | u64::from(LittleEndian::read_u32(&e[8..]));
                if len == 0 || !self.inside(physical, len) {
                    self.out.bad += 1;
                    continue;
                }
                self.out.data.push(Mapping {
                    logical,
                    physical,
                    len,
                });
            } else {
                let child = u64::from(LittleEndian::read_u32(&e[4..]))
                    | u64::from(LittleEndian::read_u16(&e[8..])) << 32;
                if !self.inside(child, 1) {
                    self.out.bad += 1;
                    continue;
                }
                let block = self.read_block(child)?;
                let result = self.extent_node(&block, Some(node_depth - 1));
                self.buf = block;
                result?;
            }
        }
        Ok(())
    }

    /// The classic map: 12 direct blocks, then single, double and triple indirect blocks.
    fn block_map(&mut self, i_block: &[u8; I_BLOCK_LEN]) -> Result<(), ExtError> {
        let per_block = u64::from(self.fs.layout.block_size / 4);
        let mut logical = 0u64;
        for (slot, word) in i_block.chunks_exact(4).enumerate() {
            let block = u64::from(LittleEndian::read_u32(word));
            let level = slot.saturating_sub(11) as u32; // 0 for direct, 1..=3 for indirect
            let span = per_block.saturating_pow(level);
            if block != 0 {
                self.mapped(block, level, logical)?;
            }
            logical = logical.saturating_add(span);
        }
        Ok(())
    }

    /// Block `block` maps `per_block^level` logical blocks from `logical`.
    fn mapped(&mut self, block: u64, level: u32, logical: u64) -> Result<(), ExtError> {
        if !self.inside(block, 1) {
            self.out.bad += 1;
            return Ok(());
        }
        if level == 0 {
            match self.out.data.last_mut() {
                Some(m) if m.physical + m.len == block && m.logical + m.len == logical => {
                    m.len += 1;
                }
                _ => self.out.data.push(Mapping {
                    logical,
                    physical: block,
                    len: 1,
                }),
            }
            return Ok(());
        }
        let per_block = u64::from(self.fs.layout.block_size / 4);
        let span = per_block.saturating_pow(level - 1);
        let buf = self.read_block(block)?;
        let mut result = Ok(());
        for (i, word) in buf.chunks_exact(4).enumerate() {
            let child = u64::from(LittleEndian::read_u32(word));
            if child == 0 {
                continue;
            }
            let at = logical.saturating_add(span.saturating_mul(i as u64));
            result = self.mapped(child, level - 1, at);
            if result.is_err() {
                break;
            }
        }
        self.buf = buf;
        result
    }
}
