"""Hostile graph specs (blocks, repeat, with, inputs): each is a located error, fast, no traceback.

Found by the issue-9 audit after the graph language landed; the property tests in
test_properties.py generate more of the same class.
"""

from __future__ import annotations

import signal

import pytest

import netspec

BLOCK = """
input: {shape: [1, 28, 28]}
blocks:
  basic:
    params: {ch: 4}
    layers:
      - {type: conv2d, name: conv1, out_channels: $ch, kernel_size: 3, padding: 1}
      - {type: relu, name: r}
      - {type: add, inputs: [r, in]}
"""
STEM = "  - {type: conv2d, name: stem, out_channels: 4, kernel_size: 3, stride: 4, padding: 1}\n"
TAIL = "  - {type: flatten}\n  - {type: linear, out_features: 10}\n"


def spec(middle: str, blocks: str = BLOCK) -> str:
    return blocks + "layers:\n" + STEM + middle + TAIL


@pytest.fixture
def deadline():
    """Fail (instead of hanging the suite) when loading takes more than 10 s."""
    def expired(*_):
        raise TimeoutError("loading the spec did not finish in 10 s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def error(text: str, overrides=()) -> str:
    with pytest.raises(netspec.SpecError) as e:
        netspec.loads(text, "g.yaml", list(overrides))
    return str(e.value)


def test_huge_repeat_is_refused_before_expanding(deadline):
    # used to loop 10**9 times, adding one problem per copy: minutes and gigabytes
    msg = error(spec("  - {block: basic, repeat: 1000000000}\n"))
    assert "g.yaml:" in msg and "layers[1].repeat" in msg and "too large" in msg
    assert msg.count("\n") == 0
    msg = error(spec("  - {block: basic}\n"), ["layers[1].repeat=1000000000"])
    assert "--set layers[1].repeat=1000000000" in msg and "too large" in msg


def test_nested_repeats_stop_at_the_layer_cap_once(deadline):
    blocks = BLOCK.replace("blocks:\n", """blocks:
  o1: {layers: [{block: basic, repeat: 100}]}
  o2: {layers: [{block: o1, repeat: 100}]}
  o3: {layers: [{block: o2, repeat: 100}]}
""")
    msg = error(spec("  - {block: o3, repeat: 100}\n", blocks))
    assert msg.count("expands to more than 10,000 layers") == 1, msg


def test_a_non_text_layer_name_in_a_graph_spec_is_reported_not_replaced():
    # the expander wrote the full name over `name: 3`, so the typo vanished silently
    msg = error(spec("  - {type: relu, name: 3}\n"))
    assert "layers[1] (relu).name" in msg and "got 3" in msg
    msg = error(spec("  - {type: relu, name: ''}\n"))
    assert "layers[1] (relu).name" in msg


@pytest.mark.parametrize("use, words", [
    ("{block: basic, repeat: 0}", "repeat must be a whole number >= 1, got 0"),
    ("{block: basic, repeat: -1}", "got -1"),
    ("{block: basic, repeat: '3'}", "got '3'"),
    ("{block: basic, repeat: true}", "got True"),
    ("{block: basic, with: [1]}", "with is a mapping"),
    ("{block: basic, with: {cn: 8}}", "unknown parameter 'cn'"),
    ("{block: basic, inputs: stem}", "a list of one name"),
    ("{block: [basic]}", "unknown block"),
    ("{type: add, inputs: stem}", "should be a list"),
    ("{type: add, name: me, inputs: [me, stem]}", "this layer itself"),
    ("{block: basic}\n  - {type: add, inputs: [basic1, stem, in]}", "'in' is a block's"),
    ("{type: add, inputs: [stem, in]}", "'in' is a block's input"),
    ("{type: flatten, name: f}\n  - {type: concat, inputs: [f, stem]}", "differ in rank"),
])
def test_graph_mistakes_are_located(use, words):
    msg = error(spec(f"  - {use}\n"))
    assert msg.startswith("g.yaml:") and words in msg, msg


@pytest.mark.parametrize("value", ["$", "$1x", "'$a b'"])
def test_a_dollar_without_a_parameter_name_says_how_to_write_one(value):
    blocks = BLOCK.replace("kernel_size: 3, padding: 1}", f"kernel_size: {value}, padding: 1}}")
    msg = error(spec("  - {block: basic}\n", blocks))
    assert "kernel_size" in msg and "not a parameter reference" in msg and "e.g. $ch" in msg
    assert "{: 16}" not in msg  # the old advice declared a parameter with an empty name


@pytest.mark.parametrize("join", ["add", "concat"])
def test_a_join_may_read_the_same_output_twice_and_its_gradient_counts_both(join):
    from netspec.plan.gradcheck import check_spec

    text = spec(f"  - {{type: {join}, inputs: [stem, stem]}}\n").replace(
        "input: {shape: [1, 28, 28]}", "input: {shape: [1, 8, 8]}\n"
                                       "data: {dataset: custom, num_classes: 10}")
    report = check_spec(netspec.loads(text, "g.yaml"))
    assert report.passed and report.rows, [r for r in report.rows if not r.passed]


def deep_blocks(n: int) -> str:
    """Block b0 uses b1, which uses b2, ... n levels; the last holds a relu."""
    lines = ["input: {shape: [1, 28, 28]}", "blocks:"]
    for i in range(n):
        inner = f"{{block: b{i + 1}}}" if i < n - 1 else "{type: relu}"
        lines.append(f"  b{i}: {{layers: [{inner}]}}")
    return "\n".join(lines + ["layers:", "  - {block: b0}"]) + "\n" + TAIL


def test_blocks_nested_too_deep_are_an_error_not_a_recursion_error():
    # 600 levels raised RecursionError (a traceback); 32 still load
    assert len(netspec.loads(deep_blocks(32), "g.yaml").layers) == 3
    msg = error(deep_blocks(600))
    assert "blocks nest more than 32 deep" in msg and "b31.layers[0].block" in msg


def test_an_unused_layer_in_a_repeated_block_is_reported_once():
    # each copy named its own full name (basic1.0.relu1, basic1.1.relu1, ...): one line per copy
    unused = BLOCK.replace("- {type: relu, name: r}",
                           "- {type: relu, name: r}\n      - {type: tanh, name: t, inputs: [in]}")
    msg = error(spec("  - {block: basic, repeat: 5}\n", unused))
    assert msg.count("never used") == 1 and "'t' is never used" in msg, msg
    assert "(in basic1.0: block 'basic' used at line" in msg


def test_unicode_block_and_use_names_are_told_the_rule_is_ascii():
    # as for layer names (issue 9): "letters" let a user think 'ä' is one
    msg = error(spec("  - {block: basic, name: blöck}\n"))
    assert "layers[1].name" in msg and "ASCII letters" in msg
    msg = error(spec("  - {type: relu}\n", BLOCK.replace("  basic:", "  bäsic:")))
    assert "blocks.bäsic" in msg and "ASCII letters" in msg


def test_a_name_clash_with_a_blocks_copy_points_at_the_written_layer():
    # "already used by layers[4]" counted the expanded list: in the file, layers[4] is the linear
    msg = error(spec("  - {block: basic, name: layer1, repeat: 2}\n"
                     "  - {type: relu, name: layer1.1.conv1}\n"))
    assert "'layer1.1.conv1' is already used by blocks.basic.layers[0] (line 7, in layer1.1)" \
        in msg, msg
