"""Data set formats (TRL's dataset types) and the per-row checks behind `alignpipe.data.validate`.

Formats, as `ValidationReport.format` names them:

| format                                  | columns                                                         |
|-----------------------------------------|-----------------------------------------------------------------|
| `messages`                              | `messages`: list of {role, content} (conversational LM)         |
| `prompt_completion:plain`               | `prompt`, `completion`: strings                                 |
| `prompt_completion:conversational`      | `prompt`: messages ending with the user turn; `completion`: assistant message(s) |
| `preference:explicit:plain`             | `prompt`, `chosen`, `rejected`: strings                         |
| `preference:explicit:conversational`    | `prompt`: messages ending with the user turn; `chosen`/`rejected`: assistant message(s) |
| `preference:implicit:plain`             | `chosen`, `rejected`: strings                                   |
| `preference:implicit:conversational`    | `chosen`, `rejected`: whole conversations sharing the prompt turns |
| `prompt_answer:plain`                   | `prompt` string + `answer` (string or number); optional `domain`, `difficulty`, `label` |
| `prompt_answer:conversational`          | `prompt` messages + `answer`; same optional columns             |

Kinds (what a stage needs): `sft` takes `messages` or `prompt_completion:*`; `preference` takes
`preference:*`; `prompts` (RL) takes `prompt_answer:*`.

Decisions:
- Roles are `system`, `user`, `assistant` (text-only chat; no tool turns yet). A system message may only
  come first. A conversation starts with the user (after the optional system message); the same role
  twice in a row is allowed, as TRL and ChatML templates allow it (templates that demand strict
  alternation fail later, at tokenization). A conversation ends with the assistant; a prompt ends with
  the user.
- A completion / chosen / rejected in conversational form is a non-empty list of assistant messages
  (TRL writes one; several, e.g. a split reply, are accepted). Extra keys in a message are ignored.
- Extra columns: for `prompts` they are kept (TRL passes them to reward functions as keyword
  arguments), except names that clash with the reward-function arguments (`prompts`, `completions`,
  ...). For `sft` and `preference` harmless extras (`id`, `source`, ...) are ignored and dropped by
  `load`; only columns that make the format ambiguous are reported (`messages` next to
  `prompt`/`completion`, `chosen`/`rejected` next to `messages`/`completion`).
- `null` in an optional column (`domain`, `difficulty`, `label`) means "absent" (Parquet/Arrow store
  a missing value as null); `null` or NaN in a required column is a problem.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

ROLES = ("system", "user", "assistant")

KINDS: dict[str, tuple[str, ...]] = {
    "sft": ("messages", "prompt_completion:plain", "prompt_completion:conversational"),
    "preference": (
        "preference:explicit:plain",
        "preference:explicit:conversational",
        "preference:implicit:plain",
        "preference:implicit:conversational",
    ),
    "prompts": ("prompt_answer:plain", "prompt_answer:conversational"),
}
FORMATS: tuple[str, ...] = tuple(fmt for formats in KINDS.values() for fmt in formats)

#: What each kind needs, as said in "how to fix" hints.
NEEDS = {
    "sft": "sft rows need 'messages', or 'prompt' and 'completion'",
    "preference": "preference rows need 'chosen' and 'rejected', and optionally 'prompt'",
    "prompts": "RL prompt rows need 'prompt' (a string or messages ending with the user turn) and a reference 'answer'",
}

#: Keyword arguments TRL's GRPO/RLOO pass to reward functions; a data column of that name would clash.
RESERVED_REWARD_KWARGS = (
    "prompts",
    "completions",
    "completion_ids",
    "trainer_state",
    "log_extra",
    "log_metric",
    "environments",
)
#: Optional columns of RL prompts, with the types they must have.
PROMPT_OPTIONAL = ("domain", "difficulty", "label")


class Issue(NamedTuple):
    """One problem of one row: what is wrong, and how to fix it."""

    what: str
    fix: str


class RowCheck(NamedTuple):
    format: str | None  # the row's format, None when it cannot be told
    issues: list[Issue]


def check_row(row: dict[str, Any], kind: str) -> RowCheck:
    """Check one record for `kind` ("sft", "preference" or "prompts")."""
    if kind == "sft":
        return _check_sft(row)
    if kind == "preference":
        return _check_preference(row)
    if kind == "prompts":
        return _check_prompts(row)
    raise ValueError(f"unknown kind {kind!r}; choose one of: {', '.join(KINDS)}")


# --------------------------------------------------------------------------- kinds


def _present(row: dict[str, Any], *names: str) -> list[str]:
    return [name for name in names if name in row]


def _quoted(names: list[str]) -> str:
    return "/".join(f"'{name}'" for name in names)


def _other_kind(row: dict[str, Any], kind: str) -> Issue | None:
    """The row is clearly data of another kind: say which kind to use."""
    if kind != "preference" and _present(row, "chosen", "rejected"):
        return Issue(
            f"row has {_quoted(_present(row, 'chosen', 'rejected'))}, which is preference data, but kind '{kind}' "
            "needs other columns",
            f"use kind 'preference' for preference data; {NEEDS[kind]}",
        )
    if kind != "sft" and "messages" in row and "prompt" not in row:
        return Issue(
            f"row has 'messages', which is SFT data, but kind '{kind}' needs other columns",
            f"use kind 'sft' for SFT data; {NEEDS[kind]}",
        )
    if kind == "sft" and "prompt" in row and "answer" in row and "completion" not in row:
        return Issue(
            "row has 'prompt' and 'answer', which is RL prompt data, but kind 'sft' needs a 'completion'",
            "use kind 'prompts' for RL prompts, or rename 'answer' to 'completion' to train on it with SFT",
        )
    return None


def _missing(name: str, kind: str, row: dict[str, Any]) -> Issue:
    keys = ", ".join(f"'{key}'" for key in row) or "none"
    return Issue(f"missing field '{name}'", f"{NEEDS[kind]}; this row has: {keys}")


def _check_sft(row: dict[str, Any]) -> RowCheck:
    if "messages" in row:
        conflicting = _present(row, "prompt", "completion", "chosen", "rejected")
        if conflicting:
            return RowCheck(None, [Issue(
                f"row has both 'messages' and {_quoted(conflicting)}, so its format is ambiguous",
                "keep one format: 'messages' alone, or 'prompt' and 'completion'",
            )])
        issues = _check_conversation(row["messages"], "messages")
        return RowCheck("messages" if isinstance(row["messages"], list) else None, issues)
    other = _other_kind(row, "sft")
    if other:
        return RowCheck(None, [other])
    if "prompt" in row or "completion" in row:
        missing = [name for name in ("prompt", "completion") if name not in row]
        if missing:
            return RowCheck(None, [_missing(name, "sft", row) for name in missing])
        return _check_prompt_and_replies(row, "prompt_completion", ("completion",))
    return RowCheck(None, [_missing("messages", "sft", row)])


def _check_preference(row: dict[str, Any]) -> RowCheck:
    if not _present(row, "chosen", "rejected"):
        other = _other_kind(row, "preference")
        if other:
            return RowCheck(None, [other])
        return RowCheck(None, [_missing(name, "preference", row) for name in ("chosen", "rejected")])
    conflicting = _present(row, "messages", "completion")
    if conflicting:
        return RowCheck(None, [Issue(
            f"row has 'chosen'/'rejected' and {_quoted(conflicting)}, so its format is ambiguous",
            "a preference row has 'chosen' and 'rejected' (and optionally 'prompt'); drop or rename the other columns",
        )])
    missing = [name for name in ("chosen", "rejected") if name not in row]
    if missing:
        return RowCheck(None, [_missing(name, "preference", row) for name in missing])
    if "prompt" in row:
        check = _check_prompt_and_replies(row, "preference:explicit", ("chosen", "rejected"))
        issues = list(check.issues)
        if not issues and row["chosen"] == row["rejected"]:
            issues.append(_identical())
        return RowCheck(check.format, issues)
    return _check_implicit(row)


def _check_prompts(row: dict[str, Any]) -> RowCheck:
    if "prompt" not in row:
        other = _other_kind(row, "prompts")
        return RowCheck(None, [other or _missing("prompt", "prompts", row)])
    issues: list[Issue] = []
    prompt = row["prompt"]
    style = None
    if isinstance(prompt, list):
        style = "conversational"
        issues += _check_prompt_messages(prompt, "prompt", reply_field="the completion the policy generates")
    else:
        issues += _check_string(prompt, "prompt", "a string or a list of messages")
        style = "plain" if isinstance(prompt, str) else None
    if "answer" not in row:
        issues.append(Issue(
            "missing field 'answer'",
            "RL prompts need a reference 'answer' (a string or a number) for the verifiable rewards",
        ))
    else:
        issues += _check_answer(row["answer"], "answer")
    for name in PROMPT_OPTIONAL:
        if row.get(name) is not None:
            issues += _check_optional(row[name], name)
    for name in RESERVED_REWARD_KWARGS:
        if name in row:
            issues.append(Issue(
                f"column '{name}' clashes with the reward-function argument of the same name",
                "rename the column; extra columns reach reward functions as keyword arguments",
            ))
    return RowCheck(f"prompt_answer:{style}" if style else None, issues)


# --------------------------------------------------------------------------- shared shapes


def _check_prompt_and_replies(row: dict[str, Any], family: str, replies: tuple[str, ...]) -> RowCheck:
    """`prompt` + one or more reply columns, all plain strings or all messages."""
    issues: list[Issue] = []
    names = ("prompt", *replies)
    styles = {name: _style(row[name]) for name in names}
    for name in names:
        value = row[name]
        if styles[name] != "conversational":
            issues += _check_string(value, name, "a string or a list of messages")
        elif name == "prompt":
            issues += _check_prompt_messages(value, name, reply_field=_quoted(list(replies)))
        else:
            issues += _check_reply_messages(value, name)
    known = {style for style in styles.values() if style}
    if len(known) > 1:
        plain = [name for name in names if styles[name] == "plain"]
        conv = [name for name in names if styles[name] == "conversational"]
        issues.append(Issue(
            f"{_quoted(plain)} {'is a string' if len(plain) == 1 else 'are strings'} but "
            f"{_quoted(conv)} {'is a list' if len(conv) == 1 else 'are lists'} of messages",
            "use plain strings for all of them, or messages for all of them",
        ))
        return RowCheck(None, issues)
    if not known or None in styles.values():
        return RowCheck(None, issues)
    return RowCheck(f"{family}:{known.pop()}", issues)


def _check_implicit(row: dict[str, Any]) -> RowCheck:
    chosen, rejected = row["chosen"], row["rejected"]
    styles = {_style(chosen), _style(rejected)}
    issues: list[Issue] = []
    for name in ("chosen", "rejected"):
        value = row[name]
        if isinstance(value, list):
            issues += _check_conversation(value, name)
        else:
            issues += _check_string(value, name, "a string or a list of messages")
    if styles == {"plain", "conversational"}:
        issues.append(Issue(
            "'chosen' and 'rejected' are not both strings or both lists of messages",
            "use plain strings for both, or messages for both",
        ))
        return RowCheck(None, issues)
    if None in styles:
        return RowCheck(None, issues)
    style = styles.pop()
    if issues:
        return RowCheck(f"preference:implicit:{style}", issues)
    if chosen == rejected:
        issues.append(_identical())
    elif style == "conversational":
        shared = 0
        while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
            shared += 1
        if shared == 0:
            issues.append(Issue(
                "'chosen' and 'rejected' do not start with the same prompt turns",
                "both conversations must share the prompt turns and differ from the assistant's reply on; "
                "or give the prompt in an explicit 'prompt' column",
            ))
        elif chosen[shared - 1].get("role") != "user":
            issues.append(Issue(
                f"'chosen' and 'rejected' share turns up to {_a(chosen[shared - 1].get('role'))} turn, "
                "so the implicit prompt does not end with the user's turn",
                "the two conversations must be identical up to the last user turn and differ in the assistant's reply",
            ))
    return RowCheck(f"preference:implicit:{style}", issues)


def _identical() -> Issue:
    return Issue("'chosen' is identical to 'rejected'", "a preference pair needs two different responses; fix or drop the row")


def _a(word: Any) -> str:
    """'a user', 'an assistant'."""
    word = str(word)
    return f"an {word}" if word[:1].lower() in "aeio" else f"a {word}"  # roles: no "an user"


def _style(value: Any) -> str | None:
    if isinstance(value, str):
        return "plain"
    if isinstance(value, list):
        return "conversational"
    return None


# --------------------------------------------------------------------------- values


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _null_or_nan(value: Any, name: str) -> Issue | None:
    if value is None:
        return Issue(f"field '{name}' is null", "fill it in or drop the row")
    if isinstance(value, float) and math.isnan(value):
        return Issue(f"field '{name}' is NaN", "fill it in or drop the row")
    return None


def _check_string(value: Any, name: str, expected: str = "a string") -> list[Issue]:
    bad = _null_or_nan(value, name)
    if bad:
        return [bad]
    if not isinstance(value, str):
        return [Issue(f"field '{name}' is a {_type_name(value)}, expected {expected}", f"write '{name}' as {expected}")]
    if not value.strip():
        return [Issue(f"field '{name}' is empty", "give it text or drop the row")]
    return []


def _check_answer(value: Any, name: str) -> list[Issue]:
    bad = _null_or_nan(value, name)
    if bad:
        return [bad]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return [Issue(
            f"field '{name}' is a {_type_name(value)}, expected a string or a number",
            "write the reference answer as a string, e.g. \"1/2\", or a number",
        )]
    if isinstance(value, float) and math.isinf(value):
        return [Issue(f"field '{name}' is infinite", "give a finite number or a string")]
    if isinstance(value, str) and not value.strip():
        return [Issue(f"field '{name}' is empty", "give the reference answer or drop the row")]
    return []


def _check_optional(value: Any, name: str) -> list[Issue]:
    if isinstance(value, float) and math.isnan(value):
        return [Issue(f"field '{name}' is NaN", "give a value, or null / leave it out")]
    if name == "domain":
        if not isinstance(value, str):
            return [Issue(f"field 'domain' is a {_type_name(value)}, expected a string", 'write it as a name, e.g. "math"')]
        if not value.strip():
            return [Issue("field 'domain' is empty", 'give a name, e.g. "math", or leave it out')]
    elif name == "difficulty":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return [Issue(f"field 'difficulty' is a {_type_name(value)}, expected a number",
                          "write it as a number, e.g. 0.3; higher is harder")]
        if math.isinf(value):
            return [Issue("field 'difficulty' is infinite", "give a finite number")]
    elif name == "label":
        if not isinstance(value, (str, int)):  # bool is an int
            return [Issue(f"field 'label' is a {_type_name(value)}, expected a string or an integer",
                          'write the class label as a string, e.g. "positive"')]
        if isinstance(value, str) and not value.strip():
            return [Issue("field 'label' is empty", "give the class label, or null / leave it out")]
    return []


# --------------------------------------------------------------------------- messages


def _check_messages_shape(messages: Any, name: str) -> tuple[list[Issue], list[str | None]]:
    """Each message is an object with a known role and non-empty string content. Returns the issues
    and the roles (None where unreadable)."""
    bad = _null_or_nan(messages, name)
    if bad:
        return [bad], []
    if not isinstance(messages, list):
        return [Issue(f"field '{name}' is a {_type_name(messages)}, expected a list of messages",
                      'write it as [{"role": "user", "content": "..."}, ...]')], []
    if not messages:
        return [Issue(f"field '{name}' is an empty list", "give at least one message or drop the row")], []
    issues: list[Issue] = []
    roles: list[str | None] = []
    for index, message in enumerate(messages):
        where = f"{name}[{index}]"
        if not isinstance(message, dict):
            issues.append(Issue(f"{where} is a {_type_name(message)}, not a message object",
                                'write each message as {"role": ..., "content": ...}'))
            roles.append(None)
            continue
        role = message.get("role")
        if role is None:
            issues.append(Issue(f"{where} has no 'role'", "give each message a role: system, user or assistant"))
        elif not isinstance(role, str) or role not in ROLES:
            issues.append(Issue(f"{where}.role is {role!r}, not a known role", f"use one of: {', '.join(ROLES)}"))
            role = None
        roles.append(role)
        if "content" not in message:
            issues.append(Issue(f"{where} has no 'content'", "give each message its text in 'content'"))
            continue
        content = message["content"]
        if content is None:
            issues.append(Issue(f"{where}.content is null", "give the message text, or drop the message"))
        elif isinstance(content, float) and math.isnan(content):
            issues.append(Issue(f"{where}.content is NaN", "give the message text, or drop the message"))
        elif not isinstance(content, str):
            issues.append(Issue(f"{where}.content is a {_type_name(content)}, expected a string",
                                "alignpipe trains on text-only messages: put the text in 'content' as a string"))
        elif not content.strip():
            issues.append(Issue(f"{where}.content is empty", "give the message text, or drop the message"))
    return issues, roles


def _check_system_first(roles: list[str | None], name: str) -> list[Issue]:
    return [
        Issue(f"{name}[{index}] is a system message after other turns", "put one system message first, or none")
        for index, role in enumerate(roles)
        if role == "system" and index > 0
    ]


def _first_turn(roles: list[str | None]) -> str | None:
    rest = roles[1:] if roles and roles[0] == "system" else roles
    return rest[0] if rest else None


def _check_conversation(messages: Any, name: str) -> list[Issue]:
    """A whole conversation: [system], user, ..., assistant."""
    issues, roles = _check_messages_shape(messages, name)
    if not roles or None in roles:
        return issues
    issues += _check_system_first(roles, name)
    if "user" not in roles:
        issues.append(Issue(f"'{name}' has no user turn", 'add the user\'s message: {"role": "user", "content": ...}'))
    if "assistant" not in roles:
        issues.append(Issue(f"'{name}' has no assistant turn",
                            'add the reply to learn: {"role": "assistant", "content": ...}'))
    if "user" in roles and "assistant" in roles:
        if _first_turn(roles) == "assistant":
            issues.append(Issue(f"'{name}' starts with an assistant turn",
                                "start with the user's turn, after an optional system message"))
        if roles[-1] != "assistant":
            issues.append(Issue(f"'{name}' ends with {_a(roles[-1])} turn",
                                "the last turn must be the assistant's reply; drop the trailing turns"))
    return issues


def _check_prompt_messages(messages: Any, name: str, reply_field: str) -> list[Issue]:
    """A prompt: [system], user, ..., user."""
    issues, roles = _check_messages_shape(messages, name)
    if not roles or None in roles:
        return issues
    issues += _check_system_first(roles, name)
    if "user" not in roles:
        issues.append(Issue(f"'{name}' has no user turn", 'add the user\'s message: {"role": "user", "content": ...}'))
    elif _first_turn(roles) == "assistant":
        issues.append(Issue(f"'{name}' starts with an assistant turn",
                            "start with the user's turn, after an optional system message"))
    if roles[-1] != "user" and "user" in roles:
        issues.append(Issue(f"'{name}' ends with {_a(roles[-1])} turn",
                            f"a prompt must end with the user's turn; the reply goes in {reply_field}"))
    return issues


def _check_reply_messages(messages: Any, name: str) -> list[Issue]:
    """A completion / chosen / rejected: one or more assistant messages."""
    issues, roles = _check_messages_shape(messages, name)
    for index, role in enumerate(roles):
        if role is not None and role != "assistant":
            issues.append(Issue(f"{name}[{index}] is {_a(role)} message",
                                f"'{name}' holds only the assistant's reply; earlier turns belong in 'prompt'"))
    return issues


# --------------------------------------------------------------------------- normalisation for load()


def clean_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Messages reduced to {role, content} (what the chat templates render)."""
    return [{"role": message["role"], "content": message["content"]} for message in messages]


def answer_text(value: Any) -> str:
    """A reference answer as a string: 28 -> "28", 28.0 -> "28", 0.5 -> "0.5", " x " -> " x "."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
