//! The FFmpeg decoding engine: libavcodec decoders fed through a bitstream
//! parser, so that an input buffer need not hold exactly one access unit.
//!
//! An input is cut into units one at a time, and the pictures a unit makes
//! are taken out before the next unit goes in. Decoding can so stop between
//! any two units, when the caller's room for pictures is used up or its
//! cancel flag is set, and the rest of the input waits in the decoder.

use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

use ff::codec::{self, threading};
use ff::ffi;
use ff::format::Pixel;
use ff::util::frame::Video as VideoFrame;
use ffmpeg_next as ff;
use log::debug;

use super::{
    picture_bytes, CodedFormat, DecodeEvent, Decoder, DecoderFactory, EngineError, Picture,
    Progress, Room, SourcePlanes, MAX_DIMENSION,
};
use crate::log_limit::warn_limited;

/// FFmpeg's `max_pixels`: the largest picture area a decoder may allocate.
const MAX_PIXELS: u64 = MAX_DIMENSION as u64 * MAX_DIMENSION as u64;

/// Largest input buffer the engine takes in one call.
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

/// Reference pictures a stream of `format` may make the decoder keep: the
/// largest DPB of H.264 and HEVC, VP8's three references, the eight
/// reference slots of VP9 and AV1.
fn max_references(format: CodedFormat) -> u32 {
    match format {
        CodedFormat::H264 | CodedFormat::Hevc => 16,
        CodedFormat::Vp8 => 3,
        CodedFormat::Vp9 | CodedFormat::Av1 => 8,
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

/// Bytes FFmpeg may read beyond the end of an input buffer: the engine
/// appends them to every input (callers save a copy by leaving room).
pub const INPUT_PADDING: usize = ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;

/// An input followed by the zeroed tail FFmpeg's parsers may read past its
/// end, and how far the parser got in it.
struct PaddedInput {
    /// The input, then `INPUT_PADDING` zero bytes.
    bytes: Vec<u8>,
    len: usize,
    parsed: usize,
    pts: i64,
}

impl PaddedInput {
    fn new(mut data: Vec<u8>, pts: i64) -> Self {
        let len = data.len();
        data.resize(len + INPUT_PADDING, 0);
        Self {
            bytes: data,
            len,
            parsed: 0,
            pts,
        }
    }

    /// The bytes not parsed yet; `INPUT_PADDING` zero bytes follow them.
    fn rest(&self) -> &[u8] {
        self.bytes.get(self.parsed..self.len).unwrap_or_default()
    }
}

/// A unit the parser completed, with the timestamp of the input it started
/// in (`AV_NOPTS_VALUE` when that input's timestamp went to an earlier unit).
struct Unit<'a> {
    data: &'a [u8],
    pts: i64,
    /// The picture size the stream's headers declare, as far as the parser
    /// has read them (its larger of coded and display size).
    declared: (u32, u32),
}

impl Unit<'_> {
    fn declared_pixels(&self) -> u64 {
        u64::from(self.declared.0) * u64::from(self.declared.1)
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

    /// Cuts the next unit from the start of `input`, or with no input hands
    /// back what the parser still buffers. Returns the bytes used, or
    /// FFmpeg's error code, and the unit completed if any. The unit lies in
    /// `input` or in the parser's own buffer, so it borrows both.
    fn parse<'a>(
        &'a mut self,
        decoder: &mut ff::decoder::Video,
        input: Option<&'a PaddedInput>,
    ) -> Result<(usize, Option<Unit<'a>>), i32> {
        let (data, len, pts) = match input {
            Some(input) => {
                let rest = input.rest();
                (rest.as_ptr(), rest.len(), input.pts)
            }
            None => (ptr::null(), 0, ffi::AV_NOPTS_VALUE),
        };
        let len = i32::try_from(len).map_err(|_| ffi::AVERROR(libc::EINVAL))?;
        let mut unit: *mut u8 = ptr::null_mut();
        let mut unit_len: i32 = 0;
        // SAFETY: parser and codec context are live; `data` is valid for
        // `len` bytes plus the zeroed padding after them (`PaddedInput`), or
        // null with `len` 0 to drain the parser; FFmpeg writes the unit
        // pointer and size, pointing into `data` or its own buffer.
        let used = unsafe {
            ffi::av_parser_parse2(
                self.0.as_ptr(),
                decoder.as_mut_ptr(),
                &mut unit,
                &mut unit_len,
                data,
                len,
                pts,
                ffi::AV_NOPTS_VALUE,
                0,
            )
        };
        let used = usize::try_from(used).map_err(|_| used)?;
        let unit_len = usize::try_from(unit_len).unwrap_or(0);
        if unit.is_null() || unit_len == 0 {
            return Ok((used, None));
        }
        // SAFETY: FFmpeg guarantees `unit` holds `unit_len` bytes, in `input`
        // or in the parser's buffer, until the parser's next call; the slice
        // borrows the parser mutably and the input for as long as it lives.
        let data = unsafe { std::slice::from_raw_parts(unit, unit_len) };
        // SAFETY: the parser context is live; these are plain fields.
        let (pts, display, coded) = unsafe {
            let context = &*self.0.as_ptr();
            (
                context.pts,
                (context.width, context.height),
                (context.coded_width, context.coded_height),
            )
        };
        let side = |a: i32, b: i32| u32::try_from(a.max(b)).unwrap_or(0);
        let declared = (side(display.0, coded.0), side(display.1, coded.1));
        Ok((
            used,
            Some(Unit {
                data,
                pts,
                declared,
            }),
        ))
    }
}

impl Drop for Parser {
    fn drop(&mut self) {
        // SAFETY: the pointer came from av_parser_init and is closed once.
        unsafe { ffi::av_parser_close(self.0.as_ptr()) };
    }
}

/// What the decoder gave back when asked for a picture.
enum Received {
    Picture(FfmpegPicture),
    Lost,
    /// Nothing until another unit goes in.
    Empty,
    /// Everything came out after the end of the stream was sent.
    End,
}

/// The libavcodec decoder.
struct Codec {
    format: CodedFormat,
    decoder: ff::decoder::Video,
}

impl Codec {
    /// Sends one unit; a unit the decoder refuses stands for a lost picture.
    fn send(&mut self, data: &[u8], pts: i64, out: &mut Vec<DecodeEvent>) {
        let mut packet = ff::Packet::copy(data);
        packet.set_pts(Some(pts));
        if let Err(e) = self.decoder.send_packet(&packet) {
            debug!("{:?}: packet rejected: {e}", self.format);
            out.push(DecodeEvent::Corrupt {
                timestamp: pts as u64,
            });
        }
    }

    fn receive(&mut self) -> Received {
        let mut frame = VideoFrame::empty();
        match self.decoder.receive_frame(&mut frame) {
            Ok(()) => Received::Picture(FfmpegPicture(frame)),
            Err(ff::Error::Other {
                errno: ff::util::error::EAGAIN,
            }) => Received::Empty,
            Err(ff::Error::Eof) => Received::End,
            Err(e) => {
                // A damaged picture: report it as lost and go on.
                debug!("{:?}: picture lost: {e}", self.format);
                Received::Lost
            }
        }
    }
}

/// Where a flush stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flush {
    Off,
    /// Asked for: starts once the input has gone through.
    Asked,
    /// The end of the stream went to the decoder; pictures are coming out.
    EndSent,
}

struct FfmpegDecoder {
    codec: Codec,
    parser: Option<Parser>,
    /// Input not parsed yet.
    input: Option<PaddedInput>,
    flush: Flush,
    /// Timestamp of the latest input, for the unit a flush completes.
    last_pts: i64,
    /// Threads the decoder runs on.
    threads: u32,
}

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
        // SAFETY: the context is allocated and not open yet; `max_pixels` is
        // a plain field. Decoders check picture sizes against it before they
        // allocate a picture, and libdav1d takes it as its frame size limit.
        unsafe {
            (*context.as_mut_ptr()).max_pixels = MAX_PIXELS as i64;
        }
        let decoder = context
            .decoder()
            .video()
            .map_err(ff_err("opening the decoder"))?;
        let threads = u32::try_from(decoder.threading().count)
            .unwrap_or(u32::MAX)
            .max(1);
        Ok(Self {
            codec: Codec { format, decoder },
            parser: Parser::new(codec_id(format)),
            input: None,
            flush: Flush::Off,
            last_pts: 0,
            threads,
        })
    }

    /// Sends the next unit of the input to the decoder.
    fn parse_next(&mut self, out: &mut Vec<DecodeEvent>) {
        let Self {
            codec,
            parser,
            input,
            ..
        } = self;
        let Some(current) = input.as_ref() else {
            return;
        };
        let Some(parser) = parser else {
            // No parser: the whole input is one unit.
            codec.send(current.rest(), current.pts, out);
            *input = None;
            return;
        };
        let outcome = match parser.parse(&mut codec.decoder, Some(current)) {
            Ok((used, unit)) => {
                let stuck = used == 0 && unit.is_none();
                if let Some(unit) = unit {
                    let pts = match unit.pts {
                        ffi::AV_NOPTS_VALUE => current.pts,
                        known => known,
                    };
                    if unit.declared_pixels() > MAX_PIXELS {
                        // Refused before the decoder sizes its tables for it
                        // (`max_pixels` only guards the pictures).
                        let (w, h) = unit.declared;
                        warn_limited!(
                            "{:?}: refused a unit of a {w}x{h} stream, over {MAX_DIMENSION}x{MAX_DIMENSION}",
                            codec.format
                        );
                        out.push(DecodeEvent::Corrupt {
                            timestamp: pts as u64,
                        });
                    } else {
                        codec.send(unit.data, pts, out);
                    }
                }
                Some((used, stuck))
            }
            Err(code) => {
                warn_limited!("{:?}: parser error {code}", codec.format);
                out.push(DecodeEvent::Corrupt {
                    timestamp: current.pts as u64,
                });
                None
            }
        };
        match (outcome, input.as_mut()) {
            (Some((used, false)), Some(current)) if current.parsed + used < current.len => {
                current.parsed += used;
            }
            // Everything parsed, a parser that no longer moves, or an error:
            // the input is done with.
            _ => *input = None,
        }
    }

    /// Sends what the parser still buffers, then the end of the stream.
    fn end_stream(&mut self, out: &mut Vec<DecodeEvent>) -> Result<(), EngineError> {
        if let Some(parser) = &mut self.parser {
            if let Ok((_, Some(unit))) = parser.parse(&mut self.codec.decoder, None) {
                let pts = match unit.pts {
                    ffi::AV_NOPTS_VALUE => self.last_pts,
                    known => known,
                };
                self.codec.send(unit.data, pts, out);
            }
        }
        self.codec
            .decoder
            .send_eof()
            .map_err(ff_err("flushing the decoder"))?;
        self.flush = Flush::EndSent;
        Ok(())
    }
}

impl Decoder for FfmpegDecoder {
    fn feed(&mut self, data: Vec<u8>, timestamp: u64) -> Result<(), EngineError> {
        if self.input.is_some() || self.flush != Flush::Off {
            return Err(EngineError::InputPending);
        }
        if data.len() > MAX_INPUT {
            return Err(EngineError::InputTooLarge(data.len()));
        }
        // Timestamps travel through FFmpeg as pts, bit for bit.
        let pts = timestamp as i64;
        self.last_pts = pts;
        if !data.is_empty() {
            self.input = Some(PaddedInput::new(data, pts));
        }
        Ok(())
    }

    fn start_flush(&mut self) {
        if self.flush == Flush::Off {
            self.flush = Flush::Asked;
        }
    }

    fn run(
        &mut self,
        out: &mut Vec<DecodeEvent>,
        room: Room,
        cancel: &AtomicBool,
    ) -> Result<Progress, EngineError> {
        let start = out.len();
        let mut bytes = 0u64;
        loop {
            // What the decoder has ready comes out before another unit goes
            // in, and only while there is room: a unit is sent only to a
            // decoder with nothing left to give.
            loop {
                if out.len() - start >= room.events || bytes >= room.bytes {
                    return Ok(Progress::Full);
                }
                match self.codec.receive() {
                    Received::Picture(picture) => {
                        let (w, h) = picture.size();
                        bytes = bytes.saturating_add(picture_bytes(w, h));
                        out.push(DecodeEvent::Picture(Box::new(picture)));
                    }
                    Received::Lost => out.push(DecodeEvent::Corrupt { timestamp: 0 }),
                    Received::Empty => break,
                    Received::End if self.flush == Flush::EndSent => {
                        self.reset()?;
                        return Ok(Progress::Idle);
                    }
                    Received::End => break,
                }
            }
            if cancel.load(Ordering::Relaxed) {
                return Ok(Progress::Cancelled);
            }
            if self.input.is_some() {
                self.parse_next(out);
                continue;
            }
            match self.flush {
                Flush::Off => return Ok(Progress::Idle),
                Flush::Asked => self.end_stream(out)?,
                // The decoder wants more after the end of the stream: it
                // has nothing more to give.
                Flush::EndSent => {
                    self.reset()?;
                    return Ok(Progress::Idle);
                }
            }
        }
    }

    fn reset(&mut self) -> Result<(), EngineError> {
        self.codec.decoder.flush();
        self.parser = Parser::new(codec_id(self.codec.format));
        self.input = None;
        self.flush = Flush::Off;
        Ok(())
    }

    fn header_size(&self) -> Option<(u32, u32)> {
        let decoder = &self.codec.decoder;
        let (width, height) = (decoder.width(), decoder.height());
        // A header over `max_pixels` is kept by some decoders (H.264) though
        // no picture of that size will be made.
        let pixels = u64::from(width) * u64::from(height);
        (width > 0 && height > 0 && pixels <= MAX_PIXELS).then_some((width, height))
    }

    fn max_held_pictures(&self) -> u32 {
        // References, plus per thread the picture it decodes, plus the
        // picture waiting to be taken out.
        max_references(self.codec.format)
            .saturating_add(self.threads)
            .saturating_add(1)
    }
}

/// A decoded FFmpeg frame.
struct FfmpegPicture(VideoFrame);

impl FfmpegPicture {
    /// Plane `index` as `rows` rows of its line size, or `None` if FFmpeg
    /// left it empty or stores it bottom-up (a line size of 0 or less).
    fn plane(&self, index: usize, rows: u32) -> Option<(&[u8], usize)> {
        // SAFETY: the frame is live; `data` and `linesize` are plain arrays.
        let (data, linesize) = unsafe {
            let frame = &*self.0.as_ptr();
            (*frame.data.get(index)?, *frame.linesize.get(index)?)
        };
        let stride = usize::try_from(linesize).ok().filter(|&s| s > 0)?;
        if data.is_null() {
            return None;
        }
        let len = stride.checked_mul(rows as usize)?;
        // SAFETY: a decoded frame's plane holds `rows` lines of `linesize`
        // bytes from `data[index]` while the frame lives (FFmpeg's frame
        // layout); a line size of 0 or less was refused above.
        Some((unsafe { std::slice::from_raw_parts(data, len) }, stride))
    }
}

impl Picture for FfmpegPicture {
    fn size(&self) -> (u32, u32) {
        (self.0.width(), self.0.height())
    }

    fn timestamp(&self) -> u64 {
        self.0.pts().or(self.0.timestamp()).unwrap_or(0) as u64
    }

    fn planes(&self) -> Option<SourcePlanes<'_>> {
        let (rows, chroma_rows) = (self.0.height(), self.0.height().div_ceil(2));
        match self.0.format() {
            Pixel::YUV420P | Pixel::YUVJ420P => Some(SourcePlanes::Planar {
                y: self.plane(0, rows)?,
                u: self.plane(1, chroma_rows)?,
                v: self.plane(2, chroma_rows)?,
            }),
            Pixel::NV12 => Some(SourcePlanes::SemiPlanar {
                y: self.plane(0, rows)?,
                uv: self.plane(1, chroma_rows)?,
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
