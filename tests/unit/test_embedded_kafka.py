"""The embedded Apache Kafka: what it needs, and the configuration it writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import app.devstack.embedded_kafka as ek
from app.devstack.embedded import EmbeddedServiceError
from app.devstack.embedded_kafka import KafkaCluster, KafkaDistribution


def _fake_java(folder: Path, version: str) -> None:
    java = folder / "java"
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2020-01-01' >&2\n")
    java.chmod(0o755)


def test_no_java_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ek.shutil, "which", lambda name: None)
    with pytest.raises(EmbeddedServiceError, match="openjdk-17-jre-headless"):
        KafkaDistribution.java()


@pytest.mark.parametrize("version", ["11.0.2", "1.8.0_292"])
def test_an_old_java_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    _fake_java(tmp_path, version)
    monkeypatch.setenv("PATH", str(tmp_path))
    major = (
        version.split(".")[1]
        if version.startswith("1.")
        else version.split(".", maxsplit=1)[0]
    )
    with pytest.raises(EmbeddedServiceError, match=f"is Java {major}: install"):
        KafkaDistribution.java()


def test_java_17_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_java(tmp_path, "17.0.15")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert KafkaDistribution.java() == str(tmp_path / "java")


def test_fetching_without_maven_names_maven(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither mvn nor java
    dist = KafkaDistribution(cache_root=tmp_path / "cache")
    assert not dist.is_fetched()
    with pytest.raises(EmbeddedServiceError, match=r"apt-get install maven"):
        dist.fetch()


def test_the_command_says_one_line_without_java(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.devstack.embedded_kafka", "fetch"],
        env={"PATH": str(tmp_path), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 69
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "apt-get install maven" in lines[-1]
    assert "Traceback" not in done.stderr


def test_three_nodes_replicate_three_times_with_two_in_sync() -> None:
    cluster = KafkaCluster(3)
    try:
        props = [cluster.server_properties(node) for node in cluster.nodes]
        voters = props[0]["controller.quorum.voters"].split(",")
        assert len(voters) == 3 and all(
            p["controller.quorum.voters"] == props[0]["controller.quorum.voters"]
            for p in props
        )
        assert {p["node.id"] for p in props} == {"1", "2", "3"}
        for p in props:
            assert p["default.replication.factor"] == "3"
            assert p["min.insync.replicas"] == "2"
            assert p["offsets.topic.replication.factor"] == "3"
            assert p["process.roles"] == "broker,controller"
        ports = [n.port for n in cluster.nodes] + [
            n.controller_port for n in cluster.nodes
        ]
        assert len(set(ports)) == 6
        assert cluster.bootstrap_servers.count(",") == 2
    finally:
        cluster.stop()


def test_one_node_replicates_once() -> None:
    cluster = KafkaCluster(1, config={"log.retention.hours": "1"})
    try:
        props = cluster.server_properties(cluster.nodes[0])
        assert props["default.replication.factor"] == "1"
        assert props["min.insync.replicas"] == "1"
        assert props["log.retention.hours"] == "1"  # config overrides
    finally:
        cluster.stop()


def test_cluster_ids_never_look_like_an_option() -> None:
    # One in 64 base64 ids starts with '-': kafka-storage took it for a flag.
    ids = [ek._cluster_id() for _ in range(2000)]
    assert not any(i.startswith("-") for i in ids)
    assert all(len(i) == 22 for i in ids) and len(set(ids)) == 2000
