//! The FFmpeg decoding engine: libavcodec decoders fed through a bitstream
//! parser, so that an input buffer need not hold exactly one access unit.

use std::ptr;

use ff::codec::{self, threading};
use ff::ffi;
use ff::format::Pixel;
use ff::util::frame::Video as VideoFrame;
use ffmpeg_next as ff;
use log::{debug, warn};

use super::{
    CodedFormat, DecodeEvent, Decoder, DecoderFactory, EngineError, Picture, SourcePlanes,
};

/// Largest input buffer handed to the parser in one call.
const MAX_INPUT: usize = 64 << 20;

fn codec_id(format: CodedFormat) -> codec::Id {
    match format {
        CodedFormat::H264 => codec::Id::H264,
        CodedFormat::Hevc => codec::Id::HEVC,
        CodedFormat::Vp8 => codec::Id::VP8,
        CodedFormat::Vp9 => codec::Id::VP9,
        CodedFormat::Av1 => codec::Id::AV1,
    }
}

/// Finds a software decoder. For AV1 the external decoders come first: the
/// built-in one decodes only through hardware acceleration.
fn find_codec(format: CodedFormat) -> Option<ff::Codec> {
    if format == CodedFormat::Av1 {
        if let Some(codec) = ["libdav1d", "libaom-av1"]
            .iter()
            .find_map(|name| ff::decoder::find_by_name(name))
        {
            return Some(codec);
        }
    }
    ff::decoder::find(codec_id(format))
}

/// Makes FFmpeg decoders using `threads` threads each (0: FFmpeg decides).
pub struct FfmpegDecoders {
    threads: usize,
}

impl FfmpegDecoders {
    /// Initialises FFmpeg once per process.
    pub fn new(threads: usize) -> Result<Self, EngineError> {
        ff::init().map_err(|source| EngineError::Ffmpeg {
            context: "initialising FFmpeg",
            source,
        })?;
        ff::util::log::set_level(ff::util::log::Level::Error);
        Ok(Self { threads })
    }
}

impl DecoderFactory for FfmpegDecoders {
    fn supports(&self, format: CodedFormat) -> bool {
        find_codec(format).is_some()
    }

    fn create(&self, format: CodedFormat) -> Result<Box<dyn Decoder>, EngineError> {
        Ok(Box::new(FfmpegDecoder::open(format, self.threads)?))
    }
}

/// An `AVCodecParserContext`, closed on drop.
struct Parser(ptr::NonNull<ffi::AVCodecParserContext>);

// SAFETY: the parser context is plain heap state used by one thread at a time
// (the decoder that owns it is `Send`, not `Sync`).
unsafe impl Send for Parser {}

impl Parser {
    fn new(id: codec::Id) -> Option<Self> {
        let id: ffi::AVCodecID = id.into();
        // SAFETY: av_parser_init returns NULL for codecs without a parser.
        ptr::NonNull::new(unsafe { ffi::av_parser_init(id as i32) }).map(Parser)
    }
}

impl Drop for Parser {
    fn drop(&mut self) {
        // SAFETY: the pointer came from av_parser_init and is closed once.
        unsafe { ffi::av_parser_close(self.0.as_ptr()) };
    }
}

struct FfmpegDecoder {
    format: CodedFormat,
    decoder: ff::decoder::Video,
    parser: Option<Parser>,
    /// Timestamp of the latest input, for the unit a flush completes.
    last_pts: i64,
    /// The input copied with the zeroed tail FFmpeg's parsers may read past
    /// its end (`AV_INPUT_BUFFER_PADDING_SIZE`), reused from call to call.
    padded: Vec<u8>,
}

/// Bytes FFmpeg may read beyond the end of an input buffer.
const INPUT_PADDING: usize = ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;

fn ff_err(context: &'static str) -> impl FnOnce(ff::Error) -> EngineError {
    move |source| EngineError::Ffmpeg { context, source }
}

impl FfmpegDecoder {
    fn open(format: CodedFormat, threads: usize) -> Result<Self, EngineError> {
        let codec = find_codec(format).ok_or(EngineError::Unsupported(format))?;
        let mut context = codec::Context::new_with_codec(codec);
        context.set_threading(threading::Config {
            kind: if threads == 1 {
                threading::Type::None
            } else {
                threading::Type::Frame
            },
            count: threads,
            ..Default::default()
        });
        let decoder = context
            .decoder()
            .video()
            .map_err(ff_err("opening the decoder"))?;
        Ok(Self {
            format,
            decoder,
            parser: Parser::new(codec_id(format)),
            last_pts: 0,
            padded: Vec::new(),
        })
    }

    /// Sends one packet and collects the pictures that became ready.
    fn send(&mut self, data: &[u8], pts: i64, out: &mut Vec<DecodeEvent>) {
        let mut packet = ff::Packet::copy(data);
        packet.set_pts(Some(pts));
        if let Err(e) = self.decoder.send_packet(&packet) {
            debug!("{:?}: packet rejected: {e}", self.format);
            out.push(DecodeEvent::Corrupt {
                timestamp: pts as u64,
            });
        }
        self.receive(out);
    }

    fn receive(&mut self, out: &mut Vec<DecodeEvent>) {
        loop {
            let mut frame = VideoFrame::empty();
            match self.decoder.receive_frame(&mut frame) {
                Ok(()) => out.push(DecodeEvent::Picture(Box::new(FfmpegPicture(frame)))),
                Err(ff::Error::Other {
                    errno: ff::util::error::EAGAIN,
                })
                | Err(ff::Error::Eof) => return,
                Err(e) => {
                    // A damaged picture: report it as lost and go on.
                    debug!("{:?}: picture lost: {e}", self.format);
                    out.push(DecodeEvent::Corrupt { timestamp: 0 });
                }
            }
        }
    }
}

impl Decoder for FfmpegDecoder {
    fn decode(
        &mut self,
        data: &[u8],
        timestamp: u64,
        out: &mut Vec<DecodeEvent>,
    ) -> Result<(), EngineError> {
        if data.len() > MAX_INPUT {
            return Err(EngineError::InputTooLarge(data.len()));
        }
        // Timestamps travel through FFmpeg as pts, bit for bit.
        let pts = timestamp as i64;
        self.last_pts = pts;
        let Some(parser) = &self.parser else {
            self.send(data, pts, out);
            return Ok(());
        };
        let parser = parser.0.as_ptr();
        let mut padded = std::mem::take(&mut self.padded);
        padded.clear();
        padded.extend_from_slice(data);
        padded.resize(data.len() + INPUT_PADDING, 0);
        let mut rest = padded.get(..data.len()).unwrap_or_default();
        while !rest.is_empty() {
            let mut unit: *mut u8 = ptr::null_mut();
            let mut unit_len: i32 = 0;
            // SAFETY: parser and codec context are live; `rest` is valid for
            // its length (≤ MAX_INPUT, fits in i32) plus the zeroed padding
            // after it in `padded`; FFmpeg writes the output pointer and size,
            // pointing into `rest` or its own buffer.
            let used = unsafe {
                ffi::av_parser_parse2(
                    parser,
                    self.decoder.as_mut_ptr(),
                    &mut unit,
                    &mut unit_len,
                    rest.as_ptr(),
                    rest.len() as i32,
                    pts,
                    ffi::AV_NOPTS_VALUE,
                    0,
                )
            };
            let Ok(used) = usize::try_from(used) else {
                warn!("{:?}: parser error {used}", self.format);
                out.push(DecodeEvent::Corrupt { timestamp });
                break;
            };
            rest = rest.get(used..).unwrap_or_default();
            if let Some(unit) = parsed_unit(unit, unit_len) {
                // SAFETY: the parser's `pts` field is the timestamp of the
                // input the unit started in, or unset when that input's
                // timestamp went to an earlier unit; then the current input
                // is the best account of where the unit came from.
                let unit_pts = match unsafe { (*parser).pts } {
                    ffi::AV_NOPTS_VALUE => pts,
                    known => known,
                };
                self.send(unit, unit_pts, out);
            }
            if used == 0 && unit_len == 0 {
                break;
            }
        }
        self.padded = padded;
        Ok(())
    }

    fn flush(&mut self, out: &mut Vec<DecodeEvent>) -> Result<(), EngineError> {
        if let Some(parser) = &self.parser {
            let parser = parser.0.as_ptr();
            let mut unit: *mut u8 = ptr::null_mut();
            let mut unit_len: i32 = 0;
            // SAFETY: an empty input asks the parser for what it buffered.
            unsafe {
                ffi::av_parser_parse2(
                    parser,
                    self.decoder.as_mut_ptr(),
                    &mut unit,
                    &mut unit_len,
                    ptr::null(),
                    0,
                    ffi::AV_NOPTS_VALUE,
                    ffi::AV_NOPTS_VALUE,
                    0,
                )
            };
            if let Some(unit) = parsed_unit(unit, unit_len) {
                // SAFETY: as in `decode`.
                let unit_pts = unsafe { (*parser).pts };
                let unit_pts = if unit_pts == ffi::AV_NOPTS_VALUE {
                    self.last_pts
                } else {
                    unit_pts
                };
                self.send(unit, unit_pts, out);
            }
        }
        self.decoder
            .send_eof()
            .map_err(ff_err("flushing the decoder"))?;
        self.receive(out);
        self.reset()
    }

    fn reset(&mut self) -> Result<(), EngineError> {
        self.decoder.flush();
        self.parser = Parser::new(codec_id(self.format));
        Ok(())
    }
}

/// The unit the parser completed, if any.
fn parsed_unit<'a>(unit: *mut u8, len: i32) -> Option<&'a [u8]> {
    let len = usize::try_from(len).ok().filter(|&l| l > 0)?;
    if unit.is_null() {
        return None;
    }
    // SAFETY: FFmpeg guarantees `unit` holds `len` bytes until the next
    // parser call; the slice is used before that.
    Some(unsafe { std::slice::from_raw_parts(unit, len) })
}

/// A decoded FFmpeg frame.
struct FfmpegPicture(VideoFrame);

impl Picture for FfmpegPicture {
    fn size(&self) -> (u32, u32) {
        (self.0.width(), self.0.height())
    }

    fn timestamp(&self) -> u64 {
        self.0.pts().or(self.0.timestamp()).unwrap_or(0) as u64
    }

    fn planes(&self) -> Option<SourcePlanes<'_>> {
        let frame = &self.0;
        let plane = |i: usize| (frame.data(i), frame.stride(i));
        match frame.format() {
            Pixel::YUV420P | Pixel::YUVJ420P if frame.planes() >= 3 => Some(SourcePlanes::Planar {
                y: plane(0),
                u: plane(1),
                v: plane(2),
            }),
            Pixel::NV12 if frame.planes() >= 2 => Some(SourcePlanes::SemiPlanar {
                y: plane(0),
                uv: plane(1),
            }),
            _ => None,
        }
    }

    fn is_corrupt(&self) -> bool {
        self.0.is_corrupt()
    }
}

#[cfg(test)]
mod tests;
