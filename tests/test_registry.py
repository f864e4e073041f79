"""One registry implementation behind every name -> thing table: errors list the names, filters work."""

import pytest

from medcbm._registry import Registry
from medcbm.errors import RegistryError


def _registries():
    from medcbm.adapt import ADAPTERS
    from medcbm.backbones._registry import BACKBONES
    from medcbm.concepts.backends.base import BACKENDS
    from medcbm.concepts.grounding.base import GROUNDERS
    from medcbm.data.importers import IMPORTERS
    from medcbm.knowledge.embedders import EMBEDDERS
    from medcbm.methods import METHODS

    return {"adapter": ADAPTERS, "backbone": BACKBONES, "concept backend": BACKENDS, "grounder": GROUNDERS, "dataset": IMPORTERS,
            "embedder": EMBEDDERS, "method": METHODS}


@pytest.mark.parametrize("kind", ["adapter", "backbone", "concept backend", "grounder", "dataset", "embedder", "method"])
def test_every_registry_lists_its_names_in_errors(kind):
    reg = _registries()[kind]
    assert isinstance(reg, Registry) and reg.kind == kind
    names = reg.names()
    assert names and names == sorted(names)
    with pytest.raises(RegistryError, match=rf"unknown {kind} 'no-such-thing'\. Available: .*{names[0]}"):
        reg.get("no-such-thing")


def test_filters_and_prefixes():
    from medcbm.backbones import list_backbones
    from medcbm.data.importers import list_datasets
    from medcbm.methods import list_methods

    assert list_backbones("*lesion_cc") == ["efficientnet_lite0_lesion_cc"]
    assert "timm:..." in list_backbones()
    assert list_datasets("chest_xray") == ["covid-cxr"]
    cxr = list_methods("covid-cxr")
    assert "cxr_cbm_reports" in cxr and "cbm" not in cxr and "linear_probe" in cxr  # None = any dataset
    assert list_methods(pattern="cbm_src_*") and all(m.startswith("cbm_src_") for m in list_methods(pattern="cbm_src_*"))
    reg = Registry("thing")
    reg.add("a", 1, tags=("x",))
    reg.register_prefix("p")(lambda rest: rest.upper())
    assert reg.get("p:abc") == "ABC" and reg.names(tags="x") == ["a"] and reg.names(tags="y") == []
    reg.remove("a")
    assert "a" not in reg
