"""The public API named in DESIGN.md resolves from the package root."""

import pytest

import failfirst


@pytest.mark.parametrize("name", ["stress_test", "load_model", "load_dataset", "render_site"])
def test_public_names_resolve(name):
    assert callable(getattr(failfirst, name))
    assert name in failfirst.__all__


def test_version_and_unknown_names():
    assert failfirst.__version__.count(".") == 2
    with pytest.raises(AttributeError, match="nope"):
        failfirst.nope
