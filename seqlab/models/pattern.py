"""Layer specs and the one layer-pattern syntax of configs, ``seqlab train`` and ``seqlab bench``.

A layer is a :class:`LayerSpec`: a registered mixer name plus that mixer's
own options, so one model can hold sliding-window and global attention
layers, or mamba layers of two widths. A *pattern* spells a list of layers::

    attention                                one layer, the mixer's default options
    mamba+mamba+attention                    layers joined by "+"
    mamba*2+attention                        "*N" repeats the term before it
    attention(window=512,heads=4)            the layer's own options, name=value
    (attention(window=512)*5+attention)*2    a group repeats as a whole (12 layers)
    hybrid                                   a preset: mamba+attention

Option values are ints, floats, ``true``/``false``, ``none``/``null``, or
words (quote a string that is not a plain word: ``scan='a b'``). Spaces are
ignored. A list of patterns separates them by commas at the top level
(``seqlab bench run mqar --mixers attention,mamba*2+attention(window=64)``
is two cells); commas inside parentheses separate options.

In plain data (YAML, JSON, TOML) ``layers`` is a pattern string or a list
whose items are patterns or mappings such as ``{mixer: attention,
window: 512}``; the list is their concatenation. Saved configs write every
layer as such a mapping.

Example:
    >>> parse_layers("mamba*2+attention(window=64)")
    (LayerSpec(mixer='mamba', options={}), LayerSpec(mixer='mamba', options={}),
     LayerSpec(mixer='attention', options={'window': 64}))
    >>> format_pattern(_)
    'mamba*2+attention(window=64)'
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import seqlab.mixers as mixers
from seqlab.config import Config, ConfigError

# Named patterns. "hybrid" is the benchmarks' recurrent-then-attention alternation.
PRESETS: dict[str, str] = {"hybrid": "mamba+attention"}

SYNTAX = ("a pattern is layers joined by '+', each a mixer name with optional options in "
          "parentheses and an optional repeat, e.g. mamba*2+attention(window=512,heads=4) or "
          "(attention(window=512)*5+attention)*4")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_INT = re.compile(r"[+-]?\d+")


@dataclass(frozen=True, eq=False)
class LayerSpec(Config):
    """One layer of a model: a registered mixer and the options given to it.

    ``options`` holds only what was given (values normalised by the mixer's
    Config, e.g. ``rope_theta=10000`` becomes ``10000.0``); the mixer's own
    defaults fill in the rest. A spec equals another with the same mixer and
    options. Against a string it compares as code written for plain mixer
    names expects: a bare name matches the mixer whatever the options
    (``LayerSpec("attention", {"window": 8}) == "attention"``, so ``"attention"
    in cfg.layers`` asks whether any layer is attention), and a text with
    options must be the spec's own (``== "attention(window=8)"``).

    Attributes:
        mixer: a registered mixer name (``seqlab.mixers.names()``).
        options: fields of that mixer's Config.

    Raises:
        ConfigError: an unknown mixer (lists the known ones), an unknown option
            (lists the mixer's options) or a value out of range (names it).

    Example:
        >>> spec = LayerSpec("attention", {"window": 512})
        >>> str(spec), spec.config.window, spec.build(dim=64)
        ('attention(window=512)', 512, Attention(...))
    """

    mixer: str
    options: dict = field(default_factory=dict)

    def validate(self) -> None:
        cfg = mixers.get(self.mixer).Config.from_dict(self.options)
        full = cfg.to_dict()
        object.__setattr__(self, "options", {k: full[k] for k in self.options})

    @property
    def config(self) -> Config:
        """The mixer's Config: these options over the mixer's defaults."""
        return mixers.get(self.mixer).Config.from_dict(self.options)

    def build(self, dim: int) -> mixers.Mixer:
        """The mixer module of this layer at model width ``dim``."""
        return mixers.get(self.mixer)(dim, self.config)

    def with_defaults(self, defaults: Mapping[str, Any]) -> "LayerSpec":
        """This spec with ``defaults`` filled in under its own options (its own win)."""
        return LayerSpec(self.mixer, {**defaults, **self.options})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LayerSpec":
        """A flat mapping ``{"mixer": name, option: value, ...}`` (the saved form)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a layer must be a mixer name, a pattern or a mapping with a "
                              f"'mixer' key, got {type(data).__name__} {data!r}")
        if "mixer" not in data:
            raise ConfigError(f"layer mapping {dict(data)!r} has no 'mixer' key; write it as "
                              "{mixer: attention, window: 512}")
        options = {k: v for k, v in data.items() if k != "mixer"}
        if not isinstance(data["mixer"], str):
            raise ConfigError(f"layer mapping {dict(data)!r}: mixer must be a mixer name")
        return cls(data["mixer"], options)

    def to_dict(self) -> dict[str, Any]:
        return {"mixer": self.mixer, **self.options}

    def __str__(self) -> str:
        if not self.options:
            return self.mixer
        return f"{self.mixer}({','.join(f'{k}={_format_value(v)}' for k, v in self.options.items())})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LayerSpec):
            return self.mixer == other.mixer and self.options == other.options
        if isinstance(other, str):
            return (self.mixer if _NAME.fullmatch(other.strip()) else str(self)) == other.strip()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.mixer)  # equal to its bare mixer name, so hashed as that name


# -- parsing ------------------------------------------------------------------------------------
def parse_layers(value: Any, where: str = "layers") -> tuple[LayerSpec, ...]:
    """Layer specs from plain data: a pattern string, a LayerSpec, or a list of patterns,
    mappings and LayerSpecs (concatenated).

    Args:
        value: what a config file, a flag or a caller gave.
        where: how error messages name the value, e.g. ``"LMConfig.layers"``.

    Returns:
        One LayerSpec per layer, in order.

    Raises:
        ConfigError: bad syntax (with the position and the syntax), or a bad
            layer, naming its index, its text, and the field and allowed values.

    Example:
        >>> parse_layers(["attention(window=8)", {"mixer": "mamba", "d_state": 4}])
        (LayerSpec(mixer='attention', options={'window': 8}), LayerSpec(mixer='mamba', ...))
    """
    items = value if isinstance(value, (list, tuple)) else [value]
    raw: list[tuple[str, Any]] = []   # (text naming the layer, LayerSpec | (mixer, options))
    for item in items:
        if isinstance(item, LayerSpec):
            raw.append((str(item), item))
        elif isinstance(item, str):
            raw.extend(_Parser(item, where).parse())
        elif isinstance(item, Mapping):
            raw.append((repr(dict(item)), item))
        else:
            raise ConfigError(f"{where} = {value!r} is not allowed: expected a pattern string "
                              f"or a list of mixer names, patterns or mappings such as "
                              f"{{mixer: attention, window: 512}}; {SYNTAX}")
    if not raw:
        raise ConfigError(f"{where} = {value!r} is not allowed: expected at least one layer; "
                          f"{SYNTAX}")
    out = []
    for i, (text, item) in enumerate(raw):
        try:
            if isinstance(item, LayerSpec):
                out.append(item)
            elif isinstance(item, Mapping):
                out.append(LayerSpec.from_dict(dict(item)))
            else:
                out.append(LayerSpec(*item))
        except ConfigError as e:
            raise ConfigError(f"{where}[{i}] = {text}: {e}") from None
    return tuple(out)


def split_patterns(text: str) -> list[str]:
    """A comma-separated list of patterns split at its top-level commas (not those inside
    parentheses), blanks dropped: ``"a(x=1,y=2),b+c"`` -> ``["a(x=1,y=2)", "b+c"]``."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def repeat_to(layers: Sequence[LayerSpec], n: int) -> tuple[LayerSpec, ...]:
    """``layers`` repeated (and cut) to ``n`` layers: ``repeat_to((a, b), 3) == (a, b, a)``."""
    return tuple(layers[i % len(layers)] for i in range(n))


def format_pattern(layers: Sequence[LayerSpec]) -> str:
    """The pattern text of ``layers``, runs written once with ``*N``; parses back to them."""
    runs: list[list] = []
    for spec in layers:
        if runs and runs[-1][0] == spec:
            runs[-1][1] += 1
        else:
            runs.append([spec, 1])
    return "+".join(str(s) if k == 1 else f"{s}*{k}" for s, k in runs)


def _format_value(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v if _WORD.fullmatch(v) and v.lower() not in _KEYWORDS else repr(v)
    return repr(v)


_KEYWORDS = {"true": True, "false": False, "none": None, "null": None}


class _Parser:
    """Recursive descent over ``pattern := term ('+' term)*; term := atom ('*' INT)?;
    atom := '(' pattern ')' | NAME ('(' NAME '=' VALUE (',' NAME '=' VALUE)* ')')?``."""

    def __init__(self, text: str, where: str):
        self.text, self.where, self.pos = text, where, 0

    def parse(self) -> list[tuple[str, tuple[str, dict]]]:
        if not self.text.strip():
            raise self.error("no layers")
        items = self.pattern()
        if self._peek():
            what = "',' (one pattern here, not a list)" if self._peek() == "," else repr(self._peek())
            raise self.error(f"unexpected {what}")
        return items

    def error(self, what: str) -> ConfigError:
        return ConfigError(f"{self.where} = {self.text!r} is not a layer pattern: {what} at "
                           f"character {self.pos + 1}; {SYNTAX}")

    def _peek(self) -> str:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _expect(self, ch: str) -> None:
        if self._peek() != ch:
            got = repr(self._peek()) if self._peek() else "the end"
            raise self.error(f"expected {ch!r}, found {got}")
        self.pos += 1

    def _match(self, regex: re.Pattern, what: str) -> str:
        self._peek()
        m = regex.match(self.text, self.pos)
        if not m:
            got = repr(self.text[self.pos]) if self.pos < len(self.text) else "the end"
            raise self.error(f"expected {what}, found {got}")
        self.pos = m.end()
        return m.group()

    def pattern(self) -> list:
        items = self.term()
        while self._peek() == "+":
            self.pos += 1
            items = items + self.term()
        return items

    def term(self) -> list:
        items = self.atom()
        if self._peek() == "*":
            self.pos += 1
            n = int(self._match(_INT, "a repeat count after '*'"))
            if n < 1:
                raise self.error(f"repeat count {n} (expected an int >= 1)")
            items = items * n
        return items

    def atom(self) -> list:
        if self._peek() == "(":
            self.pos += 1
            items = self.pattern()
            self._expect(")")
            return items
        start = self.pos
        name = self._match(_NAME, "a mixer name")
        options: dict[str, Any] = {}
        if self._peek() == "(":
            self.pos += 1
            options = self.options()
        text = self.text[start:self.pos].strip()
        if name in PRESETS and name not in mixers.names():
            if options:
                raise self.error(f"the preset {name!r} takes no options")
            return _Parser(PRESETS[name], self.where).parse()
        return [(text, (name, options))]

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self._peek() == ")":
            self.pos += 1
            return out
        while True:
            key = self._match(_NAME, "an option name")
            if key in out:
                raise self.error(f"option {key!r} given twice")
            self._expect("=")
            out[key] = self.value()
            if self._peek() == ",":
                self.pos += 1
                continue
            self._expect(")")
            return out

    def value(self) -> Any:
        ch = self._peek()
        if ch in ("'", '"'):
            end = self.text.find(ch, self.pos + 1)
            if end < 0:
                raise self.error(f"unclosed quote {ch}")
            value = self.text[self.pos + 1:end]
            self.pos = end + 1
            return value
        m = re.compile(r"[^,()\s]+").match(self.text, self.pos)
        if not m:
            raise self.error("expected a value")
        self.pos = m.end()
        word = m.group()
        if word.lower() in _KEYWORDS:
            return _KEYWORDS[word.lower()]
        if _INT.fullmatch(word):
            return int(word)
        try:
            return float(word)
        except ValueError:
            pass
        if not _WORD.fullmatch(word):
            raise self.error(f"value {word!r} is neither a number nor a word (quote it)")
        return word


__all__ = ["PRESETS", "SYNTAX", "LayerSpec", "format_pattern", "parse_layers", "repeat_to",
           "split_patterns"]
