//! Video decoding behind a trait, and the writer that lays decoded pictures
//! out in guest buffers.

mod ffmpeg;
mod picture;
#[cfg(test)]
pub(crate) mod test_streams;

pub use self::ffmpeg::{FfmpegDecoders, INPUT_PADDING};
pub use picture::{write_picture, PictureLayout, PixelFormat, PlaneLayout, SourcePlanes};

use std::sync::atomic::AtomicBool;

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
    /// Input fed before the previous one went through.
    #[error("input fed while earlier input is still being decoded")]
    InputPending,
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

/// Largest width or height of a picture the decoders make. The FFmpeg engine
/// turns it into `max_pixels` (and dav1d's frame size limit), so a header
/// declaring anything larger in area is refused before a picture is
/// allocated.
pub const MAX_DIMENSION: u32 = 8192;

/// Bytes of an 8-bit 4:2:0 picture of `width`x`height`: what a decoded
/// picture costs, for memory accounting.
pub fn picture_bytes(width: u32, height: u32) -> u64 {
    let (w, h) = (u64::from(width), u64::from(height));
    w * h + 2 * w.div_ceil(2) * h.div_ceil(2)
}

/// How much one [`Decoder::run`] call may emit before it pauses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// Events (pictures and lost pictures).
    pub events: usize,
    /// Picture bytes, as [`picture_bytes`] counts them. The picture that
    /// crosses the limit is still emitted.
    pub bytes: u64,
}

impl Room {
    /// No limit: everything the input holds comes out.
    pub const UNLIMITED: Room = Room {
        events: usize::MAX,
        bytes: u64::MAX,
    };
}

/// Why [`Decoder::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Everything fed went through the decoder, and a requested flush ended.
    Idle,
    /// The room is used up; the rest of the input is kept for the next call.
    Full,
    /// The cancel flag was set; reset the decoder before feeding it again.
    Cancelled,
}

/// One stream's decoder.
///
/// Input is handed over with [`feed`](Self::feed) (or a flush asked for)
/// and decoded by [`run`](Self::run), which stops when the caller's room for
/// pictures is used up and goes on from there at the next call: one input
/// buffer may hold any number of pictures.
pub trait Decoder: Send {
    /// Takes `data`, which need not hold whole access units, stamped with
    /// `timestamp`, as the next input. The previous input must have gone
    /// through ([`Progress::Idle`]).
    fn feed(&mut self, data: Vec<u8>, timestamp: u64) -> Result<(), EngineError>;
    /// Asks for every picture still inside the decoder once the input fed so
    /// far has gone through; decoding may go on afterwards as at the start of
    /// a stream.
    fn start_flush(&mut self);
    /// Decodes until the input has gone through, `out` has received `room`,
    /// or `cancel` is set (checked between bitstream units).
    fn run(
        &mut self,
        out: &mut Vec<DecodeEvent>,
        room: Room,
        cancel: &AtomicBool,
    ) -> Result<Progress, EngineError>;
    /// Drops buffered input and pictures (seek).
    fn reset(&mut self) -> Result<(), EngineError>;
    /// The visible size of the pictures to come, once the decoder has read
    /// the stream's header: that may be before any picture is out, as a
    /// decoder holds pictures back to put them in display order.
    fn header_size(&self) -> Option<(u32, u32)>;
    /// Most pictures the decoder keeps inside at once (references,
    /// reordering, pictures in flight on its threads).
    fn max_held_pictures(&self) -> u32;

    /// Feeds `data` and decodes all of it, appending what became ready to
    /// `out`.
    fn decode(
        &mut self,
        data: &[u8],
        timestamp: u64,
        out: &mut Vec<DecodeEvent>,
    ) -> Result<(), EngineError> {
        self.feed(data.to_vec(), timestamp)?;
        self.run(out, Room::UNLIMITED, &AtomicBool::new(false))
            .map(drop)
    }

    /// Emits every picture still inside the decoder.
    fn flush(&mut self, out: &mut Vec<DecodeEvent>) -> Result<(), EngineError> {
        self.start_flush();
        self.run(out, Room::UNLIMITED, &AtomicBool::new(false))
            .map(drop)
    }
}

/// Makes decoders.
pub trait DecoderFactory: Send + Sync {
    /// Whether a decoder for `format` exists.
    fn supports(&self, format: CodedFormat) -> bool;
    /// A new decoder for `format`.
    fn create(&self, format: CodedFormat) -> Result<Box<dyn Decoder>, EngineError>;
}
