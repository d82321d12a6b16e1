"""The annotated video plays in headless Chromium (Debian's chromium + chromium-driver), with its sound.

A page with a <video> element opens the annotated Hamilton clip from disk: it must load (readyState >= 2),
raise no error and play (currentTime advances), with audio decoded. The MPEG-4 Part 2 file OpenCV's `mp4v`
writer makes (what `--annotate OUT.mp4` wrote before) is refused by the same page: the check can fail.
Screenshots go to the ignored artifacts/.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from test_video_outputs import CLIP, FALSE_BOX, LIN_BOX, tracked

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
)

PAGE = """<!doctype html><html><body style="margin:0;background:#222">
<video id="v" src="{src}" muted autoplay playsinline style="width:640px;height:360px"></video>
</body></html>"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=700,520", "--autoplay-policy=no-user-gesture-required",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def play(driver, video: Path, seconds: float = 20) -> dict:
    """Open a page with `video` in a <video> element; wait until it plays past 1.5 s or fails."""
    page = video.with_suffix(".html")
    page.write_text(PAGE.format(src=video.name))
    driver.get(page.as_uri())
    state = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        state = driver.execute_script(
            "const v = document.getElementById('v'); return {ready: v.readyState, time: v.currentTime,"
            " error: v.error && (v.error.code + ' ' + v.error.message), audio: v.webkitAudioDecodedByteCount,"
            " width: v.videoWidth, duration: v.duration};")
        if state["error"] or state["time"] > 1.5:
            break
        time.sleep(0.2)
    return state


def shot(driver, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / name))


def test_annotated_clip_plays_in_chromium_with_its_sound(browser, data, tmp_path):
    from recognizer.video.render import write_annotated_video

    clip = data / CLIP
    out = tmp_path / "annotated.mp4"
    write_annotated_video(clip, tracked(clip, [("Lin-Manuel Miranda", LIN_BOX, 0, 274), (None, FALSE_BOX, 0, 274)]), out)
    first = play(browser, out)
    assert first["error"] is None and first["ready"] >= 2 and first["width"] == 640, first
    assert first["time"] > 1.5, first  # it plays
    assert abs(first["duration"] - 10.0) < 0.1, first  # the clip's 10 s (its sound runs a little past the last frame)
    assert first["audio"] > 0, first  # the sound is there and decodes
    shot(browser, "video-plays-in-chromium.png")


def test_the_old_mpeg4_part2_output_is_refused_by_the_same_page(browser, data, tmp_path):
    """What `mp4v` (MPEG-4 Part 2) gives, for contrast: Chromium reports an error and never plays it."""
    import cv2

    clip = data / CLIP
    old = tmp_path / "mp4v.mp4"
    cap = cv2.VideoCapture(str(clip))
    writer = cv2.VideoWriter(str(old), cv2.VideoWriter_fourcc(*"mp4v"), 29.97, (640, 360))
    for _ in range(60):
        ok, frame = cap.read()
        assert ok
        writer.write(frame)
    writer.release()
    cap.release()
    state = play(browser, old, seconds=10)
    assert state["error"] is not None and state["time"] == 0, state
    shot(browser, "video-mp4v-refused.png")
