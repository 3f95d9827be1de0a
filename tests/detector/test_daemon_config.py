"""Daemon config: YAML/TOML files, GRAPHSENTRY_* env overrides, schema validation at every level
(sections, keys, alert sinks), one-line errors, redaction, --print-config, the generated reference."""
from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from detector.alerts.sinks import make_sink
from detector.daemon.config import (
    DEFAULTS, SECTIONS, SINKS, ConfigError, dump, file_config, load_config, redact, reference_markdown,
)
from training.cli import main

ROOT = Path(__file__).resolve().parents[2]
KAFKA = {"source": {"type": "kafka"}}   # a source that needs no paths


def _write(tmp_path, name: str, text: str) -> Path:
    f = tmp_path / name
    f.write_text(text)
    return f


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
    f = _write(tmp_path, "c.toml", '[source]\npaths = ["a.log"]\n[window]\nsize = 15.0\n')
    cfg = load_config(f, env={"GRAPHSENTRY_ALERTS_SINKS": '[{"type": "jsonl", "path": "x.jsonl"}]'})
    assert cfg["source"]["paths"] == ["a.log"] and cfg["window"]["size"] == 15.0
    assert cfg["alerts"]["sinks"] == [{"type": "jsonl", "path": "x.jsonl", "required": True}]


def test_effective_config_has_every_section_and_key_with_defaults():
    cfg = load_config(overrides=KAFKA, env={})
    assert list(cfg) == ["source", "kafka", "window", "model", "alerts", "metrics", "pipeline", "log", "calibration",
                         "archive"]
    for sec, keys in DEFAULTS.items():
        assert list(cfg[sec]) == list(keys), sec
    # the options the logging/broker work reads
    assert cfg["log"] == {"format": "text"}
    assert cfg["pipeline"]["progress_interval"] == 30.0 and cfg["pipeline"]["stop_grace"] == 30.0
    assert cfg["kafka"]["retry_backoff_max_s"] == 30.0
    assert cfg["alerts"]["sinks"] == [{"type": "sqlite", "path": "out/alerts.db", "required": True}]
    # per-type sink defaults are explicit in the effective config
    cfg = load_config(overrides={**KAFKA, "alerts": {"sinks": [{"type": "alertmanager"}, {"type": "kafka"}]}}, env={})
    assert cfg["alerts"]["sinks"] == [
        {"type": "alertmanager", "url": "http://127.0.0.1:9093", "required": False},
        {"type": "kafka", "topic": "graphsentry-alerts", "bootstrap": None, "required": True, "flush_timeout": 10.0}]


# --- unknown keys at every level -----------------------------------------------------------------

@pytest.mark.parametrize("sink, typo, valid", [
    ({"type": "sqlite", "pth": "x.db"}, "pth", "path, required, type"),
    ({"type": "jsonl", "path": "a.jsonl", "requird": False}, "requird", "path, required, type"),
    ({"type": "kafka", "topik": "alerts"}, "topik", "bootstrap, flush_timeout, required, topic, type"),
    ({"type": "alertmanager", "uri": "http://am:9093"}, "uri", "required, type, url"),
])
def test_unknown_key_inside_a_sink_names_path_and_valid_keys(sink, typo, valid):
    over = {**KAFKA, "alerts": {"sinks": [{"type": "jsonl", "path": "ok.jsonl"}, sink]}}
    with pytest.raises(ConfigError) as e:
        load_config(overrides=over, env={})
    first = e.value.problems[0]
    assert first.startswith(f"unknown key '{typo}' in alerts.sinks[1] (type {sink['type']})"), first
    assert first.endswith(f"valid keys: {valid}"), first


def test_sink_typo_in_a_file_is_refused_with_the_file_and_a_suggestion(tmp_path):
    f = _write(tmp_path, "c.yaml", "source: {type: kafka}\nalerts:\n  sinks: [{type: sqlite, pth: x.db}]\n")
    with pytest.raises(ValueError) as e:
        load_config(f, env={})
    lines = str(e.value).splitlines()
    assert lines[1] == (f"{f}: unknown key 'pth' in alerts.sinks[0] (type sqlite) (did you mean 'path'?); "
                        f"valid keys: path, required, type;")
    assert lines[2] == f"{f}: alerts.sinks[0].path: required key missing (type sqlite)"


@pytest.mark.parametrize("section", list(SECTIONS))
def test_unknown_key_in_each_section_is_refused(section):
    with pytest.raises(ConfigError) as e:
        load_config(overrides={**KAFKA, section: {"bogus_key": 1}}, env={})
    assert e.value.problems == [
        f"unknown key 'bogus_key' in {section}; valid keys: {', '.join(sorted(SECTIONS[section].model_fields))}"]


def test_unknown_section_and_env_key_are_refused():
    with pytest.raises(ValueError, match=r"^unknown section 'windw' \(did you mean 'window'\?\); valid sections: "
                                         r"alerts, archive, calibration, kafka, log, metrics"):
        load_config(overrides={**KAFKA, "windw": {"size": 1}}, env={})
    with pytest.raises(ValueError, match=r"^GRAPHSENTRY_KAFKA_TOPICS: unknown key 'topics' in section 'kafka' "
                                         r"\(did you mean GRAPHSENTRY_KAFKA_TOPIC\?\); valid keys: auto_offset_reset"):
        load_config(overrides=KAFKA, env={"GRAPHSENTRY_KAFKA_TOPICS": "x"})


# --- types and values ------------------------------------------------------------------------------

@pytest.mark.parametrize("over, line", [
    ({"window": {"size": 0}}, "window.size=0: Input should be greater than 0"),
    ({"window": {"lateness": -1}}, "window.lateness=-1: Input should be greater than or equal to 0"),
    ({"window": {"idle_timeout": "soon"}}, "window.idle_timeout='soon': Input should be a valid number"),
    ({"source": {"type": "pcap"}}, "source.type='pcap': Input should be 'file' or 'kafka'"),
    ({"source": {"kind": "payments"}}, "source.kind='payments': Input should be 'flows' or 'transactions'"),
    ({"source": {"format": "zek"}}, "source.format='zek': unknown format; valid: auto, zeek,"),
    ({"source": {"poll_interval": 0}}, "source.poll_interval=0: Input should be greater than 0"),
    ({"kafka": {"format": "avro"}}, "kafka.format='avro': Input should be 'json', 'arrow' or 'auto'"),
    ({"kafka": {"backend": "librdkafka"}}, "kafka.backend='librdkafka': Input should be 'kafka-python' or 'confluent'"),
    ({"kafka": {"auto_offset_reset": "smallest"}}, "kafka.auto_offset_reset='smallest': Input should be 'earliest'"),
    ({"kafka": {"security_protocol": "TLS"}}, "kafka.security_protocol='TLS': Input should be 'PLAINTEXT'"),
    ({"kafka": {"bootstrap": "broker:90920"}}, "kafka.bootstrap='broker:90920': expected host:port"),
    ({"kafka": {"max_poll_records": 0}}, "kafka.max_poll_records=0: Input should be greater than or equal to 1"),
    ({"kafka": {"retry_backoff_max_s": -1}}, "kafka.retry_backoff_max_s=-1: Input should be greater than 0"),
    ({"kafka": {"heartbeat_interval_ms": 20000}}, "kafka.heartbeat_interval_ms=20000 must be lower than "
                                                  "kafka.session_timeout_ms=10000"),
    ({"kafka": {"client_options": ["linger_ms=5"]}}, "kafka.client_options=['linger_ms=5']: must be a mapping"),
    ({"metrics": {"port": 70000}}, "metrics.port=70000: Input should be less than or equal to 65535"),
    ({"metrics": {"port": -1}}, "metrics.port=-1: Input should be greater than or equal to 0"),
    ({"metrics": {"port": True}}, "metrics.port=True: expected a number, got a boolean"),
    ({"metrics": {"enabled": "maybe"}}, "metrics.enabled='maybe': Input should be a valid boolean"),
    ({"model": {"loader": "mymodule"}}, "model.loader='mymodule': expected module:function"),
    ({"model": {"watch_interval": 0}}, "model.watch_interval=0: Input should be greater than 0"),
    ({"pipeline": {"queue_size": 0}}, "pipeline.queue_size=0: Input should be greater than or equal to 1"),
    ({"pipeline": {"max_records": 1.5}}, "pipeline.max_records=1.5: Input should be a valid integer"),
    ({"log": {"format": "xml"}}, "log.format='xml': Input should be 'text' or 'json'"),
    ({"pipeline": {"progress_interval": -1}}, "pipeline.progress_interval=-1: Input should be greater than or equal to 0"),
    ({"window": 5}, "window=5: must be a mapping of keys (idle_timeout, lateness, size)"),
    ({"alerts": {"sinks": {"type": "sqlite"}}}, "alerts.sinks={'type': 'sqlite'}: must be a list of sinks"),
    ({"alerts": {"sinks": []}}, "alerts.sinks is empty: give at least one sink"),
    ({"alerts": {"sinks": ["sqlite"]}}, "alerts.sinks[0]='sqlite': must be a mapping"),
    ({"alerts": {"sinks": [{"type": "email"}]}}, "alerts.sinks[0].type='email': unknown sink type; valid: sqlite, "
                                                 "jsonl, kafka, alertmanager"),
    ({"alerts": {"sinks": [{"path": "a.db"}]}}, "alerts.sinks[0]: a sink needs a type: one of sqlite"),
    ({"alerts": {"sinks": [{"type": "jsonl"}]}}, "alerts.sinks[0].path: required key missing (type jsonl)"),
    ({"alerts": {"sinks": [{"type": "sqlite", "path": ""}]}}, "alerts.sinks[0].path='': String should have at least "
                                                               "1 character"),
    ({"alerts": {"sinks": [{"type": "sqlite", "path": "a.db", "required": "sometimes"}]}},
     "alerts.sinks[0].required='sometimes': Input should be a valid boolean"),
    ({"alerts": {"sinks": [{"type": "alertmanager", "url": "am:9093"}]}},
     "alerts.sinks[0].url='am:9093': expected an http:// or https:// URL"),
    ({"alerts": {"sinks": [{"type": "kafka", "flush_timeout": 0}]}},
     "alerts.sinks[0].flush_timeout=0: Input should be greater than 0"),
])
def test_wrong_types_and_values_name_the_path(over, line):
    base = {**KAFKA, **over} if "source" not in over else {"source": {"type": "kafka", **over["source"]}}
    with pytest.raises(ConfigError) as e:
        load_config(overrides=base, env={})
    assert len(e.value.problems) == 1, e.value.problems
    assert e.value.problems[0].startswith(line), e.value.problems[0]


def test_every_problem_is_its_own_line():
    with pytest.raises(ConfigError) as e:
        load_config(overrides={"source": {"type": "kafka"}, "window": {"size": -5}, "metrics": {"port": "http"},
                               "kafka": {"topik": "x"}}, env={})
    assert str(e.value).splitlines() == [
        "3 problems in the config:",
        "unknown key 'topik' in kafka (did you mean 'topic'?); valid keys: " + ", ".join(sorted(SECTIONS["kafka"].model_fields)) + ";",
        "window.size=-5: Input should be greater than 0;",
        "metrics.port='http': Input should be a valid integer, unable to parse string as an integer",
    ]


def test_file_source_needs_paths():
    with pytest.raises(ValueError, match=r"^source.paths is empty: give files or directories"):
        load_config(overrides={"source": {"type": "file"}}, env={})


def test_errors_never_show_secrets(tmp_path):
    f = _write(tmp_path, "c.yaml", "source: {type: kafka}\nkafka: {sasl_plain_password: [hunter2]}\n"
                                   "alerts:\n  sinks: [{type: alertmanager, url: 'ftp://admin:pw@am:9093'}]\n")
    with pytest.raises(ValueError) as e:
        load_config(f, env={})
    text = str(e.value)
    assert "hunter2" not in text and "admin:pw" not in text
    assert "kafka.sasl_plain_password=***: Input should be a valid string" in text
    assert "alerts.sinks[0].url='ftp://***@am:9093'" in text


# --- files ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, where", [
    ("source:\n  type: kafka\n   x: 1\n", "(line 3, column 5): mapping values are not allowed here"),
    ("source:\n  type: kafka\nkafka:\n  topic: [a\n", "(line 5, column 1): expected ',' or ']', but got "
                                                      "'<stream end>' (while parsing a flow sequence started on "
                                                      "line 4, column 10)"),
    ("source: {type: kafka}\nkafka: {topic: a}\nkafka: {topic: b}\n", "(line 3, column 1): duplicate key 'kafka' "
                                                                        "(first on line 2)"),
])
def test_broken_yaml_names_file_and_line(tmp_path, text, where):
    f = _write(tmp_path, "broken.yaml", text)
    with pytest.raises(ValueError) as e:
        load_config(f, env={})
    assert str(e.value) == f"{f}: not valid YAML {where}"


def test_broken_toml_names_file_and_line(tmp_path):
    f = _write(tmp_path, "c.toml", '[source]\ntype = "kafka"\n[kafka]\ntopic = flows\n')
    with pytest.raises(ValueError, match=re.escape(f"{f}: not valid TOML (line 4, column 9): Invalid value")):
        load_config(f, env={})


def test_empty_non_mapping_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match=r"empty.yaml: the config file is empty; give at least one section"):
        load_config(_write(tmp_path, "empty.yaml", "# nothing but a comment\n"), env={})
    with pytest.raises(ValueError, match=r"list.yaml: the top level must be a mapping of sections .* got a list"):
        load_config(_write(tmp_path, "list.yaml", "- source\n- kafka\n"), env={})
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "nope.yaml", env={})
    with pytest.raises(ValueError, match="is a directory, not a config file"):
        load_config(tmp_path, env={})


def test_a_section_with_every_key_commented_out_is_empty(tmp_path):
    f = _write(tmp_path, "c.yaml", "source: {type: kafka}\nwindow:\n  # size: 30\n")
    assert load_config(f, env={})["window"] == DEFAULTS["window"]


# --- environment ------------------------------------------------------------------------------------

def test_env_vars_are_typed_by_the_schema():
    cfg = load_config(env={
        "GRAPHSENTRY_SOURCE_PATHS": "a.log,b.log", "GRAPHSENTRY_METRICS_PORT": "9200",
        "GRAPHSENTRY_KAFKA_STOP_AT_END": "yes", "GRAPHSENTRY_WINDOW_SIZE": "45", "GRAPHSENTRY_WINDOW_IDLE_TIMEOUT": "null",
        "GRAPHSENTRY_KAFKA_SECURITY_PROTOCOL": "", "GRAPHSENTRY_KAFKA_CLIENT_OPTIONS": '{"linger_ms": 5}',
        "GRAPHSENTRY_LOG_FORMAT": "json", "GRAPHSENTRY_PIPELINE_PROGRESS_INTERVAL": "7.5",
        "GRAPHSENTRY_KAFKA_RETRY_BACKOFF_MAX_S": "12", "GRAPHSENTRY_PIPELINE_MAX_RECORDS": "1000",
    })
    assert cfg["source"]["paths"] == ["a.log", "b.log"]
    assert cfg["metrics"]["port"] == 9200 and isinstance(cfg["metrics"]["port"], int)
    assert cfg["kafka"]["stop_at_end"] is True
    assert cfg["window"]["size"] == 45.0 and isinstance(cfg["window"]["size"], float)
    assert cfg["window"]["idle_timeout"] is None
    assert cfg["kafka"]["security_protocol"] is None
    assert cfg["kafka"]["client_options"] == {"linger_ms": 5}
    assert cfg["log"] == {"format": "json"} and cfg["pipeline"]["progress_interval"] == 7.5
    assert cfg["kafka"]["retry_backoff_max_s"] == 12.0
    assert cfg["pipeline"]["max_records"] == 1000


@pytest.mark.parametrize("name, value, line", [
    ("GRAPHSENTRY_WINDOW_SIZE", "soon", "GRAPHSENTRY_WINDOW_SIZE='soon': window.size: Input should be a valid number"),
    ("GRAPHSENTRY_METRICS_PORT", "70000", "GRAPHSENTRY_METRICS_PORT='70000': metrics.port: Input should be less than "
                                          "or equal to 65535"),
    ("GRAPHSENTRY_METRICS_ENABLED", "perhaps", "GRAPHSENTRY_METRICS_ENABLED='perhaps': metrics.enabled: Input should "
                                               "be a valid boolean"),
    ("GRAPHSENTRY_ALERTS_SINKS", '[{"type": "sqlite", "pth": "a.db"}]',
     "GRAPHSENTRY_ALERTS_SINKS='[{\"type\": \"sqlite\", \"pth\": \"a.db\"}]': unknown key 'pth' in alerts.sinks[0]"),
    ("GRAPHSENTRY_KAFKA_CLIENT_OPTIONS", "{linger", "GRAPHSENTRY_KAFKA_CLIENT_OPTIONS: expected a JSON object"),
])
def test_bad_env_value_names_the_variable(name, value, line):
    with pytest.raises(ValueError) as e:
        load_config(overrides=KAFKA, env={name: value})
    assert str(e.value).splitlines()[-1 if "problems" not in str(e.value) else 1].startswith(line), str(e.value)


def test_env_beats_the_file_and_flags_beat_env(tmp_path):
    f = _write(tmp_path, "c.yaml", "source: {type: kafka}\nkafka: {topic: from-file, group_id: g1}\n")
    cfg = load_config(f, overrides={"kafka": {"topic": "from-flag"}},
                      env={"GRAPHSENTRY_KAFKA_GROUP_ID": "g2", "GRAPHSENTRY_KAFKA_TOPIC": "from-env"})
    assert cfg["kafka"]["topic"] == "from-flag" and cfg["kafka"]["group_id"] == "g2"


# --- output -------------------------------------------------------------------------------------------

def test_redaction_hides_secrets_only():
    r = redact({"kafka": {"sasl_plain_password": "hunter2", "sasl_plain_username": "u", "ssl_password": None},
                "alerts": {"sinks": [{"type": "alertmanager", "url": "http://admin:pw@am:9093"}]}})
    assert r["kafka"]["sasl_plain_password"] == "***"
    assert r["kafka"]["sasl_plain_username"] == "u"
    assert r["kafka"]["ssl_password"] is None
    assert r["alerts"]["sinks"][0]["url"] == "http://***@am:9093"


def test_dump_reloads_to_the_same_config(tmp_path):
    cfg = load_config(overrides={**KAFKA, "alerts": {"sinks": [{"type": "jsonl", "path": "a.jsonl"},
                                                              {"type": "kafka", "topic": "t"}]}}, env={})
    f = _write(tmp_path, "dumped.yaml", dump(cfg))
    assert load_config(f, env={}) == cfg


def test_file_config_validates(tmp_path):
    cfg = file_config(["samples/stratosphere"], "models/current", str(tmp_path / "out"), metrics_port=0)
    assert [s["type"] for s in cfg["alerts"]["sinks"]] == ["sqlite", "jsonl"]
    assert cfg["metrics"]["port"] == 0 and cfg["source"]["follow"] is False


def test_print_config_redacts(tmp_path, capsys, monkeypatch):
    f = tmp_path / "c.yaml"
    f.write_text("source:\n  type: kafka\nkafka:\n  sasl_plain_password: s3cret-value\n")
    monkeypatch.setenv("GRAPHSENTRY_KAFKA_TOPIC", "from-env")
    assert main(["serve", "--config", str(f), "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "s3cret-value" not in out and "'***'" in out
    assert yaml.safe_load(out)["kafka"]["topic"] == "from-env"


@pytest.mark.parametrize("text, line", [
    ("source:\n  type: kafka\nkafka:\n  topic: [a\n", "not valid YAML (line 5, column 1)"),
    ("source: {type: kafka}\nalerts:\n  sinks: [{type: sqlite, path: a.db, pth: x.db}]\n",
     "unknown key 'pth' in alerts.sinks[0] (type sqlite)"),
    ("source: {type: kafka}\nmetrics: {port: nine}\n", "metrics.port='nine': Input should be a valid integer"),
])
def test_cli_bad_config_is_exit_2_and_one_line(tmp_path, text, line):
    f = _write(tmp_path, "bad.yaml", text)
    exe = Path(sys.executable).parent / "graphsentry"
    assert exe.exists(), f"the console script is not installed next to {sys.executable}"
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("GRAPHSENTRY_")}
    r = subprocess.run([str(exe), "serve", "--config", str(f), "--print-config"], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith(f"graphsentry serve: error: {f}: ") and line in r.stderr, r.stderr


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


# --- schema <-> sinks ---------------------------------------------------------------------------------

def test_every_sink_key_in_the_schema_is_read_by_make_sink():
    """A key the schema accepts but make_sink ignores would be the silent typo again, one level down."""
    src = inspect.getsource(make_sink)
    for tag, model in SINKS.items():
        assert f'kind == "{tag}"' in src, f"make_sink does not build {tag!r} sinks"
        for key in model.model_fields:
            if key != "type":
                assert re.search(rf'spec(\.get\(|\[)"{key}"', src), f"make_sink ignores {tag}.{key}"


def test_validated_file_sinks_build_and_write(tmp_path):
    cfg = load_config(overrides={**KAFKA, "alerts": {"sinks": [
        {"type": "sqlite", "path": str(tmp_path / "a.db")}, {"type": "jsonl", "path": str(tmp_path / "a.jsonl"),
                                                             "required": False},
        {"type": "alertmanager", "url": "http://127.0.0.1:1"}]}}, env={})
    sinks = [make_sink(s, cfg["kafka"]) for s in cfg["alerts"]["sinks"]]
    try:
        assert [type(s).__name__ for s in sinks] == ["SQLiteAlertStore", "JsonLinesSink", "AlertmanagerSink"]
        assert [s.required for s in sinks] == [True, False, False]
        assert (tmp_path / "a.db").exists() and sinks[2].url == "http://127.0.0.1:1/api/v2/alerts"
    finally:
        for s in sinks[:2]:
            s.close()


# --- config files shipped in the repo -------------------------------------------------------------------

def _shipped_configs() -> list[tuple[str, str]]:
    out = [("deploy/graphsentry.yaml", (ROOT / "deploy" / "graphsentry.yaml").read_text())]
    cm = yaml.safe_load((ROOT / "deploy" / "k8s" / "configmap.yaml").read_text())
    out.append(("deploy/k8s/configmap.yaml#graphsentry.yaml", cm["data"]["graphsentry.yaml"]))
    from training.demo import _SERVE_CONFIG
    out.append(("training/demo.py#_SERVE_CONFIG", _SERVE_CONFIG.format(test="/data/x.log", model="/m", out="/o",
                                                                     port=9109)))
    # ```yaml blocks of the docs that are daemon configs (top-level keys are config sections)
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for i, m in enumerate(re.finditer(r"```ya?ml\n(.*?)```", doc.read_text(), re.S)):
            data = yaml.safe_load(m.group(1))
            if isinstance(data, dict) and data and set(data) <= set(SECTIONS):
                out.append((f"{doc.relative_to(ROOT)}#yaml{i}", m.group(1)))
    for p in sorted((ROOT / "samples").rglob("*")):
        if p.suffix in (".yaml", ".yml", ".toml"):
            data = yaml.safe_load(p.read_text()) if p.suffix != ".toml" else None
            if p.suffix == ".toml" or (isinstance(data, dict) and set(data) <= set(SECTIONS)):
                out.append((str(p.relative_to(ROOT)), p.read_text()))
    return out


def test_every_config_shipped_in_the_repo_validates(tmp_path):
    shipped = _shipped_configs()
    names = [n for n, _ in shipped]
    assert "deploy/graphsentry.yaml" in names and "docs/configuration.md#yaml0" in names
    for name, text in shipped:
        suffix = ".toml" if name.endswith(".toml") else ".yaml"
        f = _write(tmp_path, re.sub(r"\W", "_", name) + suffix, text)
        load_config(f, env={})


def test_configuration_reference_is_generated_from_the_schema():
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == reference_markdown(), (
        "docs/configuration.md is stale: python -m detector.daemon.config --reference > docs/configuration.md")
    for sec, model in SECTIONS.items():
        for key in model.model_fields:
            assert f"| `{sec}.{key}` |" in committed
    for tag, model in SINKS.items():
        assert f"### `type: {tag}`" in committed


def test_config_checker_cli(tmp_path):
    good = _write(tmp_path, "good.yaml", "source: {type: kafka}\n")
    bad = _write(tmp_path, "bad.yaml", "source: {type: kafka}\nmetrics: {prot: 1}\n")
    r = subprocess.run([sys.executable, "-m", "detector.daemon.config", str(good), str(bad)], capture_output=True,
                       text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2
    assert r.stdout == f"{good}: ok\n"
    assert f"{bad}: unknown key 'prot' in metrics (did you mean 'port'?)" in r.stderr


# --- the other config users give: column-mapping files (`--mapping`) ------------------------------------

MAP_OK = {"columns": {"ts": "a", "src_ip": "b", "dst_ip": "c"}}


@pytest.mark.parametrize("extra, line", [
    ({"colums": {"ts": "a"}}, "unknown mapping key 'colums' (did you mean 'columns'?); valid keys: attack_ignore, "
                              "attack_template, columns, constants, delimiter, duration_unit, kind"),
    ({"ts": {"unti": "ms"}}, "unknown mapping key 'unti' in ts (did you mean 'unit'?); valid keys: format, unit, "
                             "utc_offset_hours"),
    ({"skip_lines": -1}, "skip_lines=-1: Input should be greater than or equal to 0"),
    ({"kind": "payments"}, "kind='payments': Input should be 'flows' or 'transactions'"),
    ({"duration_unit": "min"}, "duration_unit='min': Input should be 's', 'ms' or 'us'"),
    ({"label_map": {"Botnet": 5}}, "label_map.Botnet=5: Input should be 0, 1 or 2"),
    ({"ts": {"utc_offset_hours": 30}}, "ts.utc_offset_hours=30: Input should be less than or equal to 24"),
])
def test_mapping_schema_refuses_unknown_keys_and_bad_values(extra, line):
    from ingest.readers.mapping import load_mapping

    with pytest.raises(ValueError) as e:
        load_mapping({**MAP_OK, **extra})
    assert str(e.value).startswith(line), str(e.value)


def test_mapping_file_errors_name_the_file_and_keep_the_interface(tmp_path):
    from ingest.readers.mapping import Mapping, load_mapping

    m = load_mapping(_write(tmp_path, "ok.yaml", "columns: {ts: 1, src_ip: b, dst_ip: c}\nts: ms\ndelimiter: tab\n"
                                                 "label_map: {0: 0, Botnet: 1}\n"))
    assert isinstance(m, Mapping) and m.columns["ts"] == "1" and m.ts_unit == "ms" and m.delimiter == "\t"
    assert m.label_map == {"0": 0, "Botnet": 1}
    assert load_mapping(m) is m
    bad = _write(tmp_path, "bad.yaml", "columns:\n  ts: [a\n")
    with pytest.raises(ValueError, match=re.escape(f"{bad}: not valid YAML (line 3, column 1)")):
        load_mapping(bad)
    bad = _write(tmp_path, "bad.json", '{"columns": {')
    with pytest.raises(ValueError, match=re.escape(f"{bad}: not valid JSON (line 1, column 14)")):
        load_mapping(bad)
    typo = _write(tmp_path, "typo.yaml", "columns: {ts: a, src_ip: b, dst_ip: c}\nts: {unit: s, utc_ofset_hours: 3}\n")
    with pytest.raises(ValueError, match=re.escape(f"{typo}: unknown mapping key 'utc_ofset_hours' in ts")):
        load_mapping(typo)
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'req.yaml'}: mapping for flows must map required")):
        load_mapping(_write(tmp_path, "req.yaml", "columns: {ts: a}\n"))


def test_mapping_examples_in_the_docs_validate():
    from ingest.readers.mapping import load_mapping

    found = 0
    docs = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    for m in re.finditer(r"```ya?ml\n(.*?)```", docs, re.S):
        data = yaml.safe_load(m.group(1))
        if isinstance(data, dict) and "columns" in data:
            load_mapping(data)
            found += 1
    assert found >= 1


def test_cli_bad_mapping_is_exit_2_and_one_line(tmp_path):
    csv = _write(tmp_path, "x.csv", "a,b,c\n1,2,3\n")
    m = _write(tmp_path, "m.yaml", "columns: {ts: a, src_ip: b, dst_ip: c}\nts: {unti: s}\n")
    exe = Path(sys.executable).parent / "graphsentry"
    r = subprocess.run([str(exe), "ingest", str(csv), "--mapping", str(m), "--out", str(tmp_path / "o.parquet")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [f"graphsentry ingest: error: {m}: unknown mapping key 'unti' in ts "
                                     f"(did you mean 'unit'?); valid keys: format, unit, utc_offset_hours"]
