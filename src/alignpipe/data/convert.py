"""Data in from other tools, and out to verl: `alignpipe data convert SRC DST --from FORMAT [--kind KIND]`.

    >>> from alignpipe.data import convert
    >>> report = convert.convert("sharegpt.json", "train.jsonl")      # --from auto: detects the format
    >>> print(report.summary())
    detected format sharegpt: rows have 'conversations' (120 of 120 rows)
    converted 120 of 120 rows (sharegpt -> messages, kind sft) into train.jsonl

Source formats (`--from`), one row each (a JSONL line or a Parquet row):

| format | rows | kinds |
|---|---|---|
| `alpaca` | `instruction`, `input` (optional), `output`; optional `system`, `history` ([[q, a], ...]); preference: `chosen`/`rejected` instead of `output` | sft, prompts (`output` is the answer), preference |
| `sharegpt` | `conversations`: [{`from`: human/gpt/system, `value`}]; optional `system`; preference: `chosen`/`rejected` {from, value} | sft, prompts (last reply is the answer), preference |
| `openai` | chat fine-tuning `messages` ({role, content}; content may be text parts); preference fine-tuning `input.messages`, `preferred_output`, `non_preferred_output` | sft, prompts, preference |
| `verl` | `prompt` (messages), `reward_model.ground_truth`, `data_source`, `ability`, `extra_info` | prompts |
| `openrlhf` | keys `input`, `output`, `chosen`, `rejected`, `label` (renamed with `keys`, as OpenRLHF's `--input_key` etc.); strings or messages | sft, preference, prompts (`label` is the answer) |
| `vertex` | Vertex AI RLHF: prompts `input_text`; preferences `input_text`, `candidate_0`, `candidate_1`, `choice`; supervised `input_text`/`output_text` or Gemini `contents` | prompts (needs an answer column, `keys['label']`), preference, sft |
| `hf-preference` | `prompt` (optional), `chosen`, `rejected` strings; Anthropic HH transcripts ("\\n\\nHuman: ... \\n\\nAssistant: ...") become conversations | preference |
| `alignpipe` | already alignpipe's formats (`alignpipe.data.formats`): copied as they are, e.g. to export to verl | all |

`auto` (the default) detects the format from the rows' keys (majority of rows) and says what it detected;
without `kind` the kind follows from the format and the keys.

Targets: `alignpipe` (JSON Lines, or Parquet when DST ends with `.parquet`), checked with
`alignpipe.data.formats` row by row and with `alignpipe.data.validate` as a file before it is written; `verl`
(Parquet with verl's RL columns, kind `prompts`; or `messages` rows, kind `sft`), checked by converting it
back. A row that cannot be converted is one line `PATH:LINE: problem (fix)`; rows are never dropped
silently: with any such row nothing is written (`ConversionError`), unless `max_bad` allows that many, and
then they are counted in the report.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from . import formats
from .errors import DataError, ValidationReport, format_problems
from .io import Table, read_table, write_jsonl
from .validation import check_table

#: Source formats for `--from`; `auto` detects one of the others.
SOURCE_FORMATS = ("auto", "alpaca", "sharegpt", "openai", "verl", "openrlhf", "vertex", "hf-preference", "alignpipe")
#: Output targets for `--to`.
TARGETS = ("alignpipe", "verl")
#: OpenRLHF's configurable keys (`--input_key`, `--output_key`, `--chosen_key`, `--rejected_key`, `--label_key`).
DEFAULT_KEYS = {"input": "input", "output": "output", "chosen": "chosen", "rejected": "rejected", "label": "label"}

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
                  "bard": "assistant", "bing": "assistant", "model": "assistant", "system": "system"}
OPENAI_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
TOOL_HINT = "alignpipe trains text-only chat: drop the row, or flatten the tool turns into text"


class Bad(Exception):
    """One row cannot be converted: what is wrong and how to fix it."""

    def __init__(self, what: str, fix: str):
        super().__init__(what)
        self.what, self.fix = what, fix


class ConversionError(DataError):
    """Rows cannot be converted (more than `max_bad`), or the source/target cannot be used; nothing was written."""

    def __init__(self, problems: list[str], closing: str = ""):
        super().__init__(problems)
        if closing:
            self.args = (format_problems(self.problems) + "\n" + closing,)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass
class ConversionReport:
    """What `convert` did: the detected or given format and kind, rows in and out, each skipped row's problem."""

    src: str
    dst: str
    source_format: str
    kind: str
    target: str
    rows_in: int
    rows_out: int
    detected: str = ""  # the line saying what auto-detection found ("" when the format was given)
    kind_inferred: bool = False
    problems: list[str] = field(default_factory=list)
    validation: ValidationReport | None = None

    @property
    def skipped(self) -> int:
        return self.rows_in - self.rows_out

    def summary(self) -> str:
        lines = [self.detected] if self.detected else []
        fmt = self.validation.format if self.validation else "?"
        kind = f"kind {self.kind}{' (inferred)' if self.kind_inferred else ''}"
        to = " as verl Parquet" if self.target == "verl" else ""
        lines.append(f"converted {self.rows_out} of {self.rows_in} rows ({self.source_format} -> {fmt}, {kind}) "
                     f"into {self.dst}{to}")
        if self.problems:
            lines.append(f"{self.skipped} row{'s' if self.skipped != 1 else ''} not converted:")
            lines.append(format_problems(self.problems))
        return "\n".join(lines)


# --------------------------------------------------------------------------- detection

def _looks(row: dict[str, Any], keys: dict[str, str]) -> tuple[str, str] | None:
    """(format, reason) for one row, or None."""
    if "prompt" in row and isinstance(row.get("reward_model"), dict):
        return "verl", "rows have 'prompt' and 'reward_model'"
    if "conversations" in row:
        return "sharegpt", "rows have 'conversations'"
    if "preferred_output" in row or (isinstance(row.get("input"), dict) and "messages" in row["input"]):
        return "openai", "rows have 'input.messages' and 'preferred_output' (OpenAI preference fine-tuning)"
    if "messages" in row:
        msgs = row["messages"]
        if isinstance(msgs, list) and msgs and all(isinstance(m, dict) and "role" in m for m in msgs):
            return "openai", "rows have 'messages' with 'role'/'content'"
    if "contents" in row or "input_text" in row:
        return "vertex", "rows have " + ("'contents'" if "contents" in row else "'input_text'")
    if "instruction" in row:
        return "alpaca", "rows have 'instruction'"
    if "chosen" in row and "rejected" in row:
        if isinstance(row["chosen"], str) and isinstance(row["rejected"], str):
            return "hf-preference", "rows have string 'chosen'/'rejected'"
        return "alignpipe", "rows have 'chosen'/'rejected' messages"
    if "prompt" in row and ("completion" in row or "answer" in row):
        return "alignpipe", "rows have 'prompt' and " + ("'completion'" if "completion" in row else "'answer'")
    if keys["input"] in row and any(keys[k] in row for k in ("output", "chosen", "label")):
        found = [keys[k] for k in ("input", "output", "chosen", "rejected", "label") if keys[k] in row]
        return "openrlhf", "rows have " + "/".join(f"'{k}'" for k in found)
    return None


def detect_format(rows: list[dict[str, Any]], keys: dict[str, str] | None = None) -> tuple[str, str]:
    """The source format most rows look like, and the line that says so. Raises `Bad` when none fits."""
    keys = {**DEFAULT_KEYS, **(keys or {})}
    seen = [(fmt, why) for fmt, why in (x for x in (_looks(r, keys) for r in rows) if x)]
    if not seen:
        names = sorted({k for r in rows[:20] for k in r})
        raise Bad(f"cannot detect the format: no row looks like any of {', '.join(SOURCE_FORMATS[1:])} "
                  f"(the rows have {', '.join(repr(n) for n in names[:12]) or 'no keys'})",
                  "name the format with --from FORMAT (and --key NAME=COLUMN for openrlhf-style keys)")
    counts = Counter(fmt for fmt, _ in seen)
    top = max(counts.values())
    fmt, why = next(item for item in seen if counts[item[0]] == top)
    return fmt, f"detected format {fmt}: {why} ({counts[fmt]} of {len(rows)} rows)"


def infer_kind(fmt: str, rows: list[dict[str, Any]], keys: dict[str, str] | None = None) -> str:
    """The kind a source format's rows are, from their keys (majority of rows)."""
    keys = {**DEFAULT_KEYS, **(keys or {})}

    def kind_of(row: dict[str, Any]) -> str | None:
        if fmt == "verl":
            return "prompts"
        if fmt == "hf-preference":
            return "preference"
        if fmt == "vertex":
            if "candidate_0" in row or "choice" in row:
                return "preference"
            return "sft" if ("output_text" in row or "contents" in row) else "prompts"
        if fmt == "openai":
            return "preference" if "preferred_output" in row else "sft"
        if fmt in ("alpaca", "sharegpt"):
            return "preference" if "chosen" in row else "sft"
        if fmt == "openrlhf":
            if keys["chosen"] in row:
                return "preference"
            return "sft" if keys["output"] in row else ("prompts" if keys["label"] in row else None)
        for kind in ("preference", "prompts", "sft"):  # alignpipe
            if formats.check_row(row, kind).format is not None:
                return kind
        return None

    counts = Counter(k for k in map(kind_of, rows) if k)
    if not counts:
        raise Bad(f"cannot tell the kind of these {fmt} rows", "name it with --kind sft|preference|prompts")
    return counts.most_common(1)[0][0]


# --------------------------------------------------------------------------- pieces

def _text(value: Any, name: str) -> str:
    if value is None:
        raise Bad(f"field '{name}' is null", f"give '{name}' as a string or drop the row")
    if not isinstance(value, str):
        raise Bad(f"field '{name}' is a {type(value).__name__}, not a string", f"write '{name}' as a string")
    return value


def _need(row: dict[str, Any], name: str, fmt: str) -> Any:
    if name not in row:
        have = ", ".join(f"'{k}'" for k in row) or "no fields"
        raise Bad(f"missing field '{name}' for {fmt} rows (this row has: {have})",
                  f"add '{name}', or name the right format with --from")
    return row[name]


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def _assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def _content(value: Any, where: str) -> str:
    """OpenAI message content: a string, or a list of parts of which only text parts are allowed."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise Bad(f"{where} has a {kind!s} content part", "alignpipe trains text-only chat: keep only text parts")
        return "".join(texts)
    if value is None:
        raise Bad(f"{where} has no content", "give every message a text 'content'")
    raise Bad(f"{where} content is a {type(value).__name__}", "write the content as a string")


def _openai_messages(value: Any, name: str) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise Bad(f"field '{name}' is a {type(value).__name__}, not a list of messages",
                  "write it as [{\"role\": ..., \"content\": ...}, ...]")
    out = []
    for i, msg in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(msg, dict):
            raise Bad(f"{where} is a {type(msg).__name__}, not a message", "write messages as {\"role\", \"content\"} objects")
        role = msg.get("role")
        if role in ("tool", "function", "ipython") or msg.get("tool_calls") or msg.get("function_call"):
            raise Bad(f"{where} is a tool/function turn", TOOL_HINT)
        if role not in OPENAI_ROLES:
            raise Bad(f"{where} has role {role!r}", f"use one of {', '.join(OPENAI_ROLES)}")
        out.append({"role": OPENAI_ROLES[role], "content": _content(msg.get("content"), where)})
    return out


def _sharegpt_turns(value: Any, name: str) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise Bad(f"field '{name}' is a {type(value).__name__}, not a list of turns",
                  "write it as [{\"from\": \"human\", \"value\": ...}, {\"from\": \"gpt\", \"value\": ...}]")
    out = []
    for i, turn in enumerate(value):
        out.append(_sharegpt_turn(turn, f"{name}[{i}]"))
    return out


def _sharegpt_turn(turn: Any, where: str) -> dict[str, str]:
    if not isinstance(turn, dict):
        raise Bad(f"{where} is a {type(turn).__name__}, not a turn", "write turns as {\"from\", \"value\"} objects")
    who = turn.get("from", turn.get("role"))
    if who in ("function_call", "observation", "tool", "function"):
        raise Bad(f"{where} is a {who} turn", TOOL_HINT)
    if who not in SHAREGPT_ROLES:
        raise Bad(f"{where} has from={who!r}", f"use one of {', '.join(SHAREGPT_ROLES)}")
    value = turn.get("value", turn.get("content"))
    return {"role": SHAREGPT_ROLES[who], "content": _text(value, f"{where}.value")}


def _with_system(messages: list[dict[str, str]], system: Any) -> list[dict[str, str]]:
    if system in (None, ""):
        return messages
    return [{"role": "system", "content": _text(system, "system")}, *messages]


def _split_last_reply(messages: list[dict[str, str]], name: str) -> tuple[list[dict[str, str]], str]:
    """(prompt turns, the last assistant reply) for RL prompts made from a conversation."""
    if not messages or messages[-1]["role"] != "assistant":
        raise Bad(f"'{name}' does not end with an assistant reply to use as the reference answer",
                  "end the conversation with the reference answer, or use --kind sft")
    return messages[:-1], messages[-1]["content"]


def _replies(value: Any, name: str) -> list[dict[str, str]]:
    """A chosen/rejected reply: a string, a message, or a list of messages."""
    if isinstance(value, str):
        return [_assistant(value)]
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list) and all(isinstance(m, dict) and ("from" in m or "value" in m) for m in value):
        return _sharegpt_turns(value, name)
    return _openai_messages(value, name)


HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


def _hh_conversation(text: str, name: str) -> list[dict[str, str]]:
    """An Anthropic HH transcript ("\\n\\nHuman: ...\\n\\nAssistant: ...") as messages."""
    parts = HH_TURN.split(text)
    if parts[0].strip():
        raise Bad(f"'{name}' has text before the first 'Human:' turn", "start the transcript with \\n\\nHuman:")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[who], "content": body.strip()} for who, body in zip(parts[1::2], parts[2::2])]


# --------------------------------------------------------------------------- one converter per format

def _from_alpaca(row: dict[str, Any], kind: str, keys: dict[str, str]) -> dict[str, Any]:
    instruction = _text(_need(row, "instruction", "alpaca"), "instruction")
    extra = row.get("input")
    text = instruction if extra in (None, "") else f"{instruction}\n\n{_text(extra, 'input')}"
    history = []
    for i, pair in enumerate(row.get("history") or []):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise Bad(f"history[{i}] is not a [question, answer] pair", "write history as [[q, a], ...]")
        history += [_user(_text(pair[0], f"history[{i}][0]")), _assistant(_text(pair[1], f"history[{i}][1]"))]
    prompt = _with_system([*history, _user(text)], row.get("system"))
    if kind == "preference":
        return {"prompt": prompt, "chosen": _replies(_need(row, "chosen", "alpaca preference"), "chosen"),
                "rejected": _replies(_need(row, "rejected", "alpaca preference"), "rejected")}
    output = _text(_need(row, "output", "alpaca"), "output")
    if kind == "prompts":
        return {"prompt": prompt, "answer": output}
    return {"messages": [*prompt, _assistant(output)]}


def _from_sharegpt(row: dict[str, Any], kind: str, keys: dict[str, str]) -> dict[str, Any]:
    messages = _with_system(_sharegpt_turns(_need(row, "conversations", "sharegpt"), "conversations"), row.get("system"))
    if kind == "preference":
        return {"prompt": messages, "chosen": _replies(_need(row, "chosen", "sharegpt preference"), "chosen"),
                "rejected": _replies(_need(row, "rejected", "sharegpt preference"), "rejected")}
    if kind == "prompts":
        prompt, answer = _split_last_reply(messages, "conversations")
        return {"prompt": prompt, "answer": answer}
    return {"messages": messages}


def _from_openai(row: dict[str, Any], kind: str, keys: dict[str, str]) -> dict[str, Any]:
    if kind == "preference":
        source = _need(row, "input", "OpenAI preference")
        if not isinstance(source, dict) or "messages" not in source:
            raise Bad("field 'input' has no 'messages'", "write it as {\"input\": {\"messages\": [...]}, ...}")
        return {"prompt": _openai_messages(source["messages"], "input.messages"),
                "chosen": _openai_messages(_need(row, "preferred_output", "OpenAI preference"), "preferred_output"),
                "rejected": _openai_messages(_need(row, "non_preferred_output", "OpenAI preference"),
                                             "non_preferred_output")}
    messages = _openai_messages(_need(row, "messages", "openai"), "messages")
    if kind == "prompts":
        prompt, answer = _split_last_reply(messages, "messages")
        return {"prompt": prompt, "answer": answer}
    return {"messages": messages}


def _from_verl(row: dict[str, Any], kind: str, keys: dict[str, str]) -> dict[str, Any]:
    if kind != "prompts":
        raise Bad(f"verl rows are RL prompts, not {kind} data", "use --kind prompts")
    prompt = _need(row, "prompt", "verl")
    prompt = _openai_messages(prompt, "prompt") if not isinstance(prompt, str) else prompt
    reward = _need(row, "reward_model", "verl")
    if not isinstance(reward, dict) or "ground_truth" not in reward:
        raise Bad("field 'reward_model' has no 'ground_truth'",
                  "give reward_model as {\"style\": \"rule\", \"ground_truth\": ANSWER}")
    truth = reward["ground_truth"]
    if isinstance(truth, (list, dict)) or truth is None or isinstance(truth, bool):
        raise Bad(f"reward_model.ground_truth is a {type(truth).__name__}",
                  "alignpipe's reference answer is one string or number; write one answer per row")
    out: dict[str, Any] = {"prompt": prompt, "answer": truth}
    ability = row.get("ability")
    if isinstance(ability, str) and ability:
        out["domain"] = ability
    for name in ("data_source", "extra_info"):
        if row.get(name) is not None:
            out[name] = row[name]
    return out


def _maybe_messages(value: Any, name: str, as_role: str) -> Any:
    """openrlhf values: a string stays a string; a list is messages (OpenAI or ShareGPT turns)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):
        return _replies(value, name)
    return _text(value, name)


def _from_openrlhf(row: dict[str, Any], kind: str, keys: dict[str, str]) -> dict[str, Any]:
    k = keys
    if kind == "preference":
        chosen = _maybe_messages(_need(row, k["chosen"], "openrlhf"), k["chosen"], "assistant")
        rejected = _maybe_messages(_need(row, k["rejected"], "openrlhf"), k["rejected"], "assistant")
        if k["input"] not in row or row[k["input"]] in (None, ""):
            return {"chosen": chosen, "rejected": rejected}
        prompt = _maybe_messages(row[k["input"]], k["input"], "user")
        if isinstance(prompt, str) and isinstance(chosen, str) and isinstance(rejected, str):
            return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        as_list = lambda v: [_user(v)] if isinstance(v, str) else v  # noqa: E731
        as_reply = lambda v: [_assistant(v)] if isinstance(v, str) else v  # noqa: E731
        return {"prompt": as_list(prompt), "chosen": as_reply(chosen), "rejected": as_reply(rejected)}
    source = _maybe_messages(_need(row, k["input"], "openrlhf"), k["input"], "user")
    if kind == "prompts":
        answer = _need(row, k["label"], "openrlhf prompts")
        return {"prompt": source, "answer": answer}
    if k["output"] not in row and isinstance(source, list):
        return {"messages": source}  # the input holds the whole conversation (apply_chat_template mode)
    output = _maybe_messages(_need(row, k["output"], "openrlhf"), k["output"], "assistant")
    if isinstance(source, str) and isinstance(output, str):
        return {"prompt": source, "completion": output}
    return {"prompt": [_user(source)] if isinstance(source, str) else source,
            "completion": [_assistant(output)] if isinstance(output, str) else output}


def _from_vertex(row: dict[str, Any], kind: str, keys: dict[str, str]) -> dict[str, Any]:
    if kind == "sft" and "contents" in row:
        messages = []
        for i, turn in enumerate(row["contents"] or []):
            if not isinstance(turn, dict) or turn.get("role") not in ("user", "model"):
                raise Bad(f"contents[{i}] has no role user/model", "give each turn role 'user' or 'model'")
            parts = turn.get("parts") or []
            if not all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in parts):
                raise Bad(f"contents[{i}] has a non-text part", "alignpipe trains text-only chat: keep only text parts")
            role = "assistant" if turn["role"] == "model" else "user"
            messages.append({"role": role, "content": "".join(p["text"] for p in parts)})
        system = row.get("systemInstruction") or row.get("system_instruction")
        if isinstance(system, dict):
            system = "".join(p.get("text", "") for p in system.get("parts") or [] if isinstance(p, dict))
        return {"messages": _with_system(messages, system)}
    prompt = _text(_need(row, "input_text", "vertex"), "input_text")
    if kind == "sft":
        return {"prompt": prompt, "completion": _text(_need(row, "output_text", "vertex supervised"), "output_text")}
    if kind == "preference":
        choice = _need(row, "choice", "vertex preference")
        if isinstance(choice, bool) or choice not in (0, 1):
            raise Bad(f"field 'choice' is {choice!r}", "choice is 0 (candidate_0 preferred) or 1 (candidate_1 preferred)")
        candidates = [_text(_need(row, f"candidate_{i}", "vertex preference"), f"candidate_{i}") for i in (0, 1)]
        return {"prompt": prompt, "chosen": candidates[choice], "rejected": candidates[1 - choice]}
    label = keys["label"] if keys["label"] in row else "answer"
    if label not in row:
        raise Bad("vertex prompt rows hold only 'input_text', and RL prompts here need a reference answer",
                  "add an 'answer' column, or name the column holding it with --key label=COLUMN")
    return {"prompt": prompt, "answer": row[label]}


def _from_hf_preference(row: dict[str, Any], kind: str, keys: dict[str, str]) -> dict[str, Any]:
    if kind != "preference":
        raise Bad(f"hf-preference rows are preference data, not {kind}", "use --kind preference")
    chosen = _text(_need(row, "chosen", "hf-preference"), "chosen")
    rejected = _text(_need(row, "rejected", "hf-preference"), "rejected")
    if "prompt" in row and row["prompt"] is not None:
        return {"prompt": _text(row["prompt"], "prompt"), "chosen": chosen, "rejected": rejected}
    if chosen.startswith("\n\nHuman:") and rejected.startswith("\n\nHuman:"):
        return {"chosen": _hh_conversation(chosen, "chosen"), "rejected": _hh_conversation(rejected, "rejected")}
    return {"chosen": chosen, "rejected": rejected}


def _from_alignpipe(row: dict[str, Any], kind: str, keys: dict[str, str]) -> dict[str, Any]:
    return dict(row)


CONVERTERS: dict[str, Callable[[dict[str, Any], str, dict[str, str]], dict[str, Any]]] = {
    "alpaca": _from_alpaca, "sharegpt": _from_sharegpt, "openai": _from_openai, "verl": _from_verl,
    "openrlhf": _from_openrlhf, "vertex": _from_vertex, "hf-preference": _from_hf_preference,
    "alignpipe": _from_alignpipe,
}


# --------------------------------------------------------------------------- to verl

def to_verl(row: dict[str, Any], kind: str, index: int, split: str = "train") -> dict[str, Any]:
    """One alignpipe row (already valid for `kind`) as a verl row."""
    if kind == "sft":
        if "messages" in row:
            return {"messages": formats.clean_messages(row["messages"])}
        prompt, completion = row["prompt"], row["completion"]
        if isinstance(prompt, str):
            prompt, completion = [_user(prompt)], [_assistant(completion)]
        return {"messages": formats.clean_messages([*prompt, *completion])}
    if kind != "prompts":
        raise ConversionError([f"verl has no {kind} format (export RL prompts with --kind prompts, or sft rows)"])
    prompt = row["prompt"]
    messages = [_user(prompt)] if isinstance(prompt, str) else formats.clean_messages(prompt)
    known = {"prompt", "answer", "domain", "data_source", "extra_info", "ability"}
    extra_info = dict(row.get("extra_info") or {}) if isinstance(row.get("extra_info"), dict) else {}
    extra_info.setdefault("index", index)
    extra_info.setdefault("split", split)
    for name, value in row.items():
        if name not in known and value is not None:
            extra_info.setdefault(name, value)
    domain = row.get("domain")
    return {
        "data_source": row.get("data_source") or domain or "alignpipe",
        "prompt": messages,
        "ability": domain or "unknown",
        "reward_model": {"style": "rule", "ground_truth": formats.answer_text(row["answer"])},
        "extra_info": extra_info,
    }


# --------------------------------------------------------------------------- the conversion

def read_source(uri: str | os.PathLike[str]) -> Table:
    """`alignpipe.data.io.read_table`, plus a `.json` file holding one JSON array of objects (as Alpaca and
    ShareGPT data sets ship), each row numbered by the line its object starts on."""
    text_uri = os.fspath(uri)
    if not text_uri.lower().endswith(".json"):
        return read_table(uri)
    from .io import _file_sha256, local_path

    path = local_path(uri)
    try:
        data = path.read_bytes()
    except OSError:
        return read_table(uri)  # says what is wrong with the path
    text = data.decode("utf-8-sig", errors="replace")
    if not text.lstrip().startswith("["):
        return read_table(uri)
    table = Table(path=text_uri, source="jsonl", digest=_file_sha256(path))
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            break
        line = text.count("\n", 0, pos) + 1
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise DataError(f"{text_uri}:{exc.lineno}: invalid JSON: {exc.msg} at column {exc.colno} "
                            "(fix the JSON array; the rows after this point cannot be read)") from None
        if isinstance(value, dict):
            table.rows.append((line, value))
        else:
            table.problems.append(f"{text_uri}:{line}: array element is a {type(value).__name__}, not an object "
                                  "(write one object per row)")
    table.empty = not table.rows and not table.problems
    return table


def convert_table(table: Table, source_format: str = "auto", kind: str | None = None,
                  keys: dict[str, str] | None = None) -> tuple[list[tuple[int, dict[str, Any]]], ConversionReport]:
    """Convert rows already read. Returns the converted (line, row) pairs and the report (no file written);
    unreadable lines and rows that cannot be converted (or do not pass the row checks) are its problems."""
    keys = {**DEFAULT_KEYS, **(keys or {})}
    if source_format not in SOURCE_FORMATS:
        raise ConversionError([f"unknown source format {source_format!r} (choose one of: {', '.join(SOURCE_FORMATS)})"])
    if kind is not None and kind not in formats.KINDS:
        raise ConversionError([f"unknown kind {kind!r} (choose one of: {', '.join(formats.KINDS)})"])
    records = table.records
    if table.empty or not records:
        raise ConversionError(list(table.problems) or [f"{table.path}:1: file is empty, no rows (give at least one row)"])
    detected = ""
    fmt = source_format
    try:
        if fmt == "auto":
            fmt, detected = detect_format(records, keys)
        kind_inferred = kind is None
        kind = kind or infer_kind(fmt, records, keys)
    except Bad as bad:
        raise ConversionError([f"{table.path}: {bad.what} ({bad.fix})"]) from None
    convert_row = CONVERTERS[fmt]
    out: list[tuple[int, dict[str, Any]]] = []
    numbered = [(_line(p, table.path), p) for p in table.problems]
    for line, row in table.rows:
        try:
            converted = convert_row(row, kind, keys)
        except Bad as bad:
            numbered.append((line, f"{table.path}:{line}: {bad.what} ({bad.fix})"))
            continue
        issues = formats.check_row(converted, kind).issues
        if issues:
            issue = issues[0]
            more = f"; and {len(issues) - 1} more" if len(issues) > 1 else ""
            numbered.append((line, f"{table.path}:{line}: after conversion from {fmt}: {issue.what}{more} ({issue.fix})"))
            continue
        out.append((line, converted))
    numbered.sort(key=lambda item: item[0])
    report = ConversionReport(src=table.path, dst="", source_format=fmt, kind=kind, target="alignpipe",
                              rows_in=len(table.rows) + len(table.problems), rows_out=len(out), detected=detected,
                              kind_inferred=kind_inferred, problems=[p for _, p in numbered])
    return out, report


def _line(problem: str, path: str) -> int:
    rest = problem[len(path) + 1:] if problem.startswith(path + ":") else ""
    head = rest.split(":", 1)[0]
    return int(head) if head.isdigit() else 0


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str], source_format: str = "auto",
            kind: str | None = None, target: str = "alignpipe", keys: dict[str, str] | None = None,
            max_bad: int = 0) -> ConversionReport:
    """Convert the data set `src` (JSONL, Parquet or a save_to_disk folder; local or s3://) from `source_format`
    into `dst` (`.jsonl` or `.parquet`, local or s3://) in alignpipe's formats, or in verl's with `target="verl"`.

    Raises `ConversionError` (nothing written) when more than `max_bad` rows cannot be converted, when the
    format or kind cannot be told, or when the result would not pass `alignpipe.data.validate`.
    """
    if target not in TARGETS:
        raise ConversionError([f"unknown target {target!r} (choose one of: {', '.join(TARGETS)})"])
    src, dst = os.fspath(src), os.fspath(dst)
    suffix = os.path.splitext(dst.rstrip("/"))[1].lower()
    parquet = suffix in (".parquet", ".pq")
    if target == "verl" and not parquet:
        raise ConversionError([f"{dst}: verl reads Parquet (name the output .parquet)"])
    if not parquet and suffix not in (".jsonl", ".ndjson", ".json"):
        raise ConversionError([f"{dst}: name the output .jsonl or .parquet"])
    if os.path.abspath(src) == os.path.abspath(dst):
        raise ConversionError([f"{dst}: the output would overwrite the input (write to another file)"])
    table = read_source(src)
    rows, report = convert_table(table, source_format, kind, keys)
    report.dst, report.target = dst, target
    if report.problems and (len(report.problems) > max_bad or not rows):
        allow = f"allow skipping up to {len(report.problems)} rows with --max-bad {len(report.problems)}" if rows else \
            "fix the rows or name the format with --from"
        raise ConversionError(report.problems, f"{len(report.problems)} of {report.rows_in} rows cannot be converted "
                              f"from {report.source_format} ({report.kind}); nothing written to {dst} ({allow})")
    records = [row for _, row in rows]
    if target == "verl":
        verl_rows = [to_verl(row, report.kind, i) for i, row in enumerate(records)]
        back = Table(path=dst, source="parquet", rows=[(i + 1, r) for i, r in enumerate(verl_rows)])
        if report.kind == "prompts":  # the check: verl -> alignpipe gives the same rows, valid
            again, back_report = convert_table(back, "verl", "prompts")
            check = check_table(Table(path=dst, source="parquet", rows=again), "prompts")
            check.problems += back_report.problems
        else:
            check = check_table(back, "sft")
        payload = _parquet_bytes(verl_rows)
    else:
        check = check_table(Table(path=dst, source="jsonl", rows=[(i + 1, r) for i, r in enumerate(records)]),
                            report.kind)
        payload = _parquet_bytes(records) if parquet else None
    if not check.ok:  # every row passed the row checks; this catches file-level rules (one format, one type per column)
        raise ConversionError(check.problems, f"the converted rows would not pass validation; nothing written to {dst}")
    _write(dst, records, payload)
    report.validation = check
    report.validation.rows = len(records)
    return report


def _parquet_bytes(records: list[dict[str, Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.Table.from_pylist(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ConversionError([f"cannot store the rows as Parquet: {exc} (give every column one type, or write .jsonl)"])
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _write(dst: str, records: list[dict[str, Any]], payload: bytes | None) -> None:
    from alignpipe import storage

    if payload is None:
        if not storage.is_remote(dst):
            write_jsonl(records, storage.to_path(dst))
            return
        payload = "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records).encode("utf-8")
    storage.write_bytes(dst, payload)
