"""CSV tables and .npz archives as datasets: label columns, the sorted label mapping, located
errors for bad cells and unseen labels, held-out splits, object arrays refused."""

import numpy as np
import pytest
from conftest import ROOT

import netspec
from netspec.data import LoadOptions, load_dataset, prepare
from netspec.data.dataset import stratified_split
from netspec.errors import DataError, SpecError

IRIS = ROOT / "specs" / "data" / "iris.csv"


def write(path, text):
    path.write_text(text)
    return path


def messages(excinfo) -> str:
    return "\n".join(str(p) for p in excinfo.value.problems)


def test_iris_label_is_the_last_column_and_classes_are_sorted():
    ds = load_dataset(str(IRIS), options=LoadOptions(test_fraction=0.2, split_seed=0))
    assert ds.kind == "csv" and ds.input_shape == (4,) and ds.label_column == "species"
    assert ds.columns == ("sepal_length", "sepal_width", "petal_length", "petal_width")
    assert ds.class_names == ("setosa", "versicolor", "virginica")
    assert len(ds.train) == 120 and len(ds.test) == 30
    assert np.bincount(ds.test.labels).tolist() == [10, 10, 10]
    assert ds.train.images.dtype == np.float64
    splits = prepare(ds)
    x = splits["train"][0]
    assert np.allclose(x.mean(axis=0), 0, atol=1e-6) and np.allclose(x.std(axis=0), 1, atol=1e-5)
    assert len(splits.mean) == 4  # per feature


def test_a_column_named_label_wins_and_numbers_sort_as_numbers(tmp_path):
    path = write(tmp_path / "t.csv", "label,a,b\n10,1,2\n2,3,4\n10,5,6\n9,7,8\n2,1,1\n9,2,2\n")
    ds = load_dataset(str(path), options=LoadOptions(test_fraction=0.34))
    assert ds.label_column == "label" and ds.columns == ("a", "b")
    assert ds.class_names == ("2", "9", "10")  # 2 < 9 < 10, not "10" < "2"
    chosen = load_dataset(str(path), options=LoadOptions(label_column="a", test_fraction=0.34))
    assert chosen.columns == ("label", "b")
    with pytest.raises(DataError, match="no column 'lable'.*did you mean 'label'"):
        load_dataset(str(path), options=LoadOptions(label_column="lable"))


@pytest.mark.parametrize(("cell", "why"), [("", "the value is missing"),
                                           ("abc", "'abc' is not a finite number"),
                                           ("nan", "'nan' is not a finite number")])
def test_a_bad_cell_names_its_line_and_column(tmp_path, cell, why):
    path = write(tmp_path / "t.csv", f"x,y,label\n1,2,a\n3,{cell},b\n5,6,a\n7,8,b\n")
    with pytest.raises(DataError) as e:
        load_dataset(str(path))
    assert f"t.csv:3: column 'y': {why}" in messages(e)


def test_every_bad_cell_and_ragged_line_is_listed(tmp_path):
    path = write(tmp_path / "t.csv", "x,y,label\n1,,a\nq,2,b\n5,6\n")
    with pytest.raises(DataError) as e:
        load_dataset(str(path))
    assert "t.csv:4: 2 values, but the header names 3 columns" in messages(e)
    fixed = write(tmp_path / "u.csv", "x,y,label\n1,,a\nq,2,b\n")
    with pytest.raises(DataError) as e:
        load_dataset(str(fixed))
    text = messages(e)
    assert "u.csv:2: column 'y'" in text and "u.csv:3: column 'x'" in text


def test_a_label_never_seen_in_training_is_an_error(tmp_path):
    train = write(tmp_path / "train.csv", "x,label\n1,a\n2,b\n3,a\n4,b\n")
    write(tmp_path / "test.csv", "x,label\n1,a\n2,c\n3,c\n")
    with pytest.raises(DataError) as e:
        load_dataset(str(tmp_path))  # a directory with train.csv and test.csv
    assert "test.csv:3: column 'label': label 'c' is not a class of the training table" \
        in messages(e)
    ok = write(tmp_path / "other.csv", "x,label\n9,b\n")
    ds = load_dataset(str(train), options=LoadOptions(test=str(ok)))
    assert ds.held_out is None and ds.test.labels.tolist() == [1]


def test_a_table_spec_trains_and_validate_shows_the_mapping():
    from typer.testing import CliRunner

    from netspec.cli import app

    result = CliRunner().invoke(app, ["validate", str(ROOT / "specs" / "iris-mlp.yaml")])
    assert result.exit_code == 0, result.output
    assert "classes setosa=0, versicolor=1, virginica=2" in result.output
    assert "30 rows held out (test_fraction 0.2, stratified, split_seed 0)" in result.output
    with netspec.Model(ROOT / "specs" / "iris-mlp.yaml", ["train.epochs=20"], workers=1) as m:
        history = m.fit()
    assert history[-1]["test_acc"] >= 0.8 and history[-1]["train_loss"] < history[0]["train_loss"]


def test_input_shape_must_match_the_feature_columns():
    spec = netspec.load(ROOT / "specs" / "iris-mlp.yaml", ["input.shape=[5]"])
    from netspec.train.inputs import load_splits

    with pytest.raises(SpecError) as e:
        load_splits(spec)
    text = messages(e)
    assert "input.shape" in text and "4 feature columns" in text
    assert "set input.shape to [4]" in text


# ------------------------------------------------------------------ .npz


def test_npz_images_channels_last_and_a_held_out_split(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)
    y = np.arange(30) % 3
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, class_names=np.array(["a", "b", "c"]))
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert ds.input_shape == (3, 8, 8) and ds.class_names == ("a", "b", "c")
    assert len(ds.test) == 6 and np.bincount(ds.test.labels).tolist() == [2, 2, 2]
    kept, held = stratified_split(y, 6, 0)  # the default test_fraction 0.2 and split_seed 0
    assert np.array_equal(ds.train.images, x[kept].transpose(0, 3, 1, 2))
    assert np.array_equal(ds.test.images, x[held].transpose(0, 3, 1, 2))


def test_npz_text_labels_and_float_features(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.random.rand(8, 3), y_train=np.array(list("abab" * 2)),
             x_test=np.random.rand(2, 3), y_test=np.array(["b", "a"]))
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert ds.class_names == ("a", "b") and ds.test.labels.tolist() == [1, 0]
    assert ds.is_table and ds.input_shape == (3,)
    with pytest.raises(DataError, match="'scale' divides uint8 pixels"):
        prepare(ds, "scale")


def test_an_npz_with_object_arrays_is_refused_without_unpickling(tmp_path):
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = [1, 2], [3]
    np.savez(tmp_path / "d.npz", x_train=ragged, y_train=np.array([0, 1]))
    with pytest.raises(DataError) as e:
        load_dataset(str(tmp_path / "d.npz"))
    assert "x_train: it holds Python objects" in messages(e)
    assert "never unpickles" in messages(e)


def test_npz_mismatched_lengths_and_missing_arrays(tmp_path):
    np.savez(tmp_path / "a.npz", x_train=np.zeros((4, 2)), y_train=np.zeros(3, int))
    with pytest.raises(DataError, match="x_train holds 4 samples but y_train 3 labels"):
        load_dataset(str(tmp_path / "a.npz"))
    np.savez(tmp_path / "b.npz", x_train=np.zeros((4, 2)))
    with pytest.raises(DataError, match="no y_train"):
        load_dataset(str(tmp_path / "b.npz"))
