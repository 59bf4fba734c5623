"""Writes the bundled model's network as an ONNX graph (MatMul, Add, Relu, Softmax), the shape of
what torch.onnx.export gives for a PyTorch MLP: for trying `mnist-engine export` without PyTorch.

    python tools/onnx_example.py my_model.onnx
"""
from __future__ import annotations

import sys

import mnist_engine
from mnist_engine.bench import onnx_model
from mnist_engine.model_file import atomic_write_bytes, read_layers


def main(path: str) -> None:
    graph = onnx_model(read_layers(mnist_engine.default_model_path()))
    atomic_write_bytes(path, graph.SerializeToString())
    print(f"wrote {path}: the bundled network as ONNX ({len(graph.graph.node)} nodes)")


if __name__ == "__main__":
    main(sys.argv[1])
