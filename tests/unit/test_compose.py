"""docker-compose.yml, the Dockerfile and the Grafana dashboard, checked without a Docker engine.

The file is read two ways:

* ``docker compose config`` (the Compose v2 CLI, plugin or standalone), when this
  machine has it: the model Compose itself builds, anchors merged and variables
  interpolated. It needs no daemon. Under CI=true a missing CLI is a failure, not a skip.
* otherwise PyYAML: imported here if installed, else through the base Python
  interpreter outside the virtualenv, which has it on this project's machines.

The dashboard's ClickHouse SQL is run on the real schema (chDB, ``store`` fixture),
so a panel that names a missing table or column fails here, not in Grafana.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from driftline.entry.cli import build_parser
from driftline.config import Settings
from driftline.entry.serve import SERVICES
from driftline.store.ddl import MIGRATIONS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DASHBOARD = ROOT / "infra" / "grafana" / "dashboards" / "driftline.json"
DATASOURCES = ROOT / "infra" / "grafana" / "provisioning" / "datasources" / "datasources.yml"
PROMETHEUS = ROOT / "infra" / "prometheus" / "prometheus.yml"
CLICKHOUSE_CONFIG = ROOT / "infra" / "clickhouse" / "config.d" / "driftline.xml"
CLICKHOUSE_USERS = ROOT / "infra" / "clickhouse" / "users.d" / "driftline.xml"

SIX = ("ingest", "predictor", "label-joiner", "drift-detector", "retrainer", "registry")
HTTP = {"ingest", "registry"}
# Required variables (``${VAR:?...}``): docker compose config needs values for them.
SECRETS = {"DRIFTLINE_REGISTRY_TOKEN": "test-token", "CLICKHOUSE_PASSWORD": "test-password",
           "GRAFANA_ADMIN_PASSWORD": "test-admin"}
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


# ---------------------------------------------------------------- loading


@lru_cache(maxsize=1)
def compose_cli() -> tuple[str, ...] | None:
    """The Compose v2 CLI, if installed: ``docker compose`` or a standalone ``docker-compose`` v2."""
    candidates = []
    if shutil.which("docker"):
        candidates.append(("docker", "compose"))
    if shutil.which("docker-compose"):
        candidates.append(("docker-compose",))
    for cli in candidates:
        try:
            out = subprocess.run([*cli, "version", "--short"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip().lstrip("v").startswith(("2", "3", "4", "5")):
            return cli
    return None


def run_compose_config(env_overrides: dict[str, str | None], *args: str) -> subprocess.CompletedProcess:
    cli = compose_cli()
    assert cli is not None
    env = {**os.environ}
    for key, value in env_overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env.pop("COMPOSE_FILE", None)
    env.pop("COMPOSE_PROFILES", None)
    return subprocess.run([*cli, "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT), *args, "config", "--format", "json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def _other_pythons() -> list[str]:
    """Interpreters outside this virtualenv that may have PyYAML (pyenv's, Debian's python3-yaml)."""
    found = [getattr(sys, "_base_executable", ""), shutil.which("python3", path=_path_without_venv()) or "",
             "/usr/bin/python3"]
    unique = []
    for python in found:
        if python and Path(python).exists() and os.path.realpath(python) != os.path.realpath(sys.executable) \
                and python not in unique:
            unique.append(python)
    return unique


def _path_without_venv() -> str:
    venv_bin = str(Path(sys.prefix) / "bin")
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin)


def load_yaml(path: Path) -> Any:
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        yaml = None
    if yaml is not None:
        return yaml.safe_load(path.read_text())
    program = "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)"
    for python in _other_pythons():
        out = subprocess.run([python, "-c", program, str(path)], capture_output=True, text=True, timeout=60)
        if out.returncode == 0:
            return json.loads(out.stdout)
    pytest.fail("no YAML parser: add pyyaml to the [test] extra of pyproject.toml "
                "(or install the Docker Compose v2 CLI)")


@lru_cache(maxsize=1)
def compose_model() -> tuple[str, dict[str, Any]]:
    """(how it was read, the compose model) with every profile's services."""
    if compose_cli() is not None:
        out = run_compose_config(SECRETS, "--profile", "demo")
        assert out.returncode == 0, out.stderr
        return "docker compose config", json.loads(out.stdout)
    return "yaml", load_yaml(COMPOSE_FILE)


def services() -> dict[str, dict[str, Any]]:
    return compose_model()[1]["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def build_of(service: dict[str, Any]) -> tuple[Path, str] | None:
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        build = {"context": build}
    context = Path(build.get("context", "."))
    context = (ROOT / context).resolve() if not context.is_absolute() else context.resolve()
    return context, build.get("dockerfile", "Dockerfile")


def driftline_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services().items() if s.get("build") is not None
            or str(s.get("image", "")).startswith("driftline")}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


# ---------------------------------------------------------------- the compose file


def test_the_compose_cli_accepts_the_file():
    """Compose's own validation (schema, interpolation, anchors, depends_on targets)."""
    if compose_cli() is None:
        reason = "no Docker Compose v2 CLI on this machine (make test builds it: infra/compose-cli.sh)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    for profile_args in ((), ("--profile", "demo")):
        out = run_compose_config(SECRETS, *profile_args)
        assert out.returncode == 0, out.stderr
        assert set(SIX) <= set(json.loads(out.stdout)["services"])


def test_secrets_are_required_not_committed():
    text = COMPOSE_FILE.read_text()
    for variable in SECRETS:
        uses = re.findall(r"\$\{" + variable + r"([^}]*)\}", text)
        assert uses, f"{variable} is not used"
        assert all(use.startswith(":?") for use in uses), f"{variable} must be required (${{{variable}:?...}}), not defaulted"
    # No literal token or password assigned anywhere.
    for line in text.splitlines():
        m = re.match(r"\s*(DRIFTLINE_REGISTRY_TOKEN|CLICKHOUSE_PASSWORD|GF_SECURITY_ADMIN_PASSWORD):\s*(\S.*)$", line)
        if m:
            assert m.group(2).startswith("${"), line
    if compose_cli() is not None:
        for variable in SECRETS:
            out = run_compose_config({**SECRETS, variable: None})
            assert out.returncode != 0 and variable in out.stderr, f"compose starts without {variable}"


def test_infrastructure_services_exist():
    s = services()
    assert re.match(r"apache/kafka:4\.", s["kafka"]["image"])
    env = environment(s["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}  # KRaft, one node
    assert "ZOOKEEPER" not in " ".join(env)
    assert re.match(r"(apicurio/apicurio-registry:3\.|confluentinc/cp-schema-registry:)", s["schema-registry"]["image"])
    assert s["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert s["prometheus"]["image"].startswith("prom/prometheus:")
    assert s["grafana"]["image"].startswith("grafana/grafana")
    assert "grafana-clickhouse-datasource" in environment(s["grafana"])["GF_INSTALL_PLUGINS"]
    for name in ("kafka", "schema-registry", "clickhouse"):
        assert s[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_every_driftline_service_is_built_from_the_one_dockerfile():
    ours = driftline_services()
    assert set(SIX) <= set(ours)
    builds = {name: build_of(s) for name, s in ours.items()}
    assert all(builds.values()), f"services without build: {[n for n, b in builds.items() if b is None]}"
    assert set(builds.values()) == {(ROOT, "Dockerfile")}
    assert len({s.get("image") for s in ours.values()}) == 1, "one image tag for every driftline service"
    assert DOCKERFILE.exists()


def test_each_of_the_six_services_runs_its_own_command():
    s = services()
    assert set(SIX) == set(SERVICES)  # the CLI's list of services
    parser = build_parser()
    for name in SIX:
        command = s[name]["command"]
        assert isinstance(command, list) and command[:2] == ["serve", name], (name, command)
        args = parser.parse_args(command)  # the real CLI accepts it
        assert args.service == name
        if name in HTTP:
            assert args.host == "0.0.0.0", f"{name} must listen beyond the container's loopback"
            healthcheck = " ".join(s[name]["healthcheck"]["test"])
            assert f":{args.port}/healthz" in healthcheck
        else:
            assert "--port" not in command


def test_driftline_services_have_healthchecks_and_wait_for_their_dependencies():
    for name in SIX:
        service = services()[name]
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        deps = depends_on(service)
        for infra in ("kafka", "schema-registry", "clickhouse"):
            assert deps.get(infra) == "service_healthy", f"{name} must wait for {infra} to be healthy"
        if name != "registry":
            assert deps.get("registry") == "service_healthy", f"{name} reads models from the registry"


def test_every_driftline_variable_is_a_settings_field():
    known = {f"DRIFTLINE_{field.upper()}" for field in Settings.model_fields}
    used: dict[str, set[str]] = {}
    for name, service in services().items():
        for variable in environment(service):
            if variable.startswith("DRIFTLINE_"):
                used.setdefault(variable, set()).add(name)
    assert used, "no DRIFTLINE_* variable set"
    unknown = {v: sorted(where) for v, where in used.items() if v not in known}
    assert not unknown, f"not fields of driftline.config.Settings: {unknown}"
    # Also variables referenced only in interpolations, e.g. ${DRIFTLINE_PARTITIONS:-3}.
    referenced = set(re.findall(r"\$\{(DRIFTLINE_[A-Z0-9_]+)", COMPOSE_FILE.read_text()))
    assert referenced <= known, referenced - known


def test_driftline_services_point_at_the_cluster():
    for name in SIX:
        env = environment(services()[name])
        assert env["DRIFTLINE_KAFKA_BOOTSTRAP"].split(",")[0].startswith("kafka:")
        assert "schema-registry:" in env["DRIFTLINE_SCHEMA_REGISTRY_URL"]
        assert re.match(r"http://([^@/]+@)?clickhouse:8123(/|$)", env["DRIFTLINE_STORE_DSN"]), env["DRIFTLINE_STORE_DSN"]
        assert env["DRIFTLINE_REGISTRY_URL"].startswith("http://registry:")
    assert "DRIFTLINE_REGISTRY_TOKEN" in environment(services()["registry"])


def test_mounted_files_exist():
    for name, service in services().items():
        for volume in service.get("volumes") or []:
            if isinstance(volume, dict):
                if volume.get("type") != "bind":
                    continue
                source = Path(volume["source"])
            else:
                head = volume.split(":", 1)[0]
                if not head.startswith((".", "/")):
                    continue  # a named volume
                source = ROOT / head
            assert source.exists(), f"{name} mounts missing {source}"


# ---------------------------------------------------------------- the Dockerfile


def test_dockerfile_builds_one_non_root_image_for_every_service():
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M) or re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert re.search(r"^RUN pip install -c constraints\.txt \.", text, re.M)
    final_stage = text.rsplit("\nFROM ", 1)[-1]
    user = re.findall(r"^USER (\S+)", final_stage, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert 'ENTRYPOINT ["driftline"]' in final_stage
    assert 'CMD ["--help"]' in final_stage
    # Everything COPY'd into the build is in the repo and not excluded by .dockerignore.
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for item in source.split():
            assert (ROOT / item).exists(), item
            assert item.rstrip("/") not in ignored, f"{item} is copied but .dockerignore excludes it"


# ---------------------------------------------------------------- observability


def test_clickhouse_exposes_prometheus_metrics_that_prometheus_scrapes():
    port = ET.parse(CLICKHOUSE_CONFIG).getroot().findtext("prometheus/port")
    assert port
    ET.parse(CLICKHOUSE_USERS)  # well-formed
    config = load_yaml(PROMETHEUS)
    targets = {t for job in config["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    assert f"clickhouse:{port}" in targets
    assert {"clickhouse", "prometheus"} <= set(services())


def test_prometheus_scrapes_every_driftline_service_at_its_metrics_port():
    config = load_yaml(PROMETHEUS)
    targets = {t for job in config["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    for name in SIX:
        env = environment(services()[name])
        assert env.get("DRIFTLINE_METRICS_HOST") == "0.0.0.0", f"{name}: metrics must listen beyond the container"
        port = env.get("DRIFTLINE_METRICS_PORT")
        assert port, f"{name} serves no metrics"
        assert Settings(metrics_port=port).metrics_port  # a valid value for the setting
        assert f"{name}:{port}" in targets, f"prometheus does not scrape {name}:{port}"
        published = [str(p["target"]) if isinstance(p, dict) else str(p).rsplit(":", 1)[-1]
                     for p in services()[name].get("ports") or []]
        assert port not in published, f"{name}: the metrics port stays on the compose network"


def _datasource_uids() -> dict[str, str]:
    return {d["uid"]: d["type"] for d in load_yaml(DATASOURCES)["datasources"]}


def _panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = []
    for panel in dashboard["panels"]:
        panels.extend(panel.get("panels", [panel]) if panel.get("type") == "row" else [panel])
    return panels


def test_dashboard_is_provisioned_with_both_datasources():
    uids = _datasource_uids()
    assert "prometheus" in uids.values() and "grafana-clickhouse-datasource" in uids.values()
    panels = _panels()
    assert panels
    for panel in panels:
        for target in panel["targets"]:
            ds = target.get("datasource") or panel["datasource"]
            assert uids.get(ds["uid"]) == ds["type"], f"panel {panel['title']!r}: unknown datasource {ds}"
    titles = " | ".join(p["title"].lower() for p in panels)
    for wanted in ("predictions per minute", "psi", "coverage", "error rate"):
        assert wanted in titles


def _tables() -> set[str]:
    return {m for _, _, statements in MIGRATIONS for s in statements
            for m in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", s)}


def _clickhouse_queries() -> list[tuple[str, str]]:
    return [(p["title"], t["rawSql"]) for p in _panels() for t in p["targets"]
            if (t.get("datasource") or p["datasource"])["type"] == "grafana-clickhouse-datasource"]


def test_dashboard_panels_name_existing_tables():
    tables = _tables()
    queries = _clickhouse_queries()
    assert len(queries) >= 4
    for title, sql in queries:
        named = set(re.findall(r"\b(?:FROM|JOIN)\s+(\w+)", sql, re.I))
        assert named and named <= tables, f"{title!r} names {named - tables or named}"
        assert re.search(r"\bFINAL\b", sql), f"{title!r}: ReplacingMergeTree tables are counted with FINAL"
    by_title = dict(queries)
    labels_sql = next(sql for title, sql in queries if "error rate" in title.lower())
    assert "status = 'joined'" in labels_sql and "labels FINAL" in labels_sql
    assert any("kind = 'coverage'" in sql and "statistic = 'coverage'" in sql for sql in by_title.values())
    assert any("statistic = 'psi'" in sql and "drift_metrics" in sql for sql in by_title.values())


FROM_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
NOW = datetime(2026, 1, 1, 0, 30, tzinfo=timezone.utc)


def _seed(store) -> None:
    store.insert("predictions", [{
        "prediction_id": f"e{i}:1:champion", "event_id": f"e{i}", "entity_id": "c", "model": "credit",
        "model_version": 1, "role": "champion", "score": 0.5, "scores": {"1": 0.5}, "predicted_label": "1",
        "numeric_features": {"income": 1.0}, "categorical_features": {"region": "north"},
        "event_time": NOW, "prediction_time": NOW} for i in range(5)])
    store.insert("labels", [{
        "event_id": f"e{i}", "model": "credit", "label": "1", "value": None, "label_time": NOW, "status": "joined",
        "status_rank": 2, "reason": "", "model_version": 1, "predicted_label": "1", "error": float(i % 2),
        "event_time": NOW, "updated_at": NOW} for i in range(5)])
    window = {"model": "credit", "model_version": 1, "band": "stable", "window_start": FROM_MS + 60_000,
              "window_end": FROM_MS + 120_000, "n": 5, "computed_at": NOW}
    store.insert("drift_metrics", [
        {**window, "kind": "data", "feature": "income", "statistic": "psi", "value": 0.3},
        {**window, "kind": "coverage", "feature": "__labels__", "statistic": "coverage", "value": 0.9, "band": ""},
    ])
    store.insert("dead_letters", [{
        "dead_letter_id": "d1", "service": "ingest", "topic": "features", "partition": None, "offset": None,
        "key": None, "payload": "{}", "error": "bad", "received_at": NOW}])


def test_dashboard_sql_runs_on_the_real_schema(store):
    """Grafana's ${__from} / ${__to} (epoch ms) substituted; every panel returns its rows."""
    _seed(store)
    for title, sql in _clickhouse_queries():
        concrete = sql.replace("${__from}", str(FROM_MS)).replace("${__to}", str(FROM_MS + 86_400_000))
        assert "$" not in concrete, f"{title!r} uses a macro this test does not substitute"
        columns, rows = store.query(concrete)
        assert rows, f"{title!r} returned nothing on seeded data"
        target = next(t for p in _panels() if p["title"] == title for t in p["targets"])
        if target.get("format") == 0 or target.get("queryType") == "timeSeries":
            assert columns[0] == "time", f"{title!r}: a time series starts with its time column"
