"""Rows of an evaluation table: which method and which TTT settings each row runs.

Why one builder: ``tttinterp evaluate``, ``tttinterp evaluate-pairs``, the demo and scripts
all build "a baseline, plain UVI-Net, then one row per TTT task (and scheme)" from the same
loose options; built in one place, their labels and the settings recorded with each row
agree, and a default is never typed twice. No torch import, so building rows is cheap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..config import METHODS, TTTConfig, _check_choice, check_method_task

__all__ = ["EvalSetting", "evaluation_settings"]


@dataclass(frozen=True)
class EvalSetting:
    """One row of an evaluation table."""

    label: str
    method: str
    ttt: TTTConfig = field(default_factory=TTTConfig)


def evaluation_settings(baseline: EvalSetting, tasks: Iterable[str] = ("none",),
                        schemes: Iterable[str] = ("online",),
                        method: str | Iterable[str] = "uvinet",
                        **ttt_options: Any) -> list[EvalSetting]:
    """``baseline``, then a ``registration`` row where ``method`` names it, then (where it
    names ``uvinet``) UVI-Net and one row per TTT task x scheme.

    ``method`` is one method or several. ``ttt_options`` are further :class:`TTTConfig`
    fields (steps, lr, optimizer, adapt, seed); ``None`` values take the defaults
    (:meth:`TTTConfig.with_options`). Repeated tasks or schemes give one row; task ``none`` is
    the plain UVI-Net row. Labels read ``UVI-Net + TTT <task> (<scheme>)``.
    """
    methods = (method,) if isinstance(method, str) else tuple(method)
    tasks = list(tasks)
    for name in methods:
        _check_choice("method", name, METHODS)
    if "uvinet" not in methods:
        for task in tasks:
            check_method_task(methods[0], task)
    settings = [baseline]
    if "registration" in methods:
        settings.append(EvalSetting("registration", "registration"))
    if "uvinet" not in methods:
        return settings
    settings.append(EvalSetting("UVI-Net", "uvinet", TTTConfig.from_options(**ttt_options)))
    for task in dict.fromkeys(t for t in tasks if t != "none"):
        for scheme in dict.fromkeys(schemes):
            config = TTTConfig.from_options(task, scheme=scheme, **ttt_options)
            settings.append(EvalSetting(f"UVI-Net + TTT {task} ({scheme})", "uvinet", config))
    return settings
