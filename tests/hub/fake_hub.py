"""A tiny in-memory Hugging Face Hub on 127.0.0.1, for tests of the real `huggingface_hub` client.

It answers the few endpoints a push and a download use, nothing else (anything else is a 404 whose
path is recorded in `unknown`, so a test can see what the client asked for):

    POST /api/repos/create                            create a model repo (409 if it exists)
    POST /api/validate-yaml                           the model card's metadata must parse
    POST /api/models/{repo}/branch/{branch}           create a branch from main
    POST /api/models/{repo}/preupload/{revision}      every file is uploaded "regular" (inline)
    POST /api/models/{repo}/commit/{revision}         NDJSON commit: header + base64 files
    GET  /api/models/{repo}[/revision/{revision}]     repo info: sha and siblings
    HEAD/GET /{repo}/resolve/{revision}/{path}        a file, with X-Repo-Commit and ETag headers

Point the client at it with `HF_ENDPOINT=<url>` and `HF_HUB_DISABLE_XET=1` (with hf_xet installed
the client would otherwise ask for Xet upload tokens). Use it as a context manager.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml


class FakeHub:
    """Repos are `{repo_id: {"private": bool, "branches": {name: [commit, ...]}}}`; a commit is
    `{"sha": str, "message": str, "files": {path: bytes}}` (each commit holds the full tree)."""

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.unknown: list[str] = []
        self.requests: list[str] = []
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                hub._handle(self, "GET")

            def do_HEAD(self) -> None:
                hub._handle(self, "HEAD")

            def do_POST(self) -> None:
                hub._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # --- state ---------------------------------------------------------------------------------------
    def head(self, repo_id: str, revision: str = "main") -> dict | None:
        """The latest commit of a branch (or the commit with that sha), or None."""
        repo = self.repos.get(repo_id)
        if repo is None:
            return None
        if revision in repo["branches"]:
            return repo["branches"][revision][-1]
        for commits in repo["branches"].values():
            for commit in commits:
                if commit["sha"] == revision:
                    return commit
        return None

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        commit = self.head(repo_id, revision)
        return dict(commit["files"]) if commit else {}

    # --- HTTP ----------------------------------------------------------------------------------------
    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        path = urlsplit(req.path).path
        self.requests.append(f"{method} {path}")
        body = b""
        if method == "POST":
            body = req.rfile.read(int(req.headers.get("Content-Length") or 0))
        parts = [unquote(p) for p in path.strip("/").split("/")]
        with self._lock:
            try:
                status, headers, payload = self._route(method, parts, body)
            except KeyError as exc:
                status, headers, payload = 404, {"X-Error-Code": "RepoNotFound"}, {"error": str(exc)}
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        req.send_response(status)
        if not isinstance(payload, bytes):
            req.send_header("Content-Type", "application/json")
        for key, value in headers.items():
            req.send_header(key, value)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        if method != "HEAD":
            req.wfile.write(data)

    def _route(self, method: str, parts: list[str], body: bytes):
        if method == "POST" and parts[:3] == ["api", "repos", "create"]:
            return self._create_repo(json.loads(body or b"{}"))
        if method == "POST" and parts[:2] == ["api", "validate-yaml"]:
            return self._validate_yaml(json.loads(body)["content"])
        if parts[:2] == ["api", "agent-harnesses"]:  # the client's optional registry fetch
            return 404, {}, {"error": "not served by FakeHub"}
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id = f"{parts[2]}/{parts[3]}"
            rest = parts[4:]
            if repo_id not in self.repos:
                return 404, {"X-Error-Code": "RepoNotFound"}, {"error": f"Repository {repo_id} not found"}
            if method == "POST" and rest[:1] == ["branch"]:
                return self._create_branch(repo_id, "/".join(rest[1:]))
            if method == "POST" and rest[:1] == ["preupload"]:
                files = json.loads(body)["files"]
                modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                return 200, {}, {"files": modes}
            if method == "POST" and rest[:1] == ["commit"]:
                return self._commit(repo_id, "/".join(rest[1:]), body)
            if method == "GET" and (not rest or rest[:1] == ["revision"]):
                return self._info(repo_id, "/".join(rest[1:]) or "main")
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        self.unknown.append(f"{method} /{'/'.join(parts)}")
        return 404, {}, {"error": "not served by FakeHub"}

    def _create_repo(self, payload: dict):
        repo_id = (
            f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        )
        if repo_id in self.repos:
            return 409, {}, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}
        empty = {"sha": _sha(repo_id.encode()), "message": "initial commit", "files": {}}
        self.repos[repo_id] = {
            # recent huggingface_hub releases send `visibility`; older ones (1.3) send `private: true`
            "private": payload.get("visibility") == "private" or payload.get("private") is True,
            "branches": {"main": [empty]},
        }
        return 200, {}, {"url": f"{self.url}/{repo_id}", "name": repo_id}

    def _validate_yaml(self, content: str):
        """The README's metadata must be a YAML mapping between `---` lines (as the Hub checks)."""
        if not content.startswith("---"):
            return 200, {}, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]}
        try:
            metadata = yaml.safe_load(content.split("---")[1])
        except yaml.YAMLError as exc:
            return 400, {}, {"errors": [{"message": str(exc)}]}
        if not isinstance(metadata, dict):
            return 400, {}, {"errors": [{"message": "metadata is not a mapping"}]}
        return 200, {}, {"errors": [], "warnings": []}

    def _create_branch(self, repo_id: str, branch: str):
        branches = self.repos[repo_id]["branches"]
        if branch in branches:
            return 409, {}, {"error": f"Reference {branch} already exists"}
        branches[branch] = [branches["main"][-1]]
        return 200, {}, {}

    def _commit(self, repo_id: str, revision: str, body: bytes):
        branches = self.repos[repo_id]["branches"]
        if revision not in branches:
            return 404, {"X-Error-Code": "RevisionNotFound"}, {"error": f"Invalid rev id: {revision}"}
        files = dict(branches[revision][-1]["files"])
        message = ""
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "header":
                message = value.get("summary", "")
            elif item["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "deletedFile":
                files.pop(value["path"], None)
            else:  # lfsFile & co: FakeHub only takes inline uploads
                return 400, {}, {"error": f"FakeHub does not take {item['key']} entries"}
        sha = _sha(json.dumps(sorted((p, _sha(c)) for p, c in files.items())).encode() + message.encode())
        branches[revision].append({"sha": sha, "message": message, "files": files})
        return (
            200,
            {},
            {"commitUrl": f"{self.url}/{repo_id}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None},
        )

    def _info(self, repo_id: str, revision: str):
        commit = self.head(repo_id, revision)
        if commit is None:
            return 404, {"X-Error-Code": "RevisionNotFound"}, {"error": f"Invalid rev id: {revision}"}
        siblings = [{"rfilename": p, "size": len(c)} for p, c in sorted(commit["files"].items())]
        private = self.repos[repo_id]["private"]
        return (
            200,
            {},
            {
                "id": repo_id,
                "modelId": repo_id,
                "sha": commit["sha"],
                "private": private,
                "siblings": siblings,
                "tags": [],
                "downloads": 0,
                "likes": 0,
            },
        )

    def _resolve(self, repo_id: str, revision: str, path: str):
        if repo_id not in self.repos:
            return 404, {"X-Error-Code": "RepoNotFound"}, {"error": f"Repository {repo_id} not found"}
        commit = self.head(repo_id, revision)
        if commit is None:
            return 404, {"X-Error-Code": "RevisionNotFound"}, {"error": f"Invalid rev id: {revision}"}
        if path not in commit["files"]:
            headers = {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit["sha"]}
            return 404, headers, {"error": f"{path} does not exist at {revision}"}
        content = commit["files"][path]
        return 200, {"X-Repo-Commit": commit["sha"], "ETag": f'"{_sha(content)}"'}, content


def _sha(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()
