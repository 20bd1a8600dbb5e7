-- The shape of each saga's context JSON, as the workflow numbers it (`Workflow::context_schema`).
-- A binary decodes every schema up to its own, upgrading older ones as it reads them; a write
-- that encodes the context records the writer's schema. Rows from before this column hold
-- schema 1 (the purchase context then carried a copy of the request; since schema 2 the
-- request is stored once, in `input`).

ALTER TABLE sagas ADD COLUMN context_schema INTEGER NOT NULL DEFAULT 1;
