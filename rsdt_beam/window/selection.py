"""Which tiles get windows, and the user functions Stage 3 calls (by object or by name).

Tile selectors are `selector(j, i) -> bool` as in rsdtlib's `write_tf_files`.
On the command line a selector is one of:

* `all`
* `rsdtlib-train` / `rsdtlib-val`: the checkerboard split of rsdtlib's
  training example, `(j + i/2) % 2 == 0` and `(j + (i+1)/2 + 1) % 4 == 0`
* `list:0_0,1_2,...` or `file:tiles.txt` (one `j_i` or `j,i` per line)
* `expr:<expression in j and i>`, e.g. `expr:(j + i) % 2 == 0`
* `module:function`, a Python function of `(j, i)`
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Callable

import numpy as np

from rsdt_beam import fs
from rsdt_beam.common.names import parse_tile
from rsdt_beam.common.user_code import load_callable

TileSelector = Callable[[int, int], bool]


@dataclasses.dataclass(frozen=True)
class TileSet:
    tiles: frozenset

    def __call__(self, j: int, i: int) -> bool:
        return (j, i) in self.tiles


_ALLOWED_NODES = (
    ast.Expression,
    ast.BoolOp,
    ast.BinOp,
    ast.UnaryOp,
    ast.Compare,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.And,
    ast.Or,
    ast.Not,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.FloorDiv,
    ast.Mod,
    ast.USub,
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.IfExp,
)


@dataclasses.dataclass(frozen=True)
class TileExpression:
    """An arithmetic/boolean expression in `j` and `i` (nothing else can be named or called)."""

    source: str

    def __post_init__(self):
        tree = ast.parse(self.source, mode="eval")
        for node in ast.walk(tree):
            if not isinstance(node, _ALLOWED_NODES):
                raise ValueError(f"tile expression {self.source!r}: {type(node).__name__} is not allowed")
            if isinstance(node, ast.Name) and node.id not in ("j", "i"):
                raise ValueError(f"tile expression {self.source!r}: only j and i may be used")

    def __call__(self, j: int, i: int) -> bool:
        return bool(eval(compile(self.source, "<tiles>", "eval"), {"__builtins__": {}}, {"j": j, "i": i}))


RSDTLIB_SELECTORS = {
    "all": "True",
    "rsdtlib-train": "(j + i/2) % 2 == 0",
    "rsdtlib-val": "(j + (i+1)/2 + 1) % 4 == 0",
}


def tile_selector(spec: str | TileSelector | None) -> TileSelector:
    """A selector from a command-line spec (see the module docstring) or a callable."""
    if spec is None:
        return TileExpression("True")
    if callable(spec):
        return spec
    if spec in RSDTLIB_SELECTORS:
        return TileExpression(RSDTLIB_SELECTORS[spec])
    kind, _, rest = spec.partition(":")
    if kind == "expr":
        return TileExpression(rest)
    if kind == "list":
        return TileSet(frozenset(parse_tile(t) for t in rest.split(",") if t.strip()))
    if kind == "file":
        lines = fs.read_bytes(rest).decode().splitlines()
        return TileSet(frozenset(parse_tile(t) for t in lines if t.strip() and not t.startswith("#")))
    return load_callable(spec)


def rsdtlib_example_label(window, label_args) -> tuple[np.ndarray, np.ndarray]:
    """rsdtlib's training example: the current window's frames, and a label of ones `[ty, tx]`."""
    frames = window.current.frames
    return frames, np.ones(frames.shape[1:3], np.float32)
