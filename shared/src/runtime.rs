//! The async runtime both binaries run on.
//!
//! tokio's defaults allow up to 512 blocking-pool threads and retire idle ones after
//! 10 s. Every file and SQLite call here is short, and each new thread that allocates
//! gets a malloc arena of its own that keeps what it freed, so a burst of uploads left
//! a gateway with dozens of threads and a resident size several times its live data.
//! A small pool whose threads stay alive serves the same load with a flat footprint.
//!
//! glibc's malloc adds to that: every thread that allocates may get an arena of its
//! own (up to 8 per core), and buffers freed there stay resident; after the first
//! multi-megabyte image buffer is freed it raises its mmap threshold, so later ones come
//! from those arenas too. [`tune_malloc`] caps the arenas at 2 and keeps buffers of
//! 512 KiB and more in their own mappings, which go back to the system when freed: a
//! worker's resident size then follows the job in hand, not the largest jobs it has
//! seen. The price would be CPU, each such buffer mapped fresh and page-faulted in for
//! every job; a worker's job slots avoid most of it by handing their image buffers on
//! from one job to the next, within a bound (`pixmill_workers::buffers`). One arena
//! with glibc's adaptive threshold (`GLIBC_TUNABLES=glibc.malloc.arena_max=1`) has
//! malloc itself reuse every buffer from its heap instead, keeping whatever the heap
//! grew to; docs/performance.md (Memory) has the side-by-side figures.

/// glibc malloc tunables (see the module comment).
pub const MALLOC_TUNABLES: &str = "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=524288";

/// Applies [`MALLOC_TUNABLES`]. glibc reads its tunables only when a process starts, so
/// a process started without `GLIBC_TUNABLES` executes itself again, once, with them
/// (same pid, arguments and environment otherwise). An operator's own
/// `GLIBC_TUNABLES` is left alone. Call it first thing in `main`, before any thread.
pub fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        // The marker keeps this to one exec even where the loader drops GLIBC_TUNABLES
        // (a setuid or file-capability binary).
        const MARKER: &str = "PIXMILL_MALLOC_TUNED";
        if std::env::var_os("GLIBC_TUNABLES").is_some() || std::env::var_os(MARKER).is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let mut args = std::env::args_os();
        let mut command = std::process::Command::new(exe);
        if let Some(arg0) = args.next() {
            command.arg0(arg0);
        }
        let error = command
            .args(args)
            .env("GLIBC_TUNABLES", MALLOC_TUNABLES)
            .env(MARKER, "1")
            .exec();
        // Only a failed exec returns; run on with glibc's defaults.
        eprintln!("could not restart with GLIBC_TUNABLES={MALLOC_TUNABLES}: {error}");
    }
}

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
