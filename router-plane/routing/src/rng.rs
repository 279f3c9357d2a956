//! The one seeded random number generator of the routing core's users: property tests,
//! the cluster simulator and the soak. xorshift64*: reproducible from its seed on every
//! platform, fast, and no extra crates; not for anything secret.

/// xorshift64* with a 64-bit state.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed` (0 is taken as 1: xorshift never leaves 0).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n` > 0; the modulo bias is below 2^-40 for the small `n` used).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in (0, 1).
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// A standard normal draw (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_draws_and_draws_stay_in_range() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut r = Rng::new(0);
        let mut seen = [0u32; 5];
        for _ in 0..10_000 {
            let u = r.unit();
            assert!(u > 0.0 && u < 1.0);
            seen[r.below(5) as usize] += 1;
        }
        // Every value of a small range comes up, none far from its share.
        assert!(seen.iter().all(|&n| (1500..2500).contains(&n)), "{seen:?}");
    }
}
