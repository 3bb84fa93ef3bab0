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

SHAPE_KEYS = ("latent_channels", "latent_frames", "latent_height", "latent_width", "text_dim")


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
    """The searched architecture, then the config's own ``model`` overrides on top. A layout
    searched for other shapes than the cache's is refused: its costs are for another size."""
    if not layout_file:
        return dict(overrides)
    searched = load_searched_model(layout_file)
    clash = {k: (searched[k], cache_shapes[k]) for k in SHAPE_KEYS
             if k in searched and k in cache_shapes and searched[k] != cache_shapes[k]}
    if clash:
        raise ValueError(f"layout file {layout_file} was searched for {clash} (searched, cache): "
                         "profile and search at the cache's shapes (`s2dit profile "
                         "--latent-shape C,F,H,W --text-dim D`), then search again")
    return {**{k: v for k, v in searched.items() if k not in SHAPE_KEYS}, **overrides}
