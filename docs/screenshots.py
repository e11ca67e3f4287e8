"""Screenshots of TensorBoard's tabs and of `nas report` for a run, taken by a real browser
(headless Chromium from the OS packages: `apt-get install chromium-headless-shell`). Not part of
the test suite: run it by hand to refresh docs/images/ after the monitor changes.

    python docs/screenshots.py RUN_DIR [--out docs/images]

TensorBoard is started on 127.0.0.1 on a free port and stopped at the end; nothing leaves this
machine."""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# TensorBoard tab -> the file name under --out; the hash selects the tab, the query keeps
# smoothing off so short runs show every point
TABS = {
    "timeseries": "tensorboard-time-series.png",
    "custom_scalars": "tensorboard-alpha-curves.png",
    "images": "tensorboard-heatmaps-and-cells.png",
    "text": "tensorboard-genotype.png",
}


def browser() -> str:
    for name in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("no Chromium found: apt-get install chromium-headless-shell")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def screenshot(url: str, path: Path, size: str = "1400,1000", wait_ms: int = 15000) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                        "--hide-scrollbars", f"--window-size={size}", f"--virtual-time-budget={wait_ms}",
                        f"--screenshot={path}", url], check=True, capture_output=True, timeout=120)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "images")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # as the command a run prints (nas_tensorboard.monitor.tensorboard_command), on loopback
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--samples_per_plugin",
                               "images=1000,text=1000", "--logdir_spec", f"{args.run_dir.name}:{args.run_dir}",
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):  # wait until it answers (bounded: about a minute)
            try:
                urllib.request.urlopen(base, timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        for tab, name in TABS.items():
            screenshot(f"{base}/?smoothing=0#{tab}", args.out / name)
    finally:
        server.terminate()
        server.wait(timeout=30)
    report = args.run_dir / "report.html"
    if report.is_file():
        screenshot(report.resolve().as_uri(), args.out / "nas-report.png", size="1200,1600", wait_ms=3000)


if __name__ == "__main__":
    main()
