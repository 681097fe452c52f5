"""JSON files written atomically."""

import json

import atomic_files


def test_write_json_compact_and_indented(tmp_path):
    obj = {"b": [[0.5, 3]], "a": {"x": 1}}
    atomic_files.write_json(str(tmp_path / "c.json"), obj, indent=None)
    atomic_files.write_json(str(tmp_path / "i.json"), obj)
    compact = (tmp_path / "c.json").read_text()
    assert compact == '{"a": {"x": 1}, "b": [[0.5, 3]]}'
    assert "\n" in (tmp_path / "i.json").read_text()
    assert atomic_files.read_json(str(tmp_path / "i.json")) == json.loads(compact) == obj
