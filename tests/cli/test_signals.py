"""SIGTERM (a CI timeout, `kill`, a job scheduler) is handled like Ctrl-C: a real `int8kit`
process gets a real signal; the final files are complete or absent, temporaries are removed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import models
import pytest

# ~2.5 s each (a fresh Python process that imports ONNX Runtime): slow.
pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
    pytest.mark.slow,
]

ENV = {**os.environ, "INT8KIT_NO_PROGRESS": "1"}


def _wait_for(path: Path, proc, timeout=60.0):
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"exited early: {proc.communicate()}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("marker never appeared")
        time.sleep(0.05)


def _terminate(proc) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_sigterm_during_calibration_leaves_nothing(tmp_path):
    model = models.save(models.conv_bn_relu_chain(batch=1), tmp_path / "chain.onnx")
    marker = tmp_path / "calibrating"
    script = tmp_path / "loader.py"
    script.write_text(
        "import pathlib, time\nimport numpy as np\n"
        "def load_data():\n"
        "    for i in range(4):\n"
        "        if i == 2:\n"
        f"            pathlib.Path({str(marker)!r}).touch()\n"
        "            time.sleep(60)\n"
        "        yield {'x': np.full((1, 3, 8, 8), i, np.float32)}\n"
    )
    out = tmp_path / "out"
    argv = ["quantize", model, "--data-loader-script", str(script), "-o", str(out / "q.onnx")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "int8kit", *argv, "--holdout", "0"],
        env=ENV,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(marker, proc)
    rc, err = _terminate(proc)
    assert rc == 143, err
    assert "terminated (SIGTERM); no output was left half-written" in err
    assert "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


# Runs the real CLI in a real process; the only addition is a pause inside save_model, after
# the full model is in the temporary folder and before it is renamed, so that the signal lands
# exactly while the output is being written.
PAUSED_WRITER = """
import pathlib, sys, time
import int8kit.onnx.model_io as model_io
from int8kit.cli.main import main

marker = pathlib.Path(sys.argv[1])
real = model_io._save

def paused(onnx, model, path, tmp, large):
    onnx.save_model(model, str(tmp))  # the full-size temporary
    marker.write_text(str(tmp))
    time.sleep(60)
    real(onnx, model, path, tmp, large)

model_io._save = paused
sys.exit(main(sys.argv[2:]))
"""


def test_sigterm_while_the_model_is_written_removes_the_temporary(tmp_path):
    model = models.save(models.conv_bn_relu_chain(batch=1), tmp_path / "chain.onnx")
    data = models.save_npz(tmp_path / "x.npz", n=6, x=(1, 3, 8, 8))
    out = tmp_path / "out"
    old = out / "q.onnx"
    out.mkdir()
    old.write_bytes(b"the previous run's model")
    marker = tmp_path / "writing"
    runner = tmp_path / "runner.py"
    runner.write_text(PAUSED_WRITER)
    argv = ["quantize", model, "--calib", data, "-o", str(old), "--holdout", "0"]
    argv += ["--no-bias-correction"]
    proc = subprocess.Popen(
        [sys.executable, str(runner), str(marker), *argv],
        env=ENV,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(marker, proc)
    temporary = Path(marker.read_text())
    assert temporary.stat().st_size > 1000  # the whole model was in the temporary folder
    rc, err = _terminate(proc)
    assert rc == 143, err
    assert not temporary.parent.exists()  # the temporary folder is gone
    assert old.read_bytes() == b"the previous run's model"  # the final file is untouched
    assert sorted(p.name for p in out.iterdir()) == ["q.onnx"]  # nothing else left behind
