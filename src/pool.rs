//! The worker pools of save, restore and verify.

use crate::Error;

/// Number of worker threads for `requested` (0 = one per CPU).
pub fn resolve_threads(requested: usize) -> usize {
    if requested > 0 {
        requested
    } else {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }
}

/// A rayon pool of `requested` workers (0 = one per CPU) named `rimage-<role>-N`.
///
/// # Errors
/// When the threads cannot be started.
pub fn worker_pool(requested: usize, role: &str) -> Result<rayon::ThreadPool, Error> {
    let threads = resolve_threads(requested);
    let role = role.to_string();
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(move |i| format!("rimage-{role}-{i}"))
        .build()
        .map_err(|e| Error::Internal(format!("cannot start {threads} worker threads: {e}")))
}
