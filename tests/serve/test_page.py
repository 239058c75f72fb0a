"""The page at `/` in headless Chromium (Debian's chromium and chromedriver, through selenium):
a tree-strategy run streams the same text as the API, shows its statistics and draws the
draft tree with the accepted path highlighted; a screenshot of the result is checked.

.ci/run installs the browser and sets SEQLAB_REQUIRE_BROWSER=1, so that CI fails rather
than skips when it is missing.
"""

from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import pytest
import torch

webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from seqlab.decoding import generate  # noqa: E402
from seqlab.models.lm import build_lm  # noqa: E402
from seqlab.serve import Server, ServerConfig  # noqa: E402
from tests.serve.test_server import NAME, Running, chat_tokenizer, printable  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    if os.environ.get("SEQLAB_REQUIRE_BROWSER"):
        raise RuntimeError("SEQLAB_REQUIRE_BROWSER is set but chromium/chromedriver are missing: "
                           "apt-get install chromium chromium-driver")
    pytest.skip("needs Debian's chromium and chromium-driver", allow_module_level=True)


@pytest.fixture(scope="module")
def setup():
    tok = chat_tokenizer()
    torch.manual_seed(0)
    model = printable(build_lm(vocab_size=tok.vocab_size, dim=32, layers="attention*2",
                               mixer_options={"attention": {"heads": 2}})).eval()
    # the target drafts for itself, so every full round accepts its whole chain
    running = Running(Server(model, tok, ServerConfig(NAME, "sample"), draft=model))
    yield running, model, tok
    running.stop()


@pytest.fixture(scope="module")
def browser():
    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1200,1400"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield driver
    driver.quit()


def test_page_streams_a_tree_run_and_draws_the_accepted_path(setup, browser):
    from PIL import Image

    running, model, tok = setup
    browser.get(running.url + "/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.find_element(By.ID, "model").text == NAME)
    names = [o.get_attribute("value") for o in
             Select(browser.find_element(By.ID, "strategy")).options]
    assert {"greedy", "tree", "beam", "prompt-lookup"} <= set(names)
    prompt = "def area(r):\n"
    box = browser.find_element(By.ID, "prompt")
    box.clear()
    box.send_keys(prompt)
    Select(browser.find_element(By.ID, "strategy")).select_by_value("tree")
    opts = browser.find_element(By.ID, "options")
    opts.clear()
    opts.send_keys('{"branching": [2, 2, 1]}')
    n = browser.find_element(By.ID, "max-tokens")
    n.clear()
    n.send_keys("24")
    browser.find_element(By.ID, "run").click()
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done")
    assert browser.find_element(By.ID, "error").text == ""

    want = tok.decode_bytes(generate(model, [tok.encode(prompt)], "greedy", 24,
                                     eos_id=tok.eos_id).tokens[0]).decode()
    want = want.removesuffix("<|im_end|>")
    shown = browser.execute_script("return document.getElementById('output').textContent")
    assert shown == prompt + want
    stats = browser.find_element(By.ID, "stats").text
    assert "strategy tree" in stats and "mean accepted" in stats
    # round 1: the root, 2 + 4 + 4 drafted nodes, the chain of 3 accepted
    accepted = browser.find_elements(By.CSS_SELECTOR, "#tree .node.accepted")
    nodes = browser.find_elements(By.CSS_SELECTOR, "#tree .node")
    assert len(accepted) == 3 and len(nodes) == 1 + 2 + 4 + 4
    first_round = [browser.execute_script("return arguments[0].textContent", e) for e in accepted]
    assert first_round == [json.dumps(c)[1:-1] for c in want[1:4]]

    # the screenshot shows the highlighted path: green pixels inside the tree's box
    png = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
    tree = browser.find_element(By.ID, "tree")
    scale = png.width / browser.execute_script("return window.innerWidth")
    left, top = tree.location["x"] * scale, tree.location["y"] * scale
    crop = png.crop((int(left), int(top), int(left + tree.size["width"] * scale),
                     int(top + tree.size["height"] * scale)))
    pixels = np.asarray(crop)
    green = int((pixels == np.array([0x2e, 0x9e, 0x44], dtype=np.uint8)).all(-1).sum())
    if os.environ.get("SEQLAB_SCREENSHOT"):
        png.save(os.environ["SEQLAB_SCREENSHOT"])
    assert green > 100, "the accepted path is not highlighted in the rendered page"
    out_box = browser.find_element(By.ID, "output")
    assert out_box.size["height"] > 40
