"""The device configuration: one TOML file, read and validated once, then frozen.

Sections and keys (see ``firmware_tools/fieldear.example.toml`` for a documented example)::

    [device]  id, location
    [model]   path, threads
    [audio]   device, sample_rate, block_hop
    [detect]  default_threshold, smoothing, hysteresis, min_event_s, merge_gap_s, ignore
    [detect.thresholds]  label = threshold, ...
    [store]   data_dir, db, log_windows, window_every, keep_days, max_db_mb
    [clips]   enabled, pre_s, post_s, quota_mb, min_free_mb
    [health]  every_s, watchdog_stall_s
    [mqtt]    host, port, tls, ca_file, username, password | password_file, topic_prefix, client_id, ack_timeout_s
    [web]     host, port, password_file, projects   (`fieldear serve`)
    [metrics] port   (`listen`'s Prometheus endpoint on 127.0.0.1; unset: none)

Every key is optional. Unknown sections or keys and values of the wrong type are errors that name
the file, the section and the key, e.g.
``fieldear.toml: [detect] smoothing: expected an integer >= 1, got "x"``.
Relative paths are relative to the directory of the config file.

``apply_overrides(config, smoothing=3, db="x.db", ...)`` returns a new Config with command-line
values (``None`` means "not given") validated the same way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

from runtime.errors import ConfigError
from runtime.paths import DB_NAME, SYSTEM_DATA_DIR, resolve_device_id

log = logging.getLogger(__name__)



# ---------------------------------------------------------------- sections


@dataclass(frozen=True)
class DeviceConfig:
    id: str | None = None  # None: derived from /etc/machine-id or the hostname (see resolve_device_id)
    location: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    path: Path | None = None  # None: the default bundle shipped with fieldear
    threads: int | None = None  # None: the interpreter's default


@dataclass(frozen=True)
class AudioConfig:
    device: str | int | None = None  # sounddevice name or index; None: the default input
    sample_rate: int | None = None  # capture rate; None: the model's rate if the device has it, else the device's
    block_hop: int | None = None  # frames between blocks; None: the bundle's


@dataclass(frozen=True)
class DetectConfig:
    default_threshold: float | None = None  # None: the bundle's per-label thresholds, else 0.5
    thresholds: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    # None: the bundle's stream calibration, else 1 block / 0.1 / 0 s / 0 s
    smoothing: int | None = None  # moving average over this many blocks
    hysteresis: float | None = None  # an event ends when the score drops below threshold - hysteresis (0: none)
    min_event_s: float | None = None
    merge_gap_s: float | None = None
    ignore: tuple[str, ...] = ()  # labels never turned into events (e.g. "background")

    def post_kwargs(self) -> dict:
        """Keyword arguments for ``runtime.detect.events.PostSettings.for_bundle(bundle, thresholds, **kw)``."""
        kw: dict[str, Any] = {k: v for k, v in (("smoothing", self.smoothing), ("hysteresis", self.hysteresis),
                                                 ("min_event_s", self.min_event_s), ("merge_gap_s", self.merge_gap_s))
                              if v is not None}  # left out: the bundle's
        kw["ignore"] = tuple(self.ignore)
        if self.default_threshold is not None:
            kw["default_threshold"] = self.default_threshold
        return kw


@dataclass(frozen=True)
class StoreConfig:
    data_dir: Path = SYSTEM_DATA_DIR
    db: Path | None = None  # None: data_dir / fieldear.db; relative: under data_dir
    log_windows: bool = True
    window_every: int = 1  # log every n-th block's scores
    keep_days: float | None = None
    max_db_mb: float | None = None

    @property
    def db_path(self) -> Path:
        if self.db is None:
            return self.data_dir / DB_NAME
        return self.db if self.db.is_absolute() else self.data_dir / self.db


@dataclass(frozen=True)
class ClipsConfig:
    enabled: bool = False
    pre_s: float = 1.0
    post_s: float = 1.0
    quota_mb: float = 500.0
    min_free_mb: float = 200.0  # no clip is saved when the disk would have less free space than this


@dataclass(frozen=True)
class HealthConfig:
    every_s: float = 300.0  # heartbeat row interval
    watchdog_stall_s: float = 30.0  # stop feeding the systemd watchdog after this long without audio


@dataclass(frozen=True)
class MqttConfig:
    host: str | None = None  # None: no MQTT (and no network for the service)
    port: int | None = None  # None: 8883 with tls, else 1883
    tls: bool = False
    ca_file: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_file: Path | None = None
    topic_prefix: str = "fieldear"
    client_id: str | None = None  # None: the device id
    ack_timeout_s: float = 30.0  # re-send what the collector has not acknowledged after this long

    @property
    def enabled(self) -> bool:
        return self.host is not None

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 8883 if self.tls else 1883

    def read_password(self) -> str | None:
        """The password, from the config or from password_file (read now, not at load time)."""
        if self.password_file is None:
            return self.password
        try:
            return self.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"[mqtt] password_file: cannot read {self.password_file}: {exc.strerror}",
                              "make it readable by the fieldear user (mode 0640, group fieldear)") from None


@dataclass(frozen=True)
class WebConfig:
    """`fieldear serve`: where the review page listens. Any host but loopback needs ``password_file`` (a hash
    made by `fieldear serve --hash-password`)."""

    host: str = "127.0.0.1"
    port: int = 8080
    password_file: Path | None = None
    projects: Path | None = None  # the studio's projects root (`fieldear serve --projects`); None: no studio


@dataclass(frozen=True)
class MetricsConfig:
    """`fieldear listen`: serve Prometheus metrics on 127.0.0.1:``port`` (None: no endpoint)."""

    port: int | None = None


@dataclass(frozen=True)
class Config:
    source: Path | None = None  # the file it came from (None: defaults only)
    device: DeviceConfig = DeviceConfig()
    model: ModelConfig = ModelConfig()
    audio: AudioConfig = AudioConfig()
    detect: DetectConfig = DetectConfig()
    store: StoreConfig = StoreConfig()
    clips: ClipsConfig = ClipsConfig()
    health: HealthConfig = HealthConfig()
    mqtt: MqttConfig = MqttConfig()
    web: WebConfig = WebConfig()
    metrics: MetricsConfig = MetricsConfig()

    @property
    def device_id(self) -> str:
        """The configured id (load_config fills it in, so this is never empty after loading)."""
        return self.device.id or resolve_device_id()

    def to_dict(self) -> dict:
        """Plain JSON-able dict (paths as strings, password masked)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "source":
                continue
            section = getattr(self, f.name)
            values = {}
            for sf in dataclasses.fields(section):
                v = getattr(section, sf.name)
                if isinstance(v, Path):
                    v = str(v)
                elif isinstance(v, Mapping):
                    v = dict(v)
                elif isinstance(v, tuple):
                    v = list(v)
                if sf.name == "password" and v is not None:
                    v = "***"
                values[sf.name] = v
            out[f.name] = values
        return out


SECTIONS: dict[str, type] = {
    "device": DeviceConfig, "model": ModelConfig, "audio": AudioConfig, "detect": DetectConfig,
    "store": StoreConfig, "clips": ClipsConfig, "health": HealthConfig, "mqtt": MqttConfig, "web": WebConfig,
    "metrics": MetricsConfig,
}


# ---------------------------------------------------------------- value checks


class _Bad(Exception):
    """A value does not fit; the message says what was expected (``key``/``value``: an inner table entry)."""

    def __init__(self, expected: str, key: str | None = None, value: Any = None):
        super().__init__(expected)
        self.key = key
        self.value = value


def _show(value: Any) -> str:
    if isinstance(value, (str, bool, int, float)) or value is None:
        return json.dumps(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _int(minimum: int | None = None, maximum: int | None = None, optional: bool = False) -> Callable:
    def check(v, base):
        if optional and v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or (minimum is not None and v < minimum) \
                or (maximum is not None and v > maximum):
            rng = f" >= {minimum}" if maximum is None and minimum is not None else (
                f" in {minimum}..{maximum}" if minimum is not None else "")
            raise _Bad(f"expected an integer{rng}")
        return v
    return check


def _float(minimum: float | None = None, maximum: float | None = None, optional: bool = False,
           above: bool = False) -> Callable:
    def check(v, base):
        if optional and v is None:
            return None
        ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
        if ok and minimum is not None:
            ok = v > minimum if above else v >= minimum
        if ok and maximum is not None:
            ok = v <= maximum
        if not ok:
            if minimum is not None and maximum is not None:
                rng = f" in ({minimum}, {maximum}]" if above else f" in [{minimum}, {maximum}]"
            elif minimum is not None:
                rng = f" {'>' if above else '>='} {minimum}"
            else:
                rng = ""
            raise _Bad(f"expected a number{rng}")
        return float(v)
    return check


def _bool(v, base):
    if not isinstance(v, bool):
        raise _Bad("expected true or false")
    return v


def _text(optional: bool = False) -> Callable:
    def check(v, base):
        if optional and v is None:
            return None
        if not isinstance(v, str) or not v.strip():
            raise _Bad("expected a non-empty string")
        return v
    return check


def _path(optional: bool = False) -> Callable:
    def check(v, base):
        if optional and v is None:
            return None
        if isinstance(v, Path):
            p = v
        elif isinstance(v, str) and v.strip():
            p = Path(v).expanduser()
        else:
            raise _Bad("expected a path (a non-empty string)")
        if not p.is_absolute() and base is not None:
            p = base / p
        return p
    return check


def _relative_path(v, base):
    """A path kept relative (store.db: relative to data_dir, not to the config file)."""
    if v is None:
        return None
    if isinstance(v, Path):
        return v
    if not isinstance(v, str) or not v.strip():
        raise _Bad("expected a path (a non-empty string)")
    return Path(v).expanduser()


def _audio_device(v, base):
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    if isinstance(v, str) and v.strip():
        return int(v) if v.strip().isdigit() else v
    raise _Bad("expected a device name (string) or index (integer >= 0)")


def _device_id(v, base):
    if v is None:
        return None
    if not isinstance(v, str) or not v.strip() or len(v) > 64 or any(c.isspace() or c in "/+#" for c in v):
        raise _Bad("expected a short id without spaces, '/', '+' or '#' (it becomes part of MQTT topics)")
    return v


def _topic_prefix(v, base):
    if not isinstance(v, str) or not v.strip() or any(c in "+#" for c in v) or v.startswith("/") or v.endswith("/"):
        raise _Bad("expected an MQTT topic prefix without '+', '#' or leading/trailing '/'")
    return v


def _host(v, base):
    if not isinstance(v, str) or not v.strip() or any(c.isspace() or c in "/@[]" for c in v):
        raise _Bad("expected a host name or IP address (e.g. \"127.0.0.1\" or \"0.0.0.0\")")
    return v.strip()


def _thresholds(v, base):
    if not isinstance(v, Mapping):
        raise _Bad("expected a table of label = threshold")
    out = {}
    for label, t in v.items():
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0:
            raise _Bad("expected a number in [0, 1]", key=str(label), value=t)
        out[str(label)] = float(t)
    return MappingProxyType(out)


def _hysteresis(v, base):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
        raise _Bad("expected a number in [0, 1)")
    return float(v)


def _labels(v, base):
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise _Bad("expected a list of label names")
    return tuple(v)


CHECKS: dict[str, dict[str, Callable]] = {
    "device": {"id": _device_id, "location": _text(optional=True)},
    "model": {"path": _path(optional=True), "threads": _int(1, 64, optional=True)},
    "audio": {"device": _audio_device, "sample_rate": _int(1000, 384000, optional=True),
              "block_hop": _int(1, optional=True)},
    "detect": {"default_threshold": _float(0.0, 1.0, optional=True), "thresholds": _thresholds,
               "smoothing": _int(1, optional=True), "hysteresis": _hysteresis,
               "min_event_s": _float(0.0, optional=True), "merge_gap_s": _float(0.0, optional=True),
               "ignore": _labels},
    "store": {"data_dir": _path(), "db": _relative_path, "log_windows": _bool, "window_every": _int(1),
              "keep_days": _float(0.0, optional=True, above=True), "max_db_mb": _float(0.0, optional=True, above=True)},
    "clips": {"enabled": _bool, "pre_s": _float(0.0), "post_s": _float(0.0), "quota_mb": _float(0.0),
              "min_free_mb": _float(0.0)},
    "health": {"every_s": _float(1.0), "watchdog_stall_s": _float(1.0)},
    "mqtt": {"host": _text(optional=True), "port": _int(1, 65535, optional=True), "tls": _bool,
             "ca_file": _path(optional=True), "username": _text(optional=True), "password": _text(optional=True),
             "password_file": _path(optional=True), "topic_prefix": _topic_prefix,
             "client_id": _text(optional=True), "ack_timeout_s": _float(0.0, above=True)},
    "web": {"host": _host, "port": _int(1, 65535), "password_file": _path(optional=True),
            "projects": _path(optional=True)},
    "metrics": {"port": _int(1, 65535, optional=True)},
}


def _message(where: str, section: str, key: str, exc: _Bad, value: Any) -> str:
    if exc.key is not None:  # an entry of an inner table, e.g. [detect.thresholds] dog
        return f"{where}: [{section}.{key}] {exc.key}: {exc}, got {_show(exc.value)}"
    return f"{where}: [{section}] {key}: {exc}, got {_show(value)}"


def _build_section(section: str, raw: Mapping, where: str, base: Path | None) -> Any:
    checks = CHECKS[section]
    values = {}
    for key, value in raw.items():
        if key not in checks:
            known = ", ".join(sorted(checks))
            raise ConfigError(f"{where}: [{section}] {key}: unknown key", f"known keys in [{section}]: {known}")
        try:
            values[key] = checks[key](value, base)
        except _Bad as exc:
            raise ConfigError(_message(where, section, key, exc, value)) from None
    return SECTIONS[section](**values)


def _cross_check(config: Config, where: str) -> None:
    m = config.mqtt
    if m.password is not None and m.password_file is not None:
        raise ConfigError(f"{where}: [mqtt] password: give password or password_file, not both")
    if (m.username or m.password or m.password_file or m.tls or m.ca_file) and m.host is None:
        raise ConfigError(f"{where}: [mqtt] host: missing (other [mqtt] keys are set)",
                          "set host, or remove the [mqtt] section to run without a broker")
    if m.ca_file is not None and not m.tls:
        raise ConfigError(f"{where}: [mqtt] ca_file: set but tls = false", "set tls = true")




# ---------------------------------------------------------------- loading


def default_config(device_id: str | None = None) -> Config:
    """The configuration with no file: all defaults, device id injected or derived."""
    return Config(device=DeviceConfig(id=device_id or resolve_device_id()))


def parse_config(data: Mapping, where: str, base: Path | None = None, source: Path | None = None,
                 device_id: str | None = None) -> Config:
    """Validate an already-parsed TOML table."""
    sections = {}
    for name, raw in data.items():
        if name not in SECTIONS and not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: {name}: unknown key outside any [section]",
                              "keys belong under a section header such as [detect]")
        if name not in SECTIONS:
            raise ConfigError(f"{where}: [{name}]: unknown section", "known sections: " + ", ".join(SECTIONS))
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: {name}: expected a [{name}] section, got {_show(raw)}")
        sections[name] = _build_section(name, raw, where, base)
    config = Config(source=source, **sections)
    _cross_check(config, where)
    if config.device.id is None:
        config = dataclasses.replace(config, device=dataclasses.replace(
            config.device, id=device_id or resolve_device_id()))
    return config


def load_config(path: str | os.PathLike, device_id: str | None = None) -> Config:
    """Read and validate a TOML config file. ``device_id`` is the default when the file sets none."""
    p = Path(path)
    where = str(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{where}: config file not found",
                          "copy firmware_tools/fieldear.example.toml and edit it") from None
    except IsADirectoryError:
        raise ConfigError(f"{where}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read config file: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML: {exc}", "check quoting and [section] headers") from None
    config = parse_config(data, where, base=p.resolve().parent, source=p, device_id=device_id)
    log.debug("loaded config %s", where)
    return config


# ---------------------------------------------------------------- command-line overrides

# CLI option name -> (section, key). Values of None mean "option not given".
OVERRIDES: dict[str, tuple[str, str]] = {
    "device_id": ("device", "id"),
    "location": ("device", "location"),
    "model": ("model", "path"),
    "threads": ("model", "threads"),
    "device": ("audio", "device"),
    "sample_rate": ("audio", "sample_rate"),
    "block_hop": ("audio", "block_hop"),
    "threshold": ("detect", "default_threshold"),
    "thresholds": ("detect", "thresholds"),
    "smoothing": ("detect", "smoothing"),
    "hysteresis": ("detect", "hysteresis"),
    "min_event_s": ("detect", "min_event_s"),
    "merge_gap_s": ("detect", "merge_gap_s"),
    "ignore": ("detect", "ignore"),
    "data_dir": ("store", "data_dir"),
    "db": ("store", "db"),
    "log_windows": ("store", "log_windows"),
    "window_every": ("store", "window_every"),
    "keep_days": ("store", "keep_days"),
    "max_db_mb": ("store", "max_db_mb"),
    "clips": ("clips", "enabled"),
    "clip_quota_mb": ("clips", "quota_mb"),
    "health_every_s": ("health", "every_s"),
    "watchdog_stall_s": ("health", "watchdog_stall_s"),
    "metrics_port": ("metrics", "port"),
}


def apply_overrides(config: Config, **cli_values: Any) -> Config:
    """A new Config with the given command-line values (None = not given) validated and applied.

    Paths are relative to the current directory; ``thresholds`` (a dict) and ``ignore`` (labels) are merged into
    the file's.
    """
    changed: dict[str, dict[str, Any]] = {}
    for name, value in cli_values.items():
        if name not in OVERRIDES:
            raise TypeError(f"apply_overrides: unknown option {name!r}")
        if value is None:
            continue
        section, key = OVERRIDES[name]
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        try:
            checked = CHECKS[section][key](value, Path.cwd())
        except _Bad as exc:
            shown = f"{exc.key}: {exc}, got {_show(exc.value)}" if exc.key is not None else f"{exc}, got {_show(value)}"
            raise ConfigError(f"--{name.replace('_', '-')}: {shown}") from None
        if key == "thresholds":
            checked = MappingProxyType({**getattr(config, section).thresholds, **checked})
        if key == "ignore":
            checked = tuple(dict.fromkeys([*config.detect.ignore, *checked]))
        if key == "db" and checked is not None and not checked.is_absolute():
            checked = Path.cwd() / checked  # a --db on the command line is relative to where you are
        changed.setdefault(section, {})[key] = checked
    if not changed:
        return config
    replaced = {s: dataclasses.replace(getattr(config, s), **kv) for s, kv in changed.items()}
    new = dataclasses.replace(config, **replaced)
    _cross_check(new, "command line")
    return new


def check_labels(config: Config, labels: list[str]) -> None:
    """Refuse per-label thresholds for labels the model does not have."""
    unknown = sorted(set(config.detect.thresholds) - set(labels))
    ignored = sorted(set(config.detect.ignore) - set(labels))
    if ignored:
        where = str(config.source) if config.source else "config"
        raise ConfigError(f"{where}: [detect] ignore: {ignored[0]!r} is not a label of the model",
                          "the model's labels: " + ", ".join(labels))
    if unknown:
        where = str(config.source) if config.source else "config"
        raise ConfigError(f"{where}: [detect.thresholds] {unknown[0]}: not a label of the model",
                          "the model's labels: " + ", ".join(labels))
