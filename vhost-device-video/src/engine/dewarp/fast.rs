//! The fast remap, bit-exact to [`super::ReferenceEngine`].
//!
//! Inside a cell the reference's position numerator is linear along a line:
//! `N(fx) = A + fx * B` with `A = cw ((ch-fy) X00 + fy X01)` and
//! `B = (ch-fy)(X10 - X00) + fy (X11 - X01)`. So each line of a cell costs
//! one `A`, `B` pair and every pixel after it one addition; the rounding
//! offset of step 3 is folded into `A`. The crop-scaled vertices are computed
//! once per job. Rows are split into bands run on scoped threads.

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
struct SourcePlane<'a> {
    data: &'a [u8],
    stride: usize,
    offset: usize,
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
            width,
            height,
            boundary,
        }
    }

    /// The sample `(i, j)` or the boundary value outside the grid.
    #[inline]
    fn get<const STEP: usize>(&self, i: u64, j: u64) -> u32 {
        if i < u64::from(self.width) && j < u64::from(self.height) {
            let index = j as usize * self.stride + self.offset + i as usize * STEP;
            u32::from(self.data.get(index).copied().unwrap_or(self.boundary))
        } else {
            u32::from(self.boundary)
        }
    }

    /// Bilinear sample at `(px, py)` in 1/64 sample, as the reference's
    /// step 4 (the separable form sums the same products).
    #[inline(always)]
    fn sample<const STEP: usize>(&self, px: u64, py: u64) -> u8 {
        const ONE: u32 = 1 << FRACTION_BITS;
        let (i, j) = (px >> FRACTION_BITS, py >> FRACTION_BITS);
        let fx = (px as u32) & (ONE - 1);
        let fy = (py as u32) & (ONE - 1);
        let (p00, p10, p01, p11);
        if i + 1 < u64::from(self.width) && j + 1 < u64::from(self.height) {
            let index = j as usize * self.stride + self.offset + i as usize * STEP;
            // SAFETY: `check_job` verified that the buffer spans
            // `stride * (height - 1)` plus a full line, and a line holds
            // `offset + (width - 1) * STEP + 1` bytes of this component;
            // `i + 1 < width` and `j + 1 < height` keep all four neighbours
            // inside.
            unsafe {
                p00 = u32::from(*self.data.get_unchecked(index));
                p10 = u32::from(*self.data.get_unchecked(index + STEP));
                p01 = u32::from(*self.data.get_unchecked(index + self.stride));
                p11 = u32::from(*self.data.get_unchecked(index + self.stride + STEP));
            }
        } else {
            p00 = self.get::<STEP>(i, j);
            p10 = self.get::<STEP>(i + 1, j);
            p01 = self.get::<STEP>(i, j + 1);
            p11 = self.get::<STEP>(i + 1, j + 1);
        }
        let top = p00 * (ONE - fx) + p10 * fx;
        let bottom = p01 * (ONE - fx) + p11 * fx;
        ((top * (ONE - fy) + bottom * fy + (1 << (2 * FRACTION_BITS - 1))) >> (2 * FRACTION_BITS))
            as u8
    }
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
    /// Calls `emit(n, px, py)` for the destination samples of line `py`
    /// (luma line coordinates) taken every `2^step_shift` pixels, with the
    /// position rounded for a source grid subsampled by `2^sub_x`, `2^sub_y`.
    #[inline(always)]
    fn for_each_position(
        &self,
        py: u32,
        step_shift: u32,
        sub_x: u32,
        sub_y: u32,
        mut emit: impl FnMut(usize, u64, u64),
    ) {
        let row = (py / CELL_SIZE) as usize;
        let fy = u64::from(py % CELL_SIZE);
        let ch = u64::from(CELL_SIZE.min(self.dst.height - row as u32 * CELL_SIZE));
        let columns = self.dst.width.div_ceil(CELL_SIZE) as usize;
        let top = &self.vertices[row * self.map_width..][..columns + 1];
        let bottom = &self.vertices[(row + 1) * self.map_width..][..columns + 1];
        let mut n = 0;
        for c in 0..columns {
            let cw = CELL_SIZE.min(self.dst.width - c as u32 * CELL_SIZE);
            let k = (cw as u64 * ch).trailing_zeros();
            let (v00, v10, v01, v11) = (top[c], top[c + 1], bottom[c], bottom[c + 1]);
            let shift_x = k + VERTEX_FRACTION_BITS - FRACTION_BITS + sub_x;
            let shift_y = k + VERTEX_FRACTION_BITS - FRACTION_BITS + sub_y;
            let line = |axis: usize, shift: u32| {
                let (a00, a10, a01, a11) = (
                    u64::from(v00[axis]),
                    u64::from(v10[axis]),
                    u64::from(v01[axis]),
                    u64::from(v11[axis]),
                );
                let start = u64::from(cw) * ((ch - fy) * a00 + fy * a01) + (1 << (shift - 1));
                let slope = ((ch - fy) * a10 + fy * a11).wrapping_sub((ch - fy) * a00 + fy * a01);
                (start, slope << step_shift)
            };
            let (mut nx, step_x) = line(0, shift_x);
            let (mut ny, step_y) = line(1, shift_y);
            for _ in 0..cw >> step_shift {
                emit(n, nx >> shift_x, ny >> shift_y);
                n += 1;
                nx = nx.wrapping_add(step_x);
                ny = ny.wrapping_add(step_y);
            }
        }
    }

    fn run_band<const LUMA_STEP: usize, const CHROMA_STEP: usize>(
        &self,
        first_line: u32,
        end_line: u32,
        luma: &mut [u8],
        chroma: &mut [u8],
    ) {
        let dst = self.dst;
        let luma_out = dst.format.luma_layout();
        let [u_out, v_out] = dst.format.chroma_layouts();
        let (dst_hs, dst_vs) = (
            dst.format.chroma_horizontal_shift(),
            dst.format.chroma_vertical_shift(),
        );
        let line_bytes = dst.width as usize * dst.format.luma_bytes_per_pixel();
        let chroma_line_bytes = if dst.format.is_packed() {
            line_bytes
        } else {
            dst.width as usize
        };
        let first_chroma_line = first_line >> dst_vs;
        for py in first_line..end_line {
            let start = (py - first_line) as usize * dst.luma_stride;
            let Some(line) = luma.get_mut(start..start + line_bytes) else {
                return;
            };
            self.for_each_position(py, 0, 0, 0, |n, px, sy| {
                if let Some(out) = line.get_mut(luma_out.offset + n * luma_out.step) {
                    *out = self.src_luma.sample::<LUMA_STEP>(px, sy);
                }
            });
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
            let [src_u, src_v] = &self.src_chroma;
            self.for_each_position(py, dst_hs, self.src_hs, self.src_vs, |n, px, sy| {
                if let Some(out) = line.get_mut(u_out.offset + n * u_out.step) {
                    *out = src_u.sample::<CHROMA_STEP>(px, sy);
                }
                if let Some(out) = line.get_mut(v_out.offset + n * v_out.step) {
                    *out = src_v.sample::<CHROMA_STEP>(px, sy);
                }
            });
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
        let packed_source = sg.format.is_packed();
        let run = |first: u32, end: u32, luma: &mut [u8], chroma: &mut [u8]| {
            if packed_source {
                plan.run_band::<2, 4>(first, end, luma, chroma);
            } else {
                plan.run_band::<1, 2>(first, end, luma, chroma);
            }
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
