//! The `rimage` command: parse arguments, call the library, map the outcome to an exit code.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    // In the netboot initramfs this binary is /init: PID 1 never returns (it reboots).
    if rimage::netboot::init::is_init() {
        rimage::netboot::init::run();
    }
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    // Ctrl-C, SIGTERM and SIGHUP stop long work at the next chunk, which cleans up after itself.
    if let Err(e) = rimage::interrupt::install() {
        eprintln!("rimage: warning: cannot catch signals: {e}");
    }
    let json = cli.command.wants_json();
    match cli::try_main(cli) {
        Ok(code) => code,
        Err(err) => cli::report_error(&err, json),
    }
}
