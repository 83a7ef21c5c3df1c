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

/// `ext4_dir_entry_2` (dir.rst): inode, record length, name length, file type, name.
const DIRENT_HEADER: usize = 8;
/// The root directory's inode.
const ROOT_INO: u32 = 2;
/// Deepest path followed (a loop in a damaged tree ends here).
const MAX_DEPTH: usize = 4096;

/// The (inode, name) entries of one directory block (linear entries; the index blocks of a
/// hashed directory hold one empty entry spanning the block, and its root keeps "." and "..",
/// so a linear read sees every name exactly once).
fn dir_entries(block: &[u8], out: &mut Vec<(u32, Vec<u8>)>) {
    let mut at = 0usize;
    while at + DIRENT_HEADER <= block.len() {
        let ino = LittleEndian::read_u32(&block[at..]);
        let rec_len = usize::from(LittleEndian::read_u16(&block[at + 4..]));
        let name_len = usize::from(block[at + 6]);
        if rec_len < DIRENT_HEADER || at + rec_len > block.len() {
            return;
        }
        if ino != 0 && DIRENT_HEADER + name_len <= rec_len {
            let name = &block[at + DIRENT_HEADER..at + DIRENT_HEADER + name_len];
            if name != b"." && name != b".." {
                out.push((ino, name.to_vec()));
            }
        }
        at += rec_len;
    }
}

/// What the reserved inodes hold (inodes.rst, "Special inodes"): they have no names.
fn reserved_inode(ino: u32) -> Option<&'static str> {
    Some(match ino {
        3 | 4 => "(a quota file)",
        5 => "(the boot loader inode)",
        7 => "(the reserved descriptor blocks, through the resize inode)",
        8 => "(the journal)",
        1..=10 if ino != ROOT_INO => "(a reserved inode)",
        _ => return None,
    })
}

impl ExtFs {
    /// The paths of the files whose blocks (data or mapping) meet `ranges` (sorted, disjoint),
    /// found by walking every in-use inode and every directory. Blocks no file owns (group
    /// metadata, free space) add one line saying so.
    ///
    /// # Errors
    /// A read error of an inode table.
    pub fn paths_of_blocks(
        &self,
        dev: &(impl ReadAt + ?Sized),
        ranges: &[Extent],
    ) -> Result<Vec<String>, ExtError> {
        let meets = |e: &Extent| {
            let i = ranges.partition_point(|r| r.end() <= e.start);
            ranges.get(i).is_some_and(|r| r.start < e.end())
        };
        let bs = u64::from(self.layout.block_size);
        let isz = usize::from(self.sb.inode_size);
        let mut owners: Vec<u32> = Vec::new();
        let mut owned: Vec<Extent> = Vec::new();
        // child inode → (directory inode, name); the first link found names a file.
        let mut parent: std::collections::HashMap<u32, (u32, Vec<u8>)> =
            std::collections::HashMap::new();
        let mut table = Vec::new();
        let mut dir_block = vec![0u8; bs as usize];
        let mut entries = Vec::new();
        for (g, desc) in (0u32..).zip(&self.groups) {
            table.resize((self.layout.inode_table_blocks * bs) as usize, 0);
            if dev.known_zero(desc.inode_table * bs, table.len() as u64) {
                continue;
            }
            read_at(dev, &mut table, desc.inode_table * bs)?;
            for (k, raw) in table.chunks_exact(isz).enumerate() {
                if k as u64 >= u64::from(self.sb.inodes_per_group) {
                    break;
                }
                let ino = g * self.sb.inodes_per_group + k as u32 + 1;
                let head: &[u8; 128] = raw[..128].try_into().expect("128 bytes");
                let inode = super::inode::Inode::parse(head);
                if ino == BAD_BLOCKS_INO
                    || inode.mode == 0
                    || inode.links == 0
                    || LittleEndian::read_u32(&raw[I_DTIME..]) != 0
                {
                    continue;
                }
                let Ok(b) = self.inode_blocks(dev, ino, &inode) else {
                    continue;
                };
                let mut mine = b.meta.clone();
                mine.extend(b.data.iter().map(|m| Extent {
                    start: m.physical,
                    len: m.len,
                }));
                if mine.iter().any(meets) {
                    owners.push(ino);
                    owned.extend(mine);
                }
                if inode.mode & 0xF000 == 0x4000 {
                    for m in &b.data {
                        for blk in m.physical..m.physical + m.len {
                            read_at(dev, &mut dir_block, blk * bs)?;
                            entries.clear();
                            dir_entries(&dir_block, &mut entries);
                            for (child, name) in entries.drain(..) {
                                parent.entry(child).or_insert((ino, name));
                            }
                        }
                    }
                }
            }
        }
        let mut paths: Vec<String> = owners
            .iter()
            .map(|&ino| {
                if let Some(name) = reserved_inode(ino) {
                    return name.to_string();
                }
                let mut parts = Vec::new();
                let mut at = ino;
                while at != ROOT_INO && parts.len() < MAX_DEPTH {
                    match parent.get(&at) {
                        Some((p, name)) => {
                            parts.push(String::from_utf8_lossy(name).into_owned());
                            at = *p;
                        }
                        None => {
                            parts.push(format!("<inode {at}, no name found>"));
                            break;
                        }
                    }
                }
                parts.reverse();
                format!("/{}", parts.join("/"))
            })
            .collect();
        paths.sort();
        // Differing blocks that no file owns.
        let owned = merge(owned);
        let unowned = ranges.iter().any(|r| {
            let covered: u64 = owned
                .iter()
                .filter(|o| o.start < r.end() && r.start < o.end())
                .map(|o| o.end().min(r.end()) - o.start.max(r.start))
                .sum();
            covered < r.len
        });
        if unowned {
            paths.push(
                "(blocks no file owns: filesystem metadata such as inode tables and bitmaps)"
                    .into(),
            );
        }
        Ok(paths)
    }
}
