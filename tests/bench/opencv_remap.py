#!/usr/bin/env python3
"""OpenCV cv2.remap on the dewarper benchmark's picture and maps.

Usage: tests/bench/opencv_remap.py [--rates] [DIR]

DIR holds source.nv12 (1920x1080 NV12), identity.map and fisheye.map
(little-endian u32 vertex maps) as `cargo run --release --example
dewarp_bench -- --export DIR` writes them; without DIR, a temporary
directory is filled that way. The vertex grid is upsampled to per-pixel maps
with the dewarper's cell rule (16x16 cells, the last ones narrower),
converted to CV_16SC2 fixed-point maps, and remapped with INTER_LINEAR and a
black BORDER_CONSTANT: the luma plane and the interleaved chroma plane (as a
2-channel picture at the chroma co-sited positions), as one frame. Prints
frames per second on one thread and on every core, by wall clock and per
CPU-second of the process (the fair figure on a busy machine). With
--rates, one line per measurement instead, `rate MAP COLUMN WALL_FPS CPU_FPS`
(for `cargo xtask bench dewarp`).

OpenCV comes from opencv-python-headless in a virtualenv under the cache
directory (created on first use) unless the running Python already has cv2.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WIDTH, HEIGHT = 1920, 1080
CELL = 16
REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vhost-device-video"
VENV = CACHE / "opencv-venv"


def ensure_opencv():
    try:
        import cv2  # noqa: F401
        import numpy  # noqa: F401
        return
    except ImportError:
        pass
    python = VENV / "bin" / "python3"
    if os.environ.get("OPENCV_REMAP_IN_VENV"):
        sys.exit("opencv_remap: cv2 still missing inside the virtualenv")
    if not python.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "opencv-python-headless", "numpy"],
            check=True,
        )
    env = dict(os.environ, OPENCV_REMAP_IN_VENV="1")
    os.execve(str(python), [str(python), *sys.argv], env)


def export(directory):
    subprocess.run(
        ["cargo", "run", "--quiet", "--release", "-p", "vhost-device-video",
         "--example", "dewarp_bench", "--", "--export-only", str(directory)],
        cwd=REPO, check=True,
    )


def pixel_maps(vertex_file):
    """Per-pixel float source positions of every destination luma pixel."""
    import numpy as np

    mw, mh = -(-WIDTH // CELL) + 1, -(-HEIGHT // CELL) + 1
    entries = np.fromfile(vertex_file, dtype="<u4").reshape(mh, mw)
    vx = (entries & 0xFFFF).astype(np.float64) / 16.0
    vy = (entries >> 16).astype(np.float64) / 16.0

    def axis(length):
        pos = np.arange(length)
        cell = pos // CELL
        size = np.minimum(CELL, length - cell * CELL)
        return cell, (pos - cell * CELL) / size

    cx, tx = axis(WIDTH)
    cy, ty = axis(HEIGHT)
    tx, ty = tx[None, :], ty[:, None]

    def interpolate(v):
        v00 = v[cy][:, cx]
        v10 = v[cy][:, cx + 1]
        v01 = v[cy + 1][:, cx]
        v11 = v[cy + 1][:, cx + 1]
        top = v00 * (1 - tx) + v10 * tx
        bottom = v01 * (1 - tx) + v11 * tx
        return (top * (1 - ty) + bottom * ty).astype(np.float32)

    return interpolate(vx), interpolate(vy)


def main():
    ensure_opencv()
    import cv2
    import numpy as np

    args = sys.argv[1:]
    rates_only = "--rates" in args
    args = [a for a in args if a != "--rates"]
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(args[0]) if args else Path(scratch)
        if not (directory / "source.nv12").exists():
            export(directory)
        frame = np.fromfile(directory / "source.nv12", dtype=np.uint8)
        luma = frame[: WIDTH * HEIGHT].reshape(HEIGHT, WIDTH)
        chroma = frame[WIDTH * HEIGHT :].reshape(HEIGHT // 2, WIDTH // 2, 2)

        cores = os.cpu_count() or 1
        if rates_only:
            print(f"version opencv {cv2.__version__}")
        else:
            print(f"OpenCV {cv2.__version__} cv2.remap INTER_LINEAR CV_16SC2, {WIDTH}x{HEIGHT} NV12, "
                  "frames per second by wall clock (per CPU-second of the process)")
            print(f"{'map':<10} {'opencv 1T':>20} {f'opencv {cores}T':>20}")
        for name in ("identity", "fisheye"):
            map_x, map_y = pixel_maps(directory / f"{name}.map")
            luma_maps = cv2.convertMaps(map_x, map_y, cv2.CV_16SC2)
            chroma_maps = cv2.convertMaps(
                np.ascontiguousarray(map_x[::2, ::2] / 2),
                np.ascontiguousarray(map_y[::2, ::2] / 2),
                cv2.CV_16SC2,
            )

            def one_frame():
                cv2.remap(luma, *luma_maps, cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                cv2.remap(chroma, *chroma_maps, cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(128, 128))

            rates = []
            for threads in (1, cores):
                cv2.setNumThreads(threads)
                one_frame()
                frames, start, cpu_start = 0, time.perf_counter(), time.process_time()
                while time.perf_counter() - start < 2.0:
                    one_frame()
                    frames += 1
                wall = frames / (time.perf_counter() - start)
                cpu = frames / max(time.process_time() - cpu_start, 1e-9)
                if rates_only:
                    print(f"rate {name} opencv-{threads}T {wall:.2f} {cpu:.2f}", flush=True)
                rates.append(f"{wall:.1f} ({cpu:.1f})")
            if not rates_only:
                print(f"{name:<10} {rates[0]:>20} {rates[1]:>20}")


if __name__ == "__main__":
    main()
