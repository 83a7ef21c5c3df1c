//! The `rimage` command: parse arguments, call the library, map the outcome to an exit code.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::try_main() {
        Ok(code) => code,
        Err(err) => {
            if cli::is_broken_pipe(&err) {
                // The reader of our output went away (`rimage ls IMG | head`): not an error.
                return ExitCode::SUCCESS;
            }
            eprintln!("rimage: error: {err:#}");
            cli::exit_code_for(&err)
        }
    }
}
