"""Spectrogram images of saved clips, drawn on the device with the project's own log-mel frontend
(``runtime.features.frontend.logmel``, the features the model sees) and encoded by ``runtime.web.png``.

The frontend parameters come from the model bundle's ``model.json`` (read as JSON: no interpreter is loaded).
The server draws them in a helper process (``runtime.web.render_worker``, so numpy and scipy stay out of the
server's memory) unless ``in_process``; images are cached by (path, mtime, size), a few hundred at most.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_SIZE = 256
MAX_CLIP_S = 60.0  # longer clips are drawn from their first minute


def frontend_params(model: Path | None):
    """FrontendParams of the bundle at ``model`` (None: the default bundle)."""
    from runtime.features.frontend import FrontendParams
    from runtime.paths import DEFAULT_BUNDLE

    path = Path(model) if model is not None else DEFAULT_BUNDLE
    meta = json.loads((path / "model.json").read_text(encoding="utf-8"))
    return FrontendParams.from_dict(meta["frontend"])


def render(samples, rate: int, params) -> bytes:
    """PNG of the log-mel of ``samples`` (low frequencies at the bottom, time left to right)."""
    import numpy as np

    from runtime.features.frontend import logmel
    from runtime.web.png import encode_png, to_rgb

    x = np.asarray(samples, np.float32)[: int(MAX_CLIP_S * rate)]
    if rate != params.sample_rate:
        from runtime.audio.resample import resample

        x = resample(x, rate, params.sample_rate).astype(np.float32)
    mel = logmel(x, params) if len(x) else np.zeros((1, params.n_mels), np.float32)
    image = mel.T[::-1]  # (n_mels, frames), high mels on top
    hi = float(np.percentile(image, 99.5))
    lo = float(np.percentile(image, 5.0))
    return encode_png(to_rgb(image, lo, hi))


class SpectrogramCache:
    """``reader(path) -> (samples, rate)``: how ``in_process`` reads a file (default: 16-bit WAV clips)."""

    def __init__(self, model: Path | None, size: int = CACHE_SIZE, in_process: bool = False, reader=None):
        self.model = model
        self.size = size
        self.in_process = in_process
        self.reader = reader
        self._worker = None
        self._params = None
        self._images: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    @property
    def params(self):
        if self._params is None:
            self._params = frontend_params(self.model)
        return self._params

    def png(self, path: Path) -> bytes:
        from runtime.web.media import read_clip

        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
        with self._lock:
            if key in self._images:
                self._images.move_to_end(key)
                return self._images[key]
        if self.in_process:
            samples, rate = (self.reader or read_clip)(path)
            data = render(samples, rate, self.params)
        else:
            with self._lock:
                if self._worker is None:
                    from runtime.web.render_worker import WorkerClient

                    self._worker = WorkerClient(self.model)
            data = self._worker.png(path)
        with self._lock:
            self._images[key] = data
            while len(self._images) > self.size:
                self._images.popitem(last=False)
        return data

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
