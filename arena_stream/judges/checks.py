"""Programmatic checks of one answer: instruction following (IFEval's spirit), references, yours.

Call it on any (prompt, answer), inside or outside a judge::

    from arena_stream.judges import checks
    results = checks.evaluate(prompt.metadata, answer)      # list[CheckResult]
    checks.all_passed(results)

**Declaring checks.** A prompt's ``metadata`` lists them, each an object naming
its ``check`` and its parameters; a reference answer, when a check needs one,
is ``metadata.reference`` (a string, a number, or a list of acceptable ones)::

    {"id": "p7", "prompt": "What is 17 + 25? Answer in capital letters and end with: That is all.",
     "metadata": {"reference": "42",
                  "checks": [{"check": "case", "mode": "upper"},
                             {"check": "ends_with", "text": "That is all."},
                             {"check": "reference", "match": "numeric"}]}}

``[judge.verifier] checks`` adds checks to every prompt. An answer passes when
it passes every check that applies to it.

**The library** (parameters in brackets; ``min`` / ``max`` are inclusive and
either may be left out):

=================  ==================================================================
``case``           every cased letter upper or lower case [``mode``: upper | lower]
``capital_words``  words written in capitals [``min``, ``max``]
``starts_with``    begins with a phrase [``text``, ``ignore_case`` = false]
``ends_with``      ends with a phrase [``text``, ``ignore_case`` = false]
``quoted``         the whole answer is wrapped in double quotation marks
``words``          word count [``min``, ``max``]
``sentences``      sentence count [``min``, ``max``]
``paragraphs``     paragraphs, split by blank lines or ``separator`` [``min``, ``max``]
``bullets``        markdown bullet points (``*``, ``-``, ``+``) [``min``, ``max``]
``characters``     length in characters [``min``, ``max``]
``keywords``       each keyword appears, as a word [``include``, ``min_count`` = 1,
                   ``ignore_case`` = true]
``forbidden``      none of these words appears [``words``, ``ignore_case`` = true]
``json``           the answer (a Markdown code fence allowed) is valid JSON
                   [``require``: object | array, optional]
``no_commas``      no comma anywhere
``postscript``     a line starting with the marker [``marker`` = "P.S."]
``placeholders``   square-bracket placeholders such as [address] [``min``]
``highlights``     *highlighted* sections, Markdown emphasis [``min``]
``title``          a title in double angle brackets, <<like this>>
``reference``      matches ``metadata.reference`` [``match``: exact | normalised |
                   contains | numeric; ``tolerance`` = 1e-6, ``relative`` = false]
``custom``         a function [``function``: "module:function", ``args`` = {}]; the
                   module must be listed in ``[judge.verifier] modules``
*a name*           a check registered in ``[judge.verifier] custom`` (its parameters are
                   passed as ``args``)
=================  ==================================================================

Reference matches: ``exact`` compares the stripped texts; ``normalised``
compares them lower-cased without punctuation, articles or extra spaces;
``contains`` looks for the normalised reference as a phrase inside the
normalised answer; ``numeric`` reads the answer's final number (the last
``\\boxed{..}``, else the number after the last "answer is" / "answer:", else
the last number written) and compares within ``tolerance``.

**Your own check** is a function ``fn(answer: str, args: dict, context:
CheckContext) -> bool | tuple[bool, str]`` (the string explains the result).
It is named ``"module:function"`` in ``[judge.verifier] custom`` (then asked for
by name) or, for modules listed in ``[judge.verifier] modules``, directly in a
prompt's metadata. Prompts are data, so a prompt cannot make the verifier
import a module nobody configured.

**Adversarial answers.** Every check reads the answer as written and nothing
else: an answer that writes a verdict, claims to pass, or quotes the
instruction passes only what it actually does (quoting "end with: That is all."
mid-answer does not end the answer with it). A check that cannot be evaluated
(an unknown check, a bad parameter, a missing reference, a failing function) is
a :class:`CheckSpecError`, never a silent pass or fail.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import re
import string
from collections.abc import Callable, Iterable
from typing import Any, Literal

import msgspec

from arena_stream.schemas import CheckResult, Message

CHECKS_VERSION = "checks-v1"  # bump when a check's behaviour changes


class CheckSpecError(ValueError):
    """A check that cannot be evaluated: unknown, badly parameterised, or failing itself."""


class CheckContext(msgspec.Struct, frozen=True, kw_only=True):
    """What a check may know besides the answer."""

    messages: list[Message] = []  # the conversation the answer replies to
    metadata: dict[str, Any] = {}  # the prompt's metadata (its reference, its checks)


CheckFn = Callable[[str, dict[str, Any], CheckContext], "bool | tuple[bool, str]"]


# --------------------------------------------------------------------------- parameters


class _Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class _Range(_Params):
    min: int | None = None
    max: int | None = None


class _Case(_Params):
    mode: Literal["upper", "lower"]


class _Phrase(_Params):
    text: str
    ignore_case: bool = False


class _Paragraphs(_Range):
    separator: str | None = None


class _Keywords(_Params):
    include: list[str]
    min_count: int = 1
    ignore_case: bool = True


class _Forbidden(_Params):
    words: list[str]
    ignore_case: bool = True


class _Json(_Params):
    require: Literal["object", "array"] | None = None


class _Postscript(_Params):
    marker: str = "P.S."


class _AtLeast(_Params):
    min: int = 1


class _Reference(_Params):
    match: Literal["exact", "normalised", "contains", "numeric"]
    tolerance: float = 1e-6
    relative: bool = False


class _Custom(_Params):
    function: str
    args: dict[str, Any] = {}


# --------------------------------------------------------------------------- text helpers


_WORD = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*")
_SENTENCE_END = re.compile(r"[.!?\u2026]+(?=\s|$)|\n\s*\n")
_BULLET = re.compile(r"^\s*[*\-+\u2022]\s+\S", re.MULTILINE)
_NUMBER = re.compile(r"(?<![\w.])[-\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?"
                     r"(?:\s*/\s*\d+)?")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:|=)\s*\**\s*([^\n]*)", re.IGNORECASE)
_CODE_FENCE = re.compile(r"^```[A-Za-z]*\s*\n(.*?)\n?```$", re.DOTALL)


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def _count_range(name: str, n: int, rng: _Range, unit: str) -> CheckResult:
    low = rng.min if rng.min is not None else 0
    high = rng.max if rng.max is not None else math.inf
    bounds = " and ".join(b for b in (f"at least {rng.min}" if rng.min is not None else "",
                                      f"at most {rng.max}" if rng.max is not None else "") if b)
    return CheckResult(check=name, passed=low <= n <= high,
                       detail=f"{n} {unit}" + (f", {bounds}" if bounds else ""))


def normalise(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD's answer normalisation)."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation + "\u2018\u2019"
                                                "\u201c\u201d"))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _parse_number(token: str) -> float | None:
    token = token.replace("\u2212", "-").replace(",", "").replace(" ", "").strip().rstrip(".")
    token = token.removesuffix("%")
    try:
        if "/" in token:
            num, den = token.split("/", 1)
            return float(num) / float(den) if float(den) != 0 else None
        value = float(token)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def final_number(answer: str) -> float | None:
    """The answer's final number: the last \\boxed{..}, else after the last "answer is",
    else the last number in the text."""
    for pattern in (_BOXED, _ANSWER_IS):
        found = pattern.findall(answer)
        for candidate in reversed(found):
            numbers = _NUMBER.findall(candidate)
            if numbers:
                return _parse_number(numbers[0])
    numbers = _NUMBER.findall(answer)
    return _parse_number(numbers[-1]) if numbers else None


def _references(context: CheckContext) -> list[str]:
    ref = context.metadata.get("reference")
    if ref is None:
        raise CheckSpecError("the reference check needs metadata.reference")
    refs = ref if isinstance(ref, list) else [ref]
    if not refs or not all(isinstance(r, str | int | float) and not isinstance(r, bool)
                           for r in refs):
        raise CheckSpecError("metadata.reference must be a string, a number or a list of them")
    return [str(r) for r in refs]


# --------------------------------------------------------------------------- the checks


def _case(answer: str, p: _Case, _: CheckContext) -> CheckResult:
    letters = [c for c in answer if c.isalpha() and c.lower() != c.upper()]
    wrong = [c for c in letters if (c.islower() if p.mode == "upper" else c.isupper())]
    return CheckResult(check="case", passed=bool(letters) and not wrong,
                       detail=f"{len(wrong)} of {len(letters)} letters not {p.mode} case")


def _capital_words(answer: str, p: _Range, _: CheckContext) -> CheckResult:
    n = sum(1 for w in words(answer) if w.isupper() and len(w) > 1)
    return _count_range("capital_words", n, p, "words in capitals")


def _starts_with(answer: str, p: _Phrase, _: CheckContext) -> CheckResult:
    text, want = answer.strip(), p.text.strip()
    if p.ignore_case:
        text, want = text.lower(), want.lower()
    return CheckResult(check="starts_with", passed=text.startswith(want),
                       detail=f"begins {answer.strip()[:len(want) + 10]!r}")


def _ends_with(answer: str, p: _Phrase, _: CheckContext) -> CheckResult:
    text, want = answer.strip(), p.text.strip()
    if p.ignore_case:
        text, want = text.lower(), want.lower()
    return CheckResult(check="ends_with", passed=text.endswith(want),
                       detail=f"ends {answer.strip()[-(len(want) + 10):]!r}")


def _quoted(answer: str, p: _Params, _: CheckContext) -> CheckResult:
    text = answer.strip()
    ok = len(text) >= 2 and ((text[0], text[-1]) in {('"', '"'), ("\u201c", "\u201d")})
    return CheckResult(check="quoted", passed=ok,
                       detail="wrapped in double quotes" if ok else "not wrapped in double quotes")


def _words(answer: str, p: _Range, _: CheckContext) -> CheckResult:
    return _count_range("words", len(words(answer)), p, "words")


def _sentences(answer: str, p: _Range, _: CheckContext) -> CheckResult:
    parts = [s for s in _SENTENCE_END.split(answer) if words(s)]
    return _count_range("sentences", len(parts), p, "sentences")


def _paragraphs(answer: str, p: _Paragraphs, _: CheckContext) -> CheckResult:
    parts = answer.split(p.separator) if p.separator else re.split(r"\n\s*\n", answer)
    return _count_range("paragraphs", sum(1 for x in parts if x.strip()), p, "paragraphs")


def _bullets(answer: str, p: _Range, _: CheckContext) -> CheckResult:
    return _count_range("bullets", len(_BULLET.findall(answer)), p, "bullet points")


def _characters(answer: str, p: _Range, _: CheckContext) -> CheckResult:
    return _count_range("characters", len(answer.strip()), p, "characters")


def _keywords(answer: str, p: _Keywords, _: CheckContext) -> CheckResult:
    flags = re.IGNORECASE if p.ignore_case else 0
    missing = [k for k in p.include if len(re.findall(
        rf"(?<!\w){re.escape(k)}(?!\w)", answer, flags)) < p.min_count]
    return CheckResult(check="keywords", passed=not missing,
                       detail=f"missing: {', '.join(missing)}" if missing else "all present")


def _forbidden(answer: str, p: _Forbidden, _: CheckContext) -> CheckResult:
    flags = re.IGNORECASE if p.ignore_case else 0
    found = [w for w in p.words if re.search(rf"(?<!\w){re.escape(w)}(?!\w)", answer, flags)]
    return CheckResult(check="forbidden", passed=not found,
                       detail=f"uses: {', '.join(found)}" if found else "none used")


def _json(answer: str, p: _Json, _: CheckContext) -> CheckResult:
    text = answer.strip()
    fenced = _CODE_FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return CheckResult(check="json", passed=False, detail=f"not JSON: {exc}"[:120])
    kind = "object" if isinstance(value, dict) else "array" if isinstance(value, list) else "value"
    ok = p.require is None or p.require == kind
    return CheckResult(check="json", passed=ok, detail=f"valid JSON {kind}")


def _no_commas(answer: str, p: _Params, _: CheckContext) -> CheckResult:
    n = answer.count(",") + answer.count("\uff0c")
    return CheckResult(check="no_commas", passed=n == 0, detail=f"{n} commas")


def _postscript(answer: str, p: _Postscript, _: CheckContext) -> CheckResult:
    ok = re.search(rf"^\s*{re.escape(p.marker)}", answer, re.MULTILINE) is not None
    return CheckResult(check="postscript", passed=ok,
                       detail=f"{'a' if ok else 'no'} line starting with {p.marker!r}")


def _placeholders(answer: str, p: _AtLeast, _: CheckContext) -> CheckResult:
    n = len(re.findall(r"\[[^\[\]\n]+\]", answer))
    return CheckResult(check="placeholders", passed=n >= p.min,
                       detail=f"{n} placeholders, at least {p.min}")


def _highlights(answer: str, p: _AtLeast, _: CheckContext) -> CheckResult:
    n = len(re.findall(r"(?<!\*)\*[^*\n]+\*(?!\*)", answer)) + len(
        re.findall(r"\*\*[^*\n]+\*\*", answer))
    return CheckResult(check="highlights", passed=n >= p.min,
                       detail=f"{n} highlighted sections, at least {p.min}")


def _title(answer: str, p: _Params, _: CheckContext) -> CheckResult:
    ok = re.search(r"<<[^<>\n]+>>", answer) is not None
    return CheckResult(check="title", passed=ok, detail="titled" if ok else "no <<title>>")


def _reference(answer: str, p: _Reference, context: CheckContext) -> CheckResult:
    refs = _references(context)
    if p.match == "numeric":
        got = final_number(answer)
        wanted = [v for r in refs if (v := _parse_number(r)) is not None]
        if not wanted:
            raise CheckSpecError(f"metadata.reference {refs!r} holds no number")
        if got is None:
            return CheckResult(check="reference", passed=False, detail="no number in the answer")
        ok = any(abs(got - w) <= p.tolerance * (abs(w) if p.relative else 1.0) for w in wanted)
        return CheckResult(check="reference", passed=ok,
                           detail=f"final number {got:g}, reference {refs[0]}")
    if p.match == "exact":
        ok = answer.strip() in {r.strip() for r in refs}
    elif p.match == "normalised":
        ok = normalise(answer) in {normalise(r) for r in refs}
    else:
        text = f" {normalise(answer)} "
        ok = any(f" {normalise(r)} " in text for r in refs if normalise(r))
    return CheckResult(check="reference", passed=ok,
                       detail=f"{p.match} match {'found' if ok else 'not found'}")


_LIBRARY: dict[str, tuple[type[_Params], Callable[..., CheckResult]]] = {
    "case": (_Case, _case),
    "capital_words": (_Range, _capital_words),
    "starts_with": (_Phrase, _starts_with),
    "ends_with": (_Phrase, _ends_with),
    "quoted": (_Params, _quoted),
    "words": (_Range, _words),
    "sentences": (_Range, _sentences),
    "paragraphs": (_Paragraphs, _paragraphs),
    "bullets": (_Range, _bullets),
    "characters": (_Range, _characters),
    "keywords": (_Keywords, _keywords),
    "forbidden": (_Forbidden, _forbidden),
    "json": (_Json, _json),
    "no_commas": (_Params, _no_commas),
    "postscript": (_Postscript, _postscript),
    "placeholders": (_AtLeast, _placeholders),
    "highlights": (_AtLeast, _highlights),
    "title": (_Params, _title),
    "reference": (_Reference, _reference),
}
LIBRARY = tuple(_LIBRARY)  # the built-in check names


# --------------------------------------------------------------------------- user checks


def load_function(target: str) -> CheckFn:
    """The function named ``"module:function"`` (``function`` may be dotted)."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise CheckSpecError(f"{target!r}: name a check function as 'module:function'")
    try:
        value: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError) as exc:
        raise CheckSpecError(f"cannot load check {target!r}: {exc}") from None
    if not callable(value):
        raise CheckSpecError(f"check {target!r} is not a function")
    return value  # type: ignore[no-any-return]


class Registry:
    """Your own checks: by name (from ``[judge.verifier] custom``) and the modules a prompt's
    metadata may name functions from (``[judge.verifier] modules``). Functions are loaded
    when the registry is built, so a wrong name fails at start, not on every battle."""

    def __init__(self, custom: dict[str, str] | None = None,
                 modules: Iterable[str] = ()) -> None:
        self.named: dict[str, CheckFn] = {}
        for name, target in (custom or {}).items():
            if name in _LIBRARY or name == "custom":
                raise CheckSpecError(f"custom check {name!r} would hide the built-in one")
            self.named[name] = load_function(target)
        self.modules = tuple(modules)
        self._loaded: dict[str, CheckFn] = {}

    def function(self, target: str) -> CheckFn:
        module = target.partition(":")[0]
        if not any(module == m or module.startswith(m + ".") for m in self.modules):
            raise CheckSpecError(
                f"check function {target!r}: its module is not in [judge.verifier] modules "
                "(a prompt may only name functions from modules configured there)")
        if target not in self._loaded:
            self._loaded[target] = load_function(target)
        return self._loaded[target]


def _call_user(name: str, fn: CheckFn, answer: str, args: dict[str, Any],
               context: CheckContext) -> CheckResult:
    try:
        out = fn(answer, args, context)
    except Exception as exc:  # a broken check is reported, never taken as pass or fail
        raise CheckSpecError(f"check {name!r} raised {type(exc).__name__}: {exc}") from exc
    if isinstance(out, bool):
        return CheckResult(check=name, passed=out)
    if (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], bool)
            and isinstance(out[1], str)):
        return CheckResult(check=name, passed=out[0], detail=out[1])
    raise CheckSpecError(f"check {name!r} returned {out!r}; it must return a bool "
                         "or (bool, str)")


# --------------------------------------------------------------------------- evaluation


def check_specs(metadata: dict[str, Any], extra: Iterable[dict[str, Any]] = ()
                ) -> list[dict[str, Any]]:
    """The checks that apply: ``extra`` (configured for every prompt), then the prompt's."""
    own = metadata.get("checks", [])
    if not isinstance(own, list) or not all(isinstance(c, dict) for c in own):
        raise CheckSpecError("metadata.checks must be a list of objects")
    return [*extra, *own]


def validate(spec: dict[str, Any], registry: Registry | None = None) -> None:
    """Raise :class:`CheckSpecError` unless ``spec`` names a check with valid parameters
    (a custom function is loaded, never called)."""
    name = spec.get("check")
    if not isinstance(name, str):
        raise CheckSpecError(f"a check needs a 'check' name: {spec!r}")
    params = {k: v for k, v in spec.items() if k != "check"}
    registry = registry or Registry()
    try:
        if name in _LIBRARY:
            msgspec.convert(params, type=_LIBRARY[name][0])
        elif name == "custom":
            registry.function(msgspec.convert(params, type=_Custom).function)
        elif name not in registry.named:
            raise CheckSpecError(f"unknown check {name!r} (built in: {', '.join(LIBRARY)}; "
                                 "yours: [judge.verifier] custom)")
    except msgspec.ValidationError as exc:
        raise CheckSpecError(f"check {name!r}: {exc}") from None


def run_check(spec: dict[str, Any], answer: str, context: CheckContext,
              registry: Registry | None = None) -> CheckResult:
    """One check of one answer; :class:`CheckSpecError` when it cannot be evaluated."""
    name = spec.get("check")
    if not isinstance(name, str):
        raise CheckSpecError(f"a check needs a 'check' name: {spec!r}")
    params = {k: v for k, v in spec.items() if k != "check"}
    if name in _LIBRARY:
        kind, fn = _LIBRARY[name]
        try:
            parsed = msgspec.convert(params, type=kind)
        except msgspec.ValidationError as exc:
            raise CheckSpecError(f"check {name!r}: {exc}") from None
        return fn(answer, parsed, context)  # type: ignore[no-any-return]
    registry = registry or Registry()
    if name == "custom":
        try:
            custom = msgspec.convert(params, type=_Custom)
        except msgspec.ValidationError as exc:
            raise CheckSpecError(f"check 'custom': {exc}") from None
        return _call_user(custom.function, registry.function(custom.function), answer,
                          custom.args, context)
    if name in registry.named:
        return _call_user(name, registry.named[name], answer, params, context)
    raise CheckSpecError(f"unknown check {name!r} (built in: {', '.join(LIBRARY)}; "
                         "yours: [judge.verifier] custom)")


def evaluate(metadata: dict[str, Any], answer: str, *, messages: list[Message] | None = None,
             registry: Registry | None = None, extra: Iterable[dict[str, Any]] = ()
             ) -> list[CheckResult]:
    """Every check that applies to ``answer`` (see the module docstring), in order.

    Raises :class:`CheckSpecError` naming the check (by its position) that cannot be
    evaluated.
    """
    context = CheckContext(messages=list(messages or []), metadata=metadata)
    results = []
    for i, spec in enumerate(check_specs(metadata, extra)):
        try:
            results.append(run_check(spec, answer, context, registry))
        except CheckSpecError as exc:
            raise CheckSpecError(f"check {i + 1} ({spec.get('check')!r}): {exc}") from None
    return results


def all_passed(results: list[CheckResult]) -> bool:
    """Whether every check passed (an answer with no checks has passed nothing)."""
    return bool(results) and all(r.passed for r in results)


def version(extra: Iterable[dict[str, Any]] = (), custom: dict[str, str] | None = None) -> str:
    """The check library's version and the configured checks, hashed: verdicts from other
    checks are never mistaken for these."""
    text = json.dumps([CHECKS_VERSION, list(extra), sorted((custom or {}).items())],
                      sort_keys=True, default=str)
    return "v-" + hashlib.sha256(text.encode()).hexdigest()[:12]
