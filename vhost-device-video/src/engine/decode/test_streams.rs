//! Bitstreams for tests: made at test time by Debian's `ffmpeg`, and
//! H.264, VP8 and VP9 headers rewritten to declare sizes no encoder is asked to
//! make.

use std::process::Command;

/// Runs `ffmpeg` with `args` and returns its standard output. Panics if
/// `ffmpeg` is missing or fails: a test that needs it must not pass without
/// it.
pub(crate) fn ffmpeg(args: &[&str]) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(args)
        .output()
        .expect("this test needs Debian's ffmpeg (apt install ffmpeg)");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// An H.264 elementary stream of `frames` frames of a still `width`x`height`
/// gray picture, from Debian's ffmpeg and libx264: one IDR picture, then
/// P pictures that are all skipped macroblocks.
pub(crate) fn still_h264(width: u32, height: u32, frames: u32) -> Vec<u8> {
    let source = format!("color=c=gray:size={width}x{height}:rate=25");
    let frames = frames.to_string();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &source,
        "-frames:v",
        &frames,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        &frames,
        "-bf",
        "0",
        "-pix_fmt",
        "yuv420p",
        "-f",
        "h264",
        "-",
    ])
}

/// `stream` with every sequence parameter set declaring `width`x`height`
/// (multiples of 16), the rest of each kept bit for bit.
pub(crate) fn h264_with_size(stream: &[u8], width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for nal in nal_units(stream) {
        out.extend_from_slice(&[0, 0, 0, 1]);
        if nal.first().is_some_and(|b| b & 0x1f == 7) {
            let sps = rewrite_sps(&unescape(nal), width / 16 - 1, height / 16 - 1);
            out.extend_from_slice(&escape(&sps));
        } else {
            out.extend_from_slice(nal);
        }
    }
    out
}

/// `ivf` (a VP8 IVF file) with its first key frame declaring
/// `width`x`height` (at most 16383 each).
pub(crate) fn vp8_ivf_with_size(ivf: &[u8], width: u16, height: u16) -> Vec<u8> {
    let mut out = ivf.to_vec();
    // IVF header (32 bytes), frame header (12), VP8 frame tag (3), key
    // frame start code (3), then 14-bit width and height, little endian.
    let size_at = 32 + 12 + 3;
    assert_eq!(out[size_at..size_at + 3], [0x9d, 0x01, 0x2a], "a key frame");
    out[size_at + 3..size_at + 5].copy_from_slice(&width.to_le_bytes());
    out[size_at + 5..size_at + 7].copy_from_slice(&height.to_le_bytes());
    out
}

/// `ivf` (a profile 0 VP9 IVF file from libvpx) with its first key frame
/// declaring `width`x`height`.
pub(crate) fn vp9_ivf_with_size(ivf: &[u8], width: u16, height: u16) -> Vec<u8> {
    let mut out = ivf.to_vec();
    // The uncompressed header after the IVF headers: frame marker, profile,
    // flags (1 byte), the key frame sync code (3), colour space and range
    // (4 bits), then 16-bit width and height minus one, big endian.
    let frame = 32 + 12;
    assert_eq!(out[frame + 1..frame + 4], [0x49, 0x83, 0x42], "a key frame");
    let size = u64::from(width - 1) << 16 | u64::from(height - 1);
    let at = frame + 4;
    let mut word = u64::from_be_bytes(out[at..at + 8].try_into().expect("8 bytes"));
    let shift = 64 - 4 - 32;
    word = word & !(0xffff_ffff << shift) | size << shift;
    out[at..at + 8].copy_from_slice(&word.to_be_bytes());
    out
}

/// The NAL units of an Annex B stream, without their start codes.
fn nal_units(stream: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(k, &start)| {
            let end = starts.get(k + 1).map_or(stream.len(), |&next| next - 3);
            &stream[start..end]
        })
        .collect()
}

/// Drops emulation-prevention bytes (00 00 03 -> 00 00).
fn unescape(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out
}

/// Adds emulation-prevention bytes.
fn escape(rbsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rbsp.len() + 8);
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out
}

struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn bit(&mut self) -> u32 {
        let bit = (self.bytes[self.pos / 8] >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        u32::from(bit)
    }

    fn bits(&mut self, n: u32) -> u32 {
        (0..n).fold(0, |v, _| v << 1 | self.bit())
    }

    fn ue(&mut self) -> u32 {
        let mut zeros = 0;
        while self.bit() == 0 {
            zeros += 1;
        }
        (1 << zeros) - 1 + self.bits(zeros)
    }
}

#[derive(Default)]
struct BitWriter {
    bits: Vec<u8>,
}

impl BitWriter {
    fn bits(&mut self, n: u32, value: u32) {
        for i in (0..n).rev() {
            self.bits.push((value >> i & 1) as u8);
        }
    }

    fn ue(&mut self, value: u32) {
        let coded = value + 1;
        let len = 32 - coded.leading_zeros();
        self.bits(len - 1, 0);
        self.bits(len, coded);
    }

    /// The bytes, ended by a stop bit and zeros to the byte boundary.
    fn finish(mut self) -> Vec<u8> {
        self.bits.push(1);
        while !self.bits.len().is_multiple_of(8) {
            self.bits.push(0);
        }
        self.bits
            .chunks(8)
            .map(|byte| byte.iter().fold(0, |v, &b| v << 1 | b))
            .collect()
    }
}

/// An SPS (NAL header included, no emulation prevention) with
/// `pic_width_in_mbs_minus1` and `pic_height_in_map_units_minus1` replaced.
fn rewrite_sps(sps: &[u8], width_mbs_minus1: u32, height_units_minus1: u32) -> Vec<u8> {
    let mut r = BitReader { bytes: sps, pos: 0 };
    let mut w = BitWriter::default();
    let copy = |r: &mut BitReader<'_>, w: &mut BitWriter, n: u32| w.bits(n, r.bits(n));
    let copy_ue = |r: &mut BitReader<'_>, w: &mut BitWriter| {
        let v = r.ue();
        w.ue(v);
        v
    };
    copy(&mut r, &mut w, 8); // NAL header
    let profile = r.bits(8);
    w.bits(8, profile);
    copy(&mut r, &mut w, 16); // constraint flags, level
    copy_ue(&mut r, &mut w); // seq_parameter_set_id
    if [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135].contains(&profile) {
        if copy_ue(&mut r, &mut w) == 3 {
            copy(&mut r, &mut w, 1); // separate_colour_plane_flag
        }
        copy_ue(&mut r, &mut w); // bit_depth_luma_minus8
        copy_ue(&mut r, &mut w); // bit_depth_chroma_minus8
        copy(&mut r, &mut w, 1); // qpprime_y_zero_transform_bypass_flag
        assert_eq!(r.bit(), 0, "no scaling matrices in libx264's SPS");
        w.bits(1, 0);
    }
    copy_ue(&mut r, &mut w); // log2_max_frame_num_minus4
    let poc_type = copy_ue(&mut r, &mut w);
    assert_ne!(poc_type, 1, "libx264 writes POC type 0 or 2");
    if poc_type == 0 {
        copy_ue(&mut r, &mut w); // log2_max_pic_order_cnt_lsb_minus4
    }
    copy_ue(&mut r, &mut w); // max_num_ref_frames
    copy(&mut r, &mut w, 1); // gaps_in_frame_num_value_allowed_flag
    r.ue();
    r.ue();
    w.ue(width_mbs_minus1);
    w.ue(height_units_minus1);
    // The rest, up to the stop bit.
    let mut stop = sps.len() * 8 - 1;
    while (sps[stop / 8] >> (7 - stop % 8)) & 1 == 0 {
        stop -= 1;
    }
    while r.pos < stop {
        copy(&mut r, &mut w, 1);
    }
    w.finish()
}

#[test]
fn an_sps_rewritten_there_and_back_is_unchanged() {
    let stream = still_h264(64, 48, 2);
    let nals = nal_units(&stream);
    let sps = nals.iter().find(|n| n[0] & 0x1f == 7).expect("an SPS");
    let mut sps = unescape(sps);
    while sps.last() == Some(&0) {
        sps.pop();
    }
    let large = rewrite_sps(&sps, 999, 999);
    assert_ne!(large, sps);
    assert_eq!(rewrite_sps(&large, 64 / 16 - 1, 48 / 16 - 1), sps);
}
