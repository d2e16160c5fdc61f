"""A function that PREPAREs the "sent" mark on the session running it (PostgreSQL only),
for PgBouncer's ``connect_query`` (campaigns.services.delivery._SentMarks, README "PgBouncer").

Behind a transaction-pooling PgBouncer 1.18 (Debian 12's) a client cannot keep a named
prepared statement: each transaction may run on another server connection. PgBouncer's
``connect_query = 'SELECT campaigns_delivery_prepare_mark()'`` runs this on every server
connection it opens, before lending it, so every server connection holds the statement
``campaigns_delivery_mark_sent_pooled`` and a worker's ``EXECUTE`` of it skips the parse,
analysis and planning an unnamed statement pays per message (and the PL/pgSQL call of
migration 0008, which stays the fallback where PgBouncer is configured without it). The
UPDATE is delivery._MARK_SENT; ``last_error`` is set to a dollar-quoted empty string so the
configuration line needs no quote inside its quotes. Returns whether it prepared (false:
the session already had it).
"""

from django.db import migrations

FUNCTION = """
CREATE OR REPLACE FUNCTION campaigns_delivery_prepare_mark() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $f$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_prepared_statements WHERE name = 'campaigns_delivery_mark_sent_pooled') THEN
        RETURN false;
    END IF;
    EXECUTE 'PREPARE campaigns_delivery_mark_sent_pooled '
        '(varchar, timestamptz, varchar, bigint, varchar, varchar, varchar) AS '
        'UPDATE campaigns_delivery SET status = $1, sent_at = $2, provider_ref = $3, '
        'lease_until = NULL, last_error = $$$$ '
        'WHERE id = $4 AND ((status = $5 AND claimed_by = $6) OR status = $7)';
    RETURN true;
END
$f$
"""

DROP = "DROP FUNCTION IF EXISTS campaigns_delivery_prepare_mark()"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTION)


def remove(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("campaigns", "0008_delivery_mark_sent_function")]

    operations = [migrations.RunPython(create, remove)]
