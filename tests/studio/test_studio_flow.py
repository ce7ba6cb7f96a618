"""Issue 14's whole flow in headless Chromium (item 10 and the closing note): create a project, import 4 ESC-10
classes x 25 clips from ../shared through the page, label them through the page, train (small time budget) with the
browser closed half way (a new browser finds the run), read the report values from the page and compare them with
report.json and with `fieldear train` on the same data and seed, move and save a threshold, test a clip online
(a file and the microphone), run a batch and compare its accuracy with `fieldear evaluate`, deploy (dry run).
Two trainings at once are refused. The wall time of each step goes to out/studio-flow-times.json (and is printed);
every page is screenshotted to out/screenshots/studio-*.png."""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest

from tests.studio.conftest import labels_csv, make_studio_app
from tests.studio.test_studio_browser import unlabelled_inputs
from tests.web.browser import OUT, ServedApp, chromium_driver, require_chromium, screenshot_dir
from tests.web.browser import wait_for
from tests.web.test_browser import severe_console_errors

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.train]

CLASSES = ("dog", "rooster", "rain", "crying_baby")
PER_CLASS = 25
SEED = 0
TIME_BUDGET_S = 30
FOLDS = 5
LAPTOP = (1400, 1000)
PHONE = (390, 844)
MIC = ("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream")


def shot(driver, name: str) -> None:
    driver.save_screenshot(str(screenshot_dir() / f"studio-{name}.png"))


def js_errors(driver) -> list[str]:
    return [m for m in severe_console_errors(driver) if "Failed to load resource" not in m]


def f3(x: float) -> str:
    return f"{x:.3f}"


def test_the_whole_flow_in_the_browser(esc10, tmp_path, tmp_path_factory):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    from runtime.cli.main import main
    from runtime.model.bundle import load_bundle

    require_chromium()
    files = {label: sorted((esc10 / label).glob("*.wav")) for label in CLASSES}
    training = {label: fs[:PER_CLASS] for label, fs in files.items()}
    held_out = tmp_path / "held-out"  # clips not trained on, in label folders, for the batch
    for label, fs in files.items():
        (held_out / label).mkdir(parents=True)
        for f in fs[PER_CLASS:PER_CLASS + 4]:
            shutil.copyfile(f, held_out / label / f.name)
    root = tmp_path / "projects"
    cache = tmp_path_factory.mktemp("flow-cache")
    app = make_studio_app(root)
    app.config["STUDIO_TRAIN_CACHE"] = cache
    times: dict[str, float] = {}
    t = time.monotonic()

    def step(name: str) -> None:
        nonlocal t
        now = time.monotonic()
        times[name] = round(now - t, 2)
        t = now

    with ServedApp(app) as served:
        url = served.url
        driver = chromium_driver(*LAPTOP, extra_args=MIC)
        try:
            # 1. create the project
            driver.get(url + "/studio/")
            driver.find_element(By.ID, "new-name").send_keys("esc4", Keys.ENTER)
            wait_for(lambda: driver.current_url.endswith("/studio/p/esc4/import"), what="import page")
            project = root / "esc4"
            step("create project")

            # 2. import 100 clips through the file input
            paths = [str(f) for label in CLASSES for f in training[label]]
            driver.find_element(By.ID, "pick-files").send_keys("\n".join(paths))
            wait_for(lambda: f"{len(paths)} imported" in driver.find_element(By.ID, "import-status").text,
                     timeout=300, what="100 uploads")
            shot(driver, "flow-import")
            step("import 100 clips")

            # 3. label: per class, click its first clip, shift+click its last, type the label
            driver.find_element(By.ID, "to-label").click()
            wait_for(lambda: len(driver.find_elements(By.CSS_SELECTOR, "li.clip")) == len(paths), what="label page")
            clips = driver.find_elements(By.CSS_SELECTOR, "li.clip")
            new = driver.find_element(By.ID, "new-label-name")
            for k, label in enumerate(CLASSES):
                first, last = clips[k * PER_CLASS], clips[(k + 1) * PER_CLASS - 1]
                first.click()
                ActionChains(driver).key_down(Keys.SHIFT).click(last).key_up(Keys.SHIFT).perform()
                new.send_keys(label, Keys.ENTER)
                wait_for(lambda: last.get_attribute("data-label") == label, what=f"{label} labelled")
            expected = {f.name: label for label in CLASSES for f in training[label]}
            wait_for(lambda: labels_csv(project) == expected, timeout=30, what="labels.csv holding the 100 labels")
            shot(driver, "flow-label")
            step("label 100 clips")

            # 4. train; a second start is refused; the browser is closed during the run
            driver.find_element(By.LINK_TEXT, "Train").click()
            budget = driver.find_element(By.ID, "time-budget")
            budget.clear()
            budget.send_keys(str(TIME_BUDGET_S))
            driver.find_element(By.ID, "train-start").click()
            wait_for(lambda: driver.find_element(By.ID, "run-status").text == "running", what="training started")
            second = driver.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "fetch(document.getElementById('trainer').dataset.start, {method: 'POST', credentials: 'same-origin',"
                " headers: {'Content-Type': 'application/json', 'X-CSRF-Token':"
                " document.querySelector('meta[name=csrf-token]').content}, body: '{}'})"
                ".then(r => r.json().then(j => done([r.status, j.error])))")
            assert second[0] == 400 and "already training v1" in second[1]
            wait_for(lambda: driver.find_element(By.ID, "p-fold").text != "–", timeout=240, what="a CV fold")
            progress = {k: driver.find_element(By.ID, k).text for k in ("p-stage", "p-candidate", "p-fold", "p-budget")}
            assert progress["p-stage"] == "cross-validation" and progress["p-candidate"].startswith("backbone")
            assert " of 5" in progress["p-fold"]
            assert re.fullmatch(rf"\d+ s left of {TIME_BUDGET_S:g} s|used up \(the first candidate always finishes\)",
                                progress["p-budget"]), progress["p-budget"]
            left = driver.find_element(By.ID, "p-left")  # train's estimate, or hidden once the run is slower
            assert not left.is_displayed() or re.fullmatch(r"about \d+ s \(train's estimate for backbone\)", left.text)
            shot(driver, "flow-train-progress")
            driver.quit()  # the browser goes away; the run goes on
        except BaseException:
            driver.quit()
            raise
        driver = chromium_driver(*LAPTOP, extra_args=MIC)
        try:
            driver.get(url + "/studio/p/esc4/train")
            wait_for(lambda: driver.find_element(By.ID, "run-status").text in ("running", "done"), what="run found")
            wait_for(lambda: driver.find_element(By.ID, "run-status").text == "done", timeout=600, what="training done")
            shot(driver, "flow-train-done")
            step("train (browser closed half way)")

            # 5. the report page's values: equal to report.json and to `fieldear train` on the same data and seed
            driver.find_element(By.ID, "to-report").click()
            wait_for(lambda: driver.find_elements(By.ID, "m-accuracy"), what="report page")
            wait_for(lambda: driver.execute_script("return document.getElementById('report').dataset.ready"),
                     what="curves")
            bundle = project / "bundles" / "v1"
            report = json.loads((bundle / "report.json").read_text())
            m = report["metrics"]
            page = {k: driver.find_element(By.ID, f"m-{k}").text for k in ("accuracy", "precision", "recall", "f1")}
            assert page == {"accuracy": f3(m["accuracy"]), "precision": f3(m["macro"]["precision"]),
                            "recall": f3(m["macro"]["recall"]), "f1": f3(m["macro"]["f1"])}
            rows = driver.execute_script(
                "return Array.from(document.querySelectorAll('#per-label tbody tr'))"
                ".map(tr => Array.from(tr.children).map(td => td.textContent))")
            assert rows == [[lab, f3(m["per_label"][lab]["f1"]), f3(m["per_label"][lab]["precision"]),
                             f3(m["per_label"][lab]["recall"]), str(m["per_label"][lab]["support"])]
                            for lab in report["labels"]]
            confusion = driver.execute_script(
                "return Array.from(document.querySelectorAll('#confusion tbody tr'))"
                ".map(tr => Array.from(tr.querySelectorAll('td')).map(td => Number(td.textContent)))")
            assert confusion == m["confusion"]["matrix"]
            n_mistakes = sum(t != p for t, p in zip(report["cv"]["y_true"], report["cv"]["y_pred"]))
            assert len(driver.find_elements(By.CSS_SELECTOR, "#mistakes tbody tr")) == n_mistakes
            shot(driver, "flow-report")
            step("report page")
            cli = tmp_path / "cli-bundle"
            assert main(["train", str(project / "reports" / "train.csv"), "--out", str(cli), "--seed", str(SEED),
                         "--time-budget", str(TIME_BUDGET_S), "--folds", str(FOLDS), "--cache", str(cache)]) == 0
            ref = json.loads((cli / "report.json").read_text())
            for key in ("metrics", "thresholds", "pr", "labels", "choice"):
                assert ref[key] == report[key], key
            assert ref["cv"]["y_pred"] == report["cv"]["y_pred"] and ref["cv"]["scores"] == report["cv"]["scores"]
            step("fieldear train on the same data (reference)")

            # the slider shows precision/recall at the threshold; saving writes model.json, the bundle still loads
            label = report["labels"][0]
            slider = driver.find_element(By.ID, f"th-{label}")
            driver.execute_script("arguments[0].value = '0.9'; arguments[0].dispatchEvent(new Event('input'))", slider)
            shown = driver.find_element(By.CSS_SELECTOR, f'figure[data-label="{label}"] output').text
            assert shown.startswith("0.900: precision ")
            driver.find_element(By.ID, "save-thresholds").click()
            wait_for(lambda: "saved into the bundle" in driver.find_element(By.ID, "save-status").text,
                     what="thresholds saved")
            saved = load_bundle(bundle).thresholds
            assert saved[label] == 0.9
            assert {k: v for k, v in saved.items() if k != label} == {k: v for k, v in report["thresholds"].items()
                                                                      if k != label}  # the others untouched
            shot(driver, "flow-report-thresholds")

            # 6. online test: a held-out file, then the (fake) microphone
            driver.find_element(By.LINK_TEXT, "Test").click()
            clip = held_out / "rooster" / sorted(p.name for p in (held_out / "rooster").iterdir())[0]
            driver.find_element(By.ID, "online-file").send_keys(str(clip))
            driver.find_element(By.ID, "online-send").click()
            wait_for(lambda: driver.execute_script("return document.body.dataset.onlineDone"), timeout=60,
                     what="online result")
            top = driver.execute_script("return Array.from(document.querySelectorAll('#online-top li'))"
                                        ".map(li => [li.dataset.label, Number(li.dataset.score)])")
            assert len(top) == 4 and top[0][0] == "rooster", top
            wait_for(lambda: driver.execute_script(
                "const i = document.getElementById('online-spec'); return i.complete && i.naturalWidth > 0"),
                what="spectrogram")
            shot(driver, "flow-online")
            step("online test (file)")
            before = driver.execute_script("return document.body.dataset.onlineDone")
            driver.find_element(By.ID, "record").click()
            wait_for(lambda: "recording" in driver.find_element(By.ID, "record-status").text, what="recording")
            time.sleep(2.0)
            driver.find_element(By.ID, "record-stop").click()
            wait_for(lambda: driver.execute_script("return document.body.dataset.onlineDone") != before, timeout=60,
                     what="recorded clip scored")
            assert driver.find_element(By.ID, "online-facts").text.split(":")[0].endswith("recording.wav")
            step("online test (microphone)")

            # 7. batch over the held-out folder; its metrics are `fieldear evaluate`'s
            driver.find_element(By.LINK_TEXT, "Batch").click()
            driver.find_element(By.ID, "batch-folder").send_keys(str(held_out))
            Select(driver.find_element(By.ID, "batch-truth")).select_by_value("folder")
            driver.find_element(By.ID, "batch-start").click()
            wait_for(lambda: driver.execute_script("return document.body.dataset.batchStatus") == "done",
                     timeout=180, what="batch done")
            from runtime.evaluate.clip_eval import evaluate

            ev = evaluate(project / "reports" / "batch-1.csv", truth="folder", model_dir=str(bundle)).report
            assert driver.find_element(By.ID, "b-accuracy").text == f3(ev["accuracy"])
            assert driver.find_element(By.ID, "b-f1").text == f3(ev["macro"]["f1"])
            assert len(driver.find_elements(By.CSS_SELECTOR, "#batch-table tbody tr")) == 16
            shot(driver, "flow-batch")
            step("batch of 16 held-out clips")

            # 8. deploy: the download link and a dry run of `fieldear deploy`
            driver.find_element(By.LINK_TEXT, "Deploy").click()
            driver.find_element(By.ID, "deploy-host").send_keys("pi@field-01.local")
            driver.find_element(By.ID, "deploy-dry").click()
            driver.find_element(By.ID, "deploy-send").click()
            wait_for(lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-deploy-status") == "done",
                     timeout=60, what="deploy job done")
            assert "rsync -a --delete" in driver.find_element(By.ID, "d-log").text
            assert driver.find_element(By.ID, "d-verdict").text.startswith("Dry run")
            shot(driver, "flow-deploy")
            step("deploy (dry run)")
            assert js_errors(driver) == []

            # 9. phone width: the new pages fit without sideways scrolling, every input has a name
            driver.set_window_size(*PHONE)
            for page in ("train", "report", "test", "batch", "deploy"):
                driver.get(f"{url}/studio/p/esc4/{page}")
                wait_for(lambda: driver.execute_script("return document.readyState") == "complete", what=page)
                assert driver.execute_script(
                    "return document.documentElement.scrollWidth <= window.innerWidth + 1"), page
                assert unlabelled_inputs(driver) == [], page
                shot(driver, f"{page}-phone")
        finally:
            driver.quit()
    result = {"steps_s": times, "total_s": round(sum(times.values()), 2), "clips": len(paths), "labels": list(CLASSES),
              "seed": SEED, "time_budget_s": TIME_BUDGET_S,
              "report": {"accuracy": m["accuracy"], "macro_f1": m["macro"]["f1"]},
              "equal_to_fieldear_train": True, "batch_accuracy": ev["accuracy"]}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "studio-flow-times.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
