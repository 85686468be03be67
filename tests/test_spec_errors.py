"""Spec validation quality: the bad-spec corpus, message format, YAML safety, `--set` overrides.

Each file in tests/bad_specs/ holds one mistake (or several independent ones) and starts with
`# expect: LINE[:COL] text` lines; the test asserts that loading reports exactly those problems:
each expected text at its line (and column), and nothing else.
"""

import re
import time
from pathlib import Path

import pytest

import netspec
from netspec.errors import Problem, SpecError, did_you_mean, suggestions
from netspec.nn.layers import LAYERS
from netspec.spec.yamlio import MAX_DEPTH, format_path, load_yaml

HERE = Path(__file__).resolve().parent
CORPUS = sorted((HERE / "bad_specs").glob("*.yaml"))
SPECS = sorted((HERE.parent / "specs").glob("*.yaml"))
LENET = HERE.parent / "specs" / "lenet.yaml"

EXPECT = re.compile(r"^#\s*expect:\s*(?:(\d+)(?::(\d+))?\s+)?(\S.*?)\s*$")


def expectations(path: Path) -> list[tuple[int | None, int | None, str]]:
    """(line, col, text) from a corpus file's `# expect:` header lines."""
    text = path.read_bytes().decode("utf-8", errors="replace")  # non_utf8.yaml is not UTF-8
    found = []
    for raw in text.splitlines():
        m = EXPECT.match(raw)
        if m:
            line, col, message = m.groups()
            found.append((int(line) if line else None, int(col) if col else None, message))
    return found


def problems_of(source, **kwargs) -> list[Problem]:
    with pytest.raises(SpecError) as info:
        if isinstance(source, Path):
            netspec.load(source, **kwargs)
        else:
            netspec.loads(source, "spec.yaml", **kwargs)
    return info.value.problems


def test_corpus_is_big_and_every_file_says_what_it_expects():
    assert len(CORPUS) >= 30
    for path in CORPUS:
        assert expectations(path), f"{path.name} has no '# expect: LINE[:COL] text' header"


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_bad_spec_reports_exactly_the_expected_problems(path):
    expected = expectations(path)
    problems = problems_of(path)
    shown = "\n".join(str(p) for p in problems)
    unmatched = list(problems)
    for line, col, text in expected:
        match = next((p for p in unmatched if text in p.message
                      and (line is None or p.line == line)
                      and (col is None or p.col == col)), None)
        assert match is not None, f"expected {line}:{col} {text!r}; got:\n{shown}"
        unmatched.remove(match)
    assert not unmatched, "unexpected extra problems:\n" + "\n".join(map(str, unmatched))
    for p in problems:  # every problem names the file, and a line when the text has one
        assert p.file == str(path)
        assert str(p).startswith(f"{path}:")


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_good_specs_load_and_their_resolved_form_reloads(path):
    spec = netspec.load(path)
    assert spec.layers and len(spec.infos[-1].out_shape) == 1  # one score per class
    # Run directories and checkpoints store to_yaml(); strict validation must take it back.
    again = netspec.loads(spec.to_yaml(), "resolved.yaml")
    assert again.resolved() == spec.resolved()  # every default written out, the same spec


# ---------------------------------------------------------------- the message format


def test_problem_format():
    p = Problem("expects a flat input", "layers[3] (linear).out_features", "net.yaml", 12, 5)
    assert str(p) == "net.yaml:12:5: layers[3] (linear).out_features: expects a flat input"
    assert str(Problem("bad", "train.epochs", "net.yaml", 7)) == "net.yaml:7: train.epochs: bad"
    assert str(Problem("no such file: x.yaml")) == "no such file: x.yaml"
    assert str(Problem("bad", "seed", None, 3, 1)) == "line 3: seed: bad"
    assert str(Problem("empty", "", "net.yaml")) == "net.yaml: empty"
    err = SpecError([Problem("a", "x", "f.yaml", 1, 1), Problem("b", "y", "f.yaml", 2, 1)])
    assert str(err) == "f.yaml:1:1: x: a\nf.yaml:2:1: y: b"


def test_key_path_names_index_type_and_name():
    data = {"layers": [{"type": "conv2d"}, {"type": "linear", "name": "fc1"}]}
    assert format_path(("layers", 0, "kernel_size"), data) == "layers[0] (conv2d).kernel_size"
    assert format_path(("layers", 1, "out_features"), data) == \
        "layers[1] (linear 'fc1').out_features"
    assert format_path(("train", "optimizer", "lr")) == "train.optimizer.lr"


def test_problems_come_in_file_order():
    text = LENET.read_text().replace("lr: 0.02", "lr: 0").replace(
        "out_features: 84", "out_features: 0").replace("[1, 28, 28]}", "[1, 28, 28], x: 1}")
    lines = [p.line for p in problems_of(text)]
    assert len(lines) == 3 and lines == sorted(lines)


# ---------------------------------------------------------------- suggestions


def test_suggestions_are_ranked():
    assert suggestions("kernal_size", ["stride", "kernel_size", "padding"])[0] == "kernel_size"
    assert suggestions("Conv2D", LAYERS)[0] == "conv2d"  # case and '_' do not matter
    assert suggestions("dense", LAYERS)[0] == "linear"  # a name from another framework
    assert suggestions("adamm", ["sgd", "adam", "adamw"]) == ["adam", "adamw"]
    assert suggestions("zzz", ["sgd", "adam"]) == []
    assert did_you_mean("zzz", ["sgd"]) == ""
    assert did_you_mean("sdg", ["sgd", "adam"]) == " (did you mean 'sgd'?)"


@pytest.mark.parametrize("tag", sorted(LAYERS))
def test_every_layer_type_is_suggested_for_its_typo(tag):
    text = f"input: {{shape: [1, 28, 28]}}\nlayers:\n  - {{type: {tag}{tag[-1]}}}\n"
    [p] = problems_of(text)
    assert (p.line, p.col) == (3, 6)
    assert f"(did you mean '{tag}'" in p.message


# ---------------------------------------------------------------- YAML reading


@pytest.mark.parametrize("text, value", [
    ("1e-4", 0.0001), ("1E-4", 0.0001), ("5e3", 5000.0), ("-2.5e-3", -0.0025),
    ("+1e+2", 100.0), ("1.0e-4", 0.0001), (".5e1", 5.0), ("0.001", 0.001),
])
def test_exponent_floats_are_numbers(text, value):
    # PyYAML's YAML 1.1 rules read 1e-4 as the string "1e-4"; netspec follows YAML 1.2.
    loaded = load_yaml(f"x: {text}").data["x"]
    assert type(loaded) is float and loaded == value


@pytest.mark.parametrize("text, form, value", [
    ("010", "octal", 8), ("-007", "octal", -7), ("0b101", "binary", 5), ("1:30", "base-60", 90),
])
def test_yaml11_only_number_forms_are_refused(text, form, value):
    # YAML 1.1 (PyYAML) reads these silently as surprising numbers; YAML 1.2 does not.
    [p] = problems_of(f"x: {text}\n")
    assert p.message.startswith(f"'{text}' is a YAML 1.1 {form} number, read as {value};")


@pytest.mark.parametrize("text, value", [("0", 0), ("0x1F", 31), ("1_000", 1000), ("'010'", "010"),
                                         ("7.50", 7.5), ("-0.0", 0.0)])
def test_plain_numbers_and_quoted_text_are_kept(text, value):
    loaded = load_yaml(f"x: {text}").data["x"]
    assert loaded == value and type(loaded) is type(value)


def test_exponent_float_in_a_spec_and_quoted_one_refused():
    spec = netspec.loads(LENET.read_text().replace("weight_decay: 1e-4", "weight_decay: 1E-4"))
    assert spec.train.optimizer.weight_decay == 0.0001
    assert load_yaml('x: "1e-4"').data["x"] == "1e-4"  # quoted stays a string...
    [p] = problems_of(LENET.read_text().replace("weight_decay: 1e-4", 'weight_decay: "1e-4"'))
    assert p.path == "train.optimizer.weight_decay"  # ...which the spec refuses, clearly
    assert "quoted string '1e-4'; write it without quotes" in p.message


@pytest.mark.parametrize("field, value, words", [
    ("out_features", "true", "got true (a boolean)"),
    ("out_features", "'120'", "quoted string '120'"),
    ("out_features", "120.0", "whole number, got 120.0; write 120"),
    ("bias", "1", "true or false, got 1"),
])
def test_no_lax_type_coercion(field, value, words):
    text = LENET.read_text().replace("out_features: 120}", f"out_features: 120, {field}: {value}}}"
                                     if field != "out_features" else f"out_features: {value}}}")
    [p] = problems_of(text)
    assert p.path == f"layers[7] (linear 'fc1').{field}" and words in p.message


def test_python_tags_are_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    evil = ("input: {shape: [784]}\nlayers: [{type: linear, out_features: 10}]\n"
            f"name: !!python/object/apply:builtins.exec [\"open({str(marker)!r}, 'w')\"]\n")
    [p] = problems_of(evil)
    assert "YAML tag '!!python/object/apply:builtins.exec' is not allowed" in p.message
    assert not marker.exists()


@pytest.mark.parametrize("value", ["!!python/name:os.system", "!!binary aGVsbG8=",
                                   "!!set {a, b}", "!mytag 3"])
def test_other_tags_refused(value):
    [p] = problems_of(f"input: {{shape: [784]}}\nlayers: []\nname: {value}\n")
    assert p.line == 3 and "is not allowed" in p.message


def test_all_duplicate_keys_reported():
    text = ("input: {shape: [784]}\nseed: 1\nlayers:\n"
            "  - {type: linear, out_features: 10, out_features: 12}\nseed: 2\n")
    problems = problems_of(text)
    assert [(p.line, p.path) for p in problems] == [(4, "layers[0].out_features"), (5, "seed")]
    assert "first given on line 2" in problems[1].message


def test_merge_keys_may_replace_merged_values():
    text = ("input: {shape: [784]}\n"
            "layers:\n"
            "  - &hidden {type: linear, name: h1, out_features: 32}\n"
            "  - {<<: *hidden, name: h2}\n"
            "  - {type: linear, out_features: 10}\n")
    spec = netspec.loads(text)
    assert [layer.name for layer in spec.layers[:2]] == ["h1", "h2"]
    assert spec.layers[1].out_features == 32


def test_alias_bomb_fails_fast():
    start = time.perf_counter()
    [p] = problems_of(HERE / "bad_specs" / "billion_laughs.yaml")
    assert time.perf_counter() - start < 2.0  # a safety property, with a generous bound
    assert "through its aliases" in p.message


def test_deep_nesting_fails_fast():
    depth = 20_000  # PyYAML's scanner is quadratic in flow depth and its composer recursive
    start = time.perf_counter()
    [p] = problems_of("x: " + "[" * depth + "]" * depth)
    assert time.perf_counter() - start < 2.0
    assert f"more than {MAX_DEPTH} levels deep" in p.message and p.line == 1
    block = "".join("  " * i + "- \n" for i in range(3 * MAX_DEPTH)) + "  " * 3 * MAX_DEPTH + "1\n"
    [p] = problems_of(block)
    assert "nested" in p.message


def test_brackets_in_strings_and_comments_are_not_nesting():
    text = ("name: net  # [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n"
            "input: {shape: [784]}\nlayers: [{type: linear, out_features: 10}]\n"
            "data: {dataset: '" + "[" * 70 + "'}\n")
    assert netspec.loads(text).data.dataset.startswith("[[[")


def test_crlf_and_byte_order_mark(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + LENET.read_bytes().replace(b"\n", b"\r\n"))
    assert netspec.load(path).name == "lenet"


# ---------------------------------------------------------------- files


def test_missing_file_and_directory(tmp_path):
    [p] = problems_of(tmp_path / "nope.yaml")
    assert p.message == f"no such file: {tmp_path / 'nope.yaml'}"
    [p] = problems_of(tmp_path)
    assert "is a directory" in p.message


def test_in_channels_message_explains_shape_inference():
    text = LENET.read_text().replace("out_features: 84", "in_features: 120, out_features: 84")
    [p] = problems_of(text)
    assert p.path == "layers[9] (linear 'fc2').in_features"
    assert "shape inference" in p.message and "remove it" in p.message
    assert "did you mean" not in p.message  # 'out_features' would be the wrong fix


# ---------------------------------------------------------------- --set overrides


def test_overrides_apply():
    spec = netspec.load(LENET, overrides=["train.epochs=1", "layers[0].out_channels=8",
                                          "train.optimizer.lr=1e-3", "data.normalize=scale",
                                          "layers[-1].name=head"])
    assert spec.train.epochs == 1
    assert spec.layers[0].out_channels == 8
    assert spec.train.optimizer.lr == 0.001
    assert spec.data.normalize == "scale"
    assert spec.layers[11].name == "head"
    # conv1 now has 8 filters of 1x5x5 plus 8 biases; conv2 sees 8 input channels.
    assert spec.infos[0].params == 8 * 25 + 8
    assert spec.infos[3].param_shapes["weight"] == (16, 8, 5, 5)


def test_override_can_replace_a_whole_value():
    spec = netspec.load(LENET, overrides=["train.schedule={type: cosine}", "layers.0.stride=1"])
    assert spec.train.schedule.type == "cosine"


@pytest.mark.parametrize("item, words", [
    ("train.epochs", "expected key.path=value"),
    ("=3", "expected key.path=value"),
    ("layers[x].out_channels=3", "expected key.path=value"),
    ("layers[40].out_channels=8", "layers is a list of 12 items, so [40] is not in it"),
    ("train.epochs.every=2", "train.epochs holds the value 20"),
    ("train.epochs=[1", "cannot read the value '[1'"),
    ("train.epochs=!!python/name:os.system", "is not allowed"),
])
def test_bad_override_syntax_and_paths(item, words):
    [p] = problems_of(LENET, overrides=[item])
    assert p.file == f"--set {item}" and words in p.message
    assert str(p).startswith(f"--set {item}: ")


@pytest.mark.parametrize("item, path, words", [
    ("train.epochs=abc", "train.epochs", "should be a valid integer, got 'abc'"),
    ("train.epochs=0", "train.epochs", "greater than 0"),
    ("train.epoch=3", "train.epoch", "did you mean 'epochs'"),
    ("trian.epochs=3", "trian", "did you mean 'train'"),
    ("layers[0].type=conv", "layers[0] (conv 'conv1').type", "did you mean 'conv2d'"),
])
def test_bad_override_values_point_at_the_option(item, path, words):
    [p] = problems_of(LENET, overrides=[item])
    assert (p.file, p.line, p.path) == (f"--set {item}", None, path)
    assert words in p.message


def test_override_errors_and_file_errors_together():
    text = LENET.read_text().replace("out_features: 84", "out_features: -1")
    problems = problems_of(text, overrides=["train.epochs=-3"])
    assert [(p.file, p.line) for p in problems] == [("spec.yaml", 18), ("--set train.epochs=-3",
                                                                         None)]


def test_override_shape_error_is_reported_at_the_layer():
    [p] = problems_of(LENET, overrides=["layers[6]={type: relu}"])  # drops the flatten
    assert p.line == 16 and "add {type: flatten} before it" in p.message
