"""End to end in a real headless Chromium: the page of `kikimimi serve` loads, a typed query shows ranked
results, a player starts at the segment, a dropped file gets similar sounds and tags, the form is labelled
and keyboard-reachable, and a narrow window needs no horizontal scrolling. The page screenshot is saved under
pytest's tmp folder and copied to ``$KIKIMIMI_TEST_ARTEFACTS`` when that is set.

Skipped, with the reason, only when no browser or driver is installed (scripts/install_system_deps.sh
installs Debian's ``chromium`` and ``chromium-driver``).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from clap_fakes import FrequencyCLAP
from conftest import sine

from kikimimi.inference.search import update_index

CHROMIUM = os.environ.get("KIKIMIMI_CHROMIUM", "/usr/bin/chromium")
DRIVER = os.environ.get("KIKIMIMI_CHROMEDRIVER", "/usr/bin/chromedriver")
SR = 16000

pytest.importorskip("fastapi", reason='kikimimi serve needs pip install "kikimimi[serve]"')
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (extra dev)")
if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
    pytest.skip(f"no browser: {CHROMIUM} or {DRIVER} is missing (apt-get install chromium chromium-driver)",
                allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    from kikimimi.apps.serve.app import create_app
    from kikimimi.apps.serve.server import server_config

    root = tmp_path_factory.mktemp("browser") / "library"
    root.mkdir()
    for f in (220, 440, 880, 1760):
        sf.write(root / f"tone{f}.wav", sine(f, 1.0, SR), SR)
    sf.write(root / "long.wav", np.concatenate([sine(300, 6.0, SR), sine(2000, 6.0, SR)]), SR)
    index = root.parent / "index"
    update_index(FrequencyCLAP(), root, index, model_id="fake", window_s=4, hop_s=2)  # 5 windows of long.wav
    port = _free_port()
    srv = uvicorn.Server(server_config(create_app(FrequencyCLAP(), index), "127.0.0.1", port))  # serve's limits
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "the server did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required", "--mute-audio",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,1000"):
        opts.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    except Exception as exc:  # a browser that cannot start here is a skip, with what it said
        pytest.skip(f"headless chromium did not start: {str(exc).splitlines()[0]}")
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def _wait(driver, condition, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(condition)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; page status: "
                         f"{driver.execute_script('return document.body.innerText')[:500]}")


DROP = """
const [key, done] = [arguments[0], arguments[arguments.length - 1]];
fetch('/api/audio?key=' + encodeURIComponent(key)).then(r => r.blob()).then(blob => {
  const dt = new DataTransfer();
  dt.items.add(new File([blob], 'dropped.wav', {type: 'audio/wav'}));
  const zone = document.getElementById('drop');
  for (const type of ['dragenter', 'dragover', 'drop']) {
    zone.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
  }
  done(true);
}).catch(e => done(String(e)));
"""

PLAY = """
const done = arguments[arguments.length - 1];
const audio = document.querySelector('#results li.result audio');
audio.muted = true;
audio.play().then(() => setTimeout(() => done({paused: audio.paused, time: audio.currentTime,
                                                start: parseFloat(audio.dataset.start)}), 700))
  .catch(e => done({error: String(e)}));
"""


def test_page_search_play_drop_accessibility_and_narrow_window(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(server + "/")
    _wait(browser, "return document.getElementById('status').dataset.files === '5'", what="index status")
    # every form control is labelled; the drop zone is reachable with the keyboard
    unlabelled = browser.execute_script("""return [...document.querySelectorAll('input, textarea, button')]
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
        .map(e => e.id)""")
    assert unlabelled == []
    assert browser.find_element(By.ID, "drop").get_attribute("tabindex") == "0"
    labels = _wait(browser, "return document.getElementById('labels').value", what="the default labels")
    assert "a dog barking" in labels

    box = browser.find_element(By.ID, "query")
    box.send_keys("a 440 Hz tone", Keys.ENTER)
    # one row per file (5 files; long.wav's windows grouped under its best one)
    _wait(browser, "return document.querySelectorAll('#results li.result').length === 5", what="results")
    names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#results li.result .name")]
    assert names[0] == "tone440.wav" and len(set(names)) == 5
    scores = [float(e.text.split()[1]) for e in browser.find_elements(By.CSS_SELECTOR, "#results .meta")]
    assert scores == sorted(scores, reverse=True)
    _wait(browser, "return [...document.querySelectorAll('#results img')].slice(0, 3).every(i => i.complete && "
                   "i.naturalWidth === 160)", what="spectrogram pictures")

    box.clear()
    box.send_keys("2000 Hz", Keys.ENTER)
    _wait(browser, "const n = document.querySelector('#results li.result .meta');"
                   "return n && /0:0[68]\\.0–0:1[02]\\.0/.test(n.textContent);",
          what="a 2000 Hz window (from 6 s) first")
    played = browser.execute_async_script(PLAY)
    assert "error" not in played, played
    assert played["start"] in (6.0, 8.0) and not played["paused"] and played["time"] >= played["start"], played
    # the describe panel of the first result (long.wav): a timeline and a paragraph, fetched when opened
    describe = browser.find_element(By.CSS_SELECTOR, "#results li.result .describe > button")
    describe.click()
    said = _wait(browser, "const p = document.querySelector('#results li.result .describe-panel .paragraph');"
                          "return p && p.textContent", what="the description of the first result")
    assert "'long.wav' lasts" in said and describe.get_attribute("aria-expanded") == "true"
    assert browser.find_elements(By.CSS_SELECTOR, "#results li.result .timeline li button.span")

    assert browser.execute_async_script(DROP, "tone880.wav") is True
    _wait(browser, "return document.querySelectorAll('#tags li').length > 0 && "
                   "document.querySelectorAll('#similar li.result').length > 0", what="tags and similar sounds")
    assert browser.find_element(By.CSS_SELECTOR, "#similar li.result .name").text == "tone880.wav"
    assert browser.find_element(By.ID, "example-name").text == "dropped.wav"

    shot = tmp_path / "serve-page.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    browser.set_window_size(380, 900)
    time.sleep(0.3)
    overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    browser.save_screenshot(str(tmp_path / "serve-page-narrow.png"))
    artefacts = os.environ.get("KIKIMIMI_TEST_ARTEFACTS")
    if artefacts:
        Path(artefacts).mkdir(parents=True, exist_ok=True)
        for name in ("serve-page.png", "serve-page-narrow.png"):
            shutil.copy(tmp_path / name, Path(artefacts) / name)
    assert overflow <= 1, f"a 380-px window scrolls sideways by {overflow} px"
