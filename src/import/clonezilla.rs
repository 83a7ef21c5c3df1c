//! Clonezilla image directories (savedisk), read into a save-disk directory.
//!
//! A savedisk directory holds: `disk` (the disk's name), `parts` (the partitions imaged),
//! `<disk>-pt.sf` (sfdisk's dump), `<disk>-gpt-1st` (sectors 0-33: protective MBR, GPT header
//! and entries) and `<disk>-gpt-2nd` (the backup, only when parted was installed) or
//! `<disk>-mbr` and `<disk>-hidden-data-after-mbr`, `swappt-<part>.info` (swap UUID and
//! label), `dev-fs.list` and `blkid.list` (what each partition held), and the images
//! `<part>.<fs>-ptcl-img.<comp>[.aa, .ab, ...]` (partclone) or `<part>.dd-ptcl-img...` /
//! `<part>.dd-img...` (raw bytes).
//!
//! The table is read with rimage's own table reader from the saved sectors, placed on a
//! sparse in-memory disk of the saved size (a missing backup GPT is rebuilt from the primary,
//! as sfdisk would). [`plan_dir`] says what an import would write; [`import_dir`] writes it:
//! one image per imaged partition through [`super::import_sized`], the boot area, and the
//! manifest last, all in a temporary directory renamed to the output at the end.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{ImportReport, input, partclone};
use crate::Error;
use crate::disk::manifest::{self, Action, MANIFEST, Manifest, Plan};
use crate::disk::table::{self, SECTOR, Table};
use crate::error::IoError;
use crate::fs::{FsType, Identity};
use crate::progress::Progress;
use crate::save::SaveOptions;

/// Largest text file of a Clonezilla directory read (`parts`, `pt.sf`, `blkid.list`, ...).
const MAX_TEXT: u64 = 1 << 20;
/// Sectors in `<disk>-gpt-1st`: the protective MBR, the header and 32 sectors of entries.
const GPT_FIRST_SECTORS: u64 = 34;
/// Sectors of entries in a backup GPT (`<disk>-gpt-2nd` holds these and the header).
const GPT_ENTRY_SECTORS: u64 = 32;
/// Most bytes of a saved boot area (as save-disk keeps).
const MAX_BOOT_AREA: u64 = 16 << 20;
/// Largest disk a Clonezilla table may describe (2^64 bytes would overflow offsets).
const MAX_DISK_SECTORS: u64 = 1 << 50;
/// File name of the boot area in the save-disk directory (as save-disk names it).
const BOOT_AREA: &str = "boot-area.bin";

/// Files Clonezilla writes that an import reads or knowingly leaves (information only).
const KNOWN_INFO: &[&str] = &[
    "clonezilla-img",
    "blkdev.list",
    "Info-img-id.txt",
    "Info-img-size.txt",
    "Info-packages.txt",
    "Info-saved-by-cmd.txt",
    "Info-dmi.txt",
    "Info-lshw.txt",
    "Info-lspci.txt",
    "Info-smart.txt",
    "Info-OS-prober.txt",
    "Info-check-img-restorable.txt",
];

/// What happens to one partition.
#[derive(Clone, Debug, Serialize)]
pub struct PartPlan {
    /// Partition number.
    pub number: u32,
    /// Clonezilla's name for it (`sda2`).
    pub name: String,
    /// What restore-disk will do.
    pub action: Action,
    /// What it holds (from its image, `swappt-*.info` or `blkid.list`).
    pub filesystem: Identity,
    /// The image files (split pieces in order).
    pub pieces: Vec<PathBuf>,
    /// Their compression.
    pub compression: Option<input::Compression>,
    /// The partclone header, when it is one.
    pub partclone: Option<partclone::Desc>,
    /// The image file it becomes.
    pub image: Option<String>,
    /// Size in bytes.
    pub bytes: u64,
}

/// What an import of a Clonezilla directory would write.
#[derive(Clone, Debug, Serialize)]
pub struct ClonezillaPlan {
    /// The directory.
    pub dir: PathBuf,
    /// The disk's name in it.
    pub disk: String,
    /// The partition table.
    pub table: Table,
    /// Bytes of the saved disk.
    pub disk_bytes: u64,
    /// Per partition, in table order.
    pub partitions: Vec<PartPlan>,
    /// Bytes of the boot area written.
    pub boot_area_bytes: u64,
    /// The boot area: the saved sectors before the first partition.
    #[serde(skip)]
    pub boot_area: Vec<u8>,
    /// What the import reads differently from Clonezilla, or leaves: files it does not
    /// understand, a rebuilt backup GPT, swap page sizes assumed.
    pub notes: Vec<String>,
}

/// What an import of a Clonezilla directory did.
#[derive(Clone, Debug, Serialize)]
pub struct ClonezillaReport {
    /// The plan carried out.
    pub plan: ClonezillaPlan,
    /// The save-disk directory written.
    pub out: PathBuf,
    /// Each partition image's import.
    pub imports: Vec<(u32, ImportReport)>,
}

/// Whether `dir` looks like a Clonezilla image directory (`disk` or `parts` files).
pub fn is_clonezilla_dir(dir: &Path) -> bool {
    dir.is_dir() && (dir.join("disk").is_file() || dir.join("parts").is_file())
}

fn refused(dir: &Path, why: impl Into<String>) -> Error {
    Error::refused(dir, why)
}

fn read_text(path: &Path) -> Result<String, Error> {
    let f = std::fs::File::open(path).map_err(|e| IoError::new(path, "open", None, e))?;
    let mut s = String::new();
    f.take(MAX_TEXT)
        .read_to_string(&mut s)
        .map_err(|e| IoError::new(path, "read", None, e))?;
    Ok(s)
}

fn read_bytes(path: &Path, max: u64) -> Result<Vec<u8>, Error> {
    let f = std::fs::File::open(path).map_err(|e| IoError::new(path, "open", None, e))?;
    let mut v = Vec::new();
    f.take(max)
        .read_to_end(&mut v)
        .map_err(|e| IoError::new(path, "read", None, e))?;
    Ok(v)
}

/// The partition number in a partition name: `sda2` → 2, `nvme0n1p3` → 3, `loop0p1` → 1.
pub fn part_number(disk: &str, part: &str) -> Option<u32> {
    let rest = part.strip_prefix(disk)?;
    let digits = rest.strip_prefix('p').unwrap_or(rest);
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// `KEY="value"` pairs of a `blkid` line or a `swappt-*.info` file.
fn key_values(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq]
            .rsplit(|c: char| c.is_whitespace() || c == ':')
            .next()
            .unwrap_or("")
            .to_string();
        let after = &rest[eq + 2..];
        let Some(end) = after.find('"') else { break };
        out.insert(key, after[..end].to_string());
        rest = &after[end + 1..];
    }
    out
}

/// Identity from `blkid`-style pairs.
fn identity_of(kv: &BTreeMap<String, String>) -> Identity {
    let kind = kv
        .get("TYPE")
        .and_then(|t| FsType::from_name(t))
        .unwrap_or(FsType::Raw);
    Identity {
        kind,
        uuid: kv.get("UUID").cloned(),
        label: kv.get("LABEL").cloned(),
        page_size: (kind == FsType::Swap).then_some(4096),
        block_size: None,
    }
}

/// A disk of `size` bytes that holds only the sectors written to it (zeros elsewhere): the
/// table reader reads the saved sectors from it as from the real disk.
#[derive(Debug)]
struct SparseDisk {
    sectors: BTreeMap<u64, Vec<u8>>,
    size: u64,
    pos: u64,
}

impl SparseDisk {
    fn put(&mut self, at: u64, bytes: &[u8]) {
        self.pos = at;
        let _ = self.write(bytes);
    }

    fn get(&mut self, at: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.pos = at;
        let _ = self.read(&mut v);
        v
    }
}

impl Read for SparseDisk {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.size.saturating_sub(self.pos) as usize);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let at = self.pos + i as u64;
            *b = self
                .sectors
                .get(&(at / SECTOR))
                .map_or(0, |s| s[(at % SECTOR) as usize]);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for SparseDisk {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.size.saturating_sub(self.pos) as usize);
        for (i, &b) in buf[..n].iter().enumerate() {
            let at = self.pos + i as u64;
            self.sectors
                .entry(at / SECTOR)
                .or_insert_with(|| vec![0u8; SECTOR as usize])[(at % SECTOR) as usize] = b;
        }
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for SparseDisk {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or(std::io::ErrorKind::InvalidInput)?;
        Ok(self.pos)
    }
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// The table, disk size and boot area of the saved disk, and notes.
fn read_saved_table(
    dir: &Path,
    disk: &str,
    notes: &mut Vec<String>,
) -> Result<(Table, u64, Vec<u8>), Error> {
    let gpt1 = dir.join(format!("{disk}-gpt-1st"));
    let mbr = dir.join(format!("{disk}-mbr"));
    let sf_ends = sf_partition_ends(dir, disk)?;
    if gpt1.is_file() {
        let first = read_bytes(&gpt1, GPT_FIRST_SECTORS * SECTOR)?;
        if first.len() as u64 != GPT_FIRST_SECTORS * SECTOR {
            return Err(refused(
                &gpt1,
                format!("holds {} bytes, not the 34 sectors of a GPT", first.len()),
            ));
        }
        let hdr = &first[SECTOR as usize..2 * SECTOR as usize];
        if &hdr[..8] != b"EFI PART" {
            return Err(refused(&gpt1, "has no GPT header in its second sector"));
        }
        // The backup header's place is the disk's last sector.
        let last = le64(hdr, 32);
        if !(GPT_FIRST_SECTORS + GPT_ENTRY_SECTORS..MAX_DISK_SECTORS).contains(&last) {
            return Err(refused(
                &gpt1,
                format!("its GPT header puts the disk's last sector at {last}"),
            ));
        }
        let size = (last + 1) * SECTOR;
        let mut d = SparseDisk {
            sectors: BTreeMap::new(),
            size,
            pos: 0,
        };
        d.put(0, &first);
        let gpt2 = dir.join(format!("{disk}-gpt-2nd"));
        if gpt2.is_file() {
            let second = read_bytes(&gpt2, (GPT_ENTRY_SECTORS + 1) * SECTOR)?;
            d.put(size - second.len() as u64, &second);
        } else {
            rebuild_backup(&mut d, last)?;
            notes.push(format!(
                "{disk}-gpt-2nd is missing (Clonezilla writes it only with parted installed): the backup GPT was rebuilt from the primary"
            ));
        }
        let table = table::read_table(&mut d, size)
            .map_err(|e| Error::table(&gpt1, e))?
            .ok_or_else(|| refused(&gpt1, "holds no partition table"))?;
        let first_start = first_start(&table);
        let mut boot = first;
        boot.resize(first_start as usize, 0);
        check_sf(&table, &sf_ends, dir, disk, notes);
        Ok((table, size, boot))
    } else if mbr.is_file() {
        let sector0 = read_bytes(&mbr, SECTOR)?;
        if sector0.len() as u64 != SECTOR {
            return Err(refused(&mbr, "is not one 512-byte sector"));
        }
        // No record of the disk's size: the end of its last partition (sfdisk's dump agrees).
        let mut d = SparseDisk {
            sectors: BTreeMap::new(),
            size: MAX_DISK_SECTORS * SECTOR,
            pos: 0,
        };
        d.put(0, &sector0);
        let probe = table::read_table(&mut d, MAX_DISK_SECTORS * SECTOR)
            .map_err(|e| Error::table(&mbr, e))?
            .ok_or_else(|| refused(&mbr, "holds no partition table"))?;
        if probe.partitions.iter().any(|e| e.number > 4)
            || probe.partitions.iter().any(|e| e.is_extended())
        {
            return Err(refused(
                dir,
                "the disk has an extended partition: Clonezilla keeps only its first EBR, and importing logical partitions is not supported",
            ));
        }
        let end = probe
            .partitions
            .iter()
            .map(|e| e.start_lba + e.sectors)
            .max()
            .unwrap_or(1);
        let size = end * SECTOR;
        let mut d2 = SparseDisk {
            sectors: BTreeMap::new(),
            size,
            pos: 0,
        };
        d2.put(0, &sector0);
        let table = table::read_table(&mut d2, size)
            .map_err(|e| Error::table(&mbr, e))?
            .ok_or_else(|| refused(&mbr, "holds no partition table"))?;
        notes.push(format!(
            "an MBR records no disk size: the saved disk is taken to end with its last partition ({size} bytes)"
        ));
        let first_start = first_start(&table);
        let mut boot = sector0;
        let hidden = dir.join(format!("{disk}-hidden-data-after-mbr"));
        if hidden.is_file() {
            boot.extend(read_bytes(&hidden, first_start.saturating_sub(SECTOR))?);
        } else {
            notes.push(format!(
                "{disk}-hidden-data-after-mbr is missing: the sectors between the MBR and the first partition are restored as zeros"
            ));
        }
        boot.resize(first_start as usize, 0);
        check_sf(&table, &sf_ends, dir, disk, notes);
        Ok((table, size, boot))
    } else {
        Err(refused(
            dir,
            format!("has neither {disk}-gpt-1st nor {disk}-mbr: the partition table was not saved"),
        ))
    }
}

/// Where the first partition starts, in bytes, clamped as save-disk clamps its boot area.
fn first_start(t: &Table) -> u64 {
    t.partitions
        .iter()
        .map(|e| e.start_bytes())
        .min()
        .unwrap_or(SECTOR)
        .clamp(SECTOR, MAX_BOOT_AREA)
}

/// Writes the backup GPT (entries, then the header in the last sector) from the primary.
fn rebuild_backup(d: &mut SparseDisk, last: u64) -> Result<(), Error> {
    let mut hdr = d.get(SECTOR, SECTOR as usize);
    let hsize = le32(&hdr, 12) as usize;
    if !(92..=SECTOR as usize).contains(&hsize) {
        return Err(Error::Internal(format!("GPT header size {hsize}")));
    }
    let entries = d.get(2 * SECTOR, (GPT_ENTRY_SECTORS * SECTOR) as usize);
    let entries_at = last - GPT_ENTRY_SECTORS;
    hdr[24..32].copy_from_slice(&last.to_le_bytes());
    hdr[32..40].copy_from_slice(&1u64.to_le_bytes());
    hdr[72..80].copy_from_slice(&entries_at.to_le_bytes());
    hdr[16..20].fill(0);
    let crc = crc32fast::hash(&hdr[..hsize]);
    hdr[16..20].copy_from_slice(&crc.to_le_bytes());
    d.put(entries_at * SECTOR, &entries);
    d.put(last * SECTOR, &hdr);
    Ok(())
}

/// Partition starts and sizes from sfdisk's dump (`/dev/sda1 : start= 2048, size= ...`).
fn sf_partition_ends(dir: &Path, disk: &str) -> Result<BTreeMap<String, (u64, u64)>, Error> {
    let path = dir.join(format!("{disk}-pt.sf"));
    let mut out = BTreeMap::new();
    if !path.is_file() {
        return Ok(out);
    }
    for line in read_text(&path)?.lines() {
        let Some((dev, rest)) = line.split_once(" : ") else {
            continue;
        };
        let field = |k: &str| {
            rest.split(',')
                .filter_map(|f| f.trim().split_once('='))
                .find(|(key, _)| key.trim() == k)
                .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        };
        if let (Some(start), Some(size)) = (field("start"), field("size")) {
            let name = dev.trim().trim_start_matches("/dev/").to_string();
            out.insert(name, (start, size));
        }
    }
    Ok(out)
}

/// Notes where sfdisk's dump and the saved sectors disagree (the sectors are imported).
fn check_sf(
    t: &Table,
    sf: &BTreeMap<String, (u64, u64)>,
    dir: &Path,
    disk: &str,
    notes: &mut Vec<String>,
) {
    if sf.is_empty() {
        notes.push(format!(
            "{}: {disk}-pt.sf is missing; the table comes from the saved sectors alone",
            dir.display()
        ));
        return;
    }
    for (name, &(start, size)) in sf {
        let Some(n) = part_number(disk, name) else {
            continue;
        };
        match t.partitions.iter().find(|e| e.number == n) {
            Some(e) if e.start_lba == start && e.sectors == size => {}
            _ => notes.push(format!(
                "{disk}-pt.sf has {name} at sectors {start}+{size}, the saved table does not: the saved table is imported"
            )),
        }
    }
}

/// The image files of partition `part`: (base name, pieces), or `None`.
fn find_image(
    dir: &Path,
    part: &str,
    names: &[String],
) -> Result<Option<(String, Vec<PathBuf>)>, Error> {
    let prefix = format!("{part}.");
    let mut bases: Vec<String> = names
        .iter()
        .filter(|n| n.starts_with(&prefix) && (n.contains("-ptcl-img") || n.contains(".dd-img")))
        .map(|n| match n.rsplit_once('.') {
            Some((stem, s))
                if s.len() >= 2 && s.bytes().all(|b| b.is_ascii_lowercase()) && is_split(n) =>
            {
                stem.to_string()
            }
            _ => n.clone(),
        })
        .collect();
    bases.sort();
    bases.dedup();
    match bases.as_slice() {
        [] => Ok(None),
        [one] => {
            let pieces = input::pieces(&dir.join(one))?;
            Ok(Some((one.clone(), pieces)))
        }
        many => Err(refused(
            dir,
            format!("partition {part} has several images: {}", many.join(", ")),
        )),
    }
}

/// Whether a file name ends in a split piece suffix after a compression suffix or image name
/// (`x.ext4-ptcl-img.gz.ab`), as opposed to being a compression suffix itself.
fn is_split(name: &str) -> bool {
    let known = [
        "gz", "zst", "xz", "bz2", "lz4", "uncomp", "lzo", "lzma", "lzip",
    ];
    match name.rsplit_once('.') {
        Some((stem, s)) => {
            !known.contains(&s) && (stem.contains("-ptcl-img") || stem.contains(".dd-img"))
        }
        None => false,
    }
}

/// Reads a Clonezilla directory and says what an import would write, without writing.
///
/// # Errors
/// Not a Clonezilla savedisk directory, several disks, a table that cannot be read, a
/// partition image that cannot be opened or is not a partclone or raw image.
pub fn plan_dir(dir: &Path) -> Result<ClonezillaPlan, Error> {
    if !is_clonezilla_dir(dir) {
        return Err(refused(
            dir,
            "is not a Clonezilla image directory (no disk or parts file)",
        ));
    }
    let disk_file = dir.join("disk");
    if !disk_file.is_file() {
        return Err(refused(
            dir,
            "has no disk file: a Clonezilla saveparts image (partitions without their disk); import each partition image with `rimage import FILE OUT.rimg`",
        ));
    }
    let disks: Vec<String> = read_text(&disk_file)?
        .split_whitespace()
        .map(String::from)
        .collect();
    let disk = match disks.as_slice() {
        [one] => one.clone(),
        [] => return Err(refused(&disk_file, "names no disk")),
        many => {
            return Err(refused(
                &disk_file,
                format!(
                    "names {} disks ({}); rimage imports one disk per directory",
                    many.len(),
                    many.join(" ")
                ),
            ));
        }
    };
    if disk.contains('/') {
        return Err(refused(
            &disk_file,
            format!("names {disk:?}, not a disk name"),
        ));
    }
    let parts: Vec<String> = match dir.join("parts").is_file() {
        true => read_text(&dir.join("parts"))?
            .split_whitespace()
            .map(String::from)
            .collect(),
        false => Vec::new(),
    };
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| IoError::new(dir, "read directory", None, e))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    let mut notes = Vec::new();
    let (table, disk_bytes, boot) = read_saved_table(dir, &disk, &mut notes)?;
    let blkid: BTreeMap<String, BTreeMap<String, String>> = match dir.join("blkid.list").is_file() {
        true => read_text(&dir.join("blkid.list"))?
            .lines()
            .filter_map(|l| {
                let (dev, rest) = l.split_once(':')?;
                Some((
                    dev.trim().trim_start_matches("/dev/").to_string(),
                    key_values(rest),
                ))
            })
            .collect(),
        false => BTreeMap::new(),
    };
    let mut used = vec![false; names.len()];
    let mut mark = |name: &str| {
        if let Some(i) = names.iter().position(|n| n == name) {
            used[i] = true;
        }
    };
    for f in ["disk", "parts", "dev-fs.list", "blkid.list"] {
        mark(f);
    }
    for suffix in [
        "-pt.sf",
        "-gpt-1st",
        "-gpt-2nd",
        "-mbr",
        "-hidden-data-after-mbr",
        "-chs.sf",
        "-gpt.gdisk",
        "-gpt.sgdisk",
        "-pt.parted",
        "-pt.parted.compact",
    ] {
        mark(&format!("{disk}{suffix}"));
    }
    for f in KNOWN_INFO {
        mark(f);
    }

    let mut partitions = Vec::new();
    for e in table.partitions.iter().filter(|e| !e.is_extended()) {
        let name = parts
            .iter()
            .chain(blkid.keys())
            .find(|p| part_number(&disk, p) == Some(e.number))
            .cloned()
            .unwrap_or_else(|| format!("{disk}{}", e.number));
        let saved = parts.contains(&name);
        let swap_info = dir.join(format!("swappt-{name}.info"));
        let mut plan = PartPlan {
            number: e.number,
            name: name.clone(),
            action: Action::Skip,
            filesystem: blkid.get(&name).map_or_else(Identity::unknown, identity_of),
            pieces: Vec::new(),
            compression: None,
            partclone: None,
            image: None,
            bytes: e.size_bytes(),
        };
        if saved {
            let Some((base, pieces)) = find_image(dir, &name, &names)? else {
                return Err(refused(
                    dir,
                    format!(
                        "{name} is listed in parts but has no partclone or dd image (an older partimage or ntfsclone image is not supported)"
                    ),
                ));
            };
            for p in &pieces {
                if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
                    mark(n);
                }
            }
            let opened = input::open(&dir.join(&base))?;
            plan.compression = Some(opened.compression);
            let mut r = partclone::Counted::new(opened.reader);
            if !super::is_raw_name(Path::new(&base)) {
                plan.partclone =
                    Some(
                        partclone::read_desc(&mut r).map_err(|source| Error::Import {
                            path: dir.join(&base),
                            source,
                        })?,
                    );
            }
            plan.pieces = pieces;
            plan.action = Action::Image;
            plan.image = Some(format!("part{}.rimg", e.number));
        } else if swap_info.is_file() {
            mark(&format!("swappt-{name}.info"));
            let mut id = identity_of(&key_values(&read_text(&swap_info)?));
            id.kind = FsType::Swap;
            id.page_size = Some(4096);
            plan.filesystem = id;
            plan.action = Action::Swap;
            notes.push(format!(
                "partition {} ({name}): swap, re-created with its UUID and label and a 4096-byte page size (Clonezilla does not record the page size)",
                e.number
            ));
        } else {
            notes.push(format!(
                "partition {} ({name}): not saved by Clonezilla ({}); restore-disk leaves it as it is",
                e.number,
                match plan.filesystem.kind {
                    FsType::Raw => "no filesystem recorded".to_string(),
                    k => format!("it held {k}; was it mounted?"),
                }
            ));
        }
        partitions.push(plan);
    }
    for p in &parts {
        if !partitions.iter().any(|x| &x.name == p) {
            return Err(refused(
                dir,
                format!("parts lists {p}, which is not in the saved partition table"),
            ));
        }
    }
    for (i, n) in names.iter().enumerate() {
        if used[i] {
            continue;
        }
        if n.ends_with("-ebr") {
            notes.push(format!(
                "{n}: an extended partition's boot record, not imported"
            ));
        } else if n == "efi-nvram.dat" {
            notes.push(format!(
                "{n}: the EFI boot entries of the saved machine, not imported"
            ));
        } else if n.starts_with("lvm_") {
            return Err(refused(
                dir,
                format!("holds LVM volumes ({n}), which rimage does not import"),
            ));
        } else {
            notes.push(format!("{n}: not understood, not imported"));
        }
    }
    Ok(ClonezillaPlan {
        dir: dir.to_path_buf(),
        disk,
        table,
        disk_bytes,
        partitions,
        boot_area_bytes: boot.len() as u64,
        boot_area: boot,
        notes,
    })
}

/// Imports a Clonezilla savedisk directory into the save-disk directory `out`: the table,
/// the boot area, every partition image converted (checked on the way), swap and unsaved
/// partitions described, and the manifest. It is written in a temporary directory beside
/// `out` and renamed at the end: on failure nothing is left.
///
/// # Errors
/// As [`plan_dir`]; a partition image that fails its import (the error names it); `out`
/// already holding something (a saved disk is replaced with `overwrite`).
pub fn import_dir(
    dir: &Path,
    out: &Path,
    opts: &SaveOptions,
    progress: &dyn Progress,
) -> Result<ClonezillaReport, Error> {
    let plan = plan_dir(dir)?;
    let replace = match std::fs::read_dir(out).map(|mut d| d.next().is_none()) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(IoError::new(out, "read directory", None, e).into()),
        Ok(true) => true,
        Ok(_) if crate::disk::is_disk_dir(out) && opts.overwrite => true,
        Ok(_) if crate::disk::is_disk_dir(out) => {
            return Err(refused(
                out,
                "already holds a saved disk (manifest.toml); pass --overwrite to replace it",
            ));
        }
        Ok(_) => {
            return Err(refused(
                out,
                "is a directory that is neither empty nor a saved disk",
            ));
        }
    };
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".rimage-import-")
        .tempdir_in(parent)
        .map_err(|e| IoError::new(parent, "create a temporary directory in", None, e))?;
    let mut imports = Vec::new();
    let mut plans = Vec::new();
    for p in &plan.partitions {
        let mut filesystem = p.filesystem.clone();
        let mut image_bytes = None;
        if let Some(image) = &p.image {
            let input = p.pieces.first().cloned().unwrap_or_default();
            progress.note(&format!(
                "partition {} ({}): {} → {image}",
                p.number,
                p.name,
                input.display()
            ));
            let r = super::import_sized(
                &input,
                &tmp.path().join(image),
                opts,
                Some(p.bytes),
                progress,
            )?;
            filesystem = r.filesystem.clone();
            image_bytes = Some(r.save.header.source_size);
            imports.push((p.number, r));
        }
        plans.push(Plan {
            number: p.number,
            action: p.action,
            filesystem,
            image: p.image.clone(),
            image_bytes,
        });
    }
    crate::atomic::write_file(&tmp.path().join(BOOT_AREA), &plan.boot_area)?;
    let m = Manifest {
        format: manifest::FORMAT.into(),
        version: manifest::Version::V1,
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        writer: crate::WRITER.into(),
        source: format!("Clonezilla image {} (disk {})", dir.display(), plan.disk),
        disk_bytes: plan.disk_bytes,
        boot_area: Some(BOOT_AREA.into()),
        table: plan.table.clone(),
        partitions: plans,
    };
    let text = m
        .to_toml()
        .map_err(|e| Error::Internal(format!("the manifest cannot be written as TOML: {e}")))?;
    // The manifest must read back as restore-disk will read it.
    Manifest::parse(&text).map_err(|source| Error::Manifest {
        path: out.join(MANIFEST),
        source,
    })?;
    crate::atomic::write_file(&tmp.path().join(MANIFEST), text.as_bytes())?;
    let tmp = tmp.keep();
    if replace {
        let old = parent.join(format!(
            ".rimage-replaced-{}",
            out.file_name().and_then(|n| n.to_str()).unwrap_or("out")
        ));
        std::fs::rename(out, &old).map_err(|e| IoError::new(out, "rename", None, e))?;
        std::fs::rename(&tmp, out).map_err(|e| IoError::new(&tmp, "rename", None, e))?;
        std::fs::remove_dir_all(&old).map_err(|e| IoError::new(&old, "remove", None, e))?;
    } else {
        std::fs::rename(&tmp, out).map_err(|e| IoError::new(&tmp, "rename", None, e))?;
    }
    Ok(ClonezillaReport {
        plan,
        out: out.to_path_buf(),
        imports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_numbers() {
        assert_eq!(part_number("sda", "sda2"), Some(2));
        assert_eq!(part_number("nvme0n1", "nvme0n1p3"), Some(3));
        assert_eq!(part_number("loop0", "loop0p1"), Some(1));
        assert_eq!(part_number("sda", "sdb1"), None);
        assert_eq!(part_number("sda", "sda"), None);
    }

    #[test]
    fn blkid_pairs() {
        let kv = key_values(r#"/dev/sda3: UUID="c19b" LABEL="s w" TYPE="swap" PARTUUID="x""#);
        assert_eq!(kv["UUID"], "c19b");
        assert_eq!(kv["LABEL"], "s w");
        assert_eq!(identity_of(&kv).kind, FsType::Swap);
    }

    #[test]
    fn split_names() {
        assert!(is_split("sda1.ext4-ptcl-img.gz.aa"));
        assert!(!is_split("sda1.ext4-ptcl-img.gz"));
        assert!(is_split("sda1.ext4-ptcl-img.uncomp.ab"));
    }
}
