"""Scouting experiment for issue 15: is there a stronger free embedding than aisfx whose weights ship inside a
registry package? Measures one candidate, musicnn (PyPI ``musicnn`` 0.1.0, ISC: the only free general-purpose
audio network found whose wheel carries its weights), beside aisfx with the same protocol:

* ESC-10 (``../shared/data/esc10``), leave-one-official-fold-out;
* per block (aisfx: its 2.32 s blocks via ``convert.families.embed.dataset_embeddings``; musicnn: 3 s patches every
  63 frames = 1.0 s), a standardised logistic regression trained on every block with its clip's label; a clip's
  prediction is the mean of its blocks' class probabilities;
* the head's C in ``C_GRID`` (and, for musicnn, the layer in ``LAYERS``) chosen by leave-one-fold-out CV on the four
  training folds only, never looking at the held-out fold;
* ``fused_with_aisfx``: the same head on aisfx's block i concatenated with musicnn's patch i (a clip's first
  min(n_aisfx, n_musicnn) of each; aisfx blocks start every 1.16 s, musicnn patches every 1.0 s);
* cost: seconds of network time per audio second on one thread (float TF graph, and the TFLite conversions).

musicnn is not a project dependency and its wheel pins old numpy/TensorFlow: unpack the wheel and put it and a
``tf-keras`` matching the venv's TensorFlow on the path (``tf.compat.v1.layers`` needs legacy Keras)::

    pip download --no-deps musicnn -d /tmp/embscout/pkgs && unzip -d /tmp/embscout/musicnn_x /tmp/embscout/pkgs/musicnn-*.whl
    pip install --no-deps --target /tmp/embscout/tfk "tf-keras~=2.21.0"
    TF_USE_LEGACY_KERAS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=$PWD:/tmp/embscout/musicnn_x:/tmp/embscout/tfk \\
        python -m tests.experiments.exp_embscout [--out DIR] [--models MTT_musicnn,MSD_musicnn]

Writes ``embscout.json``. Experiment only: nothing here is used by ``convert`` or ``runtime``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from tests.bench.bench_train import esc10_labels, esc10_manifest

log = logging.getLogger("bench.embscout")

C_GRID = (0.01, 0.1)
LAYERS = ("penultimate", "max_pool", "mean_pool")
MUSICNN_RATE, MUSICNN_FFT, MUSICNN_HOP, MUSICNN_MELS = 16000, 512, 256, 96  # musicnn/configuration.py
PATCH_FRAMES, PATCH_HOP = 187, 63  # 3 s patches (musicnn's input_length=3), one every ~1.0 s


def musicnn_patches(audio: np.ndarray) -> np.ndarray:
    """musicnn's log-mel patches (n, 187, 96) of 16 kHz audio (its extractor.batch_data, computed in float32:
    its float16 cast overflows to inf on loud clips); a clip shorter than a patch is zero-padded."""
    import librosa

    mel = librosa.feature.melspectrogram(y=audio.astype(np.float32), sr=MUSICNN_RATE, hop_length=MUSICNN_HOP,
                                         n_fft=MUSICNN_FFT, n_mels=MUSICNN_MELS).T
    rep = np.log10(10000.0 * mel + 1.0).astype(np.float32)
    if len(rep) < PATCH_FRAMES:
        rep = np.pad(rep, ((0, PATCH_FRAMES - len(rep)), (0, 0)))
    starts = range(0, len(rep) - PATCH_FRAMES + 1, PATCH_HOP)
    return np.stack([rep[s:s + PATCH_FRAMES] for s in starts])


class Musicnn:
    """One musicnn checkpoint as a TF1 graph in inference mode (batch norm with its moving statistics)."""

    def __init__(self, name: str, threads: int = 1):
        import tensorflow as tf
        from musicnn import models
        from musicnn import configuration as config

        tf.compat.v1.disable_eager_execution()
        self.graph = tf.Graph()
        with self.graph.as_default():
            with tf.name_scope("model"):
                self.x = tf.compat.v1.placeholder(tf.float32, [None, PATCH_FRAMES, MUSICNN_MELS])
                n_classes = len(config.MTT_LABELS if name.startswith("MTT") else config.MSD_LABELS)
                _, _, _, _, _, _, mean_pool, max_pool, penultimate = models.define_model(self.x, False, name, n_classes)
            self.outputs = {"penultimate": penultimate, "max_pool": max_pool, "mean_pool": mean_pool}
            conf = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads)
            self.sess = tf.compat.v1.Session(graph=self.graph, config=conf)
            tf.compat.v1.train.Saver().restore(self.sess, os.path.join(os.path.dirname(models.__file__), name) + "/")

    def embed(self, patches: np.ndarray) -> dict[str, np.ndarray]:
        out = self.sess.run(self.outputs, feed_dict={self.x: patches})
        return {k: np.asarray(v, dtype=np.float32).reshape(len(patches), -1) for k, v in out.items()}

    def tflite(self, layer: str, int8_calibration: np.ndarray | None = None) -> bytes:
        """The graph up to ``layer`` as TFLite with batch 1 (float, or int8 calibrated on the given patches)."""
        import tensorflow as tf

        with self.graph.as_default():
            conv = tf.compat.v1.lite.TFLiteConverter.from_session(self.sess, [self.x], [self.outputs[layer]])
            conv.input_shapes = {self.x.name.split(":")[0]: [1, PATCH_FRAMES, MUSICNN_MELS]}
            if int8_calibration is not None:
                conv.optimizations = [tf.lite.Optimize.DEFAULT]
                conv.representative_dataset = lambda: ([p[None]] for p in int8_calibration)
                conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            return conv.convert()


def lofo(embs: list[np.ndarray], y: np.ndarray, folds: np.ndarray, c: float, train_folds) -> float:
    """Clip accuracy of leave-one-fold-out over ``train_folds`` (block-level LR, clip = mean block probability)."""
    pred = predict_folds(embs, y, folds, c, train_folds)
    mask = np.isin(folds, list(train_folds))
    return float(np.mean(pred[mask] == y[mask]))


def predict_folds(embs, y, folds, c, test_folds) -> np.ndarray:
    """Clip predictions for each fold in ``test_folds``, trained on the other folds among ``test_folds``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pred = np.full(len(y), -1)
    for f in test_folds:
        tr = [i for i in range(len(y)) if folds[i] in test_folds and folds[i] != f]
        te = [i for i in range(len(y)) if folds[i] == f]
        xtr = np.concatenate([embs[i] for i in tr])
        ytr = np.concatenate([np.full(len(embs[i]), y[i]) for i in tr])
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
        clf.fit(xtr, ytr)
        for i in te:
            pred[i] = int(clf.classes_[np.argmax(clf.predict_proba(embs[i]).mean(axis=0))])
    return pred


def nested_eval(variants: dict[str, list[np.ndarray]], y: np.ndarray, folds: np.ndarray) -> dict:
    """Outer leave-one-fold-out; (variant, C) chosen by inner LOFO on the four training folds."""
    from sklearn.metrics import f1_score

    all_folds = sorted(set(folds))
    pred = np.full(len(y), -1)
    chosen = {}
    for f in all_folds:
        inner = [g for g in all_folds if g != f]
        scores = {(v, c): lofo(e, y, folds, c, inner) for v, e in variants.items() for c in C_GRID}
        best = max(scores, key=scores.get)
        chosen[f] = {"variant": best[0], "C": best[1], "inner_acc": round(scores[best], 4)}
        p = predict_folds(variants[best[0]], y, folds, best[1], inner + [f])
        pred[folds == f] = p[folds == f]
    return {"accuracy": round(float(np.mean(pred == y)), 4),
            "macro_f1": round(float(f1_score(y, pred, average="macro")), 4), "chosen_per_fold": chosen}


def tflite_cost(model: bytes, patches: np.ndarray, audio_seconds_per_patch: float) -> dict:
    from runtime.model.interpreter import Runner

    runner = Runner(model, threads=1)
    runner.run(patches[:2])
    t0 = time.perf_counter()
    out = runner.run(patches)
    dt = time.perf_counter() - t0
    return {"bytes": len(model), "s_per_patch": round(dt / len(patches), 5),
            "s_per_audio_s": round(dt / len(patches) / audio_seconds_per_patch, 5), "out": out}


def main(out_dir: str | os.PathLike, models: tuple[str, ...], layers: tuple[str, ...] = LAYERS,
         with_aisfx: bool = True, int8_layer: str | None = None) -> dict:
    from convert.data.dataset import load_dataset
    from convert.families.embed import dataset_embeddings
    from runtime.audio.files import read_audio

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = esc10_labels()
    ds = load_dataset(esc10_manifest(out / "esc10.csv", {label: None for label in labels}, folds=True))
    clips = ds.items
    y = np.array([labels.index(c.label) for c in clips])
    folds = np.array([c.fold for c in clips])
    results: dict = {"n_clips": len(clips), "protocol": __doc__.split("\n\n")[1]}

    if with_aisfx:
        t0 = time.perf_counter()
        aisfx = dataset_embeddings(clips, threads=1)  # the default cache: shared with train and the benches
        results["aisfx"] = {"dim": int(aisfx[0].shape[1]), "embed_wall_s": round(time.perf_counter() - t0, 1),
                            **nested_eval({"block": aisfx}, y, folds)}
        log.info("aisfx: %s", results["aisfx"])

    audio = [read_audio(c.path, target_rate=MUSICNN_RATE)[0] for c in clips]
    patches = [musicnn_patches(a) for a in audio]
    total_audio_s = sum(len(a) for a in audio) / MUSICNN_RATE
    for name in models:
        net = Musicnn(name, threads=1)
        t0 = time.perf_counter()
        per_clip = [net.embed(p) for p in patches]
        net_s = time.perf_counter() - t0
        variants = {layer: [e[layer] for e in per_clip] for layer in layers}
        res = {"dims": {k: int(v[0].shape[1]) for k, v in variants.items()},
               "float_tf_s_per_audio_s_1thread": round(net_s / total_audio_s, 5),
               "patches": int(sum(len(p) for p in patches)),
               **nested_eval(variants, y, folds)}
        calib = np.concatenate([p[:1] for p in patches[::8]])  # 50 patches spread over the labels
        probe = np.concatenate(patches[:5])
        for layer in layers:
            ref = net.embed(probe)[layer]
            for kind, cal in (("float", None), ("int8", calib)):
                try:
                    cost = tflite_cost(net.tflite(layer, cal), probe, PATCH_HOP * MUSICNN_HOP / MUSICNN_RATE)
                    got = cost.pop("out").reshape(len(probe), -1)
                    cost["corr_with_tf"] = round(float(np.corrcoef(got.ravel(), ref.ravel())[0, 1]), 4)
                except Exception as exc:  # noqa: BLE001 - record why a conversion failed
                    cost = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
                res[f"tflite_{kind}_{layer}"] = cost
        if int8_layer:  # the same protocol on the int8 TFLite embeddings of one layer
            from runtime.model.interpreter import Runner

            runner = Runner(net.tflite(int8_layer, calib), threads=1)
            q = [runner.run(p).reshape(len(p), -1) for p in patches]
            res[f"int8_{int8_layer}"] = nested_eval({int8_layer: q}, y, folds)
            if with_aisfx:
                res[f"int8_{int8_layer}_fused_with_aisfx"] = nested_eval(
                    {"aisfx+int8": [np.concatenate([a[:min(len(a), len(m))], m[:min(len(a), len(m))]], axis=1)
                                    for a, m in zip(aisfx, q)]}, y, folds)
        if with_aisfx:  # both free nets side by side: block i of aisfx beside patch i of musicnn (both ~1 s apart)
            fused = {f"aisfx+{layer}": [np.concatenate([a[:min(len(a), len(m))], m[:min(len(a), len(m))]], axis=1)
                                        for a, m in zip(aisfx, variants[layer])] for layer in layers}
            res["fused_with_aisfx"] = nested_eval(fused, y, folds)
        results[name] = res
        log.info("%s: %s", name, res)
    (out / "embscout.json").write_text(json.dumps(results, indent=1))
    return results


def _cli(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench/results/embscout")
    ap.add_argument("--models", default="MTT_musicnn,MSD_musicnn")
    ap.add_argument("--layers", default=",".join(LAYERS), help="musicnn layers the inner CV chooses among")
    ap.add_argument("--no-aisfx", action="store_true", help="skip the aisfx reference")
    ap.add_argument("--int8-layer", default=None, help="also score this layer's int8 TFLite embeddings")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    res = main(args.out, tuple(m for m in args.models.split(",") if m), tuple(x for x in args.layers.split(",") if x),
               with_aisfx=not args.no_aisfx, int8_layer=args.int8_layer)
    print(json.dumps({k: (v if not isinstance(v, dict) else {kk: vv for kk, vv in v.items()
                                                              if kk not in ("chosen_per_fold",)})
                      for k, v in res.items() if k != "protocol"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
