import pathlib
import sys

# Tests import the shared tiny-model builders as `models` (tests/models.py).
sys.path.insert(0, str(pathlib.Path(__file__).parent))
