"""Make sure Debian's Chromium is present for the browser tests (``make browser``).

Playwright drives the system browser at ``/usr/bin/chromium``; ``playwright install`` cannot
download browsers on our machines. As root this script installs the ``chromium`` apt package
when it is missing; otherwise it prints the command to run and exits with status 1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CHROMIUM = Path(os.environ.get("BOOK_CHROMIUM", "/usr/bin/chromium"))
APT_COMMAND = "apt-get update && apt-get install -y chromium"


def main() -> int:
    if CHROMIUM.exists():
        print(f"setup_browser: found {CHROMIUM}")
        return 0
    if shutil.which("apt-get") is None:
        print(
            f"setup_browser: {CHROMIUM} is missing and apt-get is not available.\n"
            "Install Chromium with your system's package manager, or point BOOK_CHROMIUM "
            "at a Chromium/Chrome binary.",
            file=sys.stderr,
        )
        return 1
    if os.geteuid() != 0:
        print(
            f"setup_browser: {CHROMIUM} is missing. Install it as root with:\n\n"
            f"    sudo sh -c '{APT_COMMAND}'\n",
            file=sys.stderr,
        )
        return 1
    print(f"setup_browser: {CHROMIUM} is missing; running: {APT_COMMAND}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "chromium"], check=True, env=env
    )
    if not CHROMIUM.exists():
        print(f"setup_browser: apt-get finished but {CHROMIUM} is still missing", file=sys.stderr)
        return 1
    print(f"setup_browser: installed {CHROMIUM}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
