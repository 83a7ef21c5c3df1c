//! Ctrl-C, SIGTERM and SIGHUP: long work stops at the next chunk, cleans up after itself (no
//! temporary image is left behind) and says what state a target is in. A second signal ends
//! the process at once.
//!
//! The binary installs the handlers; the library only looks at the flag between chunks, so a
//! program that embeds rimage without installing them is never interrupted by it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::Error;

struct Flags {
    interrupted: Arc<AtomicBool>,
    signal: Arc<AtomicUsize>,
}

static FLAGS: OnceLock<Flags> = OnceLock::new();

/// The signals that interrupt long work.
const SIGNALS: [i32; 3] = [
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGHUP,
];

/// Installs the handlers (once).
///
/// # Errors
/// When a handler cannot be installed.
pub fn install() -> std::io::Result<()> {
    let flags = FLAGS.get_or_init(|| Flags {
        interrupted: Arc::new(AtomicBool::new(false)),
        signal: Arc::new(AtomicUsize::new(0)),
    });
    for sig in SIGNALS {
        // In this order: a second signal finds the flag set and exits with the shell's status
        // for a death by that signal; the first only sets it.
        let status = 128 + sig;
        signal_hook::flag::register_conditional_shutdown(
            sig,
            status,
            Arc::clone(&flags.interrupted),
        )?;
        signal_hook::flag::register_usize(sig, Arc::clone(&flags.signal), sig as usize)?;
        signal_hook::flag::register(sig, Arc::clone(&flags.interrupted))?;
    }
    Ok(())
}

/// The signal that interrupted the work, if one did.
pub fn pending() -> Option<i32> {
    let flags = FLAGS.get()?;
    if !flags.interrupted.load(Ordering::Relaxed) {
        return None;
    }
    i32::try_from(flags.signal.load(Ordering::Relaxed)).ok()
}

/// Stops the work when a signal arrived.
///
/// # Errors
/// [`Error::Interrupted`].
pub fn check() -> Result<(), Error> {
    match pending() {
        Some(signal) => Err(Error::Interrupted { signal }),
        None => Ok(()),
    }
}

/// The usual name of a signal ("SIGINT").
pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        signal_hook::consts::SIGINT => "SIGINT (Ctrl-C)",
        signal_hook::consts::SIGTERM => "SIGTERM",
        signal_hook::consts::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}
