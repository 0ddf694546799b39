"""Specification of eval.py and reasonrl/grading/report.py: loaders, metrics, resumable outputs, grading, backends, reports."""

import http.server
import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

import eval as ev  # noqa: E402
from reasonrl.grading import report as eval_report  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
REPO = Path(__file__).parent.parent


# ---------------------------------------------------------------- loading


def test_verl_schema_parquet_unwraps_aime24_boxed_answers():
    args = ev.EvalArgs(data_dir=str(FIXTURES))
    problems, n_samples, source = ev.load_benchmark("AIME24", args)
    assert problems == [
        {"example_id": "AIME24-0", "problem": "What is 12 + 30?", "answer": "42"},
        {"example_id": "AIME24-1", "problem": "What is 7 + 8?", "answer": "15"},
        {"example_id": "AIME24-2", "problem": "Compute $\\frac{1}{2} + \\frac{1}{3}$.", "answer": "\\frac{5}{6}"},
    ]
    assert n_samples == 32
    assert source == str(FIXTURES / "AIME24" / "test.parquet")


def test_verl_schema_strips_a_known_instruction_suffix():
    problems, n_samples, _ = ev.load_benchmark("MATH-500", ev.EvalArgs(data_dir=str(FIXTURES)))
    assert [p["problem"] for p in problems] == ["What is 2 + 2?", "Simplify $\\sqrt{16}$."]
    assert n_samples == 4


def test_matharena_schema_parquet_uses_problem_idx_as_id():
    problems, n_samples, _ = ev.load_benchmark("HMMT25", ev.EvalArgs(data_dir=str(FIXTURES)))
    assert problems == [
        {"example_id": "HMMT25-1", "problem": "What is 20 + 5?", "answer": "25"},
        {"example_id": "HMMT25-2", "problem": "What is 9 + 9?", "answer": "18"},
        {"example_id": "HMMT25-3", "problem": "Find $x$ if $2x = 10$.", "answer": "5"},
    ]
    assert n_samples == 32


@pytest.mark.parametrize("name, jsonl", [("AIME24", "verl_schema.jsonl"), ("HMMT25", "matharena_schema.jsonl")])
def test_jsonl_and_parquet_of_one_schema_load_identically(name, jsonl):
    from_parquet = ev.rows_to_problems(name, ev.read_table(str(FIXTURES / name / "test.parquet")), "p")
    from_jsonl = ev.rows_to_problems(name, ev.read_table(str(FIXTURES / jsonl)), "j")
    assert from_jsonl == from_parquet


def test_extra_benchmark_from_named_columns_with_its_own_k():
    args = ev.EvalArgs(extra=[f"GSM={FIXTURES / 'extra.jsonl'}:question:solution:3"])
    problems, n_samples, _ = ev.load_benchmark("GSM", args)
    assert problems == [{"example_id": "GSM-0", "problem": "What is 3 + 4?", "answer": "7"},
                        {"example_id": "GSM-1", "problem": "What is 10 + 11?", "answer": "21"}]
    assert n_samples == 3


def test_extra_benchmark_in_a_known_schema_needs_no_column_names():
    problems, n_samples, _ = ev.load_benchmark("Mine", ev.EvalArgs(extra=[f"Mine={FIXTURES / 'matharena_schema.jsonl'}"]))
    assert [(p["example_id"], p["answer"]) for p in problems] == [("Mine-1", "25"), ("Mine-2", "18"), ("Mine-3", "5")]
    assert n_samples == 1


def test_limit_and_n_samples_override_the_registry():
    problems, n_samples, _ = ev.load_benchmark("AIME24", ev.EvalArgs(data_dir=str(FIXTURES), limit=1, n_samples=2))
    assert [p["example_id"] for p in problems] == ["AIME24-0"]
    assert n_samples == 2


def test_missing_benchmark_file_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}/AIME25/test.parquet"):
        ev.load_benchmark("AIME25", ev.EvalArgs(data_dir=str(tmp_path)))


def test_missing_column_names_the_file_and_the_column():
    path = FIXTURES / "extra.jsonl"
    with pytest.raises(ValueError, match=f"{path}: no column 'answer'"):
        ev.load_benchmark("GSM", ev.EvalArgs(extra=[f"GSM={path}:question:answer"]))


def test_malformed_extra_spec_shows_the_expected_form():
    with pytest.raises(ValueError, match="NAME=path.jsonl:question_col:answer_col"):
        ev.parse_extra("GSM=data.jsonl:question")


def test_unknown_benchmark_lists_the_known_ones():
    with pytest.raises(KeyError, match="unknown benchmark 'AIME26'.*--extra"):
        ev.load_benchmark("AIME26", ev.EvalArgs())


def test_registry_holds_the_paper_protocol():
    assert {n: ev.BENCHMARKS[n][0] for n in ev.BENCHMARKS} == {
        "AIME24": 32, "AIME25": 32, "AMC23": 32, "MATH-500": 4, "Minerva": 4, "Olympiad-Bench": 4,
        "HMMT25": 32, "BRUMO25": 32, "CMIMC25": 32}
    assert [ev.BENCHMARKS[n][1] for n in ("MATH-500", "Minerva", "Olympiad-Bench")] == [500, 272, 674]


def test_prompt_is_the_problem_then_the_justrl_instruction():
    (request,) = ev.plan_requests("AIME24", [{"example_id": "AIME24-0", "problem": "What is 1 + 1?", "answer": "2"}],
                                  1, ev.EvalArgs(seed=7), chunk_size=1)
    assert request["messages"] == [{"role": "user", "content": "What is 1 + 1? Please reason step by step, and put "
                                                                "your final answer within \\boxed{}."}]
    assert request["seed"] == 7


def test_each_round_has_its_own_recorded_seed():
    problems = [{"example_id": f"X-{i}", "problem": "p", "answer": "a"} for i in range(3)]
    requests = ev.plan_requests("X", problems, 2, ev.EvalArgs(seed=100), chunk_size=2)
    assert [(r["example_id"], r["round"], r["seed"], r["chunk"]) for r in requests] == [
        ("X-0", 0, 100, ("X", 0, 0)), ("X-1", 0, 100, ("X", 0, 0)), ("X-2", 0, 100, ("X", 0, 1)),
        ("X-0", 1, 101, ("X", 1, 0)), ("X-1", 1, 101, ("X", 1, 0)), ("X-2", 1, 101, ("X", 1, 1))]


# ---------------------------------------------------------------- metrics


def test_pass_at_k_on_hand_computed_cases():
    assert eval_report.pass_at_k(4, 1, 1) == 0.25
    assert eval_report.pass_at_k(4, 1, 2) == 0.5  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert eval_report.pass_at_k(5, 2, 3) == pytest.approx(0.9)  # 1 - C(3,3)/C(5,3) = 1 - 1/10
    assert eval_report.pass_at_k(4, 0, 4) == 0.0
    assert eval_report.pass_at_k(4, 3, 2) == 1.0  # fewer wrong samples than k


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError, match="n=4, c=5, k=1"):
        eval_report.pass_at_k(4, 5, 1)


def test_avg_at_k_and_its_standard_error_across_problems():
    counts = [(4, 1), (4, 3)]  # per-problem means 0.25 and 0.75
    assert eval_report.avg_at_k(counts) == 0.5
    assert eval_report.standard_error(counts) == 0.25  # sqrt(((0.25^2 + 0.25^2) / 1) / 2)
    assert eval_report.standard_error([(4, 1)]) == 0.0


def test_pass_at_k_curve_uses_powers_of_two_and_k_equal_n():
    assert eval_report.pass_at_k_curve([(6, 6), (6, 0)]) == {1: 0.5, 2: 0.5, 4: 0.5, 6: 0.5}
    curve = eval_report.pass_at_k_curve([(4, 1)])
    assert list(curve) == [1, 2, 4] and curve[4] == 1.0


def test_benchmark_metrics_on_literal_records():
    def rec(example_id, correct, extracted, n_tokens, finish="stop"):
        return {"example_id": example_id, "correct": correct, "rule_correct": correct, "extracted": extracted,
                "n_tokens": n_tokens, "finish_reason": finish}

    records = [rec("A-0", True, "1", 10), rec("A-0", False, "2", 20),
               rec("A-1", False, None, 30, "length"), rec("A-1", False, "3", 40)]
    assert eval_report.benchmark_metrics(records) == {
        "n_problems": 2, "n_samples": 2, "n_responses": 4, "avg_at_k": 0.25, "avg_at_k_se": 0.25,
        "pass_at_k": {"1": 0.25, "2": 0.5}, "solved_by_none": 1, "solved_by_all": 0, "no_box": 1, "truncated": 1,
        "rule_correct": 1, "verifier_rescued": 0, "mean_tokens": 25.0}


def test_summary_averages_benchmarks_and_knows_when_all_nine_ran():
    one = {"avg_at_k": 0.5}
    assert eval_report.summarize({"AIME24": one, "X": {"avg_at_k": 0.25}}, "m")["average"] == {
        "avg_at_k": 0.375, "n_benchmarks": 2, "all_nine": False}
    assert eval_report.summarize({n: one for n in ev.BENCHMARKS}, "m")["average"]["all_nine"] is True


def test_reported_table_matches_the_paper_row():
    assert eval_report.REPORTED["justrl-deepseek"]["AIME24"] == 52.60
    assert eval_report.REPORTED["justrl-nemotron"]["avg"] == 64.32
    row = eval_report.REPORTED["deepseek-r1-distill-1.5b"]
    assert sum(row[n] for n in eval_report.BENCHMARK_ORDER) / 9 == pytest.approx(row["avg"], abs=0.01)


def _results():
    m = {"n_problems": 30, "n_samples": 32, "avg_at_k": 0.5, "avg_at_k_se": 0.0825, "pass_at_k": {"32": 0.8},
         "solved_by_none": 6, "solved_by_all": 3, "no_box": 12, "mean_tokens": 8123.4}
    return eval_report.summarize({"AIME24": m}, "ckpt")


def test_results_markdown_table_with_the_papers_numbers_beside():
    assert eval_report.results_table(_results(), compare="justrl-deepseek").splitlines() == [
        "# ckpt", "",
        "| benchmark | problems | k | avg@k (%) | SE | pass@k (%) | none solved | all solved | no box | mean tokens |"
        " justrl-deepseek (%) | diff |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        "| AIME24 | 30 | 32 | 50.00 | 8.25 | 80.00 | 6 | 3 | 12 | 8123 | 52.60 | -2.60 |",
        "| average (1 benchmarks) |  |  | 50.00 |  |  |  |  |  |  | - | - |"]


def test_unknown_compare_key_lists_the_known_ones():
    with pytest.raises(ValueError, match="justrl-nemotron"):
        eval_report.results_table(_results(), compare="justrl")


def _assert_png(path: Path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5000


def test_accuracy_and_pass_at_k_plots_are_real_pngs(tmp_path):
    eval_report.write_results(tmp_path, _results(), compare="justrl-deepseek")
    _assert_png(tmp_path / "accuracy.png")
    _assert_png(tmp_path / "pass_at_k.png")
    assert json.loads((tmp_path / "results.json").read_text()) == _results()


def test_accuracy_against_step_from_checkpoint_dir_names(tmp_path):
    for step, acc in [(100, 0.5), (50, 0.25)]:
        run = tmp_path / f"checkpoint-{step}"
        run.mkdir()
        results = _results()
        results["benchmarks"]["AIME24"]["avg_at_k"] = results["average"]["avg_at_k"] = acc
        (run / "results.json").write_text(json.dumps(results))
    series = eval_report.plot_runs([str(tmp_path / "checkpoint-100"), str(tmp_path / "checkpoint-50")],
                                   tmp_path / "steps.png")
    assert series == {"AIME24": [(50, 25.0), (100, 50.0)]}  # one benchmark: no separate average line
    _assert_png(tmp_path / "steps.png")


def test_accuracy_against_step_averages_several_benchmarks(tmp_path):
    for step, accs in [(10, (0.5, 0.25)), (20, (1.0, 0.5))]:
        run = tmp_path / f"checkpoint-{step}"
        run.mkdir()
        results = _results()
        results["benchmarks"] = {"AIME24": {"avg_at_k": accs[0]}, "AMC23": {"avg_at_k": accs[1]}}
        results["average"]["avg_at_k"] = sum(accs) / 2
        (run / "results.json").write_text(json.dumps(results))
    series = eval_report.plot_runs([str(tmp_path / "checkpoint-10"), str(tmp_path / "checkpoint-20")],
                                   tmp_path / "steps.png", xlabel="generation step")
    assert series == {"AIME24": [(10, 50.0), (20, 100.0)], "AMC23": [(10, 25.0), (20, 50.0)],
                      "average": [(10, 37.5), (20, 75.0)]}
    _assert_png(tmp_path / "steps.png")


def test_step_must_be_readable_from_the_dir_name():
    assert eval_report.step_of("runs/justrl/checkpoint-150/") == 150
    with pytest.raises(ValueError, match="checkpoint-N or pass --steps"):
        eval_report.step_of("runs/final")


# ---------------------------------------------------------------- outputs


def test_canonical_order_is_natural_example_order_then_round(tmp_path):
    path = tmp_path / "X.jsonl"
    records = [{"example_id": i, "round": r} for i, r in [("X-10", 0), ("X-2", 1), ("X-2", 0), ("X-9", 0)]]
    ev.write_canonical(path, records)
    assert path.read_text().splitlines() == [
        '{"example_id": "X-2", "round": 0}', '{"example_id": "X-2", "round": 1}',
        '{"example_id": "X-9", "round": 0}', '{"example_id": "X-10", "round": 0}']


def test_a_half_written_last_line_is_dropped_before_resuming(tmp_path):
    path = tmp_path / "X.jsonl"
    path.write_text('{"example_id": "X-0", "round": 0}\n{"example_id": "X-1", "ro')
    assert list(ev.read_samples(path)) == [("X-0", 0)]
    assert path.read_text() == '{"example_id": "X-0", "round": 0}\n'


def test_a_corrupt_line_in_the_middle_names_file_and_line(tmp_path):
    path = tmp_path / "X.jsonl"
    path.write_text('{"example_id": "X-0", "round": 0}\nnot json\n{"example_id": "X-1", "round": 0}\n')
    with pytest.raises(ValueError, match="X.jsonl:2 is not valid JSON"):
        ev.read_samples(path)


# ---------------------------------------------------------------- runs on a tiny random model (CPU)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch

    from reasonrl.demo import tiny

    torch.set_num_threads(1)
    texts = [json.dumps(p) for p in ev.read_table(str(FIXTURES / "verl_schema.jsonl"))["prompt"]]
    tokenizer = tiny.build_tokenizer(texts + [ev.PROMPT_TEMPLATE])
    path = tmp_path_factory.mktemp("tiny") / "model"
    tiny.build_model(tokenizer, seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def _argv(model, out, *extra):
    return ["--model", model, "--backend", "transformers", "--data_dir", str(FIXTURES), "--benchmarks", "AIME24",
            "HMMT25", "--n_samples", "2", "--max_new_tokens", "24", "--batch_size", "2", "--output_dir", str(out),
            *extra]


def _files(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in ("AIME24.jsonl", "HMMT25.jsonl")}


def test_records_hold_the_protocol_fields(tiny_model, tmp_path):
    ev.main(_argv(tiny_model, tmp_path))
    records = [json.loads(line) for line in (tmp_path / "AIME24.jsonl").read_text().splitlines()]
    assert [(r["example_id"], r["round"], r["seed"]) for r in records] == [
        ("AIME24-0", 0, 0), ("AIME24-0", 1, 1), ("AIME24-1", 0, 0), ("AIME24-1", 1, 1), ("AIME24-2", 0, 0),
        ("AIME24-2", 1, 1)]
    first = records[0]
    assert first["prompt"] == "What is 12 + 30? Please reason step by step, and put your final answer within \\boxed{}."
    assert first["answer"] == "42" and isinstance(first["response"], str)
    assert 1 <= first["n_tokens"] <= 24 and first["finish_reason"] in ("stop", "length")
    assert isinstance(first["correct"], bool)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["sampling"]["temperature"] == 0.7 and config["sampling"]["top_p"] == 0.9
    assert config["benchmarks"]["AIME24"] == {"source": str(FIXTURES / "AIME24" / "test.parquet"), "n_samples": 2}
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["benchmarks"]["HMMT25"]["n_problems"] == 3 and results["average"]["n_benchmarks"] == 2


def test_resume_after_a_crash_ends_byte_identical(tiny_model, tmp_path, monkeypatch):
    ev.main(_argv(tiny_model, tmp_path / "straight"))
    real = ev.BACKENDS["transformers"]

    def crashing(requests, model, sampling, args):
        for i, item in enumerate(real(requests, model, sampling, args)):
            if i == 4:  # mid-chunk: of AIME24 round 1's first chunk (2 prompts) only one sample is written
                raise KeyboardInterrupt
            yield item

    monkeypatch.setitem(ev.BACKENDS, "transformers", crashing)
    with pytest.raises(KeyboardInterrupt):
        ev.main(_argv(tiny_model, tmp_path / "resumed"))
    assert len((tmp_path / "resumed" / "AIME24.jsonl").read_text().splitlines()) == 4
    monkeypatch.setitem(ev.BACKENDS, "transformers", real)
    ev.main(_argv(tiny_model, tmp_path / "resumed"))
    assert _files(tmp_path / "resumed") == _files(tmp_path / "straight")


def test_max_samples_stops_early_and_a_rerun_completes_identically(tiny_model, tmp_path):
    ev.main(_argv(tiny_model, tmp_path / "straight"))
    assert ev.evaluate(ev.EvalArgs(**_kwargs(tiny_model, tmp_path / "parts", max_samples=3)),
                       tiny_model, tmp_path / "parts") is None
    assert not (tmp_path / "parts" / "results.json").exists()
    ev.main(_argv(tiny_model, tmp_path / "parts", "--max_samples", "4"))
    ev.main(_argv(tiny_model, tmp_path / "parts"))
    assert _files(tmp_path / "parts") == _files(tmp_path / "straight")


def _kwargs(model, out, **extra):
    return dict(model=model, backend="transformers", data_dir=str(FIXTURES), benchmarks=["AIME24", "HMMT25"],
                n_samples=2, max_new_tokens=24, batch_size=2, output_dir=str(out), **extra)


def test_resuming_with_a_different_sampling_setting_is_refused(tiny_model, tmp_path):
    ev.main(_argv(tiny_model, tmp_path))
    with pytest.raises(ValueError, match="temperature=0.7, this run has temperature=1.0"):
        ev.main(_argv(tiny_model, tmp_path, "--temperature", "1.0"))


def test_more_samples_per_problem_only_adds_rounds(tiny_model, tmp_path):
    ev.main(_argv(tiny_model, tmp_path))
    before = (tmp_path / "HMMT25.jsonl").read_text().splitlines()
    ev.main(_argv(tiny_model, tmp_path, "--n_samples", "3"))
    after = (tmp_path / "HMMT25.jsonl").read_text().splitlines()
    assert len(after) == 9 and [line for line in after if '"round": 2' not in line] == before


def test_regrade_rescores_existing_files_without_generating(tiny_model, tmp_path, monkeypatch):
    ev.main(_argv(tiny_model, tmp_path))
    path = tmp_path / "HMMT25.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records[0]["response"] = "20 + 5 = 25, so \\boxed{25}"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))

    def no_generation(*args):
        raise AssertionError("--regrade must not generate")

    monkeypatch.setitem(ev.BACKENDS, "transformers", no_generation)
    ev.main(["--regrade", "--output_dir", str(tmp_path)])
    regraded = json.loads(path.read_text().splitlines()[0])
    assert (regraded["correct"], regraded["rule_correct"], regraded["extracted"]) == (True, True, "25")
    assert json.loads((tmp_path / "results.json").read_text())["benchmarks"]["HMMT25"]["rule_correct"] >= 1


def test_regrade_needs_an_eval_output_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        ev.main(["--regrade", "--output_dir", str(tmp_path)])


# ---------------------------------------------------------------- model verifier


def test_verifier_sees_the_question_and_only_the_final_part():
    assert ev.response_tail("long thinking \\boxed{1}</think>The answer is $\\boxed{2}$.", 2000) == \
        "The answer is $\\boxed{2}$."
    assert ev.response_tail("x" * 10 + "END", 5) == "xxEND"
    assert ev.verifier_verdict("A") is True
    assert ev.verifier_verdict(" B") is False
    assert ev.verifier_verdict("<think>maybe A</think>C") is False


def test_final_grade_is_rules_or_verifier(monkeypatch):
    seen = []

    def fake_verifier(requests, model, sampling, args):
        for r in requests:
            seen.append(r["messages"][0]["content"])
            yield r, {"response": "A" if "half" in r["messages"][0]["content"] else "B"}

    monkeypatch.setitem(ev.BACKENDS, "transformers", fake_verifier)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    base = {"problem": "Compute 1/2.", "answer": "\\frac{1}{2}", "correct": None}
    records = [dict(base, response="\\boxed{\\frac{1}{2}}"), dict(base, response="thinking</think>one half"),
               dict(base, response="\\boxed{3}")]
    ev.grade_records(records, ev.EvalArgs(verifier="opencompass/CompassVerifier-3B"))
    assert [(r["rule_correct"], r["verifier_correct"], r["correct"]) for r in records] == [
        (True, None, True), (False, True, True), (False, False, False)]
    assert len(seen) == 2 and "Compute 1/2." in seen[0] and "one half" in seen[0] and "thinking" not in seen[0]


def test_verifier_runs_greedily_through_a_real_model(tiny_model, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    records = [{"problem": "What is 7 + 8?", "answer": "15", "response": "\\boxed{14}", "correct": None}]
    ev.grade_records(records, ev.EvalArgs(verifier=tiny_model))
    assert records[0]["rule_correct"] is False and isinstance(records[0]["verifier_correct"], bool)
    assert records[0]["correct"] == records[0]["verifier_correct"]


def test_eval_recipe_holds_the_protocol_defaults():
    from trl import TrlParser

    (args,) = TrlParser(ev.EvalArgs).parse_args_and_config(["--config", str(REPO / "recipes" / "eval_justrl.yaml")])
    assert (args.temperature, args.top_p, args.max_new_tokens, args.prompt_template) == (
        0.7, 0.9, 31744, ev.PROMPT_TEMPLATE)
    assert args.benchmarks == list(ev.BENCHMARKS)


# ---------------------------------------------------------------- OpenAI-compatible server


class FakeChatServer(http.server.BaseHTTPRequestHandler):
    """Answers every chat completion with the sum asked for in a 'What is A + B?' prompt, boxed."""

    bodies: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeChatServer.bodies.append((self.path, body))
        words = body["messages"][-1]["content"].split()
        try:
            text = f"so \\boxed{{{int(words[2]) + int(words[4].rstrip('?'))}}}"
        except (IndexError, ValueError):
            text = "no idea"
        answer = {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                  "usage": {"completion_tokens": 7}}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_openai_backend_against_a_local_server(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeChatServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    FakeChatServer.bodies = []
    try:
        ev.main(["--model", "served-model", "--backend", "openai", "--base_url",
                 f"http://127.0.0.1:{server.server_port}/v1", "--data_dir", str(FIXTURES), "--benchmarks", "HMMT25",
                 "--n_samples", "2", "--seed", "5", "--concurrency", "4", "--output_dir", str(tmp_path)])
    finally:
        server.shutdown()
    paths = {p for p, _ in FakeChatServer.bodies}
    assert paths == {"/v1/chat/completions"}
    bodies = sorted((b["seed"], b["messages"][0]["content"]) for _, b in FakeChatServer.bodies)
    assert [s for s, _ in bodies] == [5, 5, 5, 6, 6, 6]
    _, body = FakeChatServer.bodies[0]
    assert (body["model"], body["temperature"], body["top_p"], body["max_tokens"], body["n"]) == (
        "served-model", 0.7, 0.9, 31744, 1)
    results = json.loads((tmp_path / "results.json").read_text())["benchmarks"]["HMMT25"]
    # 20 + 5 and 9 + 9 are answered correctly, "Find x" is not: avg@2 = 2/3
    assert results["avg_at_k"] == pytest.approx(2 / 3)
    assert (results["solved_by_all"], results["solved_by_none"], results["no_box"], results["mean_tokens"]) == (
        2, 1, 2, 7.0)


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_command_line_run_end_to_end(tiny_model, tmp_path):
    cmd = [sys.executable, "eval.py", *_argv(tiny_model, tmp_path / "checkpoint-10"), "--compare", "justrl-deepseek"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "checkpoint-10"
    table = (out / "results.md").read_text()
    assert "| AIME24 | 3 | 2 |" in table and "| HMMT25 | 3 | 2 |" in table and "52.60" in table
    results = json.loads((out / "results.json").read_text())
    assert set(results["benchmarks"]) == {"AIME24", "HMMT25"}
    assert all(0 <= m["avg_at_k"] <= 1 and not math.isnan(m["avg_at_k_se"]) for m in results["benchmarks"].values())
    _assert_png(out / "accuracy.png")
    done = subprocess.run([sys.executable, "eval.py", "--plot_runs", str(out), "--output_dir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_png(tmp_path / "accuracy_vs_step.png")


def test_models_sweep_without_steps_fails_before_generating(tmp_path, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("generated before checking the steps")

    monkeypatch.setitem(ev.BACKENDS, "transformers", must_not_run)
    with pytest.raises(ValueError, match="cannot read a step from .*base_model.*pass --steps"):
        ev.main(["--models", str(tmp_path / "base_model"), str(tmp_path / "checkpoint-10"), "--backend",
                 "transformers", "--output_dir", str(tmp_path / "out")])
    with pytest.raises(ValueError, match="--steps has 1 values for 2 run directories"):
        ev.main(["--models", "a", "checkpoint-10", "--steps", "0", "--output_dir", str(tmp_path / "out")])
