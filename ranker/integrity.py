"""Model folders that cannot lie: a sha256 of every file, kept in the folder's ``manifest.json``.

:func:`seal` is the last thing ``fusion-ltr train`` does to a model folder (a plain model's or a
cascade's): it lists every file under the folder but the top manifest itself, with its sha256, as
``files``, and records ``calibrated`` (whether ``calibration.json`` is one of them). :func:`verify` is
the first thing :meth:`ranker.Scorer.load` does, before any native library (LightGBM, XGBoost) reads a
byte: a changed, missing or added file is refused with an error naming it, where a changed byte in a
booster file could otherwise abort the process or silently change the scores.

A folder from before checksums were kept (no ``files`` in its manifest) loads with a warning once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from retrieval.errors import UsageError

log = logging.getLogger("fusion_ltr.integrity")
MANIFEST = "manifest.json"
FILES = "files"


class IntegrityError(UsageError):
    """A model folder whose files are not the ones its manifest lists."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST)


def seal(folder: str | Path) -> dict:
    """Add ``files`` (relative path -> sha256) and ``calibrated`` to ``folder``'s manifest.json."""
    folder = Path(folder)
    path = folder / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest[FILES] = {name: sha256(folder / name) for name in _files(folder)}
    manifest["calibrated"] = "calibration.json" in manifest[FILES]
    path.write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
    return manifest


def verify(folder: str | Path, manifest: dict) -> bool:
    """Check ``folder``'s files against ``manifest[files]``; False (and a warning) for an unsealed folder."""
    folder = Path(folder)
    listed = manifest.get(FILES)
    if listed is None:
        log.warning("%s: this model folder has no checksums (trained before they were kept); its files are not "
                    "verified: retrain it (`fusion-ltr train`) to add them", folder)
        return False
    if not isinstance(listed, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in listed.items()):
        raise IntegrityError(f"{folder / MANIFEST}: 'files' must map each file's path to its sha256, found "
                             f"{str(listed)[:80]}")
    present = set(_files(folder))
    missing = sorted(set(listed) - present)
    added = sorted(present - set(listed))
    changed = sorted(name for name in set(listed) & present if sha256(folder / name) != listed[name])
    if missing or added or changed:
        parts = [f"{label} {names[:5]}" for label, names in
                 (("missing", missing), ("changed", changed), ("not listed", added)) if names]
        raise IntegrityError(f"{folder}: the model folder is not as it was trained ({'; '.join(parts)} against the "
                             f"sha256 checksums in {MANIFEST}); restore it from a copy or retrain it (`fusion-ltr "
                             "train`)")
    return True
