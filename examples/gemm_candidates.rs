//! Times the GEMM crates we considered on the convolution shapes of the default model (NanoDet at
//! 416×416, im2col layout: M output pixels × K = kh·kw·Cin, N = Cout), side by side in one run.
//!
//!   cargo run --release --example gemm_candidates [threads]
//!
//! `gemm` runs with rayon parallelism, `matrixmultiply` with its `threading` feature
//! (MATMUL_NUM_THREADS is set to the same thread count).

use std::time::Instant;

/// (name, M, K, N) from NanoDet's layers.
const SHAPES: [(&str, usize, usize, usize); 6] = [
    ("3x3/2 3->32 @208 (first)", 208 * 208, 27, 32),
    ("3x3 32->32 @104", 104 * 104, 288, 32),
    ("3x3 128->128 @52", 52 * 52, 1152, 128),
    ("1x1 128->124 @52", 52 * 52, 128, 124),
    ("3x3 256->256 @13", 13 * 13, 2304, 256),
    ("3x3 32->32 @104, 10% rows", 104 * 104 / 10, 288, 32),
];

fn median_ms(mut f: impl FnMut(), reps: usize) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[reps / 2]
}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    std::env::set_var("MATMUL_NUM_THREADS", threads.to_string());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    println!("threads {threads}");
    println!(
        "{:<28} {:>10} {:>16} {:>10}",
        "shape", "gemm ms", "matrixmultiply", "GMAC/s"
    );
    for (name, m, k, n) in SHAPES {
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 104729) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let mut c1 = vec![0f32; m * n];
        let mut c2 = vec![0f32; m * n];
        let reps = 20;
        let t_gemm = pool.install(|| {
            median_ms(
                || unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        c1.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        a.as_ptr(),
                        1,
                        k as isize,
                        b.as_ptr(),
                        1,
                        n as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::Rayon(threads),
                    )
                },
                reps,
            )
        });
        let t_mm = median_ms(
            || unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    k as isize,
                    1,
                    b.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    c2.as_mut_ptr(),
                    n as isize,
                    1,
                )
            },
            reps,
        );
        let max_diff = c1
            .iter()
            .zip(&c2)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(max_diff < 1e-2, "{name}: the two disagree by {max_diff}");
        let gmacs = (m * n * k) as f64 / 1e6 / t_gemm.min(t_mm);
        println!("{name:<28} {t_gemm:>10.3} {t_mm:>16.3} {gmacs:>10.1}");
    }
}
