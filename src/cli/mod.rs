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

pub use args::Cli;

use args::Command;
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
/// Exit status: `verify --against`: the device differs from the image (it drifted).
pub const EXIT_DRIFT: u8 = 4;

/// Parses the command line; `Err` carries the exit code after clap printed help, the version
/// or a usage error.
pub fn parse() -> Result<Cli, ExitCode> {
    Cli::try_parse().map_err(|e| {
        let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
        let _ = e.print();
        ExitCode::from(code)
    })
}

/// Runs a parsed command line; `Ok` carries the exit code of a completed command.
pub fn try_main(cli: Cli) -> Result<ExitCode> {
    let ok = ExitCode::from(EXIT_OK);
    match cli.command {
        Command::Save {
            source,
            image,
            compression,
            chunk_size,
            force,
            raw,
            thorough,
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
                thorough,
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
            force,
            delta,
            net,
            out,
        } => {
            let opts = RestoreOptions {
                threads: threads.threads,
                free_space: free.free_space(),
                expect_uuid,
                force,
                delta,
            };
            let started = Instant::now();
            let source = net.source(&image);
            let report = rimage::restore(&source, &target, &opts, &Bar::new(&out))?;
            report::restore(&report, started.elapsed().as_secs_f64(), &out)?;
            Ok(ok)
        }
        Command::Verify {
            image,
            against,
            threads,
            net,
            out,
        } => {
            if let Some(device) = against {
                let source = net.source(&image);
                let report =
                    rimage::drift::drift(&source, &device, threads.threads, &Bar::new(&out))?;
                report::drift(&report, &out)?;
                return Ok(ExitCode::from(if report.identical {
                    EXIT_OK
                } else {
                    EXIT_DRIFT
                }));
            }
            let ok = if image.is_dir() {
                let report = rimage::disk::verify_dir(&image, threads.threads, &Bar::new(&out))?;
                report::verify_dir(&report, &out)?;
                report.ok
            } else {
                let source = net.source(&image);
                let report = rimage::verify(&source, threads.threads, &Bar::new(&out))?;
                report::verify(&report, &out)?;
                report.ok
            };
            Ok(ExitCode::from(if ok { EXIT_OK } else { EXIT_CORRUPT }))
        }
        Command::Info { path, json, net } => {
            let source = net.source(&path);
            if rimage::import::clonezilla::is_clonezilla_dir(&path)
                && !rimage::disk::is_disk_dir(&path)
            {
                let plan = rimage::import::clonezilla::plan_dir(&path)?;
                report::clonezilla_plan(&plan, json)?;
            } else if path.is_dir() {
                let info = rimage::disk::inspect_dir(&path)?;
                report::disk_info(&info, json)?;
            } else if matches!(source, ImageSource::Url { .. }) || rimage::is_image(&path) {
                let info = rimage::inspect_image(&source)?;
                report::image_info(&path, &info, json)?;
            } else if let Some(table) = rimage::disk::inspect_disk(&path)? {
                report::disk_table(&path, &table, json)?;
            } else {
                let info = rimage::inspect_source(&path)?;
                report::source_info(&path, &info, json)?;
            }
            Ok(ok)
        }
        Command::Ls {
            image,
            path,
            json,
            net,
        } => {
            let browser = rimage::Browser::open(&net.source(&image))?;
            report::listing(&browser.list(&path)?, json)?;
            Ok(ok)
        }
        Command::Cat { image, path, net } => {
            let browser = rimage::Browser::open(&net.source(&image))?;
            let mut out = io::stdout().lock();
            browser.cat(&path, &mut out)?;
            out.flush()?;
            Ok(ok)
        }
        Command::Extract {
            image,
            path,
            dest,
            net,
        } => {
            let browser = rimage::Browser::open(&net.source(&image))?;
            let n = browser.extract(&path, &dest)?;
            eprintln!(
                "extracted {} from {}:{path} to {}",
                rimage::plural(n, "entry"),
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
            thorough,
            overwrite,
            out,
        } => {
            let opts = rimage::disk::SaveDiskOptions {
                save: SaveOptions {
                    level: compression.level,
                    threads: compression.threads.threads,
                    force,
                    overwrite,
                    thorough,
                    ..SaveOptions::default()
                },
                reformat,
                only,
                skip,
            };
            let dest = rimage::disk::DiskDest::from_arg(&dir);
            let report = rimage::disk::save_disk(&disk, &dest, &opts, &Bar::new(&out))?;
            let to_stderr = dest == rimage::disk::DiskDest::Stdout;
            report::disk(&report, &out, "saved", to_stderr)?;
            Ok(ok)
        }
        Command::RestoreDisk {
            dir,
            disk,
            post_restore,
            root,
            threads,
            zero_free,
            grow,
            delta,
            net,
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
                    force: false,
                    delta,
                },
                post_restore,
                root,
                grow,
            };
            let source = rimage::disk::DiskSource::from_arg(&dir, net.options());
            let report = rimage::disk::restore_disk(&source, &disk, &opts, &Bar::new(&out))?;
            report::disk(&report, &out, "restored", false)?;
            Ok(ok)
        }
        Command::Send { path } => {
            rimage::guard_stdout_not_terminal()?;
            let stdout = io::stdout();
            let mut out = io::BufWriter::with_capacity(1 << 20, stdout.lock());
            let report = rimage::disk::send::send(&path, &mut out)?;
            out.flush()?;
            eprintln!(
                "sent {} ({}) from {}",
                rimage::plural(report.images, "image"),
                rimage::human_bytes(report.bytes),
                path.display()
            );
            Ok(ok)
        }
        Command::Import {
            input,
            out,
            compression,
            chunk_size,
            overwrite,
            out_opts,
        } => {
            let opts = SaveOptions {
                level: compression.level,
                threads: compression.threads.threads,
                chunk_size,
                overwrite,
                ..SaveOptions::default()
            };
            let started = Instant::now();
            if input.is_dir() {
                let report = rimage::import::clonezilla::import_dir(
                    &input,
                    &out,
                    &opts,
                    &Bar::new(&out_opts),
                )?;
                report::clonezilla_import(&report, started.elapsed().as_secs_f64(), &out_opts)?;
            } else {
                let report =
                    rimage::import::import_image(&input, &out, &opts, &Bar::new(&out_opts))?;
                report::import(&report, started.elapsed().as_secs_f64(), &out_opts)?;
            }
            Ok(ok)
        }
        Command::Netboot {
            action:
                args::NetbootAction::Build {
                    kernel,
                    modules,
                    busybox,
                    rimage,
                    modules_extra,
                    compression,
                    out,
                    json,
                },
        } => {
            let rimage = match rimage {
                Some(r) => r,
                None => std::env::current_exe()?,
            };
            let opts = rimage::netboot::BuildOptions {
                kernel,
                modules,
                busybox: Some(busybox),
                rimage,
                extra_modules: modules_extra,
                compression: compression.map(|c| match c {
                    args::InitrdCompressionArg::Zstd => rimage::netboot::InitrdCompression::Zstd,
                    args::InitrdCompressionArg::Gzip => rimage::netboot::InitrdCompression::Gzip,
                }),
                out,
            };
            let report = rimage::netboot::build(&opts)?;
            report::netboot_build(&report, json)?;
            Ok(ok)
        }
        Command::Agent {
            server,
            node,
            token,
            disk,
            threads,
            net,
            out,
        } => {
            let opts = rimage::agent::AgentOptions {
                server,
                node,
                token,
                disk,
                threads: threads.threads,
                http: net.options(),
            };
            let outcome = rimage::agent::run_job(&opts, &Bar::new(&out))?;
            report::agent(&outcome, &out)?;
            Ok(ExitCode::from(if outcome.ok {
                EXIT_OK
            } else {
                EXIT_FAILURE
            }))
        }
        Command::Serve {
            root,
            listen,
            state,
            public_url,
            netboot,
            max_upload,
            threads,
        } => {
            let opts = rimage::serve::ServeOptions {
                root,
                state,
                listen,
                public_url,
                netboot,
                max_upload,
                threads: threads.threads,
            };
            rimage::serve::serve(opts, report::serving)?;
            Ok(ok)
        }
        Command::Node {
            action,
            state,
            dhcp_hostsdir,
            tftp_dir,
            public_url,
            json,
        } => {
            node(action, &state, dhcp_hostsdir, tftp_dir, public_url, json)?;
            Ok(ok)
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "rimage", &mut io::stdout());
            Ok(ok)
        }
        Command::Man {
            subcommand,
            out_dir,
        } => {
            man(subcommand.as_deref(), out_dir.as_deref())?;
            Ok(ok)
        }
    }
}

/// `rimage node ...`.
fn node(
    action: args::NodeAction,
    state: &std::path::Path,
    dhcp_hostsdir: Option<std::path::PathBuf>,
    tftp_dir: Option<std::path::PathBuf>,
    public_url: Option<String>,
    json: bool,
) -> Result<()> {
    use rimage::serve::nodes;
    let sd = rimage::serve::state::StateDir::open(state)?;
    let cfg = rimage::serve::state::Config {
        dhcp_hostsdir,
        tftp_dir,
        public_url,
    };
    match action {
        args::NodeAction::Add { name, mac, ip } => {
            let mac = mac.parse().map_err(|e: rimage::serve::proto::ProtoError| {
                rimage::Error::Usage(e.to_string())
            })?;
            let (view, written) = nodes::add(&sd, &cfg, &name, mac, ip)?;
            report::node_changed("added", &view, &written, json)
        }
        args::NodeAction::Set {
            name,
            mode,
            image,
            post_restore,
            keep,
            delta,
            disk,
            overwrite,
        } => {
            let opts = nodes::SetOptions {
                image,
                post_restore,
                keep,
                delta,
                disk,
                overwrite,
            };
            let (view, written) = nodes::set(&sd, &cfg, &name, mode.mode(), &opts)?;
            report::node_changed("set", &view, &written, json)
        }
        args::NodeAction::List => {
            if cfg != rimage::serve::state::Config::default() {
                sd.update(|st| {
                    nodes::merge_config(st, &cfg);
                    Ok(())
                })?;
            }
            report::node_list(&nodes::list(&sd)?, json)
        }
        args::NodeAction::Rm { name } => {
            let written = nodes::remove(&sd, &name)?;
            if json {
                return report::print_json(&written, false);
            }
            println!("removed node {name}");
            for p in &written.removed {
                println!("  removed {}", p.display());
            }
            Ok(())
        }
    }
}

/// Prints the main manual page, or a subcommand's (rimage-SUBCOMMAND), or writes them all.
fn man(subcommand: Option<&str>, out_dir: Option<&std::path::Path>) -> Result<()> {
    let main = Cli::command();
    // The pages clap_mangen's SUBCOMMANDS section refers to: rimage-save(1), ...
    let page = |sub: &clap::Command| {
        let name: &'static str = Box::leak(format!("rimage-{}", sub.get_name()).into_boxed_str());
        sub.clone()
            .name(name)
            .display_name(name)
            .version(env!("CARGO_PKG_VERSION"))
    };
    if let Some(dir) = out_dir {
        let write = |name: String, cmd: clap::Command| -> Result<()> {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut buf)?;
            std::fs::write(dir.join(&name), buf)
                .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(&name).display()))?;
            eprintln!("wrote {}", dir.join(name).display());
            Ok(())
        };
        for sub in main.get_subcommands() {
            write(format!("rimage-{}.1", sub.get_name()), page(sub))?;
        }
        return write("rimage.1".into(), main.clone());
    }
    let cmd = match subcommand {
        None => main,
        Some(name) => {
            let sub = main.find_subcommand(name).ok_or_else(|| {
                rimage::Error::Usage(format!(
                    "no subcommand {name:?}; `rimage --help` lists them"
                ))
            })?;
            page(sub)
        }
    };
    clap_mangen::Man::new(cmd).render(&mut io::stdout())?;
    Ok(())
}

/// Reports a failed command on stderr (text, or a JSON object when the command was asked for
/// JSON) and returns its exit status.
pub fn report_error(err: &anyhow::Error, json: bool) -> ExitCode {
    if is_broken_pipe(err) {
        // The reader of our text output went away (`rimage ls IMG | head`): not an error.
        return ExitCode::SUCCESS;
    }
    let lib = err.downcast_ref::<rimage::Error>();
    let status = exit_status(err);
    if json {
        let value = serde_json::json!({
            "error": {
                "kind": lib.map_or("other", rimage::Error::kind),
                "message": format!("{err:#}"),
                "path": lib.and_then(rimage::Error::path),
                "exit_status": status,
            }
        });
        eprintln!("{value}");
    } else if lib.and_then(rimage::Error::interrupted_by).is_some() {
        eprintln!("rimage: {err:#}");
    } else {
        eprintln!("rimage: error: {err:#}");
    }
    ExitCode::from(status)
}

/// Whether the error is a closed pipe on text output (`rimage ls IMG | head`). A closed pipe
/// while an image is streamed to stdout is a failure: the image did not arrive whole.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    let broken = |e: &io::Error| e.kind() == io::ErrorKind::BrokenPipe;
    match err.downcast_ref::<rimage::Error>() {
        Some(rimage::Error::Io(e)) => e.path.as_os_str() == "<output>" && broken(&e.source),
        Some(_) => false,
        None => err.chain().any(|e| {
            e.downcast_ref::<io::Error>().is_some_and(broken)
                || e.downcast_ref::<serde_json::Error>()
                    .and_then(serde_json::Error::io_error_kind)
                    == Some(io::ErrorKind::BrokenPipe)
        }),
    }
}

/// The exit status for a failed command: 3 when an image failed its checks, 2 for bad
/// options, 128 + N when signal N interrupted it, 1 otherwise.
fn exit_status(err: &anyhow::Error) -> u8 {
    match err.downcast_ref::<rimage::Error>() {
        Some(e) if e.is_corrupt_image() => EXIT_CORRUPT,
        Some(rimage::Error::Usage(_)) => EXIT_USAGE,
        Some(e) => e
            .interrupted_by()
            .and_then(|s| u8::try_from(128 + s).ok())
            .unwrap_or(EXIT_FAILURE),
        None => EXIT_FAILURE,
    }
}
