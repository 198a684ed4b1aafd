//! A dense convolution computed straight from the padded input: no im2col matrix and no matrix
//! product library. Pure loops, no tract, no I/O.
//!
//! Why: a 3×3 layer with few input channels (squeezenet's RGB stem and expand layers) spent a
//! quarter of its time writing its im2col matrix and having `gemm` pack it again. Here the
//! output channels go in tiles of [`TILE`], whose kernels are packed once, at load time, tap by
//! tap ([`pack`]); the output positions go in runs of a few vectors. For each tap of each
//! input channel, one contiguous load of the padded input (laid out by
//! [`crate::spatial::Plane::pad`]) is multiplied by one broadcast weight per output channel of
//! the tile and added to that channel's run, all in registers; each run is then handed, row by
//! row, to the caller's epilogue.
//!
//! A stride-1 convolution treats its band of output rows as one flat run of positions, `pitch`
//! (the padded row) apart, so that a 13-wide output is not computed 16 or 32 at a time; the
//! positions between two rows (`pitch - ow` of them) are computed and thrown away. A strided
//! one goes row by row.
//!
//! The kernels are written with intrinsics (the compiler's vectoriser made gathers of the
//! portable loop, 30× slower): 32 positions at a time with AVX-512, 8 with AVX2 and FMA (both
//! picked at run time), 8 with the Pi's NEON, and a portable loop of 4 otherwise.

use std::ops::Range;

/// Output channels computed together (and the alignment of a packed kernel's tiles).
pub const TILE: usize = 8;

/// Values in a kernel of `o` output channels and `k` values each, packed by [`pack`].
pub fn packed_len(o: usize, k: usize) -> usize {
    o.div_ceil(TILE) * k * TILE
}

/// Packs a kernel of `o` rows of `k` values (output channel-major, as ONNX stores OIHW) into
/// tiles of [`TILE`] output channels: tile `t` holds, for each `kk` in `0..k`, the `kk`-th value
/// of its channels `t·TILE ..` side by side (zeros past `o`).
pub fn pack(kernel: &[f32], o: usize, k: usize) -> Vec<f32> {
    assert_eq!(kernel.len(), o * k, "kernel size");
    let mut packed = vec![0.0; packed_len(o, k)];
    for (ch, row) in kernel.chunks_exact(k.max(1)).enumerate().take(o) {
        let (t, j) = (ch / TILE, ch % TILE);
        for (kk, v) in row.iter().enumerate() {
            packed[(t * k + kk) * TILE + j] = *v;
        }
    }
    packed
}

/// Where one band's output positions read the padded input.
#[derive(Debug, Clone)]
pub struct Layout {
    /// For each `kk` (input channel · taps + tap), where that tap of the band's first output
    /// position reads the padded input.
    pub offsets: Vec<usize>,
    /// Output rows and columns of the band.
    pub rows: usize,
    pub ow: usize,
    /// How far the taps move in the padded input from one output row to the next.
    pub row_step: usize,
    /// Whether the next output column reads the next padded value (stride 1): the band is then
    /// one flat run of positions `row_step` apart.
    pub flat: bool,
}

impl Layout {
    /// How many values the padded input must hold for [`run`] (the last run reads up to a
    /// vector past the band's last position).
    pub fn padded_len(&self) -> usize {
        let last = self.offsets.iter().copied().max().unwrap_or(0);
        last + (self.rows.max(1) - 1) * self.row_step + self.ow + MAX_LANES
    }
}

/// How many positions [`run`] computes for each output position of a band of `rows` rows of
/// `ow` (`row_step` and `flat` as in [`Layout`]), in runs of 16 (AVX-512's half run): the
/// positions between rows of a flat band, and the last run's tail, are computed and thrown
/// away.
pub fn overhead(rows: usize, ow: usize, row_step: usize, flat: bool) -> f64 {
    if rows == 0 || ow == 0 {
        return 1.0;
    }
    let computed = if flat {
        ((rows - 1) * row_step + ow).next_multiple_of(16)
    } else {
        rows * ow.next_multiple_of(16)
    };
    computed as f64 / (rows * ow) as f64
}

/// Where [`run`] hands its output values.
pub trait Emit {
    /// `values` are output channel `channel`'s at positions `position ..` of one output row
    /// of the band (`position` is `row · ow + column`). Implementations mark this
    /// `#[inline(always)]`, so that it is compiled with the kernel's vector instructions.
    fn emit(&mut self, channel: usize, position: usize, values: &[f32]);
}

/// The widest run of positions any kernel below computes at once.
const MAX_LANES: usize = 32;

/// One band's convolution: output channels `tiles.start · TILE .. tiles.end · TILE` of the band
/// `layout` describes, by the packed kernel `packed` ([`pack`], `k` values per channel), from
/// `padded` (at least [`Layout::padded_len`] values).
pub struct Work<'a> {
    pub packed: &'a [f32],
    pub k: usize,
    pub tiles: Range<usize>,
    pub padded: &'a [f32],
    pub layout: &'a Layout,
}

/// Computes `work`. Each computed run of one output row goes to [`Emit::emit`]; channels past
/// the kernel's last are computed from zero weights and emitted too, for the caller to skip.
pub fn run<F: Emit>(work: &Work, emit: &mut F) {
    let (layout, k) = (work.layout, work.k);
    assert_eq!(layout.offsets.len(), k, "one offset per kernel value");
    assert!(
        work.packed.len() >= work.tiles.end * k * TILE,
        "packed kernel size"
    );
    assert!(
        work.padded.len() >= layout.padded_len(),
        "padded input size"
    );
    if layout.rows == 0 || layout.ow == 0 || work.tiles.is_empty() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above; the function is safe Rust
            // otherwise.
            #[allow(unsafe_code)]
            unsafe {
                x86::run_avx512(work, emit)
            };
            return;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: as above, for AVX2 and FMA.
            #[allow(unsafe_code)]
            unsafe {
                x86::run_avx2(work, emit)
            };
            return;
        }
    }
    #[cfg(target_arch = "aarch64")]
    return run_with::<8, F>(work, |w, p, o, a, _, s| arm::sums_neon(w, p, o, a, s), emit);
    #[cfg(not(target_arch = "aarch64"))]
    run_with::<4, F>(work, |w, p, o, a, _, s| sums_portable(w, p, o, a, s), emit)
}

/// The band as runs of `V` positions: each run, for each tile, its sums, then its rows out.
/// Inlined into each kernel's caller, so that the caller's epilogue (`emit`) is compiled for the
/// same vector instructions.
#[inline(always)]
fn run_with<const V: usize, F: Emit>(
    work: &Work,
    // (kernel tile, padded input, offsets, first position, whether half a run will do, sums)
    sums_of: impl Fn(&[f32], &[f32], &[usize], usize, bool, &mut [[f32; V]; TILE]),
    emit: &mut F,
) {
    const { assert!(V <= MAX_LANES) };
    let Work {
        packed,
        k,
        ref tiles,
        padded,
        layout,
    } = *work;
    let ow = layout.ow;
    // (where a segment's first position reads, its first row, its rows, its row pitch)
    let segments: Vec<(usize, usize, usize, usize)> = if layout.flat {
        vec![(0, 0, layout.rows, layout.row_step)]
    } else {
        (0..layout.rows)
            .map(|r| (r * layout.row_step, r, 1, ow))
            .collect()
    };
    let mut sums = [[0.0f32; V]; TILE];
    for (base, first_row, rows, pitch) in segments {
        let len = (rows - 1) * pitch + ow;
        let mut f = 0;
        while f < len {
            // The last run is half as wide when that covers what is left.
            let half = len - f <= V / 2;
            let step = if half { V / 2 } else { V };
            for t in tiles.clone() {
                let w = &packed[t * k * TILE..(t + 1) * k * TILE];
                sums_of(w, padded, &layout.offsets, base + f, half, &mut sums);
                // Hand out the run's positions row by row, leaving out those between rows.
                let (mut r, mut x, mut i) = (f / pitch, f % pitch, 0);
                while i < step && r < rows {
                    let n = (pitch - x).min(step - i);
                    if x < ow {
                        let valid = (ow - x).min(n);
                        let pos = (first_row + r) * ow + x;
                        for (j, s) in sums.iter().enumerate() {
                            emit.emit(t * TILE + j, pos, &s[i..i + valid]);
                        }
                    }
                    i += n;
                    r += 1;
                    x = 0;
                }
            }
            f += step;
        }
    }
}

/// One tile's sums over `V` positions from `at`: for each kernel value `kk` (a tile of
/// weights `w[kk · TILE ..]`), the `V` padded input values from `offsets[kk] + at` times that
/// value of each of the tile's channels. The portable loop, which the compiler may vectorise;
/// the kernels below compute the same with intrinsics.
#[cfg_attr(target_arch = "aarch64", allow(dead_code))]
pub(crate) fn sums_portable<const V: usize>(
    w: &[f32],
    padded: &[f32],
    offsets: &[usize],
    at: usize,
    out: &mut [[f32; V]; TILE],
) {
    *out = [[0.0f32; V]; TILE];
    for (ws, &off) in w.chunks_exact(TILE).zip(offsets) {
        let xs = &padded[off + at..][..V];
        for (a, &wj) in out.iter_mut().zip(ws) {
            for (s, &x) in a.iter_mut().zip(xs) {
                *s += wj * x;
            }
        }
    }
}

/// [`sums_portable`] with AVX-512 (two 16-lane vectors per channel: 16 sums in registers) and
/// with AVX2 and FMA (one 8-lane vector per channel).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub(crate) mod x86 {
    use super::{Emit, TILE, Work, run_with};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) fn run_avx512<F: Emit>(work: &Work, emit: &mut F) {
        run_with::<32, F>(
            work,
            |w, p, o, a, half, s| {
                if half {
                    avx512::<1>(w, p, o, a, s)
                } else {
                    avx512::<2>(w, p, o, a, s)
                }
            },
            emit,
        )
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn run_avx2<F: Emit>(work: &Work, emit: &mut F) {
        run_with::<8, F>(work, |w, p, o, a, _, s| avx2(w, p, o, a, s), emit)
    }

    /// The sums of `NV` vectors of 16 positions (the first `16 · NV` of each row of `out`).
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(crate) fn avx512<const NV: usize>(
        w: &[f32],
        padded: &[f32],
        offsets: &[usize],
        at: usize,
        out: &mut [[f32; 32]; TILE],
    ) {
        const { assert!(NV == 1 || NV == 2) };
        let mut acc = [[_mm512_setzero_ps(); NV]; TILE];
        for (ws, &off) in w.chunks_exact(TILE).zip(offsets) {
            let xs = &padded[off + at..][..16 * NV];
            // SAFETY: `xs` holds NV vectors of 16 values.
            let x: [__m512; NV] =
                std::array::from_fn(|v| unsafe { _mm512_loadu_ps(xs.as_ptr().add(16 * v)) });
            for (a, &wj) in acc.iter_mut().zip(ws) {
                let wv = _mm512_set1_ps(wj);
                for (a, x) in a.iter_mut().zip(&x) {
                    *a = _mm512_fmadd_ps(wv, *x, *a);
                }
            }
        }
        for (o, a) in out.iter_mut().zip(&acc) {
            for (v, a) in a.iter().enumerate() {
                // SAFETY: `o` holds 32 values, NV ≤ 2 vectors of 16.
                unsafe { _mm512_storeu_ps(o.as_mut_ptr().add(16 * v), *a) };
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn avx2(
        w: &[f32],
        padded: &[f32],
        offsets: &[usize],
        at: usize,
        out: &mut [[f32; 8]; TILE],
    ) {
        let mut acc = [_mm256_setzero_ps(); TILE];
        for (ws, &off) in w.chunks_exact(TILE).zip(offsets) {
            let xs: &[f32; 8] = padded[off + at..][..8].try_into().expect("8 inputs");
            // SAFETY: `xs` holds 8 values.
            let x = unsafe { _mm256_loadu_ps(xs.as_ptr()) };
            for (a, &wj) in acc.iter_mut().zip(ws) {
                *a = _mm256_fmadd_ps(_mm256_set1_ps(wj), x, *a);
            }
        }
        for (o, a) in out.iter_mut().zip(&acc) {
            // SAFETY: `o` holds 8 values.
            unsafe { _mm256_storeu_ps(o.as_mut_ptr(), *a) };
        }
    }
}

/// [`sums_portable`] with NEON (every aarch64 CPU has it): two 4-lane vectors per channel, the tile's
/// weights in two vectors, each multiplied in by lane.
#[cfg(target_arch = "aarch64")]
#[allow(unsafe_code)]
pub(crate) mod arm {
    use super::TILE;
    use std::arch::aarch64::*;

    pub(crate) fn sums_neon(
        w: &[f32],
        padded: &[f32],
        offsets: &[usize],
        at: usize,
        out: &mut [[f32; 8]; TILE],
    ) {
        // SAFETY: NEON is part of aarch64; every load and store below is of a checked slice.
        unsafe {
            let mut acc = [[vdupq_n_f32(0.0); 2]; TILE];
            for (ws, &off) in w.chunks_exact(TILE).zip(offsets) {
                let ws: &[f32; TILE] = ws.try_into().expect("a tile of weights");
                let xs: &[f32; 8] = padded[off + at..][..8].try_into().expect("8 inputs");
                let x = [vld1q_f32(xs.as_ptr()), vld1q_f32(xs.as_ptr().add(4))];
                let lo = vld1q_f32(ws.as_ptr());
                let hi = vld1q_f32(ws.as_ptr().add(4));
                macro_rules! lane {
                    ($j:expr, $w:ident, $l:expr) => {
                        acc[$j][0] = vfmaq_laneq_f32::<$l>(acc[$j][0], x[0], $w);
                        acc[$j][1] = vfmaq_laneq_f32::<$l>(acc[$j][1], x[1], $w);
                    };
                }
                lane!(0, lo, 0);
                lane!(1, lo, 1);
                lane!(2, lo, 2);
                lane!(3, lo, 3);
                lane!(4, hi, 0);
                lane!(5, hi, 1);
                lane!(6, hi, 2);
                lane!(7, hi, 3);
            }
            for (o, a) in out.iter_mut().zip(&acc) {
                vst1q_f32(o.as_mut_ptr(), a[0]);
                vst1q_f32(o.as_mut_ptr().add(4), a[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_counts_the_positions_between_rows_and_the_last_run() {
        // 13×13, 3×3, padding 1: rows 15 apart, 12 · 15 + 13 = 193 → 208 computed.
        assert_eq!(overhead(13, 13, 15, true), 208.0 / 169.0);
        // 55×55: 54 · 57 + 55 = 3133 → 3136.
        assert_eq!(overhead(55, 55, 57, true), 3136.0 / 3025.0);
        // Strided, row by row: 111 → 112 a row.
        assert_eq!(overhead(111, 111, 448, false), 112.0 / 111.0);
        assert_eq!(overhead(0, 5, 7, true), 1.0);
    }

    /// Collects what [`run`] emits into a channels × positions image, counting each value.
    struct Image {
        values: Vec<f32>,
        writes: Vec<u32>,
        positions: usize,
    }

    impl Emit for Image {
        fn emit(&mut self, channel: usize, position: usize, values: &[f32]) {
            let at = channel * self.positions + position;
            self.values[at..at + values.len()].copy_from_slice(values);
            self.writes[at..at + values.len()]
                .iter_mut()
                .for_each(|w| *w += 1);
        }
    }

    fn pseudo(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0)
            .collect()
    }

    /// Every kernel this CPU can run (the portable loop, AVX2, AVX-512, NEON) gives the
    /// textbook sums, once per position, over flat and row-by-row bands whose last run is
    /// full, half or one position wide.
    #[test]
    fn every_kernel_gives_the_textbook_sums() {
        type Kernel = fn(&Work, &mut Image);
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut kernels: Vec<(&str, Kernel)> = vec![
            ("portable", |work, e| {
                run_with::<4, Image>(work, |w, p, o, a, _, s| sums_portable(w, p, o, a, s), e)
            }),
            ("dispatched", |work, e| run(work, e)),
        ];
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            #[allow(unsafe_code)]
            kernels.push(("avx2", |work, e| unsafe { x86::run_avx2(work, e) }));
        }
        let (o, c, taps) = (11, 3, 4);
        let k = c * taps;
        let packed = pack(&pseudo(o * k, 1), o, k);
        for (rows, ow, row_step, flat) in [
            (5, 13, 15, true),
            (3, 16, 18, true),
            (4, 7, 40, false),
            (1, 33, 35, true),
            (2, 49, 60, false),
        ] {
            let offsets: Vec<usize> = (0..k)
                .map(|kk| (kk / taps) * 200 + (kk % taps) * 3)
                .collect();
            let layout = Layout {
                offsets,
                rows,
                ow,
                row_step,
                flat,
            };
            let padded = pseudo(layout.padded_len(), 2);
            let positions = rows * ow;
            for (name, kernel) in &kernels {
                let mut image = Image {
                    values: vec![0.0; 16 * positions],
                    writes: vec![0; 16 * positions],
                    positions,
                };
                let work = Work {
                    packed: &packed,
                    k,
                    tiles: 0..2,
                    padded: &padded,
                    layout: &layout,
                };
                kernel(&work, &mut image);
                for ch in 0..16 {
                    for r in 0..rows {
                        for x in 0..ow {
                            let want: f32 = (0..k)
                                .map(|kk| {
                                    let w = if ch < o {
                                        packed[((ch / TILE) * k + kk) * TILE + ch % TILE]
                                    } else {
                                        0.0
                                    };
                                    w * padded[layout.offsets[kk] + r * row_step + x]
                                })
                                .sum();
                            let at = ch * positions + r * ow + x;
                            let what = format!(
                                "{name} rows {rows} ow {ow} flat {flat} ch {ch} r {r} x {x}"
                            );
                            assert_eq!(image.writes[at], 1, "{what}");
                            assert!(
                                (image.values[at] - want).abs() <= 1e-4,
                                "{what}: {} vs {want}",
                                image.values[at]
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn packing_puts_each_value_in_its_tile_and_pads_with_zeros() {
        let (o, k) = (11, 3);
        let kernel: Vec<f32> = (0..o * k).map(|v| v as f32 + 1.0).collect();
        let packed = pack(&kernel, o, k);
        assert_eq!(packed.len(), 2 * k * TILE);
        for t in 0..2 {
            for kk in 0..k {
                for j in 0..TILE {
                    let ch = t * TILE + j;
                    let want = if ch < o { kernel[ch * k + kk] } else { 0.0 };
                    assert_eq!(packed[(t * k + kk) * TILE + j], want, "t {t} kk {kk} j {j}");
                }
            }
        }
    }
}
