"""Video decoding speed of the libraries footage.py could read videos with: PyAV (av), OpenCV
(opencv-python-headless) and torchcodec, and the disk each takes once installed.

The video is synthetic and written by this script with PyAV: --width x --height, --frames
frames at 25 frames/s, coloured rectangles moving over a textured background with a little
fresh noise in every frame (as a camera's sensor gives), so that the codec has real work to
do. Each library decodes the whole file to RGB numpy arrays (height x width x 3, uint8), as
footage.py hands frames on, --repeats times; the best time counts. With --stride N only every
N-th frame is converted to RGB (every frame is still decoded: the others depend on it).
A library that is not installed, or cannot run here, is named with the reason.

    pip install opencv-python-headless==5.0.0.93 torchcodec==0.17.0   # the other candidates (av: requirements.txt)
    python bench/decode_speed.py                      # 640 x 480, 300 frames, H.264 in .mp4
    python bench/decode_speed.py --codec mpeg4 --stride 5
"""
import importlib.metadata
import os
import tempfile
import time

import av
import numpy as np

from reid import cli
from stages import machine

# the container each codec is written into (mpeg4 and mjpeg are what old cameras and OpenCV write)
CONTAINERS = {"h264": ".mp4", "mpeg4": ".avi", "mjpeg": ".avi"}


def write_video(path, codec, width, height, frames, seed=0):
    """A synthetic clip: six rectangles crossing a fixed textured background, plus sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    background = np.stack([x * 255 // width, y * 255 // height, (x + y) % 64 * 4], axis=-1)
    background = (background + rng.integers(0, 40, (height, width, 3))).clip(0, 255).astype(np.uint8)
    colours = rng.integers(0, 256, (6, 3))
    starts = rng.integers(0, [width, height], (6, 2))
    speeds = rng.integers(-6, 7, (6, 2))
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264" if codec == "h264" else codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for i in range(frames):
            frame = background.copy()
            for colour, start, speed in zip(colours, starts, speeds):
                left, top = (start + speed * i) % [width, height]
                frame[top:top + height // 4, left:left + width // 10] = colour
            frame = (frame.astype(np.int16) + rng.integers(-4, 5, frame.shape)).clip(0, 255).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def decode_pyav(path, stride):
    """Frames as footage.py decodes them: PyAV with its default threads (frame threads, "AUTO",
    measured no faster on 2 cores), RGB conversion of the kept frames only."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        for n, frame in enumerate(container.decode(stream)):
            if n % stride == 0:
                yield frame.to_ndarray(format="rgb24")


def decode_opencv(path, stride):
    """OpenCV's way: grab() decodes, retrieve() converts to BGR; then BGR to RGB."""
    import cv2

    capture = cv2.VideoCapture(path)
    try:
        n = 0
        while capture.grab():
            if n % stride == 0:
                yield cv2.cvtColor(capture.retrieve()[1], cv2.COLOR_BGR2RGB)
            n += 1
    finally:
        capture.release()


def decode_torchcodec(path, stride):
    """torchcodec's decoder, frames in H x W x C order; torchcodec converts every frame it returns."""
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(path, dimension_order="NHWC", seek_mode="approximate")
    for n in range(0, len(decoder), stride):
        yield decoder[n].numpy()


# (row name, distribution, decoder)
LIBRARIES = [
    ("PyAV", "av", decode_pyav),
    ("OpenCV", "opencv-python-headless", decode_opencv),
    ("torchcodec", "torchcodec", decode_torchcodec),
]


def installed_size(distribution):
    """Bytes of the files the distribution installed (its RECORD), or None when it is not installed."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    return sum(os.path.getsize(f.locate()) for f in files if os.path.isfile(f.locate()))


def time_decoder(decode, path, stride, repeats, expected, shape):
    """Best seconds over `repeats` decodes of the file; each must return `expected` RGB frames."""
    best = None
    for _ in range(repeats):
        start = time.perf_counter()
        kept = sum(1 for frame in decode(path, stride) if frame.shape == shape and frame.dtype == np.uint8)
        elapsed = time.perf_counter() - start
        if kept != expected:
            raise RuntimeError(f"returned {kept} frames of {shape} uint8, not {expected}")
        best = elapsed if best is None else min(best, elapsed)
    return best


def main():
    p = cli.parser(__doc__)
    p.add_argument("--width", type=int, default=640, help="frame width of the synthetic video")
    p.add_argument("--height", type=int, default=480, help="frame height of the synthetic video")
    p.add_argument("--frames", type=int, default=300, help="frames of the synthetic video")
    p.add_argument("--codec", default="h264", choices=sorted(CONTAINERS), help="codec of the synthetic video")
    p.add_argument("--stride", type=int, default=1, help="convert every N-th frame to RGB (all are decoded)")
    p.add_argument("--repeats", type=int, default=3, help="decodes per library; the best counts")
    args = p.parse_args()

    print(machine())
    rows = []  # (name, what is installed, frames/s or None, why not measured)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "synthetic" + CONTAINERS[args.codec])
        write_video(path, args.codec, args.width, args.height, args.frames)
        print(f"{args.frames} frames, {args.width} x {args.height}, {args.codec} in {CONTAINERS[args.codec]} "
              f"({os.path.getsize(path) / 1e6:.1f} MB), RGB every {args.stride} frame(s), best of {args.repeats}")
        expected = len(range(0, args.frames, args.stride))
        for name, distribution, decode in LIBRARIES:
            size = installed_size(distribution)
            if size is None:
                rows.append((name, "", None, f"not installed (pip install {distribution})"))
                continue
            installed = f"{distribution} {importlib.metadata.version(distribution)}, {size / 2**20:.0f} MiB installed"
            try:
                seconds = time_decoder(decode, path, args.stride, args.repeats, expected, (args.height, args.width, 3))
            except (RuntimeError, OSError, ImportError) as e:  # a library that loads but cannot decode here
                rows.append((name, installed, None, f"cannot decode here: {str(e).strip().splitlines()[0]}"))
                continue
            rows.append((name, installed, args.frames / seconds, ""))
    slowest = min((speed for _, _, speed, _ in rows if speed is not None), default=None)
    for name, installed, speed, why in rows:
        measured = f"{speed:7.1f} frames/s  {speed / slowest:4.2f}x the slowest" if speed is not None else why
        print(f"  {name:11s} {installed:52s} {measured}")

if __name__ == "__main__":
    main()
