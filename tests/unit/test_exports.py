"""The public surface is deliberate: __all__ matches what the package exposes."""

from __future__ import annotations

import types

import pgqml
from pgqml import errors


def test_all_matches_public_namespace():
    public = {
        name
        for name, value in vars(pgqml).items()
        if not name.startswith("_")
        and not (isinstance(value, types.ModuleType) and name not in ("errors", "states"))
    }
    public |= {"__impl__", "__version__"}
    assert set(pgqml.__all__) == public
    assert sorted(pgqml.__all__) == list(pgqml.__all__)
    for name in pgqml.__all__:
        assert hasattr(pgqml, name), name


def test_impl_is_reported():
    assert pgqml.__impl__ in ("c", "python")


def test_errors_all_is_complete():
    exported = {
        n for n, v in vars(errors).items() if isinstance(v, type) and issubclass(v, Exception)
    }
    assert exported <= set(errors.__all__)
