"""The schema, as ordered migrations keyed by ``PRAGMA user_version``.

Each migration runs in its own transaction together with the ``user_version`` bump, so a crash leaves the
database at one version or the next, never between. A database newer than this code is refused.
Tables and columns marked "contract" in docs/schema.md are read by other tools: change them only by adding
a migration and documenting it.
"""

from __future__ import annotations

import aiosqlite

from syncd.errors import SchemaTooNew

MIGRATIONS: tuple[str, ...] = (
    # 1: mirror, change log, sync bookkeeping.
    """
    CREATE TABLE inventory_counts (
        source              TEXT    NOT NULL,
        catalog_object_id   TEXT    NOT NULL,
        location_id         TEXT    NOT NULL,
        state               TEXT    NOT NULL,
        catalog_object_type TEXT,
        quantity            TEXT    NOT NULL,
        calculated_at       TEXT    NOT NULL,
        seq                 INTEGER NOT NULL,
        seen_pass           INTEGER NOT NULL DEFAULT 0,
        -- Location first: a location's rows are contiguous, so per-location reads and the
        -- removal sweep of a full pass need no secondary index (one less B-tree to write).
        PRIMARY KEY (source, location_id, catalog_object_id, state)
    ) WITHOUT ROWID;

    CREATE TABLE changes (
        seq               INTEGER PRIMARY KEY AUTOINCREMENT,
        recorded_at       TEXT    NOT NULL,
        kind              TEXT    NOT NULL,
        source            TEXT    NOT NULL,
        catalog_object_id TEXT,
        location_id       TEXT,
        state             TEXT,
        job_id            INTEGER,
        old               TEXT,
        new               TEXT
    );

    CREATE TABLE passes (
        pass_id     INTEGER PRIMARY KEY AUTOINCREMENT,
        source      TEXT    NOT NULL,
        kind        TEXT    NOT NULL,
        started_at  TEXT    NOT NULL,
        finished_at TEXT,
        outcome     TEXT    NOT NULL DEFAULT 'running',
        pages       INTEGER NOT NULL DEFAULT 0,
        counts      INTEGER NOT NULL DEFAULT 0,
        changes     INTEGER NOT NULL DEFAULT 0,
        removed     INTEGER NOT NULL DEFAULT 0,
        error       TEXT
    );

    CREATE TABLE sync_state (
        source           TEXT NOT NULL,
        partition        TEXT NOT NULL,
        watermark        TEXT,
        last_pass_id     INTEGER,
        last_started_at  TEXT,
        last_finished_at TEXT,
        last_outcome     TEXT,
        last_success_at  TEXT,
        last_full_at     TEXT,
        pages            INTEGER NOT NULL DEFAULT 0,
        counts_seen      INTEGER NOT NULL DEFAULT 0,
        changes          INTEGER NOT NULL DEFAULT 0,
        error            TEXT,
        PRIMARY KEY (source, partition)
    );
    """,
    # 2: webhook inbox (issue 3).
    """
    CREATE TABLE webhook_events (
        event_id     TEXT    PRIMARY KEY,
        source       TEXT    NOT NULL,
        type         TEXT    NOT NULL,
        merchant_id  TEXT,
        created_at   TEXT,
        received_at  TEXT    NOT NULL,
        received_ns  INTEGER NOT NULL,
        body         BLOB    NOT NULL,
        processed_at TEXT
    );
    CREATE INDEX webhook_events_unprocessed ON webhook_events (source, received_ns)
        WHERE processed_at IS NULL;
    CREATE INDEX webhook_events_processed ON webhook_events (processed_at)
        WHERE processed_at IS NOT NULL;
    """,
    # 3: tracked upstream jobs (issue 4). JSON columns: params, messages, failures, progress, result.
    """
    CREATE TABLE jobs (
        id                 INTEGER PRIMARY KEY AUTOINCREMENT,
        provider           TEXT    NOT NULL,
        job_id             TEXT    NOT NULL,
        params             TEXT    NOT NULL DEFAULT '{}',
        label              TEXT,
        state              TEXT    NOT NULL DEFAULT 'pending',
        vendor_status      TEXT,
        job_type           TEXT,
        registered_at      TEXT    NOT NULL,
        registered_ns      INTEGER NOT NULL,
        updated_at         TEXT    NOT NULL,
        finished_at        TEXT,
        attempts           INTEGER NOT NULL DEFAULT 0,
        polls              INTEGER NOT NULL DEFAULT 0,
        next_poll_ns       INTEGER NOT NULL,
        not_found_since_ns INTEGER,
        last_error         TEXT,
        messages           TEXT    NOT NULL DEFAULT '[]',
        failures           TEXT    NOT NULL DEFAULT '[]',
        progress           TEXT,
        result             TEXT,
        UNIQUE (provider, job_id)
    );
    CREATE INDEX jobs_due ON jobs (next_poll_ns) WHERE finished_at IS NULL;
    CREATE INDEX jobs_by_state ON jobs (state, id);
    """,
    # 4: named change-log consumers and their acknowledged offsets (issue 5).
    """
    CREATE TABLE consumers (
        name       TEXT    PRIMARY KEY,
        acked_seq  INTEGER NOT NULL,
        updated_at TEXT    NOT NULL
    ) WITHOUT ROWID;
    """,
    # 5: how far the change log is published to each target's stream (issue 7).
    """
    CREATE TABLE publish_offsets (
        target        TEXT    NOT NULL,
        stream        TEXT    NOT NULL,
        published_seq INTEGER NOT NULL,
        updated_at    TEXT    NOT NULL,
        PRIMARY KEY (target, stream)
    ) WITHOUT ROWID;
    """,
    # 6: several sources (Square sellers) in one database: the sources this database has seen,
    # and each one's OAuth state (private: holds secrets). Sources already in the mirror, the
    # sync bookkeeping or the passes are registered as seen, since their first pass (or now).
    """
    CREATE TABLE sources (
        source      TEXT PRIMARY KEY,
        merchant_id TEXT,
        added_at    TEXT NOT NULL,
        removed_at  TEXT
    ) WITHOUT ROWID;

    CREATE TABLE source_credentials (
        source        TEXT PRIMARY KEY,
        merchant_id   TEXT,
        access_token  TEXT,
        expires_at    TEXT,
        refresh_token TEXT,
        refreshed_at  TEXT,
        status        TEXT NOT NULL DEFAULT 'ok',
        error         TEXT,
        updated_at    TEXT NOT NULL
    ) WITHOUT ROWID;

    INSERT INTO sources (source, added_at)
        SELECT seen.source, COALESCE(first.started_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        FROM (SELECT source FROM inventory_counts UNION SELECT source FROM sync_state
              UNION SELECT source FROM passes) AS seen
        LEFT JOIN (SELECT source, MIN(started_at) AS started_at FROM passes GROUP BY source)
            AS first ON first.source = seen.source;
    """,
    # 7: what a count means (issue 12): catalog items and variations and the locations, per
    # source, with the view that joins them to the counts ("stock of SKU X at store Y").
    """
    CREATE TABLE catalog_items (
        source     TEXT    NOT NULL,
        item_id    TEXT    NOT NULL,
        name       TEXT,
        is_deleted INTEGER NOT NULL DEFAULT 0,
        version    INTEGER NOT NULL,
        updated_at TEXT    NOT NULL,
        seq        INTEGER NOT NULL,
        PRIMARY KEY (source, item_id)
    ) WITHOUT ROWID;

    CREATE TABLE catalog_variations (
        source              TEXT    NOT NULL,
        variation_id        TEXT    NOT NULL,
        item_id             TEXT,
        name                TEXT,
        sku                 TEXT,
        gtin                TEXT,
        measurement_unit_id TEXT,
        track_inventory     INTEGER,
        is_deleted          INTEGER NOT NULL DEFAULT 0,
        version             INTEGER NOT NULL,
        updated_at          TEXT    NOT NULL,
        seq                 INTEGER NOT NULL,
        PRIMARY KEY (source, variation_id)
    ) WITHOUT ROWID;
    CREATE INDEX catalog_variations_by_sku ON catalog_variations (sku, source)
        WHERE sku IS NOT NULL;
    CREATE INDEX catalog_variations_by_item ON catalog_variations (source, item_id);

    CREATE TABLE locations (
        source      TEXT NOT NULL,
        location_id TEXT NOT NULL,
        name        TEXT,
        status      TEXT,
        timezone    TEXT,
        seq         INTEGER NOT NULL,
        PRIMARY KEY (source, location_id)
    ) WITHOUT ROWID;
    CREATE INDEX locations_by_name ON locations (name, source);

    CREATE TABLE catalog_state (
        source          TEXT PRIMARY KEY,
        latest_time     TEXT,
        last_full_at    TEXT,
        last_success_at TEXT,
        last_error      TEXT
    ) WITHOUT ROWID;

    -- "Where is this variation stocked": the SKU lookup's second step.
    CREATE INDEX inventory_counts_by_object ON inventory_counts (source, catalog_object_id);
    -- Without statistics SQLite reads a source's whole range of the primary key rather than this
    -- index. Written shape statistics (a large source, few rows per variation) make every reader's
    -- planner take the index. ANALYZE of a small table only creates sqlite_stat1, and a later full
    -- ANALYZE replaces these figures with measured ones.
    ANALYZE sources;
    DELETE FROM sqlite_stat1 WHERE tbl = 'inventory_counts';
    INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES
        ('inventory_counts', 'inventory_counts', '1000000 100000 2000 1 1'),
        ('inventory_counts', 'inventory_counts_by_object', '1000000 100000 4');

    CREATE VIEW inventory AS
        SELECT c.source, c.catalog_object_id, c.location_id, l.name AS location_name, c.state,
               c.quantity, c.calculated_at, c.catalog_object_type, v.sku, v.gtin,
               v.item_id, i.name AS item_name, v.name AS variation_name,
               v.measurement_unit_id, v.track_inventory,
               COALESCE(v.is_deleted, 0) OR COALESCE(i.is_deleted, 0) AS catalog_deleted,
               v.variation_id IS NULL AS unknown_variation, c.seq
        FROM inventory_counts AS c
        LEFT JOIN catalog_variations AS v
            ON v.source = c.source AND v.variation_id = c.catalog_object_id
        LEFT JOIN catalog_items AS i ON i.source = v.source AND i.item_id = v.item_id
        LEFT JOIN locations AS l ON l.source = c.source AND l.location_id = c.location_id;
    """,
    # 8: this database's identity (issue 11): a random id made once, here, which the publish relay
    # claims a stream with, so two databases never publish into one stream. One row, never
    # updated; a copy of the file (a backup) keeps it. And why the relay refuses a stream, for
    # `syncd status` (a new NULL column: no row is rewritten).
    """
    CREATE TABLE database_info (
        one         INTEGER PRIMARY KEY CHECK (one = 1),
        database_id TEXT    NOT NULL,
        created_at  TEXT    NOT NULL
    );

    INSERT INTO database_info (one, database_id, created_at)
        VALUES (1, lower(hex(randomblob(16))), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

    ALTER TABLE publish_offsets ADD COLUMN refused TEXT;
    """,
    # 9: a count entry carries its SKU (issue 12): the SKU the catalog mirror had for the variation
    # when the entry was written (NULL when not known yet, and for entries that are not of a
    # variation), so a consumer of the log (Redis, SSE, another host) needs no join. A new NULL
    # column: no row is rewritten.
    """
    ALTER TABLE changes ADD COLUMN sku TEXT;
    """,
    # 10: how many counts of each source join as unknown (issue 12): their variation is not in the
    # catalog mirror (yet). A live count is a pass over every mirrored row, too slow for `syncd
    # status` on a large mirror, so it is stored here with the number of variations mirrored and
    # when both were counted: after each catalog pass and each full counts pass
    # (store.catalog.save_figures). Rows already there are counted once, now.
    """
    ALTER TABLE catalog_state ADD COLUMN variations INTEGER;
    ALTER TABLE catalog_state ADD COLUMN unknown_variations INTEGER;
    ALTER TABLE catalog_state ADD COLUMN unknown_checked_at TEXT;
    UPDATE catalog_state SET
        variations = (SELECT COUNT(*) FROM catalog_variations AS v
                      WHERE v.source = catalog_state.source AND v.is_deleted = 0),
        unknown_variations =
            (SELECT COUNT(*) FROM inventory_counts AS c WHERE c.source = catalog_state.source)
            - (SELECT COUNT(*) FROM catalog_variations AS v JOIN inventory_counts AS c
               ON c.source = v.source AND c.catalog_object_id = v.variation_id
               WHERE v.source = catalog_state.source),
        unknown_checked_at = strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z';
    """,
    # 11: outbound webhook endpoints (issue 14): each [outbound.NAME]'s acknowledged seq, the
    # batch in flight (so a retry after a crash resends the same entries under the same
    # webhook-id), the replay epoch (part of the webhook-id), and whether it is disabled and why.
    """
    CREATE TABLE outbound_endpoints (
        name            TEXT    PRIMARY KEY,
        acked_seq       INTEGER NOT NULL,
        pending_after   INTEGER,
        pending_last    INTEGER,
        epoch           INTEGER NOT NULL DEFAULT 0,
        state           TEXT    NOT NULL DEFAULT 'active',
        disabled_reason TEXT,
        disabled_at     TEXT,
        failing_since   TEXT,
        last_error      TEXT,
        updated_at      TEXT    NOT NULL
    ) WITHOUT ROWID;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


async def migrate(conn: aiosqlite.Connection, *, target: int = SCHEMA_VERSION) -> int:
    """Bring the schema to ``target`` (SCHEMA_VERSION unless a test builds an older database);
    return the version found before. Refuses a database newer than SCHEMA_VERSION."""
    async with conn.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    found = int(row[0]) if row else 0
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"database schema version {found} is newer than this syncd supports ({SCHEMA_VERSION})",
            op="store.migrate",
            hint="upgrade syncd, or point it at another database",
        )
    for version in range(found + 1, target + 1):
        await conn.execute("BEGIN IMMEDIATE")
        try:
            # executescript would COMMIT on its own; run statement by statement inside our transaction.
            for statement in _statements(MIGRATIONS[version - 1]):
                await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {version}")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")
    return found


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
