"""The wheel `pip install .` installs holds clawgate's own packages and nothing generic at the
top of site-packages: bench/ and devkit/ stay in the repository (a `bench` package installed
beside others' would shadow theirs, and its scripts failed to import from there)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from devkit.processes import REPO_ROOT

PRODUCT = {"clawgate", "services", "gateway_edge", "agent_worker"}
SOURCES = ["pyproject.toml", "README.md", *PRODUCT, "bench", "devkit", "tests"]


def test_the_wheel_holds_only_clawgates_own_top_level_packages(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy: building in the checkout would leave build/ there
    for name in SOURCES:
        origin = REPO_ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy(origin, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("clawgate-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {
        name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")
    }
    assert top_level == PRODUCT
    assert "gateway_edge/ui/app.js" in names  # the chat page ships inside
    assert "clawgate/agent/v1/agent_service_pb2.py" in names
    (entry_points,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "clawgate = clawgate.cli:main" in scripts
