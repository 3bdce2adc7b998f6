//! Wider vectors where the CPU has them, with unchanged arithmetic.
//!
//! The release binary targets baseline x86-64 (SSE2: two f64 per vector).
//! [`wide`] runs a closure compiled for AVX2 (four f64 per vector) when the
//! CPU has it, which suits the lockstep fitting lanes (four voxels). AVX2
//! alone adds no fused multiply-add, so every floating-point operation gives
//! the same result as in the baseline build: results are equal bit for bit
//! on any x86-64 CPU (the lockstep tests compare against the baseline path).

/// Runs `f` compiled for AVX2 when the CPU has it (the check is cached by
/// the standard library), else as built. Code inlined into `f` (the
/// closure and the `#[inline]` functions it calls) gets the wider vectors;
/// calls it makes to other functions run as built.
#[inline]
pub fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            #[allow(unsafe_code)]
            // SAFETY: `avx2` is compiled for the AVX2 feature only, and the
            // CPU has been checked to have it just above.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// `f()` with AVX2 enabled for the code inlined into it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    #[test]
    fn wide_returns_what_the_closure_returns() {
        // The same sum through the wide path and directly: equal bits.
        let v: Vec<f64> = (0..1000).map(|i| 1.0 / (1.0 + i as f64)).collect();
        let sum = |v: &[f64]| {
            let mut acc = [0.0f64; 4];
            for c in v.chunks_exact(4) {
                for l in 0..4 {
                    acc[l] += c[l] * c[l];
                }
            }
            (acc[0] + acc[1]) + (acc[2] + acc[3])
        };
        assert_eq!(super::wide(|| sum(&v)).to_bits(), sum(&v).to_bits());
    }
}
