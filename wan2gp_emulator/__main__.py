"""``python -m wan2gp_emulator``: serve an emulated WanGP until SIGINT/SIGTERM.

When the server is ready, one line ``WAN2GP_EMULATOR_URL=http://HOST:PORT/`` is printed on stdout (flushed), so a
parent process can read it (with ``--mcp``: the MCP endpoint, ``http://HOST:PORT/mcp``).
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
    parser.add_argument("--flavour", choices=["v6", "v8", "v9", "v11", "v12", "v13"], default="v12",
                        help="WanGP release to emulate: v6 (6.31), v8 (8.11), v9 (9.81), v11 (11.66), v12 (12.60) or "
                             "v13 (13.x, --mcp only); default v12")
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
    parser.add_argument("--mcp", action="store_true",
                        help="serve WanGP's MCP server (streamable HTTP at /mcp) instead of the web UI "
                             "(flavours v12 and v13)")
    parser.add_argument("--mcp-api-version", type=int, choices=[1, 2], default=None,
                        help="MCP tool contract: 1 (12.x's tools) or 2 (13.x's default); default: the flavour's")
    parser.add_argument("--mcp-async", action="store_true",
                        help="API v2: allow wait=false in wangp_generate (WanGP's --mcp-async)")
    parser.add_argument("--mcp-auth", default=None, metavar="TOKEN",
                        help="require 'Authorization: Bearer TOKEN' on MCP requests and ticket routes (stands in "
                             "for WanGP's OAuth --mcp-auth)")
    parser.add_argument("--inspect", action="store_true",
                        help="also serve GET /emulator/info, /emulator/events and /emulator/sessions (web UI) or "
                             "/emulator/jobs (MCP) as JSON, for tests that run the emulator in another process; "
                             "a real WanGP has no such routes")
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
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.flavour == "v13" and not args.mcp:
        parser.error("--flavour v13 is emulated only as an MCP server: add --mcp")
    if (args.mcp_api_version or args.mcp_async or args.mcp_auth) and not args.mcp:
        parser.error("--mcp-api-version, --mcp-async and --mcp-auth need --mcp")
    if args.mcp and args.flavour not in ("v12", "v13"):
        parser.error("--mcp serves flavours v12 (12.60, API v1) and v13 (13.x, API v2 or v1)")
    if args.mcp and args.flavour == "v12" and args.mcp_api_version == 2:
        parser.error("WanGP 12.60 serves only MCP API v1: use --flavour v13 for API v2")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.mcp_auth:
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
                            state_dir=args.state_dir, real_size=args.real_size, mcp=args.mcp,
                            mcp_api_version=args.mcp_api_version, mcp_async=args.mcp_async, mcp_auth=args.mcp_auth,
                            inspect=args.inspect)
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
