//! The vector instruction sets the CPU kernels may use, detected once per process. Kernels written
//! as plain loops are compiled a second and third time with AVX2+FMA or AVX-512 enabled (see
//! `vectorized` and `dispatch!`), so the same source vectorises to the widest registers the
//! machine has.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Baseline,
    /// AVX2 and FMA.
    Avx2,
    /// AVX-512 F (with AVX2 and FMA).
    Avx512,
}

/// The widest level this CPU supports (cached after the first call).
#[inline]
pub fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(detect)
}

/// The CPU's level, lowered to `REGIONDROP_SIMD` (`avx2` or `baseline`) where that is set: to
/// run and test the kernels other machines use.
fn detect() -> Level {
    let cap = match std::env::var("REGIONDROP_SIMD").as_deref() {
        Ok("baseline") => Level::Baseline,
        Ok("avx2") => Level::Avx2,
        _ => Level::Avx512,
    };
    cpu_level().min(cap)
}

fn cpu_level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        if avx2 && is_x86_feature_detected!("avx512f") {
            return Level::Avx512;
        }
        if avx2 {
            return Level::Avx2;
        }
    }
    Level::Baseline
}

/// Runs `f` compiled for the detected level: `f` (an `#[inline(always)]` closure) is inlined into
/// a wrapper built with AVX2+FMA or AVX-512 enabled, so the loops it contains vectorise to the
/// widest registers the machine has. `f` must be safe for any input: the wrappers only add target
/// features.
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        match level() {
            // SAFETY: the CPU has the features (detected at run time).
            Level::Avx512 => return unsafe { avx512(f) },
            Level::Avx2 => return unsafe { avx2(f) },
            Level::Baseline => {}
        }
    }
    f()
}

/// Defines `$name` to run the `#[inline(always)]` function `$body` compiled for the detected level
/// (see `vectorized`).
macro_rules! dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) => $body:path) => {
        $(#[$m])*
        #[inline]
        $vis fn $name($($arg: $ty),*) {
            $crate::simd::vectorized(
                #[inline(always)]
                move || $body($($arg),*),
            )
        }
    };
}
pub(crate) use dispatch;
