//! DW100-compatible remap engine.
//!
//! A job takes a source picture, a 16x16 vertex map laid over the destination
//! and a crop rectangle, and writes the destination picture. Two engines
//! implement [`DewarpEngine`]: [`ReferenceEngine`], plain per-pixel integer
//! code that *defines* the output (its module documentation states every
//! rounding step), and [`FastEngine`], held bit-exact to it by property tests.

mod fast;
mod format;
pub mod maps;
mod reference;
#[cfg(test)]
mod tests;

pub use fast::FastEngine;
pub use format::PixelFormat;
pub use reference::ReferenceEngine;

use thiserror::Error;

/// Smallest picture width the DW100 takes.
pub const MIN_WIDTH: u32 = 176;
/// Smallest picture height the DW100 takes.
pub const MIN_HEIGHT: u32 = 144;
/// Largest picture width the DW100 takes.
pub const MAX_WIDTH: u32 = 4096;
/// Largest picture height the DW100 takes.
pub const MAX_HEIGHT: u32 = 3072;
/// Widths and heights are multiples of this.
pub const SIZE_STEP: u32 = 8;
/// Side of a vertex map cell, in destination pixels.
pub const CELL_SIZE: u32 = 16;

/// Luma value of a sample outside the source (the DW100 boundary pixel).
pub const BOUNDARY_LUMA: u8 = 0;
/// Chroma value of a sample outside the source (the DW100 boundary pixel).
pub const BOUNDARY_CHROMA: u8 = 128;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DewarpError {
    #[error("{0:?} is not a DW100 source format")]
    NotASourceFormat(PixelFormat),
    #[error("picture size {width}x{height} outside 176x144..4096x3072 in steps of 8")]
    SizeOutOfRange { width: u32, height: u32 },
    #[error("stride {stride} below the {needed} bytes one line needs")]
    StrideTooSmall { stride: usize, needed: usize },
    #[error("buffer of {len} bytes below the {needed} bytes the picture needs")]
    BufferTooSmall { len: usize, needed: usize },
    #[error(
        "vertex map is {width}x{height}, the destination needs {expected_width}x{expected_height}"
    )]
    MapDimensions {
        width: u32,
        height: u32,
        expected_width: u32,
        expected_height: u32,
    },
    #[error("vertex map holds {len} entries, its dimensions say {expected}")]
    MapLength { len: usize, expected: usize },
    #[error("crop {0:?} is empty or not inside the source")]
    CropOutsideSource(Crop),
}

/// Vertices per row (or column) of the map for a destination of `length`
/// pixels: `DIV_ROUND_UP(length, 16) + 1`.
pub fn map_vertices(length: u32) -> u32 {
    length.div_ceil(CELL_SIZE) + 1
}

/// Source crop rectangle, in source pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crop {
    pub left: u32,
    pub top: u32,
    pub width: u32,
    pub height: u32,
}

impl Crop {
    /// The whole picture: no scaling.
    pub fn full(width: u32, height: u32) -> Self {
        Crop {
            left: 0,
            top: 0,
            width,
            height,
        }
    }

    /// The uniform scale factor in UQ1.7, as the DW100 `SCALE_FACTOR`
    /// register holds it: `(crop.width << 7) / src.width`.
    pub fn scale_factor(&self, src_width: u32) -> u32 {
        (self.width << 7) / src_width.max(1)
    }
}

/// A 16x16 vertex map: row-major entries `(y << 16) | x`, both UQ12.4.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VertexMap {
    width: u32,
    height: u32,
    entries: Vec<u32>,
}

impl VertexMap {
    pub fn new(width: u32, height: u32, entries: Vec<u32>) -> Result<Self, DewarpError> {
        let expected = width as usize * height as usize;
        if entries.len() != expected {
            return Err(DewarpError::MapLength {
                len: entries.len(),
                expected,
            });
        }
        Ok(VertexMap {
            width,
            height,
            entries,
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    pub fn entries(&self) -> &[u32] {
        &self.entries
    }

    /// The map as the little-endian bytes of the wire and of the V4L2 control.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        self.entries.iter().flat_map(|e| e.to_le_bytes()).collect()
    }

    /// A map from little-endian bytes.
    pub fn from_le_bytes(width: u32, height: u32, bytes: &[u8]) -> Result<Self, DewarpError> {
        let expected = width as usize * height as usize;
        if bytes.len() != expected * 4 {
            return Err(DewarpError::MapLength {
                len: bytes.len() / 4,
                expected,
            });
        }
        let entries = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Self::new(width, height, entries)
    }
}

/// Format, size and line strides of one picture.
///
/// `luma_stride` is the line pitch of the luma component (of the only
/// component for packed formats), `chroma_stride` that of the interleaved
/// chroma component of semi-planar formats (ignored for packed ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageGeometry {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    pub luma_stride: usize,
    pub chroma_stride: usize,
}

impl ImageGeometry {
    /// Tightly packed geometry (stride = line length).
    pub fn packed(format: PixelFormat, width: u32, height: u32) -> Self {
        ImageGeometry {
            format,
            width,
            height,
            luma_stride: width as usize * format.luma_bytes_per_pixel(),
            chroma_stride: width as usize,
        }
    }

    /// Lines of the chroma component.
    pub fn chroma_height(&self) -> u32 {
        self.height >> self.format.chroma_vertical_shift()
    }

    /// Bytes the luma (or packed) component spans: every line but the last
    /// is a full stride.
    pub fn luma_extent(&self) -> usize {
        span(
            self.luma_stride,
            self.height,
            self.width as usize * self.format.luma_bytes_per_pixel(),
        )
    }

    /// Bytes the chroma component of a semi-planar format spans; 0 for packed.
    pub fn chroma_extent(&self) -> usize {
        if self.format.is_packed() {
            0
        } else {
            span(
                self.chroma_stride,
                self.chroma_height(),
                self.width as usize,
            )
        }
    }

    fn check(&self) -> Result<(), DewarpError> {
        let (w, h) = (self.width, self.height);
        if !(MIN_WIDTH..=MAX_WIDTH).contains(&w)
            || !(MIN_HEIGHT..=MAX_HEIGHT).contains(&h)
            || !w.is_multiple_of(SIZE_STEP)
            || !h.is_multiple_of(SIZE_STEP)
        {
            return Err(DewarpError::SizeOutOfRange {
                width: w,
                height: h,
            });
        }
        let luma_line = w as usize * self.format.luma_bytes_per_pixel();
        if self.luma_stride < luma_line {
            return Err(DewarpError::StrideTooSmall {
                stride: self.luma_stride,
                needed: luma_line,
            });
        }
        if !self.format.is_packed() && self.chroma_stride < w as usize {
            return Err(DewarpError::StrideTooSmall {
                stride: self.chroma_stride,
                needed: w as usize,
            });
        }
        Ok(())
    }

    fn check_buffers(&self, luma_len: usize, chroma_len: usize) -> Result<(), DewarpError> {
        for (len, needed) in [
            (luma_len, self.luma_extent()),
            (chroma_len, self.chroma_extent()),
        ] {
            if len < needed {
                return Err(DewarpError::BufferTooSmall { len, needed });
            }
        }
        Ok(())
    }
}

fn span(stride: usize, lines: u32, line_bytes: usize) -> usize {
    stride * (lines as usize).saturating_sub(1) + line_bytes
}

/// A source picture: the luma (or packed) component and, for semi-planar
/// formats, the interleaved chroma component (empty for packed formats).
#[derive(Clone, Copy, Debug)]
pub struct SourceImage<'a> {
    pub geometry: ImageGeometry,
    pub luma: &'a [u8],
    pub chroma: &'a [u8],
}

/// A destination picture, laid out like [`SourceImage`].
#[derive(Debug)]
pub struct DestImage<'a> {
    pub geometry: ImageGeometry,
    pub luma: &'a mut [u8],
    pub chroma: &'a mut [u8],
}

/// What a job does besides its pictures: the vertex map and the source crop.
#[derive(Clone, Copy, Debug)]
pub struct RemapParams<'a> {
    pub map: &'a VertexMap,
    pub crop: Crop,
}

/// A remap implementation. Every implementation produces the output of
/// [`ReferenceEngine`], byte for byte; bytes of the destination buffers
/// outside the picture (stride padding, gaps) are left untouched.
pub trait DewarpEngine: Send + Sync {
    fn remap(
        &self,
        params: &RemapParams<'_>,
        src: &SourceImage<'_>,
        dst: &mut DestImage<'_>,
    ) -> Result<(), DewarpError>;
}

/// Checks everything an engine relies on, so that engines may index freely.
fn check_job(
    params: &RemapParams<'_>,
    src: &SourceImage<'_>,
    dst: &DestImage<'_>,
) -> Result<(), DewarpError> {
    if !src.geometry.format.is_source_format() {
        return Err(DewarpError::NotASourceFormat(src.geometry.format));
    }
    src.geometry.check()?;
    dst.geometry.check()?;
    src.geometry
        .check_buffers(src.luma.len(), src.chroma.len())?;
    dst.geometry
        .check_buffers(dst.luma.len(), dst.chroma.len())?;
    let map = params.map;
    let (expected_width, expected_height) = (
        map_vertices(dst.geometry.width),
        map_vertices(dst.geometry.height),
    );
    if map.width != expected_width || map.height != expected_height {
        return Err(DewarpError::MapDimensions {
            width: map.width,
            height: map.height,
            expected_width,
            expected_height,
        });
    }
    let crop = params.crop;
    let inside = |start: u32, len: u32, limit: u32| {
        len > 0 && start.checked_add(len).is_some_and(|end| end <= limit)
    };
    if !inside(crop.left, crop.width, src.geometry.width)
        || !inside(crop.top, crop.height, src.geometry.height)
    {
        return Err(DewarpError::CropOutsideSource(crop));
    }
    Ok(())
}
