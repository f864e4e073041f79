"""``medcbm features extract`` as a user runs it, and the engine options every extracting command shares."""

from __future__ import annotations

import json

import pytest

from tests.test_cli import run_main


def test_extract_fills_the_cache_then_reuses_it(tmp_path, ham_manifest, capsys, monkeypatch):
    from medcbm.data.manifest import save_manifest

    save_manifest(ham_manifest.subset(range(6)), tmp_path / "m.csv")
    args = ("features", "extract", tmp_path / "m.csv", "--cache-dir", tmp_path / "cache", "--json", tmp_path / "s.json")
    monkeypatch.setattr("sys.argv", ["medcbm", *map(str, args)])
    from medcbm.cli import app

    app(standalone_mode=False, args=[str(a) for a in args])
    first = json.loads((tmp_path / "s.json").read_text())
    assert first["extracted"] == 6 and first["engine"] == "LocalRunner"
    app(standalone_mode=False, args=[str(a) for a in args])
    assert json.loads((tmp_path / "s.json").read_text())["from_cache"] == 6
    assert "6 images: 0 extracted, 6 from the cache" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (("--engine", "spark"), "engine: Input should be 'local' or 'ray'"),
    (("--engine", "ray", "--address", "nowhere"), "address: Value error, address 'nowhere' is not auto, HOST:PORT"),
    (("--engine", "ray", "--workers", "0"), "workers: Input should be greater than or equal to 1"),
])
def test_bad_engine_options_name_the_option(tmp_path, ham_manifest, capsys, monkeypatch, extra, message):
    from medcbm.data.manifest import save_manifest

    save_manifest(ham_manifest.subset(range(2)), tmp_path / "m.csv")
    for cmd in (("features", "extract", tmp_path / "m.csv"), ("evaluate", "--model", tmp_path, "--manifest", tmp_path / "m.csv")):
        code, err = run_main(capsys, monkeypatch, *cmd, *extra)
        assert code == 2 and message in err and "Traceback" not in err
