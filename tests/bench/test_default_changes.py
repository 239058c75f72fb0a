"""Records made before a default changed are read with the old default pinned into their
recipe and key, so a sweep reruns them under the new default and a report tells them apart."""

import json

import pytest

from seqlab.bench.default_changes import CHANGES, pin_old_defaults
from seqlab.bench.fit import ProbeTrainConfig
from seqlab.bench.results import read_results, without_later_options
from seqlab.bench.sweep import CellConfig

DECAY = next(c for c in CHANGES if c.path == ("train", "decay_time_scales"))
DAMPEN = next(c for c in CHANGES if c.path[-1] == "dampen")


def cell(mixer: str, model: dict | None = None, **train) -> CellConfig:
    return CellConfig(probe="test-copy-first", mixer=mixer, dim=16, layers=2,
                      model=model or {}, train=ProbeTrainConfig(steps=3, **train))


def record(c: CellConfig, time: float) -> dict:
    """A record as the bench writes it; options added later are absent where off, as in
    records written before those options existed."""
    return {"key": c.key, "probe": c.probe, "mixer": c.mixer, "status": "ok", "metrics": {},
            "config": without_later_options(c.to_dict()), "time": time}


@pytest.mark.parametrize("mixer", ["mamba", "s4d", "hybrid", "attention+s4d"])
def test_a_state_space_record_before_the_optimizer_change_ran_with_decay(mixer):
    now = cell(mixer)
    old = pin_old_defaults(record(now, DECAY.since - 1))
    assert old["key"] == cell(mixer, decay_time_scales=True).key != now.key
    assert old["pinned"] == [DECAY.what]
    assert old["config"]["train"]["decay_time_scales"] is True
    assert pin_old_defaults(record(now, DECAY.since + 1))["key"] == now.key


@pytest.mark.parametrize("mixer", ["attention", "lstm", "gru"])
def test_a_change_leaves_recipes_without_its_mixers_alone(mixer):
    rec = record(cell(mixer), 0.0)
    assert pin_old_defaults(rec) is rec


def test_an_option_set_explicitly_is_not_overridden():
    rec = record(cell("mamba", decay_time_scales=True), DECAY.since - 1)
    assert pin_old_defaults(rec) is rec
    rec = record(cell("atlas", {"mixer_options": {"atlas": {"dampen": True}}}), 0.0)
    assert pin_old_defaults(rec) is rec
    rec = record(cell("atlas(dampen=true)"), 0.0)
    assert pin_old_defaults(rec) is rec


def test_atlas_before_dampening_is_pinned_undampened_unless_it_used_gd():
    old = pin_old_defaults(record(cell("atlas", {"mlp_hidden": 0}), DAMPEN.since - 1))
    undampened = cell("atlas", {"mlp_hidden": 0, "mixer_options": {"atlas": {"dampen": False}}})
    assert old["key"] == undampened.key != cell("atlas", {"mlp_hidden": 0}).key
    gd = record(cell("atlas", {"mixer_options": {"atlas": {"optimizer": "gd"}}}), 0.0)
    assert pin_old_defaults(gd) is gd
    muon = pin_old_defaults(record(cell("atlas(optimizer=muon)"), 0.0))
    assert muon["config"]["model"]["mixer_options"]["atlas"] == {"dampen": False}


def test_a_record_without_a_time_or_recipe_is_read_as_written():
    rec = record(cell("mamba"), 0.0)
    for missing in ("time", "config"):
        bare = {k: v for k, v in rec.items() if k != missing}
        assert pin_old_defaults(bare) is bare


def test_a_sweep_reruns_a_cell_recorded_under_an_old_default(tmp_path):
    path = tmp_path / "r.jsonl"
    rows = [record(cell("mamba"), DECAY.since - 1), record(cell("attention"), 0.0)]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    path.write_text(text)
    done = read_results(path).finished_keys()
    assert cell("mamba").key not in done                      # to run under the new default
    assert cell("mamba", decay_time_scales=True).key in done  # the old recipe, now explicit
    assert cell("attention").key in done
    assert path.read_text() == text                            # the file is not rewritten


def test_a_report_shows_old_and_new_default_as_two_series_and_says_why(tmp_path):
    from seqlab.bench.report import write_report

    rows = []
    for time, acc in ((DECAY.since - 1, 0.25), (DECAY.since + 1, 0.75)):
        rec = record(cell("mamba"), time)
        rows.append({**rec, "dim": 16, "layers": 2, "seed": 0, "seq_len": 16,
                     "metrics": {"accuracy": acc},
                     "by_length": [{"seq_len": 16, "accuracy": acc}], "params": 1, "state_bytes": 1,
                     "train_s": 1.0})
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = write_report(path).markdown.read_text()
    assert f"- {DECAY.what}: 1 cell" in text
    rows = [line for line in text.splitlines() if line.startswith("| mamba")]
    assert len(rows) == 2 and any("decay_time_scales=True" in r and "0.250" in r for r in rows)
    assert any("decay_time_scales" not in r and "0.750" in r for r in rows)


def test_a_record_that_counts_the_changes_its_writer_had_is_pinned_by_that_count():
    """``changes_known`` decides over ``time``: an old clock with every change known pins
    nothing, and a writer that knew none is pinned whatever its clock said."""
    c = cell("mamba")
    current = {**record(c, 0.0), "changes_known": len(CHANGES)}
    assert pin_old_defaults(current) is current
    stale = {**record(c, DECAY.since + 1e6), "changes_known": 0}
    assert pin_old_defaults(stale)["key"] == cell("mamba", decay_time_scales=True).key


def test_run_cell_records_how_many_changes_it_knows(monkeypatch):
    import seqlab.bench.run as run_module

    def stop(*a, **k):
        raise RuntimeError("stop after the record is started")

    monkeypatch.setattr(run_module, "build_model", stop)
    rec = run_module.run_cell(cell("lstm"))
    assert rec["changes_known"] == len(CHANGES) and rec["status"] == "error"
