//! Command-line definitions (clap derive) and presentation: human text, `--json`, progress bars.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use rimage::fs::FsType;
use rimage::{
    Destination, ExpectUuid, FreeSpace, ImageSource, Progress, RestoreOptions, SaveOptions,
};

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: the operation failed (I/O error, refusal, corrupt source...).
pub const EXIT_FAILURE: u8 = 1;
/// Exit status: bad command line.
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the image failed verification (corrupt, truncated, digest mismatch).
pub const EXIT_CORRUPT: u8 = 3;

/// rimage saves a partition by copying only the blocks its filesystem uses, into a chunked,
/// checksummed, zstd-compressed image, and restores it in parallel.
#[derive(Debug, Parser)]
#[command(name = "rimage", version, about, long_about = None, propagate_version = true)]
#[command(
    after_help = "Exit status: 0 success, 1 failure, 2 usage error, 3 image failed verification."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Output {
    /// Print a JSON summary instead of text (to stderr when the image itself goes to stdout).
    #[arg(long)]
    json: bool,
    /// No progress, no summary and no notes; errors are still printed.
    #[arg(short, long)]
    quiet: bool,
    /// Progress on stderr: a bar when stderr is a terminal (auto), always a bar, JSON lines
    /// for supervising scripts (one object every half second), or none.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    progress: ProgressMode,
}

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ProgressMode {
    /// A bar when stderr is a terminal, nothing otherwise.
    Auto,
    /// A bar.
    Bar,
    /// JSON lines on stderr.
    Json,
    /// Nothing.
    None,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Save a partition or filesystem image file into a rimage image.
    ///
    /// ext2/3/4 filesystems are read through their block bitmaps and only used blocks are
    /// stored; anything else is imaged raw, every block except all-zero ones. The image is
    /// written under a temporary name in the destination directory, fsynced and renamed, so a
    /// failed or interrupted save never leaves a file under IMAGE.
    Save {
        /// Block device or filesystem image file to save, e.g. /dev/sda2.
        source: PathBuf,
        /// Image file to write, e.g. /cluster/images/root.rimg; "-" writes to stdout.
        image: PathBuf,
        /// zstd level: 1 is fastest, 3 the default, up to 22 for the smallest images.
        #[arg(short, long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=22))]
        level: i32,
        /// Compression threads (default: one per CPU).
        #[arg(short = 'j', long, default_value_t = 0)]
        threads: usize,
        /// Uncompressed size of each chunk (64K to 64M): larger compresses slightly better,
        /// smaller gives finer random access.
        #[arg(long, default_value = "4M", value_parser = parse_chunk_size)]
        chunk_size: u32,
        /// Save a filesystem that is not clean (mounted, errors, journal needing recovery) as it
        /// is, and tolerate metadata checksum errors. The image may be inconsistent.
        #[arg(long)]
        force: bool,
        /// Image every non-zero block even if the source is ext2/3/4.
        #[arg(long)]
        raw: bool,
        /// Replace IMAGE if it exists.
        #[arg(long)]
        overwrite: bool,
        #[command(flatten)]
        out: Output,
    },
    /// Restore an image onto a block device or file.
    ///
    /// The image header is checked and the target's size compared before anything is written.
    /// Each chunk is verified (CRC, extents, zstd checksum, index hash) before its blocks are
    /// written; a chunk that fails is never written and the command exits non-zero. A block
    /// device is opened exclusively: a mounted target is refused.
    Restore {
        /// Image file, or "-" to read the image from stdin.
        image: PathBuf,
        /// Block device or file to write, e.g. /dev/sda2. A missing file is created (sparse).
        target: PathBuf,
        /// Worker threads (default: one per CPU).
        #[arg(short = 'j', long, default_value_t = 0)]
        threads: usize,
        /// Make the filesystem's free blocks read as zeros (no stale data left in free space).
        #[arg(long, conflicts_with = "discard")]
        zero_free: bool,
        /// Discard (TRIM) the filesystem's free blocks; where the device cannot, zero them.
        #[arg(long)]
        discard: bool,
        /// Refuse, before writing anything, unless TARGET currently holds a filesystem with
        /// this UUID ("image": the image's own UUID). For scripted and multicast restores.
        #[arg(long, value_name = "UUID|image", value_parser = parse_expect_uuid)]
        expect_uuid: Option<ExpectUuid>,
        #[command(flatten)]
        out: Output,
    },
    /// Check an image completely: header, every chunk (CRC, decompression, extents), index
    /// and whole-image digest. Exit status 0 only when everything holds, 3 when it does not.
    Verify {
        /// Image file, or "-" to read it from stdin.
        image: PathBuf,
        /// Worker threads (default: one per CPU).
        #[arg(short = 'j', long, default_value_t = 0)]
        threads: usize,
        #[command(flatten)]
        out: Output,
    },
    /// Describe an image (header, chunks, sizes, ratio), or what a save of a device or
    /// filesystem image file would copy (type, label, UUID, block size, used blocks).
    ///
    /// For a device, every block bitmap of an ext2/3/4 filesystem is read to count exactly the
    /// blocks a save copies. Anything that is not ext2/3/4 is reported as "raw".
    Info {
        /// Image file, block device, or filesystem image file.
        path: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List a directory (or describe a file) inside an image, without restoring it.
    ///
    /// Only the chunks holding the filesystem metadata and the directory are read. Shows mode,
    /// owner, size, modification time and name, like `ls -l`.
    Ls {
        /// Image file.
        image: PathBuf,
        /// Absolute path inside the filesystem.
        #[arg(default_value = "/")]
        path: String,
        /// Print a JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write a file from inside an image to stdout, without restoring the image.
    Cat {
        /// Image file.
        image: PathBuf,
        /// Absolute path of a file inside the filesystem, e.g. /etc/fstab.
        path: String,
    },
    /// Copy a file or directory tree out of an image, keeping modes, times and (as root)
    /// owners. Existing files are never overwritten.
    Extract {
        /// Image file.
        image: PathBuf,
        /// Absolute path inside the filesystem, e.g. /etc.
        path: String,
        /// Where to put it (must not exist).
        dest: PathBuf,
    },
    /// Save a whole disk: its partition table, an image of every partition, and a manifest.
    ///
    /// ext2/3/4 partitions are imaged through their bitmaps, other filesystems raw. Swap is only
    /// described (UUID, label), never imaged. The directory gets manifest.toml (human-readable),
    /// boot-area.bin (the bytes before the first partition: boot code and boot loader area) and
    /// partN.rimg per imaged partition.
    SaveDisk {
        /// The disk, e.g. /dev/sda (or a disk image file).
        disk: PathBuf,
        /// Directory for the manifest and images, e.g. /cluster/images/node-golden.
        dir: PathBuf,
        /// Record partition N as "re-create empty with the same UUID and label" instead of
        /// imaging it (for a data partition a distributed filesystem refills). Repeatable.
        #[arg(long, value_name = "N")]
        reformat: Vec<u32>,
        /// Image only these partitions (the others are recorded but skipped). Repeatable.
        #[arg(long, value_name = "N")]
        only: Vec<u32>,
        /// Skip these partitions (recorded in the table, not restored). Repeatable.
        #[arg(long, value_name = "N")]
        skip: Vec<u32>,
        /// zstd level for the partition images.
        #[arg(short, long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=22))]
        level: i32,
        /// Compression threads (default: one per CPU).
        #[arg(short = 'j', long, default_value_t = 0)]
        threads: usize,
        /// Save partitions that are mounted read-write or not clean anyway.
        #[arg(long)]
        force: bool,
        /// Replace a disk already saved in DIR.
        #[arg(long)]
        overwrite: bool,
        #[command(flatten)]
        out: Output,
    },
    /// Restore a disk saved by save-disk onto a disk: partition table (kept if identical),
    /// every imaged partition, swap with its old UUID and label, empty filesystems re-created
    /// with their old UUIDs; then check every partition's identity.
    ///
    /// The disk must be a block device and nothing on it mounted. Everything that can be
    /// checked (manifest, images, sizes, mke2fs present) is checked before anything is written.
    /// The kernel is asked to re-read the table (BLKRRPART); where it cannot, partitions are
    /// added one by one (BLKPG).
    RestoreDisk {
        /// Directory written by save-disk.
        dir: PathBuf,
        /// The disk to write, e.g. /dev/sda.
        disk: PathBuf,
        /// Run this shell command with the restored root filesystem mounted (and the restored
        /// partitions its /etc/fstab mounts under it, like /boot), then unmount. The command
        /// sees RIMAGE_ROOT (the mount point), RIMAGE_DISK, RIMAGE_ROOT_DEVICE and
        /// RIMAGE_PART_<N>. Example: 'arch-chroot "$RIMAGE_ROOT" mkinitcpio -p linux'.
        #[arg(long, value_name = "CMD")]
        post_restore: Option<String>,
        /// The root partition for --post-restore (default: the one with /etc/fstab).
        #[arg(long, value_name = "N")]
        root: Option<u32>,
        /// Worker threads (default: one per CPU).
        #[arg(short = 'j', long, default_value_t = 0)]
        threads: usize,
        /// Make free blocks of restored filesystems read as zeros.
        #[arg(long)]
        zero_free: bool,
        #[command(flatten)]
        out: Output,
    },
    /// Print a shell completion script, e.g. `rimage completions bash > /etc/bash_completion.d/rimage`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `rimage man | man -l -`.
    Man,
}

fn parse_expect_uuid(s: &str) -> Result<ExpectUuid, String> {
    if s == "image" {
        Ok(ExpectUuid::Image)
    } else {
        s.parse().map(ExpectUuid::Uuid)
    }
}

fn parse_chunk_size(s: &str) -> Result<u32, String> {
    let n = parse_size::Config::new()
        .with_binary()
        .parse_size(s)
        .map_err(|e| e.to_string())?;
    u32::try_from(n)
        .ok()
        .filter(|n| (64 << 10..=64 << 20).contains(n))
        .ok_or_else(|| format!("{s} is not between 64K and 64M"))
}

/// Runs the command line; `Ok` carries the exit code of a completed command.
pub fn try_main() -> Result<ExitCode> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return Ok(ExitCode::from(code));
        }
    };
    match cli.command {
        Command::Save {
            source,
            image,
            level,
            threads,
            chunk_size,
            force,
            raw,
            overwrite,
            out,
        } => {
            let dest = if image.as_os_str() == "-" {
                Destination::Stdout
            } else {
                Destination::File(image)
            };
            let opts = SaveOptions {
                level,
                threads,
                chunk_size,
                force,
                raw,
                overwrite,
            };
            let bar = Bar::new(&out);
            let started = Instant::now();
            let report = rimage::save(&source, &dest, &opts, &bar)?;
            let secs = started.elapsed().as_secs_f64();
            let to_stderr = matches!(dest, Destination::Stdout);
            if out.json {
                print_json(&report, to_stderr)?;
            } else if !out.quiet {
                let h = &report.header;
                let what = match h.source_type.fs_type() {
                    FsType::Raw => "raw".to_string(),
                    t if h.label.is_empty() => t.name().to_string(),
                    t => format!("{} \"{}\"", t.name(), h.label),
                };
                let line = format!(
                    "saved {} ({what}, {} stored{} of {}) to {}: {} in {} chunks (ratio {:.2}), {:.1} s, {}/s",
                    report.source.display(),
                    HumanBytes(report.stored_bytes),
                    if report.zero_blocks > 0 {
                        format!(
                            " + {} of unused inode tables as zeros",
                            HumanBytes(report.zero_blocks * u64::from(h.block_size))
                        )
                    } else {
                        String::new()
                    },
                    HumanBytes(h.source_size),
                    report.image,
                    HumanBytes(report.image_bytes),
                    report.chunks,
                    report.stored_bytes as f64 / report.image_bytes.max(1) as f64,
                    secs,
                    HumanBytes((report.read_bytes as f64 / secs.max(1e-9)) as u64),
                );
                print_line(&line, to_stderr)?;
            }
            Ok(ExitCode::from(EXIT_OK))
        }
        Command::Restore {
            image,
            target,
            threads,
            zero_free,
            discard,
            expect_uuid,
            out,
        } => {
            let source = image_source(image);
            let free_space = if zero_free {
                FreeSpace::Zero
            } else if discard {
                FreeSpace::Discard
            } else {
                FreeSpace::Leave
            };
            let bar = Bar::new(&out);
            let started = Instant::now();
            let report = rimage::restore(
                &source,
                &target,
                &RestoreOptions {
                    threads,
                    free_space,
                    expect_uuid,
                },
                &bar,
            )?;
            let secs = started.elapsed().as_secs_f64();
            if out.json {
                print_json(&report, false)?;
            } else if !out.quiet {
                let mut line = format!(
                    "restored {} onto {}: {} in {} chunks, {:.1} s, {}/s",
                    report.image.display(),
                    report.target.display(),
                    HumanBytes(report.bytes_written),
                    report.chunks,
                    secs,
                    HumanBytes((report.bytes_written as f64 / secs.max(1e-9)) as u64)
                );
                if report.bytes_cleared > 0 {
                    let how = if report.free_space == FreeSpace::Discard {
                        "discarded"
                    } else {
                        "zeroed"
                    };
                    line.push_str(&format!(
                        "; {} of unstored blocks {how}",
                        HumanBytes(report.bytes_cleared)
                    ));
                }
                print_line(&line, false)?;
            }
            Ok(ExitCode::from(EXIT_OK))
        }
        Command::Verify {
            image,
            threads,
            out,
        } => {
            let source = image_source(image);
            let bar = Bar::new(&out);
            let report = rimage::verify(&source, threads, &bar)?;
            if out.json {
                print_json(&report, false)?;
            } else {
                let mut stdout = io::stdout().lock();
                if report.ok {
                    if !out.quiet {
                        writeln!(
                            stdout,
                            "{}: OK ({} chunks, {} blocks, digest verified)",
                            report.image.display(),
                            report.chunks,
                            report.stored_blocks
                        )?;
                    }
                } else {
                    for p in report.problems.iter().take(50) {
                        writeln!(stdout, "{}: {p}", report.image.display())?;
                    }
                    if report.problems.len() > 50 {
                        writeln!(
                            stdout,
                            "... and {} more problems",
                            report.problems.len() - 50
                        )?;
                    }
                    writeln!(
                        stdout,
                        "{}: FAILED verification ({} problems)",
                        report.image.display(),
                        report.problems.len()
                    )?;
                }
            }
            Ok(ExitCode::from(if report.ok {
                EXIT_OK
            } else {
                EXIT_CORRUPT
            }))
        }
        Command::Ls { image, path, json } => {
            let browser = rimage::Browser::open(&image)?;
            let entries = browser.list(&path)?;
            let mut out = io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &entries)?;
                writeln!(out)?;
            } else {
                for e in &entries {
                    let when = std::time::UNIX_EPOCH
                        + std::time::Duration::from_secs(e.mtime.max(0) as u64);
                    let link = e
                        .target
                        .as_ref()
                        .map(|t| format!(" -> {t}"))
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "{} {:>6} {:>6} {:>12} {} {}{link}",
                        mode_string(e.kind, e.mode),
                        e.uid,
                        e.gid,
                        e.size,
                        humantime::format_rfc3339_seconds(when),
                        e.name
                    )?;
                }
            }
            Ok(ExitCode::from(EXIT_OK))
        }
        Command::Cat { image, path } => {
            let browser = rimage::Browser::open(&image)?;
            let mut out = io::stdout().lock();
            browser.cat(&path, &mut out)?;
            out.flush()?;
            Ok(ExitCode::from(EXIT_OK))
        }
        Command::Extract { image, path, dest } => {
            let browser = rimage::Browser::open(&image)?;
            let n = browser.extract(&path, &dest)?;
            eprintln!(
                "extracted {n} entries from {}:{path} to {}",
                image.display(),
                dest.display()
            );
            Ok(ExitCode::from(EXIT_OK))
        }
        Command::SaveDisk {
            disk,
            dir,
            reformat,
            only,
            skip,
            level,
            threads,
            force,
            overwrite,
            out,
        } => {
            let save = SaveOptions {
                level,
                threads,
                force,
                overwrite,
                ..SaveOptions::default()
            };
            let opts = rimage::disk::SaveDiskOptions {
                save,
                reformat,
                only,
                skip,
            };
            let bar = Bar::new(&out);
            let report = rimage::disk::save_disk(&disk, &dir, &opts, &bar)?;
            print_disk_report(&report, &out, "saved")?;
            Ok(ExitCode::from(EXIT_OK))
        }
        Command::RestoreDisk {
            dir,
            disk,
            post_restore,
            root,
            threads,
            zero_free,
            out,
        } => {
            let free_space = if zero_free {
                FreeSpace::Zero
            } else {
                FreeSpace::Leave
            };
            let restore = RestoreOptions {
                threads,
                free_space,
                expect_uuid: None,
            };
            let opts = rimage::disk::RestoreDiskOptions {
                restore,
                post_restore,
                root,
            };
            let bar = Bar::new(&out);
            let report = rimage::disk::restore_disk(&dir, &disk, &opts, &bar)?;
            print_disk_report(&report, &out, "restored")?;
            Ok(ExitCode::from(EXIT_OK))
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "rimage",
                &mut io::stdout(),
            );
            Ok(ExitCode::from(EXIT_OK))
        }
        Command::Man => {
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut io::stdout())?;
            Ok(ExitCode::from(EXIT_OK))
        }
        Command::Info { path, json } => {
            if rimage::is_image(&path) {
                image_info(&path, json)
            } else {
                source_info(&path, json)
            }
        }
    }
}

fn print_disk_report(report: &rimage::disk::DiskReport, out: &Output, verb: &str) -> Result<()> {
    if out.json {
        return print_json(report, false);
    }
    if out.quiet {
        return Ok(());
    }
    let mut o = io::stdout().lock();
    writeln!(
        o,
        "{verb} {} ({} table); manifest {}",
        report.disk.display(),
        report.table,
        report.manifest.display()
    )?;
    if let Some(t) = &report.table_action {
        writeln!(o, "  table: {t}")?;
    }
    for p in &report.partitions {
        let fs = &p.filesystem;
        let id = [
            fs.label.as_ref().map(|l| format!("\"{l}\"")),
            fs.uuid.as_ref().map(|u| format!("UUID {u}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
        let action = match p.action {
            rimage::disk::manifest::Action::Image => {
                format!("imaged ({})", p.image.as_deref().unwrap_or(""))
            }
            rimage::disk::manifest::Action::Swap => "swap header".to_string(),
            rimage::disk::manifest::Action::Reformat => "re-created empty".to_string(),
            rimage::disk::manifest::Action::Skip => "skipped".to_string(),
        };
        let dev = p
            .device
            .as_ref()
            .map(|d| format!(" on {}", d.display()))
            .unwrap_or_default();
        writeln!(
            o,
            "  partition {}: {} {id}: {action}{dev}",
            p.number,
            fs.kind.name()
        )?;
    }
    if let Some(pr) = &report.post_restore {
        writeln!(o, "  post-restore: {pr}")?;
    }
    Ok(())
}

fn image_source(p: PathBuf) -> ImageSource {
    if p.as_os_str() == "-" {
        ImageSource::Stdin
    } else {
        ImageSource::File(p)
    }
}

fn print_json<T: serde::Serialize>(value: &T, to_stderr: bool) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    print_line(&text, to_stderr)
}

fn print_line(line: &str, to_stderr: bool) -> Result<()> {
    if to_stderr {
        writeln!(io::stderr().lock(), "{line}")?;
    } else {
        writeln!(io::stdout().lock(), "{line}")?;
    }
    Ok(())
}

fn image_info(path: &Path, json: bool) -> Result<ExitCode> {
    let info = rimage::inspect_image(path)?;
    if json {
        print_json(&info, false)?;
        return Ok(ExitCode::from(EXIT_OK));
    }
    let h = &info.header;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "{}: rimage image, format version 1, written by {}",
        path.display(),
        h.writer
    )?;
    writeln!(
        out,
        "  source       {} ({} blocks of {} bytes, {})",
        h.source_type.name(),
        h.total_blocks,
        h.block_size,
        HumanBytes(h.source_size)
    )?;
    writeln!(
        out,
        "  label        {}",
        if h.label.is_empty() {
            "(none)"
        } else {
            &h.label
        }
    )?;
    if h.uuid.0 != [0; 16] {
        writeln!(out, "  uuid         {}", h.uuid)?;
    }
    writeln!(
        out,
        "  stored       {} blocks ({})",
        info.stored_blocks,
        HumanBytes(info.original_bytes)
    )?;
    if info.zero_blocks > 0 {
        writeln!(
            out,
            "  zero blocks  {} (used but never written to: restored as zeros, not stored)",
            info.zero_blocks
        )?;
    }
    writeln!(
        out,
        "  image        {} in {} chunks of up to {} (zstd level {})",
        HumanBytes(info.image_bytes),
        info.chunks,
        HumanBytes(u64::from(h.chunk_target)),
        h.level
    )?;
    writeln!(out, "  ratio        {:.2}", info.ratio)?;
    let created = std::time::UNIX_EPOCH + std::time::Duration::from_secs(h.created.max(0) as u64);
    writeln!(
        out,
        "  created      {}",
        humantime::format_rfc3339_seconds(created)
    )?;
    if h.flags & rimage::image::header::FLAG_FORCED_UNCLEAN != 0 {
        writeln!(
            out,
            "  warning      the source was not clean when saved (--force)"
        )?;
    }
    writeln!(out, "  digest       {}", info.digest)?;
    Ok(ExitCode::from(EXIT_OK))
}

fn source_info(path: &Path, json: bool) -> Result<ExitCode> {
    let info = rimage::inspect_source(path)?;
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &info)?;
        writeln!(out)?;
        return Ok(ExitCode::from(EXIT_OK));
    }
    let fs = &info.fs;
    let bs = u64::from(fs.block_size);
    if fs.fs_type == FsType::Raw {
        writeln!(
            out,
            "{}: unrecognised filesystem ({})",
            path.display(),
            HumanBytes(info.device_bytes)
        )?;
        writeln!(
            out,
            "  not an ext2/3/4 filesystem: a save images it raw, every non-zero {bs}-byte block"
        )?;
        writeln!(
            out,
            "  blocks       {} ({})",
            fs.total_blocks,
            HumanBytes(info.device_bytes)
        )?;
        return Ok(ExitCode::from(EXIT_OK));
    }
    writeln!(
        out,
        "{}: {} ({})",
        path.display(),
        fs.fs_type.name(),
        HumanBytes(info.device_bytes)
    )?;
    writeln!(
        out,
        "  label        {}",
        if fs.label.is_empty() {
            "(none)"
        } else {
            &fs.label
        }
    )?;
    if let Some(u) = &fs.uuid {
        writeln!(out, "  uuid         {u}")?;
    }
    writeln!(out, "  block size   {bs}")?;
    writeln!(
        out,
        "  blocks       {} ({})",
        fs.total_blocks,
        HumanBytes(fs.total_blocks * bs)
    )?;
    let pct = if fs.total_blocks == 0 {
        0.0
    } else {
        100.0 * fs.used_blocks as f64 / fs.total_blocks as f64
    };
    writeln!(
        out,
        "  used blocks  {} ({}, {pct:.1}%): what a save copies",
        fs.used_blocks,
        HumanBytes(fs.used_blocks * bs)
    )?;
    if let Some(sb_used) = info.superblock_used_blocks.filter(|&u| u != fs.used_blocks) {
        writeln!(
            out,
            "               (the superblock's free count says {sb_used}; it lags while mounted)"
        )?;
    }
    let problems = fs.state.problems();
    let state = if problems.is_empty() {
        "clean".to_string()
    } else {
        format!(
            "not clean: the filesystem {} (unmount it; run e2fsck -f)",
            problems.join(", ")
        )
    };
    writeln!(out, "  state        {state}")?;
    Ok(ExitCode::from(EXIT_OK))
}

/// `ls -l`-style mode string.
fn mode_string(kind: &str, mode: u16) -> String {
    let t = match kind {
        "dir" => 'd',
        "symlink" => 'l',
        "block-device" => 'b',
        "char-device" => 'c',
        "fifo" => 'p',
        "socket" => 's',
        _ => '-',
    };
    let mut s = String::from(t);
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        s.push(if mode & (0o400 >> i) != 0 { c } else { '-' });
    }
    s
}

/// Progress on stderr: a bar (bytes done and total, rate, ETA) or JSON lines.
struct Bar {
    quiet: bool,
    mode: ProgressMode,
    bar: Mutex<Option<ProgressBar>>,
    json: Mutex<JsonState>,
}

/// Where a JSON-lines progress report stands.
struct JsonState {
    phase: String,
    total: u64,
    done: u64,
    started: Instant,
    last: Option<Instant>,
}

impl JsonState {
    fn new(phase: &str, total: u64) -> Self {
        Self {
            phase: phase.to_string(),
            total,
            done: 0,
            started: Instant::now(),
            last: None,
        }
    }
}

impl Bar {
    fn new(out: &Output) -> Self {
        let mode = if out.quiet {
            ProgressMode::None
        } else {
            out.progress
        };
        let json = Mutex::new(JsonState::new("", 0));
        Self {
            quiet: out.quiet,
            mode,
            bar: Mutex::new(None),
            json,
        }
    }

    fn emit_json(&self, st: &JsonState, event: &str) {
        let secs = st.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            st.done as f64 / secs
        } else {
            0.0
        };
        let eta = (rate > 0.0 && st.total >= st.done).then(|| (st.total - st.done) as f64 / rate);
        let line = serde_json::json!({
            "event": event, "phase": st.phase, "done_bytes": st.done, "total_bytes": st.total,
            "elapsed_secs": secs, "bytes_per_sec": rate, "eta_secs": eta,
        });
        eprintln!("{line}");
    }
}

impl Progress for Bar {
    fn start(&self, phase: &str, total_bytes: u64) {
        if self.mode == ProgressMode::Json {
            let st = JsonState::new(phase, total_bytes);
            self.emit_json(&st, "start");
            *self.json.lock().expect("progress lock") = st;
            return;
        }
        let show = match self.mode {
            ProgressMode::Auto => io::stderr().is_terminal(),
            ProgressMode::Bar => true,
            ProgressMode::Json | ProgressMode::None => false,
        };
        if !show || total_bytes == 0 {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>10} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(phase.to_string());
        *self.bar.lock().expect("bar lock") = Some(bar);
    }

    fn advance(&self, bytes: u64) {
        if self.mode == ProgressMode::Json {
            let mut st = self.json.lock().expect("progress lock");
            st.done += bytes;
            if st.last.is_none_or(|t| t.elapsed().as_millis() >= 500) {
                st.last = Some(Instant::now());
                self.emit_json(&st, "progress");
            }
            return;
        }
        if let Some(bar) = self.bar.lock().expect("bar lock").as_ref() {
            bar.inc(bytes);
        }
    }

    fn finish(&self) {
        if self.mode == ProgressMode::Json {
            let st = self.json.lock().expect("progress lock");
            if !st.phase.is_empty() {
                self.emit_json(&st, "finish");
            }
            return;
        }
        if let Some(bar) = self.bar.lock().expect("bar lock").take() {
            bar.finish_and_clear();
        }
    }

    fn note(&self, message: &str) {
        if self.quiet {
            return;
        }
        match self.bar.lock().expect("bar lock").as_ref() {
            Some(bar) => bar.println(format!("rimage: note: {message}")),
            None => eprintln!("rimage: note: {message}"),
        }
    }
}

/// Whether the error chain contains a broken pipe (stdout closed by its reader).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        let kind = e
            .downcast_ref::<io::Error>()
            .map(io::Error::kind)
            .or_else(|| {
                e.downcast_ref::<serde_json::Error>()
                    .and_then(serde_json::Error::io_error_kind)
            });
        kind == Some(io::ErrorKind::BrokenPipe)
    })
}

/// The exit code for a failed command: 3 when an image failed its checks, 2 for bad options.
pub fn exit_code_for(err: &anyhow::Error) -> ExitCode {
    match err.downcast_ref::<rimage::Error>() {
        Some(e) if e.is_corrupt_image() => ExitCode::from(EXIT_CORRUPT),
        Some(rimage::Error::Usage(_)) => ExitCode::from(EXIT_USAGE),
        _ => ExitCode::from(EXIT_FAILURE),
    }
}
