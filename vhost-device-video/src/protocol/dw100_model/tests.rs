//! Register decoding against what the upstream dw100 driver programs
//! (`dw100_start` and the `dw100_hw_set_*` helpers it calls), and every
//! refused case with its status.

use super::*;
use crate::protocol::dewarp::{map_vertices, WireCrop, WireGeometry};

/// An entry of the driver's format table.
#[derive(Clone, Copy, Debug)]
struct DriverFormat {
    fourcc: &'static [u8; 4],
    /// The single-plane layout the daemon serves it as.
    layout: WireFormat,
    reg_format: u32,
    reg_swap_uv: bool,
    /// On the OUTPUT queue (a source format) too, not only on CAPTURE.
    output: bool,
}

const fn format(
    fourcc: &'static [u8; 4],
    layout: WireFormat,
    reg_format: u32,
    reg_swap_uv: bool,
    output: bool,
) -> DriverFormat {
    DriverFormat {
        fourcc,
        layout,
        reg_format,
        reg_swap_uv,
        output,
    }
}

/// `formats[]` of dw100.c.
const DRIVER_FORMATS: [DriverFormat; 10] = [
    format(b"NV16", WireFormat::Nv16, 0, false, true),
    format(b"NM16", WireFormat::Nv16, 0, false, true),
    format(b"NV61", WireFormat::Nv61, 0, true, false),
    format(b"NM61", WireFormat::Nv61, 0, true, false),
    format(b"YUYV", WireFormat::Yuyv, 1, false, true),
    format(b"UYVY", WireFormat::Uyvy, 1, true, true),
    format(b"NV12", WireFormat::Nv12, 2, false, true),
    format(b"NM12", WireFormat::Nv12, 2, false, true),
    format(b"NV21", WireFormat::Nv21, 2, true, false),
    format(b"NM21", WireFormat::Nv21, 2, true, false),
];

/// One queue's format as the driver holds it (`v4l2_fill_pixfmt_mp`'s
/// tight strides).
#[derive(Clone, Copy, Debug)]
struct Queue {
    fmt: DriverFormat,
    width: u32,
    height: u32,
}

impl Queue {
    fn stride(&self) -> u32 {
        self.width * if self.fmt.reg_format == 1 { 2 } else { 1 }
    }

    fn planes(&self) -> u32 {
        if self.fmt.fourcc[1] == b'M' {
            2
        } else {
            1
        }
    }

    /// `plane_fmt[0].sizeimage`, `plane_fmt[1].sizeimage`.
    fn sizeimage(&self) -> [u32; 2] {
        let luma = self.stride() * self.height;
        let chroma = match self.fmt.reg_format {
            1 => 0,
            0 => luma,
            _ => luma / 2,
        };
        if self.planes() == 2 {
            [luma, chroma]
        } else {
            [luma + chroma, 0]
        }
    }

    /// Plane lengths on the socket: `stride * lines` each.
    fn socket_lengths(&self) -> [u32; 2] {
        let luma = self.stride() * self.height;
        match self.fmt.reg_format {
            1 => [luma, 0],
            0 => [luma, luma],
            _ => [luma, luma / 2],
        }
    }
}

/// A source crop rectangle `left, top, width, height`.
type Rect = [u32; 4];

/// The registers and lengths of the job `dw100_start` programs, as the
/// model snapshots them when the bus is enabled.
fn driver_job(src: Queue, dst: Queue, crop: Rect) -> (JobHeader, usize) {
    let mut h = JobHeader::default();
    // dw100_hw_init_ctrl: enable, prefetch threshold 32, calculation mode.
    let mut ctrl = 1 | (32 << 18) | (1 << 16);
    h.set_reg(reg::BOUNDARY_PIXEL, 128 | (128 << 8));
    // dw100_hw_set_src_crop.
    let [left, top, width, _] = crop;
    h.set_reg(reg::SCALE_FACTOR, (width << 7) / src.width);
    let qscale = (dst.width << 7) / src.width;
    let roi = |c: u32| ((c << 7) * qscale) >> 14;
    h.set_reg(
        reg::ROI_START,
        (roi(left) & 0x1fff) | ((roi(top) & 0x1fff) << 16),
    );
    // dw100_hw_set_source.
    ctrl = (ctrl & !0x30) | (src.fmt.reg_format << 4);
    let mut swap = 0;
    if src.fmt.reg_swap_uv && src.fmt.reg_format == reg::FORMAT_YUV422_PACKED {
        swap |= 1;
    }
    h.set_reg(reg::SRC_IMG_SIZE, src.width | (src.height << 16));
    h.set_reg(reg::SRC_IMG_STRIDE, src.stride());
    h.set_reg(0x10, 0x4000_0000 >> 4);
    h.set_reg(0x14, (0x4000_0000 + src.stride() * src.height) >> 4);
    // dw100_hw_set_destination.
    ctrl = (ctrl & !0xc0) | (dst.fmt.reg_format << 6);
    let input_swaps_uv = src.fmt.reg_swap_uv && src.fmt.reg_format != reg::FORMAT_YUV422_PACKED;
    if dst.fmt.reg_swap_uv ^ input_swaps_uv {
        swap |= if dst.fmt.reg_format == reg::FORMAT_YUV422_PACKED {
            1 << 8
        } else {
            0x10 << 8
        };
    }
    h.set_reg(reg::SWAP_CONTROL, swap);
    h.set_reg(reg::DST_IMG_SIZE, dst.width | (dst.height << 16));
    h.set_reg(reg::DST_IMG_STRIDE, dst.stride());
    h.set_reg(0x38, 0x5000_0000 >> 4);
    h.set_reg(
        0x3c,
        (0x5000_0000 + (dst.stride() * dst.height).next_multiple_of(16)) >> 4,
    );
    let [size_y, size_uv] = match dst.sizeimage() {
        [all, 0] if dst.fmt.reg_format == reg::FORMAT_YUV420_SP => [all, all / 2],
        [all, 0] => [all, all],
        planes => planes,
    };
    h.set_reg(0x80, size_y >> 4);
    h.set_reg(0x84, size_uv >> 4);
    // dw100_hw_set_mapping, dw100_hw_enable_irq, start, bus enable.
    let (mw, mh) = (map_vertices(dst.width), map_vertices(dst.height));
    h.set_reg(0x08, 0x6000_0000 >> 4);
    h.set_reg(reg::MAP_LUT_SIZE, mw | (mh << 16));
    h.set_reg(0x70, 0xff00);
    h.set_reg(reg::DEWARP_CTRL, ctrl);
    h.set_reg(0x74, 1 << 31);

    let [src_y, src_uv] = src.socket_lengths();
    let [dst_y, dst_uv] = dst.socket_lengths();
    h.map_length = (mw * mh * 4).into();
    h.src_y_length = src_y.into();
    h.src_uv_length = src_uv.into();
    h.dst_y_length = dst_y.into();
    h.dst_uv_length = dst_uv.into();
    let payload = 176 + (mw * mh * 4 + src_y + src_uv) as usize;
    (h, payload)
}

fn queue(fourcc: &[u8; 4], width: u32, height: u32) -> Queue {
    let fmt = *DRIVER_FORMATS.iter().find(|f| f.fourcc == fourcc).unwrap();
    Queue { fmt, width, height }
}

fn full(q: Queue) -> Rect {
    [0, 0, q.width, q.height]
}

#[test]
fn every_format_pair_the_driver_programs_decodes_to_its_formats() {
    let mut pairs = 0;
    for src_fmt in DRIVER_FORMATS.iter().filter(|f| f.output) {
        for dst_fmt in &DRIVER_FORMATS {
            let src = Queue {
                fmt: *src_fmt,
                width: 640,
                height: 480,
            };
            let dst = Queue {
                fmt: *dst_fmt,
                width: 320,
                height: 248,
            };
            let (header, payload) = driver_job(src, dst, full(src));
            let what = format!(
                "{} -> {}",
                String::from_utf8_lossy(src_fmt.fourcc),
                String::from_utf8_lossy(dst_fmt.fourcc)
            );
            let checked = header
                .check(payload)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let job = checked.job;
            assert_eq!(job.src.geometry.format, src_fmt.layout, "{what}");
            assert_eq!(job.dst.geometry.format, dst_fmt.layout, "{what}");
            // One stride register for both components.
            let geometry = |q: Queue| WireGeometry {
                format: q.fmt.layout,
                width: q.width,
                height: q.height,
                luma_stride: q.stride() as usize,
                chroma_stride: q.stride() as usize,
            };
            assert_eq!(job.src.geometry, geometry(src), "{what}");
            assert_eq!(job.dst.geometry, geometry(dst), "{what}");
            let full = WireCrop {
                left: 0,
                top: 0,
                width: 640,
                height: 480,
            };
            assert_eq!(job.crop, full, "{what}");
            assert_eq!((job.map_width, job.map_height), (21, 17), "{what}");
            let lengths = |q: Queue| q.socket_lengths().map(|l| l as usize);
            assert_eq!(checked.src_lengths, lengths(src), "{what}");
            assert_eq!(checked.dst_lengths, lengths(dst), "{what}");
            // Planes arrive back to back: chroma right after the luma plane.
            if !src_fmt.layout.is_packed() {
                assert_eq!(job.src.chroma_start, checked.src_lengths[0], "{what}");
            }
            assert_eq!(job.dst.total_size, checked.dst_length(), "{what}");
            pairs += 1;
        }
    }
    assert_eq!(pairs, 60);
}

/// The driver's `dw100_s_selection` for a requested crop (flags 0): the
/// rectangle it keeps.
fn driver_selection(frame: (u32, u32), request: Rect) -> Rect {
    let (wframe, hframe) = frame;
    let [left, top, width, height] = request;
    let top = top.min(hframe - 144);
    let left = left.min(wframe - 176);
    let height = height.clamp(144, hframe - top);
    let width = width.clamp(176, wframe - left);
    let qx = (width << 16) / wframe;
    let qy = (height << 16) / hframe;
    let q = if qx == qy { qx } else { (qx + qy) / 2 };
    let w = (((u64::from(wframe) << 16) * u64::from(q)) >> 32) as u32;
    let h = (((u64::from(hframe) << 16) * u64::from(q)) >> 32) as u32;
    let x = (i64::from(left) + (i64::from(width) - i64::from(w)) / 2).max(0) as u32;
    let y = (i64::from(top) + (i64::from(height) - i64::from(h)) / 2).max(0) as u32;
    [x.min(wframe - w), y.min(hframe - h), w, h]
}

#[test]
fn every_crop_the_driver_selects_decodes_inside_the_source_with_its_scale() {
    let sizes = [
        (176, 144),
        (256, 184),
        (640, 480),
        (1920, 1080),
        (4096, 3072),
    ];
    let mut jobs = 0;
    for &(sw, sh) in &sizes {
        for &(dw, dh) in &sizes {
            for step in 0..=16 {
                let width = 176 + (sw - 176) * step / 16;
                let height = 144 + (sh - 144) * step / 16;
                for (left, top) in [(0, 0), (sw / 3, sh / 5), (sw, sh)] {
                    let rect = driver_selection((sw, sh), [left, top, width, height]);
                    let (src, dst) = (queue(b"NV12", sw, sh), queue(b"YUYV", dw, dh));
                    let (header, payload) = driver_job(src, dst, rect);
                    let what = format!("{sw}x{sh} -> {dw}x{dh}, crop {rect:?}");
                    let job = header
                        .check(payload)
                        .unwrap_or_else(|e| panic!("{what}: {e}"))
                        .job;
                    // The engine's scale: crop width over source width, UQ1.7.
                    assert_eq!(
                        (job.crop.width << 7) / sw,
                        header.reg(reg::SCALE_FACTOR),
                        "{what}"
                    );
                    assert!(
                        job.crop.left <= rect[0] && job.crop.top <= rect[1],
                        "{what}"
                    );
                    jobs += 1;
                }
            }
        }
    }
    assert_eq!(jobs, 25 * 17 * 3);
}

/// A crop whose height the scale factor alone would push one line past the
/// source: the driver keeps 93 of 184 lines at scale 65/128 (93.4 lines).
#[test]
fn crop_height_stays_inside_the_source() {
    let (src, dst) = (queue(b"NV12", 256, 184), queue(b"NV12", 256, 184));
    let rect = [126, 91, 130, 93];
    let (header, payload) = driver_job(src, dst, rect);
    assert_eq!(header.reg(reg::SCALE_FACTOR), 65);
    let crop = header.check(payload).unwrap().job.crop;
    assert_eq!(
        crop,
        WireCrop {
            left: 126,
            top: 91,
            width: 130,
            height: 93
        }
    );
}

#[test]
fn roi_start_round_trips_through_the_drivers_arithmetic() {
    let widths = [176, 256, 320, 640, 1000, 1920, 4096];
    for &src_width in &widths {
        for &dst_width in &widths {
            let q = (dst_width << 7) / src_width;
            let roi_of = |left: u32| ((left << 7) * q) >> 14;
            for left in 0..=src_width - 176 {
                let roi = roi_of(left);
                let origin = crop_origin(roi, q);
                let what = format!("{src_width} -> {dst_width}, left {left}, q {q}");
                assert_eq!(roi_of(origin), roi, "{what}");
                assert!(origin <= left, "{what}");
                // Fewer than 128 / q pixels left of the driver's crop: none
                // when the destination is at least as wide as the source,
                // at most one when it is at least half as wide.
                assert!((left - origin) * q < 128, "{what}: origin {origin}");
                if q >= 128 {
                    assert_eq!(origin, left, "{what}");
                }
                if q >= 64 {
                    assert!(left - origin <= 1, "{what}");
                }
            }
        }
    }
}

/// A good NV12 -> NV12 job and its payload length.
fn good() -> (JobHeader, usize) {
    let q = queue(b"NV12", 640, 480);
    driver_job(q, q, full(q))
}

#[test]
fn every_bad_register_or_length_has_its_status() {
    type Corruption = Box<dyn Fn(&mut JobHeader, &mut usize)>;
    let set = |offset: usize, value: u32| -> Corruption {
        Box::new(move |h: &mut JobHeader, _: &mut usize| h.set_reg(offset, value))
    };
    let edit = |offset: usize, f: fn(u32) -> u32| -> Corruption {
        Box::new(move |h: &mut JobHeader, _: &mut usize| h.set_reg(offset, f(h.reg(offset))))
    };
    let (good_header, _) = good();
    let ctrl = good_header.reg(reg::DEWARP_CTRL);
    let mut cases: Vec<(&str, Corruption, u32)> = vec![
        (
            "reserved",
            Box::new(|h, _| h.reserved[2] = 1.into()),
            status::ERR_MALFORMED,
        ),
        (
            "payload one byte short",
            Box::new(|_, p| *p -= 1),
            status::ERR_MALFORMED,
        ),
        (
            "payload one byte long",
            Box::new(|_, p| *p += 1),
            status::ERR_MALFORMED,
        ),
        (
            "source format 3",
            set(reg::DEWARP_CTRL, ctrl | 0x30),
            status::ERR_UNSUPPORTED,
        ),
        (
            "destination format 3",
            set(reg::DEWARP_CTRL, ctrl | 0xc0),
            status::ERR_UNSUPPORTED,
        ),
        (
            "scale 0",
            set(reg::SCALE_FACTOR, 0),
            status::ERR_UNSUPPORTED,
        ),
        (
            "scale 129",
            set(reg::SCALE_FACTOR, 129),
            status::ERR_UNSUPPORTED,
        ),
        (
            "scale 2^31",
            set(reg::SCALE_FACTOR, 1 << 31),
            status::ERR_UNSUPPORTED,
        ),
        (
            "boundary white",
            set(reg::BOUNDARY_PIXEL, 0xff8080),
            status::ERR_UNSUPPORTED,
        ),
        (
            "boundary U",
            set(reg::BOUNDARY_PIXEL, 0x8180),
            status::ERR_UNSUPPORTED,
        ),
        (
            "boundary 0",
            set(reg::BOUNDARY_PIXEL, 0),
            status::ERR_UNSUPPORTED,
        ),
        (
            "source too narrow",
            set(reg::SRC_IMG_SIZE, (480 << 16) | 168),
            status::ERR_UNSUPPORTED,
        ),
        (
            "source too wide",
            set(reg::SRC_IMG_SIZE, (480 << 16) | 4104),
            status::ERR_UNSUPPORTED,
        ),
        (
            "source too tall",
            set(reg::SRC_IMG_SIZE, (3080 << 16) | 640),
            status::ERR_UNSUPPORTED,
        ),
        (
            "source width 0",
            set(reg::SRC_IMG_SIZE, 480 << 16),
            status::ERR_UNSUPPORTED,
        ),
        (
            "source width not /8",
            set(reg::SRC_IMG_SIZE, (480 << 16) | 644),
            status::ERR_UNSUPPORTED,
        ),
        (
            "destination height not /8",
            set(reg::DST_IMG_SIZE, (484 << 16) | 640),
            status::ERR_UNSUPPORTED,
        ),
        (
            "destination too short",
            set(reg::DST_IMG_SIZE, (136 << 16) | 640),
            status::ERR_UNSUPPORTED,
        ),
        (
            "destination 0x0",
            set(reg::DST_IMG_SIZE, 0),
            status::ERR_UNSUPPORTED,
        ),
        (
            "source stride below a line",
            set(reg::SRC_IMG_STRIDE, 639),
            status::ERR_UNSUPPORTED,
        ),
        (
            "source stride above 16384",
            set(reg::SRC_IMG_STRIDE, 16392),
            status::ERR_UNSUPPORTED,
        ),
        (
            "destination stride 0",
            set(reg::DST_IMG_STRIDE, 0),
            status::ERR_UNSUPPORTED,
        ),
        (
            "destination stride huge",
            set(reg::DST_IMG_STRIDE, u32::MAX),
            status::ERR_UNSUPPORTED,
        ),
        (
            "crop starts right of the source",
            set(reg::ROI_START, 700),
            status::ERR_UNSUPPORTED,
        ),
        (
            "crop starts below the source",
            set(reg::ROI_START, 480 << 16),
            status::ERR_UNSUPPORTED,
        ),
        (
            "crop ends right of the source",
            set(reg::ROI_START, 1),
            status::ERR_UNSUPPORTED,
        ),
        (
            "map one column short",
            set(reg::MAP_LUT_SIZE, (31 << 16) | 40),
            status::ERR_INVALID_MAP,
        ),
        (
            "map one row long",
            set(reg::MAP_LUT_SIZE, (32 << 16) | 41),
            status::ERR_INVALID_MAP,
        ),
        (
            "map 0x0",
            set(reg::MAP_LUT_SIZE, 0),
            status::ERR_INVALID_MAP,
        ),
    ];
    for bit in 8..12 {
        cases.push((
            "control bit 8-11",
            set(reg::DEWARP_CTRL, ctrl | 1 << bit),
            status::ERR_UNSUPPORTED,
        ));
    }
    // Every swap bit but the documented ones: NV12 -> NV12 takes only the
    // destination UV byte swap (NV21).
    for bit in (0..32).filter(|&b| b != 12) {
        cases.push((
            "swap bit",
            set(reg::SWAP_CONTROL, 1 << bit),
            status::ERR_UNSUPPORTED,
        ));
    }
    // Lengths that disagree with the registers, the payload adding up.
    for (name, field) in [("map_length", 0), ("src_y_length", 1), ("src_uv_length", 2)] {
        let shift: Corruption = Box::new(move |h, p| {
            let lengths = [&mut h.map_length, &mut h.src_y_length, &mut h.src_uv_length];
            let l = lengths[field].to_native();
            *lengths[field] = (l + 16).into();
            *p += 16;
        });
        cases.push((name, shift, status::ERR_MALFORMED));
    }
    cases.push((
        "dst_y_length",
        Box::new(|h, _| h.dst_y_length = (640 * 479).into()),
        status::ERR_MALFORMED,
    ));
    cases.push((
        "dst_uv_length",
        Box::new(|h, _| h.dst_uv_length = 0.into()),
        status::ERR_MALFORMED,
    ));
    cases.push((
        "source 4:2:2 sent as 4:2:0",
        edit(reg::DEWARP_CTRL, |c| c & !0x30),
        status::ERR_MALFORMED,
    ));
    for (name, corrupt, code) in &cases {
        let (mut header, mut payload) = good();
        corrupt(&mut header, &mut payload);
        let err = header.check(payload).unwrap_err();
        assert_eq!(err.status(), *code, "{name}: {err}");
        assert!(!err.is_framing(), "{name}");
    }
    let (header, payload) = good();
    assert!(header.check(payload).is_ok());
}

#[test]
fn the_swaps_the_driver_never_programs_are_refused() {
    // Source Y swap on a semi-planar source, destination Y swap on a
    // semi-planar destination, UV swap on a packed one.
    let cases = [
        (b"NV16", b"NV16", 1u32),
        (b"NV12", b"NV12", 1 << 8),
        (b"YUYV", b"YUYV", 0x10 << 8),
        (b"UYVY", b"UYVY", 1 | 0x10),
    ];
    for (src, dst, swap) in cases {
        let (src, dst) = (queue(src, 640, 480), queue(dst, 640, 480));
        let (mut header, payload) = driver_job(src, dst, full(src));
        header.set_reg(reg::SWAP_CONTROL, swap);
        let err = header.check(payload).unwrap_err();
        assert!(matches!(err, MessageError::Swap { .. }), "{err}");
        assert_eq!(err.status(), status::ERR_UNSUPPORTED);
    }
}

#[test]
fn framing_needs_magic_version_job_type_and_a_bounded_length() {
    let good = MessageHeader::job(7, 1000);
    assert_eq!(good.check_job(), Ok(1000));
    assert_eq!(
        MessageHeader::job(7, MAX_MESSAGE).check_job(),
        Ok(MAX_MESSAGE)
    );
    let cases = [
        MessageHeader {
            magic: 0x314d_5745.into(),
            ..good
        },
        MessageHeader {
            version: 2.into(),
            ..good
        },
        MessageHeader::result(7, 1000),
        MessageHeader {
            kind: 0.into(),
            ..good
        },
        MessageHeader::job(7, MAX_MESSAGE + 1),
        MessageHeader {
            length: u32::MAX.into(),
            ..good
        },
    ];
    for header in cases {
        let err = header.check_job().unwrap_err();
        assert!(err.is_framing(), "{err}");
    }
    assert_eq!(good.as_slice()[..4], *b"DWM1");
    assert_eq!(MAX_MESSAGE, 176 + 257 * 193 * 4 + 2 * (64 << 20));
}

#[test]
fn the_largest_job_fits_the_largest_message() {
    let (src, dst) = (queue(b"NV16", 4096, 3072), queue(b"NV16", 4096, 3072));
    let (mut header, _) = driver_job(src, dst, full(src));
    header.set_reg(reg::SRC_IMG_STRIDE, 16384);
    let lengths = [16384 * 3072; 2];
    header.src_y_length = lengths[0].into();
    header.src_uv_length = lengths[1].into();
    let payload = 176 + 257 * 193 * 4 + 2 * 16384 * 3072;
    assert!(payload <= MAX_MESSAGE);
    header.check(payload).unwrap();
}
