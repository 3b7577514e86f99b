//! The CUDA kernels (`cuda/*.cu`), embedded at build time and compiled with NVRTC at run time, and
//! the probes that tell whether the CUDA shared libraries can be loaded at all.
//!
//! cudarc loads `libnvrtc`, `libcuda` and `libcublas` with `dlopen` on first use and **panics** when
//! one is missing. Everything here checks for the library first (`is_culib_present`, which only
//! tries `dlopen` on cudarc's candidate names) and contains the first real call in
//! `catch_unwind`, so a missing or broken library becomes an `Err` and never a panic in a caller.
//! `dlopen` searches `LD_LIBRARY_PATH` as it was when the process started (glibc reads it once at
//! start-up), so it must be set in the environment of the process, not with `std::env::set_var`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{panic_text, Error, Result};

/// Device helpers prepended to every kernel file before compiling (NVRTC has no headers here).
pub const COMMON: &str = include_str!("../../../cuda/common.cuh");

/// One `cuda/*.cu` file and the kernels (`extern "C" __global__`) it defines.
#[derive(Clone, Copy, Debug)]
pub struct KernelSource {
    /// File name under `cuda/`.
    pub file: &'static str,
    pub source: &'static str,
    pub entries: &'static [&'static str],
}

/// Every kernel file, in the order they are compiled.
pub const SOURCES: &[KernelSource] = &[
    KernelSource {
        file: "input.cu",
        source: include_str!("../../../cuda/input.cu"),
        entries: &["rd_input_norm", "rd_letterbox"],
    },
    KernelSource {
        file: "change.cu",
        source: include_str!("../../../cuda/change.cu"),
        entries: &[
            "rd_tile_diff",
            "rd_mask_dilate",
            "rd_mask_compact",
            "rd_ref_update",
        ],
    },
    KernelSource {
        file: "conv.cu",
        source: include_str!("../../../cuda/conv.cu"),
        entries: &[
            "rd_im2col",
            "rd_im2col_h",
            "rd_scatter_bias_act",
            "rd_depthwise",
            "rd_sgemm_rm",
            "rd_conv_rows",
            "rd_conv_rows_n32",
            "rd_conv_rows_t44",
            "rd_conv_rows_n32_t44",
            "rd_conv_rows_tc",
            "rd_conv_rows_tc_n32",
            "rd_conv_rows_tc_t44",
            "rd_conv_rows_tc_n32_t44",
            "rd_conv_rows_pipe",
            "rd_conv_rows_pipe_n32",
            "rd_conv_rows_pipe_t44",
            "rd_conv_rows_pipe_n32_t44",
            "rd_conv_rows_pipe_f32",
            "rd_conv_rows_pipe_f32_n32",
        ],
    },
    KernelSource {
        file: "ops.cu",
        source: include_str!("../../../cuda/ops.cu"),
        entries: &[
            "rd_pool",
            "rd_resize",
            "rd_affine",
            "rd_unary",
            "rd_binary",
            "rd_gather",
        ],
    },
    KernelSource {
        file: "tail.cu",
        source: include_str!("../../../cuda/tail.cu"),
        entries: &[
            "rd_tail_copy",
            "rd_tail_act",
            "rd_tail_binary",
            "rd_tail_softmax",
            "rd_tail_conv",
        ],
    },
    KernelSource {
        file: "export.cu",
        source: include_str!("../../../cuda/export.cu"),
        entries: &["rd_export_nchw", "rd_global_avg_pool", "rd_rearrange"],
    },
    KernelSource {
        file: "select.cu",
        source: include_str!("../../../cuda/select.cu"),
        entries: &["rd_select"],
    },
];

/// The virtual architectures we ship for: sm_87 (Jetson Orin), sm_89 (Ada), sm_90 (Hopper).
pub const SUPPORTED_ARCHS: &[&str] = &["compute_87", "compute_89", "compute_90"];

/// The kernel names in declaration order, parsed from a source (`extern "C" __global__ void NAME(`).
pub fn declared_entries(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = source;
    const KEY: &str = "extern \"C\" __global__ void ";
    while let Some(i) = rest.find(KEY) {
        rest = &rest[i + KEY.len()..];
        let name = entry_name(rest);
        if !name.is_empty() {
            out.push(name.to_string());
        }
    }
    out
}

/// The kernel's name in the text after `extern "C" __global__ void `, past its launch bounds if
/// it declares them.
pub fn entry_name(after_void: &str) -> &str {
    let mut rest = after_void;
    if let Some(bounds) = rest.strip_prefix("__launch_bounds__(") {
        rest = bounds[bounds.find(')').map_or(bounds.len(), |i| i + 1)..].trim_start();
    }
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// The kernel sources a process compiles: [`COMMON`] and [`SOURCES`], or those of another
/// version of the kernels ([`kernel_set`]).
#[derive(Clone, Debug)]
pub struct KernelSet {
    /// `cuda/common.cuh`.
    pub common: &'static str,
    pub files: Vec<KernelSource>,
    /// Where the sources were read, if not embedded.
    pub dir: Option<std::path::PathBuf>,
}

impl KernelSet {
    /// The kernels built into this binary.
    pub fn embedded() -> Self {
        KernelSet {
            common: COMMON,
            files: SOURCES.to_vec(),
            dir: None,
        }
    }

    /// `common.cuh` and every file of [`SOURCES`] by name from `dir`, kept for the whole process.
    pub fn read(dir: &std::path::Path) -> Result<Self> {
        let read = |name: &str| -> Result<&'static str> {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::Backend(format!("kernel source {}: {e}", path.display())))?;
            Ok(Box::leak(text.into_boxed_str()))
        };
        let files = SOURCES
            .iter()
            .map(|s| {
                Ok(KernelSource {
                    source: read(s.file)?,
                    ..*s
                })
            })
            .collect::<Result<_>>()?;
        Ok(KernelSet {
            common: read("common.cuh")?,
            files,
            dir: Some(dir.to_path_buf()),
        })
    }

    /// The text NVRTC compiles for `src`: the common helpers, then the file (with `#line` so that
    /// compiler messages name the right file and line).
    pub fn full_source(&self, src: &KernelSource) -> String {
        format!(
            "#line 1 \"common.cuh\"\n{}\n#line 1 \"{}\"\n{}",
            self.common, src.file, src.source
        )
    }
}

/// The kernels this process compiles: the embedded ones, or where the environment variable
/// `REGIONDROP_CUDA_KERNELS` names a directory, its `common.cuh` and `cuda/*.cu` files
/// ([`KernelSet::read`], once per process). That is for timing another version of the kernels
/// with the same binary (`scripts/gpu-ab.sh`), whose kernels must have this build's names and
/// parameters; the backend's description names the directory.
pub fn kernel_set() -> Result<&'static KernelSet> {
    static SET: OnceLock<std::result::Result<KernelSet, String>> = OnceLock::new();
    SET.get_or_init(|| {
        match std::env::var_os("REGIONDROP_CUDA_KERNELS").filter(|v| !v.is_empty()) {
            None => Ok(KernelSet::embedded()),
            Some(dir) => KernelSet::read(std::path::Path::new(&dir)).map_err(|e| match e {
                Error::Backend(why) => format!("REGIONDROP_CUDA_KERNELS: {why}"),
                other => other.to_string(),
            }),
        }
    })
    .as_ref()
    .map_err(|e| Error::Backend(e.clone()))
}

/// The virtual architecture for a compute capability, e.g. (8, 7) -> "compute_87".
pub fn arch_for(major: i32, minor: i32) -> String {
    format!("compute_{major}{minor}")
}

/// The newest supported architecture not newer than compute capability `major.minor` (PTX for an
/// older virtual architecture is JIT-compiled by the driver for newer devices).
pub fn fallback_arch(major: i32, minor: i32) -> Option<&'static str> {
    let cc = major * 10 + minor;
    SUPPORTED_ARCHS
        .iter()
        .copied()
        .filter(|a| a["compute_".len()..].parse::<i32>().is_ok_and(|v| v <= cc))
        .max_by_key(|a| a["compute_".len()..].parse::<i32>().unwrap_or(0))
}

/// Checks that the NVRTC shared library can be loaded and answers; never panics. Cached.
pub fn nvrtc_loadable() -> std::result::Result<(), String> {
    static PROBE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            // SAFETY: only tries dlopen on cudarc's candidate names.
            if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
                return Err(missing_lib_message("nvrtc", "libnvrtc.so.12"));
            }
            let r = std::panic::catch_unwind(|| {
                let (mut major, mut minor) = (0, 0);
                // SAFETY: plain out-parameters.
                unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
                    .result()
                    .map(|_| (major, minor))
            });
            match r {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("libnvrtc loaded but nvrtcVersion failed: {e:?}")),
                Err(p) => Err(format!("libnvrtc could not be used: {}", panic_text(&p))),
            }
        })
        .clone()
}

/// The NVRTC version (major, minor), if the library is loadable.
pub fn nvrtc_version() -> std::result::Result<(i32, i32), String> {
    nvrtc_loadable()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is loaded (checked above); plain out-parameters.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| format!("{e:?}"))?;
    Ok((major, minor))
}

/// Checks that the CUDA driver library (`libcuda.so.1`) can be loaded and initialised; never
/// panics. Cached.
pub fn driver_loadable() -> std::result::Result<(), String> {
    static PROBE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            // SAFETY: only tries dlopen on cudarc's candidate names.
            if !unsafe { cudarc::driver::sys::is_culib_present() } {
                return Err(missing_lib_message("the CUDA driver", "libcuda.so.1"));
            }
            match std::panic::catch_unwind(cudarc::driver::result::init) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!(
                    "the CUDA driver failed to initialise (cuInit): {e:?}"
                )),
                Err(p) => Err(format!(
                    "the CUDA driver library could not be used: {}",
                    panic_text(&p)
                )),
            }
        })
        .clone()
}

/// Checks that cuBLAS (`libcublas.so.12`) can be loaded; never panics. Cached. Without it the
/// backend uses its own (slower) GEMM kernel.
pub fn cublas_loadable() -> std::result::Result<(), String> {
    static PROBE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            // SAFETY: only tries dlopen on cudarc's candidate names.
            if unsafe { cudarc::cublas::sys::is_culib_present() } {
                Ok(())
            } else {
                Err(missing_lib_message("cuBLAS", "libcublas.so.12"))
            }
        })
        .clone()
}

fn missing_lib_message(what: &str, file: &str) -> String {
    format!(
        "{what} shared library ({file}) not found: install it and add its directory to \
         LD_LIBRARY_PATH before starting the process (LD_LIBRARY_PATH={})",
        std::env::var("LD_LIBRARY_PATH").unwrap_or_default()
    )
}

/// Compiled PTX of every kernel file for one architecture, as (file name, PTX text).
pub type PtxSet = Vec<(&'static str, String)>;

/// The SM version a PTX text targets (`.target sm_90` gives 90), if it says.
pub fn ptx_target(ptx: &str) -> Option<u32> {
    let rest = &ptx[ptx.find(".target sm_")? + ".target sm_".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Whether every kernel of `ptx` was compiled for sm_90 or newer, where RD_PDL_WAIT is
/// `griddepcontrol.wait` (elsewhere it compiles to nothing and programmatic dependent launch
/// would be unsafe).
pub fn waits_for_predecessors(ptx: &PtxSet) -> bool {
    !ptx.is_empty()
        && ptx
            .iter()
            .all(|(_, text)| ptx_target(text).is_some_and(|t| t >= 90))
}

/// NVRTC's options for `arch`.
pub fn compile_options(arch: &str) -> Vec<String> {
    vec![format!("--gpu-architecture={arch}"), "--std=c++14".into()]
}

/// Compiles every kernel file for `arch` (a virtual architecture such as "compute_87").
pub fn compile_ptx(arch: &str) -> Result<PtxSet> {
    nvrtc_loadable().map_err(Error::Backend)?;
    let set = kernel_set()?;
    let mut out = Vec::with_capacity(set.files.len());
    for src in &set.files {
        let opts = cudarc::nvrtc::CompileOptions {
            options: compile_options(arch),
            name: Some(src.file.to_string()),
            ..Default::default()
        };
        let text = set.full_source(src);
        let r = std::panic::catch_unwind(move || cudarc::nvrtc::compile_ptx_with_opts(text, opts));
        let ptx = match r {
            Ok(Ok(ptx)) => ptx,
            Ok(Err(e)) => {
                let detail = match &e {
                    cudarc::nvrtc::CompileError::CompileError { log, .. } => {
                        log.to_string_lossy().into_owned()
                    }
                    other => format!("{other:?}"),
                };
                return Err(Error::Backend(format!(
                    "NVRTC failed on cuda/{} for {arch}:\n{detail}",
                    src.file
                )));
            }
            Err(p) => {
                return Err(Error::Backend(format!(
                    "NVRTC panicked on cuda/{}: {}",
                    src.file,
                    panic_text(&p)
                )))
            }
        };
        out.push((src.file, ptx.to_src()));
    }
    Ok(out)
}

/// Compiles every kernel file to machine code for the real architecture of `arch` ("compute_90":
/// sm_90), as the driver does when it loads the PTX, and returns ptxas's report of each file
/// (`--ptxas-options=-v`: registers, shared memory and spills per kernel). This catches what PTX
/// alone does not: inline assembly the architecture lacks, shared memory past the static limit.
pub fn assemble(arch: &str) -> Result<Vec<(&'static str, String)>> {
    use cudarc::nvrtc::result;
    nvrtc_loadable().map_err(Error::Backend)?;
    let set = kernel_set()?;
    let sm = arch.replace("compute_", "sm_");
    let mut out = Vec::with_capacity(set.files.len());
    for src in &set.files {
        let text = std::ffi::CString::new(set.full_source(src))
            .map_err(|_| Error::Backend(format!("cuda/{}: a NUL in the source", src.file)))?;
        let name = std::ffi::CString::new(src.file).expect("file names have no NUL");
        let options = [
            format!("--gpu-architecture={sm}"),
            "--std=c++14".to_string(),
            "--ptxas-options=-v".to_string(),
        ];
        let run = || -> std::result::Result<(bool, String), String> {
            let prog = result::create_program(&text, Some(&name)).map_err(|e| format!("{e:?}"))?;
            // SAFETY: `prog` is a live program of this source; the log is read before it is
            // destroyed.
            unsafe {
                let compiled = result::compile_program(prog, &options).is_ok();
                let log = result::get_program_log(prog).map_err(|e| format!("{e:?}"))?;
                let _ = result::destroy_program(prog);
                let bytes: Vec<u8> = log
                    .iter()
                    .map(|&c| c as u8)
                    .take_while(|&b| b != 0)
                    .collect();
                Ok((compiled, String::from_utf8_lossy(&bytes).into_owned()))
            }
        };
        let (compiled, log) = std::panic::catch_unwind(run)
            .map_err(|p| {
                Error::Backend(format!(
                    "NVRTC panicked on cuda/{}: {}",
                    src.file,
                    panic_text(&p)
                ))
            })?
            .map_err(|e| Error::Backend(format!("NVRTC failed on cuda/{}: {e}", src.file)))?;
        if !compiled {
            return Err(Error::Backend(format!(
                "cuda/{} does not assemble for {sm}:\n{log}",
                src.file
            )));
        }
        out.push((src.file, log));
    }
    Ok(out)
}

/// [`compile_ptx`], once per process and architecture, and kept on disk between processes where
/// [`super::ptx_cache::default_dir`] gives a directory (kernels read from elsewhere, in its
/// `other` subdirectory, so that timing two versions in turn compiles each once).
pub fn compile_ptx_cached(arch: &str) -> Result<Arc<PtxSet>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<PtxSet>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(p) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(arch) {
        return Ok(p.clone());
    }
    let other = kernel_set()?.dir.is_some();
    let set = Arc::new(match super::ptx_cache::default_dir() {
        Some(dir) if other => super::ptx_cache::load_or_compile(&dir.join("other"), arch)?,
        Some(dir) => super::ptx_cache::load_or_compile(&dir, arch)?,
        None => compile_ptx(arch)?,
    });
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(arch.to_string(), set.clone());
    Ok(set)
}

/// Whether `ptx` defines kernel `name` (an `.entry` directive).
pub fn ptx_has_entry(ptx: &str, name: &str) -> bool {
    ptx.lines().any(|l| {
        let l = l.trim_start();
        let l = l.strip_prefix(".visible ").unwrap_or(l).trim_start();
        l.strip_prefix(".entry ")
            .map(|r| {
                r.trim_start()
                    .strip_prefix(name)
                    .is_some_and(|r| r.starts_with('(') || r.trim().is_empty())
            })
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_lists_match_the_sources() {
        for s in SOURCES {
            assert_eq!(declared_entries(s.source), s.entries, "cuda/{}", s.file);
        }
        let mut all: Vec<&str> = SOURCES
            .iter()
            .flat_map(|s| s.entries.iter().copied())
            .collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "kernel names must be unique");
    }

    /// Programmatic dependent launch is safe only if no kernel reads what the kernel before it
    /// wrote, or writes, before RD_PDL_WAIT. Every kernel starts with it, except the fused
    /// convolutions, which start with their block function, and that with rd_rows_begin: it
    /// reads only weights and tile lists, then waits, before anything reads the input or writes
    /// (the pipelined block likewise, with copies of weights only before its wait).
    #[test]
    fn every_kernel_waits_for_its_predecessor_first() {
        const KEY: &str = "extern \"C\" __global__ void ";
        let body_of = |src: &'static str, at: usize| {
            let rest = &src[at..];
            &rest[rest.find('{').expect("a body") + 1..]
        };
        for s in SOURCES {
            for (at, _) in s.source.match_indices(KEY) {
                let name = entry_name(&s.source[at + KEY.len()..]);
                let body = body_of(s.source, at).trim_start();
                let first = if name.starts_with("rd_conv_rows") {
                    "rd_conv_rows"
                } else {
                    "RD_PDL_WAIT();"
                };
                assert!(
                    body.starts_with(first),
                    "cuda/{}: {name} does not start with {first}",
                    s.file
                );
            }
        }
        let conv = SOURCES.iter().find(|s| s.file == "conv.cu").unwrap().source;
        for block in ["rd_conv_rows_block(", "rd_conv_rows_tc_block("] {
            let at = conv.find(block).expect(block);
            let body = body_of(conv, at);
            let begin = body
                .find("rd_rows_begin(")
                .expect("begins with rd_rows_begin");
            assert!(
                !body[..begin].contains("in[") && !body[..begin].contains("out["),
                "{block} touches memory before rd_rows_begin"
            );
        }
        // The pipelined block requests only weights before its PDL wait.
        let at = conv.find("void rd_conv_rows_pipe_block(").unwrap();
        let body = body_of(conv, at);
        let wait = body
            .find("RD_PDL_WAIT();")
            .expect("rd_conv_rows_pipe_block waits");
        assert!(body.find("rd_rows_prepare(").unwrap() < wait);
        assert!(
            !body[..wait].contains("rd_pipe_fetch_a") && !body[..wait].contains("in["),
            "rd_conv_rows_pipe_block reads the input before it waits"
        );
        let at = conv.find("bool rd_rows_begin(").unwrap();
        let body = body_of(conv, at);
        let body = &body[..body.find("\n}").unwrap()];
        let wait = body.find("RD_PDL_WAIT();").expect("rd_rows_begin waits");
        assert!(body.find("rd_rows_prepare(").unwrap() < wait);
        assert!(
            !body[..wait].contains("in[") && !body[wait..].contains("rd_rows_fetch_a"),
            "rd_rows_begin reads the input before it waits"
        );
    }

    #[test]
    fn entry_names_skip_launch_bounds() {
        assert_eq!(entry_name("rd_pool(const float* in"), "rd_pool");
        assert_eq!(
            entry_name("__launch_bounds__(RD_FR_THREADS, 4) rd_conv_rows_pipe(P)"),
            "rd_conv_rows_pipe"
        );
        let src = "extern \"C\" __global__ void __launch_bounds__(256, 4) a_b(int x) {}\n\
                   extern \"C\" __global__ void c(int y) {}";
        assert_eq!(declared_entries(src), ["a_b", "c"]);
    }

    #[test]
    fn ptx_targets_are_read_from_the_text() {
        assert_eq!(
            ptx_target(".version 8.0\n.target sm_90\n.address_size 64"),
            Some(90)
        );
        assert_eq!(ptx_target(".target sm_87, debug"), Some(87));
        assert_eq!(ptx_target("no target"), None);
        let set = |t: &str| {
            vec![
                ("a.cu", format!(".target {t}\n")),
                ("b.cu", ".target sm_90\n".into()),
            ]
        };
        assert!(waits_for_predecessors(&set("sm_90")));
        assert!(!waits_for_predecessors(&set("sm_89")));
        assert!(!waits_for_predecessors(&Vec::new()));
    }

    #[test]
    fn every_cu_file_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cuda");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".cu"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = SOURCES.iter().map(|s| s.file.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn kernels_read_from_a_directory() {
        let cuda = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cuda");
        let read = KernelSet::read(&cuda).unwrap();
        let ours = KernelSet::embedded();
        assert_eq!(read.common, ours.common);
        assert_eq!(read.dir.as_deref(), Some(cuda.as_path()));
        for (r, o) in read.files.iter().zip(&ours.files) {
            assert_eq!((r.file, r.source, r.entries), (o.file, o.source, o.entries));
        }
        assert_eq!(
            read.full_source(&read.files[2]),
            ours.full_source(&ours.files[2])
        );
        let empty = std::env::temp_dir().join(format!("rd-no-kernels-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        let e = KernelSet::read(&empty).unwrap_err().to_string();
        assert!(e.contains("input.cu") || e.contains("common.cuh"), "{e}");
        let _ = std::fs::remove_dir(&empty);
    }

    #[test]
    fn sources_need_no_headers() {
        let includes = |t: &str| t.lines().any(|l| l.trim_start().starts_with("#include"));
        for s in SOURCES {
            assert!(!includes(s.source), "cuda/{} must not #include", s.file);
        }
        assert!(!includes(COMMON));
    }

    #[test]
    fn entry_directive_matching() {
        let ptx = ".visible .entry rd_pool(\n.param .u64 x\n)\n.visible .entry rd_pool_x(\n";
        assert!(ptx_has_entry(ptx, "rd_pool"));
        assert!(ptx_has_entry(ptx, "rd_pool_x"));
        assert!(!ptx_has_entry(ptx, "rd_poo"));
        assert_eq!(arch_for(8, 7), "compute_87");
        assert_eq!(fallback_arch(12, 0), Some("compute_90"));
        assert_eq!(fallback_arch(8, 9), Some("compute_89"));
        assert_eq!(fallback_arch(8, 8), Some("compute_87"));
        assert_eq!(fallback_arch(7, 5), None);
    }
}
