//! Every kernel in `cuda/` compiles with NVRTC for every architecture we support, without a GPU,
//! to PTX and on to machine code (NVRTC runs ptxas).
//!
//! Needs `libnvrtc.so.12` on the loader path when the test process starts, e.g. from the pip wheel
//! `nvidia-cuda-nvrtc-cu12` installed in the project venv:
//!
//! ```text
//! LD_LIBRARY_PATH="$PWD/.venv/lib/python3.11/site-packages/nvidia/cuda_nvrtc/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
//!     cargo test --test cuda_kernels_compile
//! ```
//!
//! Without the library the test prints why and passes with "SKIPPED", unless `CI` is set (to
//! anything but "" / "0" / "false") or `REGIONDROP_REQUIRE_NVRTC=1`, where it fails.

use gstregiondrop::backend::cuda::kernels::{
    assemble, compile_ptx, declared_entries, nvrtc_loadable, nvrtc_version, ptx_has_entry, SOURCES,
    SUPPORTED_ARCHS,
};
use gstregiondrop::backend::cuda::ptx_cache;

fn flag(name: &str) -> bool {
    std::env::var(name)
        .map(|v| {
            let v = v.trim().to_ascii_lowercase();
            !(v.is_empty() || v == "0" || v == "false" || v == "no")
        })
        .unwrap_or(false)
}

fn nvrtc_required() -> bool {
    flag("CI") || flag("REGIONDROP_REQUIRE_NVRTC")
}

/// Ok(true) when NVRTC can be used; Ok(false) to skip; panics (fails) when it is required.
fn nvrtc_or_skip() -> bool {
    match nvrtc_loadable() {
        Ok(()) => true,
        Err(why) => {
            if nvrtc_required() {
                panic!("NVRTC is required here (CI or REGIONDROP_REQUIRE_NVRTC is set) but cannot be loaded: {why}");
            }
            println!("SKIPPED: NVRTC is not loadable ({why}); set CI=true or REGIONDROP_REQUIRE_NVRTC=1 to fail instead");
            false
        }
    }
}

#[test]
fn every_kernel_compiles_for_every_supported_arch() {
    if !nvrtc_or_skip() {
        return;
    }
    let (major, minor) = nvrtc_version().expect("NVRTC version");
    println!("NVRTC {major}.{minor}");
    for &arch in SUPPORTED_ARCHS {
        let set = compile_ptx(arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert_eq!(set.len(), SOURCES.len());
        for ((file, ptx), src) in set.iter().zip(SOURCES) {
            assert_eq!(*file, src.file);
            let target = format!(".target sm_{}", &arch["compute_".len()..]);
            assert!(
                ptx.contains(&target),
                "{arch} cuda/{file}: PTX lacks `{target}`"
            );
            // The declared kernels and the listed ones agree, and each is an entry of the PTX.
            assert_eq!(declared_entries(src.source), src.entries, "cuda/{file}");
            for name in src.entries {
                assert!(
                    ptx_has_entry(ptx, name),
                    "{arch} cuda/{file}: PTX has no `.entry {name}`"
                );
            }
            // Every architecture we ship for has the tensor cores rd_conv_rows_tc multiplies
            // on (its other branch traps).
            if *file == "conv.cu" {
                assert!(
                    ptx.contains("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"),
                    "{arch} cuda/conv.cu: rd_conv_rows_tc has no mma.sync"
                );
                assert!(
                    !ptx.contains("trap;"),
                    "{arch} cuda/conv.cu: a kernel traps"
                );
            }
            println!(
                "{arch} cuda/{file}: {} bytes of PTX, entries {:?}",
                ptx.len(),
                src.entries
            );
            // For running the GPU tests where NVRTC is not installed (tests/cuda_backend.rs).
            if let Ok(dir) = std::env::var("REGIONDROP_WRITE_PTX_DIR") {
                let dir = std::path::Path::new(&dir).join(arch);
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join(file.replace(".cu", ".ptx")), ptx).unwrap();
            }
        }
    }
}

/// Every kernel assembles to machine code for every architecture we support (ptxas, as the driver
/// runs it at load time: inline assembly the architecture lacks, or static shared memory past
/// 48 KB, fails here rather than on a GPU), and none spills registers to local memory.
#[test]
fn every_kernel_assembles_without_spills() {
    if !nvrtc_or_skip() {
        return;
    }
    for &arch in SUPPORTED_ARCHS {
        let logs = assemble(arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert_eq!(logs.len(), SOURCES.len());
        let mut kernels = 0;
        for (file, log) in &logs {
            // ptxas reports each entry as "Compiling entry function 'NAME'", then its frame and
            // spills, then "Used N registers, ...".
            for entry in log.split("Compiling entry function '").skip(1) {
                let name = &entry[..entry.find('\'').unwrap_or(0)];
                kernels += 1;
                // "N bytes spill stores, M bytes spill loads": the word before each.
                let pieces: Vec<&str> = entry.split("bytes spill").collect();
                let spills: Vec<u64> = pieces[..pieces.len() - 1]
                    .iter()
                    .map(|p| p.split_whitespace().last().and_then(|n| n.parse().ok()))
                    .map(|n| n.unwrap_or(u64::MAX))
                    .collect();
                assert!(
                    spills.len() == 2 && spills.iter().all(|&n| n == 0),
                    "{arch} cuda/{file}: {name} spills: {entry}"
                );
                if name.starts_with("rd_conv_rows") {
                    let regs = entry
                        .split("Used ")
                        .nth(1)
                        .and_then(|r| r.split_whitespace().next())
                        .unwrap_or("?");
                    println!("{arch} {name}: {regs} registers");
                }
            }
        }
        let declared: usize = SOURCES.iter().map(|s| s.entries.len()).sum();
        assert_eq!(
            kernels, declared,
            "{arch}: ptxas reported {kernels} kernels"
        );
    }
}

#[test]
fn compile_errors_are_reported_not_panicked() {
    if !nvrtc_or_skip() {
        return;
    }
    // Invalid architectures come back as an Err carrying NVRTC's message.
    let e = compile_ptx("compute_1").expect_err("compute_1 is not an architecture");
    assert!(e.to_string().contains("compute_1"), "{e}");
}

/// The disk cache of compiled kernels: the first call compiles and stores one file per source,
/// `load` reads the same PTX back, a damaged file is compiled again and rewritten, and storing
/// removes the architecture's files of other keys and old temporary files.
#[test]
fn compiled_kernels_are_kept_on_disk() {
    if !nvrtc_or_skip() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("regiondrop-ptx-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let arch = SUPPORTED_ARCHS[0];
    let t = std::time::Instant::now();
    let compiled = ptx_cache::load_or_compile(&dir, arch).unwrap();
    let t_compile = t.elapsed().as_secs_f64() * 1e3;
    let files = || {
        let mut f: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        f.sort();
        f
    };
    let stored = files();
    assert_eq!(stored.len(), SOURCES.len(), "{stored:?}");
    assert!(stored
        .iter()
        .all(|p| p.extension().is_some_and(|e| e == "ptx")));
    let t = std::time::Instant::now();
    let loaded = ptx_cache::load(&dir, arch)
        .unwrap()
        .expect("the stored compilation");
    let t_load = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(loaded, compiled);
    println!("{arch}: compiled in {t_compile:.0} ms, read back in {t_load:.1} ms (NVRTC loaded)");
    // A damaged file (cut short, one byte changed) is not used: compiled again and rewritten.
    let conv = stored
        .iter()
        .find(|p| p.to_string_lossy().ends_with("-conv.cu.ptx"))
        .expect("conv.cu's file");
    let whole = std::fs::read_to_string(conv).unwrap();
    for damaged in [
        whole[..whole.len() / 2].to_string(),
        whole.replacen("ret;", "ret ", 1),
    ] {
        std::fs::write(conv, damaged).unwrap();
        assert_eq!(ptx_cache::load(&dir, arch).unwrap(), None);
        // Leftovers storing removes: a file of an older key, a temporary file of two hours ago.
        let old_key = dir.join(format!("{arch}-0000000000000000-conv.cu.ptx"));
        let old_tmp = dir.join("conv.cu.12345.0.tmp");
        std::fs::write(&old_key, "old").unwrap();
        let f = std::fs::File::create(&old_tmp).unwrap();
        f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(7200))
            .unwrap();
        assert_eq!(ptx_cache::load_or_compile(&dir, arch).unwrap(), compiled);
        assert_eq!(std::fs::read_to_string(conv).unwrap(), whole);
        assert_eq!(files(), stored, "only the current files are left");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
