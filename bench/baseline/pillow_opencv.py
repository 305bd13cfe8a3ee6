"""The mixed workload as a Celery + Pillow/OpenCV worker would run it, in-process.

`make bench` runs this beside pixmill's own in-process benchmark, on the same photos,
in the same run, so the two are compared as a ratio on the same machine state.

Each job is what such a worker does per task: decode the upload with Pillow, run the
step (Pillow for resize, OpenCV for blur, edges and the channel swap), encode a JPEG at
quality 85 with Pillow. One thread: OpenCV's own thread pool is turned off.

Prints one JSON object: {"ops": {name: ms}, "mixed_ms": ms, "versions": {...}}.
"""

import argparse
import io
import json
import statistics
import time

import cv2
import numpy as np
import PIL
from PIL import Image, ImageOps

cv2.setNumThreads(1)


def resize(img):
    # Cover 640x400 with Lanczos, cropping the centre: ImageOps.fit.
    return ImageOps.fit(img, (640, 400), Image.Resampling.LANCZOS)


def blur(img):
    return Image.fromarray(cv2.GaussianBlur(np.asarray(img), (0, 0), 3))


def edges(img):
    gray = cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2GRAY)
    # The same Canny as pixmill's: Gaussian sigma 1.4, then Canny with L2 gradients.
    smooth = cv2.GaussianBlur(gray, (7, 7), 1.4)
    return Image.fromarray(cv2.Canny(smooth, 100, 200, L2gradient=True))


def swap(img):
    return Image.fromarray(cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2BGR))


OPS = {"resize 640×400": resize, "blur σ=3": blur, "edges": edges, "swap": swap}


def job(data, op):
    img = Image.open(io.BytesIO(data))
    img = ImageOps.exif_transpose(img).convert("RGB")
    out = op(img)
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=7)
    parser.add_argument("photos", nargs="+")
    args = parser.parse_args()
    inputs = [open(p, "rb").read() for p in args.photos]
    result = {}
    for name, op in OPS.items():
        per_photo = []
        for data in inputs:
            job(data, op)  # warm-up, untimed
            times = []
            for _ in range(args.iterations):
                started = time.perf_counter()
                job(data, op)
                times.append((time.perf_counter() - started) * 1000.0)
            per_photo.append(statistics.median(times))
        result[name] = sum(per_photo) / len(per_photo)
    print(
        json.dumps(
            {
                "ops": result,
                "mixed_ms": sum(result.values()) / len(result),
                "versions": {
                    "pillow": PIL.__version__,
                    "opencv": cv2.__version__,
                    "numpy": np.__version__,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
