"""What changed in a stage's inputs since its record, for people, and whether the stage may
continue from its outputs anyway (``Stage.continues``: a trainer given more steps resumes from
its newest checkpoint, as the standalone `s2dit train` does, instead of starting over).

runner.py acts on it and plan.py predicts with it, so `s2dit run --plan` says what the run does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .fingerprint import canonical

if TYPE_CHECKING:
    from .stage import Stage

MORE, ANY = "more", "any"  # only to a larger number; any value

_UNSET = object()  # a key on one side only


@dataclass(frozen=True, slots=True)
class Continues:
    """The section keys whose change lets a resumable stage continue from its outputs rather
    than start over (``Stage.continues``)."""

    keys: Mapping[str, str]  # key -> MORE | ANY
    defaults: Mapping[str, Any] = field(default_factory=dict)  # a key's value when left unset

    def allows(self, key: str, old: Any, new: Any) -> bool:
        old, new = (self.defaults.get(key, _UNSET) if v is _UNSET else v for v in (old, new))
        rule = self.keys.get(key)
        if rule == ANY:
            return True
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (old, new))
        return rule == MORE and numbers and new > old

    def __str__(self) -> str:
        keys = [f"{k} (larger)" if rule == MORE else k for k, rule in self.keys.items()]
        return f"a trained stage continues when only {', '.join(keys)} change"


def changed_inputs(before: dict[str, Any] | None, after: dict[str, Any], section: str) -> list[str]:
    """What differs between a stage's recorded inputs and its inputs now, for people: changed
    keys of its section (nested keys dotted) with old and new values, then other inputs and
    upstream stages that ran again. Empty when nothing was recorded (an older run_state.json)."""
    if not isinstance(before, dict):
        return []
    before, after = json.loads(canonical(before)), json.loads(canonical(after))  # as recorded
    keys = [_line(key, old, new) for key, (old, new) in _leaves(before.get("section", {}),
                                                                after.get("section", {})).items()]
    changes = [f"[{section}] " + ", ".join(keys)] if keys else []
    if before.get("enabled") != after.get("enabled"):
        changes.append(f"[{section}] enabled {_show(before.get('enabled'))} -> "
                       f"{_show(after.get('enabled'))}")
    extra = [_line(key, old, new) for key, (old, new) in _leaves(before.get("extra", {}),
                                                                 after.get("extra", {})).items()]
    if extra:  # e.g. the corpus file's ukey, the recipes a compare stage trains with
        changes.append("other inputs " + ", ".join(extra))
    reran = sorted(name for name, now in after.get("upstream", {}).items()
                   if before.get("upstream", {}).get(name) != now)
    if reran:
        changes.append(f"upstream {', '.join(reran)} ran again")
    return changes


def continuation(stage: Stage, record: dict[str, Any], inputs: dict[str, Any]) -> tuple[bool, str]:
    """Whether ``stage``, whose recorded inputs differ from ``inputs``, continues from its
    outputs, and why in words. It continues when it is resumable, its record has outputs to
    continue (done, running or failed) and the only changes are keys of its section that
    ``stage.continues`` names (a ``more`` one larger than before); else it starts over, and
    the words name the first change that forces it ("" when the record names none)."""
    changes = changed_inputs(record.get("inputs"), inputs, stage.section)
    said = "; ".join(changes)  # "": an older run_state.json, which records no inputs
    if not (stage.resumable and stage.continues and changes):
        return False, said
    if record.get("status") not in ("done", "running", "failed"):
        return False, said
    before, after = json.loads(canonical(record["inputs"])), json.loads(canonical(inputs))
    section = _leaves(before.get("section", {}), after.get("section", {}))
    others = changed_inputs({**before, "section": {}}, {**after, "section": {}}, stage.section)
    blocker = next((key for key, (old, new) in section.items()
                    if not stage.continues.allows(key, old, new)), None)
    if others or blocker is not None:
        what = others[0] if others else f"[{stage.section}] {_line(blocker, *section[blocker])}"
        return False, f"{said}; a fresh start: {what} changes what it trained ({stage.continues})"
    return True, f"{said}: continues from its newest checkpoint"


def _leaves(before: Any, after: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """``dotted key -> (old, new)`` for every leaf that differs, nested dicts walked."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: dict[str, tuple[Any, Any]] = {}
        for key in sorted(set(before) | set(after)):
            out.update(_leaves(before.get(key, _UNSET), after.get(key, _UNSET),
                               f"{prefix}.{key}" if prefix else key))
        return out
    return {} if before == after else {prefix: (before, after)}


def _line(key: str, old: Any, new: Any) -> str:
    return f"{key} {_show(old)} -> {_show(new)}"


def _show(value: Any, limit: int = 40) -> str:
    if value is _UNSET:
        return "(unset)"
    text = format(value, "g") if isinstance(value, float) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
