"""The billhive command line: sites, settings, keys, webhook endpoints, migrate."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from billhive.cli import main


@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path / 'cli.db'}"


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_site_create_with_given_keys_and_show(capsys, db):
    code, out, _ = run(capsys, "site", "create", "acme-test", "--api-key", "test_given_key_123",
                       "--read-only-key", "test_ro_key_1234", "--currency", "EUR", "--metered-billing",
                       "--database-url", db)
    assert code == 0
    assert "test_given_key_123" in out and "test_ro_key_1234" in out and "test site" in out
    code, out, _ = run(capsys, "site", "show", "acme-test", "--database-url", db)
    shown = json.loads(out)
    assert shown["currency_code"] == "EUR" and shown["test_site"] is True
    assert shown["settings"]["metered_billing"] is True
    assert [k["access"] for k in shown["api_keys"]] == ["full", "read_only"]


def test_live_site_has_no_time_machine(capsys, db):
    run(capsys, "site", "create", "acme", "--database-url", db)
    _, out, _ = run(capsys, "site", "show", "acme", "--database-url", db)
    assert json.loads(out)["test_site"] is False and json.loads(out)["time_machine"] is None


def test_site_set_every_kind_of_setting(capsys, db):
    run(capsys, "site", "create", "acme-test", "--database-url", db)
    code, out, err = run(capsys, "site", "set", "acme-test", "metered_billing=true", "notify_pending_invoices=on",
                         "invoice_prefix=INV-", "invoice_next_number=1000", "dunning_retry_days=2,4,6",
                         "dunning_final_action=voided", "dunning_cancel_subscription=true",
                         "email_enabled=true", "smtp_host=mail.local", "smtp_port=2525",
                         "webhook_url=http://127.0.0.1:9/hook", "webhook_username=u", "webhook_password=p",
                         "--database-url", db)
    assert code == 0, err
    shown = json.loads(out)
    s = shown["settings"]
    assert s["metered_billing"] is True and s["notify_pending_invoices"] is True
    assert s["invoice_prefix"] == "INV-" and shown["invoice_next_number"] == 1000
    assert s["dunning_retry_days"] == [2, 4, 6] and s["dunning_final_action"] == "voided"
    assert s["smtp_port"] == 2525
    (ep,) = shown["webhook_endpoints"]
    assert ep["id"] == "default" and ep["url"] == "http://127.0.0.1:9/hook" and ep["username"] == "u"


@pytest.mark.parametrize("assignment", ["colour=red", "metered_billing=maybe", "invoice_next_number=0",
                                        "dunning_retry_days=x", "smtp_port=99999", "currency_code=dollars",
                                        "email_events=nonsense_event", "novalue"])
def test_site_set_rejects_bad_input_and_changes_nothing(capsys, db, assignment):
    run(capsys, "site", "create", "acme-test", "--database-url", db)
    _, before, _ = run(capsys, "site", "show", "acme-test", "--database-url", db)
    code, _, err = run(capsys, "site", "set", "acme-test", "invoice_prefix=X-", assignment, "--database-url", db)
    assert code == 2 and err.startswith("billhive:")
    _, after, _ = run(capsys, "site", "show", "acme-test", "--database-url", db)
    assert before == after


def test_duplicate_site_and_bad_names(capsys, db):
    assert run(capsys, "site", "create", "acme-test", "--database-url", db)[0] == 0
    assert run(capsys, "site", "create", "acme-test", "--database-url", db)[0] == 2
    assert run(capsys, "site", "create", "Bad_Name", "--database-url", db)[0] == 2


def test_webhook_add_list_remove(capsys, db):
    run(capsys, "site", "create", "acme-test", "--database-url", db)
    code, out, _ = run(capsys, "webhook", "add", "acme-test", "http://127.0.0.1:9/h", "--username", "u",
                       "--password", "p", "--secret", "s3cret", "--event-types", "invoice_generated,payment_failed",
                       "--database-url", db)
    assert code == 0
    ep = json.loads(out)
    assert ep["event_types"] == ["invoice_generated", "payment_failed"] and ep["secret"] == "s3cret"
    _, out, _ = run(capsys, "webhook", "list", "acme-test", "--database-url", db)
    assert [e["id"] for e in json.loads(out)] == [ep["id"]]
    _, out, _ = run(capsys, "site", "show", "acme-test", "--database-url", db)
    assert json.loads(out)["webhook_endpoints"][0]["id"] == ep["id"]
    assert run(capsys, "webhook", "remove", "acme-test", ep["id"], "--database-url", db)[0] == 0
    assert run(capsys, "webhook", "remove", "acme-test", ep["id"], "--database-url", db)[0] == 2
    assert run(capsys, "webhook", "add", "acme-test", "not a url", "--database-url", db)[0] == 2
    for i in range(5):
        assert run(capsys, "webhook", "add", "acme-test", f"http://h/{i}", "--database-url", db)[0] == 0
    assert run(capsys, "webhook", "add", "acme-test", "http://h/6", "--database-url", db)[0] == 2


def test_migrate_command(capsys, db):
    assert run(capsys, "migrate", "--database-url", db)[0] == 0


def test_console_script_entry_point(tmp_path):
    out = subprocess.run([sys.executable, "-m", "billhive", "--help"], capture_output=True, text=True, check=True)
    assert "serve" in out.stdout and "site" in out.stdout


def _keys(capsys, db, site="acme-test"):
    code, out, _ = run(capsys, "site", "key", "list", site, "--database-url", db)
    assert code == 0
    return json.loads(out)


def _works(db, key):
    from billhive import sites
    from billhive.runtime import App, Config

    app = App.open(Config(database_url=db))
    try:
        return app.db.read_sync(lambda tx: sites.key_info(tx, key)) is not None
    finally:
        app.close()


def test_site_key_add_list_revoke(capsys, db):
    code, out, _ = run(capsys, "site", "create", "acme-test", "--api-key", "test_first_key_1", "--database-url", db)
    assert code == 0 and "test_first_key_1" in out  # the first key, printed once at creation
    code, out, _ = run(capsys, "site", "key", "add", "acme-test", "--database-url", db)
    assert code == 0
    new = out.split("full-access key: ", 1)[1].split()[0]
    assert new.startswith("test_") and len(new) > 20 and _works(db, new)
    code, out, _ = run(capsys, "site", "key", "add", "acme-test", "--read-only", "--key", "test_ro_given_9",
                       "--database-url", db)
    assert code == 0 and "read-only key: test_ro_given_9" in out
    keys = _keys(capsys, db)
    assert [k["access"] for k in keys] == ["full", "full", "read_only"]
    listing = json.dumps(keys)
    assert new not in listing and "test_first_key_1" not in listing and "test_ro_given_9" not in listing
    assert [k["hint"] for k in keys] == ["test_firs…", new[:9] + "…", "test_ro_g…"]
    # revoke by hint (with or without the ellipsis) and by the key itself
    code, out, _ = run(capsys, "site", "key", "revoke", "acme-test", new[:9] + "…", "--database-url", db)
    assert code == 0 and "revoked" in out and "5 s" in out
    assert not _works(db, new) and _works(db, "test_first_key_1")
    assert run(capsys, "site", "key", "revoke", "acme-test", "test_ro_g", "--database-url", db)[0] == 0
    assert run(capsys, "site", "key", "revoke", "acme-test", "test_first_key_1", "--database-url", db)[0] == 0
    assert _keys(capsys, db) == []
    assert not _works(db, "test_first_key_1") and not _works(db, "test_ro_given_9")


def test_site_key_errors_change_nothing(capsys, db):
    run(capsys, "site", "create", "acme-test", "--api-key", "test_same_prefix_1", "--database-url", db)
    run(capsys, "site", "create", "other-test", "--api-key", "test_other_site_1", "--database-url", db)
    run(capsys, "site", "key", "add", "acme-test", "--key", "test_same_prefix_2", "--database-url", db)
    before = _keys(capsys, db)
    for argv in (("add", "acme-test", "--key", "short"),  # too short
                 ("add", "acme-test", "--key", "test_other_site_1"),  # another site's key
                 ("add", "nope-test"),  # no such site
                 ("revoke", "acme-test", "test_same…"),  # both keys have this hint: ambiguous
                 ("revoke", "acme-test", "test_other_site_1"),  # not this site's key
                 ("revoke", "acme-test", "test_nomatch"),
                 ("list", "nope-test")):
        code, _, err = run(capsys, "site", "key", *argv, "--database-url", db)
        assert code == 2 and err.startswith("billhive:"), argv
    assert _keys(capsys, db) == before
    assert _works(db, "test_other_site_1")
    # the whole key tells the two apart
    assert run(capsys, "site", "key", "revoke", "acme-test", "test_same_prefix_2", "--database-url", db)[0] == 0
    assert _works(db, "test_same_prefix_1") and not _works(db, "test_same_prefix_2")
