"""Recipes: layering, validation errors that name the file or flag, did-you-mean."""

from __future__ import annotations

import pytest

from nascli.config import Recipe, build_recipe, dotted, parse_size, read_yaml
from nascli.errors import ConfigError, UsageError


def test_defaults_validate():
    r = Recipe()
    assert r.search.algo == "adelaide-ea" and r.space.agg_size == 64 and len(r.space.op_names) == 7


def test_later_layers_win_and_none_never_overrides():
    r = build_recipe([("a.yml", {"candidate": {"epochs": 3, "lr": 0.01}}),
                      ("options", dotted({"candidate.epochs": 5, "candidate.lr": None}))])
    assert r.candidate.epochs == 5 and r.candidate.lr == 0.01


def test_unknown_key_gets_did_you_mean():
    with pytest.raises(ConfigError) as e:
        build_recipe([("my.yml", {"search": {"random_sampels": 3}})])
    assert "my.yml: search.random_sampels: unknown setting" in e.value.message
    assert e.value.hint == "did you mean 'search.random_samples'?"


def test_wrong_type_names_file_and_key():
    with pytest.raises(ConfigError, match=r"my.yml: candidate.epochs: .*integer.* \(got 'many'\)"):
        build_recipe([("my.yml", {"candidate": {"epochs": "many"}})])


def test_negative_budget_from_a_flag_names_the_flag():
    with pytest.raises(ConfigError, match=r"option --random-samples: .*greater than or equal to 0"):
        build_recipe([("options", dotted({"search.random_samples": -3}))],
                     {"search.random_samples": "--random-samples"})


def test_unknown_op_and_objective():
    with pytest.raises(ConfigError, match=r"unknown op 'sepconv_3x3' \(did you mean 'sep_conv_3x3'\?\)"):
        build_recipe([("r.yml", {"space": {"op_names": ["conv1x1", "sepconv_3x3"]}})])
    with pytest.raises(ConfigError, match=r"unknown objective 'latncy' \(did you mean 'latency'\?\)"):
        build_recipe([("r.yml", {"search": {"objectives": ["miou", "latncy"]}})])
    with pytest.raises(ConfigError, match="adelaide-ea"):
        build_recipe([("r.yml", {"search": {"algo": "darts"}})])


def test_yaml_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("search:\n  random_samples: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yml:\d+ is not valid YAML"):
        read_yaml(bad)
    listy = tmp_path / "list.yml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        read_yaml(listy)
    with pytest.raises(ConfigError, match="not found"):
        read_yaml(tmp_path / "missing.yml")


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yml"
    evil.write_text("seed: !!python/object/apply:os.system ['touch " + str(tmp_path / "pwned") + "']\n")
    with pytest.raises(ConfigError):
        read_yaml(evil)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("text, size", [("128x96", (128, 96)), ("64", (64, 64)), ("360X480", (360, 480))])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["128x", "axb", "0x5", "1x2x3"])
def test_parse_size_rejects(text):
    with pytest.raises(UsageError, match="--input-size"):
        parse_size(text)


def test_shipped_recipes_validate():
    from pathlib import Path

    recipes = sorted((Path(__file__).parents[1] / "recipes").glob("*.yml"))
    assert recipes, "recipes/ is empty"
    for path in recipes:
        build_recipe([(str(path), read_yaml(path))])


def test_adelaide_recipe_documents_exactly_the_defaults():
    from pathlib import Path

    path = Path(__file__).parents[1] / "recipes" / "adelaide_ea.yml"
    shipped = build_recipe([(str(path), read_yaml(path))]).model_dump(mode="json")
    defaults = Recipe().model_dump(mode="json")
    shipped.pop("fast_nas"), defaults.pop("fast_nas")  # documented in fast_nas.yml
    assert shipped == defaults


def test_a_partial_section_keeps_that_sections_own_defaults():
    r = build_recipe([("r.yml", {"train": {"epochs": 2}, "pretrain": {"lr": 0.01}})])
    assert (r.train.epochs, r.train.mode, r.train.lr) == (2, "full", 1e-3)
    assert (r.pretrain.lr, r.pretrain.epochs) == (0.01, 10)


def test_fast_nas_recipe_documents_exactly_the_defaults():
    from pathlib import Path

    from nascli.config import FastNasConfig

    path = Path(__file__).parents[1] / "recipes" / "fast_nas.yml"
    shipped = build_recipe([(str(path), read_yaml(path))])
    assert shipped.fast_nas == FastNasConfig() and shipped.search.algo == "fast-nas"


def test_a_setting_added_since_a_run_was_saved_counts_as_its_default(tmp_path):
    import yaml

    from nascli.config import first_difference

    saved = Recipe().model_dump(mode="json")
    del saved["search"]["latency_runtime"]  # a run saved before this setting existed
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(saved))
    assert first_difference(path, Recipe(), compare=("search.",)) is None
    changed = build_recipe([("r.yml", {"search": {"latency_runtime": "onnxruntime"}})])
    assert first_difference(path, changed, compare=("search.",)) == ("search.latency_runtime", "torch", "onnxruntime")


def test_proxyless_recipe_documents_exactly_the_defaults():
    from pathlib import Path

    from nascli.spaces.proxyless import ProxylessConfig

    path = Path(__file__).parents[1] / "recipes" / "proxyless.yml"
    shipped = build_recipe([(str(path), read_yaml(path))])
    assert shipped.proxyless == ProxylessConfig() and shipped.search.algo == "proxyless"
    assert shipped.candidate == Recipe().candidate  # the supernet's optimiser settings shown are the defaults


def test_demo_recipe_keeps_the_budget_the_readme_timed():
    """`make demo`'s time (README) was measured at these step counts; a change needs a new measurement."""
    import math
    from pathlib import Path

    path = Path(__file__).parents[1] / "recipes" / "demo.yml"
    r = build_recipe([(str(path), read_yaml(path))])
    steps = {name: max(cfg.min_steps, cfg.epochs * math.ceil(240 / cfg.batch_size))
             for name, cfg in (("pretrain", r.pretrain), ("train", r.train))}
    assert steps == {"pretrain": 360, "train": 240}
    assert r.search.random_samples + r.search.mutate_samples == 6 and r.candidate.mode == "cached"
    assert r.data.augment.color_jitter == 0  # colour is a cue of the demo data (nascli.data.demo)
