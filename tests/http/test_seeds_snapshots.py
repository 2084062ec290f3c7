"""Seeds (POST /admin/api/sites/{name}/seed, ``billhive site seed``) and snapshots
(GET .../snapshot, POST .../restore, ``billhive site snapshot`` / ``restore``), on both stores.

billhive's own extension (Chargebee has no such API: its test sites are made and reset in the web
app); documented in billhive's /openapi.json and held to it by tests/support/admin.py."""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path

import httpx
import orjson
import pytest
import yaml
from sqlalchemy import update

from billhive.cli import main
from billhive.services import site_admin, snapshots
from billhive.store import schema as S
from tests.support.admin import Admin
from tests.support.server import Api
from tests.support.timemachine import travel

TOKEN = "admin-token-for-seed-tests"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"


@pytest.fixture
def admin(server, monkeypatch) -> Admin:
    monkeypatch.setattr(server.app.config, "admin_token", TOKEN)
    return Admin(server.base_url, TOKEN)


def _api(server, site: dict, key: str | None = None) -> Api:
    return Api(server, site["name"], key or site["api_key"], use_host=False)


def _check_example_loaded(api: Api) -> None:
    assert api.get("/plans/basic-monthly")["plan"]["price"] == 1000
    assert api.get("/plans/pro-yearly")["plan"]["trial_period"] == 14
    assert api.get("/addons/extra-seat")["addon"]["type"] == "quantity"
    assert api.get("/coupons/welcome-10")["coupon"]["discount_percentage"] == 10
    ada = api.get("/customers/ada")
    assert ada["customer"]["card_status"] == "valid" and ada["card"]["last4"] == "1111"
    sub = api.get("/subscriptions/ada-basic")
    assert [(a["id"], a["quantity"]) for a in sub["subscription"]["addons"]] == [("extra-seat", 2)]
    assert [c["coupon_id"] for c in sub["subscription"]["coupons"]] == ["welcome-10"]
    assert api.get("/subscriptions/grace-pro")["subscription"]["status"] == "in_trial"
    subs = api.get("/subscriptions", {"limit": 10})["list"]
    assert len(subs) == 3
    # real invoices and a real charge: ada's first term, 2 seats and 10% off
    inv = api.get("/invoices", {"subscription_id[is]": "ada-basic"})["list"][0]["invoice"]
    assert inv["status"] == "paid" and inv["amount"] == (1000 + 2 * 500) * 9 // 10
    types = {e["event"]["event_type"] for e in api.get("/events", {"limit": 100})["list"]}
    assert {"customer_created", "card_added", "subscription_created", "payment_succeeded"} <= types


def test_the_example_seed_over_http_as_yaml_and_json(admin, server):
    for body in [dict(content=EXAMPLE.read_bytes(), headers={"content-type": "application/yaml"}),
                 dict(json=yaml.safe_load(EXAMPLE.read_text()))]:
        site = admin.post("/sites")["site"]
        r = admin.request("POST", f"/sites/{site['name']}/seed", **body)
        assert r["object"] == "site_seed" and r["created"]["plans"] == ["basic-monthly", "pro-yearly"]
        assert r["created"]["webhook_endpoints"] == ["wh-local"]
        _check_example_loaded(_api(server, site))


def test_the_example_seed_through_the_cli(admin, server, database_url, capsys):
    site = admin.post("/sites")["site"]
    code = main(["site", "seed", site["name"], str(EXAMPLE), "--database-url", database_url])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert json.loads(out.out)["created"]["customers"] == ["ada", "grace"]
    _check_example_loaded(_api(server, site))


def test_a_bad_entry_names_itself_and_the_seed_is_undone(admin, server):
    site = admin.post("/sites")["site"]
    api = _api(server, site)
    api.post("/plans", {"id": "kept", "name": "Kept", "price": 5})  # made before the seed: stays
    seed = {"plans": [{"id": "p1", "name": "P1", "price": 100}],
            "customers": [{"id": "c1", "first_name": "A"},
                          {"id": "c2", "card": {"number": "4111111111111112", "expiry_month": 1,
                                                "expiry_year": 2035}}]}
    r = admin.post(f"/sites/{site['name']}/seed", seed, expect=400)
    assert r["param"].startswith("customers[1].card[number]"), r.body
    assert "customers[1] (id c2)" in r["message"]
    api.get("/plans/p1", expect=404)
    api.get("/customers/c1", expect=404)
    assert api.get("/plans/kept")["plan"]["price"] == 5
    r = admin.post(f"/sites/{site['name']}/seed", {"plans": [{"id": "p", "name": "P", "price": "ten"}]},
                   expect=400)
    assert r["param"] == "plans[0].price"
    r = admin.post(f"/sites/{site['name']}/seed", {"planz": []}, expect=400)
    assert r["param"] == "planz"
    r = admin.request("POST", f"/sites/{site['name']}/seed", content=b"plans: [unclosed",
                      headers={"content-type": "application/yaml"}, expect=400)
    assert r["param"] == "seed"
    admin.post("/sites/nosuch-test/seed", {}, expect=404)


# ---- snapshots ------------------------------------------------------------------------------

LISTS = ["/plans", "/addons", "/coupons", "/customers", "/subscriptions", "/invoices", "/transactions",
         "/events", "/orders", "/comments"]


def _answers(api: Api) -> dict:
    """What the API answers for every list (every page) and every listed object's retrieve."""
    out: dict = {"/time_machines/delorean": api.get("/time_machines/delorean").body,
                 "/coupon_codes/LAUNCH-1": api.get("/coupon_codes/LAUNCH-1").body,
                 "/addresses": api.get("/addresses", {"subscription_id": "ada-basic", "label": "shipping"}).body}
    for path in getattr(api, "extra", {}).values():
        out[path] = api.get(path).body
    for path in LISTS:
        items, offset = [], None
        while True:
            page = api.get(path, {"limit": 3, **({"offset": offset} if offset else {})})
            items += page["list"]
            offset = page.body.get("next_offset")
            if not offset:
                break
        out[path] = items
        for item in items:
            obj = next(v for k, v in item.items() if isinstance(v, dict) and "id" in v)
            out[f"{path}/{obj['id']}"] = api.get(f"{path}/{obj['id']}").body
        if path == "/customers":
            for item in items:
                cid = item["customer"]["id"]
                out[f"/cards/{cid}"] = api.get(f"/cards/{cid}", expect=None).body
    return out


def _busy_site(admin, server) -> tuple[dict, Api]:
    site = admin.post("/sites")["site"]
    # the site clock frozen (start_afresh wipes the data: first)
    _api(server, site).post("/time_machines/delorean/start_afresh", {"genesis_time": 1_700_000_000})
    seed = yaml.safe_load(EXAMPLE.read_text())
    del seed["webhook_endpoints"]  # deliveries retried in the background would change the events' answers
    admin.post(f"/sites/{site['name']}/seed", seed)
    api = _api(server, site)
    api.post("/invoices/charge", {"customer_id": "ada", "amount": 250, "description": "setup"})
    api.post("/comments", {"entity_type": "customer", "entity_id": "ada", "notes": "vip"})
    api.post("/customers/grace/add_account_credits", {"amount": 300, "description": "sorry"})
    api.post("/coupon_codes", {"coupon_id": "welcome-10", "coupon_set_name": "launch", "code": "LAUNCH-1"})
    api.post("/addresses", {"subscription_id": "ada-basic", "label": "shipping", "first_name": "Ada", "city": "London"})
    extra = {
        "portal_session": api.post("/portal_sessions", {"customer[id]": "ada", "redirect_url": "https://x.test/"}),
        "hosted_page": api.post("/hosted_pages/checkout_new", {"subscription[plan_id]": "basic-monthly"}),
        "payment_intent": api.post("/payment_intents", {"amount": 500, "currency_code": "USD", "customer_id": "ada"}),
    }
    api.extra = {k: f"/{k}s/{v[k]['id']}" for k, v in extra.items()}  # type: ignore[attr-defined]
    return site, api


def test_snapshot_restore_round_trip_into_the_same_and_another_site(admin, server):
    site, api = _busy_site(admin, server)
    before = _answers(api)
    snap = admin.get(f"/sites/{site['name']}/snapshot").body
    assert snap["format"] == snapshots.FORMAT and snap["site"]["name"] == site["name"]

    # the same site, changed after the snapshot, comes back as it was (keys too)
    api.post("/customers", {"id": "later", "first_name": "Later"})
    api.post("/subscriptions/ada-basic/cancel")
    api.post("/plans/basic-monthly/delete")
    r = admin.post(f"/sites/{site['name']}/restore", snap)
    assert r["keys_restored"] is True and r["rows"]["customers"] == 3
    assert _answers(api) == before

    # another site: the same answers under its own keys; the source's keys stay the source's
    other = admin.post("/sites", {"currency_code": "EUR"})["site"]
    r = admin.post(f"/sites/{other['name']}/restore", snap)
    assert r["keys_restored"] is False and r["snapshot_of"] == site["name"]
    other_api = _api(server, other)
    other_api.extra = api.extra  # type: ignore[attr-defined]
    assert _answers(other_api) == before
    _api(server, other, site["api_key"]).get("/customers/ada")  # the key still chooses the source site
    # both sites live on independently
    other_api.post("/customers", {"id": "only-other"})
    api.get("/customers/only-other", expect=404)
    api.post("/customers", {"id": "only-source"})
    other_api.get("/customers/only-other")


def test_snapshot_over_the_cli_restores_into_another_site(admin, server, database_url, capsys, tmp_path):
    site, api = _busy_site(admin, server)
    before = _answers(api)
    assert main(["site", "snapshot", site["name"], "--database-url", database_url]) == 0
    f = tmp_path / "snap.json"
    f.write_text(capsys.readouterr().out)
    other = admin.post("/sites")["site"]
    code = main(["site", "restore", other["name"], str(f), "--database-url", database_url])
    out = capsys.readouterr()
    assert code == 0, out.err
    other_api = _api(server, other)
    other_api.extra = api.extra  # type: ignore[attr-defined]
    assert _answers(other_api) == before


def test_an_configuration_incompatible_is_refused_and_changes_nothing(admin, server):
    site, api = _busy_site(admin, server)
    snap = admin.get(f"/sites/{site['name']}/snapshot").body
    other = admin.post("/sites")["site"]
    _api(server, other).post("/customers", {"id": "mine"})
    for change in [lambda s: s.update(schema_revision="9999"), lambda s: s.update(version=2),
                   lambda s: s["tables"].pop("plans"), lambda s: s["tables"]["plans"]["columns"].pop(),
                   lambda s: s.update(format="something")]:
        bad = copy.deepcopy(snap)
        change(bad)
        r = admin.post(f"/sites/{other['name']}/restore", bad, expect=400)
        assert r["api_error_code"] == "configuration_incompatible"
    _api(server, other).get("/customers/mine")


def test_the_snapshot_covers_every_site_table_and_site_column():
    """Guard: a new table with a site_id column, a new sites column or a new column holding a pk
    cannot be left out of snapshots."""
    with_site_id = {t.name for t in S.metadata.tables.values() if "site_id" in t.c}
    assert {t.name for t in snapshots.SITE_TABLES} == with_site_id == {t.name for t in site_admin.SITE_TABLES}
    assert set(snapshots.SITE_COLUMNS) | snapshots.SITE_IDENTITY == set(S.sites.c.keys())
    pk_columns = {(t.name, c.name) for t in snapshots.SITE_TABLES for c in t.c if c.name.endswith("_pk")}
    assert pk_columns == set(snapshots.PK_REFERENCES)


def test_a_snapshot_holds_every_table(admin, server):
    site, _ = _busy_site(admin, server)
    snap = admin.get(f"/sites/{site['name']}/snapshot").body
    assert set(snap["tables"]) == {t.name for t in snapshots.SITE_TABLES}
    cards = snap["tables"]["cards"]
    assert any("tok_" in str(r) for r in cards["rows"]), "the cards' gateway tokens"
    assert snap["tables"]["jobs"]["rows"] and snap["tables"]["api_keys"]["rows"]
    assert snap["site"]["settings"]["tm_status"] is not None  # the time machine's clock
    orjson.dumps(snap)


def test_a_restored_site_goes_on_renewing_like_the_original(admin, server):
    """The jobs, the clock and the invoice sequence come back live: travelling both the source and
    the restored copy one more month gives both the same renewal."""
    site, api = _busy_site(admin, server)
    month = 31 * 86400
    travel(api, 1_700_000_000 + month + 3600)
    snap = admin.get(f"/sites/{site['name']}/snapshot").body
    other = admin.post("/sites")["site"]
    admin.post(f"/sites/{other['name']}/restore", snap)
    other_api = _api(server, other)
    assert other_api.get("/time_machines/delorean").body == api.get("/time_machines/delorean").body
    for a in (api, other_api):
        travel(a, 1_700_000_000 + 2 * month + 7200)

    def renewals(a: Api) -> list:
        return [(i["invoice"]["id"], i["invoice"]["amount"], i["invoice"]["start_date"])
                for i in a.get("/invoices", {"subscription_id[is]": "ada-basic", "limit": 10})["list"]]
    assert len(renewals(api)) == 3 and renewals(other_api) == renewals(api)


def test_no_snapshot_or_restore_while_the_site_travels(admin, server, monkeypatch):
    site = admin.post("/sites")["site"]
    snap = admin.get(f"/sites/{site['name']}/snapshot").body
    server.app.db.write_sync(lambda tx: tx.execute(
        update(S.sites).where(S.sites.c.name == site["name"]).values(tm_status="in_progress")))
    try:
        assert admin.get(f"/sites/{site['name']}/snapshot", expect=409)["api_error_code"] == \
            "invalid_state_for_request"
        admin.post(f"/sites/{site['name']}/restore", snap, expect=409)
    finally:
        server.app.db.write_sync(lambda tx: tx.execute(
            update(S.sites).where(S.sites.c.name == site["name"]).values(tm_status=None)))


def test_the_cli_names_a_bad_entry_and_refuses_a_bad_snapshot(admin, server, database_url, capsys, tmp_path):
    site = admin.post("/sites")["site"]
    bad = tmp_path / "bad.json"
    plans = [{"id": "ok", "name": "Ok", "price": 1}, {"id": "no", "name": "No", "price": "x"}]
    bad.write_text(json.dumps({"plans": plans}))
    assert main(["site", "seed", site["name"], str(bad), "--database-url", database_url]) == 2
    err = capsys.readouterr().err
    assert "seed entry plans[1] (id no)" in err and "price" in err
    _api(server, site).get("/plans/ok", expect=404)  # all or nothing
    snap = tmp_path / "snap.json"
    snap.write_text(json.dumps({"format": snapshots.FORMAT, "version": 0}))
    assert main(["site", "restore", site["name"], str(snap), "--database-url", database_url]) == 2
    assert "format version 0" in capsys.readouterr().err
    assert main(["site", "snapshot", "nosuch-test", "--database-url", database_url]) == 2
    assert "No site named nosuch-test" in capsys.readouterr().err


def _snippet() -> str:
    """The README's "Seeds and snapshots"."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Seeds and snapshots", 1)[1].split("\n### ", 1)[0]
    assert "billhive site seed" in section
    return section


def test_the_readme_snippet_runs_as_printed(admin, server, database_url, capsys, tmp_path, monkeypatch):
    """Every command of the snippet's sh blocks, as printed: the CLI ones through billhive's main (on
    this test's database), the curl ones as the same HTTP requests to this server."""
    root = Path(__file__).resolve().parents[2]
    keys = {name: admin.post("/sites", {"name": name})["site"]["api_key"] for name in ("acme-test", "other-test")}
    monkeypatch.chdir(root)
    blocks = [b.split("```", 1)[0] for b in _snippet().split("```sh\n")[1:]]
    ran = 0
    for line in "\n".join(blocks).replace("\\\n", " ").splitlines():
        line = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.split("  #", 1)[0].strip()
        if not line:
            continue
        out_file = None
        if " > " in line:
            line, out_file = (s.strip() for s in line.split(" > "))
        words = shlex.split(line.replace("$BILLHIVE_ADMIN_TOKEN", TOKEN))
        words = [("@" if w.startswith("@") else "") + str(tmp_path / w.lstrip("@")) if w.endswith(".json") else w
                 for w in words]  # the snapshot files in a folder of the test's own
        if words[0] == "billhive":
            code = main([*words[1:], "--database-url", database_url])
            out = capsys.readouterr()
            assert code == 0, (line, out.err)
            body = out.out.encode()
        else:
            assert words[0] == "curl", line
            method, headers, data, url = "GET", {}, None, None
            it = iter(words[1:])
            for w in it:
                if w == "-X":
                    method = next(it)
                elif w == "-H":
                    k, _, v = next(it).partition(": ")
                    headers[k] = v
                elif w == "--data-binary":
                    data = Path(next(it).lstrip("@")).read_bytes()
                else:
                    url = w
            assert url is not None and url.startswith("http://localhost:8080/"), line
            r = httpx.request(method, server.base_url + url[len("http://localhost:8080"):], headers=headers,
                              content=data, timeout=60)
            assert r.status_code == 200, (line, r.text[:500])
            body = r.content
        if out_file:
            (tmp_path / out_file).write_bytes(body)
        ran += 1
    assert ran >= 6
    for name in ("acme-test", "other-test"):
        _check_example_loaded(_api(server, {"name": name}, keys[name]))
