"""Hostile input against a real server: every bad value is a 4xx naming the field, nothing is
committed before it is refused, and other users' reads and streams keep working."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from morag_progress.keys import Role
from tests.security.conftest import Target

JSON = {"content-type": "application/json"}


def _nested(depth: int) -> str:
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


def _others_still_read(t: Target, auth: dict[str, str], admin: dict[str, str], n: int) -> None:
    """The user's and the admin's lists answer, and the event stream opens with a snapshot."""
    with t.client() as client:
        mine = client.get("/api/v1/jobs", headers=auth)
        assert mine.status_code == 200, mine.text
        assert len(mine.json()["jobs"]) == n
        assert client.get("/api/v1/jobs", headers=admin).status_code == 200
        with client.stream("GET", "/api/v1/events", headers=admin) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            assert next(line for line in lines if line.startswith("event:")) == "event: snapshot"


def test_deep_or_large_metadata_is_refused_before_anything_is_stored(
    target: Callable[..., Target],
) -> None:
    """Metadata nested 9, 250, 300 or 3000 levels deep, or over 16 KiB, is a 4xx; no job is
    created, and the user's and the admin's lists and streams still work."""
    t = target()
    alice, admin = t.key("alice"), t.key("root", Role.ADMIN)
    assert t.create(alice, metadata={"fine": {"nested": [1, 2]}}).status_code == 201
    with t.client() as client:
        for depth in (9, 250, 300, 3000):
            body = '{"document_name":"x","document_type":"y","metadata":' + _nested(depth) + "}"
            response = client.post("/api/v1/jobs", content=body, headers={**alice, **JSON})
            assert 400 <= response.status_code < 500, (depth, response.status_code)
        big = t.create(alice, metadata={"blob": "x" * 20_000})
        assert big.status_code == 422
        assert big.json()["detail"][0]["loc"] == ["body", "metadata"]
        assert "16384 bytes" in big.text
    _others_still_read(t, alice, admin, 1)


def test_unicode_lookalike_and_dot_ids_are_refused(target: Callable[..., Target]) -> None:
    """Fullwidth letters, a zero-width joiner, "." and ".." are not ids: 422 naming the
    field, nothing stored; asking for such a job is a 422, not a 500."""
    t = target()
    alice, admin = t.key("alice"), t.key("root", Role.ADMIN)
    for bad in ("ｊｏｂ", "job\u200d1", ".", "..", "a/b", "job\n"):
        response = t.create(alice, id=bad)
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["detail"][0]["loc"] == ["body", "id"]
    with t.client() as client:
        assert client.get("/api/v1/jobs/%EF%BD%8A", headers=alice).status_code == 422
        batch = {"updates": [{"job_id": "ｊ", "percentage": 5}]}
        assert (
            client.post("/api/v1/remote-jobs/progress", json=batch, headers=alice).status_code
            == 422
        )
    _others_still_read(t, alice, admin, 0)


def test_edge_timestamps_are_refused_by_name(target: Callable[..., Target]) -> None:
    """A timestamp that overflows when made UTC, or is before 1970, is a 422 naming
    body.timestamp; the job is unchanged."""
    t = target()
    alice = t.key("alice")
    job_id = t.create(alice).json()["id"]
    with t.client() as client:
        for stamp in ("0001-01-01T00:00:00+05:00", "1969-12-31T23:59:59Z", "0001-01-01T00:00:00"):
            response = client.put(
                f"/api/v1/remote-jobs/{job_id}/progress",
                json={"percentage": 50, "timestamp": stamp},
                headers=alice,
            )
            assert response.status_code == 422, (stamp, response.text)
            assert response.json()["detail"][0]["loc"] == ["body", "timestamp"]
        assert client.get(f"/api/v1/jobs/{job_id}", headers=alice).json()["percentage"] == 0


def test_unstorable_text_is_a_422_that_can_be_sent(target: Callable[..., Target]) -> None:
    """A lone surrogate or a NUL in any text field is a 422 with a valid JSON body (the error
    handler itself used to fail), in bodies and in query parameters alike."""
    t = target()
    alice = t.key("alice")
    job_id = t.create(alice).json()["id"]
    with t.client() as client:
        for text in ('"\\ud800"', '"a\\u0000b"'):
            bodies = [
                (
                    f"/api/v1/remote-jobs/{job_id}/progress",
                    "PUT",
                    f'{{"percentage":5,"message":{text}}}',
                ),
                ("/api/v1/jobs", "POST", f'{{"document_name":{text},"document_type":"y"}}'),
                (
                    "/api/v1/jobs",
                    "POST",
                    f'{{"document_name":"x","document_type":"y","metadata":{{"k":{text}}}}}',
                ),
            ]
            for path, method, body in bodies:
                response = client.request(method, path, content=body, headers={**alice, **JSON})
                assert response.status_code == 422, (path, body, response.text)
                assert response.json()["detail"]
        for query in ("document_type=%00", "parent_id=%00", "cursor=%E2%80%8D"):
            assert client.get(f"/api/v1/jobs?{query}", headers=alice).status_code == 422
        huge = "/api/v1/jobs/" + job_id + "/history?after=99999999999999999999"
        assert client.get(huge, headers=alice).status_code == 422
        # A digit, but not a feed id (sent as latin-1, as a header can carry it).
        resume = [(k.encode(), v.encode()) for k, v in alice.items()]
        resume.append((b"Last-Event-ID", "²".encode("latin-1")))
        with client.stream("GET", f"/api/v1/jobs/{job_id}/events", headers=resume) as stream:
            assert stream.status_code == 200
            events = (line for line in stream.iter_lines() if line.startswith("event:"))
            assert next(events) == "event: snapshot"


def test_a_fast_worker_clock_does_not_freeze_a_job(target: Callable[..., Target]) -> None:
    """One report stamped four minutes ahead, then honest reports without a timestamp: each
    honest one is applied (ordered at the server's receive time)."""
    t = target()
    alice = t.key("alice")
    job_id = t.create(alice).json()["id"]
    ahead = (datetime.now(UTC) + timedelta(minutes=4)).isoformat()
    url = f"/api/v1/remote-jobs/{job_id}/progress"
    with t.client() as client:
        first = client.put(url, json={"percentage": 30, "timestamp": ahead}, headers=alice)
        assert first.json()["applied"] is True
        for pct in (40, 50):
            honest = client.put(url, json={"percentage": pct}, headers=alice)
            assert honest.json()["applied"] is True, honest.text
        assert client.get(f"/api/v1/jobs/{job_id}", headers=alice).json()["percentage"] == 50


def test_client_ids_live_in_their_users_namespace(target: Callable[..., Target]) -> None:
    """Bob can create the id Alice took (no 409, nothing revealed), and each reads, reports on
    and streams only their own job of that id; Alice cannot squat ids ahead of Bob."""
    t = target()
    alice, bob = t.key("alice"), t.key("bob")
    assert t.create(alice, id="report-1", document_name="alice.pdf").status_code == 201
    bobs = t.create(bob, id="report-1", document_name="bob.pdf")
    assert bobs.status_code == 201, bobs.text
    with t.client() as client:
        report = {"percentage": 60, "message": "bob's"}
        put = client.put("/api/v1/remote-jobs/report-1/progress", json=report, headers=bob)
        assert put.json()["job"]["document_name"] == "bob.pdf"
        mine = client.get("/api/v1/jobs/report-1", headers=alice).json()
        assert (mine["document_name"], mine["percentage"]) == ("alice.pdf", 0)
        history = client.get("/api/v1/jobs/report-1/history", headers=alice).json()
        assert [event["percentage"] for event in history] == [0]
        with client.stream("GET", "/api/v1/jobs/report-1/events", headers=alice) as stream:
            data = next(line for line in stream.iter_lines() if line.startswith("data:"))
        assert '"alice.pdf"' in data


def test_the_new_reads_and_actions_refuse_bad_input_by_name(
    target: Callable[..., Target],
) -> None:
    """Against a real server: search, filters, history paging, the workers' window, fractions
    of progress, requeue and chat webhooks each answer a bad value with a 4xx naming the field
    (never a 5xx); hostile search text is text; another user's job cannot be requeued; and
    the user's and the admin's reads keep working."""
    t = target()
    alice, bob, admin = t.key("alice"), t.key("bob"), t.key("root", Role.ADMIN)
    job = t.create(alice, document_name="50%_done\\report").json()["id"]
    with t.client() as client:
        for path, params, field in (
            ("/api/v1/jobs", {"q": "x" * 201}, "q"),
            ("/api/v1/jobs", {"q": "a\x00b"}, "q"),
            ("/api/v1/jobs", {"top_level": "maybe"}, "top_level"),
            ("/api/v1/stats", {"q": "x" * 201}, "q"),
            ("/api/v1/workers", {"window": 5}, "window"),
            (f"/api/v1/jobs/{job}/history", {"order": "sideways"}, "order"),
            (f"/api/v1/jobs/{job}/history", {"before": 0}, "before"),
        ):
            response = client.get(path, params=params, headers=alice)
            assert response.status_code == 422, (path, params, response.text)
            assert response.json()["detail"][0]["loc"][-1] == field
        for text, hits in (("%", [job]), ("_", [job]), ("\\", [job]), ("50%_done\\", [job]),
                           ("' OR 1=1 --", []), ("%%%", [])):  # fmt: skip
            found = client.get("/api/v1/jobs", params={"q": text}, headers=alice)
            assert found.status_code == 200, text
            assert [j["id"] for j in found.json()["jobs"]] == hits, text
        for body, says in (
            ({"percentage": 0.5}, "send a fraction of the work as progress"),
            ({"percentage": 5, "progress": 0.05}, "exactly one of percentage"),
            ({"progress": True}, "progress"),
        ):
            put = client.put(f"/api/v1/remote-jobs/{job}/progress", json=body, headers=alice)
            assert put.status_code == 422, body
            assert says in put.text
        assert client.post(f"/api/v1/jobs/{job}/requeue", headers=bob).status_code == 404
        assert client.post(f"/api/v1/jobs/{job}/requeue", headers=alice).status_code == 409
        for hook, field in (
            ({"format": "teams"}, "format"),
            ({"max_per_hour": 10**6}, "max_per_hour"),
        ):
            made = client.post(
                "/api/v1/webhooks",
                json={"url": "https://example.com/h", "events": ["job.failed"], **hook},
                headers=alice,
            )
            assert made.status_code == 422, hook
            assert made.json()["detail"][0]["loc"] == ["body", field]
    _others_still_read(t, alice, admin, 1)


def test_any_traceparent_header_makes_a_job_never_a_failure(
    target: Callable[..., Target],
) -> None:
    """A ``traceparent`` that is not one (garbage, version ff, zero ids, 8 KiB, Latin-1 bytes,
    or a second header after a valid one) is ignored, as W3C Trace Context says: 201, a trace
    of the job's own; a valid one makes the job its child. Nothing of the header but its ids
    is kept."""
    t = target()
    alice, admin = t.key("alice"), t.key("root", Role.ADMIN)
    body = b'{"document_name": "a.pdf", "document_type": "pdf"}'
    bad = [
        b"garbage",
        b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        b"00-" + b"a" * 8000,
        b"00-\xe9\xe9-\xff",
    ]
    with t.client() as client:
        for value in bad:
            auth = (b"authorization", alice["Authorization"].encode())
            headers = [auth, (b"traceparent", value), JSON_RAW]
            response = client.post("/api/v1/jobs", content=body, headers=headers)
            assert response.status_code == 201, (value[:20], response.text)
            own = response.json()["traceparent"]
            assert len(own) == 55
            assert own[3:35] not in value.decode("latin-1")  # a trace of its own
        good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        two = [(b"authorization", alice["Authorization"].encode()), JSON_RAW]
        two += [(b"traceparent", good.encode()), (b"traceparent", b"garbage")]
        response = client.post("/api/v1/jobs", content=body, headers=two)
        assert response.status_code == 201
        assert response.json()["traceparent"][3:35] == good[3:35]  # two headers: the first
        created = client.post(
            "/api/v1/jobs", content=body, headers={**alice, **JSON, "traceparent": good}
        )
        assert created.json()["traceparent"][3:35] == good[3:35]
    _others_still_read(t, alice, admin, 7)


JSON_RAW = (b"content-type", b"application/json")
