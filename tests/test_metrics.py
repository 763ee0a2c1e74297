"""Issue 4, acceptance 3: `eval` on a hand-built 3-class example matches a hand computation.

Labels (2x3, 255 = ignore) and predictions:

    labels  0 0 1      predictions  0 1 1
            1 . 0                   0 1 0

Counted pixels (label, prediction): (0,0) (0,1) (1,1) (1,0) (0,0); class 2 appears in neither.
class 0: TP 2, 3 labelled, 3 predicted -> IoU 2/4, accuracy 2/3
class 1: TP 1, 2 labelled, 2 predicted -> IoU 1/3, accuracy 1/2
class 2: absent from labels and predictions -> no IoU, left out of the means, listed
mIoU (1/2 + 1/3) / 2 = 5/12; pixel accuracy 3/5; mean class accuracy (2/3 + 1/2) / 2 = 7/12;
frequency-weighted IoU 3/5 * 1/2 + 2/5 * 1/3 = 13/30.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image

LABELS = np.array([[0, 0, 1], [1, 255, 0]], np.uint8)
PREDS = np.array([[0, 1, 1], [0, 1, 0]], np.uint8)
EXPECTED = {"miou": 5 / 12, "pixel_acc": 3 / 5, "mean_acc": 7 / 12, "fwiou": 13 / 30}


def test_confusion_matrix_matches_the_hand_computation():
    from nascli.engine.metrics import ConfusionMatrix
    from nascli.steps.eval import report

    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(torch.from_numpy(PREDS[:1]), torch.from_numpy(LABELS[:1]))  # two batches add up
    cm.update(torch.from_numpy(PREDS[1:]), torch.from_numpy(LABELS[1:]))
    summary, classes = report(cm, ["a", "b", "c"])
    for key, value in EXPECTED.items():
        assert summary[key] == pytest.approx(value)
    assert [c["iou"] for c in classes] == [pytest.approx(0.5), pytest.approx(1 / 3), None]
    assert summary["absent_classes"] == ["c"] and summary["classes_in_mean"] == 2 and summary["pixels"] == 5
    assert [c["label_pixels"] for c in classes] == [3, 2, 0] and [c["pred_pixels"] for c in classes] == [3, 2, 0]


def _identity_onnx(path: Path, height: int, width: int) -> None:
    """logits = the normalised image (1x1 conv, identity weights): red pixels -> class 0, green -> class 1."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [3, 3, 1, 1], np.eye(3, dtype=np.float32).ravel())
    graph = helper.make_graph([helper.make_node("Conv", ["input", "w"], ["logits"])], "identity",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, height, width])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, height, width])],
                              initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in {"num_classes": "3", "mean": "[0, 0, 0]", "std": "[1, 1, 1]",
                       "class_names": '["a", "b", "c"]'}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.fixture
def hand_data(tmp_path: Path) -> Path:
    root = tmp_path / "hand"
    (root / "img").mkdir(parents=True)
    (root / "mask").mkdir()
    image = np.zeros((2, 3, 3), np.uint8)
    image[..., 0] = np.where(PREDS == 0, 200, 0)
    image[..., 1] = np.where(PREDS == 1, 200, 0)
    Image.fromarray(image).save(root / "img" / "x.png")
    Image.fromarray(LABELS).save(root / "mask" / "x.png")
    (root / "list.txt").write_text("img/x.png mask/x.png\n")
    (root / "classes.txt").write_text("a\nb\nc\n")
    _identity_onnx(root / "hand.onnx", 2, 3)
    return root


def test_eval_cli_on_the_hand_built_example(hand_data, tmp_path, run_cli):
    run = tmp_path / "run"
    r = run_cli("eval", "-r", run, "--checkpoint", hand_data / "hand.onnx", "--list", hand_data / "list.txt",
                "--data-root", hand_data, "--json")
    assert r.code == 0, r.stderr
    out = json.loads(r.stdout)
    for key, value in EXPECTED.items():
        assert out[key] == pytest.approx(value)
    assert out["absent_classes"] == ["c"] and out["images"] == 1
    assert [c["iou"] for c in out["classes"]] == [pytest.approx(0.5), pytest.approx(1 / 3), None]
    saved = json.loads((run / "eval" / "hand-onnx-list" / "metrics.json").read_text())
    assert saved["miou"] == pytest.approx(5 / 12)
    assert (run / "eval" / "hand-onnx-list" / "per_class.csv").read_text().splitlines()[0].startswith("id,name,iou")


def test_eval_table_lists_the_absent_class(hand_data, tmp_path, run_cli):
    r = run_cli("eval", "-r", tmp_path / "run", "--checkpoint", hand_data / "hand.onnx", "--list",
                hand_data / "list.txt", "--data-root", hand_data)
    assert r.code == 0, r.stderr
    assert "absent" in r.stdout and "0.4167" in r.stdout


def test_eval_without_a_trained_model_names_the_missing_step(tmp_path, run_cli):
    r = run_cli("eval", "-r", tmp_path / "empty")
    assert r.code == 5
    assert "train" in r.stderr and "Hint:" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("eval", "-r", tmp_path / "empty", "--onnx")
    assert r.code == 5 and "export" in r.stderr
