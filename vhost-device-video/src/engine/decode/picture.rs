//! Lays out a decoded picture as NV12 or YUV420 in a single buffer, at the
//! plane offsets and strides the device reported, converting between planar
//! and semi-planar chroma on the fly (no scaler involved).

use thiserror::Error as ThisError;

/// Output pixel formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// Y plane, then interleaved Cb/Cr.
    Nv12,
    /// Y, Cb and Cr planes.
    Yuv420,
}

impl PixelFormat {
    /// Every pixel format, in the order the device lists them.
    pub const ALL: [PixelFormat; 2] = [PixelFormat::Nv12, PixelFormat::Yuv420];
}

/// One component plane in the destination buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaneLayout {
    pub offset: u64,
    pub stride: u32,
    pub size: u32,
}

/// Where each component plane of a picture goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PictureLayout {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    pub planes: Vec<PlaneLayout>,
}

impl PictureLayout {
    /// The layout the device reports for `width`x`height`: planes laid one
    /// after another, luma stride rounded up to even so a chroma row (two
    /// bytes per chroma sample in NV12, or half the luma stride in YUV420)
    /// always fits.
    pub fn packed(format: PixelFormat, width: u32, height: u32) -> Self {
        let stride = width.saturating_add(width & 1);
        let chroma_rows = height.div_ceil(2);
        let luma = PlaneLayout {
            offset: 0,
            stride,
            size: stride.saturating_mul(height),
        };
        let mut planes = vec![luma];
        match format {
            PixelFormat::Nv12 => planes.push(PlaneLayout {
                offset: u64::from(luma.size),
                stride,
                size: stride.saturating_mul(chroma_rows),
            }),
            PixelFormat::Yuv420 => {
                let chroma_stride = stride / 2;
                let size = chroma_stride.saturating_mul(chroma_rows);
                planes.push(PlaneLayout {
                    offset: u64::from(luma.size),
                    stride: chroma_stride,
                    size,
                });
                planes.push(PlaneLayout {
                    offset: u64::from(luma.size) + u64::from(size),
                    stride: chroma_stride,
                    size,
                });
            }
        }
        Self {
            format,
            width,
            height,
            planes,
        }
    }

    /// Bytes from the buffer start to the end of the last plane.
    pub fn total_size(&self) -> u64 {
        self.planes
            .iter()
            .map(|p| p.offset + u64::from(p.size))
            .max()
            .unwrap_or(0)
    }
}

/// A decoded picture's planes: rows of `stride` bytes.
pub enum SourcePlanes<'a> {
    /// Separate Y, Cb and Cr planes, chroma subsampled 2x2.
    Planar {
        y: (&'a [u8], usize),
        u: (&'a [u8], usize),
        v: (&'a [u8], usize),
    },
    /// A Y plane and an interleaved CbCr plane.
    SemiPlanar {
        y: (&'a [u8], usize),
        uv: (&'a [u8], usize),
    },
}

/// Why a picture could not be written.
#[derive(Debug, PartialEq, Eq, ThisError)]
pub enum WriteError {
    /// The layout is smaller than the picture or its planes are too small.
    #[error("picture does not fit the layout")]
    LayoutTooSmall,
    /// The source picture is shorter than its declared size.
    #[error("picture data shorter than its size")]
    SourceTooShort,
    /// The sink refused a write.
    #[error("destination buffer refused a write")]
    Sink,
}

fn row(plane: (&[u8], usize), index: usize, len: usize) -> Result<&[u8], WriteError> {
    let start = index
        .checked_mul(plane.1)
        .ok_or(WriteError::SourceTooShort)?;
    plane
        .0
        .get(start..start + len)
        .ok_or(WriteError::SourceTooShort)
}

/// Writes a `width`x`height` picture into `layout`, calling `sink(offset,
/// bytes)` once per destination row. Odd sizes round chroma up.
pub fn write_picture(
    source: &SourcePlanes<'_>,
    width: u32,
    height: u32,
    layout: &PictureLayout,
    sink: &mut dyn FnMut(u64, &[u8]) -> bool,
) -> Result<(), WriteError> {
    let (w, h) = (width as usize, height as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    if width > layout.width || height > layout.height {
        return Err(WriteError::LayoutTooSmall);
    }
    let plane = |i: usize, row_len: usize, rows: usize| -> Result<PlaneLayout, WriteError> {
        let p = *layout.planes.get(i).ok_or(WriteError::LayoutTooSmall)?;
        let needed = (p.stride as usize).saturating_mul(rows.saturating_sub(1)) + row_len;
        if (p.stride as usize) < row_len || (p.size as usize) < needed {
            return Err(WriteError::LayoutTooSmall);
        }
        Ok(p)
    };
    let mut put = |p: PlaneLayout, r: usize, bytes: &[u8]| -> Result<(), WriteError> {
        let offset = p.offset + (p.stride as u64) * (r as u64);
        if sink(offset, bytes) {
            Ok(())
        } else {
            Err(WriteError::Sink)
        }
    };
    let y_src = match source {
        SourcePlanes::Planar { y, .. } | SourcePlanes::SemiPlanar { y, .. } => *y,
    };
    let y_dst = plane(0, w, h)?;
    for r in 0..h {
        put(y_dst, r, row(y_src, r, w)?)?;
    }
    match (layout.format, source) {
        (PixelFormat::Nv12, SourcePlanes::SemiPlanar { uv, .. }) => {
            let dst = plane(1, 2 * cw, ch)?;
            for r in 0..ch {
                put(dst, r, row(*uv, r, 2 * cw)?)?;
            }
        }
        (PixelFormat::Nv12, SourcePlanes::Planar { u, v, .. }) => {
            let dst = plane(1, 2 * cw, ch)?;
            let mut line = vec![0u8; 2 * cw];
            for r in 0..ch {
                let (us, vs) = (row(*u, r, cw)?, row(*v, r, cw)?);
                for ((pair, &cb), &cr) in line.chunks_exact_mut(2).zip(us).zip(vs) {
                    pair[0] = cb;
                    pair[1] = cr;
                }
                put(dst, r, &line)?;
            }
        }
        (PixelFormat::Yuv420, SourcePlanes::Planar { u, v, .. }) => {
            let (du, dv) = (plane(1, cw, ch)?, plane(2, cw, ch)?);
            for r in 0..ch {
                put(du, r, row(*u, r, cw)?)?;
                put(dv, r, row(*v, r, cw)?)?;
            }
        }
        (PixelFormat::Yuv420, SourcePlanes::SemiPlanar { uv, .. }) => {
            let (du, dv) = (plane(1, cw, ch)?, plane(2, cw, ch)?);
            let (mut lu, mut lv) = (vec![0u8; cw], vec![0u8; cw]);
            for r in 0..ch {
                let src = row(*uv, r, 2 * cw)?;
                for ((pair, cb), cr) in src.chunks_exact(2).zip(&mut lu).zip(&mut lv) {
                    *cb = pair[0];
                    *cr = pair[1];
                }
                put(du, r, &lu)?;
                put(dv, r, &lv)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(source: &SourcePlanes<'_>, w: u32, h: u32, format: PixelFormat) -> Vec<u8> {
        let layout = PictureLayout::packed(format, w, h);
        let mut out = vec![0xAAu8; layout.total_size() as usize];
        write_picture(source, w, h, &layout, &mut |off, bytes| {
            let off = off as usize;
            out[off..off + bytes.len()].copy_from_slice(bytes);
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn planar_and_semi_planar_sources_agree() {
        // 3x3: chroma is 2x2, luma stride rounds up to 4.
        let y: Vec<u8> = (0..9).collect();
        let u = [10u8, 11, 12, 13];
        let v = [20u8, 21, 22, 23];
        let uv = [10u8, 20, 11, 21, 12, 22, 13, 23];
        let planar = SourcePlanes::Planar {
            y: (&y, 3),
            u: (&u, 2),
            v: (&v, 2),
        };
        let semi = SourcePlanes::SemiPlanar {
            y: (&y, 3),
            uv: (&uv, 4),
        };
        for format in [PixelFormat::Nv12, PixelFormat::Yuv420] {
            assert_eq!(render(&planar, 3, 3, format), render(&semi, 3, 3, format));
        }
        let nv12 = render(&planar, 3, 3, PixelFormat::Nv12);
        assert_eq!(&nv12[..12], &[0, 1, 2, 0xAA, 3, 4, 5, 0xAA, 6, 7, 8, 0xAA]);
        assert_eq!(&nv12[12..], &[10, 20, 11, 21, 12, 22, 13, 23]);
    }

    #[test]
    fn short_source_and_small_layout_are_errors() {
        let y = [0u8; 8];
        let c = [0u8; 4];
        let src = SourcePlanes::Planar {
            y: (&y, 4),
            u: (&c, 2),
            v: (&c, 2),
        };
        let layout = PictureLayout::packed(PixelFormat::Nv12, 4, 4);
        let mut sink = |_: u64, _: &[u8]| true;
        assert_eq!(
            write_picture(&src, 4, 4, &layout, &mut sink),
            Err(WriteError::SourceTooShort)
        );
        let small = PictureLayout::packed(PixelFormat::Nv12, 2, 2);
        assert_eq!(
            write_picture(&src, 4, 2, &small, &mut sink),
            Err(WriteError::LayoutTooSmall)
        );
    }
}
