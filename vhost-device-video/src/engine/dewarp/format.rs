//! The DW100 pixel formats and where each component sample sits in memory.

/// Component layout of a picture, named by its single-plane V4L2 format. The
/// two-plane `M` variants share the layout; only where the chroma component
/// lives differs, which [`super::SourceImage`] and [`super::DestImage`] carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// 4:2:0, luma plane then interleaved U/V.
    Nv12,
    /// 4:2:0, luma plane then interleaved V/U.
    Nv21,
    /// 4:2:2, luma plane then interleaved U/V.
    Nv16,
    /// 4:2:2, luma plane then interleaved V/U.
    Nv61,
    /// 4:2:2 packed Y0 U Y1 V.
    Yuyv,
    /// 4:2:2 packed U Y0 V Y1.
    Uyvy,
}

/// Where one component's samples sit: sample `i` of a line starts at
/// `offset + i * step` from the line start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ComponentLayout {
    pub offset: usize,
    pub step: usize,
}

const fn fourcc(code: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*code)
}

impl PixelFormat {
    pub const ALL: [PixelFormat; 6] = [
        PixelFormat::Nv12,
        PixelFormat::Nv21,
        PixelFormat::Nv16,
        PixelFormat::Nv61,
        PixelFormat::Yuyv,
        PixelFormat::Uyvy,
    ];

    /// The V4L2 fourcc of the single-plane format.
    pub const fn fourcc(self) -> u32 {
        match self {
            PixelFormat::Nv12 => fourcc(b"NV12"),
            PixelFormat::Nv21 => fourcc(b"NV21"),
            PixelFormat::Nv16 => fourcc(b"NV16"),
            PixelFormat::Nv61 => fourcc(b"NV61"),
            PixelFormat::Yuyv => fourcc(b"YUYV"),
            PixelFormat::Uyvy => fourcc(b"UYVY"),
        }
    }

    pub fn from_fourcc(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.fourcc() == code)
    }

    /// The DW100 reads these (OUTPUT queue); it writes all of them.
    pub const fn is_source_format(self) -> bool {
        !matches!(self, PixelFormat::Nv21 | PixelFormat::Nv61)
    }

    pub const fn is_packed(self) -> bool {
        matches!(self, PixelFormat::Yuyv | PixelFormat::Uyvy)
    }

    /// Bytes per pixel of the luma (or packed) component.
    pub const fn luma_bytes_per_pixel(self) -> usize {
        if self.is_packed() {
            2
        } else {
            1
        }
    }

    /// log2 of the horizontal chroma subsampling (every format is 2:1).
    pub const fn chroma_horizontal_shift(self) -> u32 {
        1
    }

    /// log2 of the vertical chroma subsampling.
    pub const fn chroma_vertical_shift(self) -> u32 {
        match self {
            PixelFormat::Nv12 | PixelFormat::Nv21 => 1,
            _ => 0,
        }
    }

    pub(crate) const fn luma_layout(self) -> ComponentLayout {
        match self {
            PixelFormat::Yuyv => ComponentLayout { offset: 0, step: 2 },
            PixelFormat::Uyvy => ComponentLayout { offset: 1, step: 2 },
            _ => ComponentLayout { offset: 0, step: 1 },
        }
    }

    /// Layouts of U and V inside a chroma line (the packed line for packed
    /// formats).
    pub(crate) const fn chroma_layouts(self) -> [ComponentLayout; 2] {
        let (u, v, step) = match self {
            PixelFormat::Nv12 | PixelFormat::Nv16 => (0, 1, 2),
            PixelFormat::Nv21 | PixelFormat::Nv61 => (1, 0, 2),
            PixelFormat::Yuyv => (1, 3, 4),
            PixelFormat::Uyvy => (0, 2, 4),
        };
        [
            ComponentLayout { offset: u, step },
            ComponentLayout { offset: v, step },
        ]
    }
}
