import subprocess
import sys

import pytest

from int8kit._deps import MissingDependencyError, require

HEAVY = ("onnxruntime", "torch", "tensorrt", "matplotlib", "cv2", "onnx", "tqdm", "skimage")


def test_import_int8kit_needs_numpy_only():
    code = (
        "import sys, int8kit, int8kit.calib, int8kit.data, int8kit.workflow, int8kit.ranges\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_missing_dependency_names_the_install_command():
    with pytest.raises(MissingDependencyError, match=r"pip install 'int8kit\[tensorrt\]'"):
        require("tensorrt.definitely_missing_module", "building engines")
    with pytest.raises(MissingDependencyError, match="pip install no_such_pkg_int8kit"):
        require("no_such_pkg_int8kit")
