"""The install puts the pipelines under the project's namespace (`vidrender.pipelines`), never as a
top-level `pipelines` package that would clash with an unrelated package of that name on PyPI.

Both kinds of install are checked from a folder outside the repository, so the repository's own
folders on `sys.path` cannot make the imports pass.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMPORTS = "import vidrender.pipelines.motion.pipeline, vidrender.pipelines.scene3d.model, vidrender.cli"


def _python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          env={**_clean_env(), **env})


def _clean_env() -> dict[str, str]:
    import os

    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


@pytest.mark.skipif(not any(True for _ in metadata.distributions(name="vidrender")), reason="vidrender not installed")
def test_installed_package_imports_from_outside_the_repository(tmp_path):
    result = _python(f"{IMPORTS}; import vidrender.pipelines as p; print(p.__path__[0])", tmp_path)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).name == "pipelines"
    top_level = _python("import pipelines", tmp_path)
    assert "No module named 'pipelines'" in top_level.stderr


@pytest.mark.slow
def test_wheel_installs_pipelines_under_the_vidrender_namespace(tmp_path):
    source = tmp_path / "source"
    for name in ("pyproject.toml", "README.md", "vidrender", "pipelines"):
        copy = ["cp", "-r", str(ROOT / name), str(source / name)]
        source.mkdir(exist_ok=True)
        subprocess.run(copy, check=True)
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = wheels.glob("vidrender-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "vidrender/pipelines/motion/model.py" in names
    assert not [name for name in names if name.startswith("pipelines/")]
    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                                str(wheel)], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-2000:]
    # every module of the wheel imports from the installed copy (a package missing from the wheel fails here)
    walk = (f"import pkgutil, importlib, vidrender; assert vidrender.__file__.startswith({str(site)!r}); "
            "[importlib.import_module(m.name) for m in pkgutil.walk_packages(vidrender.__path__, 'vidrender.')]; "
            + IMPORTS)
    result = _python(walk, tmp_path, PYTHONPATH=str(site))
    assert result.returncode == 0, result.stderr[-2000:]
