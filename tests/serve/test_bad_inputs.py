"""Bad input against every endpoint, over both stores: each class of mistake gets its own clear 4xx, never
a 5xx, never a traceback. The table is the README's limits plus what a careless or hostile client sends."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from omnirec.bundle import Bundle
from omnirec.models import Markov
from omnirec.serve.app import ServeConfig, create_app

KEY = "bad-input-key-0123"
WRITE = {"X-API-Key": KEY}
JSON = {"content-type": "application/json"}
LONG = "x" * 257


def feedback(events, headers=WRITE):  # noqa: ANN001, ANN201
    return ("post", "/feedback", {"json": {"events": events}, "headers": headers})


# (case, (method, path, request options), expected status); {item} and {user} are filled with known ids
CASES = [
    ("recommend: k = 0", ("post", "/recommend", {"json": {"k": 0}}), 422),
    ("recommend: k over 100", ("post", "/recommend", {"json": {"k": 101}}), 422),
    ("recommend: k a string", ("post", "/recommend", {"json": {"k": "ten"}}), 422),
    ("recommend: k a float", ("post", "/recommend", {"json": {"k": 2.5}}), 422),
    ("recommend: unknown field", ("post", "/recommend", {"json": {"k": 3, "nonsense": 1}}), 422),
    ("recommend: unknown scenario", ("post", "/recommend", {"json": {"scenario": "nope"}}), 404),
    ("recommend: empty scenario", ("post", "/recommend", {"json": {"scenario": ""}}), 422),
    ("recommend: empty user id", ("post", "/recommend", {"json": {"user": ""}}), 422),
    ("recommend: user id over 256 chars", ("post", "/recommend", {"json": {"user": LONG}}), 422),
    ("recommend: NUL in the user id", ("post", "/recommend", {"json": {"user": "a\x00b"}}), 422),
    ("recommend: control character in the user id", ("post", "/recommend", {"json": {"user": "a\x1bb"}}), 422),
    ("recommend: user id a number", ("post", "/recommend", {"json": {"user": 42}}), 422),
    ("recommend: items not a list", ("post", "/recommend", {"json": {"items": "abc"}}), 422),
    ("recommend: 501 history items", ("post", "/recommend", {"json": {"items": ["{item}"] * 501}}), 422),
    ("recommend: 1,001 exclusions", ("post", "/recommend", {"json": {"exclude": ["{item}"] * 1001}}), 422),
    ("recommend: NUL in an item id", ("post", "/recommend", {"json": {"items": ["a\x00"]}}), 422),
    ("recommend: body not JSON", ("post", "/recommend", {"content": b"{k: 3", "headers": JSON}), 422),
    ("recommend: body a JSON list", ("post", "/recommend", {"json": [1, 2]}), 422),
    ("recommend: invalid UTF-8", ("post", "/recommend", {"content": b'{"user": "\xff\xfe"}', "headers": JSON}), 400),
    ("recommend: declared body over 256 KiB", ("post", "/recommend", {"content": b"{" + b" " * 300_000 + b"}", "headers": JSON}), 413),
    ("recommend: chunked body over 256 KiB", ("post", "/recommend", {"content": lambda: iter([b"[" + b" " * 65_536] * 8), "headers": JSON}), 413),
    ("recommend: wrong method", ("get", "/recommend", {}), 405),
    ("items: unknown item", ("get", "/items/no-such-item", {}), 404),
    ("items: control character in the id", ("get", "/items/a%1Bb", {}), 422),
    ("items: id over 256 chars", ("get", f"/items/{LONG}", {}), 422),
    ("similar: k = 0", ("get", "/items/{item}/similar?k=0", {}), 422),
    ("similar: k not a number", ("get", "/items/{item}/similar?k=many", {}), 422),
    ("similar: unknown item", ("get", "/items/no-such-item/similar", {}), 404),
    ("feedback: no key", feedback([{"user": "u", "item": "{item}"}], headers={}), 401),
    ("feedback: wrong key", feedback([{"user": "u", "item": "{item}"}], headers={"X-API-Key": "wrong"}), 401),
    ("feedback: no events", feedback([]), 422),
    ("feedback: 1,001 events", feedback([{"user": "u", "item": "{item}"}] * 1001), 422),
    ("feedback: unknown event type", feedback([{"user": "u", "item": "{item}", "type": "stare"}]), 422),
    ("feedback: value out of range", feedback([{"user": "u", "item": "{item}", "value": 1e12}]), 422),
    ("feedback: value NaN", ("post", "/feedback", {"content": b'{"events": [{"user": "u", "item": "i", "value": NaN}]}', "headers": {**JSON, **WRITE}}), 422),
    ("feedback: negative time", feedback([{"user": "u", "item": "{item}", "time": -5}]), 422),
    ("feedback: time past year 33658", feedback([{"user": "u", "item": "{item}", "time": 10**13}]), 422),
    ("feedback: NUL in the user id", feedback([{"user": "u\x00", "item": "{item}"}]), 422),
    ("feedback: NUL in the item id", feedback([{"user": "u", "item": "i\x00"}]), 422),
    ("feedback: control character in the key", feedback([{"user": "u", "item": "{item}", "key": "k\x07"}]), 422),
    ("feedback: key over 200 chars", feedback([{"user": "u", "item": "{item}", "key": "k" * 201}]), 422),
    ("feedback: missing item", feedback([{"user": "u"}]), 422),
    ("feedback: idempotency header over 200 chars", ("post", "/feedback", {"json": {"events": [{"user": "u", "item": "{item}"}]}, "headers": {**WRITE, "Idempotency-Key": "h" * 201}}), 422),
    ("feedback: key reused for another event", feedback([{"user": "u-a", "item": "{item}", "key": "dup-1"}, {"user": "u-b", "item": "{item}", "key": "dup-1"}]), 409),
    ("delete: no key", ("delete", "/users/{user}", {}), 401),
    ("delete: control character in the id", ("delete", "/users/a%00b", {"headers": WRITE}), 422),
    ("reload: no key", ("post", "/admin/reload", {}), 401),
    ("reload: no such folder", ("post", "/admin/reload", {"json": {"bundle": "/no/such/folder"}, "headers": WRITE}), 404),
    ("reload: unknown field", ("post", "/admin/reload", {"json": {"bundel": "x"}, "headers": WRITE}), 422),
    ("admin key: wrong key", ("get", "/admin/key", {"headers": {"X-API-Key": "wrong"}}), 401),
    ("unknown path", ("get", "/no/such/path", {}), 404),
    ("header over 16 KiB", ("get", "/health", {"headers": {"X-Big": "a" * 17_000}}), 431),
]


@pytest.fixture(scope="module")
def bundle(tiny_dataset, tiny_split, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad-inputs") / "bundle"
    Bundle.create(Markov().fit(tiny_split.train_data()), tiny_dataset).save(folder)
    return folder


@pytest.fixture(params=["sqlite", "postgresql"])
def client(request, bundle, tmp_path):
    store = str(tmp_path / "events.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    with TestClient(create_app(ServeConfig(bundle=str(bundle), store=store, api_key=KEY)),
                    raise_server_exceptions=False) as c:
        yield c


def _filled(value, ids: dict[str, str]):  # noqa: ANN001, ANN202
    if isinstance(value, str):
        return value.format(**ids) if "{" in value and "}" in value and value.count("{") == value.count("}") else value
    if isinstance(value, list):
        return [_filled(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _filled(v, ids) for k, v in value.items()}
    return value


def test_every_bad_input_gets_its_own_4xx(client, tiny_dataset):
    ids = {"item": tiny_dataset.items.labels[0], "user": tiny_dataset.users.labels[0]}
    answers = {}
    for case, (method, path, options), expected in CASES:
        options = {k: (_filled(v, ids) if k == "json" else v() if callable(v) else v) for k, v in options.items()}
        r = client.request(method.upper(), path.format(**ids), **options)
        answers[case] = r.status_code
        assert "Traceback" not in r.text and r.status_code < 500, (case, r.status_code, r.text[:300])
        assert r.status_code == expected, (case, r.status_code, r.text[:300])
        detail = r.json().get("detail") if r.headers.get("content-type", "").startswith("application/json") else None
        assert detail, (case, r.text[:300])  # every refusal says why
    assert len(answers) >= 50
