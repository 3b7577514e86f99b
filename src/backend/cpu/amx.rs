//! Matrix products on Intel AMX tiles (Sapphire Rapids and newer): bf16 operands, f32 sums.
//! `tdpbf16ps` multiplies a 16×32 bf16 tile of A by a 32×16 bf16 tile of B (packed in pairs of K,
//! the "VNNI" layout) into a 16×16 f32 tile of C. Each call computes 32×32 blocks of C from four
//! accumulator tiles, streaming K in steps of 32; B's columns are padded to whole blocks.
//!
//! The Rust compiler has no stable AMX intrinsics, so the instructions are inline assembly; each
//! block of C is one `asm!` statement that loads the tile configuration and releases it.
//!
//! Asking for the tiles (`available`) is process-wide: from then on the kernel refuses alternate
//! signal stacks smaller than the AMX signal frame (about 11 KiB) to every thread of the process.

#[cfg(target_arch = "x86_64")]
use std::arch::asm;
use std::sync::OnceLock;

/// Rows of A (and C) per block: two tiles of 16.
pub const BLOCK_M: usize = 32;
/// K per tile step.
pub const STEP_K: usize = 32;
/// Columns of B (and C) per tile.
pub const TILE_N: usize = 16;
/// Columns of B (and C) per block: two tiles.
pub const BLOCK_N: usize = 32;

/// K and N of a K × N product padded to what the tiles compute: whole steps of K, whole blocks
/// of N (the padding is zero).
pub fn padded(k: usize, n: usize) -> (usize, usize) {
    (round_up(k.max(1), STEP_K), round_up(n.max(1), BLOCK_N))
}

/// Whether this CPU has AMX-BF16 and the kernel lets this process use the tile registers (asked
/// once, with `arch_prctl(ARCH_REQ_XCOMP_PERM)`).
pub fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            // CPUID leaf 7: EDX bit 22 AMX-BF16, bit 24 AMX-TILE.
            #[allow(unused_unsafe)] // safe functions from Rust 1.94 on
            let max = unsafe { std::arch::x86_64::__cpuid(0) }.eax;
            if max < 7 {
                return false;
            }
            #[allow(unused_unsafe)]
            let edx = unsafe { std::arch::x86_64::__cpuid_count(7, 0) }.edx;
            if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 {
                return false;
            }
            const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: libc::c_long = 18;
            // SAFETY: a plain system call; it only changes which state the kernel saves for us.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_arch_prctl,
                    ARCH_REQ_XCOMP_PERM,
                    XFEATURE_XTILEDATA,
                )
            };
            r == 0
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

/// f32 to bf16 bits, rounded to nearest even (as `vcvtneps2bf16`); NaNs stay (quiet) NaNs.
#[inline(always)]
pub fn bf16(x: f32) -> u16 {
    let b = x.to_bits();
    let quiet_nan = ((b >> 16) as u16) | 0x40;
    let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
    // A select rather than an early return, so loops over slices vectorise.
    if x.is_nan() {
        quiet_nan
    } else {
        rounded
    }
}

/// `dst.len() / cpad` pixels of `cin` f32 channels, `stride` floats apart in `src`, to bf16
/// pixels of `cpad` ≥ cin values at `dst`: rounded as [`bf16`] rounds, zeros past `cin`. With
/// AVX512-BF16 (every CPU with AMX has it), 16 values per instruction, subnormal inputs read as
/// zero.
pub fn pixels_to_bf16(src: &[f32], stride: usize, cin: usize, dst: &mut [u16], cpad: usize) {
    let n = dst.len() / cpad;
    assert!(cin <= cpad && (n == 0 || src.len() >= (n - 1) * stride + cin));
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bf16")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
    {
        // SAFETY: the CPU has the features (checked above); the lengths were checked.
        return unsafe { pixels_to_bf16_avx512(src, stride, cin, dst, cpad) };
    }
    for (p, px) in dst.chunks_exact_mut(cpad).enumerate() {
        for (d, &v) in px.iter_mut().zip(&src[p * stride..p * stride + cin]) {
            *d = bf16(v);
        }
        px[cin..].fill(0);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512bf16,avx512f,avx512bw,avx512vl")]
unsafe fn pixels_to_bf16_avx512(
    src: &[f32],
    stride: usize,
    cin: usize,
    dst: &mut [u16],
    cpad: usize,
) {
    use std::arch::x86_64::*;
    let mask = |n: usize| ((1u32 << n.min(16)) - 1) as __mmask16;
    for p in 0..dst.len() / cpad {
        let (s, d) = (src.as_ptr().add(p * stride), dst.as_mut_ptr().add(p * cpad));
        for c in (0..cpad).step_by(16) {
            // Channels past cin are zeros, not loads (their address may lie past `src`).
            let v = if c < cin {
                _mm512_maskz_loadu_ps(mask(cin - c), s.add(c))
            } else {
                _mm512_setzero_ps()
            };
            let packed = std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v));
            _mm256_mask_storeu_epi16(d.add(c).cast(), mask(cpad - c), packed);
        }
    }
}

/// bf16 bits to f32 (exact).
#[cfg(test)]
pub fn f32_of(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// `n` rounded up to a multiple of `m`.
pub fn round_up(n: usize, m: usize) -> usize {
    n.div_ceil(m) * m
}

/// B (K × N, row-major f32) in bf16 tiles of 32 K × 16 N: tile (kb, nb) holds 16 rows of 64
/// bytes, row r being the pairs (B[32kb + 2r][16nb + j], B[32kb + 2r + 1][16nb + j]) for j < 16.
/// K and N are padded with zeros ([`padded`]).
pub struct PackedB {
    data: Vec<u16>,
    /// K and N as [`padded`] gives them.
    pub k_pad: usize,
    pub n_pad: usize,
}

impl PackedB {
    pub fn new(b: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(b.len(), k * n, "B is K × N");
        let (k_pad, n_pad) = padded(k, n);
        let (kbs, nbs) = (k_pad / STEP_K, n_pad / TILE_N);
        let mut data = vec![0u16; kbs * nbs * 16 * 32];
        for kb in 0..kbs {
            for nb in 0..nbs {
                let tile = &mut data[(kb * nbs + nb) * 512..(kb * nbs + nb + 1) * 512];
                for r in 0..16 {
                    for j in 0..TILE_N {
                        let col = nb * TILE_N + j;
                        for h in 0..2 {
                            let row = kb * STEP_K + 2 * r + h;
                            if row < k && col < n {
                                tile[r * 32 + 2 * j + h] = bf16(b[row * n + col]);
                            }
                        }
                    }
                }
            }
        }
        PackedB { data, k_pad, n_pad }
    }

    /// Floats' worth of memory held (two bf16 per float).
    pub fn floats(&self) -> usize {
        self.data.len() / 2
    }

    pub(super) fn tile(&self, kb: usize, nb: usize) -> *const u16 {
        self.data[(kb * (self.n_pad / TILE_N) + nb) * 512..].as_ptr()
    }
}

/// The tile configuration: palette 1, eight tiles of 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

const CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// C (m × b.n_pad f32, row stride `ldc` floats) = A (m × b.k_pad bf16, row stride `lda`
/// elements) · B, for `m` a multiple of [`BLOCK_M`].
///
/// Each 32×32 (or 32×16) block of C is one `asm!` statement from `ldtilecfg` to `tilerelease`
/// that declares every tile register it uses, so no tile state lives between statements.
///
/// # Safety
/// [`available`] must be true. A must hold `m` rows of `b.k_pad` values (the padding zero), C
/// `m` rows of `b.n_pad` floats.
pub unsafe fn gemm(m: usize, a: *const u16, lda: usize, b: &PackedB, c: *mut f32, ldc: usize) {
    assert!(
        m.is_multiple_of(BLOCK_M) && lda >= b.k_pad && ldc >= b.n_pad,
        "AMX product: {m} rows, lda {lda} for K {}, ldc {ldc} for N {}",
        b.k_pad,
        b.n_pad
    );
    let (kbs, nbs) = (b.k_pad / STEP_K, b.n_pad / TILE_N);
    for mb in (0..m).step_by(BLOCK_M) {
        for nb in (0..nbs).step_by(BLOCK_N / TILE_N) {
            block(
                a.add(mb * lda),
                lda,
                b.tile(0, nb),
                nbs,
                kbs,
                c.add(mb * ldc + nb * TILE_N),
                ldc,
            );
        }
    }
}

/// One 32×32 block of C at `c`, from the B tiles at `b0` and the next one; `kbs` steps of K,
/// B's tiles `nbs` apart from one step to the next.
#[inline(always)]
unsafe fn block(
    a: *const u16,
    lda: usize,
    b0: *const u16,
    nbs: usize,
    kbs: usize,
    c: *mut f32,
    ldc: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        let cfg = &CONFIG as *const TileConfig;
        let (sa, sc, bstep) = (lda * 2, ldc * 4, nbs * 1024);
        let (a1, c1) = (a.add(16 * lda), c.add(16 * ldc));
        asm!(
            "ldtilecfg [{cfg}]",
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "tileloadd tmm4, [{a0} + {sa}*1]",
            "tileloadd tmm5, [{a1} + {sa}*1]",
            "tileloadd tmm6, [{b0} + {sb}*1]",
            "tileloadd tmm7, [{b0} + {sb}*1 + 1024]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a0}, 64",
            "add {a1}, 64",
            "add {b0}, {bstep}",
            "dec {k}",
            "jnz 2b",
            "tilestored [{c0} + {sc}*1], tmm0",
            "tilestored [{c0} + {sc}*1 + 64], tmm1",
            "tilestored [{c1} + {sc}*1], tmm2",
            "tilestored [{c1} + {sc}*1 + 64], tmm3",
            "tilerelease",
            cfg = in(reg) cfg,
            a0 = inout(reg) a => _,
            a1 = inout(reg) a1 => _,
            b0 = inout(reg) b0 => _,
            k = inout(reg) kbs => _,
            sa = in(reg) sa,
            sb = in(reg) 64usize,
            bstep = in(reg) bstep,
            c0 = in(reg) c,
            c1 = in(reg) c1,
            sc = in(reg) sc,
            out("tmm0") _, out("tmm1") _, out("tmm2") _, out("tmm3") _,
            out("tmm4") _, out("tmm5") _, out("tmm6") _, out("tmm7") _,
            options(nostack)
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (a, lda, b0, nbs, kbs, c, ldc);
        unreachable!("AMX exists on x86-64 only (`available` is false elsewhere)");
    }
}

/// One 32×32 block of C (32 rows of 32 floats, contiguous) at `c`, for A tiles read in place:
/// step `k` of K loads A's two tiles of 16 rows from `a + offs[k]` bytes and 16 rows of `sa`
/// bytes further, rows `sa` bytes apart; B's two tiles from `b0` on, `bstep` bytes further per
/// step. For products whose rows of A lie in memory at a fixed stride without being gathered.
/// With `half`, only C's first 16 rows (one tile of A).
///
/// # Safety
/// [`available`] must be true; every A row read (64 bytes at each offset, for 32 rows, or 16
/// with `half`) and the `offs.len()` steps of B tiles must be in bounds; `offs` must not be
/// empty; C must hold 1024 floats.
#[inline(always)]
pub unsafe fn block_in_place(
    a: *const u16,
    sa: usize,
    offs: &[usize],
    b0: *const u16,
    bstep: usize,
    c: *mut f32,
    half: bool,
) {
    debug_assert!(!offs.is_empty());
    #[cfg(target_arch = "x86_64")]
    {
        let cfg = &CONFIG as *const TileConfig;
        if half {
            asm!(
                "ldtilecfg [{p}]",
                "tilezero tmm0",
                "tilezero tmm1",
                "2:",
                "mov {p}, [{tab}]",
                "add {p}, {a0}",
                "tileloadd tmm4, [{p} + {sa}*1]",
                "tileloadd tmm6, [{b0} + {sb}*1]",
                "tileloadd tmm7, [{b0} + {sb}*1 + 1024]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "add {tab}, 8",
                "add {b0}, {bstep}",
                "dec {k}",
                "jnz 2b",
                "tilestored [{c0} + {sc}*1], tmm0",
                "tilestored [{c0} + {sc}*1 + 64], tmm1",
                "tilerelease",
                p = inout(reg) cfg => _,
                a0 = in(reg) a,
                tab = inout(reg) offs.as_ptr() => _,
                b0 = inout(reg) b0 => _,
                k = inout(reg) offs.len() => _,
                sa = in(reg) sa,
                sb = in(reg) 64usize,
                bstep = in(reg) bstep,
                c0 = in(reg) c,
                sc = in(reg) 128usize,
                out("tmm0") _, out("tmm1") _, out("tmm4") _, out("tmm6") _, out("tmm7") _,
                options(nostack)
            );
            return;
        }
        asm!(
            "ldtilecfg [{p}]",
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "mov {p}, [{tab}]",
            "add {p}, {a0}",
            "tileloadd tmm4, [{p} + {sa}*1]",
            "lea {p}, [{p} + {sa}*8]",
            "lea {p}, [{p} + {sa}*8]",
            "tileloadd tmm5, [{p} + {sa}*1]",
            "tileloadd tmm6, [{b0} + {sb}*1]",
            "tileloadd tmm7, [{b0} + {sb}*1 + 1024]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {tab}, 8",
            "add {b0}, {bstep}",
            "dec {k}",
            "jnz 2b",
            "tilestored [{c0} + {sc}*1], tmm0",
            "tilestored [{c0} + {sc}*1 + 64], tmm1",
            "lea {c0}, [{c0} + {sc}*8]",
            "lea {c0}, [{c0} + {sc}*8]",
            "tilestored [{c0} + {sc}*1], tmm2",
            "tilestored [{c0} + {sc}*1 + 64], tmm3",
            "tilerelease",
            p = inout(reg) cfg => _,
            a0 = in(reg) a,
            tab = inout(reg) offs.as_ptr() => _,
            b0 = inout(reg) b0 => _,
            k = inout(reg) offs.len() => _,
            sa = in(reg) sa,
            sb = in(reg) 64usize,
            bstep = in(reg) bstep,
            c0 = inout(reg) c => _,
            sc = in(reg) 128usize,
            out("tmm0") _, out("tmm1") _, out("tmm2") _, out("tmm3") _,
            out("tmm4") _, out("tmm5") _, out("tmm6") _, out("tmm7") _,
            options(nostack)
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (a, sa, offs, b0, bstep, c, half);
        unreachable!("AMX exists on x86-64 only (`available` is false elsewhere)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Lcg;

    /// Pixels of 3, 16, 33 and 40 channels, packed and strided, padded or not, to bf16: every
    /// value as `bf16` rounds it, zeros in the padding, NaN stays NaN.
    #[test]
    fn pixels_to_bf16_equals_bf16_on_normal_values() {
        let mut rng = Lcg(9);
        let specials = [
            0.0,
            -0.0,
            1.0,
            f32::MAX,
            f32::MIN_POSITIVE,
            f32::INFINITY,
            1.0 + 1.0 / 256.0,
            f32::from_bits(0x3f80_8000), // a tie: rounds to even
        ];
        for (cin, cpad, stride, n) in [
            (3, 4, 3, 21),
            (16, 16, 20, 5),
            (33, 34, 40, 7),
            (40, 64, 40, 3),
        ] {
            let mut src = rng.vec((n - 1) * stride + cin, 100.0);
            src[..specials.len()].copy_from_slice(&specials);
            let mut got = vec![0xffffu16; n * cpad];
            pixels_to_bf16(&src, stride, cin, &mut got, cpad);
            for (p, px) in got.chunks_exact(cpad).enumerate() {
                for (c, &g) in px.iter().enumerate() {
                    let want = if c < cin {
                        bf16(src[p * stride + c])
                    } else {
                        0
                    };
                    assert_eq!(g, want, "{cin} channels in {cpad}, pixel {p}, channel {c}");
                }
            }
        }
        let mut nan = [0u16; 2];
        pixels_to_bf16(&[f32::NAN], 1, 1, &mut nan, 2);
        assert!(f32_of(nan[0]).is_nan() && nan[1] == 0);
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16(1.0), 0x3f80);
        assert_eq!(f32_of(bf16(1.0)), 1.0);
        // 1 + 2⁻⁸ lies half-way between two bf16 values: ties go to the even one (1.0).
        assert_eq!(f32_of(bf16(1.0 + 1.0 / 256.0)), 1.0);
        assert_eq!(f32_of(bf16(1.0 + 3.0 / 256.0)), 1.0 + 4.0 / 256.0);
        assert_eq!(f32_of(bf16(-2.5)), -2.5);
        assert_eq!(f32_of(bf16(f32::INFINITY)), f32::INFINITY);
        assert_eq!(
            f32_of(bf16(f32::MAX)),
            f32::INFINITY,
            "past the largest bf16: Inf"
        );
        for nan in [
            f32::NAN,
            f32::from_bits(0x7f80_0001),
            f32::from_bits(0xffff_ffff),
        ] {
            assert!(f32_of(bf16(nan)).is_nan(), "{:#x}", nan.to_bits());
        }
    }

    /// The tile product equals f32 sums of the bf16-rounded operands, for sizes that pad K and N
    /// (N = 16, 40 and 48 fill part of a 32-column block).
    #[test]
    fn gemm_equals_the_sums_of_rounded_operands() {
        if !available() {
            println!("SKIPPED: gemm_equals_the_sums_of_rounded_operands: no AMX-BF16 on this CPU (or the kernel refused its tiles)");
            return;
        }
        let mut rng = Lcg(3);
        for (m, k, n) in [(32, 32, 16), (64, 27, 32), (32, 288, 48), (96, 100, 40)] {
            let a = rng.vec(m * k, 1.0);
            let b = rng.vec(k * n, 0.5);
            let packed = PackedB::new(&b, k, n);
            let lda = packed.k_pad;
            let mut a16 = vec![0u16; m * lda];
            for r in 0..m {
                for i in 0..k {
                    a16[r * lda + i] = bf16(a[r * k + i]);
                }
            }
            let ldc = packed.n_pad + 3;
            let mut c = vec![f32::NAN; m * ldc];
            unsafe { gemm(m, a16.as_ptr(), lda, &packed, c.as_mut_ptr(), ldc) };
            for r in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|i| {
                            f32_of(bf16(a[r * k + i])) as f64 * f32_of(bf16(b[i * n + j])) as f64
                        })
                        .sum();
                    let got = c[r * ldc + j] as f64;
                    assert!(
                        (got - want).abs() <= 1e-5 * (1.0 + want.abs()) * (k as f64).sqrt(),
                        "{m}x{k}x{n} at ({r}, {j}): {got} vs {want}"
                    );
                }
                for j in n..packed.n_pad {
                    assert_eq!(c[r * ldc + j], 0.0, "padding column {j}");
                }
            }
        }
    }
}

#[cfg(test)]
mod bench {
    use super::*;

    /// `cargo test --release --lib bench_amx_gemm -- --ignored --nocapture`: GMAC/s of the tile
    /// product on one thread for a few layer shapes.
    #[test]
    #[ignore]
    fn bench_amx_gemm() {
        if !available() {
            println!("no AMX");
            return;
        }
        for (m, k, n) in [
            (43264, 27, 32),
            (10816, 288, 32),
            (2720, 1152, 128),
            (704, 1152, 128),
            (192, 2304, 256),
        ] {
            let b = vec![0.5f32; k * n];
            let p = PackedB::new(&b, k, n);
            let a = vec![bf16(1.0); m * p.k_pad];
            let mut c = vec![0f32; m * p.n_pad];
            let mut best = f64::MAX;
            for _ in 0..20 {
                let t = std::time::Instant::now();
                unsafe { gemm(m, a.as_ptr(), p.k_pad, &p, c.as_mut_ptr(), p.n_pad) };
                best = best.min(t.elapsed().as_secs_f64());
            }
            let macs = (m * k * n) as f64;
            println!(
                "{m}x{k}x{n}: {:.3} ms, {:.0} GMAC/s",
                best * 1e3,
                macs / best / 1e9
            );
        }
    }
}
