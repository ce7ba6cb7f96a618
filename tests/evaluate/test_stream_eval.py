"""Stream evaluation: annotation formats and event/segment metrics against a logged run."""

import json

import pytest

from runtime.cli.main import main
from runtime.errors import FieldearError
from runtime.evaluate.annotations import Annotation, load_annotations, parse_annotations
from runtime.evaluate.stream_eval import Interval, evaluate_stream
from runtime.store.schema import utc_iso
from runtime.store.writer import Store

pytestmark = pytest.mark.runtime


def test_csv_audacity_raven_give_the_same_annotations(tmp_path):
    want = [Annotation(1.0, 2.5, "dog"), Annotation(10.25, 12.0, "rooster")]
    csv_text = "start_s,end_s,label,note\n1.0,2.5,dog,x\n10.25,12.0,rooster,\n"
    audacity = "1.000000\t2.500000\tdog\n\\\t0.0\t8000.0\n10.250000\t12.000000\trooster\n"
    raven = ("Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tAnnotation\n"
             "1\tWaveform 1\t1\t1.0\t2.5\t0\t8000\tdog\n1\tSpectrogram 1\t1\t1.0\t2.5\t0\t8000\tdog\n"
             "2\tSpectrogram 1\t1\t10.25\t12.0\t500\t4000\trooster\n")
    for name, text in (("a.csv", csv_text), ("a.txt", audacity), ("sel.txt", raven)):
        (tmp_path / name).write_text(text)
        assert load_annotations(tmp_path / name) == want, name


def test_bad_annotations_name_the_line():
    with pytest.raises(FieldearError, match=r"x.csv:3: end 1.0 before start 2.0"):
        parse_annotations("start_s,end_s,label\n0,1,dog\n2,1,dog\n", "x.csv")
    with pytest.raises(FieldearError, match="header needs start_s,end_s,label"):
        parse_annotations("a,b,c\n1,2,3\n", "y.csv")


def test_event_and_segment_metrics_by_hand():
    truth = [Annotation(10.0, 12.0, "dog"), Annotation(30.0, 33.0, "dog"), Annotation(50.0, 51.0, "rooster")]
    pred = [Interval(10.3, 12.5, "dog"),  # onset within 0.5 s: a match under both criteria
            Interval(31.0, 32.0, "dog"),  # overlaps, onset 1 s late: overlap match only
            Interval(70.0, 71.0, "dog"),  # false alarm
            Interval(49.9, 51.2, "rooster")]
    r = evaluate_stream(truth, pred, duration_s=3600.0, tolerance=0.5)
    dog = r["per_label"]["dog"]
    assert (dog["event_onset"]["tp"], dog["event_onset"]["fp"], dog["event_onset"]["fn"]) == (1, 2, 1)
    assert (dog["event_overlap"]["tp"], dog["event_overlap"]["fp"], dog["event_overlap"]["fn"]) == (2, 1, 0)
    assert dog["event_overlap"]["f1"] == pytest.approx(0.8)
    assert dog["false_alarms_per_hour"] == 1.0 and r["false_alarms_per_hour"] == 1.0
    # segments: truth dog 10-12 (2), 30-33 (3) -> 5; pred 10.3-12.5 -> 10,11,12; 31-32 -> 31; 70 -> 70
    seg = dog["segment"]
    assert (seg["tp"], seg["fp"], seg["fn"]) == (3, 2, 2)
    assert r["per_label"]["rooster"]["event_onset"]["f1"] == 1.0
    assert r["micro"]["event_overlap"]["tp"] == 3


def test_one_to_one_matching_does_not_count_a_prediction_twice():
    truth = [Annotation(0.0, 10.0, "dog"), Annotation(2.0, 3.0, "dog")]
    pred = [Interval(0.0, 10.0, "dog")]
    r = evaluate_stream(truth, pred, 60.0)
    assert r["per_label"]["dog"]["event_overlap"]["tp"] == 1
    assert r["per_label"]["dog"]["event_overlap"]["fn"] == 1


def test_main_scores_the_latest_run_of_a_db(tmp_path, capsys):
    db = tmp_path / "run.db"
    for run, events in enumerate(([("dog", 0.0, 1.0)], [("dog", 5.2, 6.0), ("rooster", 20.0, 21.0)])):
        st = Store(db, device_id="d", source=f"file:{run}.wav", model_sha="m", settings={}, clock=lambda: 1e9)
        st.start_run({"labels": ["dog", "rooster"]})
        for label, a, b in events:
            st.add_event({"label": label, "start_utc": utc_iso(1e9 + a), "end_utc": utc_iso(1e9 + b),
                          "start_s": a, "end_s": b, "peak": 0.9, "mean": 0.8})
        st.end_run({"audio_s": 60.0})
        st.close()
    truth = tmp_path / "truth.csv"
    truth.write_text("start_s,end_s,label\n5.0,6.0,dog\n")
    out = tmp_path / "report.json"
    assert main(["evaluate", "--db", str(db), "--annotations", str(truth), "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "run run:000002 (file:1.wav" in text and "onset P/R/F1" in text
    result = json.loads(out.read_text())
    assert result["per_label"]["dog"]["event_onset"]["f1"] == 1.0  # run 1's event at 0 s is not counted
    assert result["per_label"]["rooster"]["event_overlap"]["fp"] == 1
    assert result["false_alarms_per_hour"] == 60.0 and result["duration_s"] == 60.0
