//! bfloat16 dense products on Intel AMX (Sapphire Rapids and later): `tdpbf16ps` multiplies a
//! 16 × 32 tile of bfloat16 inputs by a 32 × 16 tile of bfloat16 weights into 16 × 16 f32 sums,
//! 8,192 multiply-adds an instruction; on this class of CPU about six times what AVX-512 f32 FMAs
//! do. (AVX-512 BF16's `vdpbf16ps` was measured here too: half the multiply-adds of f32 FMAs, so
//! it is not used.)
//!
//! Weights are packed once at load into panels of `PANEL` output columns: for each pair of inputs
//! `(2p, 2p+1)` a panel holds, per column, the two bfloat16 weights in one 32-bit word, which is
//! the layout AMX reads a weight tile in (16 pairs × 16 columns, one 64-byte row per pair). A
//! block of 32 rows × one panel keeps its sums in four tiles while it walks the inputs, 32 at a
//! time. Work is split between threads by rows (many rows) and by panels (a few rows, one short
//! query). The tile instructions are written with `asm!`: Rust's AMX intrinsics are not stable,
//! and no maintained crate multiplies on AMX.
#![expect(unsafe_code, reason = "AMX instructions, AVX-512 intrinsics, and threads writing disjoint blocks of one output through a raw pointer")]

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use rayon::prelude::*;

/// Rows of a tile; also input pairs per tile row (16 pairs of bfloat16 = 64 bytes).
const TILE: usize = 16;
/// Weight tiles (of 16 columns) per panel.
const VECS: usize = 2;
/// Output columns per panel.
const PANEL: usize = TILE * VECS;
/// Rows of a block: two tiles of inputs.
const BLOCK: usize = 2 * TILE;
/// Rows per task when work is split by rows.
const ROW_CHUNK: usize = 64;

/// Whether this CPU and kernel let the process use AMX tiles for bfloat16 (asked once; Linux
/// grants the tile state per process on request).
pub(super) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        // CPUID leaf 7: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
        let leaf7 = __cpuid_count(7, 0);
        let amx = leaf7.edx & (1 << 22) != 0 && leaf7.edx & (1 << 24) != 0;
        amx && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16") && request_tile_state()
    })
}

/// Asks Linux for the AMX tile data state (`ARCH_REQ_XCOMP_PERM`, `XFEATURE_XTILEDATA`).
#[cfg(target_os = "linux")]
fn request_tile_state() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with this code only changes which register state the process may use.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn request_tile_state() -> bool {
    false
}

/// A weight matrix in bfloat16 pairs, in panels.
pub(super) struct Packed {
    n_in: usize,
    n_out: usize,
    /// Input pairs, rounded up to whole tiles (`n_in` padded with zeros to a multiple of 32,
    /// halved).
    pairs: usize,
    panels: usize,
    /// `panels × pairs × PANEL` words; padding columns and inputs are 0.
    data: Vec<u32>,
}

impl Packed {
    /// Packs PyTorch's `n_out × n_in` weight.
    pub(super) fn new(weight: &[f32], n_in: usize, n_out: usize) -> Packed {
        let pairs = n_in.div_ceil(2 * TILE) * TILE;
        let panels = n_out.div_ceil(PANEL);
        let mut data = vec![0u32; panels * pairs * PANEL];
        for (j, row) in weight.chunks_exact(n_in).enumerate() {
            let (panel, column) = (j / PANEL, j % PANEL);
            for p in 0..n_in.div_ceil(2) {
                data[(panel * pairs + p) * PANEL + column] = pair(row, p);
            }
        }
        Packed { n_in, n_out, pairs, panels, data }
    }

    /// `out (rows × n_out) = input (rows × n_in) · W + bias` on the current rayon pool.
    pub(super) fn forward(&self, out: &mut [f32], input: &[f32], rows: usize, bias: &[f32]) {
        assert!(available(), "packed only where the CPU has AMX");
        assert!(out.len() >= rows * self.n_out && input.len() >= rows * self.n_in && bias.len() == self.n_out);
        if rows == 0 {
            return;
        }
        let (n_in, pairs) = (self.n_in, self.pairs);
        // Inputs as bfloat16 pairs, rows padded with zeros to whole blocks.
        let mut x = vec![0u32; rows.div_ceil(BLOCK) * BLOCK * pairs];
        x.par_chunks_mut(pairs * TILE).zip(input[..rows * n_in].par_chunks(n_in * TILE)).for_each(|(x, input)| {
            for (x, input) in x.chunks_exact_mut(pairs).zip(input.chunks_exact(n_in)) {
                // SAFETY: `available()` checked AVX-512 BF16.
                unsafe { to_pairs(input, x) };
            }
        });

        let threads = rayon::current_num_threads().max(1);
        let row_chunks = rows.div_ceil(ROW_CHUNK);
        let groups = (2 * threads).div_ceil(row_chunks).min(self.panels).max(1);
        let per_group = self.panels.div_ceil(groups);
        let target = Shared(out.as_mut_ptr());
        (0..row_chunks * groups).into_par_iter().for_each(|task| {
            let (chunk, group) = (task / groups, task % groups);
            let (first_row, end_row) = (chunk * ROW_CHUNK, ((chunk + 1) * ROW_CHUNK).min(rows));
            let tiles = Tiles::configure();
            let mut sums = Sums([0f32; BLOCK * PANEL]);
            for panel in group * per_group..((group + 1) * per_group).min(self.panels) {
                let first_col = panel * PANEL;
                let cols = PANEL.min(self.n_out - first_col);
                let weights = &self.data[panel * pairs * PANEL..][..pairs * PANEL];
                for row in (first_row..end_row).step_by(BLOCK) {
                    tiles.block(&x[row * pairs..(row + BLOCK) * pairs], pairs, weights, &mut sums.0);
                    for (r, sums) in sums.0.chunks_exact(PANEL).take(end_row - row).enumerate() {
                        // SAFETY: tasks cover disjoint (row range × panel range) blocks of `out`,
                        // whose size was checked above; this writes row `row + r < rows`, columns
                        // `first_col..first_col + cols <= n_out`.
                        let out = unsafe { std::slice::from_raw_parts_mut(target.at((row + r) * self.n_out + first_col), cols) };
                        for ((o, s), b) in out.iter_mut().zip(sums).zip(&bias[first_col..]) {
                            *o = s + b;
                        }
                    }
                }
            }
        });
    }
}

/// The input pair `p` of a row (the odd input's partner is 0), as AMX reads it: the even input
/// in the low half.
fn pair(row: &[f32], p: usize) -> u32 {
    to_bf16(row[2 * p]) as u32 | row.get(2 * p + 1).map_or(0, |v| to_bf16(*v) as u32) << 16
}

/// A block's sums: 32 rows of one panel, as the tiles store them.
#[repr(C, align(64))]
struct Sums([f32; BLOCK * PANEL]);

/// The tile configuration, loaded on this thread for one task and released after it: tiles 0-3
/// hold the block's sums (2 × 2 tiles of 16 × 16), 4-5 two tiles of inputs, 6-7 two of weights;
/// all 16 rows of 64 bytes. Each weight tile loaded serves two input tiles, which halves the
/// weight bytes read per multiply against a block of one input tile.
struct Tiles(());

#[repr(C, align(64))]
struct Config([u8; 64]);

impl Tiles {
    fn configure() -> Tiles {
        let mut config = Config([0; 64]);
        config.0[0] = 1; // palette 1
        for tile in 0..8 {
            config.0[16 + 2 * tile..18 + 2 * tile].copy_from_slice(&64u16.to_le_bytes());
            config.0[48 + tile] = TILE as u8;
        }
        // SAFETY: `available()` was checked by the caller's `forward`; the configuration is valid
        // for palette 1 (at most 16 rows of 64 bytes per tile).
        unsafe { asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly)) };
        Tiles(())
    }

    /// `sums (32 × PANEL) = x (32 rows of pairs words) · weights (a panel)`.
    fn block(&self, x: &[u32], pairs: usize, weights: &[u32], sums: &mut [f32; BLOCK * PANEL]) {
        assert!(x.len() == BLOCK * pairs && weights.len() == pairs * PANEL && pairs.is_multiple_of(TILE));
        let (x_stride, w_stride, s_stride) = (pairs * 4, PANEL * 4, PANEL * 4);
        // SAFETY: the tiles are configured on this thread (`self`). Every load reads 16 rows of
        // 64 bytes: inputs rows 0..16 or 16..32 × words k..k+16 with k + 16 <= pairs; weights
        // pairs k..k+16 × words 0..16 or 16..32 of a PANEL-word row; the stores write rows 0..16
        // or 16..32 × words 0..16 or 16..32 of `sums`. All inside the slices, by the assertion.
        unsafe {
            asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
            for k in (0..pairs).step_by(TILE) {
                let (a, b) = (x.as_ptr().add(k), weights.as_ptr().add(k * PANEL));
                asm!(
                    "tileloadd tmm4, [{a} + {xs}*1]",
                    "tileloadd tmm5, [{a2} + {xs}*1]",
                    "tileloadd tmm6, [{b} + {ws}*1]",
                    "tileloadd tmm7, [{b} + {ws}*1 + 64]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a = in(reg) a, a2 = in(reg) a.add(TILE * pairs), b = in(reg) b, xs = in(reg) x_stride, ws = in(reg) w_stride,
                    options(nostack, readonly),
                );
            }
            let (s, s2) = (sums.as_mut_ptr(), sums.as_mut_ptr().add(TILE * PANEL));
            asm!(
                "tilestored [{s} + {ss}*1], tmm0",
                "tilestored [{s} + {ss}*1 + 64], tmm1",
                "tilestored [{s2} + {ss}*1], tmm2",
                "tilestored [{s2} + {ss}*1 + 64], tmm3",
                s = in(reg) s, s2 = in(reg) s2, ss = in(reg) s_stride,
                options(nostack),
            );
        }
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: releases the tile state this thread configured.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// The output pointer, shared by tasks that write disjoint blocks.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: tasks only write disjoint blocks through it, and `forward` waits for all of them.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// # Safety
    /// `offset` lies inside the output.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        unsafe { self.0.add(offset) }
    }
}

/// One row of f32 inputs to bfloat16 pairs (round to nearest even), 32 at a time; words past the
/// row's pairs are left as they are (zero).
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn to_pairs(input: &[f32], pairs: &mut [u32]) {
    assert!(pairs.len() >= input.len().div_ceil(2));
    let mut k = 0;
    while k + 2 * TILE <= input.len() {
        // SAFETY: k + 32 <= input.len(), and pairs holds input.len() / 2 words at least.
        unsafe {
            let low = _mm512_loadu_ps(input.as_ptr().add(k));
            let high = _mm512_loadu_ps(input.as_ptr().add(k + TILE));
            let packed = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(high, low));
            _mm512_storeu_si512(pairs.as_mut_ptr().add(k / 2).cast(), packed);
        }
        k += 2 * TILE;
    }
    for (p, word) in pairs.iter_mut().enumerate().take(input.len().div_ceil(2)).skip(k / 2) {
        *word = pair(input, p);
    }
}

/// f32 to bfloat16, rounding to nearest even (NaN stays NaN).
fn to_bf16(value: f32) -> u16 {
    let bits = value.to_bits();
    if value.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_to_bfloat16_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        assert_eq!(to_bf16(-2.0), 0xc000);
        // 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷: ties go to the even one, 1.
        assert_eq!(to_bf16(1.0 + 2f32.powi(-8)), 0x3f80);
        assert_eq!(to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        assert_eq!(to_bf16(f32::INFINITY), 0x7f80);
        assert!(f32::from_bits((to_bf16(f32::NAN) as u32) << 16).is_nan());
    }

    #[test]
    fn the_vector_conversion_matches_the_scalar_one() {
        if !is_x86_feature_detected!("avx512bf16") {
            return;
        }
        let input: Vec<f32> = (0..71).map(|i| (i as f32 * 0.731).sin() * 1000.0 + 1.0 / (i as f32 + 0.5)).collect();
        let mut pairs = vec![0u32; 48];
        unsafe { to_pairs(&input, &mut pairs) };
        for (p, word) in pairs.iter().enumerate() {
            let want = if p < 36 { pair(&input, p) } else { 0 };
            assert_eq!(*word, want, "pair {p}");
        }
    }
}
