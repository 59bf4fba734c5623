"""The draw-a-digit page in a real browser: Debian's chromium, headless, driven by Selenium through
chromium-driver. The test draws a digit's strokes with the mouse, reads the prediction off the
page, checks that the 28x28 pixels the page sent are what preprocess_image makes of the same
drawing, switches the model picker and checks the other model's answer, and keeps a screenshot
(test-artifacts/serve_page.png). Skipped, with the reason, where
no chromium is installed (.ci/run installs it with apt-get where it can)."""
from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import numpy as np
import pytest

import mnist_engine
from conftest import require
from mnist_engine import answers
from serving import server_process

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

# Strokes on the 280x280 pad, as offsets from its centre: (x, y) points of each pen-down stroke.
STROKES = {
    7: [[(-70, -90), (75, -90), (10, 100)]],
    1: [[(-25, -70), (5, -100), (5, 100)]],
    4: [[(-40, -100), (-70, 20), (60, 20)], [(30, -60), (30, 100)]],
}


def _browser_paths():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver") or (Path("/usr/bin/chromedriver") if Path("/usr/bin/chromedriver").exists()
                                              else None)
    return chromium, driver


@pytest.fixture(scope="module")
def browser():
    require("selenium")
    chromium, driver = _browser_paths()
    if not chromium or not driver:
        pytest.skip("no chromium and chromium-driver here (Debian: apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=900,700",
                 "--force-device-scale-factor=1"):
        options.add_argument(flag)
    session = webdriver.Chrome(service=Service(str(driver)), options=options)
    yield session
    session.quit()


def draw(browser, pad, strokes):
    from selenium.webdriver.common.action_chains import ActionChains

    for stroke in strokes:
        actions = ActionChains(browser, duration=0)
        x0, y0 = stroke[0]
        actions.move_to_element_with_offset(pad, x0, y0).click_and_hold()
        for (xa, ya), (xb, yb) in zip(stroke, stroke[1:]):
            for t in np.linspace(0, 1, 12)[1:]:  # small steps, as a hand moves
                actions.move_to_element_with_offset(pad, int(xa + (xb - xa) * t), int(ya + (yb - ya) * t))
        actions.release().perform()


@pytest.mark.parametrize("digit", sorted(STROKES))
def test_drawing_a_digit_shows_its_prediction(browser, digit):
    require("PIL")
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with server_process() as (_, port):
        browser.get(f"http://127.0.0.1:{port}/")
        pad = browser.find_element(By.ID, "pad")
        draw(browser, pad, STROKES[digit])
        # The answer to the drawing's final state: the page asks again after each stroke.
        WebDriverWait(browser, 20).until(lambda b: b.execute_script("return window.lastProbabilities !== null "
                                                                    "&& !window.predictionPending()"))
        shown = browser.find_element(By.ID, "digit").text
        pixels = np.asarray(browser.execute_script("return window.lastPixels"), np.uint8).reshape(28, 28)
        probabilities = np.asarray(browser.execute_script("return window.lastProbabilities"), np.float32)
        bars = [browser.find_element(By.CSS_SELECTOR, f"#bar{d} .pct").text for d in range(10)]
        model = browser.execute_script("return window.pageModel()")
        browser_reject_bar_shown = browser.find_element(By.ID, "bar-reject").is_displayed()
        # Pick the other model: the page asks it about the same drawing.
        from selenium.webdriver.support.select import Select

        Select(browser.find_element(By.ID, "model")).select_by_value("mnist")
        WebDriverWait(browser, 20).until(lambda b: b.execute_script("return window.pageModel() === 'mnist' "
                                                                    "&& !window.predictionPending()"))
        mlp_probabilities = np.asarray(browser.execute_script("return window.lastProbabilities"), np.float32)
        assert browser.find_element(By.ID, "model-name").text == "mnist"
        assert not browser.find_element(By.ID, "bar-reject").is_displayed()  # the MLP has no such output
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / f"serve_page_{digit}.png"))
        drawing = browser.execute_script("return document.getElementById('pad').toDataURL('image/png')")

    assert shown == str(digit), f"the page shows {shown!r} for a drawn {digit}; bars {bars}"
    assert bars[digit] == f"{100 * probabilities[digit]:.1f}%"
    # The page's answer is its model's for the pixels it sent (the reader, which the server picks
    # for the page because it reads handwriting best and doubts what is not a digit) ...
    assert model == "reader" and browser_reject_bar_shown
    np.testing.assert_array_equal(probabilities, mnist_engine.load("reader").predict(pixels[None])[0])
    engine = mnist_engine.load(mnist_engine.default_model_path())
    # ... and the picker's other model, the MLP, answers the same pixels with its own probabilities.
    np.testing.assert_array_equal(mlp_probabilities, engine.predict(pixels[None])[0])
    # ... and those pixels are preprocess_image's for the same drawing, up to the resampling filter
    # (the browser's smoothing vs Lanczos), which can also move the centre of mass across a pixel
    # boundary: aligned within one pixel, the grey levels nearly agree.
    canvas = Image.open(io.BytesIO(base64.b64decode(drawing.split(",", 1)[1])))
    reference = mnist_engine.preprocess_image(canvas).astype(int)
    difference = min(np.abs(np.roll(pixels.astype(int), (dy, dx), axis=(0, 1)) - reference).mean()
                     for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    assert difference < 8, f"mean |page - preprocess_image| = {difference:.1f} of 255"
    assert engine.classify(reference[None].astype(np.uint8))[0] == digit


def page_answer(browser, port, model, strokes):
    """What the page at `port` shows for `strokes` read by `model`: (digit text, status text, probabilities)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"http://127.0.0.1:{port}/")
    Select(browser.find_element(By.ID, "model")).select_by_value(model)
    draw(browser, browser.find_element(By.ID, "pad"), strokes)
    WebDriverWait(browser, 20).until(lambda b: b.execute_script("return window.lastProbabilities !== null "
                                                                "&& !window.predictionPending()"))
    return (browser.find_element(By.ID, "digit").text, browser.find_element(By.ID, "status").text,
            np.asarray(browser.execute_script("return window.lastProbabilities"), np.float32))


SCRIBBLE = [[(-100, -100), (100, 60), (-90, 90), (80, -110), (0, 0), (110, 110)]]
LETTER_A = [[(-80, 100), (0, -100), (80, 100)], [(-45, 20), (45, 20)]]


@pytest.mark.parametrize("model", ["convnet", "reader"])
def test_the_page_says_not_sure_as_mnist_engine_answers_does(browser, model):
    """A scribble and a letter A: whatever the model makes of them, the page shows "?" exactly when
    mnist_engine.answers.sure says so (the likeliest output below 0.4, or the reader's "not a
    digit"), as mnist-engine predict does, and says why. The reader doubts both."""
    reject = mnist_engine.load(model).reject_class
    with server_process() as (_, port):
        for strokes in (SCRIBBLE, LETTER_A):
            shown, status, p = page_answer(browser, port, model, strokes)
            best = int(p.argmax())
            if not answers.sure(p[None], answers.DEFAULT_MIN_CONFIDENCE, reject)[0]:
                assert shown == "?"
                assert status == (f"not sure: this looks like no digit ({100 * p[best]:.1f}%)" if best == reject
                                  else f"not sure: {best} at {100 * p[best]:.1f}% is the likeliest")
            else:
                assert shown == str(best) and status == f"{100 * p[best]:.1f}% sure"
            if model == "reader":
                assert best == reject and shown == "?", p
