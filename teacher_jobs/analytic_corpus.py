"""Prompt corpora for the analytic teacher, with train and held-out splits.

Training prompts cover a chosen set of attribute combinations (classes); the remaining
combinations are held out entirely ("unseen combinations", reported apart, never a gate).
Held-out seeds for trained classes are produced at evaluation time (pipeline.eval).

Splits (``SPLITS``, ``[corpus] split``):
- ``"random"`` (the default, as before): the first ``train_classes`` of a seeded permutation;
- ``"pairs_seen"``: the first seeded permutation (up to ``PAIR_TRIES``) whose held-out classes
  have every attribute pair (object-colour, object-motion, colour-motion) in some trained class,
  so an unseen class is a new combination of seen pairs, never of a pair never seen. Where the
  random split of that seed already has the property it is the same split.
- ``"pairs_varied"``: as ``"pairs_seen"``, and no two attributes of a held-out class pin the
  third in training: every attribute pair of it is trained with at least two values of the
  third attribute (one where that attribute has only two values: holding one out leaves one).
  Under ``"pairs_seen"`` a held-out class's colour and motion may come with one trained object
  only (run seed 0 holds out every "moving left" class but one object per colour, so "green,
  left" is always the cross in training): a student that reads its object off the colour and
  motion fits the training data as well as one that reads the object word, and generalises as
  badly as the seed happens to choose (BENCHMARKS, "the report over 5 training seeds").

The held-out classes are split once more (``unseen_subsets``): a third of them, at least one,
is the "validation" subset for recipe decisions, the rest the "report" subset for figures; the
choice is a function of the held-out classes alone, so an evaluation finds it from the cache.
"""

from __future__ import annotations

import itertools

import fsspec
import numpy as np

from .teachers.analytic import AnalyticConfig

TEMPLATE = "a {colour} {obj} moving {motion}"


DEFAULT_ANALYTIC = AnalyticConfig()


def class_prompts(config: AnalyticConfig = DEFAULT_ANALYTIC) -> list[str]:
    return [TEMPLATE.format(colour=c, obj=o, motion=m)
            for o, c, m in itertools.product(config.objects, config.colours, config.motions)]


SPLITS = ("random", "pairs_seen", "pairs_varied")
# seeded permutations a split tries before giving up ("pairs_varied": 12 of the default
# vocabulary's 18,564 held-out sets of 6 qualify, one draw in about 1,550)
PAIR_TRIES = {"random": 1, "pairs_seen": 10_000, "pairs_varied": 100_000}
UNSEEN_SUBSETS = ("all", "report", "validation")
VALIDATION_SHARE = 1 / 3
_VALIDATION_SEED = 0x26  # the validation subset's own draw, apart from the split's


def _attributes(config: AnalyticConfig) -> list[tuple[str, str, str]]:
    """(object, colour, motion) of each class, in ``class_prompts`` order."""
    return list(itertools.product(config.objects, config.colours, config.motions))


def _pairs_with_partners(train: list[tuple[str, ...]], held: tuple[str, ...]):
    """(i, j, k, trained classes with the held-out class's attributes i and j) per pair; k is
    the third attribute."""
    for i, j in itertools.combinations(range(3), 2):
        yield i, j, 3 - i - j, [t for t in train if t[i] == held[i] and t[j] == held[j]]


def unseen_pairs(train: list[tuple[str, ...]], held: list[tuple[str, ...]]) -> list[tuple[str, str]]:
    """Attribute pairs of the held-out classes that no trained class has."""
    return sorted({(h[i], h[j]) for h in held for i, j, _, partners in _pairs_with_partners(train, h)
                   if not partners})


def attribute_values(config: AnalyticConfig) -> tuple[int, int, int]:
    """How many values each attribute (object, colour, motion) has."""
    return len(config.objects), len(config.colours), len(config.motions)


def pinning_pairs(train: list[tuple[str, ...]], held: list[tuple[str, ...]],
                  values: tuple[int, ...]) -> list[tuple[str, str]]:
    """Attribute pairs of the held-out classes trained with fewer than min(2, n - 1) values of
    the third attribute (``values``: n of each attribute): pairs whose trained classes pin the
    third (a pair never trained among them)."""
    return sorted({(h[i], h[j]) for h in held for i, j, k, partners in _pairs_with_partners(train, h)
                   if len(partners) < min(2, values[k] - 1)})


def pinning_classes(train: list[tuple[str, ...]], held: tuple[str, ...],
                    values: tuple[int, ...]) -> list[tuple[str, ...]]:
    """The trained classes that alone carry an attribute pair of the held-out class ``held``
    whose third attribute has more than two values: each is what that pair means in training,
    a shortcut a student may take for the held-out class."""
    return sorted({partners[0] for _, _, k, partners in _pairs_with_partners(train, held)
                   if values[k] > 2 and len(partners) == 1})


def split_shortcuts(train: list[str], held: list[str], config: AnalyticConfig = DEFAULT_ANALYTIC
                    ) -> dict[str, list[str]]:
    """Held-out prompt -> the trained prompts that pin it (``pinning_classes``), for the held-out
    classes that have any: what a split lets a student read off two of an unseen class's
    attributes instead of its third word."""
    attrs = dict(zip(class_prompts(config), _attributes(config), strict=True))
    by_attrs = {a: p for p, a in attrs.items()}
    values = attribute_values(config)
    trained = [attrs[p] for p in train]
    pinned = {h: [by_attrs[t] for t in pinning_classes(trained, attrs[h], values)] for h in held}
    return {h: ts for h, ts in pinned.items() if ts}


def _qualifies(split: str, train: list[tuple[str, ...]], held: list[tuple[str, ...]],
               config: AnalyticConfig) -> bool:
    if split == "random":
        return True
    if split == "pairs_seen":
        return not unseen_pairs(train, held)
    return not pinning_pairs(train, held, attribute_values(config))


def split_classes(config: AnalyticConfig = DEFAULT_ANALYTIC, *, train_classes: int = 12,
                  seed: int = 0, split: str = "random") -> tuple[list[str], list[str]]:
    """(train prompts, unseen-combination prompts): a seeded choice of trained classes, by
    ``split`` (the module docstring)."""
    prompts, attrs = class_prompts(config), _attributes(config)
    if not 1 <= train_classes <= len(prompts):
        raise ValueError(f"train_classes must be in [1, {len(prompts)}], got {train_classes}")
    if split not in SPLITS:
        raise ValueError(f"[corpus] split must be one of {list(SPLITS)}, got {split!r}")
    rng = np.random.default_rng(seed)
    for _ in range(PAIR_TRIES[split]):
        order = rng.permutation(len(prompts))
        chosen, held = sorted(order[:train_classes]), sorted(order[train_classes:])
        if _qualifies(split, [attrs[i] for i in chosen], [attrs[i] for i in held], config):
            return [prompts[i] for i in chosen], [prompts[i] for i in held]
    what = ("trained" if split == "pairs_seen" else
            "trained with two values of the third attribute (one where it has two)")
    raise ValueError(f"no split of {train_classes} trained classes out of {len(prompts)} found in "
                     f"{PAIR_TRIES[split]} draws in which every attribute pair of the held-out "
                     f"classes is {what}: raise train_classes, or use split = 'random'")


def unseen_subsets(unseen: list[str]) -> dict[str, list[str]]:
    """The held-out prompts as {"validation": ..., "report": ...}: a third (at least one, and
    none when there is only one) for recipe decisions, the rest for reporting; disjoint, a
    function of the set alone (sorted, then a fixed seeded permutation)."""
    ordered = sorted(unseen)
    n = len(ordered)
    k = 0 if n < 2 else min(n - 1, max(1, round(n * VALIDATION_SHARE)))
    order = np.random.default_rng(_VALIDATION_SEED).permutation(n)
    validation = {ordered[i] for i in order[:k]}
    return {"validation": [p for p in ordered if p in validation],
            "report": [p for p in ordered if p not in validation]}


def write_corpus(url: str, prompts: list[str]) -> str:
    """One prompt per line (use the job's --seeds-per-prompt for trajectories per prompt)."""
    with fsspec.open(url, "w", encoding="utf-8") as handle:
        handle.write("".join(p + "\n" for p in prompts))
    return url
