//! A small deterministic pseudo-random generator (64-bit LCG, Knuth's MMIX constants) for the
//! benchmark's forced masks and the tests' synthetic data: the same numbers on every machine.

#[derive(Clone, Debug)]
pub struct Lcg(pub u64);

impl Lcg {
    /// The next 32 random bits (the state's high half).
    pub fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 32) as u32
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u32() as u64 * n as u64) >> 32) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 24) as f32
    }

    /// Uniform in [-scale, scale).
    pub fn signed(&mut self, scale: f32) -> f32 {
        (self.unit() - 0.5) * 2.0 * scale
    }

    /// `n` values uniform in [-scale, scale).
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.signed(scale)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Lcg;

    #[test]
    fn ranges_hold_and_seeds_repeat() {
        let (a, b): (Vec<u32>, Vec<u32>) = {
            let (mut a, mut b) = (Lcg(3), Lcg(3));
            (0..100).map(|_| (a.next_u32(), b.next_u32())).unzip()
        };
        assert_eq!(a, b);
        let mut a = Lcg(3);
        for _ in 0..1000 {
            let u = a.unit();
            assert!((0.0..1.0).contains(&u));
            assert!(a.below(7) < 7);
            assert!(a.signed(2.0).abs() <= 2.0);
        }
        assert_ne!(Lcg(3).next_u32(), Lcg(4).next_u32());
    }
}
