from collections import Counter

import pytest

from seqlab.tasks.probes import IGNORE, build
from seqlab.tasks.probes.tree_traversal import TreeTraversal
from tests.tasks.probes.common import check_config_error, check_determinism, check_metric, check_valid


def parse(tokens: list[int], null: int):
    """Preorder with null markers -> nested (label, left, right) tuples; also the rest."""
    head, rest = tokens[0], tokens[1:]
    if head == null:
        return None, rest
    left, rest = parse(rest, null)
    right, rest = parse(rest, null)
    return (head, left, right), rest


def traverse(tree, order: str) -> list[int]:
    if tree is None:
        return []
    label, left, right = tree
    parts = {"pre": [[label], traverse(left, order), traverse(right, order)],
             "in": [traverse(left, order), [label], traverse(right, order)],
             "post": [traverse(left, order), traverse(right, order), [label]]}[order]
    return [x for part in parts for x in part]


def shape(tree) -> str:
    return "-" if tree is None else f"({shape(tree[1])}{shape(tree[2])})"


@pytest.mark.parametrize("order", ["pre", "in", "post", "random"])
def test_targets_match_a_recursive_reference(order):
    probe = build("tree_traversal", seq_len=40, max_nodes=12, num_labels=6, order=order)
    batch = probe.batch("train", 0, 64)
    check_valid(probe, batch, 64)
    orders = {probe.order_token(o): o for o in ("pre", "in", "post")}
    seen = set()
    for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist()):
        tree, rest = parse(inputs, probe.null)
        n = (len(inputs) - len(rest)) // 2
        assert 1 <= n <= 12
        asked = orders[rest[0]]
        seen.add(asked)
        expected = traverse(tree, asked)
        assert rest[1:n + 1] == expected and rest[n + 1] == probe.end
        assert all(t == probe.pad for t in rest[n + 2:])
        start = 2 * n + 1  # the order token's position: its target is the first label
        assert targets[start:start + n + 1] == expected + [probe.end]
        assert all(t == IGNORE for t in targets[:start] + targets[start + n + 1:])
    assert seen == ({"pre", "in", "post"} if order == "random" else {order})


def test_tree_shapes_are_uniform():
    """All 5 shapes of a 3-node binary tree, each about 1/5 of the time (cycle lemma)."""
    probe = build("tree_traversal", seq_len=16, min_nodes=3, max_nodes=3)
    batch = probe.batch("train", 0, 4000)
    counts = Counter(shape(parse(row, probe.null)[0]) for row in batch.inputs.tolist())
    assert len(counts) == 5
    assert all(abs(c / 4000 - 0.2) < 0.03 for c in counts.values()), counts


def test_determinism_and_splits():
    check_determinism(build("tree_traversal"))


def test_metric():
    probe = build("tree_traversal")
    check_metric(probe, probe.batch("test", 0, 64), chance_below=0.3)


def test_config_errors_name_the_field():
    check_config_error(TreeTraversal, "seq_len", seq_len=40, max_nodes=16)
    check_config_error(TreeTraversal, "max_nodes", min_nodes=5, max_nodes=4)
    check_config_error(TreeTraversal, "order", order="level")
    check_config_error(TreeTraversal, "num_labels", num_labels=0)
