"""CLIP encoders: the one factory (`load_encoder`) and the one place vectors are normalised."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import open_clip
import torch
from PIL import Image

from search.errors import UnknownModelError, WeightsUnavailableError
from search.models.query_runtime import QueryRuntime, ThreadChooser
from search.models.query_towers import Features, QueryTowers
from search.models.text_prefix import encode_text_prefix, supports_prefix, token_lengths

HOUSE_MODEL = "house"
RANDOM_INIT = "random"  # pretrained=RANDOM_INIT: the seeded random init, even for house
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
_registered = threading.Lock()
_configs_added = False


@dataclass(frozen=True)
class WeightsSource:
    """Where an encoder's weights come from; `identity` goes into index manifests."""

    kind: str  # "random" | "file" | "dir" | "hub"
    location: str | None
    identity: str


def register_house_configs() -> None:
    """Register our JSON model configs (package data) with open_clip, once per process."""
    global _configs_added
    with _registered:
        if _configs_added:
            return
        config_dir = resources.files("search.models") / "configs"
        open_clip.add_model_config(Path(str(config_dir)))
        _configs_added = True


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _file_identity(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()[:16]}"


def _checkpoint_in_dir(path: Path) -> Path:
    for name in (WEIGHTS_FILE, "open_clip_pytorch_model.bin", "model.safetensors"):
        if (path / name).is_file():
            return path / name
    raise WeightsUnavailableError(f"no checkpoint file found in directory {path}")


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """One quick TCP connect to the hub: huggingface_hub itself retries for ~25 s offline."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _download_tag(model: str, tag: str, offline: bool) -> Path:
    from huggingface_hub import hf_hub_download

    cfg = open_clip.get_pretrained_cfg(model, tag)
    repo_id, filename = os.path.split(cfg.get("hf_hub", "").rstrip("/"))
    hint = f"pass a local checkpoint instead: load_encoder({model!r}, pretrained='/path/to/file')"
    if not repo_id:
        raise WeightsUnavailableError(f"tag {tag!r} of {model!r} has no hub location; {hint}")
    filename = filename or "open_clip_pytorch_model.bin"
    try:
        return Path(hf_hub_download(repo_id, filename, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached: fall through to a download
        pass
    if offline or not _hub_reachable():
        raise WeightsUnavailableError(
            f"pretrained weights {tag!r} for {model!r} are not cached and the model hub "
            f"cannot be reached (offline); {hint}"
        )
    try:
        return Path(hf_hub_download(repo_id, filename, etag_timeout=10))
    except Exception as exc:
        message = f"download of {tag!r} for {model!r} failed: {exc}; {hint}"
        raise WeightsUnavailableError(message) from exc


def resolve_weights(model: str, pretrained: str | None, offline: bool = False) -> WeightsSource:
    """Decide where weights come from without building anything."""
    if pretrained == RANDOM_INIT:
        return WeightsSource("random", None, "random-init:seed0")
    if pretrained is None:
        shipped = house_weights_path() if model == HOUSE_MODEL else None
        if shipped is not None:
            return WeightsSource("file", str(shipped), _file_identity(shipped))
        return WeightsSource("random", None, "random-init:seed0")
    path = Path(pretrained).expanduser()
    if path.is_dir():
        file = _checkpoint_in_dir(path)
        return WeightsSource("file", str(file), _file_identity(file))
    if path.is_file():
        return WeightsSource("file", str(path), _file_identity(path))
    if pretrained in open_clip.list_pretrained_tags_by_model(model):
        file = _download_tag(model, pretrained, offline)
        return WeightsSource("hub", str(file), f"tag:{pretrained}")
    tags = open_clip.list_pretrained_tags_by_model(model)
    raise WeightsUnavailableError(
        f"pretrained={pretrained!r} is neither a local file/directory nor a known tag of "
        f"{model!r} (known tags: {', '.join(tags) or 'none'})"
    )


def house_weights_path() -> Path | None:
    """The house model checkpoint shipped as package data, when present."""
    path = Path(str(resources.files("search.models") / "weights" / f"{HOUSE_MODEL}.safetensors"))
    return path if path.is_file() else None


def _build_model(model: str, weights: WeightsSource, device: torch.device):
    """open_clip's factory builds the model; a fixed seed makes random init reproducible."""
    model_dir = Path(model).expanduser()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if model_dir.is_dir():
            name = f"local-dir:{model_dir.resolve()}"
            built = open_clip.create_model_and_transforms(name, device=device)
            tokenizer = open_clip.get_tokenizer(name)
        else:
            built = open_clip.create_model_and_transforms(
                model, pretrained=weights.location, device=device, load_weights=True
            )
            tokenizer = open_clip.get_tokenizer(model)
    clip_model, _, preprocess = built
    return clip_model.eval(), preprocess, tokenizer


def _model_config(model: str) -> dict | None:
    model_dir = Path(model).expanduser()
    if model_dir.is_dir():
        if not (model_dir / CONFIG_FILE).is_file():
            raise UnknownModelError(f"directory {model_dir} has no {CONFIG_FILE}")
        return json.loads((model_dir / CONFIG_FILE).read_text())["model_cfg"]
    return open_clip.get_model_config(model)


def load_encoder(
    model: str = HOUSE_MODEL,
    pretrained: str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    offline: bool = False,
    runtime: QueryRuntime | None = None,
) -> Encoder:
    """The only way to get an encoder.

    `model` is an open_clip architecture name (``ViT-B-32``), one of our configs
    (``house``), or a directory written by `Encoder.save`. `pretrained` is a hub tag,
    a local checkpoint file or directory, or None (shipped house weights, else a
    seeded random init). `runtime` says how query encodes run (threads, int8 towers,
    torch or ONNX Runtime).
    """
    register_house_configs()
    config = _model_config(model)
    if config is None:
        raise UnknownModelError(
            f"unknown model {model!r}: not an open_clip architecture, not a directory "
            f"with {CONFIG_FILE} (see open_clip.list_models())"
        )
    if Path(model).expanduser().is_dir():
        weights = WeightsSource("dir", model, _file_identity(_checkpoint_in_dir(Path(model))))
    else:
        weights = resolve_weights(model, pretrained, offline)
    torch_device = resolve_device(device)
    clip_model, preprocess, tokenizer = _build_model(model, weights, torch_device)
    encoder = Encoder(model, pretrained, weights, config, clip_model, preprocess, tokenizer,
                      torch_device, batch_size)
    encoder.configure_queries(runtime or QueryRuntime())
    return encoder


class Encoder:
    """Embeds texts and images into one space; every vector it returns is L2-normalised."""

    def __init__(self, name, pretrained, weights, config, model, preprocess, tokenizer,
                 device, batch_size) -> None:
        self.name: str = name
        self.pretrained: str | None = pretrained
        self.weights: WeightsSource = weights
        self.config: dict = config
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.device: torch.device = device
        self.batch_size: int = batch_size or (256 if device.type == "cuda" else 64)
        self.dim: int = int(config["embed_dim"])
        self.image_size: int = _image_size(config)
        self.context_length: int = int(config["text_cfg"].get("context_length", 77))
        self._requested = QueryRuntime()
        self._threads = ThreadChooser()
        self._query: QueryTowers | None = None  # built on first use: see _query_towers
        self._query_lock = threading.Lock()

    @property
    def identity(self) -> str:
        """What an index manifest records: architecture + exact weights."""
        return f"{self.name}|{self.weights.identity}"

    @property
    def cache_identity(self) -> str:
        """`identity` plus how the towers run (a quantised tower gives other vectors)."""
        return f"{self.identity}|{self.variant}"

    def _autocast(self):
        # bf16 autocast pays off on GPU; on these CPUs it is slower for ViT-B-32.
        enabled = self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    @property
    def runtime(self) -> QueryRuntime:
        """How query encodes run: what of the requested runtime could apply here."""
        return self._query_towers().runtime

    @property
    def variant(self) -> str:
        return self.runtime.variant

    def configure_queries(self, runtime: QueryRuntime) -> None:
        """Threads, int8 and ONNX Runtime towers for `encode_query_*` (CPU only). The
        towers are built on first use (or `warm_queries`): batch jobs never pay for them."""
        with self._query_lock:
            self._requested, self._query = runtime, None
            self._threads = ThreadChooser(runtime.threads)

    def warm_queries(self) -> None:
        """Build the query towers now (an ONNX export the first time), e.g. at server start."""
        self._query_towers()

    def _query_towers(self) -> QueryTowers:
        with self._query_lock:
            if self._query is None:
                runtime = self._requested
                threads = (runtime.threads,) if runtime.threads else (1, self._threads.cores)
                self._query = QueryTowers(self.model, runtime, self.identity, self.config,
                                          self.device.type == "cpu",
                                          tuple(sorted(set(threads))))
            return self._query

    def encode_query_text(self, text: str) -> np.ndarray:
        """One query's [dim] vector: threads by load, the configured query text tower."""
        tokens = self.tokenizer([text])  # [1, context_length]
        towers = self._query_towers()
        with self._threads.threads() as count, torch.inference_mode(), self._autocast():
            return self._normalise(towers.text(tokens.to(self.device), count))[0]

    def encode_query_image(self, image: Image.Image) -> np.ndarray:
        """One query image's [dim] vector: threads by load, the configured image tower."""
        towers = self._query_towers()
        with self._threads.threads() as count, torch.inference_mode(), self._autocast():
            pixels = self.preprocess_images([image]).to(self.device)  # [1, 3, H, W]
            return self._normalise(towers.image(pixels, count))[0]

    def preprocess_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return torch.stack([self.preprocess(image) for image in images])  # [n, 3, H, W]

    def encode_images(self, images: Sequence[Image.Image] | torch.Tensor) -> np.ndarray:
        """[n, dim] float32, L2-normalised. Accepts PIL images or preprocessed [n,3,H,W]."""
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        pixels = images if isinstance(images, torch.Tensor) else self.preprocess_images(images)
        outputs = []
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(pixels), self.batch_size):
                batch = pixels[start : start + self.batch_size]
                batch = batch.to(self.device, non_blocking=True)
                outputs.append(self._normalise(self.model.encode_image(batch)))
        return np.concatenate(outputs)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """[n, dim] float32, L2-normalised. Texts longer than the context are truncated."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokens = self.tokenizer(list(texts))  # [n, context_length]
        # Batch by token length so short texts run a short text tower (see _encode_tokens).
        order = np.argsort(token_lengths(tokens).numpy(), kind="stable")
        result = np.empty((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                batch = tokens[torch.from_numpy(rows)].to(self.device)
                result[rows] = self._normalise(self._encode_tokens(batch))
        return result

    def _encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        if not supports_prefix(self.model):
            return self.model.encode_text(tokens)
        return encode_text_prefix(self.model, tokens)

    @staticmethod
    def _normalise(features: Features) -> np.ndarray:
        if isinstance(features, torch.Tensor):
            features = features.float().cpu().numpy()
        return normalize(features)

    def save(self, directory: Path) -> Path:
        """Write a self-contained checkpoint dir, loadable by `load_encoder(str(directory))`."""
        from safetensors.torch import save_model

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        preprocess_cfg = dict(getattr(self.model.visual, "preprocess_cfg", {}) or {})
        payload = {"model_cfg": self.config, "preprocess_cfg": preprocess_cfg}
        (directory / CONFIG_FILE).write_text(json.dumps(payload, indent=2))
        save_model(self.model, str(directory / WEIGHTS_FILE))
        return directory


def normalize(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise rows to float32: the one place in xmodal that does it.

    Zero rows stay zero (a query whose weighted parts cancel out matches nothing)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def _image_size(config: dict) -> int:
    size = config["vision_cfg"].get("image_size", 224)
    return int(size[0] if isinstance(size, list | tuple) else size)

