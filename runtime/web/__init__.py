"""`fieldear serve`: the field review loop in a browser (live status, detections, review, counts, health).

Framework: Flask (request routing, Jinja templates, signed session cookies) served by waitress. Both are well
kept (Pallets; Pylons), pure Python, with no C extensions and no build step, so they install from wheels on a
Raspberry Pi; together with their dependencies they add about 3 MB and a few tens of MB of RSS, and waitress idles
in a select() loop without busy polling. Everything the pages need (templates, CSS, a little vanilla JS) is served
from this package: no CDN, no JavaScript build, so it works offline in a forest.

They come with the optional ``web`` extra (``pip install 'fieldear[web]'``). Nothing else in ``runtime`` imports
this package's Flask modules; ``require_web()`` turns a missing extra into one clear error line.

Modules: ``settings`` (host, port, password, paths; refuses an open host without a password), ``passwords``
(scrypt hashes), ``app`` (the app factory ``create_app``), ``pages`` and ``api`` (routes), ``media`` (clip
paths confined to the clips directory), ``spectrogram`` and ``png`` (images rendered with the project's own
log-mel frontend), ``plots`` (inline SVG), ``server`` (waitress).
"""

from __future__ import annotations

from runtime.errors import FieldearError

WEB_HINT = "pip install 'fieldear[web]' (Flask and waitress)"


def require_web() -> None:
    """Raise one clear FieldearError when Flask or waitress is missing."""
    import importlib.util

    missing = [name for name in ("flask", "waitress") if importlib.util.find_spec(name) is None]
    if missing:
        raise FieldearError(f"the web extra is not installed (missing: {', '.join(missing)})", WEB_HINT)
