"""The declarative infrastructure parses, and every command it runs is one our CLIs accept
with config files that exist: in the image (/app is the repository, infra/docker/Dockerfile)
or in the working directory a runtime env ships (relative paths)."""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from pipeline.cli import build_parser
from teacher_jobs.gpus import gpu_type
from teacher_jobs.staging import CACHE_ENV

ROOT = Path(__file__).resolve().parents[1]
YAMLS = sorted((ROOT / "infra").rglob("*.yaml"))


def _commands(entrypoint: str) -> list[list[str]]:
    return [shlex.split(part) for part in entrypoint.split("&&")]


def _check_command(argv: list[str]) -> None:
    if argv[:3] == ["python", "-m", "teacher_jobs"]:
        args, program = _parse_generate(argv[3:]), "teacher_jobs"
    else:
        assert argv[0] == "s2dit", f"unknown entry point {argv[0]!r}"
        args, program = build_parser().parse_args(argv[1:]), "s2dit"
    config = getattr(args, "config", None)
    if config:
        assert "://" not in config
        local = ROOT / config.removeprefix("/app/")
        assert (config.startswith("/app/") or not config.startswith("/")) and local.exists(), \
            f"{program}: config {config} is neither in the image nor in the repository"
        tomllib.loads(local.read_text())


def _parse_generate(argv: list[str]):
    """teacher_jobs' parser without running the job."""
    import argparse

    from teacher_jobs.cli_args import add_generate_args

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    add_generate_args(sub.add_parser("generate"))
    return parser.parse_args(argv)


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(ROOT)))
def test_infra_yaml_parses_and_its_commands_are_valid(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} is empty"
    for doc in docs:
        entrypoint = (doc.get("spec") or {}).get("entrypoint") or doc.get("entrypoint")
        if entrypoint:
            for argv in _commands(entrypoint):
                _check_command(argv)
        runtime_env = (doc.get("spec") or {}).get("runtimeEnvYAML")
        if runtime_env:
            assert isinstance(yaml.safe_load(runtime_env), dict)


def test_storage_profiles_parse():
    profiles = tomllib.loads((ROOT / "infra" / "storage" / "profiles.toml").read_text())["profiles"]
    assert profiles and all(isinstance(v, dict) for v in profiles.values())
    keys = {k for v in profiles.values() for k in v} | {k for v in profiles.values()
                                                       for k in v.get("client_kwargs", {})}
    assert not keys & {"key", "secret", "aws_access_key_id", "aws_secret_access_key", "token"}


# -- cluster sizes against the teacher's memory plan, and Ray auth (issues 14 and 17) ---------

TEACHER_MANIFESTS = ("infra/kuberay/rayjob.yaml", "infra/kuberay/raycluster.yaml")
KUBERAY = sorted((ROOT / "infra" / "kuberay").glob("*.yaml"))
# Public hardware facts the manifests select: GPU memory of a GPU product label (NVIDIA GPU
# feature discovery) and the AWS instance types of infra/ray/cluster.yaml.
GPU_PRODUCT_GB = {"NVIDIA-A100-SXM4-80GB": 80, "NVIDIA-H100-80GB-HBM3": 80}
AWS_GPU_NODES = {"p4de.24xlarge": {"gpus": 8, "gpu_gb": 80, "host_gib": 1152, "vcpus": 96,
                                   "gpu": "NVIDIA-A100-SXM4-80GB"}}
AWS_CPU_NODES = {"m6i.2xlarge"}


def _gib(quantity: str) -> float:
    """A Kubernetes memory quantity in GiB."""
    units = {"Ki": 2**-20, "Mi": 2**-10, "Gi": 1, "Ti": 2**10}
    for unit, scale in units.items():
        if str(quantity).endswith(unit):
            return float(str(quantity)[: -len(unit)]) * scale
    return float(quantity) / 2**30


def _cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def _containers(template: dict) -> list[dict]:
    return template["spec"]["containers"]


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.fixture(scope="module")
def teacher_plan():
    from teacher_jobs.config import JobConfig

    config = JobConfig.load(str(ROOT / "configs/wan22_a14b.toml"))
    plan = config.teacher.memory_plan(config.video, gpu_memory_gb=config.gpu_memory_gb)
    assert plan.fits
    return config, plan


@pytest.mark.parametrize("path", KUBERAY, ids=lambda p: p.name)
def test_kuberay_head_needs_no_gpu_and_no_weights(path):
    spec = _cluster_spec(yaml.safe_load(path.read_text()))
    head = spec["headGroupSpec"]
    assert head["rayStartParams"].get("num-gpus") == "0" and head["rayStartParams"].get("num-cpus") == "0"
    for container in _containers(head["template"]):
        resources = container.get("resources", {})
        for part in ("limits", "requests"):
            assert "nvidia.com/gpu" not in resources.get(part, {}), f"{path.name}: the head asks for a GPU"
        assert not container.get("volumeMounts") and "HF_HOME" not in _env(container), \
            f"{path.name}: the head mounts a model cache (the driver reads no weights)"
    assert "nodeSelector" not in head["template"]["spec"]  # any CPU node will do


@pytest.mark.parametrize("name", TEACHER_MANIFESTS)
def test_kuberay_gpu_workers_follow_the_a14b_memory_plan(name, teacher_plan):
    config, plan = teacher_plan
    doc = yaml.safe_load((ROOT / name).read_text())
    groups = _cluster_spec(doc)["workerGroupSpecs"]
    assert len(groups) == 1
    group = groups[0]
    (worker,) = _containers(group["template"])
    limits = worker["resources"]["limits"]
    gpus = int(limits["nvidia.com/gpu"])
    actors = gpus / config.num_gpus_per_actor  # teacher actors one pod holds
    product = group["template"]["spec"]["nodeSelector"]["nvidia.com/gpu.product"]
    assert GPU_PRODUCT_GB[product] >= config.gpu_memory_gb >= plan.peak_gb_per_actor
    # the GPU the job's estimate is sized for is the one the pods select (issue 27)
    assert config.gpu is not None and gpu_type(config.gpu).product == product, \
        f"{name} selects {product}, configs/wan22_a14b.toml estimates gpu = {config.gpu!r}"
    assert _gib(limits["memory"]) * 2**30 / 1e9 >= actors * plan.host_gb_per_actor, \
        f"{name}: {limits['memory']} host memory for {actors:g} actors of {plan.host_gb_per_actor:.0f} GB"
    assert float(limits["cpu"]) >= actors * config.num_cpus_per_actor
    # weights download to the GPU pod's own volume (float32 files at most: 4 bytes a parameter)
    volumes = {v["name"]: v for v in group["template"]["spec"]["volumes"]}
    mount = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
    assert _env(worker)["HF_HOME"]["value"].startswith(mount["model-cache"])
    # staged weights (teacher_jobs/staging.py) are fetched and checked once per pod, there too
    assert _env(worker)[CACHE_ENV]["value"].startswith(mount["model-cache"])
    params = sum(c.params for c in plan.components.values())
    assert _gib(volumes["model-cache"]["emptyDir"]["sizeLimit"]) * 2**30 >= 4 * params
    if doc["kind"] == "RayJob":  # exactly the GPUs the job's actors take: none idle, none waiting
        assert group["replicas"] * gpus == config.num_actors * config.num_gpus_per_actor
        assert "configs/wan22_a14b.toml" in doc["spec"]["entrypoint"]
    else:
        assert group["maxReplicas"] * gpus >= config.num_actors * config.num_gpus_per_actor


def test_ray_cluster_launcher_sizes_follow_the_a14b_memory_plan(teacher_plan):
    config, plan = teacher_plan
    cluster = yaml.safe_load((ROOT / "infra/ray/cluster.yaml").read_text())
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]
    assert head["node_config"]["InstanceType"] in AWS_CPU_NODES
    assert head["resources"] == {"CPU": 0, "GPU": 0}  # nothing is scheduled on the head
    worker = types["gpu_worker"]
    node = AWS_GPU_NODES[worker["node_config"]["InstanceType"]]
    assert worker["resources"]["GPU"] == node["gpus"]
    assert gpu_type(config.gpu).product == node["gpu"]
    actors = node["gpus"] / config.num_gpus_per_actor
    assert node["gpu_gb"] >= config.gpu_memory_gb >= plan.peak_gb_per_actor
    assert node["host_gib"] * 2**30 / 1e9 >= actors * plan.host_gb_per_actor
    assert node["vcpus"] >= actors * config.num_cpus_per_actor
    assert worker["max_workers"] * node["gpus"] >= config.num_actors * config.num_gpus_per_actor


def _auth_disabled(text: str) -> bool:
    import re

    return bool(re.search(r"RAY_AUTH_MODE\W{0,8}disabled", text))


@pytest.mark.parametrize("path", [*YAMLS, ROOT / "infra/docker/Dockerfile"], ids=lambda p: str(p.relative_to(ROOT)))
def test_ray_token_auth_is_never_disabled_outside_the_embedded_runtime(path):
    text = path.read_text()
    assert not _auth_disabled(text), f"{path.relative_to(ROOT)} disables Ray authentication"
    for doc in yaml.safe_load_all(text) if path.suffix == ".yaml" else []:
        runtime_env = (doc or {}).get("spec", {}).get("runtimeEnvYAML") if isinstance(doc, dict) else None
        if runtime_env:
            assert "RAY_AUTH_MODE" not in (yaml.safe_load(runtime_env).get("env_vars") or {})


def test_the_image_turns_ray_token_auth_on():
    lines = (ROOT / "infra/docker/Dockerfile").read_text().splitlines()
    assert "ENV RAY_AUTH_MODE=token" in lines


@pytest.mark.parametrize("path", KUBERAY, ids=lambda p: p.name)
def test_kuberay_ray_containers_take_the_token_from_a_secret_and_keep_the_dashboard_inside(path):
    doc = yaml.safe_load(path.read_text())
    spec = _cluster_spec(doc)
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    if doc["kind"] == "RayJob":
        templates.append(doc["spec"]["submitterPodTemplate"])
    for template in templates:
        for container in _containers(template):
            env = _env(container)
            assert env["RAY_AUTH_MODE"]["value"] == "token", f"{path.name}: {container['name']}"
            token = env["RAY_AUTH_TOKEN"]
            assert "value" not in token and token["valueFrom"]["secretKeyRef"]["name"], \
                f"{path.name}: {container['name']} must read the token from a Kubernetes secret"
    head = spec["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP" and head["enableIngress"] is False
    for template in templates:
        for container in _containers(template):
            for port in container.get("ports", []):
                assert "hostPort" not in port


def test_ray_cluster_launcher_keeps_auth_on_and_the_dashboard_on_localhost():
    cluster = yaml.safe_load((ROOT / "infra/ray/cluster.yaml").read_text())
    assert "--env RAY_AUTH_MODE=token" in cluster["docker"]["run_options"]
    assert "~/.ray/auth_token" in cluster["file_mounts"]
    start = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start


# -- launch timeouts, budget cap and deadline (issue 27) ----------------------------------------

def test_the_rayjob_sets_launch_timeouts_and_a_budget_cap_that_stops_before_its_deadline(teacher_plan):
    """The job's config sets every launch bound explicitly (not a default tuned for nobody);
    the budget cap's clean stop (a commit) comes before the RayJob's hard deadline kills the
    cluster, even after the longest placement; the stall timeout outlasts twice the estimated
    time of one micro-batch on the selected GPU (actors report progress per micro-batch)."""
    config, plan = teacher_plan
    doc = yaml.safe_load((ROOT / "infra/kuberay/rayjob.yaml").read_text())
    (argv,) = _commands(doc["spec"]["entrypoint"])
    path = _parse_generate(argv[3:]).config
    job = tomllib.loads((ROOT / path.removeprefix("/app/")).read_text())["job"]
    for key in ("placement_timeout_s", "load_timeout_s", "stall_timeout_s", "max_init_failures",
                "max_gpu_hours"):
        assert key in job, f"{path} leaves {key} to its default"
    gpus = config.num_actors * config.num_gpus_per_actor
    budget_wall_s = config.max_gpu_hours / gpus * 3600  # GPU-hours count from placement
    assert budget_wall_s + config.placement_timeout_s < doc["spec"]["activeDeadlineSeconds"]
    micro_batch_s = plan.micro_batch * plan.cost(config.gpu).seconds_per_sample
    assert config.stall_timeout_s > 2 * micro_batch_s


def test_benchmarks_state_the_cost_of_the_gpu_the_manifests_select(teacher_plan):
    """BENCHMARKS' cost section names the shipped config's GPU and the estimate's figure."""
    config, plan = teacher_plan
    text = (ROOT / "BENCHMARKS.md").read_text()
    section = text[text.index("## Cost model for the A14B job"):]
    seconds = plan.cost(config.gpu).seconds_per_sample
    assert f"--gpu {config.gpu}" in section and f"{seconds:.1f} s" in section


@pytest.mark.parametrize("path", sorted((ROOT / "infra" / "kuberay").glob("*.yaml")), ids=lambda p: p.name)
def test_kuberay_credentials_come_from_secrets_never_from_values(path):
    """S3 keys reach every container that opens storage, and the hub token every container that
    downloads weights, from Kubernetes secrets (optional, so a service-account role can stand in);
    no environment variable that names a secret carries a literal value."""
    doc = yaml.safe_load(path.read_text())
    spec = _cluster_spec(doc)
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    if doc["kind"] == "RayJob":
        templates.append(doc["spec"]["submitterPodTemplate"])
    storage_containers = hub_containers = 0
    for template in templates:
        for container in _containers(template):
            env, where = _env(container), f"{path.name}: {container['name']}"
            for name, entry in env.items():
                if any(word in name for word in ("TOKEN", "SECRET", "ACCESS_KEY", "PASSWORD")):
                    assert "value" not in entry and "secretKeyRef" in entry["valueFrom"], where
            needed = (["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] if "AWS_ENDPOINT_URL" in env else []) \
                + (["HF_TOKEN"] if "HF_HOME" in env else [])
            storage_containers += "AWS_ENDPOINT_URL" in env
            hub_containers += "HF_HOME" in env
            for name in needed:
                secret = env.get(name, {}).get("valueFrom", {}).get("secretKeyRef")
                assert secret and secret["name"] and secret["key"] and secret.get("optional") is True, \
                    f"{where} must read {name} from an optional Kubernetes secret"
    assert storage_containers >= 2  # the head (driver) and the workers open the cache
    assert hub_containers == (0 if "train" in path.name else 1)  # teacher workers only
