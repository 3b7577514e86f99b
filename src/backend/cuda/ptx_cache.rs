//! NVRTC's output kept on disk, so that a process starting a CUDA pipeline again does not compile
//! the kernels again (one to two seconds per architecture on the development machine).
//!
//! One file per kernel source and compilation, named by the architecture and a hash of everything
//! that decides the PTX: the NVRTC version, the compile options and the full source text. A file
//! is used only if it names the architecture's target and every kernel its source declares;
//! anything else (missing, cut short, from another build) is compiled again and rewritten. Files
//! are written under a temporary name and renamed, so a reader never sees half of one, and a
//! cache that cannot be written only costs the compile.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::kernels::{self, PtxSet, SOURCES};
use crate::error::Result;

/// Where compiled kernels are kept: `REGIONDROP_PTX_CACHE` (a directory; `0` or `off`: nowhere),
/// else `$XDG_CACHE_HOME/regiondrop/ptx`, else `$HOME/.cache/regiondrop/ptx`.
pub fn default_dir() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    match var("REGIONDROP_PTX_CACHE") {
        Some(v) if v == "0" || v == "off" => None,
        Some(v) => Some(PathBuf::from(v)),
        None => var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|c| c.join("regiondrop").join("ptx")),
    }
}

/// The kernels for `arch`, from `dir` where a valid compilation is there, else compiled by NVRTC
/// and stored there (write failures are ignored).
pub fn load_or_compile(dir: &Path, arch: &str) -> Result<PtxSet> {
    let version = kernels::nvrtc_version().map_err(crate::error::Error::Backend)?;
    let key = key(arch, version);
    let path = |file: &str| dir.join(format!("{arch}-{key:016x}-{file}.ptx"));
    let cached: Option<PtxSet> = SOURCES
        .iter()
        .map(|src| {
            let text = std::fs::read_to_string(path(src.file)).ok()?;
            valid(&text, arch, src.entries).then_some((src.file, text))
        })
        .collect();
    if let Some(set) = cached {
        return Ok(set);
    }
    let set = kernels::compile_ptx(arch)?;
    // A temporary name of its own for every write, so that two threads or processes storing the
    // same compilation never write into one file.
    static WRITES: AtomicUsize = AtomicUsize::new(0);
    if std::fs::create_dir_all(dir).is_ok() {
        for (file, text) in &set {
            let n = WRITES.fetch_add(1, Ordering::Relaxed);
            let tmp = path(&format!("{file}.{}.{n}.tmp", std::process::id()));
            let to = path(file);
            if std::fs::write(&tmp, text).is_err() || std::fs::rename(&tmp, &to).is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
        }
    }
    Ok(set)
}

/// Whether `ptx` was compiled for `arch`, defines every kernel of `entries` and ends where a
/// function body ends.
fn valid(ptx: &str, arch: &str, entries: &[&str]) -> bool {
    let target = arch.strip_prefix("compute_").and_then(|v| v.parse().ok());
    target.is_some()
        && kernels::ptx_target(ptx) == target
        && entries.iter().all(|e| kernels::ptx_has_entry(ptx, e))
        && ptx.trim_end().ends_with('}')
}

/// 64-bit FNV-1a over the architecture, the NVRTC version, the compile options and every source
/// as NVRTC sees it: stable across builds and toolchains, unlike std's hashers.
fn key(arch: &str, (major, minor): (i32, i32)) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes.iter().chain(&[0xff]) {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(arch.as_bytes());
    eat(&major.to_le_bytes());
    eat(&minor.to_le_bytes());
    eat(kernels::compile_options(arch).join(" ").as_bytes());
    for src in SOURCES {
        eat(src.file.as_bytes());
        eat(kernels::full_source(src).as_bytes());
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_follows_the_architecture_and_the_nvrtc_version() {
        let k = key("compute_90", (12, 4));
        assert_eq!(k, key("compute_90", (12, 4)), "deterministic");
        assert_ne!(k, key("compute_87", (12, 4)));
        assert_ne!(k, key("compute_90", (12, 5)));
    }

    #[test]
    fn a_file_is_valid_only_for_its_target_with_every_kernel() {
        let ptx = ".version 8.4\n.target sm_90\n.visible .entry rd_a(\n)\n{\n}\n\
                   .visible .entry rd_b(\n)\n{\n\tret;\n}\n";
        assert!(valid(ptx, "compute_90", &["rd_a", "rd_b"]));
        assert!(
            !valid(ptx, "compute_87", &["rd_a", "rd_b"]),
            "another target"
        );
        assert!(
            !valid(ptx, "compute_90", &["rd_a", "rd_c"]),
            "a kernel missing"
        );
        assert!(!valid(&ptx[..30], "compute_90", &["rd_a"]), "cut short");
        let in_the_last_body = ptx.len() - 5;
        assert!(
            !valid(&ptx[..in_the_last_body], "compute_90", &["rd_a", "rd_b"]),
            "cut inside the last function"
        );
    }
}
