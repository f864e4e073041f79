import pytest

from medcbm import _resources
from medcbm.errors import ConfigError


def test_shipped_data_is_found_from_the_checkout():
    root = _resources.resources_root()
    assert (root / "configs" / "protocols" / "ham10000-site-confounded.yaml").is_file()
    assert _resources.resource_path("knowledge", "priors").is_dir()


def test_medcbm_resources_overrides_and_a_wrong_one_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "configs" / "protocols").mkdir(parents=True)
    (tmp_path / "knowledge").mkdir()
    (tmp_path / "configs" / "protocols" / "mine.yaml").write_text("name: mine\n")
    monkeypatch.setenv("MEDCBM_RESOURCES", str(tmp_path))
    from medcbm.protocols import list_protocols

    assert list_protocols() == ["mine"]  # a hospital's own curated copy replaces the shipped one
    monkeypatch.setenv("MEDCBM_RESOURCES", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"not found \(looked in .*nowhere\).*set MEDCBM_RESOURCES"):
        _resources.resources_root()
