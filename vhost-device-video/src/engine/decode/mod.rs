//! Video decoding behind a trait, and the writer that lays decoded pictures
//! out in guest buffers.

mod ffmpeg;
mod picture;

pub use self::ffmpeg::FfmpegDecoders;
pub use picture::{write_picture, PictureLayout, PixelFormat, PlaneLayout, SourcePlanes};

use thiserror::Error as ThisError;

/// Coded formats the device may offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodedFormat {
    H264,
    Hevc,
    Vp8,
    Vp9,
    Av1,
}

impl CodedFormat {
    /// Every coded format, in the order the device lists them.
    pub const ALL: [CodedFormat; 5] = [
        CodedFormat::H264,
        CodedFormat::Hevc,
        CodedFormat::Vp8,
        CodedFormat::Vp9,
        CodedFormat::Av1,
    ];
}

/// Errors of a decoding engine.
#[derive(Debug, ThisError)]
pub enum EngineError {
    /// No decoder for this format in the FFmpeg build.
    #[error("no decoder for {0:?}")]
    Unsupported(CodedFormat),
    /// FFmpeg failed in a way that ends the stream.
    #[error("{context}: {source}")]
    Ffmpeg {
        context: &'static str,
        source: ::ffmpeg_next::Error,
    },
    /// An input larger than the engine accepts.
    #[error("input of {0} bytes is too large")]
    InputTooLarge(usize),
}

/// A decoded picture held by the engine until it is written out.
pub trait Picture: Send {
    /// Visible width and height in pixels.
    fn size(&self) -> (u32, u32);
    /// The timestamp of the input that carried the picture.
    fn timestamp(&self) -> u64;
    /// The picture's planes, or `None` if its pixel format cannot be
    /// written as NV12/YUV420 (for instance a 10-bit stream).
    fn planes(&self) -> Option<SourcePlanes<'_>>;
    /// The decoder reported the picture as damaged.
    fn is_corrupt(&self) -> bool;
}

/// What decoding produced.
pub enum DecodeEvent {
    /// A picture in display order.
    Picture(Box<dyn Picture>),
    /// Input that could not be decoded; it stands for one lost picture.
    Corrupt { timestamp: u64 },
}

/// One stream's decoder.
pub trait Decoder: Send {
    /// Feeds `data`, which need not hold whole access units, stamped with
    /// `timestamp`; appends what became ready to `out`.
    fn decode(
        &mut self,
        data: &[u8],
        timestamp: u64,
        out: &mut Vec<DecodeEvent>,
    ) -> Result<(), EngineError>;
    /// Emits every picture still inside the decoder; decoding may go on
    /// afterwards as at the start of a stream.
    fn flush(&mut self, out: &mut Vec<DecodeEvent>) -> Result<(), EngineError>;
    /// Drops buffered input and pictures (seek).
    fn reset(&mut self) -> Result<(), EngineError>;
    /// The visible size of the pictures to come, once the decoder has read
    /// the stream's header: that may be before any picture is out, as a
    /// decoder holds pictures back to put them in display order.
    fn header_size(&self) -> Option<(u32, u32)>;
}

/// Makes decoders.
pub trait DecoderFactory: Send + Sync {
    /// Whether a decoder for `format` exists.
    fn supports(&self, format: CodedFormat) -> bool;
    /// A new decoder for `format`.
    fn create(&self, format: CodedFormat) -> Result<Box<dyn Decoder>, EngineError>;
}
