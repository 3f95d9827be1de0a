"""Daemon config: YAML/TOML files, GRAPHSENTRY_* env overrides, validation, redaction, --print-config."""
from __future__ import annotations

import pytest
import yaml

from detector.daemon.config import load_config, redact
from training.cli import main


def test_yaml_file_then_env_override(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"source": {"type": "kafka"}, "kafka": {"topic": "flows", "bootstrap": "a:1"},
                                 "window": {"size": 30}}))
    cfg = load_config(f, env={"GRAPHSENTRY_KAFKA_BOOTSTRAP": "b:2", "GRAPHSENTRY_WINDOW_LATENESS": "2.5",
                              "GRAPHSENTRY_METRICS_ENABLED": "false", "GRAPHSENTRY_SHARED_DATA": "/x"})
    assert cfg["kafka"]["topic"] == "flows"
    assert cfg["kafka"]["bootstrap"] == "b:2"          # env beats the file
    assert cfg["window"]["size"] == 30 and cfg["window"]["lateness"] == 2.5
    assert cfg["metrics"]["enabled"] is False
    assert cfg["metrics"]["host"] == "127.0.0.1"       # loopback by default


def test_toml_file_and_json_env_list(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[source]\npaths = ["a.log"]\n[window]\nsize = 15.0\n')
    cfg = load_config(f, env={"GRAPHSENTRY_ALERTS_SINKS": '[{"type": "jsonl", "path": "x.jsonl"}]'})
    assert cfg["source"]["paths"] == ["a.log"] and cfg["window"]["size"] == 15.0
    assert cfg["alerts"]["sinks"] == [{"type": "jsonl", "path": "x.jsonl"}]


@pytest.mark.parametrize("over, match", [
    ({"windw": {"size": 1}}, "unknown config key 'windw'"),
    ({"window": {"sise": 1}}, "unknown config key 'window.sise'"),
    ({"window": {"size": 0}}, "window.size=0"),
    ({"source": {"type": "pcap"}}, "source.type='pcap'"),
    ({"alerts": {"sinks": [{"type": "email"}]}}, "type must be"),
])
def test_bad_config_is_a_clear_error(over, match):
    over = {"source": {"paths": ["x"]}, **over} if "source" not in over else over
    with pytest.raises(ValueError, match=match):
        load_config(overrides=over, env={})


def test_bad_env_value_names_the_variable():
    with pytest.raises(ValueError, match="GRAPHSENTRY_WINDOW_SIZE"):
        load_config(overrides={"source": {"paths": ["x"]}}, env={"GRAPHSENTRY_WINDOW_SIZE": "soon"})
    with pytest.raises(ValueError, match="unknown key 'nope'"):
        load_config(overrides={"source": {"paths": ["x"]}}, env={"GRAPHSENTRY_KAFKA_NOPE": "1"})


def test_redaction_hides_secrets_only():
    r = redact({"kafka": {"sasl_plain_password": "hunter2", "sasl_plain_username": "u", "ssl_password": None},
                "alerts": {"sinks": [{"type": "alertmanager", "url": "http://admin:pw@am:9093"}]}})
    assert r["kafka"]["sasl_plain_password"] == "***"
    assert r["kafka"]["sasl_plain_username"] == "u"
    assert r["kafka"]["ssl_password"] is None
    assert r["alerts"]["sinks"][0]["url"] == "http://***@am:9093"


def test_print_config_redacts(tmp_path, capsys, monkeypatch):
    f = tmp_path / "c.yaml"
    f.write_text("source:\n  type: kafka\nkafka:\n  sasl_plain_password: s3cret-value\n")
    monkeypatch.setenv("GRAPHSENTRY_KAFKA_TOPIC", "from-env")
    assert main(["serve", "--config", str(f), "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "s3cret-value" not in out and "'***'" in out
    assert yaml.safe_load(out)["kafka"]["topic"] == "from-env"


def test_metrics_port_in_use_is_a_clear_error(tmp_path):
    import socket

    from daemon_helpers import FanoutScorer
    from detector.daemon import run_daemon

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        cfg = load_config(overrides={"source": {"paths": [str(tmp_path)]}, "metrics": {"port": s.getsockname()[1]},
                                     "alerts": {"sinks": [{"type": "sqlite", "path": str(tmp_path / "a.db")}]}},
                          env={})
        with pytest.raises(ValueError, match="cannot serve metrics on 127.0.0.1"):
            run_daemon(cfg, scorer=FanoutScorer(), install_signals=False)
    finally:
        s.close()
