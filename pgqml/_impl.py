"""Pick the compiled hot path or its pure-Python twin, once, at import.

``PGQML_IMPL`` chooses: ``c`` (compiled, error if missing), ``python`` (pure),
or unset (compiled when available, else pure). The chosen module is ``impl``
and its name is ``IMPL`` (``"c"`` or ``"python"``).
"""

from __future__ import annotations

import os
from types import ModuleType

from pgqml import errors

__all__ = ["IMPL", "impl"]


def _load() -> ModuleType:
    wanted = os.environ.get("PGQML_IMPL", "").strip().lower()
    if wanted not in ("", "c", "python"):
        raise errors.ConfigurationError(
            f"PGQML_IMPL={wanted!r} is not valid: use 'c', 'python', or leave it unset"
        )
    if wanted == "python":
        from pgqml import _purepy

        return _purepy
    try:
        from pgqml import _speedups
    except ImportError as exc:
        if wanted == "c":
            raise errors.ConfigurationError(
                "PGQML_IMPL=c but the compiled module pgqml._speedups is not built "
                f"({exc}). Reinstall with a C compiler available "
                "(pip install --force-reinstall --no-binary pgqml pgqml, or "
                "pip install -e . in a checkout), or unset PGQML_IMPL to use the "
                "pure-Python implementation."
            ) from exc
        from pgqml import _purepy

        return _purepy
    return _speedups


impl: ModuleType = _load()
IMPL: str = "c" if impl.__name__.endswith("_speedups") else "python"
