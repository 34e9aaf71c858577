#!/usr/bin/python3
"""The HTTP layer (src/http) at the byte level, through `darkbloom serve`: routing errors in the
OpenAI shape, keep-alive, header and body limits, 100-continue, malformed requests, and Server-Sent
Events written as one flushed chunk per event."""
import argparse
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import unittest

DARKBLOOM = None


class HttpServer(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        model = os.path.join(cls.tmp.name, "http-model.gguf")
        subprocess.run([DARKBLOOM, "models", "synth", "-o", model, "--layers", "1", "--embd", "64", "--heads", "2",
                        "--kv-heads", "1", "--ffn", "128", "--vocab", "400"], check=True, capture_output=True)
        cls.server = subprocess.Popen([DARKBLOOM, "serve", "-m", model, "--port", "0", "--threads", "1"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = cls.server.stdout.readline()
        match = re.search(r"127\.0\.0\.1:(\d+)/v1", line)
        if not match:
            cls.server.kill()
            raise RuntimeError(f"serve did not start: {line} {cls.server.stderr.read()}")
        cls.port = int(match.group(1))

    @classmethod
    def tearDownClass(cls):
        cls.server.kill()
        cls.server.wait()
        cls.server.stdout.close()
        cls.server.stderr.close()
        cls.tmp.cleanup()

    def connection(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self.addCleanup(conn.close)
        return conn

    def raw(self, data, read_until_close=True):
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(data)
            chunks = []
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if not read_until_close:
                    break
            return b"".join(chunks)

    def chat_body(self, **extra):
        body = {"model": "http-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
        body.update(extra)
        return json.dumps(body)

    def assert_openai_error(self, response_body, code):
        error = json.loads(response_body)["error"]
        self.assertEqual(error["code"], code)
        for field in ("message", "type", "code", "param"):
            self.assertIn(field, error)

    def test_health(self):
        conn = self.connection()
        conn.request("GET", "/health")
        response = conn.getresponse()
        self.assertEqual(response.status, 200)
        self.assertEqual(json.loads(response.read())["status"], "ok")

    def test_unknown_path_and_wrong_method_are_openai_errors(self):
        conn = self.connection()
        conn.request("GET", "/v2/nothing")
        response = conn.getresponse()
        self.assertEqual(response.status, 404)
        self.assert_openai_error(response.read(), "not_found")
        conn.request("GET", "/v1/chat/completions")
        response = conn.getresponse()
        self.assertEqual(response.status, 405)
        self.assert_openai_error(response.read(), "method_not_allowed")

    def test_keep_alive_serves_several_requests_on_one_connection(self):
        conn = self.connection()
        for _ in range(3):
            conn.request("POST", "/v1/chat/completions", body=self.chat_body(), headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            self.assertEqual(response.status, 200)
            self.assertEqual(json.loads(response.read())["object"], "chat.completion")
        conn.request("GET", "/health")
        self.assertEqual(conn.getresponse().status, 200)

    def test_malformed_request_line_gets_400_and_the_connection_closes(self):
        reply = self.raw(b"GARBAGE\r\n\r\n")
        self.assertTrue(reply.startswith(b"HTTP/1.1 400"), reply[:100])
        self.assert_openai_error(reply.split(b"\r\n\r\n", 1)[1], "invalid_request_error")

    def test_oversized_headers_get_431(self):
        reply = self.raw(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        self.assertTrue(reply.startswith(b"HTTP/1.1 431"), reply[:100])

    def test_body_over_the_limit_gets_413_before_it_is_sent(self):
        reply = self.raw(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 11000000\r\n\r\n")
        self.assertTrue(reply.startswith(b"HTTP/1.1 413"), reply[:100])
        self.assert_openai_error(reply.split(b"\r\n\r\n", 1)[1], "request_too_large")

    def test_expect_100_continue_is_answered(self):
        body = self.chat_body().encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Expect: 100-continue\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
            self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 100"))
            s.sendall(body)
            reply = b""
            while b"\r\n\r\n" not in reply or b"chat.completion" not in reply:
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
        self.assertTrue(reply.startswith(b"HTTP/1.1 200"), reply[:100])

    def test_bad_json_and_unknown_model(self):
        conn = self.connection()
        conn.request("POST", "/v1/chat/completions", body="{oops")
        response = conn.getresponse()
        self.assertEqual(response.status, 400)
        self.assert_openai_error(response.read(), "invalid_request_error")
        conn.request("POST", "/v1/chat/completions", body=self.chat_body(model="other"))
        response = conn.getresponse()
        self.assertEqual(response.status, 404)
        self.assertEqual(json.loads(response.read())["error"]["param"], "model")

    def test_prompt_longer_than_the_context_is_a_400(self):
        conn = self.connection()
        body = json.dumps({"model": "http-model", "prompt": "word " * 6000, "max_tokens": 5})
        conn.request("POST", "/v1/completions", body=body)
        response = conn.getresponse()
        self.assertEqual(response.status, 400)
        self.assertEqual(json.loads(response.read())["error"]["code"], "context_length_exceeded")

    def test_sse_events_are_flushed_one_chunk_each(self):
        body = self.chat_body(stream=True, max_tokens=20, ignore_eos=True).encode()
        request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: "
                   + str(len(body)).encode() + b"\r\n\r\n" + body)
        reply = self.raw(request)
        head, rest = reply.split(b"\r\n\r\n", 1)
        self.assertIn(b"Transfer-Encoding: chunked", head)
        self.assertIn(b"Content-Type: text/event-stream", head)
        # Decode the chunked framing: every chunk must hold exactly one complete event.
        events = []
        while rest:
            size_line, rest = rest.split(b"\r\n", 1)
            size = int(size_line, 16)
            if size == 0:
                break
            chunk, rest = rest[:size], rest[size + 2:]
            self.assertTrue(chunk.startswith(b"data: ") and chunk.endswith(b"\n\n"), chunk)
            self.assertEqual(chunk.count(b"\n\n"), 1)
            events.append(chunk[6:-2].decode())
        self.assertEqual(events[-1], "[DONE]")
        self.assertEqual(events.count("[DONE]"), 1)
        self.assertEqual(json.loads(events[0])["choices"][0]["delta"]["role"], "assistant")
        self.assertEqual(json.loads(events[-2])["choices"][0]["finish_reason"], "length")
        self.assertGreater(len(events), 3)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--darkbloom", required=True)
    args, rest = parser.parse_known_args()
    DARKBLOOM = os.path.abspath(args.darkbloom)
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)
