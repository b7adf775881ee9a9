"""`alignpipe data convert`: each source format on real-shaped rows (as the tools write them), malformed rows
reported as `PATH:LINE: problem (fix)` and counted, every output valid for `alignpipe data validate`, and
the verl export read back."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alignpipe.cli import main as cli_main
from alignpipe.data import convert, validate
from alignpipe.data.convert import ConversionError


def cli(*argv: str) -> int:
    try:
        return cli_main(["data", "convert", *argv])
    except SystemExit as e:
        return int(e.code)


def jsonl(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def read(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------- real-shaped rows of each tool
ALPACA = [
    {"instruction": "Give three tips for staying healthy.", "input": "",
     "output": "1. Eat a balanced diet.\n2. Exercise regularly.\n3. Sleep well."},
    {"instruction": "Translate the sentence into English.", "input": "Bonjour le monde.", "output": "Hello, world."},
]
SHAREGPT = [
    {"id": "QWJhYvA_0", "conversations": [
        {"from": "system", "value": "You are a helpful assistant."},
        {"from": "human", "value": "What is 12*12?"}, {"from": "gpt", "value": "144"},
        {"from": "human", "value": "And 13*13?"}, {"from": "gpt", "value": "169"}]},
    {"id": "x2", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
]
OPENAI = [
    {"messages": [{"role": "system", "content": "Marv is a sarcastic chatbot."},
                  {"role": "user", "content": "What's the capital of France?"},
                  {"role": "assistant", "content": "Paris, as if everyone doesn't know that already.", "weight": 1}]},
    {"messages": [{"role": "developer", "content": "Be terse."},
                  {"role": "user", "content": [{"type": "text", "text": "2+2="}]},
                  {"role": "assistant", "content": "4"}]},
]
OPENAI_PREF = [
    {"input": {"messages": [{"role": "user", "content": "Hello, can you tell me how cold San Francisco is today?"}],
               "tools": [], "parallel_tool_calls": True},
     "preferred_output": [{"role": "assistant", "content": "Today in San Francisco, it is a cool 14C."}],
     "non_preferred_output": [{"role": "assistant", "content": "It is not particularly cold in San Francisco today."}]},
]
VERL = [
    {"data_source": "openai/gsm8k",
     "prompt": [{"role": "user", "content": "Natalia sold clips to 48 of her friends... Let's think step by step "
                 "and output the final answer after \"####\"."}],
     "ability": "math", "reward_model": {"style": "rule", "ground_truth": "72"},
     "extra_info": {"split": "train", "index": 0, "answer": "Natalia sold 48/2 = 24 clips in May. #### 72",
                    "question": "Natalia sold clips..."}},
    {"data_source": "openai/gsm8k", "prompt": [{"role": "user", "content": "Weng earns $12 an hour..."}],
     "ability": "math", "reward_model": {"style": "rule", "ground_truth": "10"},
     "extra_info": {"split": "train", "index": 1, "answer": "#### 10", "question": "Weng earns..."}},
]
VERTEX_PROMPTS = [{"input_text": "Summarize: The quick brown fox...", "answer": "A fox jumps."}]
VERTEX_PREF = [
    {"input_text": "Create a description for Plantation Palms.",
     "candidate_0": "Enjoy some fun in the sun at Gulf Shores.", "candidate_1": "A Tranquil Oasis of Natural Beauty.",
     "choice": 0},
    {"input_text": "Tell a joke.", "candidate_0": "No.", "candidate_1": "Why did the chicken...", "choice": 1},
]
VERTEX_GEMINI = [
    {"systemInstruction": {"role": "system", "parts": [{"text": "You are a pirate."}]},
     "contents": [{"role": "user", "parts": [{"text": "Hi"}]}, {"role": "model", "parts": [{"text": "Arr!"}]}]},
]
HF_PREF = [
    {"prompt": "How do I bake bread?", "chosen": "Mix flour, water, yeast and salt...", "rejected": "Buy it."},
    {"prompt": "2+2=", "chosen": "4", "rejected": "5"},
]
HH_RLHF = [
    {"chosen": "\n\nHuman: What are some cuss words?\n\nAssistant: I'd rather not say.\n\nHuman: Why?\n\n"
               "Assistant: They can be hurtful.",
     "rejected": "\n\nHuman: What are some cuss words?\n\nAssistant: I'd rather not say.\n\nHuman: Why?\n\n"
                 "Assistant: Whatever."},
]


@pytest.mark.parametrize(
    "name,rows,fmt,kind,out_format,first",
    [
        ("alpaca", ALPACA, "alpaca", "sft", "messages",
         {"messages": [{"role": "user", "content": ALPACA[0]["instruction"]},
                       {"role": "assistant", "content": ALPACA[0]["output"]}]}),
        ("sharegpt", SHAREGPT, "sharegpt", "sft", "messages",
         {"messages": [{"role": "system", "content": "You are a helpful assistant."},
                       {"role": "user", "content": "What is 12*12?"}, {"role": "assistant", "content": "144"},
                       {"role": "user", "content": "And 13*13?"}, {"role": "assistant", "content": "169"}]}),
        ("openai", OPENAI, "openai", "sft", "messages",
         {"messages": [{"role": "system", "content": "Marv is a sarcastic chatbot."},
                       {"role": "user", "content": "What's the capital of France?"},
                       {"role": "assistant", "content": "Paris, as if everyone doesn't know that already."}]}),
        ("openai-preference", OPENAI_PREF, "openai", "preference", "preference:explicit:conversational",
         {"prompt": OPENAI_PREF[0]["input"]["messages"], "chosen": OPENAI_PREF[0]["preferred_output"],
          "rejected": OPENAI_PREF[0]["non_preferred_output"]}),
        ("verl", VERL, "verl", "prompts", "prompt_answer:conversational",
         {"prompt": VERL[0]["prompt"], "answer": "72", "domain": "math", "data_source": "openai/gsm8k",
          "extra_info": VERL[0]["extra_info"]}),
        ("vertex-prompts", VERTEX_PROMPTS, "vertex", "prompts", "prompt_answer:plain",
         {"prompt": "Summarize: The quick brown fox...", "answer": "A fox jumps."}),
        ("vertex-preference", VERTEX_PREF, "vertex", "preference", "preference:explicit:plain",
         {"prompt": VERTEX_PREF[0]["input_text"], "chosen": VERTEX_PREF[0]["candidate_0"],
          "rejected": VERTEX_PREF[0]["candidate_1"]}),
        ("vertex-gemini", VERTEX_GEMINI, "vertex", "sft", "messages",
         {"messages": [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hi"},
                       {"role": "assistant", "content": "Arr!"}]}),
        ("hf-preference", HF_PREF, "hf-preference", "preference", "preference:explicit:plain", HF_PREF[0]),
        ("hh-rlhf", HH_RLHF, "hf-preference", "preference", "preference:implicit:conversational",
         {"chosen": [{"role": "user", "content": "What are some cuss words?"},
                     {"role": "assistant", "content": "I'd rather not say."}, {"role": "user", "content": "Why?"},
                     {"role": "assistant", "content": "They can be hurtful."}],
          "rejected": [{"role": "user", "content": "What are some cuss words?"},
                       {"role": "assistant", "content": "I'd rather not say."}, {"role": "user", "content": "Why?"},
                       {"role": "assistant", "content": "Whatever."}]}),
    ],
)
def test_each_format_detected_converted_and_valid(tmp_path, name, rows, fmt, kind, out_format, first) -> None:
    """Auto-detection names the format, the kind is inferred, and the output passes `data validate`."""
    if name == "verl":  # verl data are Parquet files
        src = tmp_path / "train.parquet"
        pq.write_table(pa.Table.from_pylist(rows), src)
    else:
        src = jsonl(tmp_path / f"{name}.jsonl", rows)
    dst = tmp_path / "out.jsonl"
    report = convert.convert(src, dst)
    assert report.detected.startswith(f"detected format {fmt}: "), report.detected
    assert f"({len(rows)} of {len(rows)} rows)" in report.detected
    assert (report.source_format, report.kind, report.kind_inferred) == (fmt, kind, True)
    assert report.rows_out == len(rows) and not report.problems
    checked = validate(dst, kind)
    assert checked.ok and checked.format == out_format and checked.rows == len(rows), checked.problems
    assert read(dst)[0] == first


def test_alpaca_json_array_with_history_and_prompts(tmp_path) -> None:
    """The Alpaca release is one JSON array; history turns come first; as RL prompts `output` is the answer."""
    src = tmp_path / "alpaca_data.json"
    src.write_text(json.dumps([{**ALPACA[1], "system": "Be exact.", "history": [["Hi", "Hello"]]}], indent=2))
    rows = read_after(convert.convert(src, tmp_path / "p.jsonl", "alpaca", "prompts"), tmp_path / "p.jsonl")
    assert rows == [{"prompt": [{"role": "system", "content": "Be exact."}, {"role": "user", "content": "Hi"},
                                {"role": "assistant", "content": "Hello"},
                                {"role": "user", "content": "Translate the sentence into English.\n\nBonjour le monde."}],
                     "answer": "Hello, world."}]


def read_after(report, path):
    assert not report.problems
    assert validate(path, report.kind).ok
    return read(path)


def test_openrlhf_with_configured_keys(tmp_path) -> None:
    """OpenRLHF names its columns with --input_key/--label_key etc.; so does --key here."""
    src = jsonl(tmp_path / "o.jsonl", [{"question": "2+3=", "gt": 5}, {"question": "1+1=", "gt": "2"}])
    out = tmp_path / "o_out.jsonl"
    assert cli(src, str(out), "--from", "openrlhf", "--kind", "prompts", "--key", "input=question",
               "--key", "label=gt") == 0
    assert read(out) == [{"prompt": "2+3=", "answer": 5}, {"prompt": "1+1=", "answer": "2"}]
    assert validate(out, "prompts").ok
    pref = jsonl(tmp_path / "pref.jsonl", [
        {"context_messages": [{"role": "user", "content": "Hi"}],
         "response_chosen": [{"role": "assistant", "content": "Hello!"}],
         "response_rejected": [{"role": "assistant", "content": "Go away."}]}])
    report = convert.convert(pref, tmp_path / "pref_out.jsonl", "openrlhf",
                             keys={"input": "context_messages", "chosen": "response_chosen",
                                   "rejected": "response_rejected"})
    assert report.kind == "preference" and validate(tmp_path / "pref_out.jsonl", "preference").format == \
        "preference:explicit:conversational"
    sft = jsonl(tmp_path / "sft.jsonl", [{"input": "Q: 2+2", "output": "4"}])
    assert convert.convert(sft, tmp_path / "sft_out.jsonl").source_format == "openrlhf"
    assert read(tmp_path / "sft_out.jsonl") == [{"prompt": "Q: 2+2", "completion": "4"}]


def test_malformed_rows_are_reported_with_line_and_fix_and_counted(tmp_path) -> None:
    """Bad rows: one `PATH:LINE: problem (fix)` each; nothing written unless --max-bad allows them, and then
    they are counted in the summary (never dropped silently)."""
    rows = [
        SHAREGPT[1],
        {"conversations": [{"from": "human", "value": "Weather?"}, {"from": "function_call", "value": "{}"}]},
        '{"conversations": [',                                                   # broken JSON line
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "narrator", "value": "..."}]},
        {"conversations": [{"from": "gpt", "value": "I start"}, {"from": "human", "value": "odd"}]},
        {"conversations": "not a list"},
        SHAREGPT[0],
    ]
    src = jsonl(tmp_path / "sg.jsonl", rows)
    dst = tmp_path / "sg_out.jsonl"
    with pytest.raises(ConversionError) as err:
        convert.convert(src, dst)
    problems = err.value.problems
    assert [p.split(": ", 1)[0] for p in problems] == [f"{src}:{n}" for n in (2, 3, 4, 5, 6)]
    assert "conversations[1] is a function_call turn (alignpipe trains text-only chat" in problems[0]
    assert "invalid JSON" in problems[1]
    assert "conversations[1] has from='narrator' (use one of human," in problems[2]
    assert problems[3].startswith(f"{src}:5: after conversion from sharegpt: ") and problems[3].endswith(")")
    assert "'conversations' is a str, not a list of turns" in problems[4]
    assert "5 of 7 rows cannot be converted from sharegpt (sft); nothing written" in str(err.value)
    assert not dst.exists()

    assert cli(src, str(dst)) == 2 and not dst.exists()
    assert cli(src, str(dst), "--max-bad", "5") == 0
    report = convert.convert(src, dst, max_bad=5)
    assert (report.rows_in, report.rows_out, report.skipped) == (7, 2, 5)
    assert "converted 2 of 7 rows" in report.summary() and "5 rows not converted:" in report.summary()
    assert validate(dst, "sft").ok


@pytest.mark.parametrize("fmt,kind,row,what", [
    ("alpaca", "sft", {"instruction": "x"}, "missing field 'output' for alpaca rows (this row has: 'instruction')"),
    ("alpaca", "sft", {"instruction": 3, "output": "y"}, "field 'instruction' is a int, not a string"),
    ("openai", "sft", {"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "{}"}]},
     "messages[1] is a tool/function turn"),
    ("openai", "sft", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]},
                                    {"role": "assistant", "content": "a"}]}, "messages[0] has a image_url content part"),
    ("openai", "prompts", {"messages": [{"role": "user", "content": "q"}]},
     "'messages' does not end with an assistant reply"),
    ("verl", "prompts", {"prompt": [{"role": "user", "content": "q"}], "reward_model": {"style": "model"}},
     "field 'reward_model' has no 'ground_truth'"),
    ("verl", "prompts", {"prompt": [{"role": "user", "content": "q"}],
                         "reward_model": {"ground_truth": ["1", "2"]}}, "reward_model.ground_truth is a list"),
    ("vertex", "preference", {"input_text": "q", "candidate_0": "a", "candidate_1": "b", "choice": 2},
     "field 'choice' is 2"),
    ("vertex", "prompts", {"input_text": "q"}, "vertex prompt rows hold only 'input_text'"),
    ("hf-preference", "preference", {"prompt": "q", "chosen": "same", "rejected": "same"},
     "after conversion from hf-preference:"),
    ("hf-preference", "preference", {"prompt": "q", "chosen": None, "rejected": "r"}, "field 'chosen' is null"),
    ("openrlhf", "prompts", {"input": "q"}, "missing field 'label' for openrlhf prompts rows"),
])
def test_malformed_row_of_each_format(tmp_path, fmt, kind, row, what) -> None:
    src = jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(ConversionError) as err:
        convert.convert(src, tmp_path / "o.jsonl", fmt, kind)
    line = err.value.problems[0]
    assert line.startswith(f"{src}:1: ") and what in line and line.endswith(")"), line


def test_export_to_verl_parquet_round_trips(tmp_path) -> None:
    """alignpipe prompts -> verl Parquet with verl's columns; reading it back gives the same prompts."""
    rows = [{"prompt": "12+34=", "answer": 46, "domain": "arithmetic", "difficulty": 1.0},
            {"prompt": [{"role": "user", "content": "1+1="}], "answer": "2", "domain": "arithmetic", "difficulty": 0.0}]
    src = jsonl(tmp_path / "prompts.jsonl", rows[1:] + [{**rows[1], "answer": "3"}])
    dst = tmp_path / "train.parquet"
    assert cli(src, str(dst), "--from", "alignpipe", "--to", "verl") == 0
    table = pq.read_table(dst).to_pylist()
    assert set(table[0]) == {"data_source", "prompt", "ability", "reward_model", "extra_info"}
    assert table[0]["reward_model"] == {"style": "rule", "ground_truth": "2"}
    assert table[0]["prompt"] == [{"role": "user", "content": "1+1="}] and table[0]["ability"] == "arithmetic"
    assert table[0]["extra_info"]["index"] == 0 and table[0]["extra_info"]["difficulty"] == 0.0
    back = tmp_path / "back.jsonl"
    assert convert.convert(dst, back).source_format == "verl"
    assert [(r["prompt"], r["answer"], r["domain"]) for r in read(back)] == [
        ([{"role": "user", "content": "1+1="}], "2", "arithmetic"), ([{"role": "user", "content": "1+1="}], "3", "arithmetic")]
    assert validate(back, "prompts").ok
    # the demo's RL prompts (with the code variant's test cases as extras), straight to verl and back
    from alignpipe.data import demo

    train, _ = demo.problems(max_operand=9)
    demo_src = jsonl(tmp_path / "demo.jsonl", demo.prompt_rows(train[:5]) + demo.code_prompt_rows(train[:5]))
    report = convert.convert(demo_src, tmp_path / "demo.parquet", target="verl")
    assert report.rows_out == 10 and report.validation.ok


def test_export_to_verl_refuses_preference_and_non_parquet(tmp_path) -> None:
    src = jsonl(tmp_path / "p.jsonl", HF_PREF)
    with pytest.raises(ConversionError, match="verl has no preference format"):
        convert.convert(src, tmp_path / "x.parquet", target="verl")
    with pytest.raises(ConversionError, match="verl reads Parquet"):
        convert.convert(src, tmp_path / "x.jsonl", target="verl")


def test_detection_failure_says_what_to_do(tmp_path) -> None:
    src = jsonl(tmp_path / "t.jsonl", [{"text": "plain pretraining text"}])
    with pytest.raises(ConversionError, match=r"cannot detect the format: no row looks like any of .* \(the rows "
                                              r"have 'text'\) \(name the format with --from FORMAT"):
        convert.convert(src, tmp_path / "o.jsonl")


def test_parquet_output_is_valid(tmp_path) -> None:
    src = jsonl(tmp_path / "a.jsonl", ALPACA)
    report = convert.convert(src, tmp_path / "a.parquet")
    assert report.validation.format == "messages"
    assert validate(tmp_path / "a.parquet", "sft").ok
