"""Changed defaults, so that results recorded before a change keep the recipe they ran.

A cell's key hashes its recipe as given: options left at their defaults are not in it. When
a default changes what a cell computes (a mixer option, the optimizer's treatment of some
parameters), a record made before the change would otherwise carry the key of the new
recipe: ``seqlab bench run`` would skip a cell it never ran, and a report would show the old
result under the new recipe.

Each :class:`DefaultChange` names the option that restores the old behaviour. A record says
how many of ``CHANGES`` its writer had (``changes_known``; older records only say when they
were written, ``time``, compared with the change's commit time). When a results file is read
(:func:`seqlab.bench.results.read_results`), a record whose writer lacked a change that
concerns its recipe, and that does not set the option, gets the option written into its
recipe and its key recomputed. The file itself is never rewritten.

When you change a default that alters results: keep the old behaviour reachable by an option,
and append one entry to ``CHANGES`` (never reorder it: records count into it), with the
commit time (``git log -1 --format=%ct``) for records written before ``changes_known``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable


def _layers(recipe: dict) -> list[tuple[str, dict]]:
    """(mixer, options given for it) for each layer of the recipe's pattern."""
    from seqlab.bench.sweep import layer_pattern   # sweep imports this module's user
    from seqlab.config import ConfigError

    given = (recipe.get("model") or {}).get("mixer_options") or {}
    try:
        pattern = layer_pattern(recipe.get("mixer", ""))
    except ConfigError:        # a record of a mixer this version does not know: leave it
        return []
    return [(spec.mixer, {**given.get(spec.mixer, {}), **spec.options}) for spec in pattern]


@dataclass(frozen=True)
class DefaultChange:
    """One changed default.

    Attributes:
        since: Unix time of the commit that changed it; records with an earlier ``time``
            ran the old default.
        path: where the restoring option sits in a recipe, e.g.
            ``("train", "decay_time_scales")``; ``"{mixer}"`` stands for ``mixer``.
        old: the option's value that restores the old behaviour.
        mixers: the change matters only to recipes with a layer of one of these mixers.
        applies: further condition on a layer's given options (e.g. atlas's ``dampen``
            only matters to its momentum optimisers).
        what: one line for the reader.
    """

    since: float
    path: tuple[str, ...]
    old: Any
    mixers: tuple[str, ...]
    what: str
    applies: Callable[[dict], bool] = lambda options: True

    def pin(self, recipe: dict) -> dict | None:
        """``recipe`` with the old value pinned, or None when the change does not concern it."""
        hit = {m: o for m, o in _layers(recipe) if m in self.mixers and self.applies(o)}
        if not hit:
            return None
        out = copy.deepcopy(recipe)
        for mixer, given in sorted(hit.items()):
            keys = [mixer if k == "{mixer}" else k for k in self.path]
            if "{mixer}" in self.path and keys[-1] in given:
                return None            # given for the mixer (mixer_options or inline in the pattern)
            node = out
            for k in keys[:-1]:
                node = node.setdefault(k, {})
                if not isinstance(node, dict):
                    return None
            if keys[-1] in node:       # set explicitly: the recipe says it all
                return None
            node[keys[-1]] = self.old
        return out


CHANGES: tuple[DefaultChange, ...] = (
    # 1c7bbd9: AdamW stopped decaying state-space time scales (mamba's A_log and D, S4D's step
    # and poles). s4, lssl and atlas were added later with their exemptions from the start.
    DefaultChange(since=1795869607, path=("train", "decay_time_scales"), old=True,
                  mixers=("mamba", "s4d"),
                  what="AdamW decayed state-space time scales (train.decay_time_scales=true)"),
    # 25e0326: atlas's momentum dampened by (1 - θ) by default.
    DefaultChange(since=1796420769, path=("model", "mixer_options", "{mixer}", "dampen"),
                  old=False, mixers=("atlas",),
                  applies=lambda o: o.get("optimizer", "momentum") != "gd",
                  what="atlas's momentum undampened (atlas dampen=false)"),
)


def _unknown_to_writer(record: dict, changes: tuple[DefaultChange, ...]) -> list[DefaultChange]:
    """The changes the version that wrote ``record`` did not have: those after its
    ``changes_known`` (written since this module exists), else those made after its ``time``."""
    known = record.get("changes_known")
    if isinstance(known, int) and not isinstance(known, bool) and known >= 0:
        return list(changes[known:])
    when = record.get("time")
    if isinstance(when, (int, float)) and not isinstance(when, bool):
        return [c for c in changes if when < c.since]
    return []


def pin_old_defaults(record: dict, changes: tuple[DefaultChange, ...] = CHANGES) -> dict:
    """``record`` as it ran: each change its writer did not have pinned into its recipe, its
    key recomputed, and ``pinned`` listing what was pinned. A record with neither
    ``changes_known`` nor ``time``, or without a ``config``, is returned as it is."""
    from seqlab.bench.results import recipe_key

    recipe = record.get("config")
    if not isinstance(recipe, dict):
        return record
    pinned = []
    for change in _unknown_to_writer(record, changes):
        new = change.pin(recipe)
        if new is not None:
            recipe = new
            pinned.append(change.what)
    if not pinned:
        return record
    return {**record, "key": recipe_key(recipe), "config": recipe, "pinned": pinned}
