"""``python -m wan2gp_emulator``: serve an emulated WanGP until SIGINT/SIGTERM.

When the server is ready, one line ``WAN2GP_EMULATOR_URL=http://HOST:PORT/`` is printed on stdout (flushed), so a
parent process can read it.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading

for _name, _value in (("HF_HUB_DISABLE_TELEMETRY", "1"), ("GRADIO_ANALYTICS_ENABLED", "False"),
                      ("DO_NOT_TRACK", "1")):
    os.environ.setdefault(_name, _value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m wan2gp_emulator",
        description="Serve an emulated WanGP web UI (a real Gradio 5.29 server with WanGP's API; no GPU needed).")
    parser.add_argument("--flavour", choices=["v6", "v8", "v9", "v11", "v12"], default="v12",
                        help="WanGP release to emulate: v6 (6.31), v8 (8.11), v9 (9.81), v11 (11.66) or v12 (12.60); "
                             "default v12")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port; 0 picks a free one (default 7860)")
    parser.add_argument("--output-dir", default=None, help="where generated files go (default: a temp dir)")
    parser.add_argument("--step-seconds", type=float, default=0.5,
                        help="duration of one emulated denoising step (default 0.5)")
    parser.add_argument("--missing-weights", action="store_true",
                        help="every generation fails like a WanGP without model weights")
    parser.add_argument("--crash-after-steps", type=int, default=None, metavar="N",
                        help="the process dies (os._exit) after N denoising steps")
    parser.add_argument("--load-seconds", type=float, default=0.0, metavar="N",
                        help="each model load takes N more seconds with no status and no progress, as while WanGP "
                             "downloads weights (default 0)")
    parser.add_argument("--real-size", action="store_true",
                        help="serve 12.60's whole UI (2.6 MB /config, 4.5 MB API description), as the real server does")
    parser.add_argument("--state-dir", default=None,
                        help="where wgp_config.json (the last model, kept across restarts) lives "
                             "(default: the output dir)")
    return parser


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is free
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}: anyone who can reach it can use this server (no auth)",
              file=sys.stderr)
    try:
        from .server import EmulatorServer
    except ModuleNotFoundError as exc:  # gradio, av...: the emulator's extra is not installed
        print(f"error: the emulator needs {exc.name}, which is not installed\n"
              '  hint: install the emulator\'s extra: pip install -e ".[emulator]"', file=sys.stderr)
        return 1
    if args.port and not _port_free(args.host, args.port):
        print(f"error: port {args.port} on {args.host} is taken (a WanGP or another emulator already runs there?)\n"
              "  hint: --port 0 picks a free port (the URL is printed when ready), or choose another with --port",
              file=sys.stderr)
        return 1

    server = EmulatorServer(args.flavour, host=args.host, port=args.port or None, output_dir=args.output_dir,
                            step_seconds=args.step_seconds, missing_weights=args.missing_weights,
                            crash_after_steps=args.crash_after_steps, load_seconds=args.load_seconds,
                            state_dir=args.state_dir, real_size=args.real_size)
    done = threading.Event()

    def stop(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    url = server.start()
    print(f"WAN2GP_EMULATOR_URL={url}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
