"""A synthetic folder is stamped with the recipe it was written with (``synthetic.json``), and a run whose
``data.synth_*`` ask for another recipe stops at start instead of training on data of another size."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.helpers import compose_config, run_script
from vlmlab.data.brats.datamodule import BratsDataModule
from vlmlab.data.mcqa.datamodule import MCQADataModule
from vlmlab.data.synthetic.folder import STAMP, SyntheticRecipe, use_synthetic
from vlmlab.data.synthetic.mcqa import write as write_mcqa
from vlmlab.exits import EXIT_FAILED, ConfigError

SMALL = {"num_val": 2, "num_test": 2, "kinds": ["synth_colour"]}


def mcqa(root: Path, synth_rows: int = 4, **options: object) -> MCQADataModule:
    return MCQADataModule(
        root=str(root), synthesize=True, synth_rows=synth_rows, synth_options={**SMALL, **options}
    )


def test_writing_stamps_the_recipe(tmp_path: Path) -> None:
    root = tmp_path / "synthetic" / "mcqa"
    mcqa(root).prepare_data()
    stamp = json.loads((root / STAMP).read_text())
    assert stamp["writer"] == "vlmlab.data.synthetic.mcqa.write"
    # Every argument of the writer, its defaults included, as JSON.
    assert stamp["arguments"] == {
        "num_train": 4,
        "num_val": 2,
        "num_test": 2,
        "size": 64,
        "seed": 0,
        "shuffle_options": True,
        "reasoning_fraction": 0.5,
        "kinds": ["synth_colour"],
    }
    assert (root / "train.parquet").is_file()
    assert [p.name for p in root.parent.iterdir()] == ["mcqa"]  # no scratch left


def test_the_same_recipe_reuses_the_folder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "mcqa"
    mcqa(root).prepare_data()
    before = {p.name: p.stat().st_mtime_ns for p in root.iterdir()}
    caplog.clear()  # the first write's INFO line is captured too when an earlier test set INFO on vlmlab
    with caplog.at_level(logging.INFO, logger="vlmlab"):
        # A tuple where the config gives a list: equal after a JSON round trip.
        mcqa(root, kinds=("synth_colour",)).prepare_data()
    assert {p.name: p.stat().st_mtime_ns for p in root.iterdir()} == before
    assert not [r for r in caplog.records if r.levelno >= logging.INFO], caplog.text


@pytest.mark.parametrize(
    ("changed", "expected"),
    [
        ({"synth_rows": 8}, "data.synth_rows: 4 in the folder, 8 asked"),
        ({"num_val": 3}, "data.synth_options.num_val: 2 in the folder, 3 asked"),
        # An argument left at the writer's default is compared too.
        ({"shuffle_options": False}, "data.synth_options.shuffle_options: True in the folder, False asked"),
    ],
)
def test_another_recipe_stops_naming_the_folder_and_both_values(
    tmp_path: Path, changed: dict, expected: str
) -> None:
    root = tmp_path / "mcqa"
    mcqa(root).prepare_data()
    rows = changed.pop("synth_rows", 4)
    with pytest.raises(ConfigError) as raised:
        mcqa(root, synth_rows=rows, **changed).prepare_data()
    message = str(raised.value)
    assert expected in message and message.count(" asked") == 1
    assert f"data.root={root} " in message and f"Delete {root} " in message
    assert "point data.root elsewhere (or set the arguments back)" in message


def brats(root: Path, synth_cases: int, **options: object) -> BratsDataModule:
    return BratsDataModule(
        root=str(root),
        train_sources=[{"kind": "brats", "path": "train"}],
        synthesize=True,
        synth_cases=synth_cases,
        synth_options=options,
    )


@pytest.mark.parametrize(
    ("cases", "options", "expected"),
    [
        (512, {"spread": 1.0}, "data.synth_cases: 24 in the folder, 512 asked"),
        (24, {"spread": 0.5}, "data.synth_options.spread: 1.0 in the folder, 0.5 asked"),
    ],
)
def test_a_brats_folder_of_another_preset_stops(
    tmp_path: Path, cases: int, options: dict, expected: str
) -> None:
    """The lead's case: a 24-case folder reused by a preset that asks for 512 (stamp written by hand)."""
    root = tmp_path / "brats"
    (root / "train").mkdir(parents=True)
    (root / STAMP).write_text(json.dumps(brats(root, 24, spread=1.0).synthetic_recipe().stamp()))
    with pytest.raises(ConfigError, match=re.escape(expected)):
        brats(root, cases, **options).prepare_data()


def test_a_folder_without_stamp_is_used_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "mcqa"
    write_mcqa(root, num_train=2, **SMALL)  # a user's own data, or written before stamps
    datamodule = mcqa(root, synth_rows=99)
    with caplog.at_level(logging.WARNING, logger="vlmlab"):
        datamodule.prepare_data()
        datamodule.prepare_data()  # validate, then fit: each calls prepare_data
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"data.root={root} holds data but no {STAMP}: it is used as it is, and the recipe it was "
        "written with cannot be checked against this run's"
    ]
    assert not (root / STAMP).exists()
    datamodule.setup("fit")
    assert len(datamodule.datasets["train"]) == 2


def test_an_unknown_option_names_its_key(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"data.synth_options.bogus: vlmlab.data.synthetic.mcqa.write has no"
    ):
        mcqa(tmp_path / "mcqa", bogus=1).prepare_data()
    assert not (tmp_path / "mcqa").exists()


def fake_writer(folder: Path, rows: int = 1) -> None:
    (Path(folder) / "rows.txt").write_text(str(rows))


def test_a_sweep_job_that_loses_the_rename_to_another_recipe_stops(tmp_path: Path) -> None:
    """Two jobs of a sweep write the same folder with other arguments: the one whose copy is discarded
    sees the winner's stamp."""
    root = tmp_path / "synthetic"
    winner = SyntheticRecipe(fake_writer, {"rows": 2})

    def slow_writer(folder: Path, rows: int = 1) -> None:
        fake_writer(folder, rows)
        root.mkdir()
        winner.write(root)  # the other job renamed its copy into place meanwhile

    use_synthetic(tmp_path / "alone", SyntheticRecipe(fake_writer, {"rows": 1}), has_data=False)
    assert json.loads((tmp_path / "alone" / STAMP).read_text())["arguments"] == {"rows": 1}
    with pytest.raises(ConfigError, match="rows: 2 in the folder, 1 asked"):
        use_synthetic(root, SyntheticRecipe(slow_writer, {"rows": 1}, keys={"rows": "rows"}), has_data=False)
    assert (root / "rows.txt").read_text() == "2"


def test_train_stops_at_start_with_one_message(tmp_path: Path) -> None:
    """experiment=mcqa_sft preset=tiny over a folder stamped with 24 rows: exit 1, one message, no
    traceback, before any data is read (the parquet files are not even parquet)."""
    overrides = ["experiment=mcqa_sft", "preset=tiny", f"paths.data_dir={tmp_path / 'data'}"]
    cfg = compose_config("train", overrides, tmp_path)
    OmegaConf.resolve(cfg)
    datamodule = instantiate(cfg.data, _partial_=True, _convert_="all")(collator=None)
    root = Path(cfg.data.root)
    assert root == tmp_path / "data" / "synthetic" / "mcqa"
    datamodule.synth_rows = 24  # an older preset's recipe
    root.mkdir(parents=True)
    (root / STAMP).write_text(json.dumps(datamodule.synthetic_recipe().stamp()))
    for split in ("train", "val", "test"):
        (root / f"{split}.parquet").write_text("not parquet")
    result = run_script(
        ["train.py", *overrides, f"paths.log_dir={tmp_path / 'logs'}", f"hydra.run.dir={tmp_path / 'run'}"],
        timeout=300,
        expect=None,
    )
    output = result.stdout + result.stderr
    assert result.returncode == EXIT_FAILED, result.stderr[-4000:]
    assert "Traceback" not in output, output[-4000:]
    expected = f"config error: data.root={root} holds a synthetic dataset written with other arguments"
    assert output.count(expected) == 1, output[-4000:]
    assert output.count(f"data.synth_rows: 24 in the folder, {cfg.data.synth_rows} asked") == 1
    assert "not parquet" not in output and (root / "train.parquet").read_text() == "not parquet"


def test_a_folder_written_by_the_cli_is_stamped_as_the_datamodule_would(tmp_path: Path) -> None:
    from vlmlab.tools.synth import main

    root = tmp_path / "mcqa"
    assert main(["mcqa", str(root), "--num-train", "4", "--num-val", "2", "--num-test", "2"]) == 0
    options = {"num_val": 2, "num_test": 2}
    datamodule = MCQADataModule(root=str(root), synthesize=True, synth_rows=4, synth_options=options)
    assert json.loads((root / STAMP).read_text()) == datamodule.synthetic_recipe().stamp()
    datamodule.prepare_data()  # the same recipe: used as it is
    again = MCQADataModule(root=str(root), synthesize=True, synth_rows=5, synth_options=options)
    with pytest.raises(ConfigError, match=re.escape("data.synth_rows: 4 in the folder, 5 asked")):
        again.prepare_data()
