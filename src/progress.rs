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
