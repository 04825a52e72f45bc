"""One result schema for classify --json, search --json and events; images as files, folders and
globs; global flags anywhere; command-name suggestions. On the real int8 bundle of the sample."""
from __future__ import annotations

import json
import shutil

import pytest

from shelfsight.app.cli import hoist_global_flags
from shelfsight.edge.pipeline.events import build_event
from shelfsight.edge.pipeline.sources import Frame
from shelfsight.edge.runtime.results import SCHEMA_ID, ResultError, check_result
from shelfsight.images import read_image

from cli_run import run_cli


@pytest.fixture(scope="module")
def indexed(int8_bundle, tmp_path_factory, sample_data):
    from shelfsight.edge.indexing import build_index

    bundle = tmp_path_factory.mktemp("results") / "bundle"
    shutil.copytree(int8_bundle, bundle)
    build_index(bundle, sample_data, progress=False)
    return bundle


def cli(args, capsys) -> tuple[int, list[str], str]:
    code, out, err = run_cli(args, capsys)
    return code, out.splitlines(), err


def test_classify_json_of_a_folder_follows_the_schema(indexed, sample_data, capsys):
    from shelfsight.edge.runtime.recognizer import Recognizer

    folder = sample_data / "val" / "Fruit"
    expected = sorted(str(p) for p in folder.rglob("*.jpg"))
    code, lines, _ = cli(["classify", indexed, folder, "--json", "-k", "2"], capsys)
    records = [json.loads(line) for line in lines]
    assert code == 0 and [r["image"] for r in records] == expected and len(expected) == 45
    with Recognizer.create_from_bundle(indexed, top_k=2, search_k=0) as rec:
        first = rec.classify(read_image(expected[0]))
    for r in records:
        check_result(r)
        assert r["schema"] == SCHEMA_ID and len(r["predictions"]) == 2 and r["matches"] == []
        assert r["predictions"][0]["score"] >= r["predictions"][1]["score"]
    assert records[0]["predictions"][0]["label"] == first.predictions[0].label
    assert records[0]["label"] == first.label


def test_search_json_of_a_glob_follows_the_schema_and_finds_the_catalog_image(indexed, sample_data, capsys):
    pattern = str(sample_data / "iconic-images-and-descriptions" / "Fruit" / "Ba*" / "*_Iconic.jpg")
    code, lines, _ = cli(["search", indexed, pattern, "--json", "-k", "3"], capsys)
    assert code == 0 and len(lines) == 1
    record = json.loads(lines[0])
    check_result(record)
    assert record["image"].endswith("Banana_Iconic.jpg") and record["predictions"] == []
    assert record["matches"][0]["item_id"] == "Banana" and record["matches"][0]["similarity"] > 0.99
    assert (record["label"], record["score"]) == ("Banana", record["matches"][0]["similarity"])
    sims = [m["similarity"] for m in record["matches"]]
    assert sims == sorted(sims, reverse=True)


def test_an_event_follows_the_schema(indexed, sample_data):
    from shelfsight.edge.runtime.recognizer import Recognizer

    image = read_image(sample_data / "val" / "Fruit" / "Kiwi" / "Kiwi_003.jpg")
    with Recognizer.create_from_bundle(indexed, top_k=3, search_k=2) as rec:
        event = build_event(rec.recognize(image), Frame(image=image, index=4, timestamp=1714564800.0, source="cam"))
    check_result(event)
    assert event["schema"] == SCHEMA_ID and event["frame"] == 4 and len(event["predictions"]) == 3
    json.dumps(event)  # plain JSON all the way down


def test_a_record_off_the_schema_is_named_at_its_first_violation():
    record = {"schema": SCHEMA_ID, "label": "x", "score": 1.0, "latency_ms": 1.0, "matches": [],
              "predictions": [{"label": "x", "score": 1.0}]}
    with pytest.raises(ResultError, match=r"^\$\.predictions\[0\]: 'index' is a required property$"):
        check_result(record)
    with pytest.raises(ResultError, match=r"^\$\.schema: 'shelfsight.result/1' was expected$"):
        check_result({**record, "predictions": [], "schema": "shelfsight.result/0"})


def test_unreadable_images_in_a_folder_are_skipped_and_counted(indexed, sample_data, tmp_path, capsys):
    shutil.copy(sample_data / "val" / "Fruit" / "Kiwi" / "Kiwi_003.jpg", tmp_path / "good.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    code, lines, err = cli(["classify", indexed, tmp_path, "--json"], capsys)
    assert code == 0 and [json.loads(line)["image"] for line in lines] == [str(tmp_path / "good.jpg")]
    assert "skipped " + str(tmp_path / "bad.jpg") + ": " in err and "1 of 2 images skipped" in err


def test_a_folder_without_images_is_one_line(indexed, tmp_path, capsys):
    code, lines, err = cli(["search", indexed, tmp_path], capsys)
    assert code != 0 and lines == [] and err.strip().splitlines() == [
        f"error: {tmp_path}: no images (.bmp, .jpeg, .jpg, .png, .webp)"]


def test_global_flags_work_after_the_command(indexed, sample_data, capsys):
    assert hoist_global_flags(["classify", "B", "x.jpg", "-q", "--", "-v"]) == ["-q", "classify", "B", "x.jpg", "--", "-v"]
    image = sample_data / "val" / "Fruit" / "Kiwi" / "Kiwi_003.jpg"
    code, lines, _ = cli(["classify", indexed, image, "--json", "-q"], capsys)
    assert code == 0 and json.loads(lines[0])["image"] == str(image)


@pytest.mark.parametrize("typed, hint", [("clasify", " Did you mean 'classify'?"), ("serch", " Did you mean 'search'?"),
                                         ("xyzzy", "")])
def test_a_mistyped_command_gets_a_suggestion(typed, hint, capsys):
    code, _, err = cli([typed], capsys)
    assert code == 2 and err.strip() == f"error: no such command '{typed}'.{hint} (see 'shelfsight --help')"
