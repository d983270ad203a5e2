-- Ranges finished by a projection job (rebuild), so `--resume` can skip them.
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    job         TEXT    NOT NULL,
    range_start INTEGER NOT NULL,
    range_end   INTEGER NOT NULL,
    events      INTEGER NOT NULL,
    finished_at TEXT    NOT NULL,
    PRIMARY KEY (job, range_start)
) WITHOUT ROWID;
