"""One error root; SQLSTATEs and constraint names map to the classes."""

from __future__ import annotations

import inspect

from pgqml import errors


def _classes():
    return [v for v in vars(errors).values() if inspect.isclass(v) and issubclass(v, BaseException)]


def test_single_root():
    for cls in _classes():
        assert issubclass(cls, errors.PgqmlError), cls


def test_every_class_is_drawn_in_the_module_docstring():
    for cls in _classes():
        assert cls.__name__ in errors.__doc__, cls


def test_sqlstates_are_unique_pgqml_class_and_mapped():
    seen: dict[str, type] = {}
    for cls in _classes():
        code = cls.__dict__.get("sqlstate")
        if code:
            assert code.startswith("PQ") and len(code) == 5
            assert code not in seen, (code, cls, seen.get(code))
            seen[code] = cls
            assert errors.SQLSTATE_TO_ERROR[code] is cls
    assert set(errors.SQLSTATE_TO_ERROR) == set(seen)


def test_default_message_is_the_docstring_and_context_kept():
    err = errors.SchemaOutdated()
    assert "run `pgqml migrate`" in str(err)
    err = errors.PayloadTooLarge("too big", size=10, limit=5)
    assert err.context == {"size": 10, "limit": 5}
    assert isinstance(err, ValueError)  # validation errors are ValueErrors too


def test_constraint_names_map_to_validation_classes():
    for name, cls in errors.CONSTRAINT_TO_ERROR.items():
        assert name.endswith("_check") and issubclass(cls, errors.PgqmlError)
