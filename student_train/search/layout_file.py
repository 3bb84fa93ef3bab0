"""The layout a search chose, as the student architecture a training run builds.

``s2dit search --out layout.json`` writes the chosen layout, its predicted costs and the full
student config it was searched for (``model``). A training config names that file
(``layout_file``) instead of copying the layout by hand; the cache's shapes must be the ones
the blocks were profiled at, since the costs (and so the choice) depend on the token count.
"""

from __future__ import annotations

import json
from typing import Any

import fsspec


def load_searched_model(url: str) -> dict[str, Any]:
    """The student config of a search result (or of a plain StudentConfig JSON file)."""
    try:
        with fsspec.open(url, "r") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"layout file {url} does not exist: write one with "
                                "`s2dit search --lut lut.json --latency-budget MS --out FILE`") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"layout file {url} is not JSON ({exc}); pass the --out file of "
                         "`s2dit search`") from None
    model = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(model, dict) or "layout" not in model:
        raise ValueError(f"layout file {url} has no 'model' with a 'layout': pass the --out file "
                         "of `s2dit search` or a student config JSON")
    return model


def model_overrides(layout_file: str | None, overrides: dict[str, Any],
                    cache_shapes: dict[str, int]) -> dict[str, Any]:
    """The searched architecture plus the config's own ``model`` keys it does not set. A layout
    searched for other shapes than the cache's, or a config key that contradicts the file, is
    refused: the layout's costs were measured for the file's values."""
    if not layout_file:
        return dict(overrides)
    searched = load_searched_model(layout_file)
    clash = {k: (searched[k], v) for k, v in cache_shapes.items()
             if k in searched and searched[k] != v}
    if clash:
        raise ValueError(f"layout file {layout_file} was searched for {clash} (searched, cache): "
                         "profile and search at the cache's shapes (`s2dit profile "
                         "--latent-shape C,F,H,W --text-dim D`), then search again")
    architecture = {k: v for k, v in searched.items() if k not in cache_shapes}
    differ = {k: (_plain(architecture[k]), _plain(v)) for k, v in overrides.items()
              if k in architecture and _plain(architecture[k]) != _plain(v)}
    if differ:
        raise ValueError(f"layout file {layout_file} and the training config's [train.model] "
                         f"disagree on {differ} (layout file, config): the layout was chosen for "
                         "the file's values; drop those keys from [train.model], or profile and "
                         "search again with them")
    return {**architecture, **overrides}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
