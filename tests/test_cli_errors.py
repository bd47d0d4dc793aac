"""Every failure of the `omnirec` command is one `error: ...` line on stderr and exit code 2, never a traceback.

The bad invocations run in-process through `omnirec.cli.main` on tiny files; nothing trains except the one
retrain test, on a popularity model over a few users.
"""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
from pathlib import Path

import pytest

from omnirec import cli, cli_parser
from omnirec.bundle import Bundle
from omnirec.data.dataset import Dataset
from omnirec.data.split import split_dataset
from omnirec.data.synthetic import SyntheticConfig, generate
from omnirec.models import Popularity

GOOD_CSV = "user_id,item_id,timestamp\n" + "".join(f"u{u},i{(u + j) % 7},{j}\n" for u in range(6) for j in range(4))
LARGE_QUOTE_LINE = 102  # where the unclosed quote of large_quote.csv opens
RIGHT_KEY = "right-key"


def _large_quote_csv() -> str:
    """Large enough that the quote swallows more than the csv module's field limit (131,072 characters)."""
    rows = ["user_id,item_id,timestamp"] + [f"u{i},item{i % 97},{i}" for i in range(12_000)]
    rows.insert(LARGE_QUOTE_LINE - 1, 'u9,"oops,5')
    return "\n".join(rows) + "\n"


def _train_toml(data: Path, model: str = "pop", top: str = "", data_extra: str = "", tables: str = "") -> str:
    head = f'model = "{model}"\nout = "{data.parent / "bundle-out"}"\n{top}\n'
    return f'{head}[data]\npath = "{data}"\nformat = "csv"\n{data_extra}\n{tables}'


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Every file the bad invocations name, written once."""
    d = tmp_path_factory.mktemp("cli-errors")
    good = d / "good.csv"
    texts = {
        "good.csv": GOOD_CSV, "empty.csv": "", "header.csv": "user_id,item_id,timestamp\n",
        "noheader.csv": "u1,a,1\nu2,b,2\n", "columns.csv": "user,item,ts\nu1,a,1\n",
        "small_quote.csv": 'user_id,item_id,timestamp\nu1,a,1\nu2,"b,2\nu3,c,3\n',
        "large_quote.csv": _large_quote_csv(), "ragged.csv": "user_id,item_id,timestamp\nu1,a,1\nu2,b\n",
        "times.csv": "user_id,item_id,timestamp\nu1,a,1\nu2,b,soon\n", "seq.txt": "u1 a b\nu2\n",
        "bad.toml": "model = pop\n", "section.toml": "[foo]\nx = 1\n", "modelkey.toml": "[models.pop]\nx = 1\n",
        "nomodel.toml": "[models.nosuch]\nk = 1\n",
        "topkey.toml": _train_toml(good, top="epochs = 3"), "unknown.toml": _train_toml(good, model="nosuch"),
        "datakey.toml": _train_toml(good, data_extra='pathh = "x.csv"'),
        "cleankey.toml": _train_toml(good, tables="[clean]\nmin_users = 2\n"),
    }
    for name, text in texts.items():
        (d / name).write_text(text)
    (d / "garbage.csv").write_bytes(b"\xff\xfe\x00\x81garbage\x9c\n\x00\x00")
    (d / "folder").mkdir()
    inter, items = generate(SyntheticConfig(n_users=30, n_items=20, seed=0))
    dataset = Dataset.from_frames(inter, items, name="tiny")
    model = Popularity().fit(split_dataset(dataset, "loo").train_data())
    Bundle.create(model, dataset).save(d / "bundle")
    shutil.copytree(d / "bundle", d / "tampered")
    with (d / "tampered" / "users.json").open("a") as fh:
        fh.write(" ")
    shutil.copytree(d / "bundle", d / "badjson")
    (d / "badjson" / "bundle.json").write_text("{")
    return d


class _Handler(http.server.BaseHTTPRequestHandler):
    """A stand-in for `omnirec serve`: /admin/key as the real one answers it; /admin/reload fails."""

    configured = True  # False: a server started without a key (403)

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook
        if self.path != "/admin/key":
            return self._answer(404, {"detail": "Not Found"})
        if not self.configured:
            return self._answer(403, {"detail": "writes are disabled: the server was started without an API key"})
        if self.headers.get("x-api-key") != RIGHT_KEY:
            return self._answer(401, {"detail": "missing or wrong X-API-Key"})
        return self._answer(204, None)

    def do_POST(self) -> None:  # noqa: N802
        self._answer(500, {"detail": "internal error"})

    def _answer(self, status: int, body: dict | None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:  # the default writes every request to stderr
        pass


class _NoKeyHandler(_Handler):
    configured = False


@pytest.fixture(scope="module")
def servers():
    """{"refusing": URL, "nokey": URL, "closed": URL of a port nothing listens on}."""
    running = {name: http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
               for name, handler in (("refusing", _Handler), ("nokey", _NoKeyHandler))}
    for server in running.values():
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    with socket.socket() as sock:  # a port that was free a moment ago, and is closed now
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    urls = {name: f"http://127.0.0.1:{s.server_address[1]}" for name, s in running.items()}
    yield {**urls, "closed": f"http://127.0.0.1:{closed}"}
    for server in running.values():
        server.shutdown()
        server.server_close()


EVAL = ["evaluate", "--models", "pop", "--quiet"]
CSV = ["--format", "csv"]
RETRAIN = ["retrain", "--config", "{d}/absent.toml", "--store", "{d}/events.db", "--reload"]

# (id, argv with {d} = the files folder and {url} = a server, what the one error line must contain)
CASES = [
    # bad files
    ("missing-file", [*EVAL, "--path", "{d}/absent.csv", *CSV], "absent.csv: no such file"),
    ("a-directory", [*EVAL, "--path", "{d}/folder", *CSV], "folder: a folder, not a file"),
    ("empty-file", [*EVAL, "--path", "{d}/empty.csv", *CSV], "empty.csv: the file is empty"),
    ("header-only", [*EVAL, "--path", "{d}/header.csv", *CSV], "header.csv: a header but no records"),
    ("no-header", [*EVAL, "--path", "{d}/noheader.csv", *CSV], "no column 'user_id' (columns: u1, a, 1)"),
    ("wrong-columns", [*EVAL, "--path", "{d}/columns.csv", *CSV], "no column 'user_id' (columns: user, item, ts)"),
    ("unmapped-column", [*EVAL, "--path", "{d}/good.csv", *CSV, "--user-col", "uid"], "no column 'uid'"),
    ("unclosed-quote-small", [*EVAL, "--path", "{d}/small_quote.csv", *CSV], "small_quote.csv, line 3: a quoted field"),
    ("unclosed-quote-large", [*EVAL, "--path", "{d}/large_quote.csv", *CSV],
     f"large_quote.csv, line {LARGE_QUOTE_LINE}: a quoted field opens"),
    ("ragged-row", [*EVAL, "--path", "{d}/ragged.csv", *CSV], "ragged.csv, line 3: 2 fields"),
    ("bad-timestamp", [*EVAL, "--path", "{d}/times.csv", *CSV], "line 3: column 'timestamp' holds 'soon'"),
    ("binary-garbage", [*EVAL, "--path", "{d}/garbage.csv", *CSV], "garbage.csv, line 1: bytes not valid utf-8"),
    ("seq-line-without-item", [*EVAL, "--path", "{d}/seq.txt", "--format", "seq"], "seq.txt, line 2"),
    ("bad-toml", [*EVAL, "--path", "{d}/good.csv", *CSV, "--config", "{d}/bad.toml"], "bad.toml: Invalid value"),
    ("bad-toml-train", ["train", "--config", "{d}/bad.toml"], "bad.toml: Invalid value (at line 1"),
    ("missing-toml", ["train", "--config", "{d}/absent.toml"], "absent.toml: No such file"),
    ("unknown-toml-section", [*EVAL, "--path", "{d}/good.csv", *CSV, "--config", "{d}/section.toml"],
     "unknown section [foo]"),
    ("unknown-model-key", [*EVAL, "--path", "{d}/good.csv", *CSV, "--config", "{d}/modelkey.toml"],
     "unknown key 'x' in [models.pop]"),
    ("unknown-model-table", [*EVAL, "--path", "{d}/good.csv", *CSV, "--config", "{d}/nomodel.toml"],
     "[models.nosuch], which is not a model"),
    ("unknown-train-key", ["train", "--config", "{d}/topkey.toml"], "unknown key 'epochs'"),
    ("unknown-model-train", ["train", "--config", "{d}/unknown.toml"], "unknown model 'nosuch'"),
    ("unknown-model-evaluate", ["evaluate", "--path", "{d}/good.csv", *CSV, "--models", "pop,nosuch"],
     "unknown model 'nosuch'"),
    ("bad-data-key", ["train", "--config", "{d}/datakey.toml"], "unknown key 'pathh' in [data]"),
    ("bad-clean-key", ["train", "--config", "{d}/cleankey.toml"], "unknown key 'min_users' in [clean]"),
    # bad flags
    ("no-command", [], "required: command"),
    ("unknown-command", ["fly"], "invalid choice: 'fly'"),
    ("unknown-flag", [*EVAL, "--bogus"], "unrecognized arguments: --bogus"),
    ("k-zero", ["recommend", "--bundle", "{d}/bundle", "--user", "1", "-k", "0"], "argument -k: expected an integer"),
    ("k-negative", ["recommend", "--bundle", "{d}/bundle", "--user", "1", "-k", "-3"], "got '-3'"),
    ("k-not-a-number", ["recommend", "--bundle", "{d}/bundle", "--user", "1", "-k", "ten"], "got 'ten'"),
    ("k-too-large", ["recommend", "--bundle", "{d}/bundle", "--user", "1", "-k", "5000"], "from 1 to 1000"),
    ("query-weight", ["recommend", "--bundle", "{d}/bundle", "--query", "x", "--query-weight", "2"],
     "argument --query-weight"),
    ("evaluate-k-list", [*EVAL, "--path", "{d}/good.csv", *CSV, "--k", "10,0"], "argument --k"),
    ("cold-frac", [*EVAL, "--path", "{d}/good.csv", *CSV, "--cold-frac", "1.5"], "argument --cold-frac"),
    ("cold-quantile", [*EVAL, "--path", "{d}/good.csv", *CSV, "--cold-quantile", "nan"], "argument --cold-quantile"),
    ("bad-format", [*EVAL, "--path", "{d}/good.csv", "--format", "xml"], "argument --format: invalid choice: 'xml'"),
    ("dataset-without-data-dir", [*EVAL, "--dataset", "beauty"], "--dataset needs --data-dir"),
    ("path-without-format", [*EVAL, "--path", "{d}/good.csv"], "--path needs --format"),
    ("no-data-source", EVAL, "give either --dataset"),
    ("items-without-text-cols", [*EVAL, "--path", "{d}/good.csv", *CSV, "--items", "{d}/good.csv"],
     "--items needs --text-cols"),
    ("no-models", ["evaluate", "--path", "{d}/good.csv", *CSV, "--models", ","], "--models names no model"),
    ("negative-budget", ["auto", "--path", "{d}/good.csv", *CSV, "--out", "{d}/auto", "--budget-minutes", "-1"],
     "argument --budget-minutes: expected a number > 0"),
    ("quickstart-users", ["quickstart", "--users", "0"], "argument --users"),
    ("serve-port", ["serve", "--bundle", "{d}/bundle", "--port", "70000"], "argument --port"),
    ("serve-workers", ["serve", "--bundle", "{d}/bundle", "--workers", "0"], "argument --workers"),
    # missing or corrupt bundles
    ("no-bundle-folder", ["recommend", "--bundle", "{d}/nowhere", "--user", "1"], "no bundle.json"),
    ("folder-without-bundle", ["recommend", "--bundle", "{d}/folder", "--user", "1"], "no bundle.json"),
    ("tampered-bundle", ["recommend", "--bundle", "{d}/tampered", "--user", "1"], "users.json: checksum differs"),
    ("corrupt-bundle-json", ["recommend", "--bundle", "{d}/badjson", "--user", "1"], "badjson/bundle.json: not valid JSON"),
    ("serve-no-bundle", ["serve", "--bundle", "{d}/folder"], "no bundle.json"),
    ("compress-no-bundle", ["compress", "--bundle", "{d}/nowhere", "--out", "{d}/small"], "nowhere"),
    # servers, before any training
    ("reload-unreachable", [*RETRAIN, "{closed}"], "cannot reach the server at {closed} (Connection refused)"),
    ("reload-wrong-key", [*RETRAIN, "{refusing}"],
     "the server at {refusing} refused the key: missing or wrong X-API-Key"),
    ("reload-server-without-key", [*RETRAIN, "{nokey}"], "refused the key: writes are disabled"),
    ("reload-not-a-url", [*RETRAIN, "localhost:8000"], "'localhost:8000' is not a server URL"),
]


def _fill(text: str, files: Path, servers: dict[str, str]) -> str:
    return text.format(d=files, **servers)


def assert_one_error_line(code: int, out: str, err: str, expected: str) -> None:
    assert code == 2, (code, err)
    assert "Traceback" not in out + err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "error: error:" not in lines[0], err
    assert expected in lines[0], f"{expected!r} not in {lines[0]!r}"


@pytest.mark.parametrize(("argv", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_invocation_is_one_error_line_and_exit_code_2(argv, expected, files, servers, capsys, monkeypatch):
    monkeypatch.setenv("OMNIREC_API_KEY", "wrong-key")
    monkeypatch.delenv("OMNIREC_DEBUG", raising=False)
    code = cli.main([_fill(a, files, servers) for a in argv])
    out, err = capsys.readouterr()
    assert_one_error_line(code, out, err, _fill(expected, files, servers))


def test_there_are_at_least_thirty_bad_invocations():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["recommend", "--bundle", "{d}/bundle", "--user", "1", "-k", "-3"], "argument -k: expected an integer"),
        (["evaluate", "--path", "{d}/small_quote.csv", "--format", "csv"], "small_quote.csv, line 3"),
    ],
    ids=["bad-flag", "bad-file"],
)
def test_the_entry_point_behaves_the_same_in_a_process(argv, expected, files):
    done = subprocess.run([sys.executable, "-m", "omnirec.cli", *[a.format(d=files) for a in argv]],
                          capture_output=True, text=True, timeout=120, check=False)
    assert_one_error_line(done.returncode, done.stdout, done.stderr, expected.format(d=files))


def _failing(exc: BaseException):
    def command(args) -> int:
        raise exc
    return command


def test_an_unexpected_exception_is_one_line_asking_for_a_report(files, capsys, monkeypatch):
    monkeypatch.delenv("OMNIREC_DEBUG", raising=False)
    monkeypatch.setitem(cli.COMMANDS, "compress", _failing(RuntimeError("boom\nsecond line")))
    code = cli.main(["compress", "--bundle", str(files / "bundle"), "--out", str(files / "small")])
    out, err = capsys.readouterr()
    assert_one_error_line(code, out, err, "error: internal error: RuntimeError: boom second line (please report)")


def test_omnirec_debug_adds_the_traceback(files, capsys, monkeypatch):
    monkeypatch.setenv("OMNIREC_DEBUG", "1")
    monkeypatch.setitem(cli.COMMANDS, "compress", _failing(RuntimeError("boom")))
    assert cli.main(["compress", "--bundle", str(files / "bundle"), "--out", str(files / "small")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.splitlines()[-1] == "error: internal error: RuntimeError: boom (please report)"


def test_an_interrupt_is_one_line_and_exit_code_130(files, capsys, monkeypatch):
    monkeypatch.delenv("OMNIREC_DEBUG", raising=False)
    monkeypatch.setitem(cli.COMMANDS, "compress", _failing(KeyboardInterrupt()))
    assert cli.main(["compress", "--bundle", str(files / "bundle"), "--out", str(files / "small")]) == 130
    assert capsys.readouterr().err == "error: interrupted\n"


def test_help_still_exits_0(capsys):
    assert cli.main(["recommend", "--help"]) == 0
    assert "--bundle" in capsys.readouterr().out


@pytest.mark.usefixtures("one_torch_thread")
def test_a_failed_reload_after_retraining_says_where_the_new_bundle_is(files, servers, tmp_path, capsys, monkeypatch):
    """The key is right (checked before training), the reload itself fails: status, detail, bundle path."""
    monkeypatch.setenv("OMNIREC_API_KEY", RIGHT_KEY)
    config = tmp_path / "train.toml"
    config.write_text(_train_toml(files / "good.csv").replace(str(files / "bundle-out"), str(tmp_path / "new")))
    code = cli.main(["retrain", "--config", str(config), "--store", str(tmp_path / "events.db"), "--quiet",
                     "--reload", servers["refusing"]])
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in out + err
    assert err.splitlines()[-1] == (f"error: the server at {servers['refusing']} did not reload: HTTP 500: internal "
                                    f"error; the new bundle was saved at {tmp_path / 'new'}")
    assert (tmp_path / "new" / "bundle.json").exists()


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (PermissionError(13, "Permission denied", "x.csv"), "x.csv: Permission denied"),
        (IsADirectoryError(21, "Is a directory", "runs"), "runs: Is a directory"),
        (KeyError("user_id"), "missing key 'user_id'"),
        (json.JSONDecodeError("Expecting value", "{", 1), "invalid JSON: Expecting value: line 1 column 2 (char 1)"),
        (urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")), "network error: "),
        (urllib.error.HTTPError("http://h/x", 503, "Service Unavailable", None, None), "http://h/x: HTTP 503"),
        (SystemExit("error: give --user"), "give --user"),
    ],
    ids=["permission", "is-a-directory", "key", "json", "url", "http", "system-exit"],
)
def test_expected_failures_get_a_message_in_words(exc, message):
    assert message in cli_parser._error_message(exc)
