"""A stand-in for `vllm run-batch -i IN -o OUT --model M` (vLLM is not installable here): answers every
request line of IN with the test server's canned answer and writes OUT in vLLM's output format (the same
as OpenAI's batch output). For the batch_files tests and the Slurm script they run."""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.openai_server import body_key, canned_answer, completion  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["run-batch"])
    p.add_argument("-i", "--input-file", required=True)
    p.add_argument("-o", "--output-file", required=True)
    p.add_argument("--model", required=True)
    args = p.parse_args()
    with open(args.input_file) as f, open(args.output_file, "w") as out:
        for k, line in enumerate(f):
            request = json.loads(line)
            body = request["body"]
            assert body["model"] == args.model, (body["model"], args.model)
            answer = completion(body, body_key(body), canned_answer(body))
            response = {"status_code": 200, "request_id": f"vllm-batch-{k}", "body": answer}
            out.write(
                json.dumps({"id": f"vllm-{k}", "custom_id": request["custom_id"], "response": response, "error": None})
                + "\n"
            )


if __name__ == "__main__":
    main()
