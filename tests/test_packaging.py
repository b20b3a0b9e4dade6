"""What a user installs: every package is listed, and a real (non-editable) install works.

The development environment has telediag installed *editable*, which finds modules in the
checkout whether or not ``pyproject.toml`` lists them, so a forgotten package (or the
migrations, which live outside ``src/``) only breaks a user's ``pip install``. These tests
make that break here instead.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
SAMPLE_DATA = ROOT / "sample_data"


def _setuptools_config() -> dict:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["setuptools"]


def _package_roots() -> dict[str, Path]:
    """Dotted package name -> its folder, for every root that ``package-dir`` maps:
    ``telediag`` (under ``src``) and ``telediag.store.migrations`` (``storage/migrations``)."""
    package_dir = _setuptools_config().get("package-dir", {})
    roots: dict[str, Path] = {}
    base = ROOT / package_dir.get("", ".")
    for child in sorted(base.iterdir()):
        if (child / "__init__.py").is_file():
            roots[child.name] = child
    for name, folder in package_dir.items():
        if name:
            roots[name] = ROOT / folder
    return roots


def _packages_on_disk() -> dict[str, Path]:
    """Every folder with an ``__init__.py`` under the package roots, as a dotted name."""
    found: dict[str, Path] = {}
    for root_name, root in _package_roots().items():
        for init in root.rglob("__init__.py"):
            folder = init.parent
            if "__pycache__" in folder.parts:
                continue
            rel = folder.relative_to(root).parts
            found[".".join((root_name, *rel))] = folder
    return found


def test_every_package_is_listed_in_pyproject() -> None:
    listed = set(_setuptools_config()["packages"])
    on_disk = _packages_on_disk()
    # the migrations are a package outside src/; they must be among those found
    assert {"telediag", "telediag.store.migrations", "telediag.store.migrations.versions"} <= on_disk.keys()

    missing = sorted(set(on_disk) - listed)
    assert not missing, (f"packages not listed in [tool.setuptools] packages of pyproject.toml, so a "
                         f"non-editable install would lack them: {missing}")
    stale = sorted(listed - set(on_disk))
    assert not stale, f"pyproject.toml lists packages that do not exist (or lack __init__.py): {stale}"


def test_no_module_folder_lacks_an_init() -> None:
    """A new folder of modules without ``__init__.py`` is a namespace package: setuptools would
    not ship it even if it were listed, and the listing test above would not see it."""
    lacking = []
    for root in _package_roots().values():
        for py in root.rglob("*.py"):
            folder = py.parent
            if "__pycache__" not in folder.parts and not (folder / "__init__.py").is_file():
                lacking.append(str(folder.relative_to(ROOT)))
    assert not lacking, f"folders with modules but no __init__.py: {sorted(set(lacking))}"


# -- a real install ---------------------------------------------------------------------------------


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}",
                    pytrace=False)
    return proc


def _copy_tree(dest: Path) -> Path:
    """The checkout as a user gets it (the working tree: top-level files, ``src``, ``storage``),
    without build leftovers, so building never writes into the checkout."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    dest.mkdir()
    for item in ROOT.iterdir():
        if item.is_file():
            shutil.copy2(item, dest / item.name)
    for folder in ("src", "storage"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=ignore)
    return dest


def _dependency_dirs() -> list[str]:
    """Where this interpreter's (not telediag's) installed dependencies live."""
    dirs = [*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return list(dict.fromkeys(d for d in dirs if Path(d).is_dir()))


_INSPECT = """
import json, sys, telediag
print(json.dumps({
    "file": telediag.__file__,
    "prefix": sys.prefix,
    "meta_path": [getattr(f, "__name__", type(f).__name__) for f in sys.meta_path],
}))
"""


def test_non_editable_install_runs_from_anywhere(tmp_path: Path) -> None:
    """Build a wheel as ``pip install .`` would, install it into a fresh venv, and use the
    installed ``telediag`` command from a folder outside the checkout: analysis of WFDB and
    SCP-ECG files, and the migrations (a first ``site add`` creates the schema)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TELEDIAG_") and k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH")}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    # 1. the wheel, built the way pip builds it for a user (isolated build environment)
    tree = _copy_tree(tmp_path / "tree")
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", dist, tree], cwd=elsewhere, env=env,
         timeout=180)
    wheels = list(dist.glob("telediag-*.whl"))
    assert len(wheels) == 1, wheels

    # 2. a fresh venv. Its dependencies come from this interpreter's site-packages through a
    # plain .pth path entry: unlike --system-site-packages, that does not run the .pth files
    # there, so the editable install's finder (which would quietly supply any module missing
    # from the wheel from the checkout) is not installed in the venv.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=elsewhere, env=env)
    vpython = venv / "bin" / "python"
    purelib = Path(_run([vpython, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=elsewhere, env=env).stdout.strip())
    (purelib / "_telediag_test_dependencies.pth").write_text("\n".join(_dependency_dirs()) + "\n")
    _run([vpython, "-m", "pip", "install", "--no-deps", "--ignore-installed", "--no-compile", "--quiet",
          wheels[0]], cwd=elsewhere, env=env)

    # 3. the venv imports its own copy, and nothing can fall back to the checkout
    seen = json.loads(_run([vpython, "-c", _INSPECT], cwd=elsewhere, env=env).stdout)
    installed = Path(seen["file"]).resolve().parent
    assert installed.is_relative_to(venv.resolve()), \
        f"the venv imports telediag from {seen['file']}, not from its own install"
    assert not installed.is_relative_to(ROOT.resolve())
    assert not any("Editable" in f for f in seen["meta_path"]), seen["meta_path"]

    # every file of the packages (modules, rules, the migrations and their template) is installed
    def files(folder: Path, as_: Path) -> set[Path]:
        return {as_ / p.relative_to(folder) for p in folder.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}

    expected = files(ROOT / "src" / "telediag", Path("telediag")) \
        | files(ROOT / "storage" / "migrations", Path("telediag/store/migrations"))
    missing = sorted(str(p) for p in expected if not (installed.parent / p).is_file())
    assert not missing, f"files of the source tree missing from the installed package: {missing}"

    # 4. the console script, from a folder outside the checkout
    telediag = venv / "bin" / "telediag"
    assert telediag.is_file(), "the wheel installs no telediag command"
    record = sorted((SAMPLE_DATA / "wfdb").glob("*.hea"))[0].with_suffix("")
    scp = SAMPLE_DATA / "ecg-formats" / "scp-ecg" / "Example.scp"
    for path in (record, scp):
        result = json.loads(_run([telediag, "analyze", path, "--json"], cwd=elsewhere, env=env).stdout)
        assert isinstance(result["heart_rate_bpm"], (int, float)) and 20 < result["heart_rate_bpm"] < 250, \
            (path, result["heart_rate_bpm"])

    data = tmp_path / "data"
    _run([telediag, "site", "add", "Installed Prefecture", "--level", "prefecture", "--data-dir", data],
         cwd=elsewhere, env=env)
    listed = json.loads(_run([telediag, "site", "list", "--json", "--data-dir", data],
                             cwd=elsewhere, env=env).stdout)
    assert [(s["name"], s["level"], s["parent"]) for s in listed] == [("Installed Prefecture", "prefecture", None)]
    assert (data / "telediag.sqlite3").is_file()
    assert not (elsewhere / "telediag-data").exists(), "--data-dir was not honoured"
