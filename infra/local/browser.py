"""Chromium from Debian's packages, for the browser tests (``tests/e2e``).

A test tool's own browser download (``playwright install``) does not work on a closed network;
Debian's ``chromium`` does, and Playwright drives it through ``executable_path``. The install is
idempotent: nothing happens when the browser is already there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from chatbus import programs
from chatbus.console import say
from chatbus.errors import ConfigurationError

CHROMIUM = Path("/usr/bin/chromium")
INSTALL_HINT = "install it with: sudo apt-get install -y chromium"

# Headless on a machine with no GPU, no sandbox (root) and no way out to Google's hosts.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class BrowserUnavailable(ConfigurationError):
    """Chromium is not installed and this process cannot install it."""


# Debian's package first; then the names Ubuntu images and CI runners give Chromium or Chrome
# (Playwright drives any of them through executable_path).
OTHER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> Path | None:
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    for name in OTHER_NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def ensure_chromium() -> Path:
    """The path of Debian's Chromium, installing it with apt-get (as root) when missing."""
    found = find_chromium()
    if found is not None:
        return found
    if os.geteuid() != 0:
        raise BrowserUnavailable(f"chromium is not installed and we are not root; {INSTALL_HINT}")
    apt = shutil.which("apt-get")
    if apt is None:
        raise BrowserUnavailable(
            f"chromium is not installed and there is no apt-get; {INSTALL_HINT}"
        )
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    argv = [apt, "install", "-y", "--no-install-recommends", "chromium"]
    say("installing chromium from Debian's packages (apt-get)…")
    try:
        programs.run(argv, "apt-get install chromium", env=env)
    except ConfigurationError:
        say("apt-get install failed; running apt-get update and retrying…")
        try:
            programs.run([apt, "update"], "apt-get update", env=env)
            programs.run(argv, "apt-get install chromium", env=env)
        except ConfigurationError as exc:
            raise BrowserUnavailable(f"{exc}; {INSTALL_HINT}") from exc
    found = find_chromium()
    if found is None:
        raise BrowserUnavailable(f"chromium still not found after apt-get; {INSTALL_HINT}")
    return found


__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "BrowserUnavailable", "ensure_chromium", "find_chromium"]
