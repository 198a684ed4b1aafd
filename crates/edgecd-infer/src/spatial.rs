//! Depthwise convolution and max pooling over one f32 channel plane: pure loops, no tract, no
//! I/O.
//!
//! Each plane is first copied into a scratch buffer with its padding made explicit (zeros for
//! a convolution, the lowest float for a pool) and its columns split into `stride` phases
//! (columns p, p+s, p+2s … side by side). After that every kernel tap (ky, kx) reads one
//! contiguous span of one padded row, the same length as an output row, and an output row is a
//! sum (or max) of `kh × kw` such spans: no border cases, no strided reads. Kernel rows that
//! would only read padding are skipped.
//!
//! A 3×3 stride-2 max pool is separable and skips the phase split of its input: per output row,
//! the maximum of three input rows, then of each column pair and the next column (with AVX-512,
//! the column pairs are permuted out of the row, with no phase split).
//!
//! On x86_64 with AVX2 and FMA (checked at run time), 3×3, 5×5 and 7×7 convolutions and 2×2 and
//! 3×3 pools run hand-vectorised kernels (16 output columns, four independent sums); every other
//! case, and every other CPU (the Pi's NEON included), runs the portable row loops, which the
//! compiler vectorises.

/// The geometry of a 2-D window operation on one plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    /// Padding before the first row and column.
    pub pad_top: usize,
    pub pad_left: usize,
}

impl Geometry {
    /// Rows of the padded plane the output reads.
    fn padded_h(&self) -> usize {
        (self.oh - 1) * self.sh + (self.kh - 1) * self.dh + 1
    }

    /// Columns of the padded plane the output reads.
    fn padded_w(&self) -> usize {
        (self.ow - 1) * self.sw + (self.kw - 1) * self.dw + 1
    }

    /// Width of one column phase of a padded row (the widest, phase 0).
    fn phase_w(&self) -> usize {
        self.padded_w().div_ceil(self.sw)
    }

    /// Scratch length [`Plane::depthwise`] and [`Plane::max_pool`] need.
    pub fn scratch_len(&self) -> usize {
        if self.oh == 0 || self.ow == 0 {
            0
        } else {
            // The unrolled kernels read up to LANES - 1 values past a row's last output; a
            // stride above 1 splits rows through one padded line.
            let line = if self.sw == 1 { 0 } else { self.padded_w() };
            self.padded_h() * self.sw * self.phase_w() + LANES + line
        }
    }

    /// Where tap (ky, kx) of output row 0 starts in the padded, phase-split scratch; the tap
    /// of output row `oy` starts `oy * row_step()` later.
    fn tap_offset(&self, ky: usize, kx: usize) -> usize {
        let col = kx * self.dw;
        ky * self.dh * self.sw * self.phase_w() + (col % self.sw) * self.phase_w() + col / self.sw
    }

    /// Whether kernel row `ky` of output row `oy` reads an image row rather than padding (a
    /// padding row adds nothing to a convolution and never wins a max pool, so it is skipped).
    #[inline(always)]
    fn reads_image(&self, oy: usize, ky: usize) -> bool {
        let r = oy * self.sh + ky * self.dh;
        r >= self.pad_top && r < self.pad_top + self.h
    }

    fn row_step(&self) -> usize {
        self.sh * self.sw * self.phase_w()
    }
}

/// Copies `input` (h × w) into `scratch` padded with `fill`, each row split into column phases.
fn pad_and_split(geo: &Geometry, input: &[f32], fill: f32, scratch: &mut [f32]) {
    let (pw, sw, padded_w) = (geo.phase_w(), geo.sw, geo.padded_w());
    let scratch = &mut scratch[..geo.scratch_len()];
    // Padded column j holds input column j - pad_left.
    let first = geo.pad_left.min(padded_w);
    let last = (geo.pad_left + geo.w).min(padded_w);
    let (rows, rest) = scratch.split_at_mut(geo.padded_h() * pw * sw);
    let (slack, line) = rest.split_at_mut(LANES);
    slack.fill(fill);
    line.fill(fill);
    for (r, dst) in rows.chunks_exact_mut(pw * sw).enumerate() {
        let iy = r.checked_sub(geo.pad_top).filter(|iy| *iy < geo.h);
        let Some(iy) = iy.filter(|_| first < last) else {
            dst.fill(fill);
            continue;
        };
        let row = &input[iy * geo.w..][..last - first];
        if sw == 1 {
            dst[..first].fill(fill);
            dst[first..last].copy_from_slice(row);
            dst[last..].fill(fill);
            continue;
        }
        // `line` keeps `fill` outside first..last.
        line[first..last].copy_from_slice(row);
        if sw == 2 {
            let (even, odd) = dst.split_at_mut(pw);
            split_pairs(&line[..padded_w], even, odd);
            if padded_w % 2 == 1 {
                // The odd phase is one slot shorter than the even one.
                odd[pw - 1] = fill;
            }
        } else {
            // A phase can be one slot shorter than the widest, so the row is filled first.
            dst.fill(fill);
            for (p, phase) in dst.chunks_exact_mut(pw).enumerate() {
                for (d, s) in phase.iter_mut().zip(line.iter().skip(p).step_by(sw)) {
                    *d = *s;
                }
            }
        }
    }
}

/// Splits `line` into its even-indexed values (`even`, `⌈len / 2⌉` of them) and its
/// odd-indexed ones (`odd`, `⌊len / 2⌋`): the column phases of a stride-2 window.
fn split_pairs(line: &[f32], even: &mut [f32], odd: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2, checked just above; the function is safe Rust otherwise.
        #[allow(unsafe_code)]
        unsafe {
            x86::split_pairs(line, even, odd)
        };
        return;
    }
    split_pairs_generic(line, even, odd, 0)
}

/// [`split_pairs`] from pair `from` on, one pair at a time.
fn split_pairs_generic(line: &[f32], even: &mut [f32], odd: &mut [f32], from: usize) {
    let pairs = line.len() / 2;
    for i in from..pairs {
        even[i] = line[2 * i];
        odd[i] = line[2 * i + 1];
    }
    if line.len() % 2 == 1 {
        even[pairs] = line[line.len() - 1];
    }
}

/// 3×3, stride-2, undilated max pooling (squeezenet's and resnet50's), separably: per output
/// row, the largest of its (up to) three input rows column by column, then of each pair of
/// column phases and the next even column. A third of the work of the general kernel, which
/// splits every input row into phases and takes nine maxima per output.
/// With `WIDE` (only from [`max_pool_3x3_s2_avx512`]), the column pairs are taken by AVX-512
/// permutes straight from the row maxima, with no phase split.
#[inline(always)]
fn max_pool_3x3_s2_body<const WIDE: bool>(
    geo: &Geometry,
    input: &[f32],
    scratch: &mut [f32],
    out: &mut [f32],
) {
    let (padded_w, ow) = (geo.padded_w(), geo.ow);
    let (line, rest) = scratch.split_at_mut(padded_w);
    let (even, rest) = rest.split_at_mut(ow + 1);
    let odd = &mut rest[..ow];
    // Padded column j holds input column j - pad_left.
    let first = geo.pad_left.min(padded_w);
    let last = (geo.pad_left + geo.w).min(padded_w);
    for (oy, orow) in out.chunks_exact_mut(ow).enumerate() {
        let mut rows = (0..3).filter_map(|ky| {
            let iy = (oy * 2 + ky).checked_sub(geo.pad_top)?;
            (iy < geo.h).then(|| &input[iy * geo.w..][..last - first])
        });
        line[..first].fill(f32::MIN);
        line[last..].fill(f32::MIN);
        // Each value written once (a max into `line` in place became masked stores).
        let span = &mut line[first..last];
        match (rows.next(), rows.next(), rows.next()) {
            (Some(a), Some(b), Some(c)) => {
                for (((d, a), b), c) in span.iter_mut().zip(a).zip(b).zip(c) {
                    *d = max(max(*a, *b), *c);
                }
            }
            (Some(a), Some(b), None) => {
                for ((d, a), b) in span.iter_mut().zip(a).zip(b) {
                    *d = max(*a, *b);
                }
            }
            (Some(a), None, _) => span.copy_from_slice(a),
            _ => span.fill(f32::MIN),
        }
        #[cfg(target_arch = "x86_64")]
        if WIDE {
            // SAFETY: `WIDE` is only set by `max_pool_3x3_s2_avx512`, which runs on CPUs with
            // AVX-512F.
            #[allow(unsafe_code)]
            unsafe {
                x86::max_3_s2_avx512(line, orow)
            };
            continue;
        }
        split_pairs(line, even, odd);
        let next = &even[1..];
        for (((d, a), b), c) in orow.iter_mut().zip(&*even).zip(&*odd).zip(next) {
            *d = max(max(*a, *b), *c);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn max_pool_3x3_s2_avx2(geo: &Geometry, input: &[f32], scratch: &mut [f32], out: &mut [f32]) {
    max_pool_3x3_s2_body::<false>(geo, input, scratch, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn max_pool_3x3_s2_avx512(geo: &Geometry, input: &[f32], scratch: &mut [f32], out: &mut [f32]) {
    max_pool_3x3_s2_body::<true>(geo, input, scratch, out)
}

/// The AVX-512 build where the CPU has it (`x86::max_3_s2_avx512`), else the AVX2 one, else
/// the portable loop.
fn max_pool_3x3_s2(geo: &Geometry, input: &[f32], scratch: &mut [f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F, checked just above; the function is safe Rust
        // otherwise.
        #[allow(unsafe_code)]
        unsafe {
            max_pool_3x3_s2_avx512(geo, input, scratch, out)
        };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA, checked just above; the function is safe Rust
        // otherwise.
        #[allow(unsafe_code)]
        unsafe {
            max_pool_3x3_s2_avx2(geo, input, scratch, out)
        };
        return;
    }
    max_pool_3x3_s2_body::<false>(geo, input, scratch, out)
}

/// Output columns the unrolled kernels compute together (two 8-lane vectors on AVX2).
const LANES: usize = 16;

#[cfg(not(target_arch = "aarch64"))]
#[inline(always)]
fn madd_plain(a: f32, b: f32, c: f32) -> f32 {
    a * b + c
}

#[cfg(any(target_arch = "aarch64", target_arch = "x86_64"))]
#[inline(always)]
fn madd_fused(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}

#[inline(always)]
fn max(a: f32, b: f32) -> f32 {
    if b > a { b } else { a }
}

macro_rules! plane_fns {
    ($(#[$attr:meta])* fn $dw:ident, $mp:ident, $madd:ident) => {
        /// Depthwise convolution of one padded, phase-split plane, a row at a time: one
        /// contiguous multiply-add per tap.
        $(#[$attr])*
        fn $dw(plane: &Plane, padded: &[f32], kernel: &[f32], bias: f32, out: &mut [f32]) {
            let geo = &plane.geo;
            for (oy, orow) in out.chunks_exact_mut(geo.ow).enumerate() {
                orow.fill(bias);
                let base = oy * plane.row_step;
                for (t, (&k, &off)) in kernel.iter().zip(&plane.offsets).enumerate() {
                    if !geo.reads_image(oy, t / geo.kw) {
                        continue;
                    }
                    let o = base + off;
                    for (d, s) in orow.iter_mut().zip(&padded[o..o + geo.ow]) {
                        *d = $madd(k, *s, *d);
                    }
                }
            }
        }

        /// Max pooling of one padded (with `f32::MIN`), phase-split plane.
        $(#[$attr])*
        fn $mp(plane: &Plane, padded: &[f32], out: &mut [f32]) {
            let geo = &plane.geo;
            for (oy, orow) in out.chunks_exact_mut(geo.ow).enumerate() {
                orow.fill(f32::MIN);
                let base = oy * plane.row_step;
                for (t, &off) in plane.offsets.iter().enumerate() {
                    if !geo.reads_image(oy, t / geo.kw) {
                        continue;
                    }
                    let o = base + off;
                    for (d, s) in orow.iter_mut().zip(&padded[o..o + geo.ow]) {
                        *d = max(*d, *s);
                    }
                }
            }
        }
    };
}

#[cfg(not(target_arch = "aarch64"))]
plane_fns!(fn depthwise_generic, max_pool_generic, madd_plain);
// Every aarch64 CPU has fused multiply-add.
#[cfg(target_arch = "aarch64")]
plane_fns!(fn depthwise_generic, max_pool_generic, madd_fused);
#[cfg(target_arch = "x86_64")]
plane_fns!(#[target_feature(enable = "avx2,fma")] fn depthwise_avx2, max_pool_avx2, madd_fused);

/// AVX2 + FMA kernels for the common window sizes, written with intrinsics: the compiler's
/// auto-vectoriser handled the 5×5 loop above but left the 3×3 one scalar.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use super::Plane;
    use std::arch::x86_64::*;

    /// Loads 8 floats of `s` from `o` (bounds-checked).
    #[inline(always)]
    fn load(s: &[f32], o: usize) -> __m256 {
        let s = &s[o..o + 8];
        // SAFETY: `s` holds exactly 8 floats; AVX is enabled in every caller (all of them are
        // `target_feature(enable = "avx2,fma")` functions, into which this is inlined).
        unsafe { _mm256_loadu_ps(s.as_ptr()) }
    }

    /// Stores the first `out.len()` (at most 8) lanes of `v`.
    #[inline(always)]
    fn store(v: __m256, out: &mut [f32]) {
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` holds 8 floats; AVX as in `load`.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
        let n = out.len();
        out.copy_from_slice(&lanes[..n]);
    }

    /// `out[x]` = the largest of `line[2x]`, `line[2x + 1]` and `line[2x + 2]`, 16 at a time:
    /// the even and odd columns picked out of two vectors by permutes (`line` needs
    /// `2 · out.len() + 1` values). Instead of the phase split and a second pass: squeezenet's
    /// stem and its pool, one thread, p50 0.726–0.732 → 0.703–0.704 ms.
    #[target_feature(enable = "avx512f")]
    pub(super) fn max_3_s2_avx512(line: &[f32], out: &mut [f32]) {
        let n = line.len();
        assert!(out.is_empty() || 2 * out.len() < n, "line too short");
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        // The 16 values of `line` from `at`, those past its end `f32::MIN`.
        let load = |at: usize| {
            if at >= n {
                return _mm512_set1_ps(f32::MIN);
            }
            let mask = lanes((n - at).min(16));
            // SAFETY: the mask reads only lanes inside `line` (at + lane < n).
            unsafe { _mm512_mask_loadu_ps(_mm512_set1_ps(f32::MIN), mask, line.as_ptr().add(at)) }
        };
        let mut x = 0;
        while x < out.len() {
            let at = 2 * x;
            let (a, b, a2, b2) = (load(at), load(at + 16), load(at + 2), load(at + 18));
            let e = _mm512_permutex2var_ps(a, even, b);
            let o = _mm512_permutex2var_ps(a, odd, b);
            let e2 = _mm512_permutex2var_ps(a2, even, b2);
            // max(p, q) = if q > p { q } else { p }, as `super::max`: MAXPS(q, p).
            let m = _mm512_max_ps(e2, _mm512_max_ps(o, e));
            let r = (out.len() - x).min(16);
            // SAFETY: the mask writes only lanes inside `out` (x + lane < out.len()).
            unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(x), lanes(r), m) };
            x += 16;
        }
    }

    /// A mask of the first `n` (at most 16) lanes.
    fn lanes(n: usize) -> __mmask16 {
        if n >= 16 { u16::MAX } else { (1u16 << n) - 1 }
    }

    /// [`super::split_pairs`], eight pairs at a time.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn split_pairs(line: &[f32], even: &mut [f32], odd: &mut [f32]) {
        let pairs = line.len() / 2;
        let mut i = 0;
        while i + 8 <= pairs {
            let (a, b) = (load(line, 2 * i), load(line, 2 * i + 8));
            // Per 128-bit lane: a0 a2 b0 b2 | a4 a6 b4 b6, then the 64-bit quarters reordered.
            let e = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
            let o = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
            let e = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(e)));
            let o = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(o)));
            let (e_out, o_out) = (&mut even[i..i + 8], &mut odd[i..i + 8]);
            // SAFETY: both slices hold exactly 8 floats; AVX as in `load`.
            unsafe {
                _mm256_storeu_ps(e_out.as_mut_ptr(), e);
                _mm256_storeu_ps(o_out.as_mut_ptr(), o);
            }
            i += 8;
        }
        super::split_pairs_generic(line, even, odd, i)
    }

    /// Depthwise convolution with a KH × KW kernel of one padded, phase-split plane, 16
    /// output columns at a time.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn depthwise<const KH: usize, const KW: usize>(
        plane: &Plane,
        padded: &[f32],
        kernel: &[f32],
        bias: f32,
        out: &mut [f32],
    ) {
        let geo = &plane.geo;
        let offsets: [[usize; KW]; KH] =
            std::array::from_fn(|ky| std::array::from_fn(|kx| plane.offsets[ky * KW + kx]));
        let k: [[__m256; KW]; KH] = std::array::from_fn(|ky| {
            std::array::from_fn(|kx| _mm256_set1_ps(kernel[ky * KW + kx]))
        });
        for (oy, orow) in out.chunks_exact_mut(geo.ow).enumerate() {
            let base = oy * plane.row_step;
            for x0 in (0..geo.ow).step_by(16) {
                // Four independent sums: two vectors × even and odd kernel rows.
                let mut e0 = _mm256_set1_ps(bias);
                let mut e1 = e0;
                let mut o0 = _mm256_setzero_ps();
                let mut o1 = o0;
                for ky in 0..KH {
                    if !geo.reads_image(oy, ky) {
                        continue;
                    }
                    for kx in 0..KW {
                        let (w, at) = (k[ky][kx], base + x0 + offsets[ky][kx]);
                        let (a, b) = (load(padded, at), load(padded, at + 8));
                        if ky % 2 == 0 {
                            e0 = _mm256_fmadd_ps(w, a, e0);
                            e1 = _mm256_fmadd_ps(w, b, e1);
                        } else {
                            o0 = _mm256_fmadd_ps(w, a, o0);
                            o1 = _mm256_fmadd_ps(w, b, o1);
                        }
                    }
                }
                let n = 16.min(geo.ow - x0);
                let row = &mut orow[x0..x0 + n];
                let (lo, hi) = row.split_at_mut(n.min(8));
                store(_mm256_add_ps(e0, o0), lo);
                store(_mm256_add_ps(e1, o1), hi);
            }
        }
    }

    /// Max pooling with a KH × KW window over a padded (with `f32::MIN`), phase-split plane.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn max_pool<const KH: usize, const KW: usize>(
        plane: &Plane,
        padded: &[f32],
        out: &mut [f32],
    ) {
        let geo = &plane.geo;
        let offsets: [[usize; KW]; KH] =
            std::array::from_fn(|ky| std::array::from_fn(|kx| plane.offsets[ky * geo.kw + kx]));
        for (oy, orow) in out.chunks_exact_mut(geo.ow).enumerate() {
            let base = oy * plane.row_step;
            for x0 in (0..geo.ow).step_by(16) {
                let mut m0 = _mm256_set1_ps(f32::MIN);
                let mut m1 = m0;
                for (ky, row) in offsets.iter().enumerate() {
                    if !geo.reads_image(oy, ky) {
                        continue;
                    }
                    for off in row {
                        let at = base + off + x0;
                        // maxps(src, acc): acc unless src is greater, like `max` above.
                        m0 = _mm256_max_ps(load(padded, at), m0);
                        m1 = _mm256_max_ps(load(padded, at + 8), m1);
                    }
                }
                let n = 16.min(geo.ow - x0);
                let row = &mut orow[x0..x0 + n];
                let (lo, hi) = row.split_at_mut(n.min(8));
                store(m0, lo);
                store(m1, hi);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// Checks the slice lengths against `geo` (a caller bug otherwise).
fn check(geo: &Geometry, input: &[f32], scratch: &[f32], out: &[f32]) {
    assert_eq!(input.len(), geo.h * geo.w, "input plane size");
    assert_eq!(out.len(), geo.oh * geo.ow, "output plane size");
    assert!(scratch.len() >= geo.scratch_len(), "scratch size");
    assert!(geo.sw > 0 && geo.sh > 0 && geo.dw > 0 && geo.dh > 0);
    assert!(geo.kh > 0 && geo.kw > 0);
}

/// One plane operation's geometry with its scratch layout worked out once per tensor.
#[derive(Debug, Clone)]
pub struct Plane {
    geo: Geometry,
    /// Where each tap (ky · kw + kx) of output row 0 starts in the scratch.
    offsets: Vec<usize>,
    /// How far the taps move from one output row to the next.
    row_step: usize,
}

impl Plane {
    pub fn new(geo: Geometry) -> Plane {
        let offsets = (0..geo.kh * geo.kw)
            .map(|t| geo.tap_offset(t / geo.kw, t % geo.kw))
            .collect();
        Plane {
            offsets,
            row_step: geo.row_step(),
            geo,
        }
    }

    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// Where each tap (ky · kw + kx) of output row 0 starts in the padded scratch
    /// ([`Plane::pad`]); output column `x` of that row reads `x` further on.
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// How far the taps move in the padded scratch from one output row to the next.
    pub fn row_step(&self) -> usize {
        self.row_step
    }

    /// The same operation restricted to output rows `rows`, and the input rows it reads: the
    /// band's plane takes `h × w` values of those input rows (its own padding rows made
    /// explicit) and gives `rows.len() × ow` values, the full plane's output rows `rows`. A
    /// thread that computes some rows of every channel pads only what those rows read.
    pub fn band(&self, rows: std::ops::Range<usize>) -> (Plane, std::ops::Range<usize>) {
        let g = self.geo;
        assert!(
            rows.start <= rows.end && rows.end <= g.oh,
            "output rows {rows:?} of {}",
            g.oh
        );
        // Padded rows the band reads (padded row j holds input row j - pad_top).
        let first = rows.start * g.sh;
        let end = match rows.end.checked_sub(1) {
            Some(last) if !rows.is_empty() => last * g.sh + (g.kh - 1) * g.dh + 1,
            _ => first,
        };
        let start = first.saturating_sub(g.pad_top).min(g.h);
        let stop = end.saturating_sub(g.pad_top).clamp(start, g.h);
        let geo = Geometry {
            h: stop - start,
            oh: rows.len(),
            pad_top: (g.pad_top + start).saturating_sub(first),
            ..g
        };
        (Plane::new(geo), start..stop)
    }

    /// Depthwise convolution of `input` (h × w) by `kernel` (kh × kw) plus `bias` into `out`
    /// (oh × ow). `scratch` holds at least [`Geometry::scratch_len`] values.
    pub fn depthwise(
        &self,
        input: &[f32],
        kernel: &[f32],
        bias: f32,
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        check(&self.geo, input, scratch, out);
        assert_eq!(kernel.len(), self.geo.kh * self.geo.kw, "kernel size");
        if out.is_empty() {
            return;
        }
        pad_and_split(&self.geo, input, 0.0, scratch);
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            // SAFETY: the CPU has AVX2 and FMA, checked just above; the functions are safe
            // Rust otherwise.
            #[allow(unsafe_code)]
            unsafe {
                match (self.geo.kh, self.geo.kw) {
                    (3, 3) => x86::depthwise::<3, 3>(self, scratch, kernel, bias, out),
                    (5, 5) => x86::depthwise::<5, 5>(self, scratch, kernel, bias, out),
                    (7, 7) => x86::depthwise::<7, 7>(self, scratch, kernel, bias, out),
                    _ => depthwise_avx2(self, scratch, kernel, bias, out),
                }
            };
            return;
        }
        depthwise_generic(self, scratch, kernel, bias, out)
    }

    /// Copies `input` (h × w) into `padded` (at least [`Geometry::scratch_len`] values) with
    /// zero padding, in the layout [`Plane::im2col_rows`] reads.
    pub fn pad(&self, input: &[f32], padded: &mut [f32]) {
        assert_eq!(input.len(), self.geo.h * self.geo.w, "input plane size");
        assert!(padded.len() >= self.geo.scratch_len(), "scratch size");
        if self.geo.oh > 0 && self.geo.ow > 0 {
            pad_and_split(&self.geo, input, 0.0, padded);
        }
    }

    /// This plane's rows of an im2col matrix for output rows `rows`: row `ky · kw + kx` of
    /// `out` (kh · kw rows of `rows.len() × ow` values) holds, for each of those output
    /// positions, the input value that tap reads (zero in the padding). `padded` comes from
    /// [`Plane::pad`]. A dense convolution is then one matrix product.
    pub fn im2col_rows(&self, padded: &[f32], rows: std::ops::Range<usize>, out: &mut [f32]) {
        let geo = &self.geo;
        assert!(rows.end <= geo.oh, "output rows {rows:?} of {}", geo.oh);
        let len = rows.len() * geo.ow;
        assert_eq!(out.len(), geo.kh * geo.kw * len, "im2col rows size");
        if len == 0 {
            return;
        }
        for (row, &off) in out.chunks_exact_mut(len).zip(&self.offsets) {
            for (oy, dst) in rows.clone().zip(row.chunks_exact_mut(geo.ow)) {
                let o = oy * self.row_step + off;
                dst.copy_from_slice(&padded[o..o + geo.ow]);
            }
        }
    }

    /// Max pooling of `input` (h × w) into `out` (oh × ow); padding never wins, and a window
    /// entirely outside the image gives the lowest float, as in tract and onnxruntime.
    pub fn max_pool(&self, input: &[f32], scratch: &mut [f32], out: &mut [f32]) {
        check(&self.geo, input, scratch, out);
        if out.is_empty() {
            return;
        }
        let g = &self.geo;
        if (g.kh, g.kw, g.sh, g.sw, g.dh, g.dw) == (3, 3, 2, 2, 1, 1) {
            return max_pool_3x3_s2(g, input, scratch, out);
        }
        pad_and_split(&self.geo, input, f32::MIN, scratch);
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            // SAFETY: the CPU has AVX2 and FMA, checked just above; the function is safe Rust
            // otherwise.
            #[allow(unsafe_code)]
            unsafe {
                match (self.geo.kh, self.geo.kw) {
                    (2, 2) => x86::max_pool::<2, 2>(self, scratch, out),
                    (3, 3) => x86::max_pool::<3, 3>(self, scratch, out),
                    _ => max_pool_avx2(self, scratch, out),
                }
            };
            return;
        }
        max_pool_generic(self, scratch, out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The textbook definitions, one output value at a time.
    fn naive(geo: &Geometry, input: &[f32], kernel: Option<&[f32]>, bias: f32) -> Vec<f32> {
        let mut out = vec![0.0; geo.oh * geo.ow];
        for oy in 0..geo.oh {
            for ox in 0..geo.ow {
                let mut acc = if kernel.is_some() { bias } else { f32::MIN };
                for ky in 0..geo.kh {
                    for kx in 0..geo.kw {
                        let iy = (oy * geo.sh + ky * geo.dh) as isize - geo.pad_top as isize;
                        let ix = (ox * geo.sw + kx * geo.dw) as isize - geo.pad_left as isize;
                        if iy < 0 || ix < 0 || iy >= geo.h as isize || ix >= geo.w as isize {
                            continue;
                        }
                        let v = input[iy as usize * geo.w + ix as usize];
                        match kernel {
                            Some(k) => acc += k[ky * geo.kw + kx] * v,
                            None => acc = acc.max(v),
                        }
                    }
                }
                out[oy * geo.ow + ox] = acc;
            }
        }
        out
    }

    /// A square window of size `k`, stride `s`, dilation `d` and padding `pad` on every side.
    pub(crate) fn geometry(
        h: usize,
        w: usize,
        k: usize,
        s: usize,
        d: usize,
        pad: usize,
    ) -> Geometry {
        let span = d * (k - 1) + 1;
        Geometry {
            h,
            w,
            oh: (h + 2 * pad - span) / s + 1,
            ow: (w + 2 * pad - span) / s + 1,
            kh: k,
            kw: k,
            sh: s,
            sw: s,
            dh: d,
            dw: d,
            pad_top: pad,
            pad_left: pad,
        }
    }

    /// Deterministic values in [-1, 1).
    pub(crate) fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2654435761).wrapping_add(12345);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 2000) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_the_definition_over_kernels_strides_dilations_and_padding() {
        let mut cases = 0;
        for (h, w) in [(1, 1), (5, 7), (12, 9), (17, 16)] {
            for k in [1, 2, 3, 4, 5] {
                for s in [1, 2, 3] {
                    for d in [1, 2] {
                        for pad in [0, 1, 2] {
                            let span = d * (k - 1) + 1;
                            if h + 2 * pad < span || w + 2 * pad < span {
                                continue;
                            }
                            let geo = geometry(h, w, k, s, d, pad);
                            let plane = Plane::new(geo);
                            let input = values(h * w, cases);
                            let kernel = values(k * k, cases + 7);
                            let mut scratch = vec![0.0; geo.scratch_len()];
                            let mut out = vec![0.0; geo.oh * geo.ow];
                            plane.depthwise(&input, &kernel, 0.25, &mut scratch, &mut out);
                            let want = naive(&geo, &input, Some(&kernel), 0.25);
                            for (i, (a, b)) in out.iter().zip(&want).enumerate() {
                                assert!(
                                    (a - b).abs() < 1e-5,
                                    "depthwise {geo:?} at {i}: {a} vs {b}"
                                );
                            }
                            plane.max_pool(&input, &mut scratch, &mut out);
                            assert_eq!(out, naive(&geo, &input, None, 0.0), "max pool {geo:?}");
                            // The im2col rows weighted by the kernel are the convolution.
                            plane.pad(&input, &mut scratch);
                            for rows in [0..geo.oh, 0..geo.oh / 2, geo.oh / 2..geo.oh] {
                                let len = rows.len() * geo.ow;
                                let mut col = vec![f32::NAN; k * k * len];
                                plane.im2col_rows(&scratch, rows.clone(), &mut col);
                                for i in 0..len {
                                    let b = want[rows.start * geo.ow + i];
                                    let a = 0.25
                                        + (0..k * k)
                                            .map(|t| kernel[t] * col[t * len + i])
                                            .sum::<f32>();
                                    assert!(
                                        (a - b).abs() < 1e-5,
                                        "im2col {geo:?} {rows:?} at {i}: {a} vs {b}"
                                    );
                                }
                            }
                            // A band of output rows, from only the input rows it reads, is
                            // those rows of the whole plane's output.
                            let pooled = naive(&geo, &input, None, 0.0);
                            let third = geo.oh / 3;
                            for rows in [
                                0..geo.oh,
                                0..geo.oh / 2,
                                geo.oh / 2..geo.oh,
                                third..third + 1,
                            ] {
                                let (band, read) = plane.band(rows.clone());
                                let bg = *band.geometry();
                                assert_eq!((bg.oh, bg.ow), (rows.len(), geo.ow));
                                let part = &input[read.start * w..read.end * w];
                                let whole = rows.start * geo.ow..rows.end * geo.ow;
                                let mut bs = vec![0.0; bg.scratch_len()];
                                let mut bo = vec![f32::NAN; bg.oh * bg.ow];
                                band.depthwise(part, &kernel, 0.25, &mut bs, &mut bo);
                                for (a, b) in bo.iter().zip(&want[whole.clone()]) {
                                    assert!(
                                        (a - b).abs() < 1e-5,
                                        "band {geo:?} {rows:?}: {a} vs {b}"
                                    );
                                }
                                band.max_pool(part, &mut bs, &mut bo);
                                assert_eq!(bo, pooled[whole.clone()], "band pool {geo:?} {rows:?}");
                                band.pad(part, &mut bs);
                                let len = whole.len();
                                let mut col = vec![f32::NAN; k * k * len];
                                band.im2col_rows(&bs, 0..rows.len(), &mut col);
                                for i in 0..len {
                                    let a = 0.25
                                        + (0..k * k)
                                            .map(|t| kernel[t] * col[t * len + i])
                                            .sum::<f32>();
                                    let b = want[whole.start + i];
                                    assert!((a - b).abs() < 1e-5, "band im2col {geo:?} {rows:?}");
                                }
                            }
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert!(cases > 300, "only {cases} cases ran");
    }

    /// The dispatching entry points (AVX2 kernels on x86_64) and the portable loops the Pi runs,
    /// called directly, on wide rows and the 7×7 kernel too.
    #[test]
    fn the_portable_loops_and_wide_rows() {
        for (k, s, pad, w) in [
            (3, 2, 1, 21),
            (5, 1, 2, 21),
            (3, 1, 0, 70),
            (2, 2, 0, 21),
            (7, 2, 3, 80),
            (5, 1, 2, 37),
        ] {
            let geo = geometry(23, w, k, s, 1, pad);
            let plane = Plane::new(geo);
            let input = values(geo.h * geo.w, k as u32);
            let kernel = values(k * k, s as u32);
            let want = naive(&geo, &input, Some(&kernel), 0.5);
            let mut scratch = vec![0.0; geo.scratch_len()];
            let mut out = vec![0.0; geo.oh * geo.ow];
            plane.depthwise(&input, &kernel, 0.5, &mut scratch, &mut out);
            let mut portable = vec![0.0; geo.oh * geo.ow];
            depthwise_generic(&plane, &scratch, &kernel, 0.5, &mut portable);
            for ((a, b), c) in out.iter().zip(&want).zip(&portable) {
                assert!(
                    (a - b).abs() < 1e-4 && (c - b).abs() < 1e-4,
                    "k={k} s={s}: {a} {c} vs {b}"
                );
            }
            pad_and_split(&geo, &input, f32::MIN, &mut scratch);
            max_pool_generic(&plane, &scratch, &mut portable);
            assert_eq!(portable, naive(&geo, &input, None, 0.0), "k={k} s={s}");
        }
    }

    /// The 3×3 stride-2 pool's portable loop, its AVX2 build and its AVX-512 one (when the CPU
    /// has them) against the definition, on rows around multiples of 16 and 32 wide.
    #[test]
    fn every_3x3_s2_pool_kernel_gives_the_definition() {
        // The AVX-512 runs, counted on x86-64 only (elsewhere there is nothing to count).
        #[cfg(target_arch = "x86_64")]
        let mut ran = 0;
        for w in [3, 4, 5, 17, 31, 32, 33, 34, 35, 36, 65, 66, 111] {
            for pad in [0, 1] {
                let geo = geometry(7, w, 3, 2, 1, pad);
                let input = values(geo.h * geo.w, w as u32);
                let want = naive(&geo, &input, None, 0.0);
                let mut scratch = vec![0.0; geo.scratch_len()];
                let mut out = vec![f32::NAN; geo.oh * geo.ow];
                max_pool_3x3_s2_body::<false>(&geo, &input, &mut scratch, &mut out);
                assert_eq!(out, want, "portable, w {w} pad {pad}");
                #[cfg(target_arch = "x86_64")]
                {
                    if has_avx2_fma() {
                        out.fill(f32::NAN);
                        // SAFETY: the CPU has AVX2 and FMA.
                        #[allow(unsafe_code)]
                        unsafe {
                            max_pool_3x3_s2_avx2(&geo, &input, &mut scratch, &mut out)
                        };
                        assert_eq!(out, want, "AVX2, w {w} pad {pad}");
                    }
                    if std::is_x86_feature_detected!("avx512f") {
                        out.fill(f32::NAN);
                        // SAFETY: the CPU has AVX-512F.
                        #[allow(unsafe_code)]
                        unsafe {
                            max_pool_3x3_s2_avx512(&geo, &input, &mut scratch, &mut out)
                        };
                        assert_eq!(out, want, "AVX-512, w {w} pad {pad}");
                        ran += 1;
                    }
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            assert_eq!(ran, 26);
        }
    }

    #[test]
    fn split_pairs_matches_the_portable_loop() {
        for len in [0, 1, 2, 15, 16, 17, 31, 32, 33, 111, 224] {
            let line = values(len, len as u32);
            let (mut even, mut odd) = (vec![0.0; len.div_ceil(2)], vec![0.0; len / 2]);
            split_pairs(&line, &mut even, &mut odd);
            let want_even: Vec<f32> = line.iter().step_by(2).copied().collect();
            let want_odd: Vec<f32> = line.iter().skip(1).step_by(2).copied().collect();
            assert_eq!((&even, &odd), (&want_even, &want_odd), "len {len}");
            let (mut e2, mut o2) = (vec![0.0; len.div_ceil(2)], vec![0.0; len / 2]);
            split_pairs_generic(&line, &mut e2, &mut o2, 0);
            assert_eq!((&e2, &o2), (&want_even, &want_odd), "portable, len {len}");
        }
    }

    #[test]
    fn asymmetric_geometry() {
        // 3×5 kernel, stride 2×1, dilation 1×2, padding only on top.
        let geo = Geometry {
            h: 9,
            w: 11,
            oh: 4,
            ow: 3,
            kh: 3,
            kw: 5,
            sh: 2,
            sw: 1,
            dh: 1,
            dw: 2,
            pad_top: 1,
            pad_left: 0,
        };
        let plane = Plane::new(geo);
        let input = values(99, 3);
        let kernel = values(15, 4);
        let mut out = vec![0.0; 12];
        plane.depthwise(
            &input,
            &kernel,
            -1.0,
            &mut vec![0.0; geo.scratch_len()],
            &mut out,
        );
        let want = naive(&geo, &input, Some(&kernel), -1.0);
        for (a, b) in out.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn a_window_entirely_in_padding_gives_the_lowest_float() {
        let geo = Geometry {
            h: 1,
            w: 1,
            oh: 1,
            ow: 3,
            kh: 1,
            kw: 1,
            sh: 1,
            sw: 1,
            dh: 1,
            dw: 1,
            pad_top: 0,
            pad_left: 1,
        };
        let mut out = vec![0.0; 3];
        Plane::new(geo).max_pool(&[5.0], &mut vec![0.0; geo.scratch_len()], &mut out);
        assert_eq!(out, [f32::MIN, 5.0, f32::MIN]);
    }
}
