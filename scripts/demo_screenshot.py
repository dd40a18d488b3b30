"""Take the demo page's screenshot for the docs: a model folder served by uvicorn on loopback (the
endpoint's app, without Ray), the page driven in headless Chromium.

    python scripts/demo_screenshot.py --model runs/demo/best --output docs/images/demo.png
"""

from __future__ import annotations

import argparse
import socket
import threading
import time

import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from mtl.inference.predictor import Predictor
from mtl.serving.api import create_api
from mtl.serving.routing import PredictorBackend, model_info, single_model
from mtl.serving.schema import ServiceSettings

SENTENCES = ["Sam Taylor will never fly Hooli to Lima again, it was broken.",
             "What a friendly evening in Cape Town with Olga Petrova!"]


def serve(model: str) -> tuple[uvicorn.Server, str]:
    app = create_api(single_model(PredictorBackend(Predictor.from_folder(model)), model_info(model)),
                     ServiceSettings(model=model))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}/"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/demo/best")
    parser.add_argument("--output", default="docs/images/demo.png")
    args = parser.parse_args()
    server, url = serve(args.model)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1100,1700"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        browser.get(url)
        wait = WebDriverWait(browser, 30)
        wait.until(lambda driver: "version" in driver.find_element(By.ID, "model-info").text)
        box = browser.find_element(By.ID, "texts")
        box.clear()
        box.send_keys("\n".join(SENTENCES))
        browser.find_element(By.ID, "analyze").click()
        wait.until(lambda driver: driver.find_elements(By.CSS_SELECTOR, "#attention tbody tr"))
        browser.find_element(By.ID, "compare").click()
        wait.until(lambda driver: driver.find_element(By.ID, "similarity").text != "–")
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(args.output)
    finally:
        browser.quit()
        server.should_exit = True
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
