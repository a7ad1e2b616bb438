"""Build the compiled hot path ``pgqml._speedups``.

The extension is optional at runtime (``PGQML_IMPL=python`` selects the pure
twin), but a normal install builds it. Set ``PGQML_NO_EXT=1`` to skip the build
on a machine without a C compiler.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup

ext_modules = []
if not os.environ.get("PGQML_NO_EXT"):
    from Cython.Build import cythonize

    ext_modules = cythonize(
        [Extension("pgqml._speedups", ["pgqml/_speedups.pyx"])],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
        quiet=True,
    )

setup(ext_modules=ext_modules)
