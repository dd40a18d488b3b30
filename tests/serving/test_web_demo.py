"""The demo page in a real headless Chromium (Debian's chromium and chromium-driver, which .ci/run
installs), driven by Selenium against the endpoint's app served by uvicorn on loopback.

The model is the tiny one with its heads set to answer the same thing for every word (B-PER) and
sentence (positive), so that the page has entities and labels to show; what the page shows is then
checked against what the API answers for the same text.
"""

import shutil
import threading
import time

import numpy as np
import pytest
import requests
from conftest import free_port
from safetensors.torch import load_file, save_file

from mtl.inference.model_folder import HEADS_FILE
from mtl.inference.predictor import Predictor
from mtl.serving.api import create_api
from mtl.serving.routing import PredictorBackend, model_info, single_model
from mtl.serving.schema import ServiceSettings

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs Debian's chromium and chromium-driver (apt-get install, as .ci/run does)")
MAX_CHARS = 200


@pytest.fixture(scope="module")
def decided_model(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("decided") / "model"
    shutil.copytree(tiny_model_dir, folder)
    heads = load_file(str(folder / HEADS_FILE))
    for task, favoured in (("ner", 5), ("sentiment", 1)):   # B-PER, positive
        heads[f"{task}.classifier.weight"].zero_()
        heads[f"{task}.classifier.bias"].zero_()
        heads[f"{task}.classifier.bias"][favoured] = 4.0
    save_file(heads, str(folder / HEADS_FILE))
    return folder


@pytest.fixture(scope="module")
def endpoint(decided_model):
    import uvicorn

    settings = ServiceSettings(model=str(decided_model), max_chars=MAX_CHARS)
    predictor = Predictor.from_folder(decided_model, device="cpu", max_chars=MAX_CHARS)
    app = create_api(single_model(PredictorBackend(predictor), model_info(str(decided_model))), settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,1600", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _wait(browser, condition, timeout=20):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # the page replaces what it redraws: an element found a moment ago may be gone; look again
    return WebDriverWait(browser, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def _analyze(browser, text):
    from selenium.webdriver.common.by import By

    box = browser.find_element(By.ID, "texts")
    box.clear()
    box.send_keys(text)
    browser.find_element(By.ID, "analyze").click()


def test_the_page_shows_the_entities_labels_tokens_and_attention_the_api_gives(endpoint, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    text = "Alice flew to Paris"
    browser.get(endpoint + "/")
    _wait(browser, lambda driver: "version" in driver.find_element(By.ID, "model-info").text)
    _analyze(browser, text)
    _wait(browser, lambda driver: driver.find_elements(By.CSS_SELECTOR, "#results .sentence mark.entity"))
    answer = requests.post(f"{endpoint}/v1/predict", json={"texts": [text]}, timeout=10).json()["results"][0]

    marks = browser.find_elements(By.CSS_SELECTOR, "#results .sentence mark.entity")
    shown = [(mark.get_attribute("textContent"), mark.get_attribute("data-label")) for mark in marks]
    assert shown == [(entity["text"] + entity["label"], entity["label"]) for entity in answer["entities"]["ner"]]
    assert [label for _, label in shown] == ["PER"] * 4
    card = browser.find_element(By.CSS_SELECTOR, "#results .label[data-task=sentiment]")
    assert card.get_attribute("data-label") == answer["labels"]["sentiment"]["label"] == "positive"
    bars = card.find_elements(By.CSS_SELECTOR, ".probability")
    assert [bar.get_attribute("data-label") for bar in bars] == ["positive", "negative"]
    assert float(bars[0].find_element(By.CSS_SELECTOR, ".value").text) == pytest.approx(
        answer["labels"]["sentiment"]["score"], abs=1e-3)

    # the token table and the heat map of the first sentence; another head redraws the map
    inspection = requests.post(f"{endpoint}/v1/inspect", json={"text": text, "head": 1}, timeout=10).json()
    _wait(browser, lambda driver: len(driver.find_elements(By.CSS_SELECTOR, "#tokens tr")) == len(
        inspection["tokens"]) + 1)
    tokens = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#tokens td.token")]
    assert tokens == inspection["tokens"]
    assert {cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#tokens td.tag")} == {"B-PER"}
    Select(browser.find_element(By.ID, "head")).select_by_value("1")
    first, second = inspection["tokens"][0], inspection["tokens"][1]
    expected_title = f"{first} → {second}: {inspection['attention'][0][1]:.3f}"
    _wait(browser, lambda driver: driver.find_element(
        By.CSS_SELECTOR, "#attention tbody tr:first-child td:nth-of-type(2)").get_attribute("title") == expected_title)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#attention tbody tr")) == len(inspection["tokens"])

    # the cosine similarity of the two sentences, as the embeddings give it
    browser.find_element(By.ID, "compare").click()
    _wait(browser, lambda driver: driver.find_element(By.ID, "similarity").text != "–")
    pair = [browser.find_element(By.ID, name).get_attribute("value") for name in ("first", "second")]
    vectors = np.array(requests.post(f"{endpoint}/v1/embed", json={"texts": pair}, timeout=10).json()["embeddings"])
    cosine = vectors[0] @ vectors[1] / np.linalg.norm(vectors[0]) / np.linalg.norm(vectors[1])
    assert float(browser.find_element(By.ID, "similarity").text) == pytest.approx(cosine, abs=1e-4)
    assert browser.get_screenshot_as_file(str(tmp_path / "demo.png"))
    assert (tmp_path / "demo.png").read_bytes()[:4] == b"\x89PNG"


def test_an_api_error_is_shown_as_a_message_not_a_blank_page(endpoint, browser):
    from selenium.webdriver.common.by import By

    browser.get(endpoint + "/")
    _wait(browser, lambda driver: "version" in driver.find_element(By.ID, "model-info").text)
    _analyze(browser, "x" * (MAX_CHARS + 1))
    error = _wait(browser, lambda driver: driver.find_element(By.ID, "error").is_displayed()
                  and driver.find_element(By.ID, "error"))
    assert error.text.startswith("HTTP 422: texts.0:") and str(MAX_CHARS) in error.text
    _analyze(browser, "Bob works at Hooli")   # the next good request clears the message
    _wait(browser, lambda driver: not driver.find_element(By.ID, "error").is_displayed())
