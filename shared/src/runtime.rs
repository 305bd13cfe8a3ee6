//! The async runtime both binaries run on.
//!
//! tokio's defaults allow up to 512 blocking-pool threads and retire idle ones after
//! 10 s. Every file and SQLite call here is short, and each new thread that allocates
//! gets a malloc arena of its own that keeps what it freed, so a burst of uploads left
//! a gateway with dozens of threads and a resident size several times its live data.
//! A small pool whose threads stay alive serves the same load with a flat footprint.

/// Blocking-pool threads: file writes and fsyncs, SQLite calls, file reads.
pub const BLOCKING_THREADS: usize = 8;

/// A multi-threaded runtime (one worker thread per core) with a bounded blocking pool.
pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .thread_keep_alive(std::time::Duration::from_secs(300))
        .build()
}
