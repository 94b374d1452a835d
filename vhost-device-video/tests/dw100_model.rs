//! `vhost-device-video --device dw100-model` driven as QEMU's
//! `imx8mp-dw100` drives it: jobs built from the registers the upstream
//! dw100 driver programs, checked against the reference engine; malformed
//! messages; one connection at a time.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vhost_device_video::engine::dewarp::{
    map_vertices, maps, Crop, DestImage, DewarpEngine, ImageGeometry, PixelFormat, ReferenceEngine,
    RemapParams, SourceImage, VertexMap,
};
use vhost_device_video::protocol::dewarp::status;
use vhost_device_video::protocol::dw100_model::{
    reg, JobHeader, MessageHeader, ResultHeader, MAX_MESSAGE, TYPE_RESULT,
};
use vm_memory::ByteValued;

mod common;
use common::Daemon;

const REFUSAL_LINE: &str = "refused a second connection";

/// The daemon as QEMU's `imx8mp-dw100` finds it, on a socket it binds.
fn daemon_at_path(socket: &Path, dir: &Path) -> Daemon {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vhost-device-video"));
    command.arg("--socket-path").arg(socket);
    let daemon = start_model(command, dir);
    // Logged once the socket listens (its file exists a moment before).
    daemon.wait_for_log("waiting for QEMU on", 1);
    daemon
}

fn start_model(mut command: Command, dir: &Path) -> Daemon {
    command.args(["--device", "dw100-model", "--dewarp-threads", "2"]);
    Daemon::start(command, dir, "info,vhost_device_video=debug")
}

/// The daemon's side of the picture: what QEMU sends and expects back.
struct Job {
    header: JobHeader,
    map: VertexMap,
    src: Vec<u8>,
    src_geometry: ImageGeometry,
    dst_geometry: ImageGeometry,
    crop: Crop,
}

/// `reg_format` of a pixel format in the driver's table, and whether it
/// takes the format's swap (UYVY, NV61, NV21).
fn register_format(format: PixelFormat) -> (u32, bool) {
    match format {
        PixelFormat::Nv16 => (0, false),
        PixelFormat::Nv61 => (0, true),
        PixelFormat::Yuyv => (1, false),
        PixelFormat::Uyvy => (1, true),
        PixelFormat::Nv12 => (2, false),
        PixelFormat::Nv21 => (2, true),
    }
}

/// Plane lengths on the socket: `stride * lines`, chroma 0 for packed.
fn plane_lengths(g: &ImageGeometry) -> [u32; 2] {
    let luma = g.luma_stride as u32 * g.height;
    if g.format.is_packed() {
        [luma, 0]
    } else {
        [luma, luma >> g.format.chroma_vertical_shift()]
    }
}

fn picture(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

impl Job {
    /// The registers `dw100_start` programs for tight source and
    /// destination pictures, the source crop `crop` and the map `map`.
    fn new(src: ImageGeometry, dst: ImageGeometry, crop: Crop, map: VertexMap) -> Self {
        let mut h = JobHeader::default();
        let (src_format, src_swap) = register_format(src.format);
        let (dst_format, dst_swap) = register_format(dst.format);
        let ctrl = 1 | (1 << 16) | (32 << 18) | (src_format << 4) | (dst_format << 6);
        h.set_reg(reg::DEWARP_CTRL, ctrl);
        h.set_reg(reg::BOUNDARY_PIXEL, 0x8080);
        h.set_reg(reg::SCALE_FACTOR, (crop.width << 7) / src.width);
        let q = (dst.width << 7) / src.width;
        let roi = |c: u32| ((c << 7) * q) >> 14;
        h.set_reg(reg::ROI_START, roi(crop.left) | (roi(crop.top) << 16));
        let mut swap = if src_swap { 1 } else { 0 };
        if dst_swap {
            swap |= if dst.format.is_packed() {
                1 << 8
            } else {
                0x10 << 8
            };
        }
        h.set_reg(reg::SWAP_CONTROL, swap);
        h.set_reg(reg::SRC_IMG_SIZE, src.width | (src.height << 16));
        h.set_reg(reg::SRC_IMG_STRIDE, src.luma_stride as u32);
        h.set_reg(reg::DST_IMG_SIZE, dst.width | (dst.height << 16));
        h.set_reg(reg::DST_IMG_STRIDE, dst.luma_stride as u32);
        h.set_reg(reg::MAP_LUT_SIZE, map.width() | (map.height() << 16));
        let [src_y, src_uv] = plane_lengths(&src);
        let [dst_y, dst_uv] = plane_lengths(&dst);
        h.set_reg(0x80, dst_y >> 4);
        h.set_reg(0x84, dst_uv >> 4);
        h.set_reg(0x70, 0xff00);
        h.set_reg(0x74, 1 << 31);
        h.map_length = (map.entries().len() as u32 * 4).into();
        h.src_y_length = src_y.into();
        h.src_uv_length = src_uv.into();
        h.dst_y_length = dst_y.into();
        h.dst_uv_length = dst_uv.into();
        Job {
            header: h,
            src: picture((src_y + src_uv) as usize, src.width ^ dst.height),
            map,
            src_geometry: src,
            dst_geometry: dst,
            crop,
        }
    }

    /// The `JOB` payload.
    fn payload(&self) -> Vec<u8> {
        let mut bytes = self.header.as_slice().to_vec();
        bytes.extend(self.map.to_le_bytes());
        bytes.extend(&self.src);
        bytes
    }

    /// The whole `JOB` message.
    fn message(&self, sequence: u32) -> Vec<u8> {
        let payload = self.payload();
        let mut bytes = MessageHeader::job(sequence, payload.len())
            .as_slice()
            .to_vec();
        bytes.extend(payload);
        bytes
    }

    /// What the reference engine makes of the job: both destination
    /// planes, stride padding zero.
    fn expected(&self) -> Vec<u8> {
        let (sg, dg) = (self.src_geometry, self.dst_geometry);
        let [src_y, _] = plane_lengths(&sg);
        let [dst_y, dst_uv] = plane_lengths(&dg);
        let (luma, chroma) = if sg.format.is_packed() {
            (&self.src[..], &[][..])
        } else {
            self.src.split_at(src_y as usize)
        };
        let mut out = vec![0u8; (dst_y + dst_uv) as usize];
        let (dl, dc) = out.split_at_mut(dst_y as usize);
        ReferenceEngine
            .remap(
                &RemapParams {
                    map: &self.map,
                    crop: self.crop,
                },
                &SourceImage {
                    geometry: sg,
                    luma,
                    chroma,
                },
                &mut DestImage {
                    geometry: dg,
                    luma: dl,
                    chroma: dc,
                },
            )
            .unwrap();
        out
    }
}

/// 640x480 NV12 to NV12 with the map the driver installs by default.
fn identity_job() -> Job {
    let g = ImageGeometry::packed(PixelFormat::Nv12, 640, 480);
    Job::new(
        g,
        g,
        Crop::full(640, 480),
        maps::driver_identity_map(640, 480, 640, 480),
    )
}

/// A `RESULT` as read from the socket.
struct Received {
    sequence: u32,
    result: ResultHeader,
    planes: Vec<u8>,
}

fn connect(socket: &Path) -> UnixStream {
    let stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
}

fn receive(stream: &mut UnixStream) -> Received {
    let mut header = MessageHeader::default();
    stream.read_exact(header.as_mut_slice()).unwrap();
    assert_eq!(header.magic.to_native().to_le_bytes(), *b"DWM1");
    assert_eq!(header.version.to_native(), 1);
    assert_eq!(header.kind.to_native(), TYPE_RESULT);
    let length = header.length.to_native() as usize;
    assert!(length >= 32, "RESULT of {length} bytes");
    let mut result = ResultHeader::default();
    stream.read_exact(result.as_mut_slice()).unwrap();
    let mut planes = vec![0u8; length - 32];
    stream.read_exact(&mut planes).unwrap();
    assert_eq!(result.reserved0.to_native(), 0);
    assert_eq!(result.reserved1.map(|r| r.to_native()), [0, 0]);
    Received {
        sequence: header.sequence.to_native(),
        result,
        planes,
    }
}

/// Sends `job` as message `sequence` and checks the result against the
/// reference engine.
fn run_ok(stream: &mut UnixStream, job: &Job, sequence: u32) {
    stream.write_all(&job.message(sequence)).unwrap();
    let got = receive(stream);
    assert_eq!(got.sequence, sequence);
    assert_eq!(got.result.status.to_native(), status::OK);
    let [y, uv] = plane_lengths(&job.dst_geometry);
    assert_eq!(got.result.dst_y_length.to_native(), y);
    assert_eq!(got.result.dst_uv_length.to_native(), uv);
    assert!(got.result.engine_time_ns.to_native() > 0);
    assert!(
        got.planes == job.expected(),
        "job {sequence}: destination differs from the reference engine"
    );
}

/// Sends `message` and returns the status of the result.
fn run_status(stream: &mut UnixStream, message: &[u8], sequence: u32) -> u32 {
    stream.write_all(message).unwrap();
    let got = receive(stream);
    assert_eq!(got.sequence, sequence);
    assert!(got.planes.is_empty());
    assert_eq!(
        (
            got.result.dst_y_length.to_native(),
            got.result.dst_uv_length.to_native()
        ),
        (0, 0)
    );
    got.result.status.to_native()
}

/// The daemon closes the connection: reading it hits end-of-file.
fn assert_closed(stream: &mut UnixStream) {
    let mut byte = [0u8; 1];
    assert_eq!(stream.read(&mut byte).unwrap(), 0, "connection not closed");
}

#[test]
fn jobs_the_driver_programs_match_the_reference_engine() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dw100.sock");
    let daemon = daemon_at_path(&socket, dir.path());
    let meta = fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let mut qemu = connect(&socket);
    let identity = identity_job();
    run_ok(&mut qemu, &identity, 1);
    // The driver's default map is the identity on these sizes.
    assert!(identity.expected() == identity.src);

    // YUYV to NV16, zoomed on a crop (q = 128: the crop origin comes back
    // exactly), through a fisheye correction map.
    let src = ImageGeometry::packed(PixelFormat::Yuyv, 640, 480);
    let dst = ImageGeometry::packed(PixelFormat::Nv16, 640, 480);
    let crop = Crop {
        left: 80,
        top: 60,
        width: 480,
        height: 360,
    };
    let fisheye = maps::fisheye_correction_map(640, 480, 640, 480, 0.3);
    run_ok(&mut qemu, &Job::new(src, dst, crop, fisheye), 2);

    // UYVY to NV21 at another size: both swaps.
    let src = ImageGeometry::packed(PixelFormat::Uyvy, 320, 240);
    let dst = ImageGeometry::packed(PixelFormat::Nv21, 176, 144);
    let map = maps::driver_identity_map(320, 240, 176, 144);
    assert_eq!(
        (map.width(), map.height()),
        (map_vertices(176), map_vertices(144))
    );
    run_ok(&mut qemu, &Job::new(src, dst, Crop::full(320, 240), map), 3);

    daemon.wait_for_log("dw100-model: job 3 done in ", 1);
}

#[test]
fn malformed_messages_get_their_answer_and_the_daemon_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dw100.sock");
    let daemon = daemon_at_path(&socket, dir.path());
    let mut qemu = connect(&socket);
    let good = identity_job();

    // Lengths that do not add up: ERR_MALFORMED, connection kept.
    let mut payload = good.payload();
    payload.pop();
    let mut message = MessageHeader::job(10, payload.len()).as_slice().to_vec();
    message.extend(&payload);
    assert_eq!(run_status(&mut qemu, &message, 10), status::ERR_MALFORMED);
    // A payload too short for the job header.
    let mut message = MessageHeader::job(11, 100).as_slice().to_vec();
    message.extend([0u8; 100]);
    assert_eq!(run_status(&mut qemu, &message, 11), status::ERR_MALFORMED);
    // Lengths that disagree with the registers.
    let mut job = identity_job();
    job.header.dst_uv_length = 0.into();
    assert_eq!(
        run_status(&mut qemu, &job.message(12), 12),
        status::ERR_MALFORMED
    );
    // Registers refused: format 3, the map's dimensions.
    let mut job = identity_job();
    job.header.set_reg(reg::DEWARP_CTRL, 0x30);
    assert_eq!(
        run_status(&mut qemu, &job.message(13), 13),
        status::ERR_UNSUPPORTED
    );
    let mut job = identity_job();
    job.header.set_reg(reg::MAP_LUT_SIZE, 40 | (31 << 16));
    job.map = maps::driver_identity_map(640, 480, 624, 480);
    job.header.map_length = (40 * 31 * 4).into();
    assert_eq!(
        run_status(&mut qemu, &job.message(14), 14),
        status::ERR_INVALID_MAP
    );
    run_ok(&mut qemu, &good, 15);

    // Bad magic: the framing is lost, the daemon hangs up.
    let mut message = good.message(16);
    message[0] ^= 0xff;
    qemu.write_all(&message[..16]).unwrap();
    assert_closed(&mut qemu);
    daemon.wait_for_log("framing lost; closing the connection", 1);

    // A length above MAX_MESSAGE: hung up before any payload is read.
    let mut qemu = connect(&socket);
    let too_long = MessageHeader::job(17, MAX_MESSAGE + 1);
    qemu.write_all(too_long.as_slice()).unwrap();
    assert_closed(&mut qemu);
    // A RESULT sent to the daemon.
    let mut qemu = connect(&socket);
    qemu.write_all(MessageHeader::result(18, 0).as_slice())
        .unwrap();
    assert_closed(&mut qemu);

    // A peer gone mid-header and mid-payload.
    let message = good.message(19);
    for cut in [7, 16 + 176 + 1000] {
        let mut qemu = connect(&socket);
        qemu.write_all(&message[..cut]).unwrap();
    }

    let mut qemu = connect(&socket);
    run_ok(&mut qemu, &good, 20);
    daemon.wait_for_log("QEMU connected", 6);
    assert_eq!(daemon.log().matches(REFUSAL_LINE).count(), 0);
}

#[test]
fn a_second_connection_is_refused_while_one_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dw100.sock");
    let daemon = daemon_at_path(&socket, dir.path());
    let job = identity_job();

    let mut first = connect(&socket);
    run_ok(&mut first, &job, 1);
    let mut second = connect(&socket);
    assert_closed(&mut second);
    daemon.wait_for_log(REFUSAL_LINE, 1);
    run_ok(&mut first, &job, 2);

    // Once the first leaves, the next is served.
    drop(first);
    daemon.wait_for_log("QEMU disconnected", 1);
    let mut next = connect(&socket);
    run_ok(&mut next, &job, 3);
    assert_eq!(daemon.log().matches(REFUSAL_LINE).count(), 1);
}

#[test]
fn serves_an_inherited_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dw100.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let fd = listener.as_raw_fd();
    let mut command = Command::new(env!("CARGO_BIN_EXE_vhost-device-video"));
    command.args(["--socket-fd", "3"]);
    // SAFETY: dup2 and fcntl are async-signal-safe; the child gets the
    // listening socket as descriptor 3, without close-on-exec (which dup2
    // does not clear when the socket already is descriptor 3).
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let _daemon = start_model(command, dir.path());
    drop(listener);
    let mut qemu = connect(&socket);
    run_ok(&mut qemu, &identity_job(), 1);
}
