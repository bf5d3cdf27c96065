"""A1111 attention syntax (docs/reference/a1111_api.md §6.1) and extra-network tags (§6.2)."""

import pytest

from backends.local.prompt_parser import parse_prompt_attention, strip_extra_networks

UP = 1.1
DOWN = 1 / 1.1

CASES = [
    # plain text and brackets
    ("a cat", [("a cat", 1.0)]),
    ("(a)", [("a", UP)]),
    ("((a))", [("a", UP * UP)]),
    ("(((a)))", [("a", UP**3)]),
    ("[a]", [("a", DOWN)]),
    ("[[a]]", [("a", DOWN * DOWN)]),
    ("x (a) y", [("x ", 1.0), ("a", UP), (" y", 1.0)]),
    # explicit weights: signed, fractional, whitespace around the number
    ("(a:1.3)", [("a", 1.3)]),
    ("(a:-0.5)", [("a", -0.5)]),
    ("(a:.5)", [("a", 0.5)]),
    ("(a:+2)", [("a", 2.0)]),
    ("(a: 1.3 )", [("a", 1.3)]),
    ("(a:0)", [("a", 0.0)]),
    # nesting multiplies
    ("(a (b:1.5) c)", [("a ", UP), ("b", 1.5 * UP), (" c", UP)]),
    ("[a (b)]", [("a ", DOWN), ("b", UP * DOWN)]),
    ("((a:1.5))", [("a", 1.5 * UP)]),
    # round and square brackets close independently
    ("(a [b) c]", [("a ", UP), ("b", UP * DOWN), (" c", DOWN)]),
    # unbalanced openers close at the end; stray closers are text
    ("(a", [("a", UP)]),
    ("((a)", [("a", UP * UP)]),
    ("[a", [("a", DOWN)]),
    ("x (a", [("x ", 1.0), ("a", UP)]),
    ("a)", [("a)", 1.0)]),
    ("a]", [("a]", 1.0)]),
    ("a) (b)", [("a) ", 1.0), ("b", UP)]),
    # escapes; a backslash before anything else is dropped
    (r"\(a\)", [("(a)", 1.0)]),
    (r"\[a\]", [("[a]", 1.0)]),
    ("a \\\\ b", [("a \\ b", 1.0)]),
    (r"\x", [("x", 1.0)]),
    ("a\\", [("a", 1.0)]),
    (r"(\(a\))", [("(a)", UP)]),
    # a colon that does not end a weight is text
    ("a:b", [("a:b", 1.0)]),
    ("a:1.3)", [("a:1.3)", 1.0)]),
    ("(a:b)", [("a:b", UP)]),
    ("(a:1.2.3)", [("a:1.2.3", UP)]),  # A1111 raises here; we read it as text
    # BREAK: an uppercase word, its surrounding whitespace eaten
    ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("BREAK b", [("BREAK", -1.0), ("b", 1.0)]),
    ("a BREAK", [("a", 1.0), ("BREAK", -1.0)]),
    ("a BREAK BREAK b", [("a", 1.0), ("BREAK", -1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("a,BREAK,b", [("a,", 1.0), ("BREAK", -1.0), (",b", 1.0)]),
    ("BREAKfast", [("BREAKfast", 1.0)]),
    ("a break b", [("a break b", 1.0)]),
    ("(a BREAK b)", [("a", UP), ("BREAK", -1.0), ("b", UP)]),  # brackets never reweight a BREAK
    # adjacent runs of equal weight merge
    ("(a)(b)", [("ab", UP)]),
    ("(a) (b)", [("a", UP), (" ", 1.0), ("b", UP)]),
    ("(a:1.1)(b)", [("ab", UP)]),
    # empty
    ("", [("", 1.0)]),
    ("()", [("", 1.0)]),
    # scheduling, alternation and AND are not interpreted, and do not crash
    ("[a:b:0.5]", [("a:b:0.5", DOWN)]),
    ("[a|b]", [("a|b", DOWN)]),
    ("a AND b", [("a AND b", 1.0)]),
    ("[a:(b:1.2):3]", [("a:", DOWN), ("b", 1.2 * DOWN), (":3", DOWN)]),
]


def _approx(runs):
    return [(text, pytest.approx(weight)) for text, weight in runs]


@pytest.mark.parametrize("text,expected", CASES, ids=[repr(c[0]) for c in CASES])
def test_parse_prompt_attention(text, expected):
    assert parse_prompt_attention(text) == _approx(expected)


def test_results_are_plain_tuples():
    runs = parse_prompt_attention("a (b) BREAK c")
    assert all(type(r) is tuple and isinstance(r[0], str) and isinstance(r[1], float) for r in runs)


@pytest.mark.parametrize("text", ["(((", ")))", "[[[", "]]]", ":::", "\\", "(:1.2)", "[:]", "(a:)", "<lora:>", "((a]]"])
def test_odd_input_never_crashes(text):
    runs = parse_prompt_attention(text)
    assert runs and all(isinstance(t, str) for t, _ in runs)


def test_strip_extra_networks():
    text, nets = strip_extra_networks("a cat <lora:film grain:0.8>, night <hypernet:x:1><lora:y:0.5:te=1>")
    assert text == "a cat , night "
    assert nets == [("lora", ["film grain", "0.8"]), ("hypernet", ["x", "1"]), ("lora", ["y", "0.5", "te=1"])]


def test_strip_extra_networks_leaves_other_angle_brackets():
    assert strip_extra_networks("a <b> c <:x>") == ("a <b> c <:x>", [])
    assert strip_extra_networks("") == ("", [])
