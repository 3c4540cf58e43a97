"""Build the compiled kernels (Cython) in place.

Every `kernels/**/_*.pyx` becomes an extension module. Compiler directives are set once here
for the whole build; `LANGERHANS_KERNELS_DEBUG=1` turns bounds checking and wraparound back on.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("LANGERHANS_KERNELS_DEBUG") == "1"

directives = {
    "language_level": "3",
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "nonecheck": False,
    "infer_types": True,
    "embedsignature": True,
}

extensions = [
    Extension(
        ".".join(path.with_suffix("").parts),
        [str(path)],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O2"] if not DEBUG else ["-O0", "-g"],
    )
    for path in sorted(Path("kernels").rglob("_*.pyx"))
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives, quiet=True))
