"""The per-user cache of derived arrays: read when present, never stale, never an error when it cannot be used."""
from __future__ import annotations

import numpy as np
import pytest

from deepwml.synthetic import template_brain
from deepwml.utils import user_cache
from deepwml.utils.user_cache import ENV_VAR, cache_dir, cached_arrays, content_key


def _counting(values):
    """A compute function that counts its calls."""
    calls = []

    def compute():
        calls.append(1)
        return {"a": np.asarray(values, np.float32), "b": np.arange(3)}

    return compute, calls


def test_arrays_are_computed_once_and_then_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "cache"))
    compute, calls = _counting([1.5, 2.5])
    first = cached_arrays("thing", content_key(["v1"]), compute)
    again = cached_arrays("thing", content_key(["v1"]), compute)
    assert len(calls) == 1 and len(list((tmp_path / "cache").glob("thing-*.npz"))) == 1
    assert set(again) == {"a", "b"} and np.array_equal(again["a"], first["a"]) and again["a"].dtype == np.float32


def test_a_new_key_is_computed_anew_and_replaces_the_old_entry(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    old, _ = _counting([1.0])
    new, calls = _counting([2.0])
    cached_arrays("thing", content_key(["v1"]), old)
    assert cached_arrays("thing", content_key(["v2"]), new)["a"][0] == 2.0 and calls == [1]
    assert len(list(tmp_path.glob("thing-*.npz"))) == 1
    assert content_key([b"x", "y"]) != content_key([b"xy"])  # parts are delimited, not concatenated


def test_a_damaged_entry_is_recomputed_and_rewritten(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    compute, calls = _counting([3.0])
    key = content_key(["v1"])
    cached_arrays("thing", key, compute)
    entry = next(tmp_path.glob("thing-*.npz"))
    entry.write_bytes(entry.read_bytes()[:100])
    assert cached_arrays("thing", key, compute)["a"][0] == 3.0 and len(calls) == 2
    assert cached_arrays("thing", key, compute)["a"][0] == 3.0 and len(calls) == 2


@pytest.mark.parametrize("value", ["off", ""])
def test_the_cache_can_be_turned_off(tmp_path, monkeypatch, value):
    monkeypatch.setenv(ENV_VAR, value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    compute, calls = _counting([1.0])
    cached_arrays("thing", "k", compute)
    cached_arrays("thing", "k", compute)
    assert cache_dir() is None and len(calls) == 2 and not list(tmp_path.rglob("*.npz"))


def test_the_default_folder_follows_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "deepwml"


def test_without_a_home_folder_there_is_no_cache_and_no_error(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(user_cache.Path, "home", staticmethod(no_home))
    compute, calls = _counting([5.0])
    assert cache_dir() is None and cached_arrays("thing", "k", compute)["a"][0] == 5.0 and calls == [1]


def test_a_folder_that_cannot_be_written_is_no_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(ENV_VAR, str(blocker / "cache"))
    compute, calls = _counting([4.0])
    assert cached_arrays("thing", "k", compute)["a"][0] == 4.0
    assert cached_arrays("thing", "k", compute)["a"][0] == 4.0 and len(calls) == 2


def test_the_template_derivation_is_read_from_the_cache_with_a_key_of_everything_it_depends_on(tmp_path, monkeypatch):
    """A second process (here: the uncached function again) gets the same template without deriving it; the key covers
    the template file, the code that derives it and the library versions, so an edit to either is a new entry."""
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    keys = []
    monkeypatch.setattr(template_brain, "content_key", lambda parts: keys.append(list(parts)) or content_key(parts))
    fresh = template_brain.load_template.__wrapped__()
    assert len(list(tmp_path.glob("template-derived-*.npz"))) == 1

    def no_derivation(*args, **kwargs):
        raise AssertionError("the template was derived again instead of read from the cache")

    monkeypatch.setattr(template_brain.ndimage, "distance_transform_edt", no_derivation)
    cached = template_brain.load_template.__wrapped__()
    for name in ("tissue", "origin", "horn_tips", "cerebrum_centre", "cerebrum_half"):
        assert np.array_equal(getattr(cached, name), getattr(fresh, name)), name
    for name in ("hull", "ventricle", "infratentorial"):
        a, b = getattr(cached, name), getattr(fresh, name)
        assert np.array_equal(a.values, b.values) and a.origin == b.origin and a.spacing == b.spacing, name
    assert list(cached.sites) == list(fresh.sites) and all(np.array_equal(cached.sites[k], fresh.sites[k]) for k in fresh.sites)
    assert all(np.array_equal(x, y) for x, y in zip(cached.ventricle_box, fresh.ventricle_box))
    parts = keys[0]
    assert template_brain.TEMPLATE_FILE.read_bytes() in parts
    assert open(template_brain.__file__, "rb").read() in parts and open(template_brain.fields_module.__file__, "rb").read() in parts
    assert user_cache.cache_dir() == tmp_path
