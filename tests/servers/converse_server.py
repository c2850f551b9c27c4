#!/usr/bin/env python3
"""A Bedrock Converse-shaped server on 127.0.0.1 that checks every request's credentials.

SigV4 signatures are recomputed with botocore's reference signer (SigV4Auth), independently of
the Rust client: the canonical request is rebuilt from the bytes received, over the headers the
request says it signed, at the time it says it was signed. Bearer tokens (Bedrock API keys) are
compared with --api-key. A request that fails the check gets 403 and an AWS-shaped error
(`x-amzn-ErrorType`, `{"message": ...}`), as Bedrock does.

The reply is a Converse reply whose text is --answer or, with --teacher URL, whatever the
OpenAI-compatible server at URL answers to the same messages (an `edgecascade serve` tier with a
teacher plugin, say), reduced to the label's word as a chat model on Bedrock would answer: a
Bedrock-shaped teacher for the distillation loop. Every request is logged as one JSON line
to --log: path, model, headers (as received) and body, so tests can check what was sent.

Prints the port on stdout once listening.

    python3 converse_server.py --access-key AKID --secret-key S --region us-east-1 \
        --answer business --log requests.jsonl
"""

import argparse
import json
import sys
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def parse_authorization(value):
    """The credential scope, signed headers and signature of a SigV4 Authorization header."""
    algorithm, _, rest = value.partition(" ")
    if algorithm != "AWS4-HMAC-SHA256":
        raise ValueError(f"algorithm {algorithm!r}")
    parts = dict(p.strip().split("=", 1) for p in rest.split(","))
    access_key, date, region, service, terminator = parts["Credential"].split("/")
    if terminator != "aws4_request":
        raise ValueError("credential scope does not end in aws4_request")
    return {
        "access_key": access_key,
        "date": date,
        "region": region,
        "service": service,
        "signed_headers": parts["SignedHeaders"].split(";"),
        "signature": parts["Signature"],
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, error_type=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        if error_type:
            self.send_header("x-amzn-ErrorType", f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/")
        self.end_headers()
        self.wfile.write(data)

    def check_sigv4(self, body):
        """None when the signature holds, else why not."""
        cfg = self.server.cfg
        try:
            auth = parse_authorization(self.headers.get("authorization", ""))
        except (ValueError, KeyError) as e:
            return f"malformed Authorization header: {e}"
        if auth["access_key"] != cfg.access_key:
            return "unknown access key"
        if (auth["region"], auth["service"]) != (cfg.region, "bedrock"):
            return f"scope {auth['region']}/{auth['service']}, expected {cfg.region}/bedrock"
        for needed in ("host", "x-amz-date"):
            if needed not in auth["signed_headers"]:
                return f"{needed} is not signed"
        if cfg.session_token and self.headers.get("x-amz-security-token") != cfg.session_token:
            return "missing or wrong session token"
        amz_date = self.headers["x-amz-date"]
        # Only the headers the client says it signed, exactly as received.
        headers = {name: self.headers[name] for name in auth["signed_headers"] if name in self.headers}
        url = f"http://{self.headers['host']}{self.path}"
        request = AWSRequest(method=self.command, url=url, headers=headers, data=body)
        request.context["timestamp"] = amz_date
        signer = SigV4Auth(Credentials(cfg.access_key, cfg.secret_key, cfg.session_token), "bedrock", cfg.region)
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
        if expected != auth["signature"]:
            return "The request signature we calculated does not match the signature you provided."
        return None

    def do_POST(self):
        cfg = self.server.cfg
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        path = urllib.parse.urlsplit(self.path).path
        segments = path.split("/")
        record = {
            "path": self.path,
            "model": urllib.parse.unquote(segments[2]) if len(segments) == 4 else None,
            "headers": dict(self.headers.items()),
            "body": body.decode("utf-8", "replace"),
        }
        verdict = None
        authorization = self.headers.get("authorization", "")
        if authorization.startswith("Bearer "):
            if not cfg.api_key or authorization[len("Bearer "):] != cfg.api_key:
                verdict = "invalid API key"
        elif cfg.access_key:
            verdict = self.check_sigv4(body)
        else:
            verdict = "no credentials"
        record["auth"] = verdict or "ok"
        with open(cfg.log, "a") as log:
            log.write(json.dumps(record) + "\n")
        if len(segments) != 4 or segments[1] != "model" or segments[3] != "converse":
            return self.reply(404, {"message": f"no such operation: {path}"}, "UnknownOperationException")
        if verdict:
            error = "InvalidSignatureException" if "signature" in verdict else "AccessDeniedException"
            return self.reply(403, {"message": verdict}, error)
        try:
            request = json.loads(body)
            assert isinstance(request["messages"], list) and request["messages"], "messages"
            assert request["inferenceConfig"]["maxTokens"] > 0, "inferenceConfig.maxTokens"
        except (ValueError, KeyError, TypeError, AssertionError) as e:
            return self.reply(400, {"message": f"malformed request: {e}"}, "ValidationException")
        answer = cfg.answer
        if cfg.teacher:
            messages = [{"role": "system", "content": b["text"]} for b in request.get("system", [])]
            messages += [{"role": m["role"], "content": "".join(c.get("text", "") for c in m["content"])}
                         for m in request["messages"]]
            ask = json.dumps({"model": record["model"], "messages": messages,
                              "max_tokens": request["inferenceConfig"]["maxTokens"]}).encode()
            req = urllib.request.Request(cfg.teacher + "/chat/completions", data=ask,
                                         headers={"content-type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    answer = json.load(r)["choices"][0]["message"]["content"]
                # An edgecascade tier answers with its label's scores in JSON; a model on Bedrock
                # answers with words. Keep only the label, as Nova would give it.
                try:
                    answer = json.loads(answer)["label"]
                except (ValueError, KeyError, TypeError):
                    pass
            except Exception as e:  # the teacher's failure is Bedrock's: a 500, as AWS would send
                return self.reply(500, {"message": f"teacher failed: {e}"}, "InternalServerException")
        self.reply(
            200,
            {
                "output": {"message": {"role": "assistant", "content": [{"text": answer}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": 31, "outputTokens": 2, "totalTokens": 33},
                "metrics": {"latencyMs": 120},
            },
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--access-key", default="")
    parser.add_argument("--secret-key", default="")
    parser.add_argument("--session-token", default=None)
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--api-key", default="", help="the Bedrock API key accepted as a bearer token")
    parser.add_argument("--answer", default="", help="the text of every reply")
    parser.add_argument("--teacher", default="", help="answer with this OpenAI-compatible server (…/v1) instead")
    parser.add_argument("--log", required=True, help="append each request here as a JSON line")
    cfg = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.cfg = cfg
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
