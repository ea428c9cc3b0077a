//! Dense layers (`y = x·W + b`) of the encoder, with the weights kept in the form this CPU
//! multiplies fastest: on CPUs with AMX, bfloat16 pairs packed in column panels and multiplied on
//! the tile unit with f32 sums (`amx`); elsewhere, or when exact f32 is asked for, f32 through
//! the `gemm` crate.
//!
//! bfloat16 keeps f32's range and 8 bits of mantissa: each product is within 2⁻⁸ of the f32 one
//! and the sums are f32, so a sentence vector stays within cosine 0.9999 of the f32 encoder's
//! (checked against the real model in the end-to-end tests and in `bench/embed.sh`).

use gemm::Parallelism;
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod amx;

/// Which arithmetic the dense layers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// bfloat16 products where the CPU has a unit for them (AMX), f32 elsewhere.
    #[default]
    Auto,
    /// f32 everywhere.
    F32,
}

/// One dense layer, its weights in the chosen form.
pub(crate) struct Dense {
    n_in: usize,
    n_out: usize,
    bias: Vec<f32>,
    form: Form,
}

enum Form {
    /// `n_in × n_out`, row-major: PyTorch's `n_out × n_in` transposed once at load, the layout
    /// `gemm` reads without repacking it for every product (which cost more than the product
    /// itself for a short query).
    F32(Vec<f32>),
    #[cfg(target_arch = "x86_64")]
    Bf16(amx::Packed),
}

impl Dense {
    /// A layer from PyTorch's `n_out × n_in` weight and its bias.
    pub(crate) fn new(weight: &[f32], bias: Vec<f32>, n_in: usize, n_out: usize, precision: Precision) -> Dense {
        assert_eq!(weight.len(), n_in * n_out, "the weight is n_out × n_in");
        assert_eq!(bias.len(), n_out, "one bias per output");
        #[cfg(target_arch = "x86_64")]
        if precision == Precision::Auto && amx::available() {
            return Dense { n_in, n_out, bias, form: Form::Bf16(amx::Packed::new(weight, n_in, n_out)) };
        }
        let _ = precision;
        Dense { n_in, n_out, bias, form: Form::F32(transpose(weight, n_out, n_in)) }
    }

    /// Whether this layer multiplies in bfloat16.
    pub(crate) fn is_bf16(&self) -> bool {
        !matches!(self.form, Form::F32(_))
    }

    /// `out (rows × n_out) = input (rows × n_in) · W + bias`, on the current rayon pool.
    pub(crate) fn forward(&self, out: &mut [f32], input: &[f32], rows: usize) {
        assert!(out.len() >= rows * self.n_out && input.len() >= rows * self.n_in, "buffers hold rows × width");
        match &self.form {
            Form::F32(weight) => forward_f32(out, input, rows, weight, &self.bias, self.n_in, self.n_out),
            #[cfg(target_arch = "x86_64")]
            Form::Bf16(packed) => packed.forward(out, input, rows, &self.bias),
        }
    }
}

/// The f32 product, split between the pool's threads, each running the kernel alone on its block
/// (no synchronisation inside a product, which on these small matrices beats parallelising each
/// product). Many rows are split by rows; a few rows (one short query) by output columns, so each
/// thread streams only its share of the weights, which is what bounds a product over a handful of
/// rows.
fn forward_f32(out: &mut [f32], input: &[f32], rows: usize, weight: &[f32], bias: &[f32], n_in: usize, n_out: usize) {
    let threads = rayon::current_num_threads().max(1);
    if threads > 1 && rows < FEW_ROWS * threads {
        let width = n_out.div_ceil(threads);
        let parts: Vec<(usize, Vec<f32>)> = (0..threads)
            .into_par_iter()
            .map(|t| {
                let from = (t * width).min(n_out);
                let to = (from + width).min(n_out);
                let cols = to - from;
                let mut part = Vec::with_capacity(rows * cols);
                for _ in 0..rows {
                    part.extend_from_slice(&bias[from..to]);
                }
                matmul_acc(&mut part, rows, cols, n_in, (cols, 1), input, (n_in, 1), &weight[from..], (n_out, 1));
                (from, part)
            })
            .collect();
        for (from, part) in parts {
            let cols = part.len() / rows.max(1);
            for (row, values) in out[..rows * n_out].chunks_exact_mut(n_out).zip(part.chunks_exact(cols.max(1))) {
                row[from..from + cols].copy_from_slice(values);
            }
        }
        return;
    }
    let block = rows.div_ceil(threads).max(1);
    out[..rows * n_out].par_chunks_mut(block * n_out).zip(input[..rows * n_in].par_chunks(block * n_in)).for_each(|(out, input)| {
        let rows = out.len() / n_out;
        for row in out.chunks_exact_mut(n_out) {
            row.copy_from_slice(bias);
        }
        matmul_acc(out, rows, n_out, n_in, (n_out, 1), input, (n_in, 1), weight, (n_out, 1));
    });
}

/// Rows per thread below which a dense layer is split by output columns instead of rows.
const FEW_ROWS: usize = 32;

/// `dst = alpha · lhs · rhs` for strided matrices (each given as (row stride, column stride)),
/// on the calling thread.
#[expect(clippy::too_many_arguments, reason = "a strided matrix product names its three matrices, their strides and sizes")]
pub(crate) fn matmul(dst: &mut [f32], m: usize, n: usize, k: usize, dst_s: (usize, usize), lhs: &[f32], lhs_s: (usize, usize), rhs: &[f32], rhs_s: (usize, usize), alpha: f32) {
    gemm_checked(dst, m, n, k, dst_s, lhs, lhs_s, rhs, rhs_s, false, alpha);
}

/// `dst += lhs · rhs`, on the calling thread.
#[expect(clippy::too_many_arguments, reason = "a strided matrix product names its three matrices, their strides and sizes")]
fn matmul_acc(dst: &mut [f32], m: usize, n: usize, k: usize, dst_s: (usize, usize), lhs: &[f32], lhs_s: (usize, usize), rhs: &[f32], rhs_s: (usize, usize)) {
    gemm_checked(dst, m, n, k, dst_s, lhs, lhs_s, rhs, rhs_s, true, 1.0);
}

/// The one call into `gemm`, after checking that every strided matrix lies inside its slice.
#[expect(clippy::too_many_arguments, reason = "a strided matrix product names its three matrices, their strides and sizes")]
fn gemm_checked(dst: &mut [f32], m: usize, n: usize, k: usize, dst_s: (usize, usize), lhs: &[f32], lhs_s: (usize, usize), rhs: &[f32], rhs_s: (usize, usize), accumulate: bool, alpha: f32) {
    let extent = |rows: usize, cols: usize, (rs, cs): (usize, usize)| if rows == 0 || cols == 0 { 0 } else { (rows - 1) * rs + (cols - 1) * cs + 1 };
    assert!(extent(m, n, dst_s) <= dst.len() && extent(m, k, lhs_s) <= lhs.len() && extent(k, n, rhs_s) <= rhs.len(), "matrix views stay inside their buffers");
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    // gemm computes dst = a·dst + b·lhs·rhs, with strides given as (column, row).
    #[expect(unsafe_code, reason = "gemm takes raw pointers; the extents were checked against the slices just above")]
    unsafe {
        gemm::gemm(m, n, k, dst.as_mut_ptr(), dst_s.1 as isize, dst_s.0 as isize, accumulate, lhs.as_ptr(), lhs_s.1 as isize, lhs_s.0 as isize, rhs.as_ptr(), rhs_s.1 as isize, rhs_s.0 as isize, 1.0, alpha, false, false, false, Parallelism::None);
    }
}

/// `rows × cols` row-major, transposed to `cols × rows` row-major.
fn transpose(matrix: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; matrix.len()];
    for (r, row) in matrix.chunks_exact(cols).enumerate() {
        for (c, v) in row.iter().enumerate() {
            out[c * rows + r] = *v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random matrix with values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn naive(weight: &[f32], bias: &[f32], input: &[f32], rows: usize, n_in: usize, n_out: usize) -> Vec<f32> {
        let mut out = vec![0f32; rows * n_out];
        for r in 0..rows {
            for j in 0..n_out {
                out[r * n_out + j] = bias[j] + (0..n_in).map(|k| input[r * n_in + k] as f64 * weight[j * n_in + k] as f64).sum::<f64>() as f32;
            }
        }
        out
    }

    #[test]
    fn strided_matmul_matches_the_naive_product() {
        let (m, n, k) = (5, 3, 4);
        let lhs: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 3.0).collect();
        let rhs_t: Vec<f32> = (0..n * k).map(|i| (i as f32).sin()).collect(); // n × k, used transposed
        let mut dst = vec![1.0f32; m * n];
        matmul_acc(&mut dst, m, n, k, (n, 1), &lhs, (k, 1), &rhs_t, (1, k));
        for i in 0..m {
            for j in 0..n {
                let expect = 1.0 + (0..k).map(|p| lhs[i * k + p] * rhs_t[j * k + p]).sum::<f32>();
                assert!((dst[i * n + j] - expect).abs() < 1e-4);
            }
        }
    }

    /// Every form, on shapes that exercise partial row blocks, partial panels, odd inner sizes and
    /// both ways of splitting work, against an f64 reference: f32 to 1e-4, bfloat16 to its
    /// rounding (relative error of a dot product of n terms in [-1, 1) well under 2⁻⁷·√n).
    #[test]
    fn every_form_matches_the_reference_product() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        for (rows, n_in, n_out) in [(1, 7, 5), (3, 64, 48), (9, 33, 100), (21, 384, 1152), (70, 130, 49), (130, 96, 17)] {
            let weight = values(n_in * n_out, (rows * 31 + n_in) as u64);
            let bias = values(n_out, 7);
            let input = values(rows * n_in, 11);
            let want = naive(&weight, &bias, &input, rows, n_in, n_out);
            for precision in [Precision::F32, Precision::Auto] {
                let dense = Dense::new(&weight, bias.clone(), n_in, n_out, precision);
                #[cfg(target_arch = "x86_64")]
                assert_eq!(dense.is_bf16(), precision == Precision::Auto && amx::available());
                let mut out = vec![f32::NAN; rows * n_out + 3];
                pool.install(|| dense.forward(&mut out, &input, rows));
                let tolerance = if dense.is_bf16() { 2f32.powi(-7) * (n_in as f32).sqrt() } else { 1e-4 * n_in as f32 };
                for (i, (got, want)) in out.iter().zip(&want).enumerate() {
                    assert!((got - want).abs() <= tolerance, "{precision:?} {rows}×{n_in}·{n_out} at {i}: {got} against {want}");
                }
                assert!(out[rows * n_out..].iter().all(|v| v.is_nan()), "nothing is written past the rows");
            }
        }
    }
}
