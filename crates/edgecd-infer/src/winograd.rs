//! A 3×3, stride-1 dense convolution by Winograd's minimal filtering F(2×2, 3×3): each 2×2
//! tile of output positions from a 4×4 tile of the input in 16 products per channel pair
//! instead of 36, a 2.25× cut in multiply-adds. Pure loops, no tract, no I/O.
//!
//! Why: the 3×3 stride-1 layers were half of squeezenet's time and most of resnet50's, and
//! [`crate::direct`]'s kernel already runs at the core's FMA peak on them, so only fewer
//! products could make them faster.
//!
//! How (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2015): the kernel
//! is transformed once, at load time, to `U = G g Gᵀ` (4×4 per channel pair), giving 16
//! matrices `U[ξ]` of output × input channels, each packed as [`crate::direct::pack`] packs a
//! kernel ([`pack`]). A block of output rows is computed a chunk of tile rows at a time (64
//! tiles at least): each input channel's tiles are transformed (`V = Bᵀ d B`), a tile row at a
//! time with the columns split into even and odd so that the compiler vectorises it, into 16
//! matrices `V[ξ]` of input channels × tiles. Then for each run of tiles (32 with AVX-512) and
//! each tile of 8 output channels, [`crate::direct`]'s register kernel computes the 16 products
//! `M[ξ] = U[ξ] · V[ξ]` (input channel `c` read at `c · tiles`) into 16 KB of sums, which are
//! transformed back (`Y = Aᵀ M A`) while in L1, each output row's run of values going to the
//! caller's [`Emit`] (bias and epilogue).
//!
//! Measured (one thread, this AMD EPYC): squeezenet's 16→64 3×3 at 55² 0.55 → 0.42 ms;
//! squeezenet 7.9 → 7.0–7.2 ms, resnet50 90 → 80 ms (with `conv::finish`). A first version that
//! wrote `M` out and transformed it back in a second pass was no faster than `direct`: the
//! copy and the pass cost what the products saved.
//!
//! F(2×2, 3×3) adds and subtracts only (the kernel transform's halves are exact), so results
//! stay within a few units in the last place of the direct sum's.

use std::ops::Range;

use crate::direct::{self, Emit, TILE};

/// The transformed tile's values (4 × 4).
const XI: usize = 16;

/// Values in a kernel of `o` output channels of `c` input channels, packed by [`pack`].
pub fn packed_len(o: usize, c: usize) -> usize {
    XI * direct::packed_len(o, c)
}

/// Whether a convolution of this shape runs by [`run`]: a 3×3 window, stride 1, no dilation,
/// and enough channels that the products, not the transforms, take the time.
pub fn applies(kernel: [usize; 2], strides: [usize; 2], dilations: [usize; 2], c: usize) -> bool {
    kernel == [3, 3] && strides == [1, 1] && dilations == [1, 1] && c >= 8
}

/// Packs a 3×3 kernel (`o` × `c` × 3 × 3, as ONNX stores OIHW): `U = G g Gᵀ` of each channel
/// pair, the 16 matrices `U[ξ]` (`o` × `c`) one after the other, each packed by
/// [`direct::pack`].
pub fn pack(kernel: &[f32], o: usize, c: usize) -> Vec<f32> {
    assert_eq!(kernel.len(), o * c * 9, "kernel size");
    let mut u = vec![0.0f32; XI * o * c];
    for (pair, g) in kernel.chunks_exact(9).enumerate() {
        // G g: 4 × 3.
        let mut gg = [[0.0f32; 3]; 4];
        for j in 0..3 {
            let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
            gg[0][j] = g0;
            gg[1][j] = 0.5 * (g0 + g1 + g2);
            gg[2][j] = 0.5 * (g0 - g1 + g2);
            gg[3][j] = g2;
        }
        // (G g) Gᵀ: 4 × 4.
        for (i, [a, b, cc]) in gg.into_iter().enumerate() {
            let row = [a, 0.5 * (a + b + cc), 0.5 * (a - b + cc), cc];
            for (j, v) in row.into_iter().enumerate() {
                u[(i * 4 + j) * o * c + pair] = v;
            }
        }
    }
    let mut packed = Vec::with_capacity(packed_len(o, c));
    for xi in u.chunks_exact((o * c).max(1)).take(XI) {
        packed.extend(direct::pack(xi, o, c));
    }
    packed.resize(packed_len(o, c), 0.0);
    packed
}

/// One block of a convolution: output rows `rows` (every column) of output channels
/// `tiles.start · TILE .. tiles.end · TILE` (those past the kernel's last are not emitted).
pub struct Work<'a> {
    /// The kernel packed by [`pack`].
    pub packed: &'a [f32],
    /// Output channels (the kernel's) and input channels.
    pub o: usize,
    pub c: usize,
    /// The image: `c` planes of `h` × `w`.
    pub image: &'a [f32],
    pub h: usize,
    pub w: usize,
    /// Padding before the first row and column; the output's width.
    pub pad_top: usize,
    pub pad_left: usize,
    pub ow: usize,
    pub rows: Range<usize>,
    pub tiles: Range<usize>,
}

/// Tiles × input channels a chunk's transformed input `V` (16 of them: 256 KB) aims at.
const CHUNK_VALUES: usize = 4096;

/// Tiles a chunk takes at least (when the block has them), whatever its input channels: each
/// chunk reads the whole kernel (16/9 of the layer's weights), so a deep layer cut into
/// chunks of a few tiles read its weights again for each, in runs mostly thrown away
/// (resnet50's 512 channels at 7×7: 2 chunks of 8 tiles, 4.8 ms against 2.7 by `direct`).
const CHUNK_TILES: usize = 64;

/// Computes `work`: each run of an output row of a channel goes to `emit`, at position `(row
/// - rows.start) · ow + column`. `scratch` is grown as needed and kept for the
/// next call. The transforms and `emit` are compiled for the CPU's widest vectors (picked at
/// run time, as [`direct::run`] does).
pub fn run<F: Emit>(work: &Work, scratch: &mut Vec<f32>, emit: &mut F) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above; the function is safe Rust
            // otherwise.
            #[allow(unsafe_code)]
            unsafe {
                x86::run_avx512(work, scratch, emit)
            };
            return;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: as above, for AVX2 and FMA.
            #[allow(unsafe_code)]
            unsafe {
                x86::run_avx2(work, scratch, emit)
            };
            return;
        }
    }
    run_portable(work, scratch, emit)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Emit, Work, run_body};
    use crate::direct::x86::{avx2, avx512};

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) fn run_avx512<F: Emit>(work: &Work, scratch: &mut Vec<f32>, emit: &mut F) {
        run_body::<32, F>(work, scratch, emit, |w, p, o, a, half, s| {
            if half {
                avx512::<1>(w, p, o, a, s)
            } else {
                avx512::<2>(w, p, o, a, s)
            }
        })
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn run_avx2<F: Emit>(work: &Work, scratch: &mut Vec<f32>, emit: &mut F) {
        run_body::<8, F>(work, scratch, emit, |w, p, o, a, _, s| avx2(w, p, o, a, s))
    }
}

#[cfg(target_arch = "aarch64")]
fn run_portable<F: Emit>(work: &Work, scratch: &mut Vec<f32>, emit: &mut F) {
    run_body::<8, F>(work, scratch, emit, |w, p, o, a, _, s| {
        crate::direct::arm::sums_neon(w, p, o, a, s)
    })
}

#[cfg(not(target_arch = "aarch64"))]
fn run_portable<F: Emit>(work: &Work, scratch: &mut Vec<f32>, emit: &mut F) {
    run_body::<4, F>(work, scratch, emit, |w, p, o, a, _, s| {
        crate::direct::sums_portable(w, p, o, a, s)
    })
}

/// [`run`] with `sums_of`, [`crate::direct`]'s kernel for runs of `V` tiles (as in its
/// `run_with`), inlined into each caller for its vector instructions. For each chunk of tile
/// rows: the input transform of every input channel into `V[ξ]`; then for each run of `V`
/// tiles and each tile of output channels, the 16 products' sums (`[ξ][channel][tile]`, 16 KB
/// at most, in L1) and straight from them the output transform, each output row's run of
/// values going to `emit`.
#[inline(always)]
fn run_body<const V: usize, F: Emit>(
    work: &Work,
    scratch: &mut Vec<f32>,
    emit: &mut F,
    sums_of: impl Fn(&[f32], &[f32], &[usize], usize, bool, &mut [[f32; V]; TILE]),
) {
    let Work {
        packed,
        o,
        c,
        image,
        h,
        w,
        pad_top,
        pad_left,
        ow,
        ref rows,
        ref tiles,
    } = *work;
    assert!(packed.len() >= packed_len(o, c), "packed kernel size");
    assert!(image.len() >= c * h * w, "image size");
    let o_end = (tiles.end * TILE).min(o);
    if rows.is_empty() || ow == 0 || tiles.start * TILE >= o_end || c == 0 {
        return;
    }
    let tile_rows = rows.len().div_ceil(2);
    // Tiles per chunk at most; a tile row wider than that is cut into column segments (each a
    // whole number of tiles wide, as even as can be), so that `V` stays within bounds.
    let cap = (CHUNK_VALUES / c).max(CHUNK_TILES);
    let all_columns = ow.div_ceil(2);
    let segments = all_columns.div_ceil(cap);
    let tw = all_columns.div_ceil(segments);
    // Tile rows per chunk, as even as can be.
    let most = cap.div_ceil(tw).clamp(1, tile_rows);
    let chunks = tile_rows.div_ceil(most);
    let per_chunk = tile_rows.div_ceil(chunks);
    let most_tiles = per_chunk * tw;
    // Scratch: the even and odd columns of the chunk's padded input rows (one channel at a
    // time), the four row combinations of one tile row, one padded row, and V (a run's
    // width past its end, which the last run reads and throws away).
    let split_len = (2 * per_chunk + 2) * 2 * (tw + 1);
    let combos_len = 8 * (tw + 1);
    let v_stride = c * most_tiles + V;
    let need = split_len + combos_len + 2 * (tw + 1) + XI * v_stride;
    if scratch.len() < need {
        scratch.resize(need, 0.0);
    }
    let (split, rest) = scratch.split_at_mut(split_len);
    let (combos, rest) = rest.split_at_mut(combos_len);
    let (line, rest) = rest.split_at_mut(2 * (tw + 1));
    let v = &mut rest[..XI * v_stride];
    let kernel_len = direct::packed_len(o, c);
    let mut sums = [[[0.0f32; V]; TILE]; XI];

    for segment in 0..segments {
        // This segment's tile columns.
        let tc0 = segment * all_columns / segments;
        let tw = (segment + 1) * all_columns / segments - tc0;
        let mut tr0 = 0;
        while tr0 < tile_rows {
            let chunk_rows = per_chunk.min(tile_rows - tr0);
            let t_len = chunk_rows * tw;
            let first_out = rows.start + 2 * tr0;
            // V[ξ][channel][tile].
            for ch in 0..c {
                let plane = &image[ch * h * w..][..h * w];
                split_rows(
                    plane,
                    (h, w),
                    (
                        first_out as isize - pad_top as isize,
                        (2 * tc0) as isize - pad_left as isize,
                    ),
                    2 * chunk_rows + 2,
                    tw,
                    split,
                    line,
                );
                for tr in 0..chunk_rows {
                    let at = ch * t_len + tr * tw;
                    transform_input(&split[2 * tr * 2 * (tw + 1)..], tw, combos, v, v_stride, at);
                }
            }
            let offsets: Vec<usize> = (0..c).map(|ch| ch * t_len).collect();
            let mut f = 0;
            while f < t_len {
                // The last run is half as wide when that covers what is left.
                let half = t_len - f <= V / 2;
                let step = (if half { V / 2 } else { V }).min(t_len - f);
                for t in tiles.clone() {
                    for (xi, sums) in sums.iter_mut().enumerate() {
                        let w = &packed[xi * kernel_len + t * c * TILE..][..c * TILE];
                        sums_of(w, &v[xi * v_stride..][..v_stride], &offsets, f, half, sums);
                    }
                    for j in 0..TILE {
                        let ch = t * TILE + j;
                        if ch >= o_end {
                            break;
                        }
                        let [top, bottom] = transform_output(&sums, j);
                        // Hand out the run's tiles a tile row at a time.
                        let mut i = 0;
                        while i < step {
                            let (tr, tc) = ((f + i) / tw, (f + i) % tw);
                            let n = (tw - tc).min(step - i);
                            let x = 2 * (tc0 + tc);
                            let len = (2 * n).min(ow - x);
                            for (dy, row) in [&top, &bottom].into_iter().enumerate() {
                                let y = first_out + 2 * tr + dy;
                                if y < rows.end {
                                    emit.emit(ch, (y - rows.start) * ow + x, &row[2 * i..][..len]);
                                }
                            }
                            i += n;
                        }
                    }
                }
                f += step;
            }
            tr0 += chunk_rows;
        }
    }
}

/// `rows` padded input rows from input row `first_row` (negative or past the plane: zeros),
/// each split into its even and odd columns (`tw + 1` each) from input column `first_column`
/// (negative or past the plane: zeros): row `r`'s even columns at `r · 2(tw + 1)`, its odd
/// ones right after.
#[inline(always)]
fn split_rows(
    plane: &[f32],
    (h, w): (usize, usize),
    (first_row, first_column): (isize, isize),
    rows: usize,
    tw: usize,
    split: &mut [f32],
    line: &mut [f32],
) {
    let width = tw + 1;
    for (r, out) in split.chunks_exact_mut(2 * width).take(rows).enumerate() {
        let y = first_row + r as isize;
        let (even, odd) = out.split_at_mut(width);
        if y < 0 || y >= h as isize {
            even.fill(0.0);
            odd.fill(0.0);
            continue;
        }
        // The padded row (zeros before and after the input's columns), then its even and odd
        // columns apart.
        let row = &plane[y as usize * w..][..w];
        let padded = &mut line[..2 * width];
        // Padded columns start..end read input columns first_column + start ..
        let start = (-first_column).clamp(0, 2 * width as isize) as usize;
        let end = (w as isize - first_column).clamp(start as isize, 2 * width as isize) as usize;
        padded[..start].fill(0.0);
        if start < end {
            let from = (first_column + start as isize) as usize;
            padded[start..end].copy_from_slice(&row[from..from + end - start]);
        }
        padded[end..].fill(0.0);
        for ((e, od), [a, b]) in even
            .iter_mut()
            .zip(odd.iter_mut())
            .zip(padded.as_chunks::<2>().0)
        {
            *e = *a;
            *od = *b;
        }
    }
}

/// One tile row's input transform `V = Bᵀ d B`: from the four split rows at `split` (as
/// [`split_rows`] lays them out), the `tw` tiles' 16 values each into `v[ξ · v_stride + at
/// ..]`.
#[inline(always)]
fn transform_input(
    split: &[f32],
    tw: usize,
    combos: &mut [f32],
    v: &mut [f32],
    v_stride: usize,
    at: usize,
) {
    let width = tw + 1;
    let row = |r: usize, odd: usize| &split[(2 * r + odd) * width..][..width];
    // Bᵀ d: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3, each's even columns (combos 0..4) and
    // odd ones (4..8).
    for odd in 0..2 {
        let (d0, d1, d2, d3) = (row(0, odd), row(1, odd), row(2, odd), row(3, odd));
        let (c0, rest) = combos[odd * 4 * width..].split_at_mut(width);
        let (c1, rest) = rest.split_at_mut(width);
        let (c2, rest) = rest.split_at_mut(width);
        let c3 = &mut rest[..width];
        for j in 0..width {
            c0[j] = d0[j] - d2[j];
            c1[j] = d1[j] + d2[j];
            c2[j] = d2[j] - d1[j];
            c3[j] = d1[j] - d3[j];
        }
    }
    // (Bᵀ d) B: columns e0 - e1, o0 + e1, e1 - o0, o0 - o1 (e: even, o: odd; 0: this tile's
    // first, 1: the next tile's).
    let (evens, odds) = combos[..8 * width].split_at(4 * width);
    for a in 0..4 {
        let e = &evens[a * width..][..width];
        let od = &odds[a * width..][..width];
        let (e0, e1, o0, o1) = (&e[..tw], &e[1..=tw], &od[..tw], &od[1..=tw]);
        let (v0, rest) = v[4 * a * v_stride + at..].split_at_mut(v_stride);
        let (v1, rest) = rest.split_at_mut(v_stride);
        let (v2, rest) = rest.split_at_mut(v_stride);
        let (v0, v1, v2, v3) = (&mut v0[..tw], &mut v1[..tw], &mut v2[..tw], &mut rest[..tw]);
        for j in 0..tw {
            v0[j] = e0[j] - e1[j];
            v1[j] = o0[j] + e1[j];
            v2[j] = e1[j] - o0[j];
            v3[j] = o0[j] - o1[j];
        }
    }
}

/// Channel `j`'s output values of a run of `V` tiles, back from the products' sums
/// (`Y = Aᵀ M A`): its two output rows, each tile's two columns side by side. Fixed-size
/// arrays, which the compiler keeps in vector registers.
#[inline(always)]
fn transform_output<const V: usize>(sums: &[[[f32; V]; TILE]; XI], j: usize) -> [[f32; 64]; 2] {
    const { assert!(V <= 32) };
    let m = |xi: usize, i: usize| sums[xi][j][i];
    let mut rows = [[0.0f32; 64]; 2];
    for i in 0..V {
        // Aᵀ M: rows m0 + m1 + m2 and m1 - m2 - m3 (of rows of four); then the same of each
        // row's four columns.
        let s: [f32; 4] = std::array::from_fn(|c| m(c, i) + m(4 + c, i) + m(8 + c, i));
        let t: [f32; 4] = std::array::from_fn(|c| m(4 + c, i) - m(8 + c, i) - m(12 + c, i));
        rows[0][2 * i] = s[0] + s[1] + s[2];
        rows[0][2 * i + 1] = s[1] - s[2] - s[3];
        rows[1][2 * i] = t[0] + t[1] + t[2];
        rows[1][2 * i + 1] = t[1] - t[2] - t[3];
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spatial::tests::values;

    struct Collect {
        out: Vec<f32>,
        ow: usize,
        rows: usize,
    }

    impl Emit for Collect {
        fn emit(&mut self, channel: usize, position: usize, values: &[f32]) {
            assert!(position % self.ow + values.len() <= self.ow, "within a row");
            assert!(position / self.ow < self.rows, "within the block");
            let at = channel * self.rows * self.ow + position;
            let dst = &mut self.out[at..at + values.len()];
            assert!(dst.iter().all(|v| v.is_nan()), "each position once");
            dst.copy_from_slice(values);
        }
    }

    #[test]
    fn winograd_blocks_give_the_convolution() {
        // (c, o, h, w, pad top, pad left, output rows, channel tiles)
        let cases = [
            (8, 8, 5, 5, 1, 1, 0..5, 0..1),
            (9, 20, 13, 13, 1, 1, 0..13, 0..3),
            (16, 64, 20, 23, 1, 1, 3..18, 2..6),
            (12, 16, 7, 9, 0, 0, 0..5, 0..2),
            (40, 24, 6, 31, 1, 0, 1..4, 1..3),
            (300, 10, 4, 4, 1, 1, 0..4, 0..2),
            // 64 channels, 15 tiles a row, 19 tile rows: chunks of 5 tile rows, the last of 4.
            (64, 16, 38, 30, 1, 1, 1..38, 0..2),
            // 300 channels, 70 tiles a row (more than a chunk's 64): two segments of 35.
            (300, 8, 5, 140, 1, 1, 0..5, 0..1),
            // 20 channels, 205 tiles a row: segments of 102 and 103; no padding.
            (20, 8, 4, 412, 0, 0, 0..2, 0..1),
        ];
        for (c, o, h, w, pt, pl, rows, tiles) in cases {
            // Padding after: whatever gives the output the rows asked for (SAME-like).
            let (oh, ow) = (h + 2 * pt - 2, w + 2 * pl - 2);
            assert!(rows.end <= oh);
            let kernel = values(o * c * 9, 1);
            let image = values(c * h * w, 2);
            let packed = pack(&kernel, o, c);
            let mut got = Collect {
                out: vec![f32::NAN; o * rows.len() * ow],
                ow,
                rows: rows.len(),
            };
            let work = Work {
                packed: &packed,
                o,
                c,
                image: &image,
                h,
                w,
                pad_top: pt,
                pad_left: pl,
                ow,
                rows: rows.clone(),
                tiles: tiles.clone(),
            };
            run(&work, &mut Vec::new(), &mut got);
            for oc in 0..o {
                for (r, y) in rows.clone().enumerate() {
                    for x in 0..ow {
                        let value = got.out[(oc * rows.len() + r) * ow + x];
                        if !(tiles.start * TILE..tiles.end * TILE).contains(&oc) {
                            assert!(value.is_nan(), "channel {oc} outside the block");
                            continue;
                        }
                        let mut want = 0.0f64;
                        for ic in 0..c {
                            for i in 0..3 {
                                for j in 0..3 {
                                    let (yy, xx) = (y + i, x + j);
                                    if yy < pt || xx < pl || yy - pt >= h || xx - pl >= w {
                                        continue;
                                    }
                                    let px = image[(ic * h + yy - pt) * w + xx - pl] as f64;
                                    want += kernel[((oc * c + ic) * 3 + i) * 3 + j] as f64 * px;
                                }
                            }
                        }
                        let tolerance = 1e-5 * (c as f64 * 9.0).sqrt() * 4.0;
                        assert!(
                            (value as f64 - want).abs() <= tolerance,
                            "c{c} o{o} {h}x{w}: channel {oc} row {y} column {x}: {value} against {want}"
                        );
                    }
                }
            }
        }
    }
}
