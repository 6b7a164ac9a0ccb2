"""How closely one video follows another, frame by frame: the measure the control-video tests and figures use.

``follow_score(shot, control)`` is the mean over frames of the Pearson correlation between the two videos' grey
levels, each taken *relative to its own mean frame over time* (104x60 pixels, so encoding noise and the
overlays count little). Subtracting the mean frame removes what does not move: a static background, a caption,
a cube that stays in the middle of the picture. What remains is the change from frame to frame, so the score is
high only when the shot changes where and when its control video does (the camera move), and near zero or
negative against a control video of another move, even one that shows the same cube at the same place on
average. 1.0 is a perfect follower, 0 no relation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = (104, 60)  # width, height: 1/8 of 832x480, enough for the layout of the frame


def grey_frames(path: Path, size: tuple[int, int] = SIZE) -> np.ndarray:
    """The video's frames as float grey levels, ``frames x height x width``."""
    import av
    from PIL import Image

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(np.asarray(frame.to_image().convert("L").resize(size, Image.Resampling.BILINEAR),
                                     dtype=np.float32))
    return np.stack(frames)


def follow_score(shot: Path, control: Path) -> float:
    """Mean per-frame correlation of the two videos' changes over time (their first common frames)."""
    a, b = grey_frames(shot), grey_frames(control)
    n = min(len(a), len(b))
    a, b = a[:n] - a[:n].mean(axis=0), b[:n] - b[:n].mean(axis=0)
    scores = []
    for x, y in zip(a, b, strict=True):
        x, y = x.ravel() - x.mean(), y.ravel() - y.mean()
        norm = float(np.linalg.norm(x) * np.linalg.norm(y))
        if norm > 1e-6:
            scores.append(float(x @ y) / norm)
    return float(np.mean(scores)) if scores else 0.0
