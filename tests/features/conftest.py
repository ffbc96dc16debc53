import pytest

from retrieval.models import resolve_model


def make_crossencoder(folder, seed: int) -> str:
    """A cross-encoder made from the packaged MiniLM with a head seeded by ``seed``, untrained (offline)."""
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(seed)
    path = folder / "model"
    CrossEncoder(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), num_labels=1, max_length=128).save(str(path))
    return str(path)


@pytest.fixture(scope="session")
def tiny_crossencoder(tmp_path_factory):
    return make_crossencoder(tmp_path_factory.mktemp("ce"), 0)
