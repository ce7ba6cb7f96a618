"""`fieldear service install|uninstall|render` and `fieldear deploy HOST`. Imports nothing heavy at import time."""

from __future__ import annotations

from runtime.paths import SYSTEM_CONFIG, SYSTEM_DATA_DIR


def register(sub) -> None:
    p = sub.add_parser("service", help="install, remove or show the systemd service (on the device)")
    ssub = p.add_subparsers(dest="service_command", metavar="ACTION", required=True)

    def common(q, install: bool) -> None:
        q.add_argument("--dry-run", action="store_true", help="print the steps, change nothing")
        q.add_argument("--root", default="/", help="write files under this directory instead of / and skip "
                       "systemctl (image building, tests)")
        if install:
            q.add_argument("--config", default=None, help="TOML config to install as /etc/fieldear/fieldear.toml "
                           "(default: keep the installed one, else the documented example)")
            q.add_argument("--model", default=None, help="bundle to install as <data_dir>/models/current")
            q.add_argument("--exec", dest="exec_path", default=None,
                           help="the fieldear script the unit runs (default: the one beside this Python)")
            q.add_argument("--dynamic-user", action="store_true",
                           help="DynamicUser=yes + StateDirectory= instead of a created `fieldear` user")
            q.add_argument("--no-start", action="store_true", help="enable but do not start now")
            q.add_argument("--web", action="store_true", help="also install fieldear-web.service: the review page "
                           "(`fieldear serve`, needs the web extra) with the same config and user")

    q = ssub.add_parser("install", help="as root: user, dirs, config, bundle, unit; daemon-reload; enable --now")
    common(q, install=True)
    q.set_defaults(func=_lazy("firmware_tools.service", "cmd_install"))

    q = ssub.add_parser("uninstall", help="as root: disable --now and remove the unit (--purge: also data, config, user)")
    common(q, install=False)
    q.add_argument("--purge", action="store_true", help="also delete the data dir (the log!), /etc/fieldear and the user")
    q.set_defaults(func=_lazy("firmware_tools.service", "cmd_uninstall"))

    q = ssub.add_parser("render", help="print the unit `service install` would write")
    q.add_argument("--config", default=None, help="TOML config (data dir, MQTT -> network, watchdog)")
    q.add_argument("--exec", dest="exec_path", default=None, help="the fieldear script the unit runs")
    q.add_argument("--dynamic-user", action="store_true", help="DynamicUser=yes instead of a `fieldear` user")
    q.add_argument("--web", action="store_true", help="print fieldear-web.service (`fieldear serve`) instead")
    q.set_defaults(func=_lazy("firmware_tools.service", "cmd_render"))

    p = sub.add_parser("deploy", help="copy a bundle and/or config to a device over ssh, switch, restart, check, "
                       "roll back on failure")
    p.add_argument("host", help="ssh destination, e.g. pi@field-03.local")
    p.add_argument("--model", default=None, help="bundle directory to deploy")
    p.add_argument("--config", default=None, help="TOML config to deploy as the device's config")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--ssh-command", default="ssh", help="remote shell command (default: ssh); also used by rsync")
    p.add_argument("--rsync-command", default="rsync", help="rsync command (default: rsync)")
    p.add_argument("--remote-fieldear", default="/opt/fieldear/venv/bin/fieldear", help="fieldear on the device")
    p.add_argument("--remote-data-dir", default=str(SYSTEM_DATA_DIR), help="data dir on the device (models/ is in it)")
    p.add_argument("--remote-config", default=str(SYSTEM_CONFIG), help="config path on the device")
    p.add_argument("--remote-stage", default="/tmp/fieldear-deploy", help="upload directory on the device")
    p.add_argument("--restart-command", default=None,
                   help="restart on the device (default: systemctl restart fieldear, with sudo)")
    p.add_argument("--check-command", default=None,
                   help="health check on the device; exit 0 = healthy (default: fieldear status --json)")
    p.add_argument("--check-tries", type=int, default=6, help="health check attempts before rolling back")
    p.add_argument("--check-interval", type=float, default=5.0, help="seconds between health check attempts")
    p.add_argument("--no-sudo", action="store_true", help="run device-side commands without sudo (root@host)")
    p.add_argument("--keep", type=int, default=3, help="model versions to keep on the device (besides current)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_lazy("firmware_tools.deploy", "cmd_deploy"))


def _lazy(module: str, name: str):
    def handler(args):
        import importlib

        return getattr(importlib.import_module(module), name)(args)

    return handler
