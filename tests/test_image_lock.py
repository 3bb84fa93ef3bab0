"""The pinned image (issue 27): infra/requirements.lock pins every package of the image and is
the venv's; the Dockerfile installs from it alone; every manifest names the image by digest;
Ray is one version in the lock, the venv, pyproject's range and every cluster manifest."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import shutil
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "infra" / "docker" / "Dockerfile"
YAMLS = sorted((ROOT / "infra").rglob("*.yaml"))


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "infra" / "docker" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock, pin_image = _script("lock"), _script("pin_image")


def _images(node) -> list[str]:
    """Every ``image`` value in a parsed YAML document, at any depth."""
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "image" and isinstance(v, str)] + \
            [i for v in node.values() for i in _images(v)]
    if isinstance(node, list):
        return [i for v in node for i in _images(v)]
    return []


def _docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def test_the_lock_pins_every_package_of_the_image_as_the_venv_has_it():
    pins = lock.read_lock()  # every requirement line is name==version
    assert pins["torch"] == "2.13.0" and "s2dit" not in pins
    venv = lock.closure()
    assert pins == venv, ("infra/requirements.lock is not this venv's (run `make setup`, or after a "
                          "dependency change `python infra/docker/lock.py --write`): "
                          + "; ".join(f"{n}: lock {pins.get(n)}, venv {venv.get(n)}"
                                      for n in sorted(set(pins) | set(venv)) if pins.get(n) != venv.get(n)))
    for text in lock.root_requirements():  # pyproject's ranges admit what the lock pins
        req = Requirement(text)
        assert req.specifier.contains(pins[req.name.lower()], prereleases=True), f"{text} vs lock"


def test_ray_is_one_version_in_the_lock_the_venv_and_every_cluster_manifest():
    locked = lock.read_lock()["ray"]
    assert importlib.metadata.version("ray") == locked
    versions = {}
    for path in YAMLS:
        for doc in _docs(path):
            spec = doc.get("spec", {}) if isinstance(doc, dict) else {}
            cluster = spec.get("rayClusterSpec", spec) if doc.get("kind", "").startswith("Ray") else {}
            if "rayVersion" in cluster:
                versions[path.name] = cluster["rayVersion"]
    assert set(versions) == {"rayjob.yaml", "rayjob-train.yaml", "raycluster.yaml"}
    assert set(versions.values()) == {locked}, versions


def test_every_manifest_names_the_one_image_by_digest():
    images = {}
    for path in YAMLS:
        for image in (i for doc in _docs(path) for i in _images(doc)):
            images.setdefault(image, []).append(path.relative_to(ROOT).as_posix())
    assert len(images) == 1, f"manifests name several images: {images}"
    (image, where), = images.items()
    assert pin_image.REFERENCE.fullmatch(image), f"{image} is not {pin_image.IMAGE}@sha256:<64 hex>"
    assert "infra/ray/cluster.yaml" in where and len(where) == 9  # 8 KubeRay containers + ray up
    assert not [p for p in YAMLS if ":latest" in p.read_text()]


def test_the_dockerfile_installs_the_lock_and_then_the_project_without_dependencies():
    steps = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith("RUN")]
    installs = [s for s in steps if "pip install" in s]
    assert any("-r infra/requirements.lock" in s for s in installs)
    project = [s for s in installs if re.search(r"pip install [^&]*\s\.(\s|$)", s)]
    assert project and all("--no-deps" in s and "pip check" in s for s in project)
    for step in installs:  # nothing else is installed by name without a pin
        for arg in step.split("pip install", 1)[1].split("&&")[0].split():
            assert arg.startswith("-") or arg in {".", "infra/requirements.lock"} or "==" in arg, step
    assert "COPY infra/requirements.lock" in DOCKERFILE.read_text()


def test_pin_image_writes_one_digest_into_every_manifest(tmp_path):
    shutil.copytree(ROOT / "infra", tmp_path / "infra")
    digest = "sha256:" + "ab" * 32
    changed = pin_image.pin(digest, root=tmp_path)
    assert {p.name for p in changed} == {"rayjob.yaml", "rayjob-train.yaml", "raycluster.yaml", "cluster.yaml"}
    for path in changed:
        assert f"{pin_image.IMAGE}@{digest}" in path.read_text()
        assert pin_image.PLACEHOLDER not in path.read_text()
    with pytest.raises(SystemExit, match="not an image digest"):
        pin_image.pin("latest", root=tmp_path)
