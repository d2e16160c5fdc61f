"""The "sent" mark as a PL/pgSQL function (PostgreSQL only), for workers behind a
transaction-pooling PgBouncer (campaigns.services.delivery._SentMarks).

PgBouncer 1.18 (Debian 12's) cannot carry named prepared statements across transactions,
so there the mark goes as the extended protocol's unnamed statement, parsed, analysed and
planned by the server for every message. ``SELECT campaigns_delivery_mark_sent(...)`` is
cheap to parse and plan, and PL/pgSQL keeps the plan of its UPDATE in the server backend
that runs it (a cached plan per backend, never session state the client relies on: any
server connection PgBouncer lends runs it, planning it once). The UPDATE is the same
statement the worker sends directly (delivery._MARK_SENT): the row is marked only while
the claim is this worker's (or still pending); the function returns the rows updated.
"""

from django.db import migrations

FUNCTION = """
CREATE OR REPLACE FUNCTION campaigns_delivery_mark_sent(
    p_sent varchar, p_sent_at timestamptz, p_provider_ref varchar, p_id bigint,
    p_sending varchar, p_worker varchar, p_pending varchar
) RETURNS integer LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    updated integer;
BEGIN
    UPDATE campaigns_delivery SET status = p_sent, sent_at = p_sent_at, provider_ref = p_provider_ref,
        lease_until = NULL, last_error = ''
    WHERE id = p_id AND ((status = p_sending AND claimed_by = p_worker) OR status = p_pending);
    GET DIAGNOSTICS updated = ROW_COUNT;
    RETURN updated;
END
$$
"""

DROP = (
    "DROP FUNCTION IF EXISTS campaigns_delivery_mark_sent(varchar, timestamptz, varchar, bigint, varchar, varchar, "
    "varchar)"
)


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTION)


def remove(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("campaigns", "0007_campaign_versions")]

    operations = [migrations.RunPython(create, remove)]
