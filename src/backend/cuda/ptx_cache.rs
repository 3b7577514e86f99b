//! NVRTC's output kept on disk, so that a process starting a CUDA pipeline again does not compile
//! the kernels again (one to two seconds per architecture on the development machine). NVRTC must
//! still load: its version is part of the key.
//!
//! One file per kernel source and compilation, named by the architecture and a hash of what
//! decides the PTX: the NVRTC version (major.minor), the compile options and the full source text.
//! Each file ends with a line holding a hash of its PTX. A file is used only if that hash matches,
//! it targets the architecture and it defines every kernel its source declares. Anything else
//! (missing, damaged, cut short) is compiled again and rewritten. Files are written under a
//! temporary name of their own and renamed, so a reader never sees half of one. A cache that
//! cannot be written only costs the compile. Storing a compilation removes the architecture's files
//! of other keys and temporary files left for more than an hour.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::kernels::{self, KernelSet, PtxSet, SOURCES};
use crate::error::{Error, Result};

/// The last line of a stored file: this prefix, then the hash of the PTX before it in hex.
const TRAILER: &str = "// regiondrop ptx fnv1a64 ";

/// Where compiled kernels are kept: `REGIONDROP_PTX_CACHE` (a directory; `0`, `off`, `false` or
/// `no`: nowhere), else `$XDG_CACHE_HOME/regiondrop/ptx` where that is an absolute path, else
/// `$HOME/.cache/regiondrop/ptx`.
pub fn default_dir() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    match var("REGIONDROP_PTX_CACHE") {
        Some(v) if ["0", "off", "false", "no"].iter().any(|o| v == *o) => None,
        Some(v) => Some(PathBuf::from(v)),
        None => var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|c| c.join("regiondrop").join("ptx")),
    }
}

/// The kernels for `arch`: from `dir` where a valid compilation is there ([`load`]), else
/// compiled by NVRTC and stored there ([`store`]).
pub fn load_or_compile(dir: &Path, arch: &str) -> Result<PtxSet> {
    if let Some(set) = load(dir, arch)? {
        return Ok(set);
    }
    let set = kernels::compile_ptx(arch)?;
    store(dir, arch, &set)?;
    Ok(set)
}

/// The stored compilation of every kernel source for `arch` under the running NVRTC, if `dir`
/// holds a valid one.
pub fn load(dir: &Path, arch: &str) -> Result<Option<PtxSet>> {
    let key = current_key(arch)?;
    Ok(SOURCES
        .iter()
        .map(|src| {
            let text = std::fs::read_to_string(path(dir, arch, key, src.file)).ok()?;
            let ptx = checked(&text)?;
            valid(ptx, arch, src.entries).then(|| (src.file, ptx.to_string()))
        })
        .collect())
}

/// Stores `set` (the compilation of every kernel source for `arch`) in `dir`, created readable by
/// this user only; a file that cannot be written is skipped.
pub fn store(dir: &Path, arch: &str, set: &PtxSet) -> Result<()> {
    let key = current_key(arch)?;
    if private_dir(dir).is_err() {
        return Ok(());
    }
    // A temporary name of its own for every write, so that two threads or processes storing the
    // same compilation never write into one file.
    static WRITES: AtomicUsize = AtomicUsize::new(0);
    for (file, ptx) in set {
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        let to = path(dir, arch, key, file);
        let tmp = to.with_extension(format!("{}.{n}.tmp", std::process::id()));
        let text = format!("{ptx}\n{TRAILER}{:016x}\n", fnv1a(&[ptx.as_bytes()]));
        if std::fs::write(&tmp, text).is_err() || std::fs::rename(&tmp, &to).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    remove_stale(dir, arch, key);
    Ok(())
}

fn path(dir: &Path, arch: &str, key: u64, file: &str) -> PathBuf {
    dir.join(format!("{arch}-{key:016x}-{file}.ptx"))
}

fn current_key(arch: &str) -> Result<u64> {
    let version = kernels::nvrtc_version().map_err(Error::Backend)?;
    Ok(key(
        arch,
        version,
        &kernels::compile_options(arch),
        kernels::kernel_set()?,
    ))
}

/// The PTX of a stored file whose trailer matches it.
fn checked(text: &str) -> Option<&str> {
    let body = text.strip_suffix('\n')?;
    let (ptx, last) = body.rsplit_once('\n')?;
    let want = u64::from_str_radix(last.strip_prefix(TRAILER)?, 16).ok()?;
    (fnv1a(&[ptx.as_bytes()]) == want).then_some(ptx)
}

/// Whether `ptx` was compiled for `arch` and defines every kernel of `entries`.
fn valid(ptx: &str, arch: &str, entries: &[&str]) -> bool {
    let target = arch.strip_prefix("compute_").and_then(|v| v.parse().ok());
    target.is_some()
        && kernels::ptx_target(ptx) == target
        && entries.iter().all(|e| kernels::ptx_has_entry(ptx, e))
}

/// The key of a compilation: the architecture, the NVRTC version, the options and every source as
/// NVRTC sees it.
fn key(arch: &str, (major, minor): (i32, i32), options: &[String], sources: &KernelSet) -> u64 {
    let mut parts: Vec<Vec<u8>> = vec![
        arch.as_bytes().to_vec(),
        major.to_le_bytes().to_vec(),
        minor.to_le_bytes().to_vec(),
    ];
    parts.extend(options.iter().map(|o| o.as_bytes().to_vec()));
    for src in &sources.files {
        parts.push(src.file.as_bytes().to_vec());
        parts.push(sources.full_source(src).into_bytes());
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    fnv1a(&refs)
}

/// 64-bit FNV-1a over the parts, each followed by 0xff: stable across builds and toolchains,
/// unlike std's hashers.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for part in parts {
        for &b in part.iter().chain(&[0xff]) {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Removes `arch`'s files of other keys and temporary files older than an hour.
fn remove_stale(dir: &Path, arch: &str, key: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let (ours, current) = (format!("{arch}-"), format!("{arch}-{key:016x}-"));
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let old_tmp = name.ends_with(".tmp")
            && e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > Duration::from_secs(3600)));
        let other_key =
            name.starts_with(&ours) && !name.starts_with(&current) && name.ends_with(".ptx");
        if old_tmp || other_key {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_follows_everything_that_decides_the_ptx() {
        let opts = kernels::compile_options("compute_90");
        let ours = KernelSet::embedded();
        let k = key("compute_90", (12, 4), &opts, &ours);
        assert_eq!(k, key("compute_90", (12, 4), &opts, &ours), "deterministic");
        assert_ne!(k, key("compute_87", (12, 4), &opts, &ours));
        assert_ne!(k, key("compute_90", (12, 5), &opts, &ours));
        let mut more = opts.clone();
        more.push("--use_fast_math".into());
        assert_ne!(k, key("compute_90", (12, 4), &more, &ours));
        let mut edited = ours.clone();
        edited.files[0].source = "// another version\n";
        assert_ne!(k, key("compute_90", (12, 4), &opts, &edited));
        let mut common = ours.clone();
        common.common = "// other helpers\n";
        assert_ne!(k, key("compute_90", (12, 4), &opts, &common));
        let mut fewer = ours.clone();
        fewer.files.remove(0);
        assert_ne!(k, key("compute_90", (12, 4), &opts, &fewer));
    }

    #[test]
    fn a_file_is_used_only_whole_and_for_its_target_with_every_kernel() {
        let ptx = ".version 8.4\n.target sm_90\n.visible .entry rd_a(\n)\n{\n}\n\
                   .visible .entry rd_b(\n)\n{\n\tret;\n}";
        let stored = format!("{ptx}\n{TRAILER}{:016x}\n", fnv1a(&[ptx.as_bytes()]));
        assert_eq!(checked(&stored), Some(ptx));
        assert_eq!(
            checked(&stored.replace("ret;", "ret ")),
            None,
            "a changed byte"
        );
        assert_eq!(checked(&stored[..stored.len() - 3]), None, "cut short");
        assert_eq!(checked(ptx), None, "no trailer");
        assert!(valid(ptx, "compute_90", &["rd_a", "rd_b"]));
        assert!(
            !valid(ptx, "compute_87", &["rd_a", "rd_b"]),
            "another target"
        );
        assert!(
            !valid(ptx, "compute_90", &["rd_a", "rd_c"]),
            "a kernel missing"
        );
    }
}
