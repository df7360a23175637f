"""/runs/{id}/pairs, /pairs/export (JSONL and Parquet round trip) and /eval-samples over HTTP."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq

from backend.db import get_sessionmaker
from backend.store import eval_samples, pairs
from tests.backend.conftest import Api
from tests.backend.store.test_pairs import pair_record


def seeded_run(api: Api, n0: int = 30, n1: int = 20) -> int:
    run_id = api.create_run()["id"]
    with get_sessionmaker(api.settings.resolved_database_url)() as session:
        pairs.replace_pairs(
            session, run_id, 0, [pair_record(i, text="kiwi" if i % 3 == 0 else "") for i in range(n0)]
        )
        pairs.replace_pairs(session, run_id, 1, [pair_record(i) for i in range(n1)])
        session.commit()
    return run_id


def test_pagination_walks_every_pair_once(api: Api) -> None:
    run_id = seeded_run(api)
    seen, cursor = [], None
    while True:
        params = {"limit": 8, "include_total": True} | ({"cursor": cursor} if cursor else {})
        page = api.client.get(f"/api/v1/runs/{run_id}/pairs", params=params).json()
        assert page["total"] == 50
        seen += [(p["iteration"], p["idx"]) for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 50 and seen == sorted(set(seen))
    first = api.client.get(f"/api/v1/runs/{run_id}/pairs", params={"limit": 1}).json()["items"][0]
    assert first["prompt"] == [{"role": "user", "content": "prompt 0 kiwi"}] and first["chosen"] == "chosen 0"
    assert first["length_diff"] == 0 and first["extra"] == {"custom_field": 0}


def test_filters(api: Api) -> None:
    run_id = seeded_run(api)
    url = f"/api/v1/runs/{run_id}/pairs"

    def total(**params) -> int:
        return api.client.get(url, params=params | {"include_total": True, "limit": 1}).json()["total"]

    assert total(iteration=1) == 20
    assert total(q="KIWI") == 10
    assert total(agreement="agree") + total(agreement="disagree") == 50
    assert total(agreement="agree", iteration=0) == sum(1 for i in range(30) if i % 5 > 2)
    assert total(min_length_diff=5) == sum(1 for i in list(range(30)) + list(range(20)) if i % 7 >= 5)
    assert total(min_length_diff=1, max_length_diff=1) == sum(
        1 for i in list(range(30)) + list(range(20)) if i % 7 == 1
    )
    assert api.client.get(url, params={"cursor": "garbage"}).status_code == 422
    assert api.client.get(url, params={"agreement": "maybe"}).status_code == 422


def test_export_jsonl_round_trip(api: Api) -> None:
    run_id = seeded_run(api, n0=1500, n1=10)
    response = api.client.get(f"/api/v1/runs/{run_id}/pairs/export", params={"format": "jsonl"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/x-ndjson")
    records = [json.loads(line) for line in response.text.splitlines()]
    assert len(records) == 1510
    assert records[0] == {**pair_record(0, text="kiwi"), "iteration": 0, "s_ref": -2.0} | {
        "ref_rejected_logps": -8.0
    }
    assert records[-1]["iteration"] == 1
    only_1 = api.client.get(f"/api/v1/runs/{run_id}/pairs/export", params={"iteration": 1})
    assert len(only_1.text.splitlines()) == 10


def test_export_parquet_round_trip(api: Api) -> None:
    run_id = seeded_run(api, n0=1200, n1=5)
    response = api.client.get(f"/api/v1/runs/{run_id}/pairs/export", params={"format": "parquet"})
    assert response.status_code == 200
    table = pq.read_table(io.BytesIO(response.content))
    assert table.num_rows == 1205
    rows = table.to_pylist()
    assert rows[0]["prompt"] == [{"role": "user", "content": "prompt 0 kiwi"}]
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "chosen 0"}]
    assert rows[0]["rejected"] == [{"role": "assistant", "content": "rejected 0"}]
    assert rows[0]["s_ref"] == -2.0 and rows[-1]["iteration"] == 1
    empty = api.client.get(
        f"/api/v1/runs/{api.create_run()['id']}/pairs/export", params={"format": "parquet"}
    )
    assert pq.read_table(io.BytesIO(empty.content)).num_rows == 0


def test_eval_samples(api: Api) -> None:
    run_id = api.create_run()["id"]
    with get_sessionmaker(api.settings.resolved_database_url)() as session:
        records = [
            {"id": str(i), "instruction": f"q{i}", "output": "o", "baseline_output": "b", "preference": 2.0}
            for i in range(7)
        ]
        eval_samples.replace_eval_samples(session, run_id, 0, "alpaca_eval", records)
        session.commit()
    url = f"/api/v1/runs/{run_id}/eval-samples"
    page = api.client.get(url, params={"limit": 5}).json()
    assert page["total"] == 7 and len(page["items"]) == 5 and page["next_cursor"] == "0:alpaca_eval:policy:4"
    rest = api.client.get(url, params={"limit": 5, "cursor": page["next_cursor"]}).json()
    assert [s["idx"] for s in rest["items"]] == [5, 6] and rest["next_cursor"] is None
    assert api.client.get(url, params={"benchmark": "mt_bench"}).json()["total"] == 0
    assert api.client.get(url, params={"cursor": "x"}).status_code == 422
    assert api.client.get(url, params={"cursor": "0:alpaca_eval:other:4"}).status_code == 422


def test_eval_samples_of_the_base_model_come_first_and_filter(api: Api) -> None:
    """θ_0's answers (evaluated in iteration 0) are served apart from the policy's, before them."""
    run_id = api.create_run()["id"]
    record = {"instruction": "q", "output": "o", "baseline_output": "b", "preference": 1.5}
    with get_sessionmaker(api.settings.resolved_database_url)() as session:
        policy = [{**record, "id": str(i)} for i in range(3)]
        base = [{**record, "id": str(i)} for i in range(3)]
        eval_samples.replace_eval_samples(session, run_id, 0, "alpaca_eval", policy)
        eval_samples.replace_eval_samples(session, run_id, 0, "alpaca_eval", base, evaluated="base")
        session.commit()
    url = f"/api/v1/runs/{run_id}/eval-samples"
    items = api.client.get(url).json()["items"]
    assert [(s["evaluated"], s["idx"]) for s in items] == [("base", i) for i in range(3)] + [
        ("policy", i) for i in range(3)
    ]
    page = api.client.get(url, params={"limit": 4}).json()
    rest = api.client.get(url, params={"limit": 4, "cursor": page["next_cursor"]}).json()
    assert page["next_cursor"] == "0:alpaca_eval:policy:0" and len(rest["items"]) == 2
    only_base = api.client.get(url, params={"evaluated": "base"}).json()
    assert only_base["total"] == 3 and {s["evaluated"] for s in only_base["items"]} == {"base"}
    assert api.client.get(url, params={"evaluated": "θ"}).status_code == 422
