"""The OCR tests on a machine without the tesseract binary: they skip with a reason (the README promises it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

OCR_TEST_FILES = ["tests/test_inference.py", "tests/test_processor.py", "tests/test_image_processor.py"]


def test_ocr_tests_skip_when_the_tesseract_binary_is_missing():
    path = os.path.dirname(sys.executable)  # Python and its packages (pytesseract among them), no /usr/bin
    if shutil.which("tesseract", path=path):
        pytest.skip(f"tesseract is installed beside Python in {path}")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-k", "ocr", *OCR_TEST_FILES],
        cwd=REPO_ROOT,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    skipped = re.findall(r"SKIPPED \[1\] (tests/\S+?):\d+: (.*)", result.stdout)
    assert {file for file, _ in skipped} == set(OCR_TEST_FILES), result.stdout[-4000:]
    assert all("tesseract" in reason for _, reason in skipped)
    assert " failed" not in result.stdout
