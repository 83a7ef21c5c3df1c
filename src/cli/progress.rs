//! Progress on stderr: an indicatif bar, or JSON lines for supervising scripts.

use std::io::{self, IsTerminal};
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::args::{Output, ProgressMode};
use rimage::Progress;
use rimage::progress::JsonLines;

/// Progress on stderr: a bar (bytes done and total, rate, ETA) or JSON lines.
pub struct Bar {
    quiet: bool,
    mode: ProgressMode,
    bar: Mutex<Option<ProgressBar>>,
    json: JsonLines<fn(serde_json::Value)>,
}

impl Bar {
    pub fn new(out: &Output) -> Self {
        let mode = if out.quiet {
            ProgressMode::None
        } else {
            out.progress
        };
        let json = JsonLines::new((|line| eprintln!("{line}")) as fn(serde_json::Value));
        Self {
            quiet: out.quiet,
            mode,
            bar: Mutex::new(None),
            json,
        }
    }
}

impl Progress for Bar {
    fn start(&self, phase: &str, total_bytes: u64) {
        if self.mode == ProgressMode::Json {
            return self.json.start(phase, total_bytes);
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
                "{msg:>10} [{bar:30}] {percent:>3}% {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {elapsed} (ETA {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(phase.to_string());
        *self.bar.lock().expect("bar lock") = Some(bar);
    }

    fn advance(&self, bytes: u64) {
        if self.mode == ProgressMode::Json {
            return self.json.advance(bytes);
        }
        if let Some(bar) = self.bar.lock().expect("bar lock").as_ref() {
            bar.inc(bytes);
        }
    }

    fn finish(&self) {
        if self.mode == ProgressMode::Json {
            return self.json.finish();
        }
        if let Some(bar) = self.bar.lock().expect("bar lock").take() {
            // The phase is complete: show it so (a stream's total is an upper bound).
            if let Some(len) = bar.length() {
                bar.set_position(len);
            }
            bar.finish();
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

impl Drop for Bar {
    /// Work that stopped (an error, Ctrl-C) leaves its bar where it stood and ends the line, so
    /// that the message that follows starts on a line of its own.
    fn drop(&mut self) {
        if let Some(bar) = self.bar.lock().expect("bar lock").take() {
            bar.abandon();
        }
    }
}
