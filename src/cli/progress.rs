//! Progress on stderr: an indicatif bar, or JSON lines for supervising scripts.

use std::io::{self, IsTerminal};
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::args::{Output, ProgressMode};
use rimage::Progress;

/// Progress on stderr: a bar (bytes done and total, rate, ETA) or JSON lines.
pub struct Bar {
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
    pub fn new(out: &Output) -> Self {
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
