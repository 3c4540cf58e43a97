"""Compiled dosing kernels (Cython) behind typed Python wrappers; see docs/dosing.md.

`kernels.decide(DecisionInput) -> Decision` is the stateless decision API. Submodules are
imported lazily so that `import kernels` works before `make kernels` has compiled anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kernels.decision import Decision, DecisionInput, decide, decide_reference

__all__ = ["Decision", "DecisionInput", "decide", "decide_reference"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from kernels import decision

        return getattr(decision, name)
    raise AttributeError(name)
