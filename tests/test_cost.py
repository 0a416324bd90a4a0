"""Cost model: MAC counting (fvcore + our handles), torch cross-check, latency, the cost table file."""

from __future__ import annotations

import json

import pytest
import torch

from ddsm.config import DiffusionConfig, ModelConfig, UNetConfig
from ddsm.cost import (
    HANDLED_OPS, IGNORED_OPS, UNIT, CostTable, FlopCountAnalysis, MacCount, check_resolution, count_macs,
    measure_latencies, measure_latency, torch_flops,
)
from ddsm.errors import DDSMError
from ddsm.nn.unet import SlimUNet

TINY = UNetConfig(image_size=8, base_channels=8, channel_mults=(1, 2), group_channels=2, attn_resolutions=(4,))
TINY_MODEL = ModelConfig(unet=TINY, diffusion=DiffusionConfig(num_timesteps=10))


@pytest.fixture(scope="module")
def model() -> SlimUNet:
    torch.manual_seed(0)
    return SlimUNet(TINY)


@pytest.fixture(scope="module")
def counts(model) -> dict[tuple[float, int], MacCount]:
    """MAC counts per (width, resolution), counted once: tracing is the slow part."""
    return {(w, r): count_macs(model, w, r) for w in TINY.widths for r in (8, 16)}


@pytest.fixture(scope="module")
def table(model) -> CostTable:
    return CostTable.measure(model, TINY_MODEL, "cpu", resolutions=[8, 16], batch_size=2, repeats=3, warmup=1)


def one_line_error(fn, *needles: str) -> str:
    with pytest.raises(DDSMError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


# ---------------------------------------------------------------------------- counting


def test_macs_increase_with_width(counts):
    by_width = [counts[w, 8] for w in TINY.widths]
    for narrow, wide in zip(by_width, by_width[1:]):
        assert narrow.total < wide.total
        assert narrow.dense < wide.dense
    for c in by_width:
        assert c.attention < c.dense < c.total  # norm and elementwise ops are on top of the dense part


def test_conv_macs_scale_as_width_squared(counts):
    # Convolutions map C*w to C*w channels; only conv_in/conv_out (fixed image channels) scale as w.
    full = counts[1.0, 8].by_operator["conv"]
    for w in TINY.widths:
        assert counts[w, 8].by_operator["conv"] / full == pytest.approx(w * w, rel=0.05)


@pytest.mark.parametrize("resolution", [8, 16])
def test_fvcore_dense_part_matches_torch_counter(model, counts, resolution):
    for w in TINY.widths:
        c, flops = counts[w, resolution], torch_flops(model, w, resolution)
        # torch counts 2 FLOPs per MAC and only convs, matmuls and attention: our dense part.
        assert flops == pytest.approx(2 * c.dense, rel=1e-9)
        assert c.total > flops / 2


def test_attention_is_counted(counts):
    no_attn = SlimUNet(UNetConfig(**{**TINY.model_dump(), "attn_resolutions": ()}))
    for w in TINY.widths:
        a, b = counts[w, 8], count_macs(no_attn, w)
        assert a.total > b.total
        # QK^T + AV on L = 4*4 positions of C = 16w channels: 2 * L * L * C per block;
        # attention at side 4 in the down path (1), the middle (always, 1) and the up path (2).
        per_block = 2 * 16 * 16 * round(16 * w)
        assert a.attention == 4 * per_block
        assert b.attention == 1 * per_block


def test_no_op_that_matters_is_skipped(model, counts):
    sub = model.extract_subnet(0.5)
    plain = FlopCountAnalysis(sub, (torch.randn(1, 1, 8, 8), torch.tensor([3.0])))
    plain.unsupported_ops_warnings(False).uncalled_modules_warnings(False).total()
    # Every op fvcore alone would skip is either given a handle by us or deliberately ignored.
    skipped_by_fvcore = set(plain.unsupported_ops())
    assert "aten::scaled_dot_product_attention" in skipped_by_fvcore
    assert skipped_by_fvcore <= HANDLED_OPS | IGNORED_OPS, skipped_by_fvcore - HANDLED_OPS - IGNORED_OPS
    for c in counts.values():
        assert set(c.unsupported) <= IGNORED_OPS and not c.unsupported, c.unsupported
        assert {"conv", "linear", "attention", "group_norm", "silu", "add", "upsample_nearest2d"} <= set(c.by_operator)


def test_other_resolutions(model, counts):
    at8, at16 = counts[1.0, 8], counts[1.0, 16]
    assert at16.by_operator["conv"] == 4 * at8.by_operator["conv"]  # four times the pixels
    assert at16.attention == 16 * at8.attention  # L*L grows as the pixel count squared
    assert check_resolution(TINY, None) == 8
    one_line_error(lambda: count_macs(model, 1.0, 7), "resolution 7", "multiple of 2")
    one_line_error(lambda: count_macs(model, 0.3), "width 0.3", "valid widths")


def test_latency_leaves_the_model_as_it_was(model):
    model.train()
    model.set_active_width(0.5)
    stats = measure_latency(model, 1.0, batch_size=2, repeats=3, warmup=1)
    assert stats.median_s > 0 and stats.iqr_s >= 0 and len(stats.samples_s) == 3
    assert stats.batch_size == 2 and stats.threads == torch.get_num_threads()
    assert model.width == 0.5 and model.training
    state = torch.get_rng_state()
    per_width = measure_latencies(model, [0.25, 1.0], 16, batch_size=1, repeats=2, warmup=0)
    assert sorted(per_width) == [0.25, 1.0] and all(len(s.samples_s) == 2 for s in per_width.values())
    assert torch.equal(torch.get_rng_state(), state)  # timing draws its input from a private generator
    assert model.width == 0.5 and model.training
    one_line_error(lambda: measure_latency(model, 1.0, repeats=0), "repeats (0)")
    model.set_active_width(1.0)
    model.eval()


# ---------------------------------------------------------------------------- the table


def test_table_contents(table):
    assert table.unit == UNIT and table.device == "cpu" and table.batch_size == 2
    assert table.threads == torch.get_num_threads() and table.torch_version == torch.__version__
    assert table.supernet == TINY_MODEL.fingerprint()
    assert table.widths == TINY.widths and table.resolutions == (8, 16)
    for e in table.entries:
        assert e.torch_flops == 2 * e.dense_macs
        assert e.latency_s > 0
    assert table.macs(1.0) == table.macs(1.0, 8) < table.macs(1.0, 16)


def test_round_trip_and_no_temp_file(table, tmp_path):
    path = tmp_path / "sub" / "cost.json"
    table.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["cost.json"]
    data = json.loads(path.read_text())
    assert data["schema_version"] == 2 and data["kind"] == "ddsm.cost_table"
    assert CostTable.load(path, TINY_MODEL, "cpu") == table
    assert CostTable.load(path) == table


def test_load_errors(table, tmp_path):
    path = tmp_path / "cost.json"
    table.save(path)
    other = ModelConfig(unet=UNetConfig(**{**TINY.model_dump(), "base_channels": 16}), diffusion=TINY_MODEL.diffusion)
    one_line_error(lambda: CostTable.load(path, other), table.supernet, other.fingerprint())
    one_line_error(lambda: CostTable.load(path, TINY_MODEL, "cuda"), "on cpu", "on cuda:0")
    one_line_error(lambda: CostTable.load(tmp_path / "missing.json"), "cannot read")

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    one_line_error(lambda: CostTable.load(bad), "not valid JSON")
    data = json.loads(path.read_text())
    for change, needle in [({"schema_version": 3}, "schema_version 3"), ({"kind": "ddsm.schedule"}, "kind"),
                           ({"batch_size": 0}, "batch_size"), ({"entries": []}, "at least one entry"),
                           ({"entries": data["entries"][:1] * 2}, "duplicate")]:
        bad.write_text(json.dumps({**data, **change}))
        one_line_error(lambda: CostTable.load(bad), needle)


def test_lookup_errors(table):
    one_line_error(lambda: table.macs(0.3), "width 0.3", "valid widths", "0.25")
    one_line_error(lambda: table.latency(0.3), "width 0.3", "valid widths")
    one_line_error(lambda: table.macs(1.0, 32), "resolution 32", "valid resolutions")
    one_line_error(lambda: table.schedule_cost([1.0], metric="flops"), "flops", "macs, latency")
    one_line_error(lambda: table.schedule_cost([1.0, 0.5], resolutions=[8]), "1 resolutions", "2 widths")
    one_line_error(lambda: table.full_width_cost(0), "steps")


def test_schedule_cost(table):
    steps = 7
    for metric, per_step in [("macs", table.macs), ("latency", table.latency)]:
        for w in table.widths:
            assert table.schedule_cost([w] * steps, metric) == pytest.approx(steps * per_step(w))
        assert table.full_width_cost(steps, metric) == pytest.approx(steps * per_step(1.0))
        mixed = [1.0, 0.5, 0.25]
        assert table.schedule_cost(mixed, metric) == pytest.approx(sum(per_step(w) for w in mixed))
    # Progressive resolution: one resolution per step.
    assert table.schedule_cost([0.5, 1.0], resolutions=[8, 16]) == table.macs(0.5, 8) + table.macs(1.0, 16)
    assert table.schedule_cost([1.0, 1.0], resolutions=16) == 2 * table.macs(1.0, 16)
    assert table.full_width_cost(3, resolution=16) == 3 * table.macs(1.0, 16)


def test_measure_refuses_mismatched_config(model):
    other = ModelConfig(unet=UNetConfig(**{**TINY.model_dump(), "base_channels": 16}))
    one_line_error(lambda: CostTable.measure(model, other, "cpu"), "does not match")
    one_line_error(lambda: CostTable.measure(model, TINY_MODEL, "cpu", repeats=0), "repeats (0)")


def test_several_batches_one_table(tmp_path):
    """A table timed at several batches: each lookup reads its batch, MACs per image are the same at all of them."""
    model = SlimUNet(TINY).eval()
    t = CostTable.measure(model, TINY_MODEL, "cpu", batch_size=[4, 1], repeats=2, warmup=0)
    assert t.batch_size == 4 and t.batch_sizes == (1, 4) and len(t.entries) == 2 * len(TINY.widths)
    for w in t.widths:
        assert t.entry(w, batch=1).macs == t.entry(w, batch=4).macs
        assert t.latency(w, batch=1) == t.entry(w, None, 1).latency_s
        assert t.latency(w) == t.latency(w, batch=4)
    m1, m4 = t.cost_model("latency", batch=1), t.cost_model("latency")
    assert (m1.batch, m4.batch, t.cost_model("macs").batch) == (1, 4, None)
    assert m1.call(1.0) == t.latency(1.0, batch=1)
    one_line_error(lambda: t.latency(1.0, batch=16), "batch 16", "valid batches: [1, 4]")
    path = tmp_path / "cost.json"
    t.save(path)
    assert CostTable.load(path) == t


def test_version_1_table_still_loads(table, tmp_path):
    """A file written before tables held several batches: every entry was timed at the table's one batch."""
    data = table.model_dump(mode="json")
    data["schema_version"] = 1
    for e in data["entries"]:
        del e["batch_size"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    old = CostTable.load(path)
    assert old == table and {e.batch_size for e in old.entries} == {table.batch_size}
