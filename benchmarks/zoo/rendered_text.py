"""Text drawn with PIL on photo crops, for the OCR models of the held-out set (ppocr_det,
ppocr_rec): the photos are the zoo's disjoint calibration / evaluation crops (zoo/photos.py) and
the words are the zoo's disjoint sentences (zoo/text.py: calibration from the Python Language
Reference, evaluation from standard-library docstrings), so no evaluation image shares a photo
or a sentence with calibration. Fonts: the DejaVu TrueType fonts of the machine
(/usr/share/fonts/truetype/dejavu); the draw of sample i depends only on (split, i)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansCondensed.ttf",
    "DejaVuSerif-Bold.ttf",
)
SEEDS = {"calib": 1000, "eval": 2000}  # the rendering's random streams, one per split


@lru_cache(maxsize=2)
def sentences(split: str) -> list[str]:
    from zoo.text import docstring_sentences, reference_sentences

    return reference_sentences() if split == "calib" else docstring_sentences()


def font(name: str, size: int):
    from PIL import ImageFont

    path = FONT_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the OCR models of the held-out set need the DejaVu fonts")
    return ImageFont.truetype(str(path), size)


def rng(split: str, i: int) -> np.random.Generator:
    return np.random.default_rng([SEEDS[split], i])


def ink(rgb: np.ndarray) -> tuple[int, int, int]:
    """A text colour that stands out from the region ``rgb`` (dark on light, light on dark)."""
    lum = float(np.mean(rgb @ np.array([0.299, 0.587, 0.114])))
    return (20, 20, 20) if lum > 110 else (240, 240, 235)


def fit_words(words: list[str], fnt, width: int) -> str:
    """The longest prefix of ``words`` whose rendered width is at most ``width`` (>= 1 word)."""
    text = words[0]
    for w in words[1:]:
        cand = f"{text} {w}"
        if fnt.getlength(cand) > width:
            break
        text = cand
    return text
