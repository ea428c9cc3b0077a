//! The encoder's elementwise steps (GELU, softmax, layer norm), compiled three times: for
//! AVX-512, for AVX2 with FMA, and for baseline x86-64 (which the crate is built for), the widest
//! the CPU has chosen once at run time. Everything is branch-free and sums run in 16 lanes, so the
//! loops vectorise without reassociating floating point behind the compiler's back.

use rayon::prelude::*;

/// Lanes of a vectorised sum.
const LANES: usize = 16;

/// Runs `$body` (an expression using the function's arguments) compiled for the best instruction
/// set this CPU has.
macro_rules! dispatched {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn generic($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
                fn avx512($($arg: $ty),*) $(-> $ret)? { generic($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? { generic($($arg),*) }
                // SAFETY: `level()` saw these features on this CPU.
                #[expect(unsafe_code, reason = "calling a function compiled for instruction sets this CPU was seen to have")]
                match level() {
                    Level::Avx512 => return unsafe { avx512($($arg),*) },
                    Level::Avx2 => return unsafe { avx2($($arg),*) },
                    Level::Baseline => {}
                }
            }
            generic($($arg),*)
        }
    };
}

#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg(target_arch = "x86_64")]
enum Level {
    Avx512,
    Avx2,
    Baseline,
}

#[cfg(target_arch = "x86_64")]
fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") && is_x86_feature_detected!("avx512dq") && is_x86_feature_detected!("fma") {
            Level::Avx512
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            Level::Avx2
        } else {
            Level::Baseline
        }
    })
}

dispatched! {
    /// GELU (with erf, as BERT defines it) of every value.
    pub(crate) fn gelu(values: &mut [f32]) {
        values.iter_mut().for_each(|v| *v = gelu_one(*v));
    }
}

dispatched! {
    /// Softmax of one row of scores, in place.
    pub(crate) fn softmax(row: &mut [f32]) {
        let max = lanes_fold(row, f32::NEG_INFINITY, f32::max);
        row.iter_mut().for_each(|v| *v = fast_exp(*v - max));
        let inv = 1.0 / sum(row);
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

dispatched! {
    /// The dot product of `query` with every row of `rows` (rows of `query.len()` values), each
    /// summed in 16 lanes: an exact scan of a vector index.
    pub fn dot_rows(rows: &[f32], query: &[f32]) -> Vec<f32> {
        rows.chunks_exact(query.len().max(1)).map(|row| lanes_fold_map2(row, query, |a, b| a * b)).collect()
    }
}

/// Layer norm of every row of `x` (rows as long as `gamma`), split between the pool's threads.
pub(crate) fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let h = gamma.len();
    x.par_chunks_mut(h * 64).for_each(|rows| norm_rows(rows, gamma, beta, eps));
}

dispatched! {
    fn norm_rows(rows: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let h = gamma.len();
        for row in rows.chunks_exact_mut(h) {
            let mean = sum(row) / h as f32;
            let var = lanes_fold_map(row, |v| (v - mean) * (v - mean)) / h as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
                *v = (*v - mean) * inv * g + b;
            }
        }
    }
}

#[inline(always)]
fn sum(values: &[f32]) -> f32 {
    lanes_fold_map(values, |v| v)
}

/// The sum of `f` over `values`, in `LANES` partial sums.
#[inline(always)]
fn lanes_fold_map(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += f(*v);
        }
    }
    lanes.iter().sum::<f32>() + tail.iter().map(|v| f(*v)).sum::<f32>()
}

/// The sum of `f` over pairs of `a` and `b`, in `LANES` partial sums.
#[inline(always)]
fn lanes_fold_map2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(x, y)| f(*x, *y)).sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for ((lane, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *lane += f(*x, *y);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `values` folded by `f` (associative and commutative, such as max), in `LANES` partial folds.
#[inline(always)]
fn lanes_fold(values: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [init; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane = f(*lane, *v);
        }
    }
    tail.iter().chain(&lanes).fold(init, |a, v| f(a, *v))
}

/// GELU with erf; erf by Abramowitz and Stegun 7.1.26 (error below 1.5e-7).
#[inline(always)]
fn gelu_one(x: f32) -> f32 {
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let a = z.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let erf_abs = 1.0 - poly * fast_exp(-a * a);
    0.5 * x * (1.0 + erf_abs.copysign(z))
}

/// e^x to about one ulp (Cephes' expf: range reduction by ln 2, a degree-6 polynomial), without
/// branches or calls: `n` is rounded by adding 1.5·2²³ (so no `floor`, a library call on baseline
/// x86-64), and 2ⁿ is built from the same sum's low bits.
#[inline(always)]
fn fast_exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2²³: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + (ROUND + 127.0);
    let n = shifted - (ROUND + 127.0);
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r + 5e-1;
    let e = p * r * r + r + 1.0;
    // The low bits of `shifted` hold n + 127, the biased exponent of 2ⁿ.
    e * f32::from_bits(shifted.to_bits() << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_matches_erf_values() {
        // Reference values of 0.5·x·(1 + erf(x/√2)).
        let mut values = [0.0f32, 1.0, -1.0, 2.5, -3.0];
        gelu(&mut values);
        for (got, expect) in values.iter().zip([0.0f32, 0.841_344_7, -0.158_655_25, 2.484_475_8, -0.004_049_694]) {
            assert!((got - expect).abs() < 1e-6, "{got} against {expect}");
        }
    }

    #[test]
    fn fast_exp_is_within_an_ulp_or_two() {
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let (got, want) = (fast_exp(x), x.exp());
            assert!(((got - want) / want).abs() < 3e-7, "exp({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn dot_rows_match_plain_dot_products() {
        let query: Vec<f32> = (0..37).map(|i| (i as f32 * 0.3).cos()).collect();
        let rows: Vec<f32> = (0..37 * 5).map(|i| (i as f32 * 0.17).sin()).collect();
        let got = dot_rows(&rows, &query);
        assert_eq!(got.len(), 5);
        for (row, got) in rows.chunks(37).zip(got) {
            let want: f64 = row.iter().zip(&query).map(|(a, b)| *a as f64 * *b as f64).sum();
            assert!((got as f64 - want).abs() < 1e-5, "{got} against {want}");
        }
    }

    #[test]
    fn softmax_and_layer_norm_match_their_definitions() {
        let mut row: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 4.0).collect();
        let total: f64 = row.iter().map(|v| (*v as f64).exp()).sum();
        let want: Vec<f64> = row.iter().map(|v| (*v as f64).exp() / total).collect();
        softmax(&mut row);
        for (got, want) in row.iter().zip(&want) {
            assert!((*got as f64 - want).abs() < 1e-6);
        }
        let h = 40;
        let mut x: Vec<f32> = (0..3 * h).map(|i| (i as f32 * 0.11).cos() * 3.0 + 1.0).collect();
        let (gamma, beta): (Vec<f32>, Vec<f32>) = (0..h).map(|i| (1.0 + i as f32 * 0.01, i as f32 * -0.02)).unzip();
        let original = x.clone();
        layer_norm(&mut x, &gamma, &beta, 1e-12);
        for (row, input) in x.chunks(h).zip(original.chunks(h)) {
            let mean = input.iter().map(|v| *v as f64).sum::<f64>() / h as f64;
            let sd = (input.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / h as f64).sqrt();
            for i in 0..h {
                let want = (input[i] as f64 - mean) / sd * gamma[i] as f64 + beta[i] as f64;
                assert!((row[i] as f64 - want).abs() < 1e-5, "{} against {want}", row[i]);
            }
        }
    }
}
