"""tools/tune_faceres_tail.py: its tail over stored activations is FaceRes' own network before
any tuning (the same descriptor and gender logit as the whole network), so what it tunes starts
where FaceRes is."""

from __future__ import annotations

import importlib.util

import pytest
from conftest import ROOT

torch = pytest.importorskip("torch")

from facegender.models.faceres import load_faceres  # noqa: E402


@pytest.fixture(scope="module")
def tool():
    pytest.importorskip("sklearn")
    spec = importlib.util.spec_from_file_location("tune_faceres_tail",
                                                  ROOT / "tools" / "tune_faceres_tail.py")
    mod = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as mp:  # the tool imports its sibling tools
        mp.syspath_prepend(str(ROOT / "tools"))
        spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("blocks", [1, 2])
def test_untuned_tail_is_faceres(tool, blocks):
    net = load_faceres()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 60
    with torch.inference_mode():
        d_ref, z_ref, _ = net.outputs(x)
        acts = net.trunk(x, tool.CUT)
        assert acts.shape == (2, 512, 14, 14)
        d, z = tool.Tail(blocks).eval()(acts)
    torch.testing.assert_close(d, d_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(z, z_ref, rtol=1e-4, atol=1e-4)
    assert abs(float(z_ref[0] - z_ref[1])) > 1e-3  # two different inputs, two readings


def test_tail_tunes_only_its_last_blocks(tool):
    tail = tool.Tail(1)
    frozen = [p for p in tail.frozen.parameters()]
    assert frozen and not any(p.requires_grad for p in frozen)
    assert all(p.requires_grad for p in tail.tuned.parameters())
