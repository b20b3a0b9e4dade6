"""``telediag bench imaging``: decode and render time per DICOM image sample.

For every ``.dcm`` in the folder (default ``<shared data>/dicom``) it times "decode": parsing
the bytes, the header check and decoding the previewed frame (the middle one, as a worker's
preview does), and "render": the whole preview from those bytes to a PNG (decode, Modality
LUT, VOI, encoding), which is what one preview costs a worker. Each sample runs ``--repeat`` times and the best run
is printed, so a cold import or a page fault does not land on one file. Samples that are not
renderable images are listed with the reason; they count in neither total.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from telediag.bench.refdata import shared_data_dir
from telediag.imaging import ImageError, decode_frames, render_png

__all__ = ["main"]


def _time_one(raw: bytes, size: int | None) -> tuple[float, float, int]:
    """(decode ms, render ms, frames) for one sample; raises ImageError when not renderable."""
    t0 = time.perf_counter()
    frames = decode_frames(raw)
    middle = len(frames) // 2
    frames[middle]
    t1 = time.perf_counter()
    render_png(raw, middle, size=size)
    t2 = time.perf_counter()
    return (t1 - t0) * 1000, (t2 - t1) * 1000, len(frames)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``telediag bench imaging``; returns a process exit code."""
    parser = argparse.ArgumentParser(prog="telediag bench imaging", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="folder of DICOM files; default <shared data>/dicom")
    parser.add_argument("--repeat", type=int, default=3, help="runs per sample, best kept (default 3)")
    parser.add_argument("--size", type=int, default=None, help="fit previews into this side (default: native size)")
    args = parser.parse_args(argv)
    folder = args.data
    if folder is None:
        shared = shared_data_dir()
        folder = shared / "dicom" if shared else None
    if folder is None or not folder.is_dir():
        print("no DICOM folder: give --data or set TELEDIAG_SHARED_DATA")
        return 2
    files = sorted(folder.glob("*.dcm"))
    print(f"{'sample':44s} {'frames':>6s} {'decode ms':>10s} {'render ms':>10s}")
    total_decode = total_render = 0.0
    rendered = 0
    for path in files:
        raw = path.read_bytes()
        try:
            runs = [_time_one(raw, args.size) for _ in range(max(1, args.repeat))]
        except ImageError as exc:
            print(f"{path.name:44s} {'-':>6s} not rendered: {exc}")
            continue
        decode_ms = min(r[0] for r in runs)
        render_ms = min(r[1] for r in runs)
        total_decode += decode_ms
        total_render += render_ms
        rendered += 1
        print(f"{path.name:44s} {runs[0][2]:6d} {decode_ms:10.1f} {render_ms:10.1f}")
    print(f"{'total (' + str(rendered) + ' rendered)':44s} {'':6s} {total_decode:10.1f} {total_render:10.1f}")
    return 0
