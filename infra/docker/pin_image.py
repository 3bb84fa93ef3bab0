"""Point every infra manifest at one built image, by digest (CI, after pushing the image):

    python infra/docker/pin_image.py sha256:<64 hex>    # from `docker buildx build --push
                                                        #   --metadata-file m.json` (containerimage.digest)

The manifests ship ``IMAGE@sha256:`` + 64 zeros, a placeholder no registry serves: a cluster
started from an unfilled manifest fails to pull instead of running some ``:latest``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "ghcr.io/s2dit/s2dit"
PLACEHOLDER = "sha256:" + "0" * 64
REFERENCE = re.compile(re.escape(IMAGE) + r"@(sha256:[0-9a-f]{64})")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def manifests(root: Path = ROOT) -> list[Path]:
    return sorted(p for p in (root / "infra").rglob("*.yaml") if IMAGE in p.read_text())


def pin(digest: str, root: Path = ROOT) -> list[Path]:
    """Rewrite ``IMAGE@sha256:...`` in every manifest to ``digest``; returns the changed files."""
    if not DIGEST.fullmatch(digest):
        raise SystemExit(f"{digest!r} is not an image digest (sha256:<64 hex>)")
    changed = []
    for path in manifests(root):
        text = path.read_text()
        new = REFERENCE.sub(f"{IMAGE}@{digest}", text)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    for path in pin(sys.argv[1]):
        print(path.relative_to(ROOT))
