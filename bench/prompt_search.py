"""Prompt search time (issue 12): a 100-token text through a finished run's model and SAE
in the API process, cold (first request: loads the model and SAE) and warm (cached).

    python bench/prompt_search.py DATA_DIR [--run 1] [--tokens 100] [--repeat 10]

DATA_DIR holds a finished run, e.g. the demo's (`saestudio serve --demo`, or POST
/api/v1/demo, then wait for it to complete).
"""

from __future__ import annotations

import argparse
import platform
import pydoc_data.topics as topics
import statistics
import subprocess
import time
from pathlib import Path

from fastapi.testclient import TestClient

from saestudio.activations.manifest import open_activation_dataset
from saestudio.activations.text_data import load_tokenizer
from saestudio.api.app import create_app
from saestudio.settings import Settings


def text_of(tokenizer: object, tokens: int) -> str:
    """Words of the Python docs until the prompt (with BOS/CLS) has ``tokens`` tokens."""
    words = " ".join(topics.topics.values()).split()
    n = 1
    while len(tokenizer(" ".join(words[:n]), add_special_tokens=False)["input_ids"]) + 1 < tokens:  # type: ignore[operator]
        n += 1
    return " ".join(words[:n])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("--run", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=10)
    a = ap.parse_args()
    settings = Settings(data_dir=a.data_dir, api_token=None)
    with TestClient(create_app(settings)) as client:
        run = client.get(f"/api/v1/trainings/{a.run}").json()
        manifest = open_activation_dataset(run["config"]["activations"])
        text = text_of(load_tokenizer(manifest.model), a.tokens)
        url = f"/api/v1/trainings/{a.run}/features/search"
        t0 = time.perf_counter()
        first = client.post(url, json={"text": text})
        cold = time.perf_counter() - t0
        first.raise_for_status()
        walls, inner = [], []
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            body = client.post(url, json={"text": text}).json()
            walls.append(time.perf_counter() - t0)
            inner.append(body["seconds"])
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if "Model name" in ln),
        platform.processor(),
    )
    print(f"machine: {model}; load average {Path('/proc/loadavg').read_text().split()[:3]}")
    print(
        f"run {a.run} ({run['name']}, d_sae {run['d_sae']}), {len(first.json()['tokens'])} tokens"
    )
    print(f"cold request (loads model + SAE): {cold:.2f} s")
    print(
        f"warm request: median {statistics.median(walls) * 1000:.0f} ms, max {max(walls) * 1000:.0f} ms"
        f" (model + SAE alone: median {statistics.median(inner) * 1000:.0f} ms)"
    )


if __name__ == "__main__":
    main()
