"""Issue 19, acceptance 1: `nascli data check` on detection lists: BCCD and raccoon pass; each kind of bad
annotation is rejected with one line naming the list file and line (and the XML), exit 4, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from voc_fixtures import voc_xml, write_image, write_voc

from nascli.data.det_check import inspect_detection_list, is_detection_list
from nascli.data.voc import parse_voc, voc_problems
from nascli.errors import DataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # shared, never copied
GOOD = voc_xml(40, 30, [("cat", 1, 2, 20, 30), ("dog", 10, 5, 40, 25, 1)])

# one bad line each (line 1 is good): what the message must say
BAD = {
    "malformed": ("<annotation><size><width>40</width>", (40, 30), ["malformed.xml is not well-formed XML", "line 1"]),
    "no_image": (GOOD, None, ["image", "no_image.png not found"]),
    "outside": (voc_xml(40, 30, [("cat", 1, 2, 41, 30)]), (40, 30),
                ["object 1 (cat)", "xmax=41", "outside the 40x30 image"]),
    "negative": (voc_xml(40, 30, [("cat", -3, 2, 20, 30)]), (40, 30), ["xmin=-3", "outside the 40x30 image"]),
    "xmin_ge_xmax": (voc_xml(40, 30, [("cat", 1, 2, 20, 30), ("dog", 20, 2, 20, 9)]), (40, 30),
                     ["object 2 (dog): xmin >= xmax", "xmin=20"]),
    "ymin_ge_ymax": (voc_xml(40, 30, [("dog", 2, 9, 20, 4)]), (40, 30), ["object 1 (dog): ymin >= ymax"]),
    "unknown_class": (voc_xml(40, 30, [("Dog", 1, 2, 20, 30)]), (40, 30),
                      ["unknown class name 'Dog'", "did you mean 'dog'?"]),
    "size_mismatch": (GOOD, (30, 40), ["<size> says 40x30", "size_mismatch.png is 30x40", "width and height swapped"]),
    "no_size": (GOOD.replace("<width>40</width>", ""), (40, 30), ["missing <size><width>"]),
    "no_bndbox": ("<annotation><size><width>4</width><height>4</height></size><object><name>cat</name></object>"
                  "</annotation>", (4, 4), ["object 1 (cat) has no <bndbox>"]),
    "bad_number": (voc_xml(40, 30, [("cat", "one", 2, 20, 30)]), (40, 30), ["<xmin> is 'one', not a number"]),
    "bad_difficult": (voc_xml(40, 30, [("cat", 1, 2, 20, 30, "yes")]), (40, 30), ["<difficult> is 'yes'"]),
    "no_xml": (None, (40, 30), ["annotation", "no_xml.xml not found"]),
}


@pytest.fixture
def bad_list(tmp_path: Path) -> Path:
    entries = [("good", GOOD, (40, 30))] + [(name, xml, image) for name, (xml, image, _) in BAD.items()]
    return write_voc(tmp_path, entries)


@pytest.mark.parametrize("name", list(BAD))
def test_check_rejects_with_file_and_line(bad_list, run_cli, name):
    line = 2 + list(BAD).index(name)
    r = run_cli(["data", "check", "--data-root", bad_list.parent, "--list", bad_list])
    assert r.code == 4, r.stdout + r.stderr
    assert "Task: detection" in r.stderr and "Traceback" not in r.stdout + r.stderr
    ours = [s for s in r.stdout.splitlines() if s.startswith(f"{bad_list}:{line}: ")]
    assert len(ours) == 1, r.stdout
    assert all(w in ours[0] for w in BAD[name][2]), ours[0]
    assert not any(s.startswith(f"{bad_list}:1: ") for s in r.stdout.splitlines())  # the good line
    errors = [s for s in r.stderr.splitlines() if s.startswith("Error: ")]
    assert len(errors) == 1 and f"{len(BAD)} problems in {len(BAD)} of {len(BAD) + 1} samples" in errors[0]


@pytest.mark.parametrize("name", ["malformed", "outside", "xmin_ge_xmax", "unknown_class"])
def test_parse_voc_raises_one_line_naming_list_line(bad_list, name):
    xml = bad_list.parent / "Annotations" / f"{name}.xml"
    with pytest.raises(DataError) as e:
        parse_voc(xml, ["cat", "dog", "bird"], where=f"{bad_list}:7")
    assert str(e.value).startswith(f"{bad_list}:7: ") and str(xml) in str(e.value) and "\n" not in str(e.value)
    assert e.value.hint and "nascli data check" in e.value.hint


def test_every_box_of_a_file_is_reported(tmp_path):
    xml = tmp_path / "a.xml"
    xml.write_text(voc_xml(40, 30, [("cat", 5, 2, 1, 9), ("cow", 1, 1, 5, 5), ("dog", 0, 0, 50, 5)]))
    ann, problems = voc_problems(xml, ["cat", "dog"])
    assert ann is None
    assert [p.message.split(": ")[1] for p in problems] == ["object 1 (cat)", "object 2 (cow)", "object 3 (dog)"]


def test_voc_edge_conventions(tmp_path):
    """xmax == width and ymax == height are inside (VOC's 1-based last pixel); xmin 0 too; no objects is legal."""
    xml = tmp_path / "a.xml"
    xml.write_text(voc_xml(40, 30, [("cat", 0, 1, 40, 30), ("bird", 1.5, 2.5, 3.5, 4.5, 1)]))
    ann = parse_voc(xml, ["cat", "dog", "bird"])
    assert (ann.width, ann.height) == (40, 30)
    assert ann.boxes.dtype.name == "float32" and ann.boxes.tolist() == [[0, 1, 40, 30], [1.5, 2.5, 3.5, 4.5]]
    assert ann.labels.dtype.name == "int64" and ann.labels.tolist() == [0, 2]
    assert ann.difficult.tolist() == [False, True] and ann.names == ["cat", "bird"]
    xml.write_text(voc_xml(40, 30, []))
    empty = parse_voc(xml, ["cat"])
    assert empty.boxes.shape == (0, 4) and empty.labels.shape == (0,) and empty.difficult.shape == (0,)


def test_exif_rotated_image_is_compared_as_displayed(tmp_path):
    """The XML describes the image as viewers show it (EXIF orientation applied), as labelling tools do."""
    from PIL import Image

    path = write_image(tmp_path / "JPEGImages" / "r.jpg", 40, 30)
    img = Image.open(path)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display: shown 30x40
    img.save(path, exif=exif)
    lst = write_voc(tmp_path, [])
    lst.write_text("JPEGImages/r.jpg Annotations/shown.xml\nJPEGImages/r.jpg Annotations/stored.xml\n")
    (tmp_path / "Annotations" / "shown.xml").write_text(voc_xml(30, 40, [("cat", 1, 1, 30, 40)]))
    (tmp_path / "Annotations" / "stored.xml").write_text(voc_xml(40, 30, [("cat", 1, 1, 40, 30)]))
    report = inspect_detection_list(lst, tmp_path, ["cat"])
    assert [(p.line, "EXIF orientation" in p.message) for p in report.problems] == [(2, True)]


def test_stats(tmp_path):
    lst = write_voc(tmp_path, [
        ("a", voc_xml(200, 100, [("cat", 0, 0, 10, 10), ("cat", 0, 0, 40, 40, 1), ("dog", 0, 0, 200, 100)]), (200, 100)),
        ("b", voc_xml(200, 100, []), (200, 100)),
        ("c", voc_xml(50, 60, [("cat", 0, 0, 32, 32)]), (50, 60)),
    ])
    report = inspect_detection_list(lst, tmp_path, ["cat", "dog", "bird"])
    s = report.stats
    assert report.problems == [] and report.checked == 3
    assert (s.images, s.empty_images) == (3, 1)
    assert s.boxes.tolist() == [3, 1, 0] and s.images_with.tolist() == [2, 1, 0] and s.difficult.tolist() == [1, 0, 0]
    assert (s.small, s.medium, s.large) == (1, 2, 1)  # 10^2 small; 40^2 and 32^2 medium; 200x100 large
    assert s.sizes == {(200, 100): 2, (50, 60): 1}
    assert [w.message for w in report.warnings] == ["class 2 (bird) never appears in its 3 annotations"]


def test_task_inference_and_options(tmp_path, run_cli):
    lst = write_voc(tmp_path, [("a", GOOD, (40, 30))])
    assert is_detection_list(lst)
    r = run_cli(["data", "check", "--data-root", tmp_path, "--list", lst, "--json"])
    assert r.code == 0 and "Task: detection" in r.stderr
    out = json.loads(r.stdout)
    assert out["task"] == "detection" and out["lists"][0]["boxes"] == 2 and out["lists"][0]["difficult"] == 1
    r = run_cli(["data", "check", "--data-root", tmp_path, "--list", lst, "--task", "detection"])
    assert r.code == 0 and "Task: detection" not in r.stderr and "1 samples in 1 list file: no problems" in r.stdout
    r = run_cli(["data", "check", "--data-root", tmp_path, "--list", lst, "--task", "detect"])
    assert r.code == 2 and "did you mean 'detection'" in r.stderr
    r = run_cli(["data", "check", "--data-root", tmp_path, "--list", lst, "--num-classes", 5])
    assert r.code == 2 and "--num-classes 5 disagrees with the 3 classes" in r.stderr
    (tmp_path / "classes.txt").unlink()
    r = run_cli(["data", "check", "--data-root", tmp_path, "--list", lst])
    assert r.code == 3 and "no classes.txt" in r.stderr and "Traceback" not in r.stderr


def test_malformed_line_speaks_of_annotations(tmp_path, run_cli):
    lst = write_voc(tmp_path, [("a", GOOD, (40, 30))])
    lst.write_text(lst.read_text() + "JPEGImages/a.png\n")
    r = run_cli(["data", "check", "--data-root", tmp_path, "--list", lst, "--task", "detection"])
    assert r.code == 4 and f"{lst}:2: expected 2 fields `IMAGE ANNOTATION`, found 1" in r.stdout


@pytest.mark.parametrize("name, images, boxes", [("bccd", 292, 2804 + 1137), ("raccoon", 200, 173 + 44)])
def test_shared_datasets_pass(run_cli, name, images, boxes):
    root = SHARED / name
    if not (root / "train.txt").is_file():
        pytest.skip(f"{name} not at ../shared/data/{name}")
    r = run_cli(["data", "check", "--data-root", root, "--list", root / "train.txt", "--list", root / "val.txt",
                 "--json"])
    assert r.code == 0, r.stdout[-2000:] + r.stderr
    out = json.loads(r.stdout)
    assert out["checked"] == images and out["problems"] == [] and out["warnings"] == []
    assert sum(lst["boxes"] for lst in out["lists"]) == boxes
