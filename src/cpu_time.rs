//! CPU time of the whole process, user and system, every thread: what frames cost the other
//! cameras of the process, beside their latency (a wait that spins on the GPU, a pool's
//! workers, copies into pinned memory).

/// Milliseconds of CPU time the process has used so far.
pub fn process_cpu_ms() -> f64 {
    // SAFETY: getrusage writes the struct it is given; RUSAGE_SELF is always valid.
    let u = unsafe {
        let mut u = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    ms(u.ru_utime) + ms(u.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::process_cpu_ms;

    #[test]
    fn cpu_time_grows_with_work() {
        let t0 = process_cpu_ms();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 30 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let used = process_cpu_ms() - t0;
        assert!(
            used >= 10.0,
            "30 ms of spinning counted {used} ms of CPU time"
        );
    }
}
