TINY_BLOCK = {"kind": "block", "block_size": 4, "embed_dim": 16, "dim": 32,
              "layers": ["attention(heads=2)", "mamba(d_state=4)"], "local_dim": 24,
              "local_layers": ["attention(heads=2)"], "mlp_hidden": 48}


def tiny_run(corpus, out, model=None, **train):
    """A six-step run of a tiny hybrid LM (or of ``model``, a model section) on ``corpus``."""
    from seqlab.train.config import RunConfig

    t = {"steps": 6, "batch_size": 4, "seq_len": 32, "warmup": 2, "eval_every": 3,
         "eval_tokens": 1024, "eval_batch_size": 4, "ckpt_every": 3, "log_every": 1}
    t.update(train)
    return RunConfig.from_dict({
        "model": model or {"dim": 32, "layers": ["attention", "mamba"], "mlp_hidden": 64,
                           "mixer_options": {"attention": {"heads": 2}, "mamba": {"d_state": 4}}},
        "data": {"paths": [str(corpus)]}, "train": t, "out_dir": str(out)})
