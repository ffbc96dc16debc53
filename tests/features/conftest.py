import pytest

from retrieval.models import resolve_model


@pytest.fixture(scope="session")
def tiny_crossencoder(tmp_path_factory):
    """A cross-encoder made from the packaged MiniLM with a seeded, untrained head (offline)."""
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ce") / "model"
    CrossEncoder(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), num_labels=1, max_length=128).save(str(path))
    return str(path)
