"""What every benchmark script prints about where it ran: the CPU and the commit."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """``AMD EPYC ... (2 CPUs)``, from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} CPUs)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git(*command: str) -> str:
    """A git command's output in the repository ("unknown" without git)."""
    try:
        return subprocess.run(["git", *command], cwd=REPO_ROOT, capture_output=True, text=True).stdout
    except OSError:
        return "unknown"


def commit() -> str:
    """The short commit, with ``+dirty`` when the tree has uncommitted changes."""
    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no").strip() else "")
