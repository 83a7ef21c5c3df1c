//! How long-running work reports progress. The library calls these; the binary draws them
//! (indicatif on a terminal, JSON lines when asked, nothing otherwise).

/// Receives progress from save, restore and verify. Called from worker threads.
pub trait Progress: Sync {
    /// A phase begins ("saving", "restoring", "verifying", ...), with its total in bytes.
    fn start(&self, _phase: &str, _total_bytes: u64) {}
    /// `bytes` more of the current phase are done.
    fn advance(&self, _bytes: u64) {}
    /// The current phase is over.
    fn finish(&self) {}
    /// Something the user should know that is not an error (printed to stderr by the CLI).
    fn note(&self, _message: &str) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}

/// Progress as JSON objects, one per phase start and end and one at most every half second in
/// between: `{"event":"start"|"progress"|"finish","phase":...,"done_bytes":...,"total_bytes":...,
/// "elapsed_secs":...,"bytes_per_sec":...,"eta_secs":...}`. What `rimage --progress json`
/// prints and what a node reports to `rimage serve` (docs/SERVICE.md). Notes become
/// `{"event":"log","message":...}`.
pub struct JsonLines<F> {
    sink: F,
    state: std::sync::Mutex<JsonState>,
}

/// Where a JSON-lines progress report stands.
struct JsonState {
    phase: String,
    total: u64,
    done: u64,
    started: std::time::Instant,
    last: Option<std::time::Instant>,
}

impl JsonState {
    fn new(phase: &str, total: u64) -> Self {
        Self {
            phase: phase.to_string(),
            total,
            done: 0,
            started: std::time::Instant::now(),
            last: None,
        }
    }

    fn line(&self, event: &str) -> serde_json::Value {
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            self.done as f64 / secs
        } else {
            0.0
        };
        let eta =
            (rate > 0.0 && self.total >= self.done).then(|| (self.total - self.done) as f64 / rate);
        serde_json::json!({
            "event": event, "phase": self.phase, "done_bytes": self.done,
            "total_bytes": self.total, "elapsed_secs": secs, "bytes_per_sec": rate,
            "eta_secs": eta,
        })
    }
}

/// Least time between two `progress` lines.
const JSON_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

impl<F: Fn(serde_json::Value) + Sync + Send> JsonLines<F> {
    /// Progress handed to `sink` as JSON objects.
    pub fn new(sink: F) -> Self {
        Self {
            sink,
            state: std::sync::Mutex::new(JsonState::new("", 0)),
        }
    }
}

impl<F: Fn(serde_json::Value) + Sync + Send> Progress for JsonLines<F> {
    fn start(&self, phase: &str, total_bytes: u64) {
        let st = JsonState::new(phase, total_bytes);
        (self.sink)(st.line("start"));
        *self.state.lock().expect("progress lock") = st;
    }

    fn advance(&self, bytes: u64) {
        let mut st = self.state.lock().expect("progress lock");
        st.done += bytes;
        if st.last.is_none_or(|t| t.elapsed() >= JSON_INTERVAL) {
            st.last = Some(std::time::Instant::now());
            (self.sink)(st.line("progress"));
        }
    }

    fn finish(&self) {
        let st = self.state.lock().expect("progress lock");
        if !st.phase.is_empty() {
            (self.sink)(st.line("finish"));
        }
    }

    fn note(&self, message: &str) {
        (self.sink)(serde_json::json!({"event": "log", "message": message}));
    }
}
