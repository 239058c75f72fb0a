import statistics

import torch

from seqlab.tasks.probes import build
from seqlab.tasks.probes.listops import PAD, ListOps, evaluate
from tests.tasks.probes.common import check_config_error, check_determinism, check_metric, check_valid

WORDS = {10: "[MAX", 11: "[MIN", 12: "[MED", 13: "[SM", 14: "]"}
APPLY = {"[MAX": max, "[MIN": min, "[SM": lambda xs: sum(xs) % 10,
         "[MED": lambda xs: int(statistics.median(xs))}


def decode(row: list[int]) -> list[str]:
    return [WORDS.get(t, str(t)) for t in row if t != PAD]


def parse_and_evaluate(words: list[str], at: int = 0) -> tuple[int, int, int, list[int]]:
    """Recursive evaluator: (value, next index, depth, argument counts) of the node at ``at``."""
    word = words[at]
    if word.isdigit():
        return int(word), at + 1, 0, []
    args, depth, counts, at = [], 0, [], at + 1
    while words[at] != "]":
        value, at, sub_depth, sub_counts = parse_and_evaluate(words, at)
        args.append(value)
        depth, counts = max(depth, sub_depth), counts + sub_counts
    return APPLY[word](args), at + 1, depth + 1, counts + [len(args)]


def test_labels_match_a_recursive_evaluator():
    probe = build("listops", seq_len=120, max_depth=4, min_args=2, max_args=5)
    batch = probe.batch("train", 0, 64)
    check_valid(probe, batch, 64)
    depths = set()
    for row, label in zip(batch.inputs.tolist(), batch.targets.tolist()):
        words = decode(row)
        value, end, depth, counts = parse_and_evaluate(words)
        assert end == len(words)  # one well-formed expression
        assert value == label
        assert words[0] in APPLY and 1 <= depth <= 4
        assert all(2 <= c <= 5 for c in counts)
        assert row[-1] == 14 and all(t == PAD for t in row[:len(row) - len(words)])  # left pad
        depths.add(depth)
    assert len(depths) > 1


def test_evaluator_on_handwritten_cases():
    ids = {w: t for t, w in WORDS.items()}
    cases = {"[MAX 2 9 [MIN 4 7 ] 0 ]": 9, "[MED 1 2 3 4 ]": 2, "[MED 3 8 ]": 5,
             "[SM 9 9 [MED 5 ] ]": 3, "[MIN [MAX 1 2 ] [SM 5 6 ] ]": 1}
    rows = [[ids[w] if w in ids else int(w) for w in text.split()] for text in cases]
    width = max(map(len, rows)) + 2
    padded = torch.tensor([[PAD] * (width - len(r)) + r for r in rows])
    assert evaluate(padded).tolist() == list(cases.values())
    right = torch.tensor([r + [PAD] * (width - len(r)) for r in rows])  # right padding works too
    assert evaluate(right).tolist() == list(cases.values())


def test_lra_defaults_fit_the_length():
    probe = ListOps()
    assert probe.seq_len == 2000 and probe.cfg.max_args == 10 and probe.num_classes == 10
    batch = probe.batch("train", 0, 8)
    check_valid(probe, batch, 8)
    words = decode(batch.inputs[0].tolist())
    assert parse_and_evaluate(words)[0] == batch.targets[0].item()


def test_determinism_and_splits():
    check_determinism(build("listops", seq_len=100, max_depth=4))


def test_metric():
    probe = build("listops", seq_len=64, max_depth=3, max_args=4)
    check_metric(probe, probe.batch("test", 0, 512), chance_below=0.2)


def test_config_errors_name_the_field():
    check_config_error(ListOps, "seq_len", seq_len=8, max_args=10)
    check_config_error(ListOps, "op_prob", op_prob=1.5)
    check_config_error(ListOps, "max_args", min_args=3, max_args=2)
    check_config_error(ListOps, "max_depth", max_depth=0)
