"""The flat modules as an installable package: pyproject.toml, the wheel, `pip install -e`.

The wheel is built from a copy of the checkout's packaging inputs (so the
build's build/ and *.egg-info stay out of the checkout) and installed into
a fresh virtualenv outside it. tests/test_beam_pseudo_label.py runs the Beam
pipeline from that virtualenv, as a worker that has only the package.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip's copy of the same parser
    from pip._vendor import tomli as tomllib

from conftest import ROOT
from packaging.requirements import Requirement

# Imported by the package tests to show where each module comes from.
WORKER_MODULES = ("beam_pseudo_label", "predict_label", "filter_stats", "checkpoints", "tfrecords")


def pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def requirement_lines():
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def top_level_modules(folder):
    return sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(folder, "*.py")))


def copy_sources(dest):
    """Copies what a build reads (pyproject.toml, README.md, the top-level modules) to `dest`."""
    os.makedirs(dest)
    for name in ["pyproject.toml", "README.md"] + [f"{m}.py" for m in top_level_modules(ROOT)]:
        shutil.copy(os.path.join(ROOT, name), dest)
    return dest


def pip(*args, python=None, timeout=300):
    """Runs this interpreter's pip offline (on `python`'s environment if given)."""
    target = ["--python", python] if python else []
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *target, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr[-3000:]}"
    return result


def build_wheel(tmp_path):
    """`pip wheel --no-deps --no-build-isolation` of a copy of the checkout: the wheel's path."""
    source = copy_sources(str(tmp_path / "source"))
    dist = str(tmp_path / "dist")
    pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, source)
    wheels = glob.glob(os.path.join(dist, "*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def fresh_venv(path):
    """A new virtualenv at `path` that also sees this environment's third-party packages.

    TensorFlow and Beam are too large to install per test, so a .pth file adds
    this environment's site-packages after the venv's own: the venv's
    installs come first, and nothing puts the checkout on sys.path (the tests
    check where every module is imported from).

    Returns:
      (python, site_packages) of the new virtualenv.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", path], check=True, timeout=600)
    python = os.path.join(path, "bin", "python")
    site_packages = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    shared = sysconfig.get_paths()["purelib"]
    with open(os.path.join(site_packages, "zz_shared_site_packages.pth"), "w") as f:
        f.write(f"import site; site.addsitedir({shared!r})\n")
    return python, site_packages


def install_wheel(tmp_path):
    """Builds the wheel and installs it into a fresh virtualenv: (python, site_packages)."""
    wheel = build_wheel(tmp_path)
    python, site_packages = fresh_venv(str(tmp_path / "venv"))
    pip("install", "--no-deps", "--no-index", wheel, python=python)
    return python, site_packages


def module_files(python, cwd, modules=WORKER_MODULES):
    """{module: file} as `python` imports them in `cwd`, without PYTHONPATH."""
    code = f"import importlib.util, json; print(json.dumps({{m: importlib.util.find_spec(m).origin for m in {list(modules)!r}}}))"
    result = subprocess.run(
        [python, "-c", code],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_env(),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def clean_env():
    """This environment without PYTHONPATH (so nothing points at the checkout)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def _key(requirement, extra=""):
    """A comparable (name, extras, specifiers, extra it belongs to) of a requirement string.

    `extra=""` reads the extra from the requirement's marker (wheel metadata).
    """
    r = Requirement(requirement)
    if extra == "":
        match = re.search(r'extra == "([^"]+)"', str(r.marker or ""))
        extra = match.group(1) if match else None
    return (r.name.lower(), frozenset(r.extras), r.specifier, extra)


def _name(requirement):
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()


def test_every_top_level_module_is_packaged():
    assert sorted(pyproject()["tool"]["setuptools"]["py-modules"]) == top_level_modules(ROOT)


def test_dependencies_are_requirements_txt():
    """requirements.txt (what CI installs) is exactly the dependencies and the extras."""
    project = pyproject()["project"]
    extras = project["optional-dependencies"]
    declared = project["dependencies"] + extras["beam"] + extras["dev"]
    assert sorted(declared) == sorted(requirement_lines())
    assert len({_name(r) for r in declared}) == len(declared)
    assert [_name(r) for r in extras["beam"]] == ["apache-beam"]
    # What the library modules import at run time is not an extra.
    assert {"tensorflow", "numpy", "absl-py", "keras"} <= {
        _name(r) for r in project["dependencies"]
    }


@pytest.mark.slow
@pytest.mark.e2e
def test_wheel_holds_the_modules_and_the_metadata(tmp_path):
    """The wheel installed into a fresh venv: its modules come from there, from any folder."""
    python, site_packages = install_wheel(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    files = module_files(python, str(elsewhere), ["main", *WORKER_MODULES])
    for module, path in files.items():
        assert path == os.path.join(site_packages, f"{module}.py"), (module, path)
    metadata = subprocess.run(
        [
            python,
            "-c",
            "import importlib.metadata as m, json; "
            "print(json.dumps([m.version('noisystudent'), m.requires('noisystudent')]))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=str(elsewhere),
        env=clean_env(),
    )
    version, requires = json.loads(metadata.stdout)
    project = pyproject()["project"]
    assert version == project["version"]
    extras = project["optional-dependencies"]
    expected = {_key(r, None) for r in project["dependencies"]}
    expected |= {_key(r, name) for name in ("beam", "dev") for r in extras[name]}
    assert {_key(r) for r in requires} == expected


@pytest.mark.slow
@pytest.mark.e2e
def test_editable_install_imports_the_source_folder(tmp_path):
    """`pip install -e` of a copy: the copy's modules are imported, and edits show at once."""
    source = copy_sources(str(tmp_path / "source"))
    python, _ = fresh_venv(str(tmp_path / "venv"))
    pip("install", "-e", source, "--no-deps", "--no-build-isolation", "--no-index", python=python)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    files = module_files(python, str(elsewhere), ["filter_stats", "tfrecords"])
    assert files == {m: os.path.join(source, f"{m}.py") for m in files}
    with open(os.path.join(source, "filter_stats.py"), "a") as f:
        f.write("\nEDITED_IN_PLACE = 1\n")
    result = subprocess.run(
        [python, "-c", "import filter_stats; print(filter_stats.EDITED_IN_PLACE)"],
        capture_output=True,
        text=True,
        cwd=str(elsewhere),
        env=clean_env(),
        timeout=600,
    )
    assert result.stdout.strip() == "1", result.stderr[-2000:]
