"""The BM25 baseline: the code tokenizer, exact matches first, and MRR on real code search."""

import numpy as np
import pytest

from seqlab.tasks.bm25 import bm25_scores, code_tokens
from seqlab.tasks.retrieval import rank_metrics
from seqlab.tasks.stdlib_functions import FunctionsConfig, code_search_pairs

pytest.importorskip("bm25s")


def test_code_tokens_split_identifiers():
    assert code_tokens("getHTTPResponse_code") == ["get", "http", "response", "code"]
    assert code_tokens("def parseURLs(self, utf8_name): return md5(x.__len__())") == \
        ["def", "parse", "urls", "self", "utf8", "name", "return", "md5", "x", "len"]
    assert code_tokens("XMLHttpRequest HTTP2Server __init__") == \
        ["xml", "http", "request", "http2", "server", "init"]
    assert code_tokens("") == [] and code_tokens("+= -> ()") == []


def test_the_exact_match_ranks_first():
    candidates = ["def read_config(path):\n    return json.load(open(path))",
                  "def write_config(path, data):\n    json.dump(data, open(path, 'w'))",
                  "def getHTTPResponse_code(conn):\n    return conn.getresponse().status",
                  "def parse_args(argv):\n    return parser.parse_args(argv)"]
    queries = ["Return the HTTP response code of a connection.", "Write the config data.",
               "Parse command-line args.", "Read a config file."]
    scores = bm25_scores(queries, candidates)
    assert scores.shape == (4, 4) and scores.dtype == np.float32
    assert scores.argmax(1).tolist() == [2, 1, 3, 0]
    assert rank_metrics(scores, [2, 1, 3, 0])["mrr"] == 1.0
    # no known term (or only stop words): no evidence, 0 everywhere
    assert not bm25_scores(["zebra", "the of a", ""], candidates).any()


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least one candidate"):
        bm25_scores(["q"], [])
    with pytest.raises(ValueError, match=r"candidates\[1\] is a int, not a string"):
        bm25_scores(["q"], ["a", 3])
    with pytest.raises(ValueError, match="queries must be a list of strings, not one string"):
        bm25_scores("q", ["a"])


@pytest.fixture(scope="module")
def stdlib_cfg(tmp_path_factory):
    # The folder test_stdlib_functions.py extracts into: one extraction per test session.
    return FunctionsConfig(cache_dir=str(tmp_path_factory.getbasetemp() / "stdlib-functions"))


def test_mrr_on_real_code_search_is_far_above_chance(stdlib_cfg):
    queries, candidates = code_search_pairs("validation", stdlib_cfg)
    queries, candidates = queries[:300], candidates[:300]
    m = rank_metrics(bm25_scores(queries, candidates), np.arange(300))
    chance = np.mean(1 / np.arange(1, 301))
    print(f"BM25 on 300 validation pairs: MRR {m['mrr']:.3f} (chance {chance:.3f}), "
          f"recall@10 {m['recall@10']:.3f}")
    assert m["mrr"] > 0.3 > 10 * chance
