"""``python -m wan2gp_emulator``: serve an emulated WanGP until SIGINT/SIGTERM.

When the server is ready, one line ``WAN2GP_EMULATOR_URL=http://HOST:PORT/`` is printed on stdout (flushed), so a
parent process can read it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

for _name, _value in (("HF_HUB_DISABLE_TELEMETRY", "1"), ("GRADIO_ANALYTICS_ENABLED", "False"),
                      ("DO_NOT_TRACK", "1")):
    os.environ.setdefault(_name, _value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m wan2gp_emulator",
        description="Serve an emulated WanGP web UI (a real Gradio 5.29 server with WanGP's API; no GPU needed).")
    parser.add_argument("--flavour", choices=["v12", "v6"], default="v12",
                        help="WanGP version to emulate: v12 (12.60) or v6 (6.31); default v12")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port; 0 picks a free one (default 7860)")
    parser.add_argument("--output-dir", default=None, help="where generated files go (default: a temp dir)")
    parser.add_argument("--step-seconds", type=float, default=0.5,
                        help="duration of one emulated denoising step (default 0.5)")
    parser.add_argument("--missing-weights", action="store_true",
                        help="every generation fails like a WanGP without model weights")
    parser.add_argument("--crash-after-steps", type=int, default=None, metavar="N",
                        help="the process dies (os._exit) after N denoising steps")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}: anyone who can reach it can use this server (no auth)",
              file=sys.stderr)
    from .server import EmulatorServer

    server = EmulatorServer(args.flavour, host=args.host, port=args.port or None, output_dir=args.output_dir,
                            step_seconds=args.step_seconds, missing_weights=args.missing_weights,
                            crash_after_steps=args.crash_after_steps)
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
