"""The repository carries itself: nothing in it points outside it."""

from __future__ import annotations

import subprocess

from tests.support import REPO

# The contract lives in docs/reference.md; these were pointers to a file outside the repository.
OUTSIDE = ("../shared", "DESIGN.md")


def test_no_file_points_outside_the_repository() -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    offenders = []
    for name in filter(None, files):
        path = REPO / name.decode()
        if not path.is_file() or path.name == "test_repo.py":
            continue
        text = path.read_bytes()
        offenders.extend(f"{name.decode()}: {needle}" for needle in OUTSIDE if needle.encode() in text)
    assert offenders == []


def test_the_licence_is_the_one_the_package_declares() -> None:
    assert (REPO / "LICENSE").read_text().lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    assert 'license = "Apache-2.0"' in (REPO / "pyproject.toml").read_text()


def test_no_test_module_imports_another() -> None:
    """Helpers live in tests/support.py, a conftest or a helper module; a test module is no library."""
    offenders = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            words = line.split()
            if len(words) >= 2 and words[0] in ("from", "import") and words[1].startswith("tests.") \
                    and words[1].rsplit(".", 1)[-1].startswith("test_"):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []
