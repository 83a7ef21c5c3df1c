//! The blocks the files use, found by walking every in-use inode (inodes.rst) rather than
//! trusting the block bitmaps: what e2image does, and what a damaged or crashed filesystem
//! needs, since e2fsck repairs such a filesystem from its inodes, not from its bitmaps.
//!
//! Every inode table is read whole, whatever the descriptors say about unused inodes (their
//! counts may be wrong; a table block that reads as zeros holds no inode). An inode is in use
//! when it has a mode, links and no deletion time, as e2fsck's first pass decides.

use byteorder::{ByteOrder, LittleEndian};

use super::{ExtError, ExtFs, read_at};
use crate::fs::Extent;
use crate::source::ReadAt;

/// `i_dtime`: set when the inode was deleted.
const I_DTIME: usize = 0x14;
/// `i_file_acl_lo` and `l_i_file_acl_high`: the extended attribute block.
const I_FILE_ACL_LO: usize = 0x68;
const I_FILE_ACL_HIGH: usize = 0x76;
/// The bad-blocks inode: its "blocks" are unreadable sectors, not data.
const BAD_BLOCKS_INO: u32 = 1;
/// Inode-table blocks read at a time.
const READ_BLOCKS: u64 = 256;

/// What the walk found.
#[derive(Clone, Debug, Default)]
pub struct FileBlocks {
    /// Every block an in-use inode maps (data, mapping blocks, attribute blocks), sorted and
    /// merged.
    pub extents: Vec<Extent>,
    /// In-use inodes walked.
    pub inodes: u64,
    /// Inodes whose mapping could not be read (their blocks are missing from `extents`).
    pub unreadable: Vec<(u32, String)>,
    /// Block pointers outside the filesystem (skipped).
    pub bad_pointers: u64,
}

impl ExtFs {
    /// Walks every inode table and every in-use inode's blocks.
    ///
    /// # Errors
    /// A read error of an inode table.
    pub fn file_blocks(&self, dev: &(impl ReadAt + ?Sized)) -> Result<FileBlocks, ExtError> {
        let bs = u64::from(self.layout.block_size);
        let isz = usize::from(self.sb.inode_size);
        let per_block = (bs as usize) / isz;
        let mut out = FileBlocks::default();
        let mut found: Vec<Extent> = Vec::new();
        let mut buf = Vec::new();
        for (g, desc) in (0u32..).zip(&self.groups) {
            let mut done = 0u64;
            while done < self.layout.inode_table_blocks {
                let n = (self.layout.inode_table_blocks - done).min(READ_BLOCKS);
                let at = (desc.inode_table + done) * bs;
                if dev.known_zero(at, n * bs) {
                    done += n;
                    continue;
                }
                buf.resize((n * bs) as usize, 0);
                read_at(dev, &mut buf, at)?;
                for (k, raw) in buf.chunks_exact(isz).enumerate() {
                    let index = done * per_block as u64 + k as u64;
                    if index >= u64::from(self.sb.inodes_per_group) {
                        break;
                    }
                    let ino = g * self.sb.inodes_per_group + index as u32 + 1;
                    self.walk_inode(dev, ino, raw, &mut out, &mut found);
                }
                done += n;
            }
            // Keep memory in check on filesystems with many files.
            if found.len() > 1 << 20 {
                found = merge(found);
            }
        }
        out.extents = merge(found);
        Ok(out)
    }

    fn walk_inode(
        &self,
        dev: &(impl ReadAt + ?Sized),
        ino: u32,
        raw: &[u8],
        out: &mut FileBlocks,
        found: &mut Vec<Extent>,
    ) {
        let head: &[u8; 128] = raw[..128]
            .try_into()
            .expect("inodes are at least 128 bytes");
        let inode = super::inode::Inode::parse(head);
        let dtime = LittleEndian::read_u32(&raw[I_DTIME..]);
        if ino == BAD_BLOCKS_INO || inode.mode == 0 || inode.links == 0 || dtime != 0 {
            return;
        }
        out.inodes += 1;
        let acl = u64::from(LittleEndian::read_u32(&raw[I_FILE_ACL_LO..]))
            | u64::from(LittleEndian::read_u16(&raw[I_FILE_ACL_HIGH..])) << 32;
        if acl != 0 {
            if acl < self.sb.blocks_count {
                found.push(Extent { start: acl, len: 1 });
            } else {
                out.bad_pointers += 1;
            }
        }
        match self.inode_blocks(dev, ino, &inode) {
            Ok(b) => {
                out.bad_pointers += b.bad;
                found.extend(b.meta);
                found.extend(b.data.iter().map(|m| Extent {
                    start: m.physical,
                    len: m.len,
                }));
            }
            Err(e) => out.unreadable.push((ino, e.to_string())),
        }
    }
}

fn merge(mut v: Vec<Extent>) -> Vec<Extent> {
    v.sort_unstable_by_key(|e| e.start);
    super::merge_sorted(v)
}
