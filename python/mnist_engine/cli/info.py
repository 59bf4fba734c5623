"""``mnist-engine info``: what a .mnw file holds, layer by layer, and whether it verifies."""
from __future__ import annotations

import argparse
from typing import List, Sequence

import mnist_engine

from .._text import printable
from ..model_file import SPATIAL_OPS, multiply_adds, read_layers
from .common import file_path


def add_parser(sub) -> None:
    info = sub.add_parser("info", help="describe and verify a .mnw file")
    info.add_argument("model", type=file_path, help="the .mnw file")
    info.add_argument("--no-verify", action="store_true", help="skip the reference-output check")
    info.set_defaults(run=run)


def shape(values: Sequence[int]) -> str:
    return "x".join(str(v) for v in values)


def layer_table(layers) -> List[str]:
    """One row per layer: the op, input -> output (H x W x C for images), window, strides, pads
    (top, bottom, left, right), filters, activation, parameters and multiply-adds per image, then
    the totals."""
    rows = [("#", "op", "input -> output", "window", "strides", "pads", "filters", "activation", "parameters",
             "multiply-adds")]
    parameters_total = adds_total = 0
    for i, layer in enumerate(layers):
        spatial = layer.op in SPATIAL_OPS
        global_pool = layer.op.startswith("global")
        if spatial:
            shapes = f"{shape(layer.input_shape)} -> {shape(layer.output_shape)}"
        else:
            shapes = f"{layer.widths[0]} -> {layer.widths[1]}"
        windowed = spatial and not global_pool
        parameters = sum(int(v.size) for v in layer.values())
        adds = multiply_adds(layer)
        parameters_total += parameters
        adds_total += adds
        rows.append((str(i), layer.op, shapes, shape(layer.window) if windowed else "-",
                     shape(layer.strides) if windowed else "-",
                     ",".join(map(str, layer.pads)) if windowed and any(layer.pads) else "-",
                     str(layer.kernel.shape[3]) if layer.op == "conv2d" else "-", layer.activation,
                     f"{parameters:,}", f"{adds:,}"))
    rows.append(("", "total", "", "", "", "", "", "", f"{parameters_total:,}", f"{adds_total:,}"))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    right = {0, 8, 9}  # numbers line up on their last digit
    return ["  " + "  ".join(cell.rjust(w) if c in right else cell.ljust(w)
                             for c, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in rows]


def run(args: argparse.Namespace) -> int:
    engine = mnist_engine.load(args.model, verify=not args.no_verify)
    print(repr(engine))
    for line in layer_table(read_layers(mnist_engine._resolve_model(args.model))):  # a bundled name too
        print(line)
    if engine.input_kind == "features":
        print("  input: float features (tabular data); uint8 is refused")
    elif engine.input_mean is not None:
        print(f"  uint8 pixels become (p * {engine.input_scale!r} - mean) / std, mean {list(engine.input_mean)}, "
              f"std {list(engine.input_std)}")
    else:
        print(f"  input scale for uint8 pixels: {engine.input_scale!r}")
    print(f"  outputs: {engine.output_kind.replace('_', '-')}"
          f"{'' if engine.output_kind_stated else ' (read off the last activation: the file does not say)'}")
    if engine.classes is not None:
        print(f"  classify returns: {', '.join(printable(str(c)) for c in engine.classes)}")
    for key, value in engine.metadata.items():
        print(f"  {key}: {printable(value)}")
    if not args.no_verify:
        # verification_margin is the worst (|difference| - allowed) over the reference outputs:
        # negative means every output was inside its tolerance, by at least that much.
        print(f"  verified: the engine recomputed the exporter's reference outputs and every one is within its "
              f"tolerance (the closest is {-engine.verification_margin:.2g} inside it)")
    return 0
