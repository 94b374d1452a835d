#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets into seeds/<target>/.

Seeds are small valid inputs the fuzzers start from: well-formed requests,
a valid dewarp job, DW100 model jobs, a decoder stream's life and short real
bitstreams.
Bitstreams come from Debian's ffmpeg (libx264, libx265, libvpx, libaom).
Run from this directory: ./make_seeds.py
"""

import os
import struct
import subprocess
import tempfile

SEEDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")

# virtio-video v3 (see docs/protocol-decoder.md).
STREAM_CREATE, STREAM_DESTROY, STREAM_DRAIN = 0x101, 0x102, 0x103
RESOURCE_CREATE, RESOURCE_QUEUE, RESOURCE_DESTROY_ALL = 0x104, 0x105, 0x106
QUEUE_CLEAR, GET_PARAMS, SET_PARAMS = 0x107, 0x108, 0x109
QUERY_CAPABILITY, QUERY_CONTROL, GET_CONTROL, SET_CONTROL = 0x100, 0x10A, 0x10B, 0x10C
GET_PARAMS_EXT, SET_PARAMS_EXT = 0x10D, 0x10E
INPUT, OUTPUT = 0x100, 0x101
H264, HEVC, VP8, VP9, AV1, NV12 = 0x1002, 0x1003, 0x1004, 0x1005, 0x1007, 3

# Fake guest of the chain targets (src/fake_guest/records.rs).
DATA_START, MEM_SIZE = 1 << 20, 4 << 20
WRITABLE_CLASSES = [0, 4, 8, 24, 64, 256, 4096]


def request(type_, stream_id, body=b""):
    return struct.pack("<II", type_, stream_id) + body


def stream_create(coded):
    return struct.pack("<IIII", 0, 0, coded, 0) + bytes(64)


def resource_create(queue, resource_id, entries):
    body = struct.pack("<IIII", queue, resource_id, 1, 1)
    body += struct.pack("<8I", *([0] * 8))
    body += struct.pack("<8I", len(entries), *([0] * 7))
    for addr, length in entries:
        body += struct.pack("<QII", addr, length, 0)
    return body


def resource_queue(queue, resource_id, timestamp, size):
    return struct.pack("<IIQI8II", queue, resource_id, timestamp, 1, size, *([0] * 7), 0)


def params(queue, fmt, width, height):
    crop = struct.pack("<4I", 0, 0, width, height)
    planes = struct.pack("<16I", *([0] * 16))
    return struct.pack("<6I", queue, fmt, width, height, 0, 0) + crop + struct.pack("<II", 30, 1) + planes


def queue_body(queue):
    return struct.pack("<II", queue, 0)


def write(target, name, data):
    directory = os.path.join(SEEDS, target)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def bitstream(encoder, container, extra=()):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "stream")
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi",
             "-i", "testsrc=size=64x48:rate=10", "-frames:v", "4",
             "-pix_fmt", "yuv420p", "-c:v", encoder, "-g", "2", *extra,
             "-f", container, out],
            check=True)
        with open(out, "rb") as f:
            return f.read()


def ivf_frames(data):
    """The frames of an IVF file."""
    header_len = struct.unpack_from("<H", data, 6)[0]
    pos, frames = header_len, []
    while pos + 12 <= len(data):
        size = struct.unpack_from("<I", data, pos)[0]
        frames.append(data[pos + 12:pos + 12 + size])
        pos += 12 + size
    return frames


class Chains:
    """Records for the chain targets, tracking where the fake guest puts
    each readable buffer (its allocator is deterministic)."""

    def __init__(self):
        self.data = b""
        self.next = DATA_START

    def alloc(self, length):
        if self.next + length > MEM_SIZE:
            self.next = DATA_START
        addr = self.next
        self.next = (addr + max(length, 1) + 63) & ~63
        return addr

    def add(self, payload, writable, second_queue=False):
        """One chain: `payload` in one readable buffer, then `writable` bytes."""
        shape = (1 if payload else 0) | (0x20 if second_queue else 0)
        if writable in WRITABLE_CLASSES:
            cls, size = WRITABLE_CLASSES.index(writable), b""
        else:
            cls, size = 7, struct.pack("<I", writable)
        self.data += bytes([shape, cls, 0]) + size + struct.pack("<H", len(payload)) + payload
        addr = self.alloc(len(payload)) if payload else None
        if writable:
            self.alloc(writable)
        return addr


def virtio_video_requests(streams):
    requests = {
        "query_capability": request(QUERY_CAPABILITY, 0, queue_body(INPUT)),
        "stream_create": request(STREAM_CREATE, 1, stream_create(H264)),
        "resource_create": request(RESOURCE_CREATE, 1, resource_create(OUTPUT, 1, [(0x200000, 4096), (0x201000, 2048)])),
        "resource_queue": request(RESOURCE_QUEUE, 1, resource_queue(INPUT, 1, 7, 1024)),
        "get_params_ext": request(GET_PARAMS_EXT, 1, queue_body(OUTPUT)),
        "set_params": request(SET_PARAMS, 1, params(OUTPUT, NV12, 64, 48)),
        "set_params_ext": request(SET_PARAMS_EXT, 1, params(OUTPUT, NV12, 64, 48) + struct.pack("<II", 0, 0)),
        "query_control": request(QUERY_CONTROL, 0, struct.pack("<IIII", 2, 0, H264, 0)),
        "get_control": request(GET_CONTROL, 1, struct.pack("<II", 2, 0)),
        "set_control": request(SET_CONTROL, 1, struct.pack("<IIII", 3, 0, 40, 0)),
        "queue_clear": request(QUEUE_CLEAR, 1, queue_body(INPUT)),
        "destroy_all": request(RESOURCE_DESTROY_ALL, 1, queue_body(OUTPUT)),
        "drain": request(STREAM_DRAIN, 1),
        "destroy": request(STREAM_DESTROY, 1),
    }
    for name, data in requests.items():
        write("virtio_video_request", name, data)

    h264 = streams["h264"]
    life = Chains()
    coded = life.add(h264, 0)
    life.add(request(STREAM_CREATE, 1, stream_create(H264)), 8)
    life.add(request(RESOURCE_CREATE, 1, resource_create(INPUT, 1, [(coded, len(h264))])), 8)
    life.add(request(RESOURCE_CREATE, 1, resource_create(OUTPUT, 2, [(0x300000, 4608)])), 8)
    life.add(b"", 8, second_queue=True)
    life.add(request(SET_PARAMS_EXT, 1, params(OUTPUT, NV12, 64, 48) + struct.pack("<II", 0, 0)), 8)
    life.add(request(RESOURCE_QUEUE, 1, resource_queue(OUTPUT, 2, 0, 0)), 24)
    life.add(request(RESOURCE_QUEUE, 1, resource_queue(INPUT, 1, 1, len(h264))), 24)
    life.add(request(GET_PARAMS_EXT, 1, queue_body(OUTPUT)), 256)
    life.add(request(STREAM_DRAIN, 1), 8)
    life.add(request(QUEUE_CLEAR, 1, queue_body(OUTPUT)), 8)
    life.add(request(STREAM_DESTROY, 1), 8)
    life.add(request(RESOURCE_QUEUE, 1, resource_queue(INPUT, 1, 2, 16)), 24)
    write("decoder_chains", "stream_life", life.data)


def dewarp(width=176, height=144):
    luma, chroma = width * height, width * height // 2
    fourcc = struct.unpack("<I", b"NV12")[0]
    image = struct.pack("<10I", fourcc, width, height, 1, width, width, luma + chroma, 0, luma, 0)
    map_w, map_h = -(-width // 16) + 1, -(-height // 16) + 1
    header = struct.pack("<6I", 9, 1, 1, 1, map_w, map_h)
    header += struct.pack("<4I", 0, 0, width, height) + image + image + struct.pack("<II", 0, 0)
    vertex_map = b"".join(
        struct.pack("<I", (min(y * 16, height) * 16) << 16 | min(x * 16, width) * 16)
        for y in range(map_h) for x in range(map_w))
    source = bytes((i * 7) & 0xff for i in range(luma + chroma))
    write("dewarp_job", "identity", header + struct.pack("<II", len(header) + len(vertex_map) + len(source), 16 + luma + chroma) + vertex_map)
    job = Chains()
    job.add(header + vertex_map + source, 16 + luma + chroma)
    write("dewarper_chains", "identity", job.data)


def dw100_model_job(src_format, dst_format, swap, width=176, height=144):
    """A JOB payload of the DW100 model (docs/protocol-dw100-model.md):
    registers as the dw100 driver programs them, the identity map, source."""
    def planes(fmt):
        stride = width * (2 if fmt == 1 else 1)
        luma = stride * height
        return stride, luma, {0: luma, 1: 0, 2: luma // 2}[fmt]
    src_stride, src_y, src_uv = planes(src_format)
    dst_stride, dst_y, dst_uv = planes(dst_format)
    map_w, map_h = -(-width // 16) + 1, -(-height // 16) + 1
    regs = [0] * 36
    regs[0x04 // 4] = 1 | (src_format << 4) | (dst_format << 6)
    regs[0x0c // 4] = map_w | (map_h << 16)
    regs[0x18 // 4] = regs[0x40 // 4] = width | (height << 16)
    regs[0x1c // 4], regs[0x44 // 4] = src_stride, dst_stride
    regs[0x58 // 4] = swap
    regs[0x64 // 4] = 128
    regs[0x6c // 4] = 0x8080
    regs[0x80 // 4], regs[0x84 // 4] = dst_y >> 4, dst_uv >> 4
    header = struct.pack("<36I", *regs)
    header += struct.pack("<5I3I", map_w * map_h * 4, src_y, src_uv, dst_y, dst_uv, 0, 0, 0)
    vertex_map = b"".join(
        struct.pack("<I", (min(y * 16, height) * 16) << 16 | min(x * 16, width) * 16)
        for y in range(map_h) for x in range(map_w))
    source = bytes((i * 7) & 0xff for i in range(src_y + src_uv))
    return header + vertex_map + source


def dw100_model():
    # First 4 bytes: 0 runs the payload, else a length to check the header against.
    nv12 = dw100_model_job(2, 2, 0)
    write("dw100_model_job", "nv12_identity", bytes(4) + nv12)
    write("dw100_model_job", "nv12_header", struct.pack("<I", len(nv12)) + nv12[:176])
    # UYVY (source Y byte swap) to NV21 (destination UV byte swap).
    write("dw100_model_job", "uyvy_to_nv21", bytes(4) + dw100_model_job(1, 2, 0x1 | 0x1000))


def main():
    streams = {
        "h264": bitstream("libx264", "h264"),
        "hevc": bitstream("libx265", "hevc", ("-x265-params", "log-level=none")),
        "vp8": bitstream("libvpx", "ivf"),
        "vp9": bitstream("libvpx-vp9", "ivf"),
        "av1": bitstream("libaom-av1", "ivf", ("-cpu-used", "8")),
    }
    # Selector: format index in CodedFormat::ALL; bit 7 frames the buffers.
    for index, name in enumerate(["h264", "hevc", "vp8", "vp9", "av1"]):
        data = streams[name]
        if name in ("h264", "hevc"):
            write("ffmpeg_input", name, bytes([index | 0x30]) + data)
        else:
            framed = b"".join(struct.pack("<H", len(f)) + f for f in ivf_frames(data))
            write("ffmpeg_input", name, bytes([index | 0x80]) + framed)
    virtio_video_requests(streams)
    dewarp()
    dw100_model()


if __name__ == "__main__":
    main()
