"""The bundled image reader (tools/train.py --arch reader): keras-io's convnet with an 11th
output, "not a digit", and the one rule (mnist_engine.answers) by which predict, the page and
tools/image_accuracy.py turn its probabilities into a digit or "not sure".

What it is measured on was never trained on: the letters are set in Pillow's own font (training
used matplotlib's DejaVu, STIX and Computer Modern), the scans are scikit-learn's writers
(training made MNIST's digits coarse), the photographs are of MNIST's test digits. No handwritten
letters can be had offline, so typeset ones stand in for them (docs/IMAGES.md)."""
from __future__ import annotations

import numpy as np
import pytest

import mnist_engine
from conftest import IN_CI
from mnist_engine import answers
from photo_digits import not_digits, photographed, read, scan

if not IN_CI:
    pytest.importorskip("PIL")


@pytest.fixture(scope="module")
def reader():
    return mnist_engine.load("reader")


def test_sure_is_the_likeliest_output_unless_it_is_the_reject_class_or_below_the_threshold(rng):
    p = rng.dirichlet(np.full(11, 0.3), size=2000).astype(np.float32)
    for threshold in (0.0, 0.3, 0.5, 0.9):
        for reject in (None, 10, 0):
            expected = [row.max() >= threshold and int(row.argmax()) != reject for row in p]
            np.testing.assert_array_equal(answers.sure(p, threshold, reject), expected)
    exactly = np.array([[0.5, 0.5, 0.0], [0.2, 0.5, 0.3]], np.float32)
    np.testing.assert_array_equal(answers.sure(exactly, 0.5), [True, True])  # at the threshold counts
    np.testing.assert_array_equal(answers.sure(exactly, 0.5, reject_class=1), [True, False])
    np.testing.assert_array_equal(answers.sure(np.zeros((1, 11)), 0.5), [False])  # a blank image's row
    with pytest.raises(ValueError, match=r"expected probabilities of shape \(N, outputs\), got shape \(11,\)"):
        answers.sure(p[0])


def test_the_reader_reads_mnist_as_well_as_the_convnet_and_doubts_few(reader, mnist):
    _, (x_test, y_test) = mnist
    assert reader.reject_class == 10 and reader.output_width == 11
    p = reader.predict(x_test)
    assert (p.argmax(1) == y_test).mean() >= 0.99
    doubted = ~answers.sure(p, answers.DEFAULT_MIN_CONFIDENCE, reader.reject_class)
    assert doubted.mean() <= 0.01
    # classify reports the reject class as the index it is; predict's rows still sum to 1.
    assert set(np.unique(reader.classify(x_test))) <= set(range(11))
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)


def test_the_reader_is_not_sure_of_letters_scribbles_and_blank_paper(reader):
    others = not_digits(150, seed=23)
    p = read(reader, [image for _, image in others])
    kinds = np.array([kind for kind, _ in others])
    doubted = ~answers.sure(p, answers.DEFAULT_MIN_CONFIDENCE, reader.reject_class)
    rates = {kind: doubted[kinds == kind].mean() for kind in ("blank", "letter", "scribble")}
    assert rates["blank"] == 1 and rates["letter"] >= 0.9 and rates["scribble"] >= 0.7, rates
    # The bundled convnet, without a reject class, is sure of most letters: what the reader adds.
    convnet = mnist_engine.load("convnet")
    letters = read(convnet, [image for kind, image in others if kind == "letter"])
    assert answers.sure(letters).mean() >= 0.5


def test_the_reader_is_not_sure_of_dots_and_filled_shapes(reader):
    """preprocess_image fits any ink into MNIST's 20-pixel box, so a dot arrives as a filled disc,
    which MNIST models read as a confident 0 (the convnet: 100%). The reader trained on filled
    ellipses, rectangles and polygons (tools/reader_data.py); these are dots of 2-40 px radius,
    squares and a triangle, drawn here, either polarity."""
    from PIL import Image, ImageDraw

    shapes = []
    for dark in (True, False):
        for radius in (2, 4, 8, 15, 25, 40):
            for kind in ("dot", "square", "triangle"):
                image = Image.new("L", (200, 200), 255 if dark else 0)
                box = [100 - radius, 100 - radius, 100 + radius, 100 + radius]
                ink = 0 if dark else 255
                if kind == "dot":
                    ImageDraw.Draw(image).ellipse(box, fill=ink)
                elif kind == "square":
                    ImageDraw.Draw(image).rectangle(box, fill=ink)
                else:
                    ImageDraw.Draw(image).polygon([(100, 100 - radius), (100 + radius, 100 + radius),
                                                   (100 - radius, 100 + radius)], fill=ink)
                shapes.append(np.asarray(image))
    p = read(reader, shapes)
    doubted = ~answers.sure(p, answers.DEFAULT_MIN_CONFIDENCE, reader.reject_class)
    assert doubted.mean() >= 0.9, f"sure of {int((~doubted).sum())} of {len(shapes)}: {p.argmax(1)}"
    assert answers.sure(read(mnist_engine.load("convnet"), shapes)).mean() >= 0.5  # what the reader adds


def test_the_reader_answers_photographed_digits_and_other_writers_scans(reader, mnist):
    from sklearn.datasets import load_digits

    _, (x_test, y_test) = mnist
    picks = np.linspace(0, len(x_test) - 1, 100).astype(int)
    photos = read(reader, photographed(x_test[picks], seed=3))
    digits = load_digits()
    scans = read(reader, scan(digits.images, 32, dark_on_light=True))
    assert (photos.argmax(1) == y_test[picks]).mean() >= 0.97
    assert (scans.argmax(1) == digits.target).mean() >= 0.92
    doubted = ~answers.sure(np.concatenate([photos, scans]), answers.DEFAULT_MIN_CONFIDENCE, reader.reject_class)
    assert doubted.mean() <= 0.01, f"doubts {doubted.sum()} of {len(doubted)} real digits"


def test_the_bundled_reader_is_its_keras_source_on_the_10k(keras, mnist, reader):
    """models/mnist_reader.keras (tools/train.py --arch reader) and the packaged file agree on the
    whole MNIST test set, its "not a digit" output included."""
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "models" / "mnist_reader.keras"
    model = keras.saving.load_model(path, compile=False, safe_mode=True)
    _, (x_test, _) = mnist
    want = model.predict(x_test.reshape(-1, 28, 28, 1).astype(np.float32) / np.float32(255), batch_size=2000,
                         verbose=0)
    assert want.shape == (10000, 11)
    np.testing.assert_allclose(reader.predict(x_test), want, atol=1e-5)
