"""Reports: a markdown row per cell and PNG plots matplotlib can read back."""

import json

import matplotlib.image
import pytest

from seqlab.bench.report import (best_over_lr, markdown_table, seed_summary_table, series_names,
                                 write_report)
from seqlab.bench.results import BenchError


def record(mixer, dim, seed, acc, *, status="ok", probe="p", lengths=(16, 32)):
    by = [{"seq_len": n, "state_bytes": 4 * n, "accuracy": acc / (i + 1)} for i, n in enumerate(lengths)]
    return {"key": f"{probe}-{mixer}-{dim}-{seed}", "probe": probe, "mixer": mixer, "dim": dim,
            "layers": 2, "seed": seed, "seq_len": lengths[0], "status": status,
            "message": "" if status == "ok" else "loss is nan at step 3",
            "metrics": {"accuracy": acc} if status == "ok" else {},
            "by_length": by if status == "ok" else [], "params": 1000 * dim, "state_bytes": 64,
            "train_s": 1.5}


@pytest.fixture
def results(tmp_path):
    recs = [record("attention", 16, 0, 0.5), record("attention", 16, 1, 0.7),
            record("attention", 32, 0, 0.9), record("mamba", 16, 0, 0.2),
            record("mamba", 32, 0, 0.0, status="nan"), record("x", 8, 0, 0.4, probe="q")]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + "not json\n")
    return path


def test_report_writes_a_row_per_cell_and_readable_plots(results, tmp_path):
    files = write_report(results, tmp_path / "rep")
    text = files.markdown.read_text()
    # Rows of the per-cell tables (13 columns), not of the seed summary (6; attention d=16 has two).
    rows = [line for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| mixer") and line.count("|") == 14]
    assert len(rows) == 6
    assert "| attention | 32 | 2 | 16 | - | 0 | ok | 0.900 | 0.450 | - | 32,000 | 64 | 1.5 |" in text
    assert "| mamba | 32 | 2 | 16 | - | 0 | nan: loss is nan at step 3 | - | - |" in text
    assert "## p" in text and "## q" in text
    assert files.skipped_lines == [7]
    assert sorted(p.name for p in files.plots) == [
        "p-accuracy-vs-dim.png", "p-accuracy-vs-length.png", "q-accuracy-by-mixer.png",
        "q-accuracy-vs-length.png"]
    for png in files.plots:
        img = matplotlib.image.imread(png)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert f"]({png.name})" in text


def with_lr(rec, lr):
    return {**rec, "key": f"{rec['key']}-{lr}", "steps": 100, "config": {"train": {"lr": lr, "steps": 100}}}


def test_plots_use_each_cells_best_learning_rate(tmp_path):
    recs = [with_lr(record("a", 16, 0, 0.3), 1e-3), with_lr(record("a", 16, 0, 0.9), 1e-2),
            with_lr(record("a", 32, 0, 0.6), 1e-3), with_lr(record("a", 32, 0, 0.1), 1e-2),
            with_lr(record("b", 16, 0, 0.5), 1e-2)]
    best = best_over_lr(recs)
    assert sorted((r["mixer"], r["dim"], r["metrics"]["accuracy"]) for r in best) == [
        ("a", 16, 0.9), ("a", 32, 0.6), ("b", 16, 0.5)]
    table = markdown_table(recs)
    assert "| a | 16 | 2 | 16 | 0.01 * | 0 | ok | 0.900 | 0.450 | 100 |" in table
    assert "| a | 16 | 2 | 16 | 0.001 | 0 | ok | 0.300 |" in table
    assert "| a | 32 | 2 | 16 | 0.001 * | 0 | ok | 0.600 |" in table


def test_the_latest_record_of_a_cell_wins(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(record("a", 16, 0, 0.1, status="nan")) + "\n"
                    + json.dumps(record("a", 16, 0, 0.8)) + "\n")
    text = write_report(path).markdown.read_text()
    assert (tmp_path / "r-report" / "report.md").is_file()
    assert "0.800" in text and "nan:" not in text


def test_table_columns_cover_every_test_length():
    table = markdown_table([record("a", 8, 0, 1.0, lengths=(8,)), record("b", 8, 0, 1.0, lengths=(8, 64))])
    head, _, a, b = table.splitlines()
    assert "acc @8 | acc @64" in head
    assert a.count("|") == b.count("|") == head.count("|")


def test_missing_or_empty_results_are_named(tmp_path):
    with pytest.raises(BenchError, match="does not exist; make one with seqlab bench run"):
        write_report(tmp_path / "none.jsonl")
    (tmp_path / "empty.jsonl").write_text("garbage\n")
    with pytest.raises(BenchError, match="holds no results"):
        write_report(tmp_path / "empty.jsonl")


def test_cells_with_different_model_options_are_separate_series():
    def rec(key, model, acc):
        return {**record("mamba", 64, 0, acc), "key": key, "config": {"model": model, "train": {"lr": 1e-3}}}

    recs = [rec("a", {"mixer_options": {"mamba": {"scan": "cpp"}}}, 0.1),
            rec("b", {"mixer_options": {"mamba": {"scan": "torch", "d_state": 4}}}, 0.2),
            rec("c", {"mlp_hidden": 0}, 0.3), {**record("lstm", 64, 0, 0.4), "key": "d"}]
    names = series_names(recs)
    # scan changes only speed, so it does not split a series; d_state and mlp_hidden do
    assert [names[id(r)] for r in recs] == ["mamba", "mamba (d_state=4)", "mamba (mlp_hidden=0)", "lstm"]
    table = markdown_table(recs)
    assert "| mamba (d_state=4) | 64 |" in table and "| mamba (mlp_hidden=0) | 64 |" in table


def test_one_width_trained_at_several_lengths_gets_only_the_length_plot(tmp_path):
    recs = [record("a", 64, 0, 0.9, lengths=(16, 64)), {**record("a", 64, 0, 0.5, lengths=(32, 64)), "key": "b"}]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    files = write_report(path)
    assert [p.name for p in files.plots] == ["p-accuracy-vs-length.png"]
    # with a second width the accuracy-vs-width plot is back
    path.write_text(path.read_text() + json.dumps({**record("a", 32, 0, 0.7), "key": "c"}) + "\n")
    assert sorted(p.name for p in write_report(path).plots) == [
        "p-accuracy-vs-dim.png", "p-accuracy-vs-length.png"]


def test_cells_trained_differently_are_separate_series_but_learning_rates_are_not():
    def rec(key, train, probe_params, acc):
        return {**record("icll", 64, 0, acc), "key": key,
                "config": {"train": {"eval_batches": 4, **train}, "probe_params": probe_params}}

    recs = [rec("a", {"steps": 1500, "lr": 1e-3}, {"seq_len": 16}, 0.6),
            rec("b", {"steps": 4500, "lr": 1e-3}, {"seq_len": 16}, 0.9),
            rec("c", {"steps": 1500, "lr": 1e-2, "eval_batches": 8}, {"seq_len": 16}, 0.7),
            rec("d", {"steps": 1500, "lr": 1e-3}, {"seq_len": 16, "num_pairs": 4}, 0.2)]
    names = series_names(recs)
    assert [names[id(r)] for r in recs] == [
        "icll (steps=1500)", "icll (steps=4500)", "icll (steps=1500)", "icll (num_pairs=4, steps=1500)"]
    # one point per recipe: the 1500-step cells differ only in lr and how they were scored
    assert sorted(r["key"] for r in best_over_lr(recs)) == ["b", "c", "d"]


def test_seed_summary_gives_mean_and_std_over_seeds(results, tmp_path):
    recs = [record("a", 16, s, acc) for s, acc in ((0, 0.5), (1, 0.7), (2, 0.9))]
    recs += [record("b", 16, 0, 0.4), record("b", 16, 1, 0.0, status="nan")]
    table = seed_summary_table(recs)
    assert "| mixer | dim | train len | seeds | accuracy mean ± std | train s mean |" in table
    assert "| a | 16 | 16 | 0,1,2 | 0.700 ± 0.200 | 1.5 |" in table
    assert "| b | 16 | 16 | 0 | 0.400 | 1.5 |" in table      # the diverged seed is left out
    assert seed_summary_table([record("a", 16, 0, 0.5), record("b", 16, 0, 0.4)]) is None
    text = write_report(results, tmp_path / "rep").markdown.read_text()
    assert "| attention | 16 | 16 | 0,1 | 0.600 ± 0.141 | 1.5 |" in text


def test_learning_curves_plot_the_cells_with_checks_diverged_ones_included(tmp_path):
    recs = [{**record("attention", 16, 0, 0.9), "checks": [[50, 0.1], [100, 0.6], [150, 0.95]]},
            {**record("atlas", 16, 0, 0.0, status="nan"), "steps": 103,
             "checks": [[50, 0.01], [100, 0.02]]},
            {**record("mamba", 16, 0, 0.2), "checks": [[50, 0.2]]},        # one point: no line
            record("x", 8, 0, 0.4, probe="q")]                             # no checks at all
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    files = write_report(path, tmp_path / "rep")
    curves = [p for p in files.plots if "learning-curves" in p.name]
    assert [p.name for p in curves] == ["p-learning-curves.png"]
    img = matplotlib.image.imread(curves[0])
    assert img.ndim == 3 and img.shape[0] > 100
    assert "](p-learning-curves.png)" in files.markdown.read_text()


def test_options_added_later_are_one_series_when_off():
    """A record written before train.decay_time_scales and sparsity existed and a new one of
    the same recipe (both off) are one series; on, they are named."""
    old = {**record("atlas", 64, 0, 0.1), "config": {"train": {"steps": 300}}}
    new = {**record("atlas", 64, 1, 0.2), "config": {"train": {
        "steps": 300, "decay_time_scales": False, "sparsity": {"target": 0.0, "method": "magnitude"}}}}
    assert set(series_names([old, new]).values()) == {"atlas"}
    on = {**new, "config": {"train": {"steps": 300, "decay_time_scales": True}}}
    assert set(series_names([old, on]).values()) == {"atlas", "atlas (decay_time_scales=True)"}
