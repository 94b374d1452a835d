//! Decodes streams made at test time by Debian's `ffmpeg` and compares every
//! picture's MD5 with what `ffmpeg -f framemd5` reports for the same stream.

use std::path::Path;
use std::process::Command;

use md5::{Digest, Md5};

use super::super::{
    write_picture, CodedFormat, DecodeEvent, DecoderFactory, PictureLayout, PixelFormat,
};
use super::FfmpegDecoders;

fn ffmpeg_available() -> bool {
    Command::new("ffmpeg").arg("-version").output().is_ok()
}

fn ffmpeg(args: &[&str]) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(args)
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The per-picture MD5 column of `ffmpeg -f framemd5` output.
fn reference_md5s(stream: &Path, pix_fmt: &str) -> Vec<String> {
    let text = ffmpeg(&[
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
        md5s.push(
            Md5::digest(&buffer)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        );
        stamps.push(picture.timestamp());
    }
    (md5s, stamps)
}

fn make_stream(dir: &Path, name: &str, size: &str, codec_args: &[&str]) -> std::path::PathBuf {
    let path = dir.join(name);
    let source = format!("testsrc=size={size}:rate=25");
    let mut args = vec!["-f", "lavfi", "-i", &source, "-frames:v", "12"];
    args.extend_from_slice(codec_args);
    args.push(path.to_str().expect("utf-8 path"));
    ffmpeg(&args);
    path
}

#[test]
fn h264_odd_size_with_b_frames_matches_framemd5() {
    if !ffmpeg_available() {
        eprintln!("skipped: no ffmpeg binary");
        return;
    }
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
    if !ffmpeg_available() {
        eprintln!("skipped: no ffmpeg binary");
        return;
    }
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
    if !ffmpeg_available() {
        eprintln!("skipped: no ffmpeg binary");
        return;
    }
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
