"""PyTorch's examples/mnist Net, trained, exported through both of torch's ONNX exporters, and read
by the engine as a user would: what needs torch (not a dependency, not in CI) measured end to end.

    python tools/pytorch_mnist_net.py [--epochs 1] [--train-images 60000] [--out DIR]

The Net and its training are examples/mnist/main.py's: conv 32 3x3, conv 64 3x3, 2x2 max pool,
dropout, fc 128, dropout, fc 10, log_softmax; Adadelta(lr=1) with StepLR(gamma=0.7), batch 64,
on ToTensor() + Normalize((0.1307,), (0.3081,)). Each exported graph goes through
mnist_engine.export_onnx with that mean and std, and is then checked three ways:
- accuracy on the 10k test digits: the engine on uint8 pixels against onnxruntime on the
  normalized floats the DataLoader would give (the same number, to 0.05 points);
- the outputs: log-probabilities, within 1e-4 of onnxruntime's;
- `mnist-engine predict` on test digits drawn as dark ink on a white page, 4x larger: probabilities
  in [0, 1], and the digits read as well as the test set is (within 5 points).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

MEAN, STD = 0.1307, 0.3081


def build_net(torch):
    nn, F = torch.nn, torch.nn.functional

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, 3, 1)
            self.conv2 = nn.Conv2d(32, 64, 3, 1)
            self.dropout1 = nn.Dropout(0.25)
            self.dropout2 = nn.Dropout(0.5)
            self.fc1 = nn.Linear(9216, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            x = F.relu(self.conv1(x))
            x = F.relu(self.conv2(x))
            x = F.max_pool2d(x, 2)
            x = self.dropout1(x)
            x = torch.flatten(x, 1)
            x = F.relu(self.fc1(x))
            x = self.dropout2(x)
            return F.log_softmax(self.fc2(x), dim=1)

    return Net()


def normalized(pixels: np.ndarray) -> np.ndarray:
    """What ToTensor() + Normalize((0.1307,), (0.3081,)) give: (N, 1, 28, 28) float32."""
    return ((pixels.astype(np.float32) / 255 - np.float32(MEAN)) / np.float32(STD))[:, None]


def train(torch, pixels: np.ndarray, labels: np.ndarray, epochs: int, seed: int = 1):
    torch.manual_seed(seed)
    net = build_net(torch)
    optimizer = torch.optim.Adadelta(net.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    x, y = torch.from_numpy(normalized(pixels)), torch.from_numpy(labels.astype(np.int64))
    order = np.random.default_rng(seed)
    for epoch in range(epochs):
        net.train()
        perm = torch.from_numpy(order.permutation(len(x)))
        for start in range(0, len(x), 64):
            batch = perm[start:start + 64]
            optimizer.zero_grad()
            loss = torch.nn.functional.nll_loss(net(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
        scheduler.step()
        print(f"epoch {epoch + 1}: last batch loss {loss.item():.4f}", flush=True)
    return net.eval()


def export_graph(torch, net, path: Path, dynamo: bool) -> None:
    sample = torch.zeros(2, 1, 28, 28)
    if dynamo:
        torch.onnx.export(net, (sample,), str(path), input_names=["input"], output_names=["output"],
                          dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},))
    else:
        torch.onnx.export(net, sample, str(path), input_names=["input"], output_names=["output"],
                          dynamo=False, dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})


def page_images(pixels: np.ndarray, folder: Path) -> list:
    """Each digit as dark ink on a white page, 4x larger: what a user's scan looks like."""
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, digit in enumerate(pixels):
        path = folder / f"digit{i:04d}.png"
        Image.fromarray(255 - np.kron(digit, np.ones((4, 4), np.uint8))).save(path)
        paths.append(str(path))
    return paths


def check(graph: Path, mnw: Path, test: tuple, pages: list, page_labels: np.ndarray) -> dict:
    import onnxruntime

    import mnist_engine
    pixels, labels = test
    mnist_engine.export_onnx(graph, mnw, input_scale=1 / 255, input_mean=MEAN, input_std=STD)
    engine = mnist_engine.load(mnw)
    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    ort_out = session.run(None, {session.get_inputs()[0].name: normalized(pixels)})[0]
    out = engine.predict(pixels.reshape(len(pixels), -1))
    answer = json.loads(subprocess.run(
        [sys.executable, "-m", "mnist_engine", "predict", "--json", "--model", str(mnw), *pages],
        check=True, capture_output=True, text=True).stdout)
    probabilities = [t["probability"] for r in answer["results"] for t in r["top"]]
    sums = [sum(t["probability"] for t in r["top"]) for r in answer["results"]]
    digits = [r["digit"] for r in answer["results"]]
    return {
        "output_kind": engine.output_kind,
        "engine_uint8_accuracy": float((out.argmax(1) == labels).mean()),
        "onnxruntime_float_accuracy": float((ort_out.argmax(1) == labels).mean()),
        "max_abs_diff_vs_onnxruntime": float(np.abs(out - ort_out).max()),
        "argmax_agreement": float((out.argmax(1) == ort_out.argmax(1)).mean()),
        "pages": len(pages),
        "pages_right": int(sum(d == int(t) for d, t in zip(digits, page_labels))),
        "pages_not_sure": int(sum(d is None for d in digits)),
        "probability_range": [min(probabilities), max(probabilities)],
        "largest_top_sum": max(sums),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-images", type=int, default=60000)
    parser.add_argument("--pages", type=int, default=200, help="test digits drawn as pages for predict")
    parser.add_argument("--out", type=Path, default=None, help="keep the .onnx and .mnw files here")
    args = parser.parse_args(argv)
    import torch

    from mnist_engine.datasets import load_mnist
    (train_x, train_y), test = load_mnist()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    net = train(torch, train_x[:args.train_images], train_y[:args.train_images], args.epochs)
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        pages = page_images(test[0][:args.pages], out / "pages")
        results = {}
        for name, dynamo in (("torchscript", False), ("dynamo", True)):
            graph = out / f"net-{name}.onnx"
            export_graph(torch, net, graph, dynamo)
            results[name] = check(graph, out / f"net-{name}.mnw", test, pages, test[1][:args.pages])
            print(name, json.dumps(results[name], indent=1), flush=True)
    failures = [f"{name}: {what}" for name, r in results.items() for what, bad in (
        ("uint8 accuracy differs from onnxruntime's by over 0.05 points",
         abs(r["engine_uint8_accuracy"] - r["onnxruntime_float_accuracy"]) > 0.0005),
        ("outputs differ from onnxruntime's by over 1e-4", r["max_abs_diff_vs_onnxruntime"] > 1e-4),
        ("a probability outside [0, 1]", not 0 <= r["probability_range"][0] <= r["probability_range"][1] <= 1),
        ("the pages are read worse than the test set, by over 5 points",
         r["pages_right"] / r["pages"] < r["engine_uint8_accuracy"] - 0.05),
        ("not log-probabilities", r["output_kind"] != "log_probabilities")) if bad]
    print("\n".join(failures) or "all checks hold")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
