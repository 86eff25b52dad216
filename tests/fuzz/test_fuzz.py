"""Run the atheris harness briefly, seeded with every committed vector and sample file."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import support

ROOT = Path(__file__).resolve().parents[2]
SEEDS = [
    ROOT / "tests" / "vectors" / "valid",
    ROOT / "tests" / "vectors" / "invalid",
    ROOT / "tests" / "vectors" / "data" / "valid",
    ROOT / "tests" / "vectors" / "data" / "invalid",
    ROOT / "docs" / "samples" / "capi",
]
SECONDS = int(os.environ.get("KEYBLOB_FUZZ_SECONDS", "20"))
PREFIXES = 16  # the harness picks its target by the first byte, modulo its target count


def _corpus(folder: Path) -> int:
    """Each seed file once per target that could take it (the first byte picks the target)."""
    count = 0
    for seed_dir in SEEDS:
        for path in sorted(seed_dir.glob("*")):
            if not path.is_file() or path.stat().st_size > 65536:
                continue
            data = path.read_bytes()
            for index in range(PREFIXES):
                (folder / f"{path.name}.{index}").write_bytes(bytes([index]) + data)
                count += 1
    return count


@pytest.mark.slow
def test_parsers_survive_fuzzing(tmp_path):
    if importlib.util.find_spec("atheris") is None:  # a dev dependency on Linux x86_64 only
        support.skip_or_fail("atheris is missing (pip install -e .[dev])")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    assert _corpus(corpus) > 100
    run = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("fuzz_parsers.py")),
            str(corpus),
            f"-max_total_time={SECONDS}",
            "-max_len=20000",
            "-rss_limit_mb=1024",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=SECONDS + 120,
        check=False,
    )
    crashes = [p.name for p in tmp_path.glob("crash-*")]
    assert run.returncode == 0 and not crashes, run.stderr[-3000:]
    assert "Done" in run.stderr  # libFuzzer's last line: "Done N runs in S second(s)"
    shutil.rmtree(corpus)
