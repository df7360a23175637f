"""/runs/{id}/iterations, /stages (live progress) and a stage's log over HTTP."""

from __future__ import annotations

from backend.db import get_sessionmaker
from backend.store import metrics, pairs, stages
from tests.backend.conftest import Api
from tests.backend.store.test_pairs import pair_record


def test_stages_show_live_progress(api: Api) -> None:
    run = api.create_run(iterations=2)
    stage_id = api.launcher.sent[-1][1]
    with get_sessionmaker(api.settings.resolved_database_url)() as session:
        stages.claim_stage(session, stage_id)
        stages.heartbeat(session, stage_id, progress=0.4, message="12/30 instructions")
        session.commit()
    items = api.client.get(f"/api/v1/runs/{run['id']}/stages").json()["items"]
    assert len(items) == 10
    assert items[0]["status"] == "running" and items[0]["progress"] == 0.4
    assert items[0]["message"] == "12/30 instructions" and items[0]["heartbeat_at"] is not None
    assert {s["status"] for s in items[1:]} == {"pending"}
    only_1 = api.client.get(f"/api/v1/runs/{run['id']}/stages", params={"iteration": 1}).json()["items"]
    assert [s["name"] for s in only_1] == ["self_instruct", "generate", "rank", "train", "evaluate"]
    assert api.client.get(f"/api/v1/runs/{run['id']}").json()["status"] == "running"


def test_iterations_carry_eval_metrics_and_pair_stats(api: Api) -> None:
    run = api.create_run(iterations=2)
    with get_sessionmaker(api.settings.resolved_database_url)() as session:
        metrics.ingest_metrics(
            session,
            run["id"],
            [{"iteration": 0, "stage": "evaluate", "key": "alpaca_eval/win_rate", "step": 0, "value": 11.5}],
        )
        pairs.replace_pairs(session, run["id"], 0, [pair_record(i, s_ref=1.0) for i in range(4)])
        session.commit()
    items = api.client.get(f"/api/v1/runs/{run['id']}/iterations").json()["items"]
    assert [it["index"] for it in items] == [0, 1]
    assert items[0]["eval_metrics"] == {"alpaca_eval/win_rate": 11.5}
    assert items[0]["pair_stats"]["pairs"] == 4 and items[0]["pair_stats"]["agreement_rate"] == 1.0
    assert items[0]["status"] == "queued" and items[0]["stages"]["self_instruct"] == "queued"
    assert items[1]["status"] == "pending" and items[1]["pair_stats"] is None


def test_stage_log_is_served_from_the_worker_log_file(api: Api) -> None:
    run = api.create_run()
    stage_id = api.launcher.sent[-1][1]
    url = f"/api/v1/runs/{run['id']}/stages/{stage_id}/log"
    assert api.client.get(url).status_code == 404  # nothing logged yet
    log = stages.stage_log_path(api.settings.resolved_artifact_root, run["id"], 0, "self_instruct")
    log.parent.mkdir(parents=True)
    log.write_text("line 1\nline 2\n")
    response = api.client.get(url)
    assert response.status_code == 200 and response.text == "line 1\nline 2\n"
    assert response.headers["content-type"].startswith("text/plain")
    assert api.client.get(url, params={"tail_bytes": 7}).text == "line 2\n"
    other = api.create_run()
    assert api.client.get(f"/api/v1/runs/{other['id']}/stages/{stage_id}/log").status_code == 404
