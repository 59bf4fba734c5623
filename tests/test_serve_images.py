"""Encoded images straight to the server (serve/image_requests.py): a PNG or JPEG posted as an
image/* body, or several as a multipart form, is answered as `mnist-engine predict` answers the
same file: the same digit, sureness, confidence and probabilities."""
from __future__ import annotations

import io
import json

import pytest

import mnist_engine
from conftest import require
from serving import request, server_in_thread

require("starlette")
require("uvicorn")
require("PIL.Image")
require("python_multipart")
from PIL import Image, ImageDraw  # noqa: E402

from mnist_engine.serve import create_app  # noqa: E402

INFER = "/v2/models/reader/infer"


@pytest.fixture(scope="module")
def engines():
    return {"reader": mnist_engine.load("reader"), "convnet": mnist_engine.load("convnet")}


@pytest.fixture
def app(engines):
    return create_app(engines)  # one per server: an app's batchers stop with its server


def drawn(points, size=(200, 240), width=14, ink=0, paper=255) -> Image.Image:
    img = Image.new("L", size, paper)
    ImageDraw.Draw(img).line(points, fill=ink, width=width)
    return img


SEVEN = [(40, 40), (160, 40), (90, 210)]
ONE = [(100, 30), (100, 210)]


def encoded(img: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, fmt) if fmt == "JPEG" else img.save(out, fmt)
    return out.getvalue()


def predicted(tmp_path, name: str, data: bytes, model: str, capsys) -> dict:
    """What `mnist-engine predict --json` says of the same bytes saved as a file."""
    from mnist_engine.cli import main

    path = tmp_path / name
    path.write_bytes(data)
    capsys.readouterr()
    assert main(["predict", "--model", model, "--json", "--top", "11", str(path)]) == 0
    return json.loads(capsys.readouterr().out)["results"][0]


@pytest.mark.parametrize("fmt, content_type", [("PNG", "image/png"), ("JPEG", "image/jpeg")])
@pytest.mark.parametrize("model", ["reader", "convnet"])
def test_an_image_body_is_answered_as_predict_answers_the_file(app, tmp_path, capsys, fmt, content_type, model):
    data = encoded(drawn(SEVEN), fmt)
    with server_in_thread(app) as port:
        status, headers, body = request(port, "POST", f"/v2/models/{model}/infer", data,
                                        {"Content-Type": content_type})
    assert status == 200 and headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert answer["model_name"] == model and len(answer["results"]) == 1
    got, want = answer["results"][0], predicted(tmp_path, f"seven.{fmt.lower()}", data, model, capsys)
    assert got["digit"] == want["digit"] == 7 and got["sure"] is want["sure"] is True
    assert got["confidence"] == want["confidence"] and got["top"] == want["top"]  # the same bits
    engine = mnist_engine.load(model)
    expected = engine.predict_proba(mnist_engine.preprocess_image(data).reshape(1, -1))[0]
    assert got["probabilities"] == [float(p) for p in expected]


def test_a_multipart_form_is_answered_per_file_in_order_with_blank_pages_not_sure(app, tmp_path, capsys):
    files = [("seven.png", encoded(drawn(SEVEN), "PNG")), ("blank.png", encoded(Image.new("L", (90, 90), 255), "PNG")),
             ("one.jpg", encoded(drawn(ONE, ink=255, paper=0), "JPEG"))]
    boundary = "----mnist-engine-test"
    body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
                    f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
                    for name, data in files) + f"--{boundary}--\r\n".encode()
    with server_in_thread(app) as port:
        status, _, reply = request(port, "POST", INFER, body,
                                   {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200, reply
    results = json.loads(reply)["results"]
    assert [(r["name"], r["digit"], r["sure"]) for r in results] == [("seven.png", 7, True), ("blank.png", None, False),
                                                                       ("one.jpg", 1, True)]
    assert "found no digit" in results[1]["reason"] and results[1]["top"] == []
    for result, (name, data) in zip(results, files):
        if result["digit"] is not None:
            assert result["top"] == predicted(tmp_path, name, data, "reader", capsys)["top"]


@pytest.mark.parametrize("path, body, content_type, message", [
    (INFER, b"not a picture", "image/png",
     "image: expected an image (PNG, JPEG, BMP, GIF, TIFF, WEBP), got something Pillow cannot read"),
    (INFER, b"", "image/png", "image: expected an image (PNG, JPEG, BMP, GIF, TIFF, WEBP), got 0 bytes"),
    (INFER, b"--b--\r\n", "multipart/form-data; boundary=b", "expected at least one image file in the multipart form"),
    ("/v2/models/nope/infer", b"x", "image/png", "model 'nope' is not served"),
], ids=["not an image", "empty", "a form without files", "unknown model"])
def test_what_is_not_an_image_is_a_400_that_says_so(app, path, body, content_type, message):
    with server_in_thread(app) as port:
        status, _, reply = request(port, "POST", path, body, {"Content-Type": content_type})
        assert request(port, "GET", "/v2/health/live")[0] == 200
    assert status in (400, 404) and message in json.loads(reply)["error"], reply
    assert "0x" not in json.loads(reply)["error"]  # no object addresses in what a client reads


def test_a_model_of_features_refuses_images(tmp_path, rng):
    from helpers import random_layers

    path = mnist_engine.write_model(tmp_path / "tabular.mnw", random_layers(rng, [4, 3], ["softmax"]),
                                    metadata={"input_kind": "features"})
    app = create_app({"tabular": mnist_engine.load(path)})
    with server_in_thread(app) as port:
        status, _, reply = request(port, "POST", "/v2/models/tabular/infer", encoded(drawn(SEVEN), "PNG"),
                                   {"Content-Type": "image/png"})
    assert status == 400 and "reads 4 features, not 28x28 images" in json.loads(reply)["error"]


def test_a_model_of_log_probabilities_answers_images_with_probabilities(tmp_path, rng, capsys):
    """A PyTorch-style model ending in log_softmax: the answer's probabilities and confidence are
    the probabilities its log-probabilities stand for (Engine.to_probabilities), as predict's are."""
    from helpers import random_layers

    path = mnist_engine.write_model(tmp_path / "logp.mnw", random_layers(rng, [784, 32, 10], ["relu", "log_softmax"]))
    engine = mnist_engine.load(path)
    assert engine.output_kind == "log_probabilities"
    data = encoded(drawn(SEVEN), "PNG")
    with server_in_thread(create_app({"logp": engine})) as port:
        status, _, body = request(port, "POST", "/v2/models/logp/infer", data, {"Content-Type": "image/png"})
    assert status == 200
    got = json.loads(body)["results"][0]
    expected = engine.predict_proba(mnist_engine.preprocess_image(data).reshape(1, -1))[0]
    assert got["probabilities"] == [float(p) for p in expected] and abs(sum(got["probabilities"]) - 1) < 1e-5
    assert got["confidence"] == float(expected.max())
    assert got["top"] == predicted(tmp_path, "seven.png", data, str(path), capsys)["top"]

