//! Decodes streams made at test time by Debian's `ffmpeg` and compares every
//! picture's MD5 with what `ffmpeg -f framemd5` reports for the same stream.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use ff::format::Pixel;
use ff::util::frame::Video as VideoFrame;
use md5::{Digest, Md5};

use super::super::test_streams;
use super::super::{
    write_picture, CodedFormat, DecodeEvent, DecoderFactory, Picture, PictureLayout, PixelFormat,
    Progress, Room, MAX_DIMENSION,
};
use super::{ff, FfmpegDecoders, FfmpegPicture};

/// The per-picture MD5 column of `ffmpeg -f framemd5` output.
fn reference_md5s(stream: &Path, pix_fmt: &str) -> Vec<String> {
    let text = test_streams::ffmpeg(&[
        "-i",
        stream.to_str().expect("utf-8 path"),
        "-pix_fmt",
        pix_fmt,
        "-f",
        "framemd5",
        "-",
    ]);
    String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(|s| s.trim().to_owned()))
        .collect()
}

/// Feeds `inputs`, input i stamped `stamp(i)`, flushes, and returns every
/// picture's MD5 in `pixel` packed with stride = width, and its timestamp.
fn decode_md5s(
    format: CodedFormat,
    inputs: &[&[u8]],
    stamp: fn(u64) -> u64,
    pixel: PixelFormat,
) -> (Vec<String>, Vec<u64>) {
    let factory = FfmpegDecoders::new(2).expect("ffmpeg init");
    let mut decoder = factory.create(format).expect("decoder");
    let mut events = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        decoder
            .decode(input, stamp(i as u64), &mut events)
            .expect("decode");
    }
    decoder.flush(&mut events).expect("flush");
    let mut md5s = Vec::new();
    let mut stamps = Vec::new();
    for event in events {
        let DecodeEvent::Picture(picture) = event else {
            panic!("clean stream reported corrupt");
        };
        md5s.push(picture_md5(picture.as_ref(), pixel));
        stamps.push(picture.timestamp());
    }
    (md5s, stamps)
}

/// The MD5 of `picture` in `pixel`, planes packed with stride = width, as
/// `ffmpeg -f framemd5` computes it.
fn picture_md5(picture: &dyn Picture, pixel: PixelFormat) -> String {
    {
        let (w, h) = picture.size();
        // framemd5 hashes tightly packed planes: stride = plane width.
        let mut layout = PictureLayout::packed(pixel, w, h);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let chroma = match pixel {
            PixelFormat::Nv12 => vec![(2 * cw, ch)],
            PixelFormat::Yuv420 => vec![(cw, ch), (cw, ch)],
        };
        layout.planes[0].stride = w;
        layout.planes[0].size = w * h;
        let mut offset = u64::from(w * h);
        for (plane, (stride, rows)) in layout.planes[1..].iter_mut().zip(chroma) {
            plane.offset = offset;
            plane.stride = stride;
            plane.size = stride * rows;
            offset += u64::from(plane.size);
        }
        let mut buffer = vec![0u8; offset as usize];
        let planes = picture.planes().expect("8-bit 4:2:0 picture");
        write_picture(&planes, w, h, &layout, &mut |off, row| {
            let off = off as usize;
            buffer[off..off + row.len()].copy_from_slice(row);
            true
        })
        .expect("layout fits");
        Md5::digest(&buffer)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

fn make_stream(dir: &Path, name: &str, size: &str, codec_args: &[&str]) -> std::path::PathBuf {
    let path = dir.join(name);
    let source = format!("testsrc=size={size}:rate=25");
    let mut args = vec!["-f", "lavfi", "-i", &source, "-frames:v", "12"];
    args.extend_from_slice(codec_args);
    args.push(path.to_str().expect("utf-8 path"));
    test_streams::ffmpeg(&args);
    path
}

#[test]
fn h264_odd_size_with_b_frames_matches_framemd5() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stream = make_stream(
        dir.path(),
        "t.h264",
        "1918x1078",
        &[
            "-c:v", "libx264", "-bf", "2", "-pix_fmt", "yuv420p", "-f", "h264",
        ],
    );
    let bytes = std::fs::read(&stream).expect("read stream");
    for (pixel, name) in [
        (PixelFormat::Yuv420, "yuv420p"),
        (PixelFormat::Nv12, "nv12"),
    ] {
        let reference = reference_md5s(&stream, name);
        assert_eq!(reference.len(), 12);
        // Chunks that split access units anywhere.
        let chunks: Vec<&[u8]> = bytes.chunks(4099).collect();
        let (md5s, stamps) = decode_md5s(CodedFormat::H264, &chunks, |i| 1000 + i, pixel);
        assert_eq!(md5s, reference, "{name}");
        // Every picture carries the timestamp of one of the inputs.
        assert!(
            stamps.iter().all(|t| (1000..1000 + 1000).contains(t)),
            "{stamps:?}"
        );
    }
}

#[test]
fn hevc_matches_framemd5() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stream = make_stream(
        dir.path(),
        "t.hevc",
        "352x288",
        &[
            "-c:v",
            "libx265",
            "-x265-params",
            "log-level=none",
            "-pix_fmt",
            "yuv420p",
            "-f",
            "hevc",
        ],
    );
    let bytes = std::fs::read(&stream).expect("read stream");
    let chunks: Vec<&[u8]> = bytes.chunks(1000).collect();
    let (md5s, _) = decode_md5s(CodedFormat::Hevc, &chunks, |i| i, PixelFormat::Yuv420);
    assert_eq!(md5s, reference_md5s(&stream, "yuv420p"));
}

/// The frames of an IVF file, one decoder input each.
fn ivf_frames(bytes: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    let mut rest = &bytes[32..];
    while rest.len() >= 12 {
        let size = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        frames.push(&rest[12..12 + size]);
        rest = &rest[12 + size..];
    }
    frames
}

#[rstest::rstest]
#[case::vp8(CodedFormat::Vp8, &["-c:v", "libvpx", "-auto-alt-ref", "0"])]
#[case::vp9(CodedFormat::Vp9, &["-c:v", "libvpx-vp9", "-auto-alt-ref", "0"])]
#[case::av1(CodedFormat::Av1, &["-c:v", "libaom-av1", "-cpu-used", "8", "-lag-in-frames", "0"])]
fn one_frame_per_input_keeps_timestamps_and_matches_framemd5(
    #[case] format: CodedFormat,
    #[case] encoder: &[&str],
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let stream = make_stream(
        dir.path(),
        "t.ivf",
        "330x190",
        &[encoder, &["-pix_fmt", "yuv420p", "-f", "ivf"]].concat(),
    );
    let bytes = std::fs::read(&stream).expect("read stream");
    let frames = ivf_frames(&bytes);
    let (md5s, stamps) = decode_md5s(format, &frames, |i| 40_000 * i + 7, PixelFormat::Nv12);
    let expected: Vec<u64> = (0..frames.len() as u64).map(|i| 40_000 * i + 7).collect();
    assert_eq!(stamps, expected);
    assert_eq!(md5s, reference_md5s(&stream, "nv12"));
}

#[test]
fn corrupt_input_gives_errors_not_crashes() {
    let factory = FfmpegDecoders::new(1).expect("ffmpeg init");
    for format in CodedFormat::ALL {
        if !factory.supports(format) {
            continue;
        }
        let mut decoder = factory.create(format).expect("decoder");
        let mut events = Vec::new();
        let mut noise = 0x1234_5678u32;
        let data: Vec<u8> = (0..20000)
            .map(|_| {
                noise = noise.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (noise >> 16) as u8
            })
            .collect();
        for piece in data.chunks(777) {
            decoder.decode(piece, 7, &mut events).expect("decode");
        }
        decoder.flush(&mut events).expect("flush");
        decoder
            .decode(&[0, 0, 1], 8, &mut events)
            .expect("decode after flush");
    }
}

/// 100 pictures of 64x48 with B-frames, from Debian's ffmpeg and libx264.
fn hundred_pictures(dir: &Path) -> (Vec<u8>, Vec<String>) {
    let path = dir.join("100.h264");
    let path = path.to_str().expect("utf-8 path");
    test_streams::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x48:rate=25",
        "-frames:v",
        "100",
        "-c:v",
        "libx264",
        "-bf",
        "2",
        "-pix_fmt",
        "yuv420p",
        "-f",
        "h264",
        path,
    ]);
    let stream = std::fs::read(path).expect("read stream");
    let reference = reference_md5s(Path::new(path), "yuv420p");
    assert_eq!(reference.len(), 100);
    (stream, reference)
}

/// Runs `decoder` until it is idle, `room` at a time; returns the events
/// and checks no run went over the room.
fn run_in_rooms(decoder: &mut dyn super::Decoder, room: Room) -> (Vec<DecodeEvent>, usize) {
    let (mut events, mut runs) = (Vec::new(), 0);
    let cancel = AtomicBool::new(false);
    loop {
        let before = events.len();
        let progress = decoder.run(&mut events, room, &cancel).expect("run");
        assert!(
            events.len() - before <= room.events,
            "run {runs} overflowed"
        );
        runs += 1;
        match progress {
            Progress::Idle => return (events, runs),
            Progress::Full => {}
            Progress::Cancelled => panic!("cancelled without a cancel"),
        }
    }
}

/// One input holding 100 pictures (and a flush releasing the reordered
/// ones) comes out three pictures at a time: every picture, in order.
#[test]
fn one_input_of_many_pictures_comes_out_a_room_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (stream, reference) = hundred_pictures(dir.path());
    let factory = FfmpegDecoders::new(1).expect("ffmpeg init");
    let mut decoder = factory.create(CodedFormat::H264).expect("decoder");
    let room = Room {
        events: 3,
        bytes: u64::MAX,
    };
    decoder.feed(stream, 5).expect("feed");
    let (mut events, runs) = run_in_rooms(decoder.as_mut(), room);
    assert!(runs >= 30, "{runs} runs");
    decoder.start_flush();
    let (flushed, _) = run_in_rooms(decoder.as_mut(), room);
    assert!(!flushed.is_empty(), "B-frames leave pictures for the flush");
    events.extend(flushed);
    let md5s: Vec<String> = events
        .iter()
        .map(|event| match event {
            DecodeEvent::Picture(picture) => picture_md5(picture.as_ref(), PixelFormat::Yuv420),
            DecodeEvent::Corrupt { .. } => panic!("clean stream reported corrupt"),
        })
        .collect();
    assert_eq!(md5s, reference);
    // A byte budget stops a run too: after the picture that crosses it.
    decoder
        .feed(std::fs::read(dir.path().join("100.h264")).expect("read"), 6)
        .expect("feed");
    let mut events = Vec::new();
    let one_and_a_bit = Room {
        events: usize::MAX,
        bytes: super::picture_bytes(64, 48) + 1,
    };
    let progress = decoder
        .run(&mut events, one_and_a_bit, &AtomicBool::new(false))
        .expect("run");
    assert_eq!((progress, events.len()), (Progress::Full, 2));
}

/// A cancel stops decoding before the next unit; after a reset the decoder
/// decodes a stream from its start.
#[test]
fn a_cancelled_decode_stops_between_units() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (stream, reference) = hundred_pictures(dir.path());
    let factory = FfmpegDecoders::new(1).expect("ffmpeg init");
    let mut decoder = factory.create(CodedFormat::H264).expect("decoder");
    decoder.feed(stream.clone(), 0).expect("feed");
    let mut events = Vec::new();
    let progress = decoder
        .run(&mut events, Room::UNLIMITED, &AtomicBool::new(true))
        .expect("run");
    assert_eq!((progress, events.len()), (Progress::Cancelled, 0));
    assert!(matches!(
        decoder.feed(stream.clone(), 0),
        Err(super::EngineError::InputPending)
    ));
    decoder.reset().expect("reset");
    decoder.decode(&stream, 0, &mut events).expect("decode");
    decoder.flush(&mut events).expect("flush");
    assert_eq!(events.len(), reference.len());
}

/// Headers declaring more pixels than `MAX_DIMENSION` squared are refused
/// before FFmpeg allocates a picture: each runs alone in a child process,
/// whose peak resident size stays near that of the bare test process
/// (about 55 MiB), far below one picture of the declared size (384 MB for
/// H.264's 16000x16000; without the limit FFmpeg takes about 2 GB for that
/// stream, and H.264's tables alone about 90 MB).
#[rstest::rstest]
#[case::h264("engine::decode::ffmpeg::tests::oversized_h264_header_decodes_to_nothing")]
#[case::vp8("engine::decode::ffmpeg::tests::oversized_vp8_header_decodes_to_nothing")]
#[case::vp9("engine::decode::ffmpeg::tests::oversized_vp9_header_decodes_to_nothing")]
fn headers_over_the_pixel_limit_are_refused_before_allocation(#[case] child: &str) {
    let kib = crate::test_child::peak_rss_kib(child);
    eprintln!("{child}: peak resident size {} MiB", kib >> 10);
    assert!(kib < 100 << 10, "peak resident size {} MiB", kib >> 10);
}

/// Decodes `inputs` and checks nothing came out larger than the limit.
fn decode_to_nothing(format: CodedFormat, inputs: &[&[u8]]) {
    let factory = FfmpegDecoders::new(1).expect("ffmpeg init");
    let mut decoder = factory.create(format).expect("decoder");
    let mut events = Vec::new();
    for (timestamp, input) in inputs.iter().enumerate() {
        decoder
            .decode(input, timestamp as u64, &mut events)
            .expect("decode");
    }
    decoder.flush(&mut events).expect("flush");
    let limit = u64::from(MAX_DIMENSION).pow(2);
    for event in &events {
        if let DecodeEvent::Picture(picture) = event {
            let (w, h) = picture.size();
            assert!(u64::from(w) * u64::from(h) <= limit, "a {w}x{h} picture");
        }
    }
    if let Some((w, h)) = decoder.header_size() {
        assert!(u64::from(w) * u64::from(h) <= limit, "a {w}x{h} header");
    }
    crate::test_child::report_peak();
}

#[test]
#[ignore = "run alone by headers_over_the_pixel_limit_are_refused_before_allocation"]
fn oversized_h264_header_decodes_to_nothing() {
    let stream = test_streams::still_h264(64, 48, 3);
    let large = test_streams::h264_with_size(&stream, 16000, 16000);
    decode_to_nothing(CodedFormat::H264, &[&large]);
}

/// Three frames of a gray 64x48 picture in IVF, from Debian's ffmpeg.
fn gray_ivf(encoder: &str) -> Vec<u8> {
    test_streams::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=gray:size=64x48:rate=25",
        "-frames:v",
        "3",
        "-c:v",
        encoder,
        "-f",
        "ivf",
        "-",
    ])
}

#[test]
#[ignore = "run alone by headers_over_the_pixel_limit_are_refused_before_allocation"]
fn oversized_vp8_header_decodes_to_nothing() {
    let large = test_streams::vp8_ivf_with_size(&gray_ivf("libvpx"), 12000, 12000);
    decode_to_nothing(CodedFormat::Vp8, &ivf_frames(&large));
}

#[test]
#[ignore = "run alone by headers_over_the_pixel_limit_are_refused_before_allocation"]
fn oversized_vp9_header_decodes_to_nothing() {
    let large = test_streams::vp9_ivf_with_size(&gray_ivf("libvpx-vp9"), 12000, 12000);
    decode_to_nothing(CodedFormat::Vp9, &ivf_frames(&large));
}

/// A frame stored bottom-up (negative line size, as FFmpeg's vflip makes)
/// has no planes the writer can use: refused, not read as a huge slice.
#[test]
fn bottom_up_planes_are_refused() {
    let mut frame = VideoFrame::new(Pixel::YUV420P, 16, 16);
    // SAFETY: plane 0 of the 16x16 frame holds 16 rows of `linesize[0]`
    // bytes; its last row with the line size negated describes the same
    // memory bottom-up.
    unsafe {
        let raw = &mut *frame.as_mut_ptr();
        let stride = raw.linesize[0];
        raw.data[0] = raw.data[0].offset(15 * stride as isize);
        raw.linesize[0] = -stride;
    }
    assert!(FfmpegPicture(frame).planes().is_none());
}
