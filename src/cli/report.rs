//! What the commands print: one-line summaries, listings, descriptions, JSON.

use std::io::{self, Write};
use std::path::Path;

use anyhow::Result;
use indicatif::HumanBytes;

use super::args::Output;
use rimage::fs::FsType;
use rimage::{FreeSpace, plural};

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
            "saved {} ({what}, {} stored{} of {}) to {}: {} in {} (ratio {:.2}), {:.1} s, {}/s",
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
            plural(report.chunks, "chunk"),
            report.stored_bytes as f64 / report.image_bytes.max(1) as f64,
            secs,
            HumanBytes((report.read_bytes as f64 / secs.max(1e-9)) as u64),
        );
        print_line(&line, to_stderr)?;
        for n in &report.notes {
            print_line(&format!("  note: {n}"), to_stderr)?;
        }
    }
    Ok(())
}

/// The summary of an import.
pub fn import(report: &rimage::import::ImportReport, secs: f64, out: &Output) -> Result<()> {
    if out.json {
        return print_json(&report, false);
    }
    if out.quiet {
        return Ok(());
    }
    let what = match &report.found {
        rimage::import::Found::Partclone { desc, .. } => format!(
            "partclone {} image of {} ({:?} checksums{})",
            match desc.version {
                rimage::import::partclone::Version::V1 => "0001",
                rimage::import::partclone::Version::V2 => "0002",
            },
            desc.fs,
            desc.checksum,
            if desc.blocks_per_checksum > 1 {
                format!(" every {} blocks", desc.blocks_per_checksum)
            } else {
                String::new()
            }
        ),
        rimage::import::Found::Raw { bytes } => format!("raw image of {}", HumanBytes(*bytes)),
    };
    println!(
        "read {} ({what}, {}{}){}",
        report.input.display(),
        format!("{:?}", report.compression).to_lowercase(),
        if report.pieces.len() > 1 {
            format!(", {} split pieces", report.pieces.len())
        } else {
            String::new()
        },
        match &report.found {
            rimage::import::Found::Partclone { desc, .. }
                if desc.checksum != rimage::import::partclone::Checksum::None =>
            {
                ", every checksum matches"
            }
            _ => "",
        }
    );
    save(&report.save, secs, out, false)
}

/// What importing a Clonezilla directory would write (`rimage info CLONEZILLA_DIR`).
pub fn clonezilla_plan(
    plan: &rimage::import::clonezilla::ClonezillaPlan,
    json: bool,
) -> Result<()> {
    if json {
        return print_json(plan, false);
    }
    println!(
        "{}: Clonezilla image of disk {} ({}, {}); `rimage import` would write:",
        plan.dir.display(),
        plan.disk,
        rimage::disk::describe_table(&plan.table),
        HumanBytes(plan.disk_bytes),
    );
    println!(
        "  boot-area.bin ({} before the first partition)",
        HumanBytes(plan.boot_area_bytes)
    );
    for p in &plan.partitions {
        let what = match (&p.image, &p.partclone) {
            (Some(img), Some(d)) => format!(
                "{img} from partclone {} image of {} ({}, {} of {} blocks of {} B used, {:?} checksums)",
                plan_file(p),
                d.fs,
                compression_name(p.compression),
                d.used_blocks,
                d.total_blocks,
                d.block_size,
                d.checksum
            ),
            (Some(img), None) => format!(
                "{img} from raw image {} ({})",
                plan_file(p),
                compression_name(p.compression)
            ),
            _ => format!("{:?}", p.action).to_lowercase(),
        };
        println!(
            "  partition {} ({}, {}, {}): {what}",
            p.number,
            p.name,
            HumanBytes(p.bytes),
            p.filesystem
        );
    }
    for n in &plan.notes {
        println!("  note: {n}");
    }
    Ok(())
}

fn plan_file(p: &rimage::import::clonezilla::PartPlan) -> String {
    let first = p
        .pieces
        .first()
        .and_then(|f| f.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if p.pieces.len() > 1 {
        format!("{first} (+{} pieces)", p.pieces.len() - 1)
    } else {
        first
    }
}

fn compression_name(c: Option<rimage::import::input::Compression>) -> String {
    c.map_or_else(|| "?".into(), |c| format!("{c:?}").to_lowercase())
}

/// The summary of a Clonezilla directory's import.
pub fn clonezilla_import(
    report: &rimage::import::clonezilla::ClonezillaReport,
    secs: f64,
    out: &Output,
) -> Result<()> {
    if out.json {
        return print_json(report, false);
    }
    if out.quiet {
        return Ok(());
    }
    println!(
        "imported Clonezilla image {} (disk {}) into {} in {secs:.1} s:",
        report.plan.dir.display(),
        report.plan.disk,
        report.out.display()
    );
    for p in &report.plan.partitions {
        match report.imports.iter().find(|(n, _)| *n == p.number) {
            Some((_, r)) => println!(
                "  partition {}: {} → {} ({}, {} stored, image {})",
                p.number,
                plan_file(p),
                p.image.as_deref().unwrap_or_default(),
                r.filesystem,
                HumanBytes(r.save.stored_bytes),
                HumanBytes(r.save.image_bytes)
            ),
            None => println!(
                "  partition {}: {} ({})",
                p.number,
                format!("{:?}", p.action).to_lowercase(),
                p.filesystem
            ),
        }
        if let Some((_, r)) = report.imports.iter().find(|(n, _)| *n == p.number) {
            for n in &r.save.notes {
                println!("    note: {n}");
            }
        }
    }
    for n in &report.plan.notes {
        println!("  note: {n}");
    }
    Ok(())
}

/// The summary of a restore.
pub fn restore(report: &rimage::RestoreReport, secs: f64, out: &Output) -> Result<()> {
    if out.json {
        print_json(&report, false)?;
    } else if !out.quiet {
        let mut line = format!(
            "restored {} onto {}: {} in {}, {:.1} s, {}/s",
            report.image.display(),
            report.target.display(),
            HumanBytes(report.bytes_written),
            plural(report.chunks_written, "chunk"),
            secs,
            HumanBytes((report.bytes_written as f64 / secs.max(1e-9)) as u64)
        );
        if report.delta {
            line.push_str(&format!(
                "; delta: {} ({}) already on the target, skipped; {} of the image read",
                plural(report.chunks_skipped, "chunk"),
                HumanBytes(report.bytes_skipped),
                HumanBytes(report.image_bytes_read)
            ));
        }
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
                    "{}: OK ({}, {}, digest verified)",
                    report.image.display(),
                    plural(report.chunks, "chunk"),
                    plural(report.stored_blocks, "block")
                )?;
            }
        } else {
            for p in report.problems.iter().take(50) {
                writeln!(stdout, "{}: {p}", report.image.display())?;
            }
            if report.problems.len() > 50 {
                writeln!(
                    stdout,
                    "... and {} more",
                    plural(report.problems.len() as u64 - 50, "problem")
                )?;
            }
            writeln!(
                stdout,
                "{}: FAILED verification ({})",
                report.image.display(),
                plural(report.problems.len() as u64, "problem")
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
pub fn disk(
    report: &rimage::disk::DiskReport,
    out: &Output,
    verb: &str,
    to_stderr: bool,
) -> Result<()> {
    if out.json {
        return print_json(report, to_stderr);
    }
    if out.quiet {
        return Ok(());
    }
    let mut o: Box<dyn Write> = if to_stderr {
        Box::new(io::stderr().lock())
    } else {
        Box::new(io::stdout().lock())
    };
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
        "{}: rimage image, format version {}, written by {}",
        path.display(),
        h.version.number(),
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
        writeln!(
            out,
            "  {:<12} {}",
            h.source_type.id_name(),
            h.source_type.id_text(&h.uuid)
        )?;
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
        "  image        {} in {} of up to {} (zstd level {})",
        HumanBytes(info.image_bytes),
        plural(info.chunks, "chunk"),
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
            "  no filesystem rimage scans (ext2/3/4, XFS, FAT): a save images it raw, every non-zero {bs}-byte block"
        )?;
        writeln!(
            out,
            "  blocks       {} ({})",
            fs.total_blocks,
            HumanBytes(info.device_bytes)
        )?;
        for n in &info.notes {
            writeln!(out, "  note         {n}")?;
        }
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
    if let Some(u) = fs.id_text() {
        writeln!(out, "  {:<12} {u}", fs.fs_type.id_name())?;
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
            "               (the filesystem's own free counts say {sb_used}; they lag while mounted)"
        )?;
    }
    let problems = fs.state.problems();
    let state = if problems.is_empty() {
        "clean".to_string()
    } else {
        let repair = fs
            .fs_type
            .repair_command(path)
            .map_or_else(String::new, |c| format!("; run {c}"));
        format!(
            "not clean: the filesystem {} (unmount it{repair})",
            problems.join(", ")
        )
    };
    writeln!(out, "  state        {state}")?;
    for n in &info.notes {
        writeln!(out, "  note         {n}")?;
    }
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

/// The drift check: identical, or the differing block ranges and the files they belong to.
pub fn drift(report: &rimage::drift::DriftReport, out: &Output) -> Result<()> {
    if out.json {
        return print_json(report, false);
    }
    let mut stdout = io::stdout().lock();
    let (img, dev) = (report.image.display(), report.device.display());
    if report.identical {
        if !out.quiet {
            writeln!(
                stdout,
                "{dev}: identical to {img} ({} compared)",
                plural(report.chunks, "chunk")
            )?;
        }
        return Ok(());
    }
    let bs = u64::from(report.block_size);
    writeln!(
        stdout,
        "{dev}: differs from {img} in {} ({}) in {} of {}",
        plural(report.blocks_differing, "block"),
        HumanBytes(report.blocks_differing * bs),
        plural(report.chunks_differing, "chunk"),
        report.chunks
    )?;
    for (a, b) in &report.ranges {
        writeln!(stdout, "  blocks {a}..{b}")?;
    }
    if !report.files.is_empty() {
        writeln!(stdout, "  in:")?;
        for f in &report.files {
            writeln!(stdout, "    {f}")?;
        }
    }
    if let Some(n) = &report.files_note {
        writeln!(stdout, "  ({n})")?;
    }
    Ok(())
}

/// The outcome of checking a saved disk: each image's verdict, then OK or FAILED.
pub fn verify_dir(report: &rimage::disk::DiskVerifyReport, out: &Output) -> Result<()> {
    if out.json {
        return print_json(report, false);
    }
    let mut stdout = io::stdout().lock();
    let dir = report.dir.display();
    for p in &report.problems {
        writeln!(stdout, "{dir}: {p}")?;
    }
    for (number, r) in &report.images {
        if r.ok {
            if !out.quiet {
                writeln!(
                    stdout,
                    "{dir}: partition {number}: {} OK ({}, {})",
                    r.image.display(),
                    plural(r.chunks, "chunk"),
                    plural(r.stored_blocks, "block")
                )?;
            }
            continue;
        }
        for p in r.problems.iter().take(20) {
            writeln!(
                stdout,
                "{dir}: partition {number}: {}: {p}",
                r.image.display()
            )?;
        }
    }
    let failed = report.problems.len() + report.images.iter().filter(|(_, r)| !r.ok).count();
    if report.ok {
        if !out.quiet {
            writeln!(
                stdout,
                "{dir}: OK: the saved disk is restorable ({} checked)",
                plural(report.images.len() as u64, "image")
            )?;
        }
    } else {
        writeln!(
            stdout,
            "{dir}: FAILED verification ({} with problems)",
            plural(failed as u64, "part")
        )?;
    }
    Ok(())
}

/// A saved disk: its table, and what restore-disk does with each partition.
pub fn disk_info(info: &rimage::disk::DiskInfo, json: bool) -> Result<()> {
    if json {
        return print_json(info, false);
    }
    let m = &info.manifest;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "{}: disk saved by {} on {} from {} ({}, {})",
        info.dir.display(),
        m.writer,
        m.created,
        m.source,
        HumanBytes(m.disk_bytes),
        rimage::disk::describe_table(&m.table)
    )?;
    for p in &info.partitions {
        let fs = &p.plan.filesystem;
        let action = match (&p.plan.action, &p.image) {
            (rimage::disk::manifest::Action::Image, Some(i)) => format!(
                "image {} ({} stored in {}, {})",
                p.plan.image.as_deref().unwrap_or_default(),
                HumanBytes(i.original_bytes),
                HumanBytes(i.image_bytes),
                plural(i.chunks, "chunk")
            ),
            (rimage::disk::manifest::Action::Image, None) => format!(
                "image {} (unreadable)",
                p.plan.image.as_deref().unwrap_or_default()
            ),
            (rimage::disk::manifest::Action::Swap, _) => "swap header re-written".into(),
            (rimage::disk::manifest::Action::Reformat, _) => "re-created empty".into(),
            (rimage::disk::manifest::Action::Skip, _) => "skipped".into(),
        };
        writeln!(
            out,
            "  partition {:<3} {:>10}  {fs}: {action}",
            p.plan.number,
            HumanBytes(p.bytes).to_string()
        )?;
    }
    for p in &info.problems {
        writeln!(out, "  problem: {p}")?;
    }
    Ok(())
}

/// A whole disk: its partition table, and the command that saves it.
pub fn disk_table(path: &Path, table: &rimage::disk::table::Table, json: bool) -> Result<()> {
    if json {
        return print_json(table, false);
    }
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "{}: a whole disk holding {}",
        path.display(),
        rimage::disk::describe_table(table)
    )?;
    for e in &table.partitions {
        writeln!(
            out,
            "  partition {:<3} start sector {:>10}  {:>10}",
            e.number,
            e.start_lba,
            HumanBytes(e.size_bytes()).to_string()
        )?;
    }
    writeln!(
        out,
        "  save the whole disk with `rimage save-disk {} DIR`, or one partition with `rimage save`",
        path.display()
    )?;
    Ok(())
}

/// What `netboot build` wrote.
pub fn netboot_build(report: &rimage::netboot::BuildReport, json: bool) -> Result<()> {
    if json {
        return print_json(report, false);
    }
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "{}: {}\n{}: {} ({}, {} unpacked)\nkernel + initrd: {}",
        report.kernel.display(),
        HumanBytes(report.kernel_bytes),
        report.initrd.display(),
        HumanBytes(report.initrd_bytes),
        report.compression.as_str(),
        HumanBytes(report.initrd_uncompressed),
        HumanBytes(report.kernel_bytes + report.initrd_bytes),
    )?;
    writeln!(
        out,
        "{}: {}",
        plural(report.modules.len() as u64, "module"),
        report.modules.join(" ")
    )?;
    if !report.builtin.is_empty() {
        writeln!(out, "built into the kernel: {}", report.builtin.join(" "))?;
    }
    if !report.missing.is_empty() {
        writeln!(out, "not in this kernel: {}", report.missing.join(" "))?;
    }
    for s in &report.samples {
        writeln!(out, "sample boot entry: {}", s.display())?;
    }
    if !report.stripped {
        writeln!(
            out,
            "note: /init kept its debug information (install binutils for strip: a smaller initrd)"
        )?;
    }
    Ok(())
}

/// `rimage agent`: how the job ended (it was reported to the service too).
pub fn agent(outcome: &rimage::agent::JobOutcome, out: &Output) -> Result<()> {
    if out.json {
        return print_json(outcome, false);
    }
    if out.quiet && outcome.ok {
        return Ok(());
    }
    let what = format!(
        "{} job for {}{}",
        outcome.job.mode,
        outcome.job.node,
        outcome
            .job
            .image
            .as_deref()
            .map(|i| format!(" (image {i})"))
            .unwrap_or_default()
    );
    if outcome.ok {
        println!(
            "{what}: done in {:.1} s, {}; reported",
            outcome.seconds,
            rimage::human_bytes(outcome.bytes)
        );
    } else {
        eprintln!(
            "rimage: error: {what} failed (reported): {}",
            outcome.message
        );
    }
    Ok(())
}

/// `rimage serve`: where it listens.
pub fn serving(addr: std::net::SocketAddr) {
    eprintln!("rimage: serving on http://{addr}/ (dashboard at /, images under /images/)");
}

/// `rimage node add|set`: the node as it now is, and the files written.
pub fn node_changed(
    verb: &str,
    node: &rimage::serve::nodes::NodeView,
    written: &rimage::serve::nodes::Written,
    json: bool,
) -> Result<()> {
    if json {
        return print_json(&serde_json::json!({"node": node, "files": written}), false);
    }
    let mut o = io::stdout().lock();
    writeln!(
        o,
        "{verb} node {} ({}{}): next boot {}{}{}",
        node.name,
        node.mac,
        node.ip.map(|i| format!(", {i}")).unwrap_or_default(),
        node.mode,
        node.image
            .as_deref()
            .map(|i| format!(", image {i}"))
            .unwrap_or_default(),
        if node.keep {
            ", kept after success"
        } else {
            ""
        }
    )?;
    for p in &written.wrote {
        writeln!(o, "  wrote {}", p.display())?;
    }
    Ok(())
}

/// `rimage node list`.
pub fn node_list(nodes: &[rimage::serve::nodes::NodeView], json: bool) -> Result<()> {
    if json {
        return print_json(&nodes, false);
    }
    let mut o = io::stdout().lock();
    if nodes.is_empty() {
        writeln!(o, "no nodes; add one with `rimage node add NAME --mac MAC`")?;
        return Ok(());
    }
    writeln!(
        o,
        "{:<16} {:<17} {:<15} {:<8} {:<24} last result",
        "NODE", "MAC", "IP", "MODE", "IMAGE"
    )?;
    for n in nodes {
        let last = n.last.as_ref().map_or_else(
            || "-".to_string(),
            |l| {
                format!(
                    "{} {} at {}{}",
                    if l.ok { "ok" } else { "FAILED" },
                    l.mode,
                    l.at,
                    if l.ok {
                        String::new()
                    } else {
                        format!(": {}", l.message)
                    }
                )
            },
        );
        writeln!(
            o,
            "{:<16} {:<17} {:<15} {:<8} {:<24} {last}",
            n.name,
            n.mac.to_string(),
            n.ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
            n.mode.to_string(),
            n.image.as_deref().unwrap_or("-"),
        )?;
    }
    Ok(())
}
