"""The config reference (docs/config.md) documents every key the parser accepts."""
from __future__ import annotations

import re

from pipelines.core import config_parse, config_yaml
from tests.conftest import ROOT

FEATURES = {
    "v": {"type": "vocabulary"}, "l": {"type": "vocabulary_list", "values": ["a"]},
    "i": {"type": "identity", "num_buckets": 3}, "h": {"type": "hash", "hash_buckets": 3},
    "c": {"type": "cross", "columns": ["a", "b"], "hash_buckets": 3},
    "e": {"type": "cross", "columns": ["a", "b"], "exact": True},
    "n": {"type": "numeric"}, "t": {"type": "text"},
}


def accepted_keys(monkeypatch) -> set[tuple[str, str]]:
    """(section, key) of every key the parser allows, recorded while it parses configs of each kind."""
    seen: set[tuple[str, str]] = set()
    original = config_yaml.Section.check_keys

    def record(section, allowed):
        path = re.sub(r"\[\d+\]", "[]", section.path)
        path = "features" if path.startswith("features.") else path
        seen.update((path, key) for key in allowed)
        return original(section, allowed)
    monkeypatch.setattr(config_yaml.Section, "check_keys", record)
    base = {"name": "x", "input": {"path": "x", "format": "csv"}, "features": FEATURES, "split": {},
            "entities": [{"name": "v", "key": "v", "metadata_from": {"path": "m.csv", "key": "k", "columns": ["n"]}}],
            "warm_start": {"from": "x"}}
    for model in ({"kind": "supervised", "label": "y"}, {"kind": "two_tower", "query": ["v"], "candidate": ["i"]}):
        config_parse.config_from_dict({**base, "model": model})
    documents = {"name": "x", "input": {"path": "x", "format": "csv"}, "model": {"kind": "skipgram"}}
    config_parse.config_from_dict({**documents, "sequences": {"group_by": "u", "order_by": "t", "item": "m"},
                                   "features": {"m": {"type": "vocabulary"}}, "entities": [{"name": "m", "key": "m"}]})
    config_parse.config_from_dict({**documents, "graph": {"source": "s", "target": "t"},
                                   "features": {"node": {"type": "vocabulary"}},
                                   "entities": [{"name": "node", "key": "node"}]})
    return seen


def test_every_key_is_documented(monkeypatch):
    text = (ROOT / "docs" / "config.md").read_text()
    missing = []
    for section, key in sorted(accepted_keys(monkeypatch)):
        qualified = f"{section}.{key}" if section and section != "features" else key
        documented = f"`{qualified}`" in text or (section == "features" and (f"`{key}`" in text or
                                                                              f"{key} (" in text))
        if not documented and section.startswith("model"):
            documented = re.search(rf"`model\.[^`]*{re.escape(key)}[^`]*`", text) is not None
        if not documented:
            missing.append(qualified)
    assert not missing, f"docs/config.md does not document: {missing}"


def yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.S)


def test_every_shipped_and_shown_config_is_valid():
    configs = {path.name: path.read_text() for path in sorted((ROOT / "examples").glob("*.yaml"))}
    for doc in ("README.md", "docs/config.md"):
        for number, block in enumerate(yaml_blocks((ROOT / doc).read_text())):
            configs[f"{doc} block {number}"] = block
    assert {"chicago_taxi.yaml", "movielens.yaml", "words.yaml", "docs/config.md block 0"} <= set(configs)
    for source, text in configs.items():
        config = config_parse.config_from_dict(config_parse.parse_yaml(text, source))
        assert config.features and config.entities, source
