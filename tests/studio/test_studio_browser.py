"""The studio in a real browser: headless Chromium creates a project, imports ESC-10 clips from ../shared through
the page (the file input a drop feeds, and a folder on disk), labels them with the keyboard and the mouse, and
labels.csv holds the labels; then rename and delete, bad input, and phone widths. Every page is screenshotted to
out/screenshots/studio-*.png."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.studio.conftest import labels_csv, make_studio_app
from tests.web.browser import ServedApp, chromium_driver, require_chromium, screenshot_dir
from tests.web.browser import wait_for
from tests.web.test_browser import severe_console_errors

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PHONE = (390, 844)
LAPTOP = (1400, 1000)


@pytest.fixture
def studio_site(tmp_path):
    """The studio (no device log) under waitress, and a Chromium."""
    require_chromium()
    root = tmp_path / "projects"
    app = make_studio_app(root)
    driver = chromium_driver(*LAPTOP)
    try:
        with ServedApp(app) as served:
            yield served.url, driver, root
    finally:
        driver.quit()


def shot(driver, name: str) -> None:
    driver.save_screenshot(str(screenshot_dir() / f"studio-{name}.png"))


def js_errors(driver) -> list[str]:
    """Console errors other than the refused requests a bad-input step provokes on purpose."""
    return [m for m in severe_console_errors(driver) if "Failed to load resource" not in m]


def no_sideways_scroll(driver) -> bool:
    return driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")


def text_of(driver, css: str) -> str:
    """The text of the element (or '' while the page it was on is being replaced)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return driver.find_element(By.CSS_SELECTOR, css).text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def unlabelled_inputs(driver) -> list[str]:
    """Inputs without a <label> or aria-label (every one needs a name a screen reader can say)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea, button'))"
        ".filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())"
        ".map(e => e.outerHTML)")


def import_rows(driver) -> list[list[str]]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#import-results tbody tr'))"
        ".map(tr => [tr.children[0].textContent, tr.className, tr.children[1].textContent])")


def test_create_import_label_in_the_browser(studio_site, esc10, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, driver, root = studio_site
    dogs = sorted((esc10 / "dog").iterdir())[:3]
    rain = sorted((esc10 / "rain").iterdir())[:3]
    fire = sorted((esc10 / "crackling_fire").iterdir())[:3]
    on_disk = tmp_path / "recordings"
    on_disk.mkdir()
    for f in fire:
        shutil.copyfile(f, on_disk / f.name)
    shutil.copyfile(fire[0], on_disk / "zz-copy.wav")  # the same audio again: flagged, imported

    # 1. projects: create one (the form posts, the page goes on to its import page)
    driver.get(url + "/studio/")
    shot(driver, "projects-empty")
    driver.find_element(By.ID, "new-name").send_keys("esc demo", Keys.ENTER)
    wait_for(lambda: driver.current_url.endswith("/studio/p/esc%20demo/import"), what="import page")
    project = root / "esc demo"
    assert labels_csv(project) == {}

    # 2. import: files through the file input (what a drop feeds), a non-audio file among them
    driver.find_element(By.ID, "pick-files").send_keys("\n".join(str(p) for p in [*dogs, *rain, esc10 / "README.md"]))
    wait_for(lambda: len(import_rows(driver)) == 7 and all(r[1] != "pending" for r in import_rows(driver))
             and "not imported" in text_of(driver, "#import-status"), timeout=60, what="uploads")
    rows = import_rows(driver)
    assert [r[1] for r in rows] == ["imported"] * 6 + ["problem"]
    assert rows[6][0] == "README.md" and "not_audio" in rows[6][2]
    # ... and a folder on disk, typed into the path field
    driver.find_element(By.ID, "folder-path").send_keys(str(on_disk), Keys.ENTER)
    wait_for(lambda: len(import_rows(driver)) == 11, timeout=60, what="folder import")
    rows = import_rows(driver)[7:]
    assert [r[1] for r in rows] == ["imported"] * 3 + ["duplicate"]
    assert rows[3][0] == "zz-copy.wav" and f"duplicate of {fire[0].name}" in rows[3][2]
    # ... and a drop onto the drop zone (a DataTransfer built in the page from a clip the server already has)
    driver.execute_script("""
      const [url, name] = arguments;
      fetch(url).then((r) => r.blob()).then((blob) => {
        const dt = new DataTransfer();
        dt.items.add(new File([blob], name, { type: "audio/wav" }));
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
      });""", f"{url}/studio/p/esc%20demo/audio/{dogs[0].name}", "dropped.wav")
    wait_for(lambda: len(import_rows(driver)) == 12 and import_rows(driver)[11][1] != "pending", what="drop")
    assert import_rows(driver)[11] == ["dropped.wav", "duplicate", f"imported as dropped.wav — duplicate of {dogs[0].name}"]
    wait_for(lambda: "11 imported, 2 duplicate(s), 1 not imported" in text_of(driver, "#import-status"),
             what="summary")
    shot(driver, "import")
    files = [f.name for f in [*dogs, *rain, *fire]] + ["zz-copy.wav", "dropped.wav"]
    assert labels_csv(project) == {name: "" for name in files}

    # 3. label by listening
    driver.find_element(By.ID, "to-label").click()
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "li.clip"), what="label page")
    clips = driver.find_elements(By.CSS_SELECTOR, "li.clip")
    assert [c.get_attribute("data-file") for c in clips] == files
    wait_for(lambda: driver.execute_script(
        "return Array.from(document.querySelectorAll('img.spec')).every(i => i.complete && i.naturalWidth > 0)"),
        timeout=60, what="spectrogram thumbnails")
    shot(driver, "label-new")

    def label_of(i: int) -> str:
        return clips[i].get_attribute("data-label")

    def wait_label(i: int, label: str) -> None:  # shown at once, then saved: wait for both
        wait_for(lambda: label_of(i) == label and driver.execute_script(
            "return document.getElementById('labeller').dataset.saved === 'yes'"), what=f"clip {i} labelled {label!r}")

    keys = ActionChains(driver)
    clips[0].click()
    assert "selected" in clips[0].get_attribute("class")
    new = driver.find_element(By.ID, "new-label-name")
    new.send_keys("dog", Keys.ENTER)  # a new label for the selected clip; the selection moves on
    wait_label(0, "dog")
    keys.send_keys("1").send_keys("1").perform()  # 1 = dog, twice in a row: each moves on at once
    wait_label(1, "dog")
    wait_label(2, "dog")
    new.send_keys("rain", Keys.ENTER)
    wait_label(3, "rain")
    keys.send_keys("2").perform()
    wait_label(4, "rain")
    # space plays the current clip (5), space again pauses it
    keys.send_keys(Keys.SPACE).perform()
    wait_for(lambda: driver.execute_script("const p = document.getElementById('player');"
                                           "return !p.paused && p.currentTime > 0"), what="playing")
    assert driver.execute_script("return document.getElementById('player').dataset.file") == files[5]
    keys.send_keys(Keys.SPACE).perform()
    wait_for(lambda: driver.execute_script("return document.getElementById('player').paused"), what="paused")
    keys.send_keys("2").perform()
    wait_label(5, "rain")
    ActionChains(driver).double_click(clips[7]).perform()  # a double click plays a clip
    wait_for(lambda: driver.execute_script("const p = document.getElementById('player');"
                                           "return !p.paused && p.dataset.file === arguments[0]", files[7]),
             what="double click plays")
    keys.send_keys(Keys.SPACE).perform()
    clips[6].click()
    # arrows move: up to 5, down to 6; shift+click selects 6..8, a new label labels all three
    keys.send_keys(Keys.ARROW_UP).perform()
    assert "current" in clips[5].get_attribute("class")
    keys.send_keys(Keys.ARROW_DOWN).perform()
    ActionChains(driver).key_down(Keys.SHIFT).click(clips[8]).key_up(Keys.SHIFT).perform()
    assert [i for i, c in enumerate(clips) if "selected" in c.get_attribute("class")] == [6, 7, 8]
    new.send_keys("fire", Keys.ENTER)
    for i in (6, 7, 8):
        wait_label(i, "fire")
    # ctrl+click adds to the selection: 0 and 3 to background with the b key, then back with buttons
    clips[0].click()
    ActionChains(driver).key_down(Keys.CONTROL).click(clips[3]).key_up(Keys.CONTROL).perform()
    keys.send_keys("b").perform()
    wait_label(0, "background")
    wait_label(3, "background")
    clips[3].click()
    driver.find_element(By.CSS_SELECTOR, '#label-buttons button[data-label="rain"]').click()
    wait_label(3, "rain")
    clips[0].click()
    driver.find_element(By.CSS_SELECTOR, '#label-buttons button[data-label="dog"]').click()
    wait_label(0, "dog")
    # the copy of fire[0] becomes background with the b key; back up to it, 0 unlabels
    clips[9].click()
    keys.send_keys("b").perform()
    wait_label(9, "background")
    assert "current" in clips[10].get_attribute("class")  # moved on to the next clip
    keys.send_keys(Keys.ARROW_UP).send_keys("0").perform()
    wait_label(9, "")
    expected = {**{f.name: "dog" for f in dogs}, **{f.name: "rain" for f in rain}, **{f.name: "fire" for f in fire},
                "zz-copy.wav": "", "dropped.wav": ""}
    assert labels_csv(project) == expected
    counts = driver.execute_script(
        "return Array.from(document.querySelectorAll('#counts tr')).map(tr => [tr.cells[0].textContent, tr.cells[1].textContent])")
    assert counts == [["dog", "3"], ["fire", "3"], ["rain", "3"], ["unlabelled", "2"]]
    assert "few clips" in driver.find_element(By.ID, "warnings").text  # train's warning: fewer than 5 per label
    shot(driver, "label")

    # 4. the unlabelled filter, after a reload: labels came from labels.csv
    driver.find_element(By.ID, "show-unlabelled").click()
    wait_for(lambda: "show=unlabelled" in driver.current_url, what="filter")
    assert [c.get_attribute("data-file") for c in driver.find_elements(By.CSS_SELECTOR, "li.clip")] == ["zz-copy.wav",
                                                                                              "dropped.wav"]
    assert [b.text for b in driver.find_elements(By.CSS_SELECTOR, "#label-buttons button")][:3] == ["1 dog", "2 fire", "3 rain"]
    shot(driver, "label-unlabelled")
    # select all shown (the two unlabelled clips), b: both background
    driver.find_element(By.ID, "select-all").click()
    shown = driver.find_elements(By.CSS_SELECTOR, "li.clip")
    assert all(c.get_attribute("aria-selected") == "true" for c in shown)
    ActionChains(driver).send_keys("b").perform()
    wait_for(lambda: all(c.get_attribute("data-label") == "background" for c in shown) and driver.execute_script(
        "return document.getElementById('labeller').dataset.saved === 'yes'"), what="both background")
    expected.update({"zz-copy.wav": "background", "dropped.wav": "background"})
    assert labels_csv(project) == expected
    assert js_errors(driver) == []

    # 5. phone width: every page fits without sideways scrolling
    driver.set_window_size(*PHONE)
    try:
        for page, name in ((f"/studio/p/esc%20demo/label", "label-phone"), ("/studio/p/esc%20demo/import", "import-phone"),
                           ("/studio/", "projects-phone")):
            driver.get(url + page)
            assert no_sideways_scroll(driver), page
            assert unlabelled_inputs(driver) == [], page
            shot(driver, name)
    finally:
        driver.set_window_size(*LAPTOP)

    # 6. rename, then delete with the typed confirmation (the button stays disabled until the name is typed)
    driver.get(url + "/studio/")
    rename = driver.find_element(By.ID, "rename-1")
    rename.clear()
    rename.send_keys("esc10 demo", Keys.ENTER)
    wait_for(lambda: "renamed" in text_of(driver, "ul.flash"), what="renamed")
    assert sorted(p.name for p in root.iterdir()) == ["esc10 demo"]
    assert labels_csv(root / "esc10 demo") == expected
    driver.find_element(By.CSS_SELECTOR, "tr.project details summary").click()
    confirm = driver.find_element(By.ID, "confirm-1")
    button = driver.find_element(By.CSS_SELECTOR, ".delete-form button")
    confirm.send_keys("esc10 dem")
    assert not button.is_enabled()
    shot(driver, "projects")
    confirm.send_keys("o")
    assert button.is_enabled()
    button.click()
    wait_for(lambda: "deleted" in text_of(driver, "ul.flash"), what="deleted")
    assert list(root.iterdir()) == []
    assert js_errors(driver) == []


def test_bad_input_and_a_folder_labelled_by_its_sub_folders(studio_site, esc10, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, driver, root = studio_site
    driver.get(url + "/studio/")
    driver.find_element(By.ID, "new-name").send_keys("../evil", Keys.ENTER)
    wait_for(lambda: "not a usable project name" in text_of(driver, "ul.flash"),
             what="name refused")
    assert not root.exists() or list(root.iterdir()) == []
    driver.find_element(By.ID, "new-name").send_keys("bad", Keys.ENTER)
    wait_for(lambda: driver.current_url.endswith("/import"), what="import page")

    # a 2 GB file (sparse: no disk used), a non-audio file with an audio suffix, a ../ folder path
    huge = tmp_path / "huge.wav"
    with open(huge, "wb") as f:
        f.truncate(2 * 1024**3)
    fake = tmp_path / "notes.wav"
    fake.write_bytes((esc10 / "README.md").read_bytes())
    driver.find_element(By.ID, "pick-files").send_keys(f"{huge}\n{fake}")
    wait_for(lambda: len(import_rows(driver)) == 2 and all(r[1] == "problem" for r in import_rows(driver)),
             timeout=30, what="both refused")
    rows = import_rows(driver)
    assert "too big (2048 MB, the limit is 512 MB)" in rows[0][2] and "folder on disk" in rows[0][2]
    assert "not_audio" in rows[1][2]
    driver.find_element(By.ID, "folder-path").send_keys("../" + os.path.basename(str(tmp_path)), Keys.ENTER)
    wait_for(lambda: "not an absolute path" in text_of(driver, "#import-status"), what="path refused")
    shot(driver, "import-bad-input")
    assert labels_csv(root / "bad") == {} and list((root / "bad" / "audio").iterdir()) == []

    # a folder picked in the browser (webkitdirectory), labelled by its sub-folders
    picked = tmp_path / "sorted"
    for label in ("dog", "rain"):
        (picked / label).mkdir(parents=True)
        for f in sorted((esc10 / label).iterdir())[:2]:
            shutil.copyfile(f, picked / label / f.name)
    driver.find_element(By.ID, "by-folder").click()
    driver.find_element(By.ID, "pick-folder").send_keys(str(picked))
    wait_for(lambda: len(import_rows(driver)) == 6 and "labelled" in import_rows(driver)[-1][2], timeout=30,
             what="folder picked")
    assert sorted(r[0] for r in import_rows(driver)[2:]) == [f"sorted/{lab}/{f.name}" for lab in ("dog", "rain")
                                                            for f in sorted((esc10 / lab).iterdir())[:2]]
    assert sorted(labels_csv(root / "bad").values()) == ["dog", "dog", "rain", "rain"]
    shot(driver, "import-by-folder")
    assert js_errors(driver) == []
