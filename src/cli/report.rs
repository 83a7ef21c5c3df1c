//! What the commands print: one-line summaries, listings, descriptions, JSON.

use std::io::{self, Write};
use std::path::Path;

use anyhow::Result;
use indicatif::HumanBytes;

use super::args::Output;
use rimage::FreeSpace;
use rimage::fs::FsType;

/// The summary of a save (to stderr when the image went to stdout).
pub fn save(report: &rimage::SaveReport, secs: f64, out: &Output, to_stderr: bool) -> Result<()> {
    if out.json {
        print_json(&report, to_stderr)?;
    } else if !out.quiet {
        let h = &report.header;
        let what = match h.source_type {
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
    Ok(())
}

/// The summary of a restore.
pub fn restore(report: &rimage::RestoreReport, secs: f64, out: &Output) -> Result<()> {
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
    Ok(())
}

/// The outcome of a verification: OK, or every problem (the first 50) and FAILED.
pub fn verify(report: &rimage::VerifyReport, out: &Output) -> Result<()> {
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
    Ok(())
}

/// A directory listing, like `ls -l`, or JSON.
pub fn listing(entries: &[rimage::browse::Entry], json: bool) -> Result<()> {
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &entries)?;
        writeln!(out)?;
    } else {
        for e in entries {
            let when =
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(e.mtime.max(0) as u64);
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
    Ok(())
}

/// What save-disk or restore-disk did.
pub fn disk(report: &rimage::disk::DiskReport, out: &Output, verb: &str) -> Result<()> {
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

/// `value` as pretty JSON on stdout (or stderr).
pub fn print_json<T: serde::Serialize>(value: &T, to_stderr: bool) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    print_line(&text, to_stderr)
}

/// One line on stdout (or stderr).
pub fn print_line(line: &str, to_stderr: bool) -> Result<()> {
    if to_stderr {
        writeln!(io::stderr().lock(), "{line}")?;
    } else {
        writeln!(io::stdout().lock(), "{line}")?;
    }
    Ok(())
}

/// What an image holds.
pub fn image_info(path: &Path, info: &rimage::ImageInfo, json: bool) -> Result<()> {
    if json {
        return print_json(info, false);
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
    Ok(())
}

/// What a save of a device would copy.
pub fn source_info(path: &Path, info: &rimage::SourceInfo, json: bool) -> Result<()> {
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, info)?;
        writeln!(out)?;
        return Ok(());
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
        return Ok(());
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
    Ok(())
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
