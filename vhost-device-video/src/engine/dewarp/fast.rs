//! The fast remap, bit-exact to [`super::ReferenceEngine`].
//!
//! Inside a cell the reference's position numerator is linear along a line:
//! `N(fx) = A + fx * B` with `A = cw ((ch-fy) X00 + fy X01)` and
//! `B = (ch-fy)(X10 - X00) + fy (X11 - X01)`. So each line of a cell costs
//! one `A`, `B` pair and every pixel after it one addition; the rounding
//! offset of step 3 is folded into `A`. The crop-scaled vertices are computed
//! once per job. Rows are split into bands run on scoped threads.
//!
//! Each destination line is done in two passes: the source positions of all
//! its samples (32-bit AVX2 lanes when the stepping provably fits them, else
//! 64-bit scalar steps), then the sampling, eight positions at a time with
//! AVX2 gathers when all their neighbours lie inside the source (one gather
//! pair serves both U and V of an NV source), per sample otherwise. A luma
//! line written one byte per pixel is done in one pass instead: the 32-bit
//! positions of a cell line go to the sampler in registers, and a cell's
//! two groups of eight are packed to bytes together. Packed sources and
//! machines without AVX2 take the scalar path. Every path sums the same
//! products and rounds once, as the reference does.

use std::num::NonZeroUsize;

use super::format::ComponentLayout;
use super::reference::{FRACTION_BITS, VERTEX_FRACTION_BITS};
use super::{
    check_job, DestImage, DewarpEngine, DewarpError, ImageGeometry, RemapParams, SourceImage,
    BOUNDARY_CHROMA, BOUNDARY_LUMA, CELL_SIZE,
};

/// Fixed-point remap with per-cell stepping, on a configurable number of
/// threads.
#[derive(Clone, Copy, Debug)]
pub struct FastEngine {
    threads: NonZeroUsize,
}

impl Default for FastEngine {
    fn default() -> Self {
        Self::new(1)
    }
}

impl FastEngine {
    /// An engine splitting each job over `threads` threads; 0 means one per
    /// available CPU.
    pub fn new(threads: usize) -> Self {
        let threads = NonZeroUsize::new(threads)
            .or_else(|| std::thread::available_parallelism().ok())
            .unwrap_or(NonZeroUsize::MIN);
        FastEngine { threads }
    }

    pub fn threads(&self) -> usize {
        self.threads.get()
    }
}

/// A source component, read with bounds known from `check_job`.
#[derive(Clone, Copy)]
pub(super) struct SourcePlane<'a> {
    data: &'a [u8],
    stride: usize,
    offset: usize,
    step: usize,
    width: u32,
    height: u32,
    boundary: u8,
}

impl SourcePlane<'_> {
    fn new<'a>(
        data: &'a [u8],
        stride: usize,
        layout: ComponentLayout,
        width: u32,
        height: u32,
        boundary: u8,
    ) -> SourcePlane<'a> {
        SourcePlane {
            data,
            stride,
            offset: layout.offset,
            step: layout.step,
            width,
            height,
            boundary,
        }
    }

    /// The sample `(i, j)` or the boundary value outside the grid.
    #[inline]
    fn get(&self, i: u32, j: u32) -> u32 {
        if i < self.width && j < self.height {
            let index = j as usize * self.stride + self.offset + i as usize * self.step;
            u32::from(self.data.get(index).copied().unwrap_or(self.boundary))
        } else {
            u32::from(self.boundary)
        }
    }

    /// Bilinear sample at `(px, py)` in 1/64 sample, as the reference's
    /// step 4 (the separable form sums the same products).
    #[inline]
    fn sample(&self, px: u32, py: u32) -> u8 {
        const ONE: u32 = 1 << FRACTION_BITS;
        let (i, j) = (px >> FRACTION_BITS, py >> FRACTION_BITS);
        let (fx, fy) = (px & (ONE - 1), py & (ONE - 1));
        let (p00, p10, p01, p11) = (
            self.get(i, j),
            self.get(i + 1, j),
            self.get(i, j + 1),
            self.get(i + 1, j + 1),
        );
        let top = p00 * (ONE - fx) + p10 * fx;
        let bottom = p01 * (ONE - fx) + p11 * fx;
        ((top * (ONE - fy) + bottom * fy + (1 << (2 * FRACTION_BITS - 1))) >> (2 * FRACTION_BITS))
            as u8
    }

    /// Whether [`simd::luma_line_avx2`] may sample this plane.
    fn fused_luma(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if (self.step == 1 || self.step == 2)
            && i32::try_from(self.data.len()).is_ok()
            && std::arch::is_x86_feature_detected!("avx2")
        {
            return true;
        }
        false
    }

    /// Samples the positions `xs`, `ys` (1/64 sample) into `out`.
    fn sample_line(&self, xs: &[u32], ys: &[u32], out: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if (self.step == 1 || self.step == 2)
            && i32::try_from(self.data.len()).is_ok()
            && std::arch::is_x86_feature_detected!("avx2")
        {
            // SAFETY: AVX2 is present; the plane's bounds hold (`check_job`).
            unsafe { simd::sample_line_avx2(self, xs, ys, out) };
            return;
        }
        for ((out, &x), &y) in out.iter_mut().zip(xs).zip(ys) {
            *out = self.sample(x, y);
        }
    }
}

/// Fills `out` with `(start + i * step) >> shift`: the numerator steps
/// along a cell line (`step` wraps as a two's complement difference; every
/// true numerator is non-negative and below 2^33).
#[inline(always)]
fn step_positions(out: &mut [u32], start: u64, step: u64, shift: u32) {
    let mut numerator = start;
    for position in out {
        // Below 2^22: the numerator is below 2^33 and `shift` at least 11.
        *position = (numerator >> shift) as u32;
        numerator = numerator.wrapping_add(step);
    }
}

/// Writes `values` to the samples of one component in a destination line.
fn scatter(line: &mut [u8], layout: ComponentLayout, values: &[u8]) {
    let Some(line) = line.get_mut(layout.offset..) else {
        return;
    };
    if layout.step == 1 {
        if let Some(line) = line.get_mut(..values.len()) {
            line.copy_from_slice(values);
        }
    } else {
        for (out, &value) in line.iter_mut().step_by(layout.step).zip(values) {
            *out = value;
        }
    }
}

/// How the position numerator of one axis steps along a cell line: sample
/// `i` lies at `(start + i * step) >> shift` (see [`step_positions`]).
#[derive(Clone, Copy)]
struct CellStep {
    start: u64,
    step: u64,
    shift: u32,
}

/// What every band of a job shares.
struct Plan<'a> {
    /// Crop-scaled vertices `[X, Y]` in 2^-11 pixel (reference step 1).
    vertices: Vec<[u32; 2]>,
    map_width: usize,
    dst: ImageGeometry,
    src_luma: SourcePlane<'a>,
    src_chroma: [SourcePlane<'a>; 2],
    src_hs: u32,
    src_vs: u32,
}

impl Plan<'_> {
    /// Fills `xs`, `ys` with the source positions (1/64 sample of a grid
    /// subsampled by `2^sub_x`, `2^sub_y`) of the destination samples of
    /// luma line `py` taken every `2^step_shift` pixels.
    fn line_positions(
        &self,
        py: u32,
        step_shift: u32,
        sub_x: u32,
        sub_y: u32,
        xs: &mut [u32],
        ys: &mut [u32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present.
            unsafe { simd::line_positions_avx2(self, py, step_shift, sub_x, sub_y, xs, ys) };
            return;
        }
        self.line_positions_with(py, step_shift, sub_x, sub_y, xs, ys, step_positions);
    }

    /// [`Self::line_positions`] with `fill` stepping each cell line.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn line_positions_with(
        &self,
        py: u32,
        step_shift: u32,
        sub_x: u32,
        sub_y: u32,
        xs: &mut [u32],
        ys: &mut [u32],
        fill: impl Fn(&mut [u32], u64, u64, u32),
    ) {
        self.for_each_cell_line(py, step_shift, sub_x, sub_y, |done, count, x, y| {
            let (Some(cell_xs), Some(cell_ys)) = (
                xs.get_mut(done..done + count),
                ys.get_mut(done..done + count),
            ) else {
                return false;
            };
            fill(cell_xs, x.start, x.step, x.shift);
            fill(cell_ys, y.start, y.step, y.shift);
            true
        });
    }

    /// Calls `visit(first, count, x, y)` for each cell of luma line `py`
    /// with the index of its first destination sample (taken every
    /// `2^step_shift` pixels), their count and the stepping of both axes,
    /// until `visit` returns false.
    #[inline(always)]
    fn for_each_cell_line(
        &self,
        py: u32,
        step_shift: u32,
        sub_x: u32,
        sub_y: u32,
        mut visit: impl FnMut(usize, usize, CellStep, CellStep) -> bool,
    ) {
        let row = (py / CELL_SIZE) as usize;
        let fy = u64::from(py % CELL_SIZE);
        let ch = u64::from(CELL_SIZE.min(self.dst.height - row as u32 * CELL_SIZE));
        let columns = self.dst.width.div_ceil(CELL_SIZE) as usize;
        let (Some(top), Some(bottom)) = (
            self.vertices
                .get(row * self.map_width..row * self.map_width + columns + 1),
            self.vertices
                .get((row + 1) * self.map_width..(row + 1) * self.map_width + columns + 1),
        ) else {
            return;
        };
        // The vertical blend of a vertex column, shared by the cells on
        // either side of it.
        let blend = |c: usize| {
            let (upper, lower) = (top[c], bottom[c]);
            [0, 1].map(|axis| (ch - fy) * u64::from(upper[axis]) + fy * u64::from(lower[axis]))
        };
        let mut done = 0;
        let mut left_edge = blend(0);
        for c in 0..columns {
            let cw = CELL_SIZE.min(self.dst.width - c as u32 * CELL_SIZE);
            let k = (u64::from(cw) * ch).trailing_zeros();
            let right_edge = blend(c + 1);
            let line = |axis: usize, sub: u32| {
                let shift = k + VERTEX_FRACTION_BITS - FRACTION_BITS + sub;
                let (left, right) = (left_edge[axis], right_edge[axis]);
                let start = u64::from(cw) * left + (1 << (shift - 1));
                CellStep {
                    start,
                    step: right.wrapping_sub(left) << step_shift,
                    shift,
                }
            };
            let count = (cw >> step_shift) as usize;
            if !visit(done, count, line(0, sub_x), line(1, sub_y)) {
                return;
            }
            done += count;
            left_edge = right_edge;
        }
    }

    fn run_band(&self, first_line: u32, end_line: u32, luma: &mut [u8], chroma: &mut [u8]) {
        let dst = self.dst;
        let luma_out = dst.format.luma_layout();
        let [u_out, v_out] = dst.format.chroma_layouts();
        let (dst_hs, dst_vs) = (
            dst.format.chroma_horizontal_shift(),
            dst.format.chroma_vertical_shift(),
        );
        let width = dst.width as usize;
        let chroma_width = width >> dst_hs;
        let line_bytes = width * dst.format.luma_bytes_per_pixel();
        let chroma_line_bytes = if dst.format.is_packed() {
            line_bytes
        } else {
            width
        };
        let (mut xs, mut ys) = (vec![0u32; width], vec![0u32; width]);
        let mut values = vec![0u8; 2 * width];
        let first_chroma_line = first_line >> dst_vs;
        // Chroma pairs go straight into a semi-planar destination line.
        let direct_pairs = !dst.format.is_packed();
        let v_first = v_out.offset < u_out.offset;
        for py in first_line..end_line {
            let start = (py - first_line) as usize * dst.luma_stride;
            let Some(line) = luma.get_mut(start..start + line_bytes) else {
                return;
            };
            if luma_out.step == 1 && self.src_luma.fused_luma() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX2 is present and the plane's bounds hold
                // (`fused_luma`, `check_job`).
                unsafe {
                    simd::luma_line_avx2(self, py, &mut line[luma_out.offset..]);
                }
            } else if luma_out.step == 1 {
                self.line_positions(py, 0, 0, 0, &mut xs, &mut ys);
                self.src_luma
                    .sample_line(&xs, &ys, &mut line[luma_out.offset..]);
            } else {
                self.line_positions(py, 0, 0, 0, &mut xs, &mut ys);
                self.src_luma.sample_line(&xs, &ys, &mut values[..width]);
                scatter(line, luma_out, &values[..width]);
            }
            if py % (1 << dst_vs) != 0 {
                continue;
            }
            let line = if dst.format.is_packed() {
                line
            } else {
                let start = ((py >> dst_vs) - first_chroma_line) as usize * dst.chroma_stride;
                let Some(line) = chroma.get_mut(start..start + chroma_line_bytes) else {
                    return;
                };
                line
            };
            let (xs, ys) = (&mut xs[..chroma_width], &mut ys[..chroma_width]);
            if direct_pairs && self.fused_pairs() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX2 is present and the plane's layout and bounds
                // hold (`fused_pairs`, `check_job`).
                unsafe {
                    simd::chroma_pairs_line_avx2(self, py, dst_hs, v_first, line);
                }
            } else if direct_pairs {
                self.line_positions(py, dst_hs, self.src_hs, self.src_vs, xs, ys);
                self.sample_chroma_pairs(xs, ys, v_first, line);
            } else {
                self.line_positions(py, dst_hs, self.src_hs, self.src_vs, xs, ys);
                let pairs = &mut values[..2 * chroma_width];
                self.sample_chroma_pairs(xs, ys, false, pairs);
                for (layout, first) in [(u_out, 0), (v_out, 1)] {
                    let Some(line) = line.get_mut(layout.offset..) else {
                        return;
                    };
                    for (out, pair) in line
                        .iter_mut()
                        .step_by(layout.step)
                        .zip(pairs.chunks_exact(2))
                    {
                        *out = pair[first];
                    }
                }
            }
        }
    }

    /// Whether [`simd::chroma_pairs_line_avx2`] may sample the source
    /// chroma.
    fn fused_pairs(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let [u, v] = &self.src_chroma;
            if u.step == 2
                && v.offset == u.offset + 1
                && i32::try_from(u.data.len()).is_ok()
                && std::arch::is_x86_feature_detected!("avx2")
            {
                return true;
            }
        }
        false
    }

    /// Samples U and V at the positions `xs`, `ys` into `out` as interleaved
    /// pairs, U first (V first with `v_first`).
    fn sample_chroma_pairs(&self, xs: &[u32], ys: &[u32], v_first: bool, out: &mut [u8]) {
        let [u, v] = &self.src_chroma;
        #[cfg(target_arch = "x86_64")]
        if u.step == 2
            && v.offset == u.offset + 1
            && i32::try_from(u.data.len()).is_ok()
            && std::arch::is_x86_feature_detected!("avx2")
        {
            // SAFETY: AVX2 is present; the plane's bounds hold (`check_job`).
            unsafe { simd::sample_pairs_avx2(u, xs, ys, v_first, out) };
            return;
        }
        let (first, second) = if v_first { (v, u) } else { (u, v) };
        for ((pair, &x), &y) in out.chunks_exact_mut(2).zip(xs).zip(ys) {
            pair[0] = first.sample(x, y);
            pair[1] = second.sample(x, y);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    //! AVX2 bilinear sampling of 8 positions at a time: two 32-bit gathers
    //! fetch both neighbour pairs, `vpmaddubsw` weighs them horizontally and
    //! `vpmaddwd` vertically. Sums and rounding are the reference's.

    use std::arch::x86_64::*;

    use super::{step_positions, CellStep, Plan, SourcePlane, CELL_SIZE};
    use crate::engine::dewarp::reference::FRACTION_BITS;

    /// The constants of 8-position bilinear sampling of interleaved chroma
    /// (`plane` is U with step 2, V the next byte): one gather pair serves
    /// both components.
    struct PairKernel<'a> {
        first: SourcePlane<'a>,
        second: SourcePlane<'a>,
        last_x: __m256i,
        last_y: __m256i,
        read_limit: __m256i,
        stride: __m256i,
        offset: __m256i,
        fraction_mask: __m256i,
        order: __m256i,
        base: *const i32,
    }

    impl<'a> PairKernel<'a> {
        /// A kernel writing V first with `v_first`.
        ///
        /// # Safety
        /// As for [`sample_line_avx2`], with `plane.step` 2 and V at
        /// `plane.offset + 1`.
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn new(plane: &SourcePlane<'a>, v_first: bool) -> Self {
            let u = *plane;
            let v = SourcePlane {
                offset: plane.offset + 1,
                ..*plane
            };
            let (first, second) = if v_first { (v, u) } else { (u, v) };
            // Gathered U0 V0 U1 V1 becomes (first, its neighbour, second, its neighbour).
            let order = if v_first {
                _mm256_setr_epi8(
                    1, 3, 0, 2, 5, 7, 4, 6, 9, 11, 8, 10, 13, 15, 12, 14, 1, 3, 0, 2, 5, 7, 4, 6,
                    9, 11, 8, 10, 13, 15, 12, 14,
                )
            } else {
                _mm256_setr_epi8(
                    0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15, 0, 2, 1, 3, 4, 6, 5, 7,
                    8, 10, 9, 11, 12, 14, 13, 15,
                )
            };
            PairKernel {
                first,
                second,
                last_x: _mm256_set1_epi32(plane.width as i32 - 1),
                last_y: _mm256_set1_epi32(plane.height as i32 - 1),
                read_limit: _mm256_set1_epi32(plane.data.len() as i32 - 3),
                stride: _mm256_set1_epi32(plane.stride as i32),
                offset: _mm256_set1_epi32(plane.offset as i32),
                fraction_mask: _mm256_set1_epi32((1 << FRACTION_BITS) - 1),
                order,
                base: plane.data.as_ptr() as *const i32,
            }
        }

        /// Samples both components at the 8 positions `vx`, `vy` (1/64
        /// sample) into `out[..16]` as interleaved pairs.
        ///
        /// # Safety
        /// AVX2 must be present and `out` valid for 16 bytes of writes.
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn pairs8(&self, vx: __m256i, vy: __m256i, out: *mut u8) {
            // SAFETY: the caller upholds the contract in `# Safety` above;
            // each operation below relies on it and on the enabled target features.
            unsafe {
                let one = 1 << FRACTION_BITS;
                let ix = _mm256_srli_epi32(vx, FRACTION_BITS as i32);
                let iy = _mm256_srli_epi32(vy, FRACTION_BITS as i32);
                let upper = _mm256_add_epi32(
                    _mm256_add_epi32(_mm256_mullo_epi32(iy, self.stride), self.offset),
                    _mm256_slli_epi32(ix, 1),
                );
                let lower = _mm256_add_epi32(upper, self.stride);
                let inside = _mm256_and_si256(
                    _mm256_and_si256(
                        _mm256_cmpgt_epi32(self.last_x, ix),
                        _mm256_cmpgt_epi32(self.last_y, iy),
                    ),
                    _mm256_cmpgt_epi32(self.read_limit, lower),
                );
                if _mm256_movemask_epi8(inside) != -1 {
                    self.pairs8_each(vx, vy, out);
                    return;
                }
                let top =
                    _mm256_shuffle_epi8(_mm256_i32gather_epi32::<1>(self.base, upper), self.order);
                let bottom =
                    _mm256_shuffle_epi8(_mm256_i32gather_epi32::<1>(self.base, lower), self.order);
                let fx = _mm256_and_si256(vx, self.fraction_mask);
                let fy = _mm256_and_si256(vy, self.fraction_mask);
                // Bytes (64 - fx, fx, 64 - fx, fx) per lane.
                let wx = _mm256_add_epi32(
                    _mm256_sub_epi32(_mm256_slli_epi32(fx, 8), fx),
                    _mm256_set1_epi32(one),
                );
                let wx = _mm256_or_si256(wx, _mm256_slli_epi32(wx, 16));
                let top = _mm256_maddubs_epi16(top, wx);
                let bottom = _mm256_maddubs_epi16(bottom, wx);
                let wy = _mm256_or_si256(
                    _mm256_sub_epi32(_mm256_set1_epi32(one), fy),
                    _mm256_slli_epi32(fy, 16),
                );
                let low = _mm256_madd_epi16(
                    _mm256_unpacklo_epi16(top, bottom),
                    _mm256_unpacklo_epi32(wy, wy),
                );
                let high = _mm256_madd_epi16(
                    _mm256_unpackhi_epi16(top, bottom),
                    _mm256_unpackhi_epi32(wy, wy),
                );
                const SHIFT: i32 = 2 * FRACTION_BITS as i32;
                let rounding = _mm256_set1_epi32(1 << (2 * FRACTION_BITS - 1));
                let low = _mm256_srli_epi32(_mm256_add_epi32(low, rounding), SHIFT);
                let high = _mm256_srli_epi32(_mm256_add_epi32(high, rounding), SHIFT);
                let words = _mm256_packus_epi32(low, high);
                let bytes = _mm256_packus_epi16(words, words);
                let sixteen = _mm_unpacklo_epi64(
                    _mm256_castsi256_si128(bytes),
                    _mm256_extracti128_si256::<1>(bytes),
                );
                _mm_storeu_si128(out as *mut __m128i, sixteen);
            }
        }

        /// [`Self::pairs8`] one position at a time, with the border
        /// handling of [`SourcePlane::sample`].
        ///
        /// # Safety
        /// `out` must be valid for 16 bytes of writes.
        #[inline(never)]
        #[target_feature(enable = "avx2")]
        unsafe fn pairs8_each(&self, vx: __m256i, vy: __m256i, out: *mut u8) {
            // SAFETY: the caller upholds the contract in `# Safety` above;
            // each operation below relies on it and on the enabled target features.
            unsafe {
                let (mut xs, mut ys) = ([0u32; 8], [0u32; 8]);
                _mm256_storeu_si256(xs.as_mut_ptr() as *mut __m256i, vx);
                _mm256_storeu_si256(ys.as_mut_ptr() as *mut __m256i, vy);
                for (i, (&x, &y)) in xs.iter().zip(&ys).enumerate() {
                    self.pair(x, y, out.add(2 * i));
                }
            }
        }

        /// Samples both components at `(x, y)` into `out[..2]`.
        ///
        /// # Safety
        /// `out` must be valid for 2 bytes of writes.
        #[inline]
        unsafe fn pair(&self, x: u32, y: u32, out: *mut u8) {
            // SAFETY: the caller upholds the contract in `# Safety` above;
            // each operation below relies on it and on the enabled target features.
            unsafe {
                *out = self.first.sample(x, y);
                *out.add(1) = self.second.sample(x, y);
            }
        }
    }

    /// Like [`sample_line_avx2`] for interleaved chroma: `out` receives
    /// interleaved pairs, V first with `v_first`.
    ///
    /// # Safety
    /// As for [`PairKernel::new`].
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn sample_pairs_avx2(
        plane: &SourcePlane<'_>,
        xs: &[u32],
        ys: &[u32],
        v_first: bool,
        out: &mut [u8],
    ) {
        // SAFETY: the caller upholds the contract in `# Safety` above;
        // each operation below relies on it and on the enabled target features.
        unsafe {
            let n = xs.len().min(ys.len()).min(out.len() / 2);
            let kernel = PairKernel::new(plane, v_first);
            let mut done = 0;
            while done + 8 <= n {
                let vx = _mm256_loadu_si256(xs.as_ptr().add(done) as *const __m256i);
                let vy = _mm256_loadu_si256(ys.as_ptr().add(done) as *const __m256i);
                kernel.pairs8(vx, vy, out.as_mut_ptr().add(2 * done));
                done += 8;
            }
            for i in done..n {
                kernel.pair(
                    *xs.get_unchecked(i),
                    *ys.get_unchecked(i),
                    out.as_mut_ptr().add(2 * i),
                );
            }
        }
    }

    /// Positions and samples the chroma of luma line `py` of `plan` into
    /// `out` as interleaved pairs (V first with `v_first`) in one pass, as
    /// [`luma_line_avx2`] does for luma. Chroma samples are taken every
    /// `2^step_shift` pixels.
    ///
    /// # Safety
    /// As for [`PairKernel::new`] with `plan.src_chroma[0]`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn chroma_pairs_line_avx2(
        plan: &Plan<'_>,
        py: u32,
        step_shift: u32,
        v_first: bool,
        out: &mut [u8],
    ) {
        let plane = &plan.src_chroma[0];
        // SAFETY: as this function's contract.
        let kernel = unsafe { PairKernel::new(plane, v_first) };
        let (mut xs, mut ys) = ([0u32; CELL_SIZE as usize], [0u32; CELL_SIZE as usize]);
        plan.for_each_cell_line(
            py,
            step_shift,
            plan.src_hs,
            plan.src_vs,
            |done, count, x, y| {
                let Some(out) = out.get_mut(2 * done..2 * (done + count)) else {
                    return false;
                };
                if count == 8 {
                    if let (Some(x), Some(y)) = (Lanes::new(x, count), Lanes::new(y, count)) {
                        let (vx, vy) = (x.positions(), y.positions());
                        // SAFETY: AVX2 is present; `out` holds 16 bytes.
                        unsafe { kernel.pairs8(vx[0], vy[0], out.as_mut_ptr()) };
                        return true;
                    }
                }
                let (Some(xs), Some(ys)) = (xs.get_mut(..count), ys.get_mut(..count)) else {
                    return false;
                };
                step_positions(xs, x.start, x.step, x.shift);
                step_positions(ys, y.start, y.step, y.shift);
                // SAFETY: as this function's contract.
                unsafe { sample_pairs_avx2(plane, xs, ys, v_first, out) };
                true
            },
        );
    }

    /// [`Plan::line_positions`] with AVX2 stepping inlined.
    ///
    /// # Safety
    /// AVX2 must be present.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn line_positions_avx2(
        plan: &Plan<'_>,
        py: u32,
        step_shift: u32,
        sub_x: u32,
        sub_y: u32,
        xs: &mut [u32],
        ys: &mut [u32],
    ) {
        plan.line_positions_with(
            py,
            step_shift,
            sub_x,
            sub_y,
            xs,
            ys,
            |out, start, step, shift| {
                // SAFETY: AVX2 is present (this function's contract).
                unsafe { cell_positions(out, start, step, shift) }
            },
        );
    }

    /// Fills one cell line like [`step_positions`], in 32-bit lanes when
    /// that is exact: with `start = high << shift | low` and every
    /// `low + i * step` inside i32, `high + ((low + i * step) >> shift)` is
    /// the same floor division.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn cell_positions(out: &mut [u32], start: u64, step: u64, shift: u32) {
        // SAFETY: the caller upholds the contract in `# Safety` above;
        // each operation below relies on it and on the enabled target features.
        unsafe {
            let high = start >> shift;
            let low = start & ((1 << shift) - 1);
            let step_signed = step as i64;
            let reach = step_signed
                .unsigned_abs()
                .saturating_mul(out.len().saturating_sub(1) as u64)
                .saturating_add(low);
            if reach < 1 << 31 && high < 1 << 31 {
                step_positions_avx2(out, high as i32, low as i32, step_signed as i32, shift);
            } else {
                step_positions(out, start, step, shift);
            }
        }
    }

    /// Fills `out` with `high + ((low + i * step) >> shift)` (arithmetic
    /// shift).
    ///
    /// # Safety
    /// AVX2 must be present and every `low + i * step` must fit in i32.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn step_positions_avx2(out: &mut [u32], high: i32, low: i32, step: i32, shift: u32) {
        // SAFETY: the caller upholds the contract in `# Safety` above;
        // each operation below relies on it and on the enabled target features.
        unsafe {
            let count = out.len();
            let shift_count = _mm_cvtsi32_si128(shift as i32);
            let mut i = 0;
            while i + 8 <= count {
                let lanes = _mm256_add_epi32(
                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                    _mm256_set1_epi32(i as i32),
                );
                let numerator = _mm256_add_epi32(
                    _mm256_set1_epi32(low),
                    _mm256_mullo_epi32(lanes, _mm256_set1_epi32(step)),
                );
                let position = _mm256_add_epi32(
                    _mm256_set1_epi32(high),
                    _mm256_sra_epi32(numerator, shift_count),
                );
                _mm256_storeu_si256(out.as_mut_ptr().add(i) as *mut __m256i, position);
                i += 8;
            }
            while i + 4 <= count {
                let lanes = _mm_add_epi32(_mm_setr_epi32(0, 1, 2, 3), _mm_set1_epi32(i as i32));
                let numerator = _mm_add_epi32(
                    _mm_set1_epi32(low),
                    _mm_mullo_epi32(lanes, _mm_set1_epi32(step)),
                );
                let position =
                    _mm_add_epi32(_mm_set1_epi32(high), _mm_sra_epi32(numerator, shift_count));
                _mm_storeu_si128(out.as_mut_ptr().add(i) as *mut __m128i, position);
                i += 4;
            }
            for (j, position) in out.iter_mut().enumerate().skip(i) {
                *position = (high + ((low + j as i32 * step) >> shift)) as u32;
            }
        }
    }

    /// The constants of 8-position bilinear sampling of one plane.
    pub(super) struct LineKernel<'p, 'a> {
        plane: &'p SourcePlane<'a>,
        last_x: __m256i,
        last_y: __m256i,
        read_limit: __m256i,
        stride: __m256i,
        offset: __m256i,
        fraction_mask: __m256i,
        step_shift: __m128i,
        pair_bytes: __m256i,
        base: *const i32,
    }

    impl<'p, 'a> LineKernel<'p, 'a> {
        /// # Safety
        /// AVX2 must be present, `plane.step` 1 or 2, `plane.data.len()`
        /// below `i32::MAX`, and the plane's bounds as `check_job` verifies
        /// them.
        #[inline]
        #[target_feature(enable = "avx2")]
        pub(super) unsafe fn new(plane: &'p SourcePlane<'a>) -> Self {
            LineKernel {
                plane,
                last_x: _mm256_set1_epi32(plane.width as i32 - 1),
                last_y: _mm256_set1_epi32(plane.height as i32 - 1),
                // A gather reads 4 bytes: the lower line's read must end in the buffer.
                read_limit: _mm256_set1_epi32(plane.data.len() as i32 - 3),
                stride: _mm256_set1_epi32(plane.stride as i32),
                offset: _mm256_set1_epi32(plane.offset as i32),
                fraction_mask: _mm256_set1_epi32((1 << FRACTION_BITS) - 1),
                step_shift: _mm_cvtsi32_si128(if plane.step == 2 { 1 } else { 0 }),
                // Brings the two neighbours of a 2-byte-step component side by side.
                pair_bytes: _mm256_setr_epi8(
                    0, 2, -1, -1, 4, 6, -1, -1, 8, 10, -1, -1, 12, 14, -1, -1, 0, 2, -1, -1, 4, 6,
                    -1, -1, 8, 10, -1, -1, 12, 14, -1, -1,
                ),
                base: plane.data.as_ptr() as *const i32,
            }
        }

        /// Samples the 16 positions `vx`, `vy` (two groups of 8) into
        /// `out[..16]`, packing both groups' results together.
        ///
        /// # Safety
        /// AVX2 must be present and `out` valid for 16 bytes of writes.
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn sample16(&self, vx: [__m256i; 2], vy: [__m256i; 2], out: *mut u8) {
            // SAFETY: the caller upholds the contract in `# Safety` above;
            // each operation below relies on it and on the enabled target features.
            unsafe {
                match (self.values8(vx[0], vy[0]), self.values8(vx[1], vy[1])) {
                    (Some(first), Some(second)) => {
                        // Dwords: first 0-3, second 0-3, first 4-7, second 4-7.
                        let words = _mm256_packus_epi32(first, second);
                        let bytes = _mm256_packus_epi16(words, words);
                        let ordered = _mm256_permutevar8x32_epi32(
                            bytes,
                            _mm256_setr_epi32(0, 4, 1, 5, 0, 4, 1, 5),
                        );
                        _mm_storeu_si128(out as *mut __m128i, _mm256_castsi256_si128(ordered));
                    }
                    _ => {
                        self.sample8(vx[0], vy[0], out);
                        self.sample8(vx[1], vy[1], out.add(8));
                    }
                }
            }
        }

        /// Samples the 8 positions `vx`, `vy` one at a time, with the
        /// border handling of [`SourcePlane::sample`].
        ///
        /// # Safety
        /// `out` must be valid for 8 bytes of writes.
        #[inline(never)]
        #[target_feature(enable = "avx2")]
        unsafe fn sample8_each(&self, vx: __m256i, vy: __m256i, out: *mut u8) {
            // SAFETY: the caller upholds the contract in `# Safety` above;
            // each operation below relies on it and on the enabled target features.
            unsafe {
                let (mut xs, mut ys) = ([0u32; 8], [0u32; 8]);
                _mm256_storeu_si256(xs.as_mut_ptr() as *mut __m256i, vx);
                _mm256_storeu_si256(ys.as_mut_ptr() as *mut __m256i, vy);
                for (i, (&x, &y)) in xs.iter().zip(&ys).enumerate() {
                    *out.add(i) = self.plane.sample(x, y);
                }
            }
        }

        /// The bilinear values of the 8 positions `vx`, `vy` (1/64 sample)
        /// in 32-bit lanes, or `None` when a neighbour of one lies outside
        /// the plane.
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn values8(&self, vx: __m256i, vy: __m256i) -> Option<__m256i> {
            // SAFETY: the caller upholds the contract in `# Safety` above;
            // each operation below relies on it and on the enabled target features.
            unsafe {
                let one = 1 << FRACTION_BITS;
                let ix = _mm256_srli_epi32(vx, FRACTION_BITS as i32);
                let iy = _mm256_srli_epi32(vy, FRACTION_BITS as i32);
                let upper = _mm256_add_epi32(
                    _mm256_add_epi32(_mm256_mullo_epi32(iy, self.stride), self.offset),
                    _mm256_sll_epi32(ix, self.step_shift),
                );
                let lower = _mm256_add_epi32(upper, self.stride);
                let inside = _mm256_and_si256(
                    _mm256_and_si256(
                        _mm256_cmpgt_epi32(self.last_x, ix),
                        _mm256_cmpgt_epi32(self.last_y, iy),
                    ),
                    _mm256_cmpgt_epi32(self.read_limit, lower),
                );
                if _mm256_movemask_epi8(inside) != -1 {
                    return None;
                }
                let mut top = _mm256_i32gather_epi32::<1>(self.base, upper);
                let mut bottom = _mm256_i32gather_epi32::<1>(self.base, lower);
                if self.plane.step == 2 {
                    top = _mm256_shuffle_epi8(top, self.pair_bytes);
                    bottom = _mm256_shuffle_epi8(bottom, self.pair_bytes);
                }
                let fx = _mm256_and_si256(vx, self.fraction_mask);
                let fy = _mm256_and_si256(vy, self.fraction_mask);
                // Bytes (64 - fx, fx, 0, 0) per lane.
                let wx = _mm256_add_epi32(
                    _mm256_sub_epi32(_mm256_slli_epi32(fx, 8), fx),
                    _mm256_set1_epi32(one),
                );
                let top = _mm256_maddubs_epi16(top, wx);
                let bottom = _mm256_maddubs_epi16(bottom, wx);
                let both = _mm256_or_si256(top, _mm256_slli_epi32(bottom, 16));
                let wy = _mm256_or_si256(
                    _mm256_sub_epi32(_mm256_set1_epi32(one), fy),
                    _mm256_slli_epi32(fy, 16),
                );
                let sum = _mm256_madd_epi16(both, wy);
                Some(_mm256_srli_epi32(
                    _mm256_add_epi32(sum, _mm256_set1_epi32(1 << (2 * FRACTION_BITS - 1))),
                    2 * FRACTION_BITS as i32,
                ))
            }
        }

        /// Samples the 8 positions `vx`, `vy` (1/64 sample) into
        /// `out[..8]`.
        ///
        /// # Safety
        /// AVX2 must be present and `out` valid for 8 bytes of writes.
        #[inline]
        #[target_feature(enable = "avx2")]
        pub(super) unsafe fn sample8(&self, vx: __m256i, vy: __m256i, out: *mut u8) {
            // SAFETY: the caller upholds the contract in `# Safety` above;
            // each operation below relies on it and on the enabled target features.
            unsafe {
                let Some(value) = self.values8(vx, vy) else {
                    self.sample8_each(vx, vy, out);
                    return;
                };
                let words = _mm256_packus_epi32(value, value);
                let bytes = _mm256_packus_epi16(words, words);
                let eight = _mm_unpacklo_epi32(
                    _mm256_castsi256_si128(bytes),
                    _mm256_extracti128_si256::<1>(bytes),
                );
                _mm_storel_epi64(out as *mut __m128i, eight);
            }
        }
    }

    /// # Safety
    /// As for [`LineKernel::new`].
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn sample_line_avx2(
        plane: &SourcePlane<'_>,
        xs: &[u32],
        ys: &[u32],
        out: &mut [u8],
    ) {
        // SAFETY: the caller upholds the contract in `# Safety` above;
        // each operation below relies on it and on the enabled target features.
        unsafe {
            let n = out.len().min(xs.len()).min(ys.len());
            let kernel = LineKernel::new(plane);
            let mut done = 0;
            while done + 8 <= n {
                let vx = _mm256_loadu_si256(xs.as_ptr().add(done) as *const __m256i);
                let vy = _mm256_loadu_si256(ys.as_ptr().add(done) as *const __m256i);
                kernel.sample8(vx, vy, out.as_mut_ptr().add(done));
                done += 8;
            }
            for i in done..n {
                *out.get_unchecked_mut(i) =
                    plane.sample(*xs.get_unchecked(i), *ys.get_unchecked(i));
            }
        }
    }

    /// Positions and samples luma line `py` of `plan` into `out` (one byte
    /// per pixel) in one pass: cells whose stepping fits 32-bit lanes feed
    /// their positions to the sampler in registers, the others go through
    /// [`step_positions`] and [`sample_line_avx2`].
    ///
    /// # Safety
    /// As for [`LineKernel::new`] with `plan.src_luma`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn luma_line_avx2(plan: &Plan<'_>, py: u32, out: &mut [u8]) {
        let plane = &plan.src_luma;
        // SAFETY: as this function's contract.
        let kernel = unsafe { LineKernel::new(plane) };
        let (mut xs, mut ys) = ([0u32; CELL_SIZE as usize], [0u32; CELL_SIZE as usize]);
        plan.for_each_cell_line(py, 0, 0, 0, |done, count, x, y| {
            let Some(out) = out.get_mut(done..done + count) else {
                return false;
            };
            if count == 8 || count == 16 {
                if let (Some(x), Some(y)) = (Lanes::new(x, count), Lanes::new(y, count)) {
                    let (vx, vy) = (x.positions(), y.positions());
                    // SAFETY: AVX2 is present; `out` holds `count` bytes, 8
                    // or 16.
                    unsafe {
                        if count == 16 {
                            kernel.sample16(vx, vy, out.as_mut_ptr());
                        } else {
                            kernel.sample8(vx[0], vy[0], out.as_mut_ptr());
                        }
                    }
                    return true;
                }
            }
            let (Some(xs), Some(ys)) = (xs.get_mut(..count), ys.get_mut(..count)) else {
                return false;
            };
            step_positions(xs, x.start, x.step, x.shift);
            step_positions(ys, y.start, y.step, y.shift);
            // SAFETY: as this function's contract.
            unsafe { sample_line_avx2(plane, xs, ys, out) };
            true
        });
    }

    /// A cell line's stepping in 32-bit lanes, when that is exact: with
    /// `start = high << shift | low` and every `low + i * step` inside i32,
    /// `high + ((low + i * step) >> shift)` is the same floor division.
    #[derive(Clone, Copy)]
    struct Lanes {
        high: __m256i,
        first: __m256i,
        eight_steps: __m256i,
        shift: __m128i,
    }

    impl Lanes {
        #[inline]
        #[target_feature(enable = "avx2")]
        fn new(cell: CellStep, count: usize) -> Option<Lanes> {
            let high = cell.start >> cell.shift;
            let low = cell.start & ((1 << cell.shift) - 1);
            let step = cell.step as i64;
            let reach = step
                .unsigned_abs()
                .saturating_mul(count.saturating_sub(1) as u64)
                .saturating_add(low);
            (reach < 1 << 31 && high < 1 << 31).then(|| Lanes {
                high: _mm256_set1_epi32(high as i32),
                first: _mm256_add_epi32(
                    _mm256_set1_epi32(low as i32),
                    _mm256_mullo_epi32(
                        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                        _mm256_set1_epi32(step as i32),
                    ),
                ),
                eight_steps: _mm256_set1_epi32((step as i32).wrapping_mul(8)),
                shift: _mm_cvtsi32_si128(cell.shift as i32),
            })
        }

        /// The positions of samples 0-7 and 8-15 of the cell line.
        #[inline]
        #[target_feature(enable = "avx2")]
        fn positions(&self) -> [__m256i; 2] {
            let second = _mm256_add_epi32(self.first, self.eight_steps);
            [self.first, second].map(|numerator| {
                _mm256_add_epi32(self.high, _mm256_sra_epi32(numerator, self.shift))
            })
        }
    }
}

impl DewarpEngine for FastEngine {
    fn remap(
        &self,
        params: &RemapParams<'_>,
        src: &SourceImage<'_>,
        dst: &mut DestImage<'_>,
    ) -> Result<(), DewarpError> {
        check_job(params, src, dst)?;
        let (sg, dg) = (src.geometry, dst.geometry);
        let crop = params.crop;
        let scale = crop.scale_factor(sg.width);
        let vertices = params
            .map
            .entries()
            .iter()
            .map(|&e| {
                [
                    crop.left * 2048 + (e & 0xffff) * scale,
                    crop.top * 2048 + (e >> 16) * scale,
                ]
            })
            .collect();
        let (chroma_data, chroma_stride) = if sg.format.is_packed() {
            (src.luma, sg.luma_stride)
        } else {
            (src.chroma, sg.chroma_stride)
        };
        let (src_hs, src_vs) = (
            sg.format.chroma_horizontal_shift(),
            sg.format.chroma_vertical_shift(),
        );
        let plan = Plan {
            vertices,
            map_width: params.map.width() as usize,
            dst: dg,
            src_luma: SourcePlane::new(
                src.luma,
                sg.luma_stride,
                sg.format.luma_layout(),
                sg.width,
                sg.height,
                BOUNDARY_LUMA,
            ),
            src_chroma: sg.format.chroma_layouts().map(|layout| {
                SourcePlane::new(
                    chroma_data,
                    chroma_stride,
                    layout,
                    sg.width >> src_hs,
                    sg.height >> src_vs,
                    BOUNDARY_CHROMA,
                )
            }),
            src_hs,
            src_vs,
        };
        let run = |first: u32, end: u32, luma: &mut [u8], chroma: &mut [u8]| {
            plan.run_band(first, end, luma, chroma);
        };

        // Bands start on even lines so that 4:2:0 chroma lines split with them.
        let bands = self.threads.get().min(dg.height as usize / 2).max(1) as u32;
        let lines_per_band = (dg.height / 2).div_ceil(bands) * 2;
        if bands == 1 {
            run(0, dg.height, dst.luma, dst.chroma);
            return Ok(());
        }
        let dst_vs = dg.format.chroma_vertical_shift();
        let packed_dest = dg.format.is_packed();
        std::thread::scope(|scope| {
            let (mut luma, mut chroma) = (&mut *dst.luma, &mut *dst.chroma);
            let mut first = 0;
            while first < dg.height {
                let end = (first + lines_per_band).min(dg.height);
                let last = end == dg.height;
                let luma_len = if last {
                    luma.len()
                } else {
                    ((end - first) as usize * dg.luma_stride).min(luma.len())
                };
                let chroma_len = if packed_dest {
                    0
                } else if last {
                    chroma.len()
                } else {
                    (((end - first) >> dst_vs) as usize * dg.chroma_stride).min(chroma.len())
                };
                let (band_luma, rest) = std::mem::take(&mut luma).split_at_mut(luma_len);
                luma = rest;
                let (band_chroma, rest) = std::mem::take(&mut chroma).split_at_mut(chroma_len);
                chroma = rest;
                let run = &run;
                if last {
                    run(first, end, band_luma, band_chroma);
                } else {
                    scope.spawn(move || run(first, end, band_luma, band_chroma));
                }
                first = end;
            }
        });
        Ok(())
    }
}
