"""The optimizer library as its own package: a version, a wheel named radam-optim that depends only on torch,
NumPy needed by radam.theory alone, and the wheel built (~10 s), installed into a fresh venv that has only torch,
and its doctests run there."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import radam

LIB = Path(radam.__file__).resolve().parent
BLOCK_NUMPY = "import sys; sys.modules['numpy'] = None\n"  # any `import numpy` now raises ModuleNotFoundError


def test_version_is_the_changelogs_latest_and_the_wheel_depends_only_on_torch():
    assert re.fullmatch(r"\d+\.\d+\.\d+", radam.__version__)
    latest = re.search(r"^## (\d+\.\d+\.\d+)", (LIB / "CHANGELOG.md").read_text(), re.M).group(1)
    assert latest == radam.__version__
    project = tomllib.loads((LIB / "pyproject.toml").read_text())["project"]
    assert project["name"] == "radam-optim" and project["dependencies"] == ["torch>=2.4"]
    assert project["optional-dependencies"] == {"theory": ["numpy>=1.24"]}


def test_optimizers_work_without_numpy_and_theory_says_what_it_needs():
    code = BLOCK_NUMPY + (
        "import torch, radam\n"
        "p = torch.nn.Parameter(torch.ones(3)); p.grad = torch.ones(3)\n"
        "for cls in (radam.RAdam, radam.Adam): cls([p], weight_decay=0.1).step()\n"
        "radam.schedules.MultiStep\n"
        "try:\n    radam.theory\nexcept ModuleNotFoundError as err:\n    print(err)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=LIB.parent, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert "radam.theory needs NumPy" in out.stdout


def torch_only_site(target: Path) -> Path:
    """A directory of symlinks to torch and the distributions it requires (markers evaluated), nothing else:
    what a venv with only `pip install torch` would see. (Reuses this interpreter's torch: installing a CUDA
    torch wheel with its nvidia libraries into a fresh venv takes minutes and gigabytes.)"""
    from packaging.requirements import Requirement

    target.mkdir()
    todo, seen = ["torch"], set()
    while todo:
        name = todo.pop()
        dist = metadata.distribution(name)
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        for req in map(Requirement, dist.requires or []):
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
        tops = {f.parts[0] for f in dist.files or [] if f.parts and not f.parts[0].endswith(".data")
                and f.parts[0] not in ("..", "__pycache__")}
        for top in tops:
            src = Path(dist.locate_file(top))
            if src.exists() and not (target / top).exists() and (src.is_dir() or src.suffix in (".py", ".so")):
                (target / top).symlink_to(src)
    return target


def test_wheel_installs_into_a_torch_only_venv_and_its_doctests_pass(tmp_path):
    src = tmp_path / "src" / "radam"
    shutil.copytree(LIB, src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", str(src), "-w", str(tmp_path / "dist")], check=True)
    wheels = list((tmp_path / "dist").glob("*.whl"))
    assert [w.name for w in wheels] == [f"radam_optim-{radam.__version__}-py3-none-any.whl"]
    with zipfile.ZipFile(wheels[0]) as whl:
        names = whl.namelist()
        meta = whl.read(f"radam_optim-{radam.__version__}.dist-info/METADATA").decode()
    assert {"radam/__init__.py", "radam/radam.py", "radam/adam.py", "radam/_kernels.py"} <= set(names)
    assert not any(n.startswith("radam/tests") or n.endswith("pyproject.toml") for n in names)
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    assert requires == ["Requires-Dist: torch>=2.4", 'Requires-Dist: numpy>=1.24; extra == "theory"']

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "torch_only.pth").write_text(str(torch_only_site(tmp_path / "torch_only")) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "-q", str(wheels[0])], check=True)
    check = (
        "import doctest, importlib, sys, radam\n"
        f"assert radam.__file__.startswith({str(site)!r}), radam.__file__\n"
        "import importlib.util; assert importlib.util.find_spec('numpy') is None\n"
        "total = 0\n"
        "for name in ('radam.radam', 'radam.adam', 'radam._kernels', 'radam.schedules'):\n"
        "    r = doctest.testmod(importlib.import_module(name)); assert r.failed == 0, name; total += r.attempted\n"
        f"r = doctest.testfile({str(LIB / 'README.md')!r}, module_relative=False); assert r.failed == 0\n"
        "print(total + r.attempted, radam.__version__)\n")
    out = subprocess.run([str(python), "-c", check], capture_output=True, text=True, cwd=tmp_path,
                         env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")})
    assert out.returncode == 0, out.stderr[-3000:]
    attempted, version = out.stdout.split()
    assert int(attempted) >= 10 and version == radam.__version__
