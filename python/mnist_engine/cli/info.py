"""``mnist-engine info``: what a .mnw file holds, and whether it verifies."""
from __future__ import annotations

import argparse

import mnist_engine

from .common import file_path, printable


def add_parser(sub) -> None:
    info = sub.add_parser("info", help="describe and verify a .mnw file")
    info.add_argument("model", type=file_path, help="the .mnw file")
    info.add_argument("--no-verify", action="store_true", help="skip the reference-output check")
    info.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    engine = mnist_engine.load(args.model, verify=not args.no_verify)
    print(repr(engine))
    for i, ((n_in, n_out, act), op) in enumerate(zip(engine.layers, engine.layer_ops)):
        print(f"  layer {i}: {n_in} -> {n_out} {'' if op == 'dense' else op + ' '}{act}")
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
