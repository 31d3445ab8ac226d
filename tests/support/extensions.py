"""Loading a build of one of the package's C extensions from a file, as `make sanitize` and `make fuzz`
do with their own builds, in place of the installed one."""

from __future__ import annotations

import importlib.util
from types import ModuleType


def load_build(module_name: str, path: str) -> ModuleType:
    """The extension module `module_name` as built at `path`."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
