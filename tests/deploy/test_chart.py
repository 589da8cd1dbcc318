"""The Helm chart, rendered and linted by Helm's engine (helm-python-sdk), every object validated: core kinds by
kubernetes-validate --strict, TrainJob and JobSet by check-jsonschema against their CRDs' vendored schemas."""

from __future__ import annotations

import copy
from typing import Any

import helm_python
import pytest
from chart_tools import (
    CHART,
    CRD_SCHEMAS,
    FULL_VALUES,
    by_kind,
    check_jsonschema,
    core_problems,
    manifest_files,
    render,
)

THREE_REWARDS = {"rewards": [{"name": "jpeg"}, {"name": "ocr"}, {"name": "pickscore", "gpu": 1}]}
VALUES = {"default": {}, "full": FULL_VALUES, "jobset": {"trainer": {"engine": "jobset", "nodes": 3}}}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Each values set's objects."""
    return {name: render(values) for name, values in VALUES.items()}


@pytest.mark.parametrize("values", ["default", "full"])
def test_helm_lint_passes_strict(values: str) -> None:
    report = helm_python.lint(CHART, VALUES[values], strict=True)
    assert report["errors"] == []
    # Severity 2 is a warning, 3 an error; 1 (info) is only the missing chart icon.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values", list(VALUES))
def test_every_core_object_passes_kubernetes_validate_strict(values: str, rendered: dict) -> None:
    objects = rendered[values]
    assert {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"} <= {o["kind"] for o in objects}
    assert core_problems(objects) == []


TRAINERS = [("default", "TrainJob"), ("full", "JobSet"), ("jobset", "JobSet")]


@pytest.fixture(scope="module")
def crd_errors(rendered: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """check-jsonschema once per CRD schema, over every rendered trainer of that kind and one misspelt copy:
    object name ("default-TrainJob", ..., "misspelt-TrainJob", "misspelt-JobSet") -> its errors."""
    folder = tmp_path_factory.mktemp("crd-objects")
    objects: dict[str, dict[str, Any]] = {kind: {} for kind in CRD_SCHEMAS}
    for values, kind in TRAINERS:
        [objects[kind][f"{values}-{kind}"]] = by_kind(rendered[values], kind).values()
    [job] = copy.deepcopy(list(by_kind(rendered["default"], "TrainJob").values()))
    job["spec"]["trainer"]["numNode"] = job["spec"]["trainer"].pop("numNodes")
    [jobset] = copy.deepcopy(list(by_kind(rendered["jobset"], "JobSet").values()))
    jobset["spec"]["replicatedJobs"][0]["replicas"] = "two"
    objects["TrainJob"]["misspelt-TrainJob"], objects["JobSet"]["misspelt-JobSet"] = job, jobset
    errors: dict[str, list[str]] = {}
    for kind, kind_objects in objects.items():
        errors |= check_jsonschema(CRD_SCHEMAS[kind], kind_objects, folder)
    return errors


@pytest.mark.parametrize(("values", "kind"), TRAINERS)
def test_the_trainer_passes_check_jsonschema_against_its_crd(values: str, kind: str, crd_errors: dict) -> None:
    assert crd_errors[f"{values}-{kind}"] == []


def test_the_validators_catch_a_misspelt_field(rendered: dict, crd_errors: dict) -> None:
    assert any("numNode" in error for error in crd_errors["misspelt-TrainJob"]), crd_errors["misspelt-TrainJob"]
    assert crd_errors["misspelt-JobSet"] != []
    deployment = copy.deepcopy(next(iter(by_kind(rendered["default"], "Deployment").values())))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    assert any("readinesProbe" in p for p in core_problems([deployment]))


def test_three_rewards_give_three_deployments_and_services_and_one_policy_naming_them() -> None:
    objects = render(THREE_REWARDS)
    names = {"rewardflow-jpeg", "rewardflow-ocr", "rewardflow-pickscore"}
    assert set(by_kind(objects, "Deployment")) == names == set(by_kind(objects, "Service"))
    assert set(by_kind(objects, "PodDisruptionBudget")) == names
    [policy] = by_kind(objects, "NetworkPolicy").values()
    [expression] = policy["spec"]["podSelector"]["matchExpressions"]
    assert expression == {"key": "rewardflow.dev/reward", "operator": "In", "values": ["jpeg", "ocr", "pickscore"]}
    for deployment in by_kind(objects, "Deployment").values():  # the policy selects every reward pod
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        assert labels["rewardflow.dev/reward"] in expression["values"]
    [rule] = policy["spec"]["ingress"]
    trainer, prometheus = rule["from"]
    assert trainer == {"podSelector": {"matchLabels": {**selector(), "app.kubernetes.io/component": "trainer"}}}
    assert set(prometheus) == {"namespaceSelector", "podSelector"}, "Prometheus: both selectors in one peer (AND)"
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]


def selector() -> dict[str, str]:
    return {"app.kubernetes.io/name": "rewardflow", "app.kubernetes.io/instance": "rewardflow"}


def test_default_values_give_every_reward_probes_security_and_resources(rendered: dict) -> None:
    objects = rendered["default"]
    deployments = by_kind(objects, "Deployment")
    assert {d.removeprefix("rewardflow-") for d in deployments} == {"jpeg", "ocr", "pickscore", "geneval"}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, name
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, name
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert {"/tmp", "/models"} <= {m["mountPath"] for m in container["volumeMounts"]}
        assert [m["readOnly"] for m in container["volumeMounts"] if m["mountPath"] == "/models"] == [True]
        assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        gpus = container["resources"]["limits"].get("nvidia.com/gpu", 0)
        assert env["REWARDFLOW_DEVICE"] == ("cuda" if gpus else "cpu") and env["HF_HUB_OFFLINE"] == "1"
        assert pod["automountServiceAccountToken"] is False
    assert {n: d["spec"]["replicas"] for n, d in deployments.items()} == dict.fromkeys(deployments, 1)
    assert set(by_kind(objects, "PodDisruptionBudget")) == set(deployments)
    assert by_kind(objects, "HorizontalPodAutoscaler") == {} and by_kind(objects, "Secret") == {}
    assert "ServiceMonitor" not in {o["kind"] for o in objects}


def test_full_values_add_the_key_the_monitor_and_the_autoscalers(rendered: dict) -> None:
    objects = rendered["full"]
    [secret] = by_kind(objects, "Secret").values()
    for deployment in by_kind(objects, "Deployment").values():
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        [key] = [e for e in container["env"] if e["name"] == "REWARDFLOW_API_KEY"]
        assert key["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"], "key": "api-key"}
        assert container["image"].startswith("registry.example.com/rewardflow/rewardflow-")
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    pickscore, geneval = hpas["rewardflow-pickscore"], hpas["rewardflow-geneval"]
    assert [m["type"] for m in pickscore["spec"]["metrics"]] == ["Pods", "Resource"]  # queue depth, CPU fallback
    assert pickscore["spec"]["metrics"][0]["pods"]["metric"]["name"] == "rewardflow_queue_depth"
    assert [m["type"] for m in geneval["spec"]["metrics"]] == ["Resource"]  # CPU alone when no queue target
    assert "replicas" not in by_kind(objects, "Deployment")["rewardflow-pickscore"]["spec"]  # the HPA owns it
    assert by_kind(objects, "PodDisruptionBudget")["rewardflow-pickscore"]["spec"]["minAvailable"] == 1
    [monitor] = by_kind(objects, "ServiceMonitor").values()
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"


def trainer_container(job: dict[str, Any]) -> dict[str, Any]:
    """The node container of a JobSet (the command, args and env the pods run)."""
    [replicated] = job["spec"]["replicatedJobs"]
    [container] = replicated["template"]["spec"]["template"]["spec"]["containers"]
    return container


def test_the_trainjob_and_the_jobset_run_the_same_entrypoint_on_nodes_x_gpus(rendered: dict) -> None:
    [trainjob] = by_kind(rendered["default"], "TrainJob").values()
    [jobset] = by_kind(render({"trainer": {"engine": "jobset"}}), "JobSet").values()
    container = trainer_container(jobset)
    trainer = trainjob["spec"]["trainer"]
    assert trainer["command"] == container["command"] == ["torchrun", "-m", "rewardflow_trainer.cli"]
    assert trainer["args"] == container["args"] == ["--preset", "sd3_pickscore", "--out", "/runs/rewardflow-trainer"]
    assert {e["name"]: e for e in trainer["env"]}.items() <= {e["name"]: e for e in container["env"]}.items()
    assert trainjob["spec"]["runtimeRef"]["name"] == "torch-distributed"

    [full] = by_kind(rendered["full"], "JobSet").values()
    job = full["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert job["parallelism"] == job["completions"] == 2 and job["completionMode"] == "Indexed"
    env = {e["name"]: e.get("value") for e in trainer_container(full)["env"]}
    assert env["PET_NNODES"] == "2" and env["PET_NPROC_PER_NODE"] == "8" and env["PET_RDZV_BACKEND"] == "c10d"
    assert env["PET_RDZV_ENDPOINT"] == "rewardflow-trainer-node-0-0.rewardflow-trainer:29400"
    assert full["spec"]["network"]["subdomain"] == "rewardflow-trainer"
    assert trainer_container(full)["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert trainer_container(full)["args"][4:] == ["--epochs", "300", "sample.batch_size=12"]
    assert full["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    for reward in ("jpeg", "pickscore", "geneval"):
        assert env[f"REWARDFLOW_ENDPOINT_{reward.upper()}"] == f"http://rewardflow-{reward}:8000"


def test_the_trainer_pods_carry_the_labels_the_network_policy_admits(rendered: dict) -> None:
    [policy] = by_kind(rendered["default"], "NetworkPolicy").values()
    admitted = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    [trainjob] = by_kind(rendered["default"], "TrainJob").values()
    [patch] = trainjob["spec"]["runtimePatches"]
    [node] = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert admitted.items() <= node["template"]["spec"]["template"]["metadata"]["labels"].items()
    [jobset] = by_kind(rendered["jobset"], "JobSet").values()
    pod = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    assert admitted.items() <= pod["metadata"]["labels"].items()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rewards": [{"name": "jpeg"}, {"name": "jpeg"}]}, 'rewards: "jpeg" is listed twice'),
        ({"trainer": {"engine": "mpi"}}, 'trainer.engine: "mpi": expected trainjob'),
    ],
)
def test_a_bad_values_file_fails_to_render_with_the_key(values: dict, message: str) -> None:
    with pytest.raises(helm_python.HelmError, match=message):
        render(values)


def test_the_plain_manifests_are_what_the_chart_renders() -> None:
    folder = CHART.parent / "manifests"
    files = manifest_files()  # three renders: once
    stale = [name for name, text in files.items() if (folder / name).read_text() != text]
    assert stale == [], f"k8s/manifests/{stale}: run python scripts/render_manifests.py"
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)
