//! The FFmpeg input path: any bitstream, cut into buffers of any size, for
//! any coded format, through the decoding engine and the picture writer.
//!
//! Input: a selector byte (bits 0-2 the coded format, bit 3 YUV420 rather
//! than NV12 output, bits 4-6 the buffer size `64 << n`, bit 7 buffers
//! framed as `[length u16 le][bytes]`, as a guest queues whole frames),
//! then the bitstream.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vhost_device_video::engine::decode::{
    write_picture, CodedFormat, DecodeEvent, DecoderFactory, FfmpegDecoders, PictureLayout,
    PixelFormat,
};

/// Largest picture written out; the device refuses larger resources too.
const MAX_PICTURE: u64 = 16 << 20;

fn factory() -> &'static FfmpegDecoders {
    static FACTORY: OnceLock<FfmpegDecoders> = OnceLock::new();
    FACTORY.get_or_init(|| match FfmpegDecoders::new(1) {
        Ok(factory) => factory,
        Err(e) => panic!("cannot start FFmpeg: {e}"),
    })
}

fn write_out(events: Vec<DecodeEvent>, format: PixelFormat) {
    for event in events {
        let DecodeEvent::Picture(picture) = event else {
            continue;
        };
        let (width, height) = picture.size();
        let Some(planes) = picture.planes() else {
            continue;
        };
        let layout = PictureLayout::packed(format, width, height);
        if layout.total_size() > MAX_PICTURE {
            continue;
        }
        let mut out = vec![0u8; layout.total_size() as usize];
        let _ = write_picture(&planes, width, height, &layout, &mut |offset, row| {
            let start = offset as usize;
            match out.get_mut(start..start + row.len()) {
                Some(dest) => {
                    dest.copy_from_slice(row);
                    true
                }
                None => false,
            }
        });
    }
}

/// Splits `[length u16 le][bytes]` records; a short last record keeps what is there.
fn framed(mut data: &[u8]) -> Vec<&[u8]> {
    let mut buffers = Vec::new();
    while let [low, high, rest @ ..] = data {
        let length = usize::from(u16::from_le_bytes([*low, *high])).min(rest.len());
        let (buffer, next) = rest.split_at(length);
        buffers.push(buffer);
        data = next;
    }
    buffers
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let format = CodedFormat::ALL[usize::from(selector & 7) % CodedFormat::ALL.len()];
    let pixels = if selector & 8 != 0 {
        PixelFormat::Yuv420
    } else {
        PixelFormat::Nv12
    };
    let buffers = if selector & 0x80 != 0 {
        framed(rest)
    } else {
        rest.chunks(64 << usize::from(selector >> 4 & 7)).collect()
    };
    let factory = factory();
    let Ok(mut decoder) = factory.create(format) else {
        return;
    };
    let mut events = Vec::new();
    for (timestamp, buffer) in buffers.into_iter().enumerate() {
        if decoder
            .decode(buffer, timestamp as u64, &mut events)
            .is_err()
        {
            break;
        }
        write_out(std::mem::take(&mut events), pixels);
    }
    let _ = decoder.flush(&mut events);
    write_out(events, pixels);
});
