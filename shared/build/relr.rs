//! Packed relative relocations (`DT_RELR`) for the service binaries, shared by the
//! gateway's and the workers' build scripts.
//!
//! A position-independent executable lists, for every pointer in its read-only data
//! (vtables, string tables, …), a relocation the loader applies at start-up. In the
//! classic format each is a 24-byte entry: about 0.9 MB for the worker and 1.3 MB for
//! the gateway, read at start-up and then kept resident as mapped file pages for the
//! life of the process. The packed format stores the same relocations as a bitmap of a
//! few KB. The executable keeps its randomised address; only the table shrinks.
//!
//! The loader must know the format: glibc 2.36 or later (Debian 12, Ubuntu 22.10). The
//! linker records that need as the symbol version `GLIBC_ABI_DT_RELR`, so the flag is
//! passed only when the C library being linked against defines it. A linker too old
//! to know the flag (GNU ld before 2.38) warns that it ignores it.

use std::{path::PathBuf, process::Command};

/// Asks for packed relocations in this package's binaries when the target's C
/// library supports them.
pub fn link_packed_relocations() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../shared/build/relr.rs");
    println!("cargo:rerun-if-env-changed=CC");
    let cfg = |key: &str| std::env::var(key).unwrap_or_default();
    if cfg("CARGO_CFG_TARGET_OS") != "linux" || cfg("CARGO_CFG_TARGET_ENV") != "gnu" {
        return;
    }
    if libc_knows_relr() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the `libc.so.6` the C compiler links against defines `GLIBC_ABI_DT_RELR`.
fn libc_knows_relr() -> bool {
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let Ok(out) = Command::new(compiler)
        .arg("-print-file-name=libc.so.6")
        .output()
    else {
        return false;
    };
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let Ok(bytes) = std::fs::read(&path) else {
        return false;
    };
    let needle = b"GLIBC_ABI_DT_RELR";
    bytes.windows(needle.len()).any(|w| w == needle)
}
