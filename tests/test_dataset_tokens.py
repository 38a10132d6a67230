"""The two token-count shortcuts: each proven for the tokenizer at hand, or not taken."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jarvis.chat import apply_chat_template, load_tokenizer
from jarvis.dataset.tokens import ChatSkeleton, CompiledChatTemplate, SegmentEncoder
from tokenizer_fixture import CHATML, make_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "templates"
ROLES = ("system", "user", "assistant")


@pytest.fixture(scope="module")
def chatml(tmp_path_factory: pytest.TempPathFactory) -> object:
    return load_tokenizer(make_tokenizer(tmp_path_factory.mktemp("tok"), added=("<think>",)))


def _with_template(tmp: Path, template: str) -> object:
    return load_tokenizer(make_tokenizer(tmp, template=template))


def test_a_content_opaque_template_gets_a_skeleton(chatml: object) -> None:
    full = ChatSkeleton.probe(chatml, ROLES, generation=False, thinking=False)
    prompt = ChatSkeleton.probe(chatml, ROLES[:2], generation=True, thinking=False)
    assert full is not None and prompt is not None
    assert full.pieces == [
        "<|im_start|>system\n", "<|im_end|>\n<|im_start|>user\n",
        "<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>\n",
    ]  # fmt: skip
    assert (
        prompt.render(["S", "U"])
        == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    )


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=60, deadline=None)
@given(contents=st.tuples(TEXT, TEXT, TEXT))
def test_the_skeleton_renders_what_the_template_renders(
    chatml: object, contents: tuple[str, ...]
) -> None:
    skeleton = ChatSkeleton.probe(chatml, ROLES, generation=False, thinking=False)
    assert skeleton is not None
    messages = [{"role": r, "content": c} for r, c in zip(ROLES, contents, strict=True)]
    assert skeleton.render(contents) == apply_chat_template(
        chatml, messages, add_generation_prompt=False, enable_thinking=False
    )


@pytest.mark.parametrize(
    "why, content",
    [
        ("trims", "{{ message['content'] | trim }}"),
        (
            "tests a substring",
            "{% if '</think>' in message['content'] %}R{% endif %}{{ message['content'] }}",
        ),
        ("calls a method", "{{ message['content'].split('x')[0] }}"),
        ("branches on emptiness", "{% if message['content'] %}{{ message['content'] }}{% endif %}"),
        ("escapes as JSON", "{{ message['content'] | tojson }}"),
        ("changes case", "{{ message['content'] | upper }}"),
        (
            "tests a concatenation",
            "{% set c = 'x' + message['content'] %}{% if c.startswith('xa') %}A{% endif %}{{ c }}",
        ),
    ],
)
def test_a_template_that_looks_at_content_gets_none(tmp_path: Path, why: str, content: str) -> None:
    template = CHATML.replace("message['content'] + '<|im_end|>'", "'<|im_end|>'").replace(
        "{{ '<|im_start|>' + message['role'] + '\\n' + ",
        "{{ '<|im_start|>' + message['role'] + '\\n' }}" + content + "{{ ",
    )
    tok = _with_template(tmp_path, template)
    assert ChatSkeleton.probe(tok, ROLES, generation=False, thinking=False) is None, why


@pytest.mark.parametrize("name", ["qwen3", "llama-3.1-instruct"])
def test_vendor_templates_that_read_content_get_none(tmp_path: Path, name: str) -> None:
    # Qwen3 looks for </think> and <tool_response> in content; Llama 3.1 trims it.
    tok = _with_template(tmp_path, (FIXTURES / f"{name}.jinja").read_text())
    assert ChatSkeleton.probe(tok, ROLES, generation=False, thinking=False) is None


def test_qwen25_vendor_template_gets_a_skeleton(tmp_path: Path) -> None:
    tok = _with_template(tmp_path, (FIXTURES / "qwen2.5-instruct.jinja").read_text())
    skeleton = ChatSkeleton.probe(tok, ROLES, generation=False, thinking=False)
    assert skeleton is not None and skeleton.pieces[0] == "<|im_start|>system\n"


@settings(max_examples=80, deadline=None)
@given(
    parts=st.lists(
        st.one_of(TEXT, st.sampled_from(["<|im_start|>", "<|im_end|>", "<think>", "\n", " "])),
        max_size=12,
    )
)
def test_pieces_encode_as_the_whole_text(chatml: object, parts: list[str]) -> None:
    fast = chatml._tokenizer  # type: ignore[attr-defined]
    encoder = SegmentEncoder.for_tokenizer(fast)
    assert encoder is not None
    text = "".join(parts)
    want = fast.encode(text, add_special_tokens=False).ids
    assert encoder.encode_many([text, text]) == [want, want]


def test_a_token_that_strips_its_neighbours_disables_pieces(tmp_path: Path) -> None:
    from tokenizers import AddedToken, Tokenizer

    folder = make_tokenizer(tmp_path / "tok")
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert SegmentEncoder.for_tokenizer(tok) is not None
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True)])
    assert SegmentEncoder.for_tokenizer(tok) is None


@pytest.mark.parametrize("name", ["qwen3", "llama-3.1-instruct", "qwen2.5-instruct"])
@settings(max_examples=25, deadline=None)
@given(contents=st.tuples(TEXT, TEXT, TEXT), generation=st.booleans())
def test_the_direct_render_is_apply_chat_templates(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    contents: tuple[str, ...],
    generation: bool,
) -> None:
    tok = _vendor(tmp_path_factory, name)
    direct = CompiledChatTemplate.probe(tok, thinking=False)
    assert direct is not None
    for roles in (ROLES, ROLES[:2], ROLES[1:]):
        messages = [{"role": r, "content": c} for r, c in zip(roles, contents, strict=False)]
        assert direct.render(messages, generation) == apply_chat_template(
            tok, messages, add_generation_prompt=generation, enable_thinking=False
        )


_VENDOR: dict[str, object] = {}


def _vendor(factory: pytest.TempPathFactory, name: str) -> object:
    if name not in _VENDOR:  # one tokenizer per template for all examples
        template = (FIXTURES / f"{name}.jinja").read_text()
        _VENDOR[name] = _with_template(factory.mktemp("tok"), template)
    return _VENDOR[name]


def test_a_template_that_refuses_a_probe_gets_no_direct_render(tmp_path: Path) -> None:
    # Gemma's templates refuse a system role; such a tokenizer keeps apply_chat_template.
    refuses = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system') }}{% endif %}"
    )
    assert CompiledChatTemplate.probe(_with_template(tmp_path / "a", CHATML), thinking=False)
    assert (
        CompiledChatTemplate.probe(_with_template(tmp_path / "b", refuses + CHATML), thinking=False)
        is None
    )


def test_the_direct_render_fails_as_apply_chat_template_does(tmp_path: Path) -> None:
    raises = "{% if 'bad' in messages[-1]['content'] %}{{ raise_exception('bad row') }}{% endif %}"
    tok = _with_template(tmp_path, raises + CHATML)
    direct = CompiledChatTemplate.probe(tok, thinking=False)
    assert direct is not None  # no probe says 'bad'
    messages = [{"role": "user", "content": "a bad one"}]
    failures = []
    for render in (
        lambda: direct.render(messages, True),
        lambda: apply_chat_template(tok, messages, add_generation_prompt=True),
    ):
        with pytest.raises(Exception) as caught:  # noqa: PT011 - the two are compared
            render()
        failures.append((type(caught.value), str(caught.value)))
    assert failures[0] == failures[1] and "bad row" in failures[0][1]


@settings(max_examples=150, deadline=None)
@given(
    tokens=st.lists(st.text("<|>ab/", min_size=1, max_size=5), min_size=1, max_size=8, unique=True),
    text=st.text("<|>ab/x", max_size=30),
)
def test_the_token_trie_takes_the_longest_token_as_an_alternation_would(
    tokens: list[str], text: str
) -> None:
    import re

    from jarvis.dataset.tokens import _trie

    longest_first = sorted(tokens, key=lambda t: (-len(t), t))
    plain = re.compile("({})".format("|".join(map(re.escape, longest_first))))
    assert re.compile(f"({_trie(sorted(tokens))})").split(text) == plain.split(text)


def _outcome(template: Any) -> str:
    try:
        # A key named as a dict method: `message.get` is still the method.
        message = {"role": "user", "content": "x", "get": "G"}
        return "rendered " + template.render(messages=[message])
    except Exception as exc:  # the sandbox's refusals, compared by type and message
        return f"{type(exc).__name__}: {exc}"


@pytest.mark.parametrize(
    "use, renders",
    [
        ("{{ messages.append(1) }}", False),  # refused: mutates a list
        ("{{ messages[0].pop('role') }}", False),
        ("{{ messages[0].content.__class__() }}", False),  # a private attribute
        ("{{ messages[0].content.__class__ }}", True),  # the same, printed as undefined
        ("{{ messages[0].content.format_map({}) }}", True),  # the sandbox's own formatter
        ("{{ messages[0].content.upper() }}", True),
        ("{{ messages[0].role }}{{ messages[0].missing }}", True),  # an item; undefined
        ("{{ messages[0].missing.deeper }}", False),
        ("{{ messages[0].items() | list }}{{ messages[0].get('role') }}", True),  # dict's own names
        ("{{ messages[0].content.missing }}", True),
        # String methods called straight: in a loop (jinja adds `_loop_vars`), in a macro,
        # with arguments they refuse, and `format`, which the sandbox wraps when it is read.
        (
            "{% for m in messages %}{{ m.content.split('x') }}{{ m.content.strip() }}{% endfor %}",
            True,
        ),
        ("{% macro f(x) %}{{ x.lower() }}{% endmacro %}{{ f(messages[0].content) }}", True),
        ("{{ messages[0].content.split(1, 2, 3) }}", False),
        (
            "{{ '{0.__class__}'.format(messages[0].content) }}",
            True,
        ),  # printed empty: the sandbox's formatter
        ("{{ messages[0].content.format(1) }}{{ 'a{}'.format(2) }}", True),
        ("{{ '{a.__class__}'.format_map({'a': messages[0].content}) }}", True),
        # Methods read at once where the check allows them, refused where it does not.
        ("{{ messages[0].keys() | list }}{{ messages[0].content.title() }}", True),
        ("{{ messages[0].update }}", True),  # printed empty: unsafe, undefined
        ("{{ messages[0].update({}) }}", False),
        ("{{ messages[0].content.__len__() }}", False),
    ],
)
def test_the_fast_sandbox_does_what_the_sandbox_does(use: str, renders: bool) -> None:
    from transformers.utils.chat_template_utils import _compile_jinja_template

    from jarvis.dataset.tokens import _fast_sandbox

    source = "{{ messages[0].content.upper() }}" + use  # the check cached before `use`
    plain = _compile_jinja_template(source)
    cached = _fast_sandbox(plain, source)
    assert cached is not plain
    want = _outcome(plain)
    assert _outcome(cached) == _outcome(cached) == want
    assert want.startswith("rendered") == renders


def test_a_long_added_token_is_one_literal_in_the_trie() -> None:
    import re

    from jarvis.dataset.tokens import _trie

    long = "<|" + "x" * 5000 + "|>"  # one nested group per character would not compile
    pattern = re.compile(f"({_trie(sorted([long, '<|y|>', '<|']))})")
    assert pattern.split(f"a{long}b<|y|><|z") == ["a", long, "b", "<|y|>", "", "<|", "z"]
