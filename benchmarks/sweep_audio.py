"""Audio features for the sweep's speech models, in NumPy (librosa and python_speech_features are
not installed here): what each package computes before its ONNX model, close enough to feed the
model the values it sees in use (same scale, shape and layout; not bit-exact to those packages)."""

from __future__ import annotations

import numpy as np


def _hz_to_mel_slaney(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, np.float64)
    mel = f / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log_part, mel)


def _mel_to_hz_slaney(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * 200.0 / 3)


def mel_filters(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa.filters.mel defaults: Slaney mel scale, Slaney area normalisation, 0..sr/2."""
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mels = np.linspace(_hz_to_mel_slaney(0.0), _hz_to_mel_slaney(sr / 2), n_mels + 2)
    hz = _mel_to_hz_slaney(mels)
    lower = (freqs[None] - hz[:-2, None]) / np.diff(hz)[:-1, None]
    upper = (hz[2:, None] - freqs[None]) / np.diff(hz)[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return weights * (2.0 / (hz[2:] - hz[:-2]))[:, None]


def librosa_db_mel(audio: np.ndarray, sr: int, n_fft: int, hop: int, n_mels: int) -> np.ndarray:
    """(power_to_db(melspectrogram(y, sr, n_fft, hop, n_mels), ref=max) + 40) / 40, transposed to
    (frames, n_mels): DNSMOS P.808 and AECMOS features. Centred frames, periodic Hann window."""
    pad = n_fft // 2
    y = np.pad(audio.astype(np.float64), pad)
    frames = 1 + (len(y) - n_fft) // hop
    idx = np.arange(n_fft)[None] + hop * np.arange(frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    power = np.abs(np.fft.rfft(y[idx] * window, axis=1)) ** 2
    mel = power @ mel_filters(sr, n_fft, n_mels).T
    db = 10 * np.log10(np.maximum(mel, 1e-10))
    db = np.maximum(db - db.max(), -80.0)  # ref=np.max, top_db=80
    return ((db + 40) / 40).astype(np.float32)


def logfbank(audio: np.ndarray, sr: int = 16000, nfilt: int = 64, nfft: int = 512) -> np.ndarray:
    """python_speech_features.logfbank(winlen=0.025, winstep=0.01, preemph=0): rectangular
    frames, power spectrum / nfft, HTK-mel triangular filters, log: (frames, nfilt)."""
    win, step = int(0.025 * sr), int(0.01 * sr)
    frames = 1 + int(np.ceil((len(audio) - win) / step))
    y = np.pad(audio.astype(np.float64), (0, (frames - 1) * step + win - len(audio)))
    idx = np.arange(win)[None] + step * np.arange(frames)[:, None]
    power = np.abs(np.fft.rfft(y[idx], nfft, axis=1)) ** 2 / nfft
    mel = 2595 * np.log10(1 + np.linspace(0, sr / 2, nfilt + 2) / 700.0)
    bins = np.floor((nfft + 1) * (700 * (10 ** (mel / 2595) - 1)) / sr).astype(int)
    fb = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        fb[j, lo:mid] = (np.arange(lo, mid) - lo) / max(mid - lo, 1)
        fb[j, mid:hi] = (hi - np.arange(mid, hi)) / max(hi - mid, 1)
    feat = power @ fb.T
    return np.log(np.where(feat == 0, np.finfo(float).eps, feat)).astype(np.float32)
