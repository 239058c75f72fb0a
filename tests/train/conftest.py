def tiny_run(corpus, out, **train):
    from seqlab.train.config import RunConfig

    t = {"steps": 6, "batch_size": 4, "seq_len": 32, "warmup": 2, "eval_every": 3,
         "eval_tokens": 1024, "eval_batch_size": 4, "ckpt_every": 3, "log_every": 1}
    t.update(train)
    return RunConfig.from_dict({
        "model": {"dim": 32, "layers": ["attention", "mamba"], "mlp_hidden": 64,
                  "mixer_options": {"attention": {"heads": 2}, "mamba": {"d_state": 4}}},
        "data": {"paths": [str(corpus)]}, "train": t, "out_dir": str(out)})
