"""cmake --install puts the package where Debian's python3 looks for it, and it works from
there alone: the core links the library statically."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from conftest import BIN_DIR, PYTHON

BUILD_DIR = Path(os.environ.get("SHMCAST_BUILD_DIR", BIN_DIR.parent))


def test_installed_package_imports_from_debian_site_packages(daemon):
    prefix = Path(tempfile.mkdtemp(prefix="shmcast-py-install-"))
    try:
        subprocess.run(["cmake", "--install", str(BUILD_DIR), "--prefix", str(prefix)],
                       check=True, capture_output=True, timeout=120)
        found = sorted(prefix.glob("lib/python3*/dist-packages/shmcast"))
        assert len(found) == 1
        site = found[0].parent
        relative = site.relative_to(prefix)
        # For the default prefix, /usr/local, that is a folder Debian's python3 searches.
        searched = subprocess.run(
            [PYTHON, "-I", "-c", "import site; print('\\n'.join(site.getsitepackages()))"],
            capture_output=True, text=True, check=True).stdout.split()
        assert f"/usr/local/{relative}" in searched
        for name in ["__init__.py", "__init__.pyi", "client.py", "exceptions.py", "asyncio.py",
                     "asyncio.pyi", "_shmcast.pyi", "py.typed"]:
            assert (site / "shmcast" / name).exists(), name
        code = ("import sys, shmcast; sys.stdout.write(shmcast.__file__ + ' ' + "
                "str(shmcast.Redis(sys.argv[1]).publish('c', 'x')))")
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(site),
               "LD_LIBRARY_PATH": "", "PYTHONDONTWRITEBYTECODE": "1"}
        out = subprocess.run([PYTHON, "-c", code, daemon.bus], env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout == f"{site / 'shmcast' / '__init__.py'} 0"
    finally:
        shutil.rmtree(prefix, ignore_errors=True)
