//! The reference remap: the definition of the device's output.
//!
//! Every output sample is computed on its own, in integers, by the steps
//! below. Nothing is precomputed or shared between samples; speed is not a
//! goal here (see [`super::FastEngine`]).
//!
//! 1. **Vertex to source position.** A map entry holds `x = entry & 0xffff`
//!    and `y = entry >> 16`, both UQ12.4. The crop scale factor is the DW100's
//!    UQ1.7 `s = (crop.width << 7) / src.width` (integer division). The vertex
//!    then sits at source position, in units of 2^-11 pixel,
//!    `X = crop.left * 2048 + x * s` and `Y = crop.top * 2048 + y * s`.
//!    Exact; a full-frame crop gives `s = 128`, `X = x * 128`.
//! 2. **Cell interpolation.** Destination luma pixel `(px, py)` lies in cell
//!    `(c, r) = (px / 16, py / 16)`, between vertices `(c, r)`, `(c+1, r)`,
//!    `(c, r+1)`, `(c+1, r+1)`. The cell spans `cw = min(16, dst.width - 16c)`
//!    by `ch = min(16, dst.height - 16r)` pixels (8 or 16, as sizes are
//!    multiples of 8): the last vertex row and column sit on the picture's
//!    edge. With `fx = px - 16c`, `fy = py - 16r`, the exact numerator is
//!    `N = (cw-fx)(ch-fy) X00 + fx(ch-fy) X10 + (cw-fx)fy X01 + fx fy X11`
//!    (likewise for Y); the position is `N / (cw ch)` in 2^-11 pixel. As
//!    `cw ch = 2^k`, the division is a shift. `N` is never negative.
//! 3. **Rounding to 1/64 pixel.** A sample of a component whose grid is
//!    subsampled by `2^sub` along an axis (`sub` = 0 for luma, 1 for
//!    subsampled chroma) takes `P = (N + 2^(t-1)) >> t` with
//!    `t = k + 11 - 6 + sub`: round half up to 1/64 of a sample of that
//!    component. The integer sample is `P >> 6`, the fraction `f = P & 63`.
//! 4. **Bilinear sampling.** With neighbours `p00 = s(i, j)`, `p10 = s(i+1, j)`,
//!    `p01 = s(i, j+1)`, `p11 = s(i+1, j+1)` the value is
//!    `(p00 (64-fx)(64-fy) + p10 fx (64-fy) + p01 (64-fx) fy + p11 fx fy + 2048) >> 12`:
//!    one rounding, half up. A neighbour outside the component's grid
//!    (`i >= width` or `j >= height` of that component) is the boundary
//!    value: 0 for luma, 128 for U and V.
//! 5. **Chroma.** Destination chroma sample `(cx, cy)` takes the numerator `N`
//!    of its co-sited destination luma pixel `(cx << hs, cy << vs)` (the
//!    destination's subsampling shifts) and rounds it with the *source's*
//!    subsampling shifts in step 3. U and V are sampled at the same position.
//! 6. **Layout.** Samples go to the destination's component positions (U/V
//!    order, packing); nothing else in the destination buffers is written.

use super::format::ComponentLayout;
use super::{
    check_job, Crop, DestImage, DewarpEngine, DewarpError, RemapParams, SourceImage, VertexMap,
    BOUNDARY_CHROMA, BOUNDARY_LUMA, CELL_SIZE,
};

/// Fraction bits of a sample position (1/64 sample).
pub(crate) const FRACTION_BITS: u32 = 6;
/// Fraction bits of a crop-scaled vertex position (UQ12.4 times UQ1.7).
pub(crate) const VERTEX_FRACTION_BITS: u32 = 11;

/// The plain per-pixel implementation; see the module documentation.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceEngine;

/// One component of a picture, read sample by sample.
struct ComponentReader<'a> {
    data: &'a [u8],
    stride: usize,
    layout: ComponentLayout,
    width: u32,
    height: u32,
    boundary: u8,
}

impl ComponentReader<'_> {
    /// Sample `(i, j)` of the component grid, or the boundary value outside.
    fn get(&self, i: u64, j: u64) -> u8 {
        if i >= u64::from(self.width) || j >= u64::from(self.height) {
            return self.boundary;
        }
        let index = j as usize * self.stride + self.layout.offset + i as usize * self.layout.step;
        // In range after `check_job`; the fallback only keeps this panic-free.
        self.data.get(index).copied().unwrap_or(self.boundary)
    }

    /// Step 4: bilinear sample at `(px, py)` in 1/64 sample.
    fn sample(&self, px: u64, py: u64) -> u8 {
        let one = 1u64 << FRACTION_BITS;
        let (i, fx) = (px >> FRACTION_BITS, px & (one - 1));
        let (j, fy) = (py >> FRACTION_BITS, py & (one - 1));
        let sum = u64::from(self.get(i, j)) * (one - fx) * (one - fy)
            + u64::from(self.get(i + 1, j)) * fx * (one - fy)
            + u64::from(self.get(i, j + 1)) * (one - fx) * fy
            + u64::from(self.get(i + 1, j + 1)) * fx * fy;
        let half = 1u64 << (2 * FRACTION_BITS - 1);
        ((sum + half) >> (2 * FRACTION_BITS)) as u8
    }
}

/// One component of a picture, written sample by sample.
struct ComponentWriter {
    stride: usize,
    layout: ComponentLayout,
}

impl ComponentWriter {
    fn put(&self, data: &mut [u8], i: u32, j: u32, value: u8) {
        let index = j as usize * self.stride + self.layout.offset + i as usize * self.layout.step;
        // In range after `check_job`.
        if let Some(byte) = data.get_mut(index) {
            *byte = value;
        }
    }
}

/// Steps 1 and 2: the exact position numerators of destination luma pixel
/// `(px, py)` and `k = log2(cw * ch)`.
fn position_numerator(
    map: &VertexMap,
    crop: &Crop,
    scale: u64,
    dst_width: u32,
    dst_height: u32,
    px: u32,
    py: u32,
) -> (u64, u64, u32) {
    let (c, r) = (px / CELL_SIZE, py / CELL_SIZE);
    let cw = CELL_SIZE.min(dst_width - c * CELL_SIZE);
    let ch = CELL_SIZE.min(dst_height - r * CELL_SIZE);
    let (fx, fy) = (px - c * CELL_SIZE, py - r * CELL_SIZE);
    let vertex = |col: u32, row: u32| -> (u64, u64) {
        let index = row as usize * map.width() as usize + col as usize;
        // In range after `check_job` (map dimensions match the destination).
        let entry = map.entries().get(index).copied().unwrap_or(0);
        let (x, y) = (u64::from(entry & 0xffff), u64::from(entry >> 16));
        (
            u64::from(crop.left) * 2048 + x * scale,
            u64::from(crop.top) * 2048 + y * scale,
        )
    };
    let weights = [
        (c, r, (cw - fx) * (ch - fy)),
        (c + 1, r, fx * (ch - fy)),
        (c, r + 1, (cw - fx) * fy),
        (c + 1, r + 1, fx * fy),
    ];
    let (mut nx, mut ny) = (0u64, 0u64);
    for (col, row, weight) in weights {
        let (x, y) = vertex(col, row);
        nx += u64::from(weight) * x;
        ny += u64::from(weight) * y;
    }
    (nx, ny, (cw * ch).trailing_zeros())
}

/// Step 3: round a numerator to 1/64 of a sample of a component subsampled
/// by `2^sub`.
fn round_position(numerator: u64, k: u32, sub: u32) -> u64 {
    let shift = k + VERTEX_FRACTION_BITS - FRACTION_BITS + sub;
    (numerator + (1u64 << (shift - 1))) >> shift
}

impl DewarpEngine for ReferenceEngine {
    fn remap(
        &self,
        params: &RemapParams<'_>,
        src: &SourceImage<'_>,
        dst: &mut DestImage<'_>,
    ) -> Result<(), DewarpError> {
        check_job(params, src, dst)?;
        let (sg, dg) = (src.geometry, dst.geometry);
        let scale = u64::from(params.crop.scale_factor(sg.width));
        let numerator = |px, py| {
            position_numerator(params.map, &params.crop, scale, dg.width, dg.height, px, py)
        };

        let src_chroma_data = if sg.format.is_packed() {
            src.luma
        } else {
            src.chroma
        };
        let src_chroma_stride = if sg.format.is_packed() {
            sg.luma_stride
        } else {
            sg.chroma_stride
        };
        let src_luma = ComponentReader {
            data: src.luma,
            stride: sg.luma_stride,
            layout: sg.format.luma_layout(),
            width: sg.width,
            height: sg.height,
            boundary: BOUNDARY_LUMA,
        };
        let [src_u, src_v] = sg.format.chroma_layouts().map(|layout| ComponentReader {
            data: src_chroma_data,
            stride: src_chroma_stride,
            layout,
            width: sg.width >> sg.format.chroma_horizontal_shift(),
            height: sg.height >> sg.format.chroma_vertical_shift(),
            boundary: BOUNDARY_CHROMA,
        });

        let dst_luma = ComponentWriter {
            stride: dg.luma_stride,
            layout: dg.format.luma_layout(),
        };
        for py in 0..dg.height {
            for px in 0..dg.width {
                let (nx, ny, k) = numerator(px, py);
                let value = src_luma.sample(round_position(nx, k, 0), round_position(ny, k, 0));
                dst_luma.put(dst.luma, px, py, value);
            }
        }

        let (dst_hs, dst_vs) = (
            dg.format.chroma_horizontal_shift(),
            dg.format.chroma_vertical_shift(),
        );
        let (src_hs, src_vs) = (
            sg.format.chroma_horizontal_shift(),
            sg.format.chroma_vertical_shift(),
        );
        let dst_chroma_stride = if dg.format.is_packed() {
            dg.luma_stride
        } else {
            dg.chroma_stride
        };
        let [dst_u, dst_v] = dg.format.chroma_layouts().map(|layout| ComponentWriter {
            stride: dst_chroma_stride,
            layout,
        });
        let dst_chroma: &mut [u8] = if dg.format.is_packed() {
            dst.luma
        } else {
            dst.chroma
        };
        for cy in 0..dg.height >> dst_vs {
            for cx in 0..dg.width >> dst_hs {
                let (nx, ny, k) = numerator(cx << dst_hs, cy << dst_vs);
                let (sx, sy) = (round_position(nx, k, src_hs), round_position(ny, k, src_vs));
                dst_u.put(dst_chroma, cx, cy, src_u.sample(sx, sy));
                dst_v.put(dst_chroma, cx, cy, src_v.sample(sx, sy));
            }
        }
        Ok(())
    }
}
