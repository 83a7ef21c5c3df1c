//! The `rimage` command line: [`args`] defines it, the handlers here call the library, [`report`]
//! prints what it returns and [`progress`] shows long work.

mod args;
mod progress;
mod report;

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::{CommandFactory, Parser};

use args::{Cli, Command};
use progress::Bar;
use rimage::{Destination, ImageSource, RestoreOptions, SaveOptions};

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: the operation failed (I/O error, refusal, corrupt source...).
pub const EXIT_FAILURE: u8 = 1;
/// Exit status: bad command line.
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the image failed verification (corrupt, truncated, digest mismatch).
pub const EXIT_CORRUPT: u8 = 3;

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
    let ok = ExitCode::from(EXIT_OK);
    match cli.command {
        Command::Save {
            source,
            image,
            compression,
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
                level: compression.level,
                threads: compression.threads.threads,
                chunk_size,
                force,
                raw,
                overwrite,
            };
            let started = Instant::now();
            let report = rimage::save(&source, &dest, &opts, &Bar::new(&out))?;
            let to_stderr = matches!(dest, Destination::Stdout);
            report::save(&report, started.elapsed().as_secs_f64(), &out, to_stderr)?;
            Ok(ok)
        }
        Command::Restore {
            image,
            target,
            threads,
            free,
            expect_uuid,
            out,
        } => {
            let opts = RestoreOptions {
                threads: threads.threads,
                free_space: free.free_space(),
                expect_uuid,
            };
            let started = Instant::now();
            let source = ImageSource::from_arg(&image);
            let report = rimage::restore(&source, &target, &opts, &Bar::new(&out))?;
            report::restore(&report, started.elapsed().as_secs_f64(), &out)?;
            Ok(ok)
        }
        Command::Verify {
            image,
            threads,
            out,
        } => {
            let source = ImageSource::from_arg(&image);
            let report = rimage::verify(&source, threads.threads, &Bar::new(&out))?;
            report::verify(&report, &out)?;
            Ok(ExitCode::from(if report.ok {
                EXIT_OK
            } else {
                EXIT_CORRUPT
            }))
        }
        Command::Info { path, json } => {
            if rimage::is_image(&path) {
                let info = rimage::inspect_image(&ImageSource::File(path.clone()))?;
                report::image_info(&path, &info, json)?;
            } else {
                let info = rimage::inspect_source(&path)?;
                report::source_info(&path, &info, json)?;
            }
            Ok(ok)
        }
        Command::Ls { image, path, json } => {
            let browser = rimage::Browser::open(&ImageSource::from_arg(&image))?;
            report::listing(&browser.list(&path)?, json)?;
            Ok(ok)
        }
        Command::Cat { image, path } => {
            let browser = rimage::Browser::open(&ImageSource::from_arg(&image))?;
            let mut out = io::stdout().lock();
            browser.cat(&path, &mut out)?;
            out.flush()?;
            Ok(ok)
        }
        Command::Extract { image, path, dest } => {
            let browser = rimage::Browser::open(&ImageSource::from_arg(&image))?;
            let n = browser.extract(&path, &dest)?;
            eprintln!(
                "extracted {n} entries from {}:{path} to {}",
                image.display(),
                dest.display()
            );
            Ok(ok)
        }
        Command::SaveDisk {
            disk,
            dir,
            reformat,
            only,
            skip,
            compression,
            force,
            overwrite,
            out,
        } => {
            let opts = rimage::disk::SaveDiskOptions {
                save: SaveOptions {
                    level: compression.level,
                    threads: compression.threads.threads,
                    force,
                    overwrite,
                    ..SaveOptions::default()
                },
                reformat,
                only,
                skip,
            };
            let report = rimage::disk::save_disk(&disk, &dir, &opts, &Bar::new(&out))?;
            report::disk(&report, &out, "saved")?;
            Ok(ok)
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
            let opts = rimage::disk::RestoreDiskOptions {
                restore: RestoreOptions {
                    threads: threads.threads,
                    free_space: if zero_free {
                        rimage::FreeSpace::Zero
                    } else {
                        rimage::FreeSpace::Leave
                    },
                    expect_uuid: None,
                },
                post_restore,
                root,
            };
            let report = rimage::disk::restore_disk(&dir, &disk, &opts, &Bar::new(&out))?;
            report::disk(&report, &out, "restored")?;
            Ok(ok)
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "rimage", &mut io::stdout());
            Ok(ok)
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut io::stdout())?;
            Ok(ok)
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
