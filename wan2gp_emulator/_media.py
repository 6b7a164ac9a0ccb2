"""Synthetic outputs: H.264 MP4 (PyAV), JPEG stills and WAV audio, deterministic in their inputs.

A video shows, on a background derived from a hash of (model, prompt, seed, settings), the prompt, the seed, the
model and the frame number; a bar moves across the frame so that motion is visible. When a start image is given it
is the first frame exactly (resized to the output size, no overlay), and an end image the last frame, so that
image-to-video is observable. With a control video (a VACE model, ``V`` in ``video_prompt_type``) every frame is
mostly that control frame's grey levels (80 %, only inside the mask when one is given) over the background, so a
shot visibly follows its control video frame by frame; reference images are shown as thumbnails in the top-right
corner. Frames are cheap: the background and text are drawn once, each frame only copies the
array and paints a small counter patch.
"""

from __future__ import annotations

import hashlib
import math
import struct
import textwrap
import wave
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def content_seed(*parts: Any) -> int:
    """A stable 64-bit number from the generation's inputs."""
    digest = hashlib.sha256(repr(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _background(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c0, c1 = rng.integers(30, 200, size=3), rng.integers(30, 200, size=3)
    ramp = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    rows = np.linspace(0.0, 0.35, height, dtype=np.float32)[:, None, None]
    img = c0[None, None, :] * (1 - ramp) + c1[None, None, :] * ramp
    img = img * (1 - rows) + 20 * rows
    return np.clip(img, 0, 255).astype(np.uint8)


def _fit(image: Image.Image, width: int, height: int) -> np.ndarray:
    return np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)


def render_base(width: int, height: int, seed: int, lines: list[str]) -> np.ndarray:
    """The frame every synthetic frame starts from: background plus caption."""
    base = Image.fromarray(_background(width, height, seed))
    draw = ImageDraw.Draw(base)
    size = max(10, min(28, height // 18))
    font = _font(size)
    y = max(4, height // 20)
    for line in lines:
        for chunk in textwrap.wrap(line, width=max(16, width // max(6, size // 2 + 1))) or [""]:
            draw.text((max(4, width // 40), y), chunk, fill=(255, 255, 255), font=font,
                      stroke_width=1, stroke_fill=(0, 0, 0))
            y += size + 4
            if y > height - 3 * size:
                break
    return np.asarray(base, dtype=np.uint8).copy()


def _counter_patch(text: str, size: int) -> np.ndarray:
    font = _font(size)
    w = int(size * 0.62 * len(text)) + 12
    patch = Image.new("RGB", (w, size + 10), (0, 0, 0))
    ImageDraw.Draw(patch).text((6, 3), text, fill=(255, 255, 0), font=font)
    return np.asarray(patch, dtype=np.uint8)


def write_video(
    path: Path,
    *,
    width: int,
    height: int,
    frames: int,
    fps: int,
    seed: int,
    caption: list[str],
    start_image: Image.Image | None = None,
    end_image: Image.Image | None = None,
    control: list[np.ndarray] | None = None,
    mask: list[np.ndarray] | None = None,
    refs: list[Image.Image] | None = None,
) -> None:
    """Write ``frames`` frames of ``width`` x ``height`` at ``fps`` as H.264 (yuv420p) MP4.

    ``control`` and ``mask`` are grey frames at the output size (``read_video_grey``); a missing frame repeats
    the last one, as WanGP pads a short control video.
    """
    import av  # imported here: PyAV is only needed when a video is written

    width, height = max(2, width - width % 2), max(2, height - height % 2)
    base = render_base(width, height, seed, caption)
    first = _fit(start_image, width, height) if start_image is not None else None
    last = _fit(end_image, width, height) if end_image is not None else None
    if first is not None:
        # Image-to-video: the caption is drawn over the start image for the frames after the first.
        base = (0.55 * first + 0.45 * base).astype(np.uint8)
    width, height = base.shape[1], base.shape[0]
    for i, ref in enumerate((refs or [])[:4]):  # thumbnails of the reference images, top right
        tw, th = max(8, width // 8), max(8, height // 8)
        x0, y0 = width - (i + 1) * (tw + 4), 4
        if x0 >= 0:
            base[y0:y0 + th, x0:x0 + tw] = _fit(ref, tw, th)
    size = max(10, min(24, height // 20))
    bar_h = max(4, height // 40)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(int(fps), 1))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "16", "tune": "zerolatency"}
        for index in range(frames):
            if index == 0 and first is not None:
                rgb = first
            elif index == frames - 1 and last is not None and frames > 1:
                rgb = last
            else:
                rgb = base.copy()
                if control:
                    grey = control[min(index, len(control) - 1)].astype(np.float32)[:, :, None]
                    weight = 0.8 * (mask[min(index, len(mask) - 1)].astype(np.float32)[:, :, None] / 255.0
                                    if mask else 1.0)
                    rgb = (rgb * (1.0 - weight) + grey * weight).astype(np.uint8)
                x = int((width - width // 8) * (index / max(1, frames - 1)))
                rgb[height - bar_h - 2: height - 2, x: x + width // 8] = (255, 64, 64)
                patch = _counter_patch(f"frame {index + 1}/{frames}", size)
                ph, pw = min(patch.shape[0], height), min(patch.shape[1], width)
                rgb[height - bar_h - 6 - ph: height - bar_h - 6, 4: 4 + pw] = patch[:ph, :pw]
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_image(path: Path, *, width: int, height: int, seed: int, caption: list[str],
                start_image: Image.Image | None = None) -> None:
    base = render_base(width, height, seed, caption)
    if start_image is not None:
        base = (0.55 * _fit(start_image, width, height) + 0.45 * base).astype(np.uint8)
    Image.fromarray(base).save(path, format="JPEG", quality=92)


def write_audio(path: Path, *, seconds: float, seed: int, sample_rate: int = 16000) -> None:
    """A mono 16-bit WAV: a tone whose pitch depends on the inputs."""
    freq = 220.0 + (seed % 440)
    n = max(1, int(seconds * sample_rate))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(b"".join(
            struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * i / sample_rate))) for i in range(n)))


def open_image(value: Any) -> Image.Image | None:
    """A PIL image from what gradio hands a handler (PIL image, path, or (path, caption) gallery item)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        if not value:
            return None
        return open_image(value[0])
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        value = value.get("path") or (value.get("image") or {}).get("path")
    if isinstance(value, (str, Path)) and Path(value).is_file():
        try:
            with Image.open(value) as img:
                img.load()
                return img.copy()
        except OSError:
            return None
    return None


def read_video_grey(path: Any, width: int, height: int, frames: int) -> list[np.ndarray] | None:
    """The first ``frames`` frames of a video as grey levels (uint8, ``height`` x ``width``), or None."""
    if isinstance(path, dict):
        path = path.get("video") or path.get("path")
    if isinstance(path, dict):
        path = path.get("path")
    if not path or not Path(str(path)).is_file():
        return None
    import av

    out: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                img = frame.to_image().convert("L").resize((width - width % 2, height - height % 2),
                                                          Image.Resampling.BILINEAR)
                out.append(np.asarray(img, dtype=np.uint8))
                if len(out) >= frames:
                    break
    except (av.FFmpegError, OSError, ValueError):
        return None
    return out or None


def last_video_frame(path: Any) -> Image.Image | None:
    """The last frame of a video file (used as the first frame when continuing a video)."""
    if not path or not Path(str(path)).is_file():
        return None
    import av

    last = None
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                last = frame
    except (av.FFmpegError, OSError, ValueError):
        return None
    return last.to_image() if last is not None else None
