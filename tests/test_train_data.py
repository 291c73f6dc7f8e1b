"""`in2 train` reads a dataset folder as its files are now. What this catches: datasets 5.2 keys its Arrow
cache of a folder whose README lists `configs:` by folder name and config only, so a re-synthesized folder
(or another folder of the same name) trained on the rows cached from the first one."""

import pandas as pd

from in2.train.args import In2ScriptArguments
from in2.train.data import load_splits

README = """---
configs:
- config_name: all
  default: true
  data_files:
  - split: train
    path: data/*/train-*.parquet
---
"""


def write_folder(folder, rows: int, part: str = "fine_grained"):
    (folder / "data" / part).mkdir(parents=True)
    (folder / "README.md").write_text(README)
    frame = pd.DataFrame({"id": [f"{part}-{i}" for i in range(rows)], "text": ["x"] * rows})
    frame.to_parquet(folder / "data" / part / "train-00000-of-00001.parquet")


def test_a_rewritten_folder_and_a_namesake_folder_load_their_own_rows(tmp_path):
    import shutil

    args = lambda folder: In2ScriptArguments(dataset_name=str(folder), dataset_config="all")  # noqa: E731
    first, namesake = tmp_path / "a" / "in2-data", tmp_path / "b" / "in2-data"
    write_folder(first, 3)
    write_folder(namesake, 10)
    assert len(load_splits(args(first), want_eval=False)[0]) == 3
    assert len(load_splits(args(namesake), want_eval=False)[0]) == 10  # not the 3 rows cached from `first`
    shutil.rmtree(first / "data")
    write_folder(first, 7)  # synthesized again, into the same folder: the same file names, other rows
    train, _ = load_splits(args(first), want_eval=False)
    assert sorted(train["id"]) == sorted(f"fine_grained-{i}" for i in range(7))
    # the prepared-data key (in2 train's tokenized copy) changes with the files too: datasets' own fingerprint
    # of the loaded split stayed the same across such a rewrite
    from in2.train.data import folder_version

    before = folder_version(first)
    (first / "data" / "fine_grained" / "train-00000-of-00001.parquet").touch()
    assert folder_version(first) != before and folder_version(tmp_path / "no-such-folder") is None
