"""Lazy package exports (PEP 562): a name's module is imported when the name is first used.

`import mailbridge` then costs almost nothing; `from mailbridge import DeliveryClient`
loads what the client needs, and nothing of IMAP import or discovery until used. The
package lists its names for type checkers in an `if TYPE_CHECKING:` block and in
`__all__`; `tests/test_imports.py` checks that the three agree.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

__all__ = ["exports"]


def exports(
    package: str,
    modules: Mapping[str, tuple[str, ...]],
    namespace: dict[str, Any],
    load: Callable[[str], ModuleType] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, whose names live in `modules`.

    `modules` maps a submodule (relative, e.g. `".client"`) to the names it provides;
    `load` imports a submodule by that key (default: `importlib.import_module`).
    A name is looked up once and then kept in `namespace`, the package's globals.
    """
    where = {name: module for module, names in modules.items() for name in names}
    importer = load or (lambda module: importlib.import_module(module, package))

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importer(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *where})

    return __getattr__, __dir__
