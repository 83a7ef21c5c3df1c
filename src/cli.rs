//! Command-line definitions (clap derive) and presentation: human text, `--json`.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use indicatif::HumanBytes;

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: the operation failed (I/O error, refused, corrupt source...).
pub const EXIT_FAILURE: u8 = 1;
/// Exit status: bad command line (clap uses 2 as well).
pub const EXIT_USAGE: u8 = 2;

/// rimage saves a partition by copying only the blocks its filesystem uses, into a chunked,
/// checksummed, zstd-compressed image, and restores it in parallel.
#[derive(Debug, Parser)]
#[command(name = "rimage", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Describe what a save would copy: filesystem type, label, UUID, block size, used blocks.
    ///
    /// Reads every block bitmap of an ext2/3/4 filesystem to count exactly the blocks a save
    /// copies. Anything that is not ext2/3/4 is reported as "raw": a save would copy every
    /// non-zero block.
    Info {
        /// Block device or filesystem image file, e.g. /dev/sda2.
        path: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
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
        Command::Info { path, json } => info(&path, json),
    }
}

fn info(path: &std::path::Path, json: bool) -> Result<ExitCode> {
    let info = rimage::inspect_source(path)?;
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &info)?;
        writeln!(out)?;
        return Ok(ExitCode::from(EXIT_OK));
    }
    let fs = &info.fs;
    let bs = u64::from(fs.block_size);
    writeln!(
        out,
        "{}: {} ({})",
        path.display(),
        describe_type(fs.fs_type),
        HumanBytes(info.device_bytes)
    )?;
    if fs.fs_type == rimage::fs::FsType::Raw {
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
        "  label        {}",
        if fs.label.is_empty() {
            "(none)"
        } else {
            &fs.label
        }
    )?;
    if let Some(u) = &fs.uuid {
        writeln!(out, "  uuid         {}", u)?;
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
    let st = &fs.state;
    let mut state = Vec::new();
    state.push(if st.clean {
        "clean"
    } else {
        "not clean (mounted, or not unmounted cleanly)"
    });
    if st.errors {
        state.push("has errors (run e2fsck -f)");
    }
    if st.needs_recovery {
        state.push("journal needs recovery (mounted, or crashed: unmount or run e2fsck)");
    }
    if st.orphans {
        state.push("orphan inodes pending");
    }
    writeln!(out, "  state        {}", state.join("; "))?;
    Ok(ExitCode::from(EXIT_OK))
}

fn describe_type(t: rimage::fs::FsType) -> &'static str {
    match t {
        rimage::fs::FsType::Raw => "unrecognised filesystem",
        t => t.name(),
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

/// The exit code for a failed command.
pub fn exit_code_for(_err: &anyhow::Error) -> ExitCode {
    ExitCode::from(EXIT_FAILURE)
}
