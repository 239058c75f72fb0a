"""Hidden-state optimisation (Yoshida & Gimpel 2021, in "Making the Most of your Model"): at
inference, a few gradient steps on the state a model built from a context, so that the
context's own recent tokens become more likely; the weights never change.

A few-shot prompt is ``past + recent``: the model reads ``past`` into a state, the state's
float tensors (a KV cache's keys and values, a recurrent state) become the only trainable
values, and ``steps`` steps of Adam lower the mean negative log-likelihood of ``recent``
(of its ``scored`` positions only, e.g. the demonstrations' labels) read after the state.
The optimised state then reads ``recent`` and the query as usual. Since the state is a value
(the engine's contract), the caller's original state is never changed, and one optimised
state of a fixed set of demonstrations serves every query.

Works on any model of the decoding protocol whose call takes gradients (a seqlab LM of any
mixers; not a quantized one).

Example:
    >>> state = optimize_state(model, demos[:-1], demos[-1], steps=5, lr=1e-2)
    >>> logits, _ = model(torch.tensor([demos[-1] + query]), state)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = -100


def optimize_state(model, past: list[int], recent: list[int], *, scored: list[bool] | None = None,
                   steps: int = 5, lr: float = 1e-2, state=None):
    """The state after ``past`` (continuing ``state`` if given), optimised to predict ``recent``.

    Args:
        model: any decodable model (``model(tokens, state) -> logits, state``).
        past: the ids the state reads (not empty unless ``state`` is given).
        recent: the ids whose likelihood the state is optimised for (at least one).
        scored: one flag per ``recent`` id, which of them count (default: all).
        steps: Adam steps (0 returns the plain state).
        lr: Adam's learning rate on the state's values.

    Returns:
        ``(state, losses)``: the optimised state (detached) and the loss before each step and
        after the last (``steps + 1`` numbers).

    Raises:
        ValueError: an empty ``recent``, ``scored`` of another length or scoring nothing, or
            nothing to read.
    """
    if not recent:
        raise ValueError("recent must hold at least one token: the state is optimised to "
                         "predict it")
    scored = [True] * len(recent) if scored is None else list(scored)
    if len(scored) != len(recent) or not any(scored):
        raise ValueError(f"scored needs one flag per recent token ({len(recent)}) with at least "
                         f"one set; got {len(scored)} flags, {sum(map(bool, scored))} set")
    if not past and state is None:
        raise ValueError("past is empty and no state is given: there is no state to optimise")
    device = model.device
    with torch.no_grad():
        if past:
            _, state = model(torch.tensor([past], device=device), state)
    params: list[Tensor] = []

    def lift(t: Tensor) -> Tensor:
        if not t.is_floating_point():
            return t
        p = t.detach().clone().requires_grad_(True)
        params.append(p)
        return p

    state = state._map_tensors(lift)
    # Position i of the call predicts recent[i] from the state and recent[:i]; the first
    # recent token is predicted by the state's last logits, which a call on recent cannot
    # give, so recent[0] is only read (its loss would need the last past token re-read).
    tokens = torch.tensor([recent], device=device)
    labels = torch.tensor([[r if s else IGNORE for r, s in zip(recent[1:], scored[1:])] + [IGNORE]],
                          device=device)
    if (labels == IGNORE).all():
        raise ValueError("the scored recent tokens must include one after the first: the "
                         "first recent token is read, not predicted")
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for step in range(steps + 1):
        with torch.enable_grad():
            logits, _ = model(tokens, state)
            loss = F.cross_entropy(logits[0].float(), labels[0], ignore_index=IGNORE)
        losses.append(loss.item())
        if step == steps:
            break
        # Gradients for the state alone: the weights' would be computed and kept for nothing.
        for p, g in zip(params, torch.autograd.grad(loss, params, allow_unused=True)):
            p.grad = g
        opt.step()
    return state.detach(), losses
